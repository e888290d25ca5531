import { Type, type Static } from 'typebox'
import { IdempotencyKeyHeader, PageQuerySchema, StringEnum, Timestamp, Uuid } from '../../schemas/common.js'
import { DeliveryStatusSchema } from '../deliveries/schemas.js'
import { FollowUpSchema, StepKindSchema } from '../templates/steps/schemas.js'
import { EmailEditSchema, EmailSettingsSchema } from '../templates/steps/email.js'
import { PlainText } from '../templates/text.js'
import { InstanceDecisionSchema, WriteValuesSchema } from '../templates/steps/decision-schemas.js'

const OptionalId = Type.Union([Uuid, Type.Null()])
const OptionalTimestamp = Type.Union([Timestamp, Type.Null()])

const InstanceStatusSchema = StringEnum(['running', 'completed', 'cancelled'])
const StepStateSchema = StringEnum(['pending', 'waiting', 'due', 'running', 'done', 'skipped', 'failed', 'cancelled'], {
  description: 'pending → waiting → due → running (webhook in flight) → done | skipped | failed | cancelled'
})
const CurrentStepStateSchema = StringEnum(['due', 'waiting', 'running', 'failed'], {
  description: 'The state of a running process\'s current step'
})
const StartModeSchema = StringEnum(['afterPrevious', 'daysAfterPrevious'])

export const DeliverySummarySchema = Type.Object(
  {
    id: Uuid,
    status: DeliveryStatusSchema,
    round: Type.Integer({ description: 'Starts at 1; a manual retry begins a new round' }),
    attempts: Type.Integer({ description: 'Attempts made in this round' }),
    nextAttemptAt: OptionalTimestamp,
    lastStatusCode: Type.Union([Type.Integer(), Type.Null()], { description: 'As the delivery\'s: of this round\'s latest attempt' }),
    lastError: Type.Union([Type.String(), Type.Null()], { description: 'As the delivery\'s: of this round\'s latest attempt' })
  },
  { $id: 'DeliverySummary', description: 'The latest delivery of a webhook step' }
)
export type DeliverySummary = Static<typeof DeliverySummarySchema>

