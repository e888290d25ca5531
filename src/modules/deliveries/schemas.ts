import { Type, type Static } from 'typebox'
import { PageQuerySchema, StringEnum, Timestamp, Uuid } from '../../schemas/common.js'

const OptionalId = Type.Union([Uuid, Type.Null()])
const OptionalTimestamp = Type.Union([Timestamp, Type.Null()])

export const DeliveryStatusSchema = StringEnum(['pending', 'running', 'succeeded', 'failed', 'cancelled'], {
  description: 'pending (waiting for its next attempt), running (a call in flight), succeeded, failed (gave up) or cancelled'
})

const AttemptOutcomeSchema = StringEnum(['succeeded', 'retry', 'failed', 'aborted'], {
  description: 'succeeded (2xx), retry (will be tried again), failed (gave up), or aborted: the call was cut off before its outcome was known'
    + ' (a shutdown that ran out of grace, a worker that stopped or lost its lease); it counts as an attempt and is tried again'
})

export const DeliveryAttemptSchema = Type.Object(
  {
    id: Uuid,
    round: Type.Integer({ description: 'A manual retry starts a new round' }),
    attempt: Type.Integer({ minimum: 1 }),
    startedAt: Timestamp,
    durationMs: Type.Integer(),
    outcome: AttemptOutcomeSchema,
    statusCode: Type.Union([Type.Integer(), Type.Null()]),
    error: Type.Union([Type.String(), Type.Null()], { description: 'Network error, timeout or refusal, when there was no response' }),
    responseBody: Type.Union([Type.String(), Type.Null()], { description: 'The first 4 KiB of the response body' })
  },
  { $id: 'DeliveryAttempt' }
)
export type DeliveryAttempt = Static<typeof DeliveryAttemptSchema>

export const DeliverySchema = Type.Object(
  {
    id: Uuid,
    serviceId: Type.Union([Uuid, Type.Null()], { description: 'The marketplace service called; null for a step with a free target' }),
    source: StringEnum(['step', 'trigger'], { description: 'A webhook step of a process, or a record-change trigger' }),
    instanceId: OptionalId,
    stepId: OptionalId,
    propertyId: OptionalId,
    addressId: OptionalId,
    event: Type.Union([StringEnum(['create', 'update']), Type.Null()], { description: 'For a record-change trigger: what happened' }),
    changedFields: Type.Union([Type.Array(Type.String()), Type.Null()], { description: 'For a record-change trigger: the fields whose value changed, sorted' }),
    status: DeliveryStatusSchema,
    round: Type.Integer(),
    attemptCount: Type.Integer({ description: 'Attempts made in the current round' }),
    nextAttemptAt: OptionalTimestamp,
    lastStatusCode: Type.Union([Type.Integer(), Type.Null()], {
      description: 'The HTTP status of the current round\'s latest attempt; null without an answer, and for a new round (a replay or a recovery) not yet called'
    }),
    lastError: Type.Union([Type.String(), Type.Null()], {
      description: 'Why the current round\'s latest attempt failed, or the delivery was given up or cancelled; null once it succeeded, and for a new round not yet called'
    }),
    createdAt: Timestamp,
    finishedAt: OptionalTimestamp,
    attempts: Type.Array(Type.Ref('DeliveryAttempt'), {
      description: 'Its latest attempts, at most 100 (replays and retries add rounds without end), oldest first'
    }),
    earlierAttempts: Type.Integer({ minimum: 0, description: 'How many attempts came before those listed and are left out; 0 when all are listed' })
  },
  { $id: 'Delivery', description: 'One logical webhook call with its attempts' }
)
export type Delivery = Static<typeof DeliverySchema>

export const ListDeliveriesQuerySchema = Type.Object({
  ...PageQuerySchema.properties,
  instanceId: Type.Optional(Uuid),
  stepId: Type.Optional(Uuid),
  serviceId: Type.Optional(Uuid),
  status: Type.Optional(DeliveryStatusSchema),
  outcome: Type.Optional(StringEnum(AttemptOutcomeSchema.enum, { description: 'Deliveries with at least one attempt of this outcome' }))
})
export type ListDeliveriesQuery = Static<typeof ListDeliveriesQuerySchema>

export const RecoverDeliveriesSchema = Type.Object({
  since: Type.String({ format: 'date-time', description: 'Failed deliveries that gave up at or after this time' }),
  dryRun: Type.Optional(Type.Boolean({ default: false, description: 'Only count what would be queued again' }))
}, { additionalProperties: false, examples: [{ since: '2026-03-02T08:00:00Z', dryRun: true }] })
export type RecoverDeliveries = Static<typeof RecoverDeliveriesSchema>

export const RecoveryResultSchema = Type.Object({
  dryRun: Type.Boolean(),
  count: Type.Integer({ description: 'Deliveries queued again (or, in a dry run, that would be)' }),
  deliveryIds: Type.Array(Uuid)
}, { $id: 'DeliveryRecovery', description: 'The failed deliveries of a service queued again after an outage' })
export type RecoveryResult = Static<typeof RecoveryResultSchema>
