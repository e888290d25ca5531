import { Type, type Static } from 'typebox'
import { PageQuerySchema, Timestamp, Uuid } from '../../schemas/common.js'
import { PlainText } from '../templates/text.js'

const OptionalId = Type.Union([Uuid, Type.Null()])
const OptionalTimestamp = Type.Union([Timestamp, Type.Null()])

export const InstanceStatusSchema = Type.Union([Type.Literal('running'), Type.Literal('completed'), Type.Literal('cancelled')])

export const DeliverySummarySchema = Type.Object(
  {
    id: Uuid,
    status: Type.String({ description: 'pending, running, succeeded, failed or cancelled' }),
    round: Type.Integer({ description: 'Starts at 1; a manual retry begins a new round' }),
    attempts: Type.Integer({ description: 'Attempts made in this round' }),
    nextAttemptAt: OptionalTimestamp,
    lastStatusCode: Type.Union([Type.Integer(), Type.Null()]),
    lastError: Type.Union([Type.String(), Type.Null()])
  },
  { $id: 'DeliverySummary', description: 'The latest delivery of a webhook step' }
)
export type DeliverySummary = Static<typeof DeliverySummarySchema>

export const InstanceStepSchema = Type.Object(
  {
    id: Uuid,
    position: Type.Integer({ minimum: 1 }),
    kind: Type.Union([Type.Literal('webhook'), Type.Literal('task')]),
    name: Type.String(),
    state: Type.String({ description: 'pending, waiting, due, running, done, skipped, failed or cancelled' }),
    start: Type.Unsafe<{ mode: string; days?: number }>(Type.Object({ mode: Type.String(), days: Type.Optional(Type.Integer()) })),
    deadlineDays: Type.Union([Type.Integer(), Type.Null()]),
    refersTo: Type.Object({ property: Type.Boolean(), address: Type.Boolean() }),
    serviceId: OptionalId,
    startAt: Type.Union([Timestamp, Type.Null()], { description: 'When the step starts (or started)' }),
    startedAt: OptionalTimestamp,
    endedAt: OptionalTimestamp,
    assigneeUserId: Type.Union([Uuid, Type.Null()], { description: 'Resolved when the step starts' }),
    deadlineAt: OptionalTimestamp,
    note: Type.Union([Type.String(), Type.Null()]),
    delivery: Type.Union([Type.Ref('DeliverySummary'), Type.Null()])
  },
  { $id: 'ProcessInstanceStep' }
)
export type InstanceStep = Static<typeof InstanceStepSchema>

const instanceFields = {
  id: Uuid,
  templateId: Uuid,
  templateName: Type.String(),
  status: InstanceStatusSchema,
  responsibleUserId: Uuid,
  controllerUserId: Uuid,
  propertyId: OptionalId,
  addressId: OptionalId,
  currentStep: Type.Union([
    Type.Object({
      id: Uuid,
      position: Type.Integer(),
      name: Type.String(),
      state: Type.String(),
      assigneeUserId: OptionalId,
      startAt: OptionalTimestamp,
      deadlineAt: OptionalTimestamp
    })
  , Type.Null()], { description: 'The step the process is at; null once it has ended' }),
  version: Type.Integer(),
  startedAt: Timestamp,
  endedAt: OptionalTimestamp
}

export const InstanceSummarySchema = Type.Object(instanceFields, { $id: 'ProcessInstanceSummary' })
export type InstanceSummary = Static<typeof InstanceSummarySchema>

export const InstanceSchema = Type.Object(
  { ...instanceFields, steps: Type.Array(Type.Ref('ProcessInstanceStep')) },
  { $id: 'ProcessInstance' }
)
export type Instance = Static<typeof InstanceSchema>

export const StartInstanceSchema = Type.Object(
  {
    templateId: Uuid,
    responsibleUserId: Uuid,
    propertyId: Type.Optional(Uuid),
    addressId: Type.Optional(Uuid)
  },
  { additionalProperties: false }
)
export type StartInstance = Static<typeof StartInstanceSchema>

export const StartHeadersSchema = Type.Object({
  'idempotency-key': Type.Optional(Type.String({
    minLength: 1, maxLength: 200, pattern: '^[\\x21-\\x7e]+$',
    description: 'A retried start with the same key returns the first result instead of starting a second process'
  }))
})

export const ListInstancesQuerySchema = Type.Object({
  ...PageQuerySchema.properties,
  status: Type.Optional(InstanceStatusSchema),
  currentStepState: Type.Optional(Type.Union([Type.Literal('due'), Type.Literal('waiting'), Type.Literal('running'), Type.Literal('failed')], {
    description: 'State of the current step (running instances only)'
  })),
  assigneeUserId: Type.Optional(Uuid),
  templateId: Type.Optional(Uuid),
  propertyId: Type.Optional(Uuid),
  addressId: Type.Optional(Uuid)
})
export type ListInstancesQuery = Static<typeof ListInstancesQuerySchema>

const Note = PlainText({ maxLength: 2000, description: 'Kept with the step and in its activity entry' })

export const AdvanceSchema = Type.Object(
  {
    outcome: Type.Union([Type.Literal('done'), Type.Literal('skipped')]),
    stepId: Type.Optional(Type.Union([Uuid], { description: 'The step the caller means; 409 when it is no longer the current one' })),
    note: Type.Optional(Note)
  },
  { additionalProperties: false }
)
export type Advance = Static<typeof AdvanceSchema>

export const CancelSchema = Type.Object({ note: Type.Optional(Note) }, { additionalProperties: false })

export const StepParamsSchema = Type.Object({ id: Uuid, stepId: Uuid })