export const InstanceStepSchema = Type.Object(
  {
    id: Uuid,
    position: Type.Integer({ minimum: 1 }),
    kind: StepKindSchema,
    name: Type.String(),
    state: StepStateSchema,
    start: Type.Object({
      mode: StartModeSchema,
      days: Type.Optional(Type.Integer({ description: 'With daysAfterPrevious: calendar days after the previous step ended' }))
    }, { description: 'When the step starts, as copied from the template' }),
    deadlineDays: Type.Union([Type.Integer(), Type.Null()]),
    refersTo: Type.Object({ property: Type.Boolean(), address: Type.Boolean() }),
    serviceId: OptionalId,
    target: Type.Union([
      Type.Object({ url: Type.String(), delivery: StringEnum(['query', 'json']) }, { description: 'The free target the step calls, as copied from the template; its secret is never shown' }),
      Type.Null()
    ]),
    startAt: Type.Union([Timestamp, Type.Null()], { description: 'When the step starts (or started)' }),
    startedAt: Type.Union([Timestamp, Type.Null()], { description: 'When the step started (became due): its startAt, or when a worker came to it if that was later' }),
    endedAt: OptionalTimestamp,
    assigneeUserId: Type.Union([Uuid, Type.Null()], { description: 'Resolved when the step starts' }),
    deadlineAt: Type.Union([Timestamp, Type.Null()], {
      description: "deadlineDays calendar days after startedAt, at the same wall-clock time in the tenant's time zone; null without a deadline or before the step starts"
    }),
    note: Type.Union([Type.String(), Type.Null()]),
    email: Type.Union([EmailSettingsSchema, Type.Null()], { description: 'The mail an email step sends, as copied from the template; null for other kinds' }),
    writeValues: Type.Union([WriteValuesSchema, Type.Null()]),
    decision: Type.Union([InstanceDecisionSchema, Type.Null()]),
    delivery: Type.Union([Type.Ref('DeliverySummary'), Type.Null()], { description: 'The latest delivery of a webhook step; null for a task or before its first call' }),
    followUp: Type.Union([FollowUpSchema, Type.Null()], { description: 'A followUpProcess step\'s settings, as copied from the template; null for other kinds' })
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
  parentId: Type.Union([Uuid, Type.Null()], { description: 'The process whose followUpProcess step started this one; null for others' }),
  parentStepId: Type.Union([Uuid, Type.Null()], { description: 'That followUpProcess step of the parent process' }),
  currentStep: Type.Union([
    Type.Object({
      id: Uuid,
      position: Type.Integer(),
      name: Type.String(),
      state: StepStateSchema,
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

// null as well as absent, as a process shows a record not linked, and as generated clients send an unset field.
const LinkedRecordId = (record: string) => Type.Union([Uuid, Type.Null()], { description: `The ${record} the process is linked to; null or absent: none` })

export const StartInstanceSchema = Type.Object(
  {
    templateId: Uuid,
    responsibleUserId: Uuid,
    propertyId: Type.Optional(LinkedRecordId('property')),
    addressId: Type.Optional(LinkedRecordId('address'))
  },
  {
    additionalProperties: false,
    examples: [{
      templateId: '0190f3a4-5b6c-7d8e-9f01-23456789abcd',
      responsibleUserId: '0190f3a4-1111-7222-8333-444455556666',
      propertyId: '0190f3a4-aaaa-7bbb-8ccc-ddddeeeeffff'
    }]
  }
)
export type StartInstanceBody = Static<typeof StartInstanceSchema>
/** A start as the service takes it: a record not linked is absent, never null. */
export type StartInstance = { [K in keyof StartInstanceBody]: Exclude<StartInstanceBody[K], null> }

export const StartHeadersSchema = Type.Object({
  'idempotency-key': IdempotencyKeyHeader('A retried start with the same key returns the first result instead of starting a second process')
})

export const ListInstancesQuerySchema = Type.Object({
  ...PageQuerySchema.properties,
  status: Type.Optional(InstanceStatusSchema),
  currentStepState: Type.Optional(CurrentStepStateSchema),
  assigneeUserId: Type.Optional(Uuid),
  templateId: Type.Optional(Uuid),
  propertyId: Type.Optional(Uuid),
  addressId: Type.Optional(Uuid),
  parentId: Type.Optional(Uuid)
})
export type ListInstancesQuery = Static<typeof ListInstancesQuerySchema>

const Note = PlainText({ maxLength: 2000, description: 'Kept with the step and in its activity entry' })

export const AdvanceSchema = Type.Object(
  {
    outcome: StringEnum(['done', 'skipped']),
    stepId: Type.Optional(Type.String({ format: 'uuid', description: 'The step the caller means; 409 when it is no longer the current one' })),
    note: Type.Optional(Note),
    email: Type.Optional(EmailEditSchema),
    decision: Type.Optional(StringEnum(['yes', 'no'], {
      description: 'The branch a decision step takes; required to mark a decision done, not allowed for other steps'
    }))
  },
  {
    additionalProperties: false,
    examples: [
      { outcome: 'skipped', note: 'Valued by hand' },
      { outcome: 'done', email: { subject: 'Your valuation of {{property.fields.street}}, as promised' } },
      { outcome: 'done', decision: 'yes', note: 'The owner agrees' }
    ]
  }
)
export type Advance = Static<typeof AdvanceSchema>

export const CancelSchema = Type.Object({ note: Type.Optional(Note) }, {
  additionalProperties: false, examples: [{ note: 'The owner withdrew the listing' }]
})

export const StepParamsSchema = Type.Object({ id: Uuid, stepId: Uuid })
