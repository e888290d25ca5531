import { Type, type Static } from 'typebox'
import { PageQuerySchema, StringEnum, Uuid } from '../../../schemas/common.js'
import { PlainText } from '../text.js'
import { EmailSettingsSchema } from './email.js'
import { DecisionSchema, WriteValuesSchema } from './decision-schemas.js'
import { WEBHOOK_URL_RULE } from '../../marketplace/services/webhook-url.js'

const MAX_DAYS = 3650

/** The most steps a template may have (PUT …/steps/order names them all). */
export const MAX_TEMPLATE_STEPS = 1000

/**
 * A step's own settings (its webhook `parameters`, defaults filled in, its `writeValues`, its `decision`)
 * as compact JSON, in bytes. Each could take a whole 1 MiB body, and a template 1,000 such steps: 100 of
 * them made a 98 MiB template whose start took ten seconds. At 16 KiB a full template is about as large
 * as one of 1,000 of the largest email steps (20,000 characters each).
 */
export const STEP_SETTINGS_MAX_BYTES = 16 * 1024

export const StepKindSchema = StringEnum(['webhook', 'task', 'email', 'writeValues', 'decision', 'followUpProcess'], {
  description: 'webhook = calls a marketplace service or a free target; task = a person does it; email = sends a mail; ' +
    'writeValues = sets fields of the linked records; decision = continues at one of two steps; followUpProcess = starts another process'
})

const StartSchema = Type.Union([
  Type.Object({ mode: Type.Literal('afterPrevious') }, { additionalProperties: false }),
  Type.Object(
    { mode: Type.Literal('daysAfterPrevious'), days: Type.Integer({ minimum: 0, maximum: MAX_DAYS }) },
    { additionalProperties: false }
  )
], { description: 'When the step starts: when the previous one ends, or N calendar days later' })
export type Start = Static<typeof StartSchema>

const ResponsibilitySchema = Type.Union([
  Type.Literal('processResponsible'),
  Type.Literal('propertyMaintainer'),
  Type.Literal('addressMaintainer'),
  Type.Object({ user: Uuid }, { additionalProperties: false })
], { description: 'Who the step is assigned to when it starts' })
export type Responsibility = Static<typeof ResponsibilitySchema>

const DeadlineDaysSchema = Type.Union([Type.Integer({ minimum: 1, maximum: MAX_DAYS }), Type.Null()], {
  description: 'Days after its start by which the step should have ended; null for none'
})
const ServiceIdSchema = Type.Union([Uuid, Type.Null()], { description: 'The marketplace service a webhook step calls' })
const TargetDeliverySchema = StringEnum(['query', 'json'], {
  description: 'query = GET with signed query parameters (onOffice-compatible); json = POST with a Standard Webhooks body'
})
// The secret is write-only: a step shows where it calls, never what it signs with.
const TargetSchema = Type.Object(
  { url: Type.String(), delivery: TargetDeliverySchema },
  { description: 'The tenant\'s own webhook a step calls instead of a marketplace service; its secret is never shown' }
)
export type Target = Static<typeof TargetSchema>
const TargetInputSchema = Type.Union([
  Type.Object(
    {
      url: Type.String({ minLength: 1, maxLength: 2000, description: WEBHOOK_URL_RULE }),
      secret: Type.String({
        minLength: 16, maxLength: 256,
        description: 'The signing secret (write-only): either whsec_ and strict, padded base64 of 24 to 64 random bytes, or at least 24 characters with 8 different ones, not starting with enc:'
      }),
      delivery: Type.Optional(StringEnum(['query', 'json'], { default: 'query' }))
    },
    { additionalProperties: false }
  ),
  Type.Null()
], { description: 'A free target instead of serviceId: the tenant\'s own URL and secret, signed and delivered as a service\'s calls are; replaced as a whole, secret included' })
export type TargetInput = Static<typeof TargetInputSchema>
// Every parameter type (string, integer, number, boolean, enum) takes one of these; the service's definitions say which.
const ParametersSchema = Type.Unsafe<Record<string, unknown>>({
  type: 'object',
  additionalProperties: { type: ['string', 'number', 'boolean'] },
  maxProperties: 100,
  description: 'Webhook parameters by name, checked against the service\'s parameter definitions'
})
export const FollowUpSchema = Type.Object(
  {
    templateId: Uuid,
    waitForCompletion: Type.Boolean({ description: 'true: the step ends when the started process completes (and fails when it is cancelled); false: when it starts' })
  },
  { additionalProperties: false, description: 'A followUpProcess step starts a process of another active template of the tenant, with the same responsible user and linked records' }
)
export type FollowUp = Static<typeof FollowUpSchema>
const FollowUpInputSchema = Type.Union([
  Type.Object(
    { templateId: Uuid, waitForCompletion: Type.Optional(Type.Boolean({ default: false })) },
    { additionalProperties: false }
  ),
  Type.Null()
], { description: 'The settings of a followUpProcess step (null for other kinds): the template to start, and whether to wait until its process completes' })
export type FollowUpInput = Static<typeof FollowUpInputSchema>
const Name = PlainText({ minLength: 1, maxLength: 200 })
const EmailSchema = Type.Union([EmailSettingsSchema, Type.Null()], { description: 'The mail an email step sends; null for other kinds' })

