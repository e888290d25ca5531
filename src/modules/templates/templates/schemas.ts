import { Type, type Static } from 'typebox'
import { PageQuerySchema, Timestamp, Uuid } from '../../../schemas/common.js'
import { StepSchema, type Step } from '../steps/schemas.js'
import { PlainText } from '../text.js'
import { ExpressionSchema } from '../expressions/schema.js'
import { AutostartSchema } from '../../autostart/schemas.js'

const Name = PlainText({ minLength: 1, maxLength: 200 })
const Description = PlainText({ maxLength: 4000 })
const ControllerUserId = Type.Union([Uuid, Type.Null()], {
  description: 'The process controller; when null, the user who starts a process'
})

const Autostart = Type.Union([AutostartSchema, Type.Null()], {
  description: 'When the template starts processes by itself (only while active); null: only by POST /v1/process-instances'
})

const templateFields = {
  id: Uuid,
  name: Type.String(),
  description: Type.String(),
  active: Type.Boolean({ description: 'Only active templates start processes; new and copied templates are inactive' }),
  controllerUserId: ControllerUserId,
  notifyOnCompletion: Type.Boolean(),
  autostart: Autostart,
  version: Type.Integer({ description: 'Also sent as ETag; send it back as If-Match' }),
  createdAt: Timestamp,
  updatedAt: Timestamp
}

const TemplateSchema = Type.Object(
  { ...templateFields, steps: Type.Array(Type.Ref('ProcessTemplateStep'), { description: 'Ordered by position' }) },
  { $id: 'ProcessTemplate' }
)
export type Template = Omit<Static<typeof TemplateSchema>, 'steps'> & { steps: Step[] }

const TemplateSummarySchema = Type.Object(
  { ...templateFields, stepCount: Type.Integer() },
  { $id: 'ProcessTemplateSummary', description: 'A template as listed: its steps are counted, not included' }
)
export type TemplateSummary = Static<typeof TemplateSummarySchema>

export const CreateTemplateSchema = Type.Object(
  {
    name: Name,
    description: Type.Optional(Description),
    controllerUserId: Type.Optional(ControllerUserId),
    notifyOnCompletion: Type.Optional(Type.Boolean()),
    autostart: Type.Optional(Autostart)
  },
  { additionalProperties: false, examples: [{ name: 'Re-value a property', controllerUserId: '0190f3a4-1111-7222-8333-444455556666' }] }
)
export type CreateTemplate = Static<typeof CreateTemplateSchema>

export const UpdateTemplateSchema = Type.Object(
  {
    name: Type.Optional(Name),
    description: Type.Optional(Description),
    active: Type.Optional(Type.Boolean({ description: 'true needs at least one step and usable services in every webhook step' })),
    controllerUserId: Type.Optional(ControllerUserId),
    notifyOnCompletion: Type.Optional(Type.Boolean()),
    autostart: Type.Optional(Autostart)
  },
  { additionalProperties: false, minProperties: 1, examples: [{ active: true }] }
)
export type UpdateTemplate = Static<typeof UpdateTemplateSchema>

export const CopyTemplateSchema = Type.Object(
  { name: Type.Optional(Name) },
  { additionalProperties: false, description: 'The copy\'s name defaults to "Copy of <name>"', examples: [{ name: 'Re-value a property (quick)' }] }
)
export type CopyTemplate = Static<typeof CopyTemplateSchema>

export const ListTemplatesQuerySchema = Type.Object({
  ...PageQuerySchema.properties,
  active: Type.Optional(Type.Boolean({ description: 'Only active (true) or inactive (false) templates' })),
  q: Type.Optional(PlainText({ maxLength: 200, description: 'Part of the name (case-insensitive)' }))
})
export type ListTemplatesQuery = Static<typeof ListTemplatesQuerySchema>

/** The named schemas both template route plugins answer with. */
export const templateSchemas = [ExpressionSchema, StepSchema, TemplateSchema, TemplateSummarySchema]