export const StepSchema = Type.Object(
  {
    id: Uuid,
    templateId: Uuid,
    position: Type.Integer({ minimum: 1, description: '1-based place in the template' }),
    kind: StepKindSchema,
    name: Type.String(),
    start: StartSchema,
    responsibility: ResponsibilitySchema,
    deadlineDays: DeadlineDaysSchema,
    refersTo: Type.Object({ property: Type.Boolean(), address: Type.Boolean() }),
    serviceId: ServiceIdSchema,
    target: Type.Union([TargetSchema, Type.Null()]),
    parameters: ParametersSchema,
    email: EmailSchema,
    writeValues: Type.Union([WriteValuesSchema, Type.Null()]),
    decision: Type.Union([DecisionSchema, Type.Null()]),
    followUp: Type.Union([FollowUpSchema, Type.Null()]),
    version: Type.Integer()
  },
  { $id: 'ProcessTemplateStep' }
)
export type Step = Static<typeof StepSchema>

const RefersToInputSchema = Type.Object(
  { property: Type.Optional(Type.Boolean()), address: Type.Optional(Type.Boolean()) },
  { additionalProperties: false, description: 'The linked records the step refers to; omitted flags are false (kept on update)' }
)

const editableFields = {
  kind: StepKindSchema,
  name: Name,
  start: StartSchema,
  responsibility: ResponsibilitySchema,
  deadlineDays: DeadlineDaysSchema,
  refersTo: RefersToInputSchema,
  serviceId: ServiceIdSchema,
  target: TargetInputSchema,
  parameters: ParametersSchema,
  email: EmailSchema,
  writeValues: Type.Union([WriteValuesSchema, Type.Null()]),
  decision: Type.Union([DecisionSchema, Type.Null()]),
  followUp: FollowUpInputSchema
}

export const CreateStepSchema = Type.Object(
  {
    kind: editableFields.kind,
    name: editableFields.name,
    position: Type.Optional(Type.Integer({ minimum: 1, description: 'Insert here, shifting later steps; default: append' })),
    start: Type.Optional(editableFields.start),
    responsibility: Type.Optional(editableFields.responsibility),
    deadlineDays: Type.Optional(editableFields.deadlineDays),
    refersTo: Type.Optional(editableFields.refersTo),
    serviceId: Type.Optional(editableFields.serviceId),
    target: Type.Optional(editableFields.target),
    parameters: Type.Optional(editableFields.parameters),
    email: Type.Optional(editableFields.email),
    writeValues: Type.Optional(editableFields.writeValues),
    decision: Type.Optional(editableFields.decision),
    followUp: Type.Optional(editableFields.followUp)
  },
  {
    additionalProperties: false,
    examples: [{
      kind: 'webhook',
      name: 'Ask ValueCo for a valuation',
      start: { mode: 'afterPrevious' },
      responsibility: 'propertyMaintainer',
      refersTo: { property: true, address: false },
      serviceId: '0190f3a4-5b6c-7d8e-9f01-23456789abcd',
      parameters: { mode: 'quick' }
    }, {
      kind: 'webhook',
      name: 'Tell our own CRM',
      refersTo: { property: true, address: false },
      target: { url: 'https://crm.muster-immobilien.example/hooks/baton', secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', delivery: 'json' },
      parameters: { list: 'valuations', priority: 2 }
    }, {
      kind: 'email',
      name: 'Tell the owner the new value',
      refersTo: { property: true, address: true },
      email: {
        mode: 'automatic',
        to: 'addressEmail',
        subject: 'New valuation of {{property.fields.street}}',
        body: 'Dear {{address.fields.firstName}} {{address.fields.lastName}},\n\nthe new value is {{property.fields.value}} EUR.\n\n{{responsible.name}}, {{tenant.name}}'
      }
    }]
  }
)
export type CreateStep = Static<typeof CreateStepSchema>

export const UpdateStepSchema = Type.Object(
  {
    kind: Type.Optional(editableFields.kind),
    name: Type.Optional(editableFields.name),
    start: Type.Optional(editableFields.start),
    responsibility: Type.Optional(editableFields.responsibility),
    deadlineDays: Type.Optional(editableFields.deadlineDays),
    refersTo: Type.Optional(editableFields.refersTo),
    serviceId: Type.Optional(editableFields.serviceId),
    target: Type.Optional(editableFields.target),
    parameters: Type.Optional(editableFields.parameters),
    email: Type.Optional(editableFields.email),
    writeValues: Type.Optional(editableFields.writeValues),
    decision: Type.Optional(editableFields.decision),
    followUp: Type.Optional(editableFields.followUp)
  },
  {
    additionalProperties: false, minProperties: 1, description: 'Fields to change; use PUT …/steps/order to move a step',
    examples: [{ name: 'Call the owner with the value', deadlineDays: 2 }]
  }
)
export type UpdateStep = Static<typeof UpdateStepSchema>

export const StepParamsSchema = Type.Object({ id: Uuid, stepId: Uuid })

export const ReorderStepsSchema = Type.Object(
  { stepIds: Type.Array(Uuid, { maxItems: MAX_TEMPLATE_STEPS, description: 'Every step id of the template, each once, in the new order' }) },
  { additionalProperties: false, examples: [{ stepIds: ['0190f3a4-0002-7000-8000-000000000002', '0190f3a4-0001-7000-8000-000000000001'] }] }
)

export const ListStepsQuerySchema = PageQuerySchema

