import { Type, type Static } from 'typebox'
import { StringEnum, Uuid } from '../../../schemas/common.js'

const Module = StringEnum(['property', 'address'], { description: 'The kind of record whose changes fire the trigger' })
const Events = Type.Array(StringEnum(['create', 'update']), { minItems: 1, uniqueItems: true })
const Fields = Type.Array(Type.String({ minLength: 1, maxLength: 200 }), {
  uniqueItems: true,
  maxItems: 100,
  description: 'Watched top-level field names; empty = any change. A name a record cannot hold (with a comma, or __proto__) answers 422'
})

export const ServiceTriggerSchema = Type.Object(
  { id: Uuid, serviceId: Uuid, module: Module, events: Events, fields: Fields },
  { $id: 'ServiceTrigger' }
)
export type ServiceTrigger = Static<typeof ServiceTriggerSchema>

export const CreateTriggerSchema = Type.Object(
  { module: Module, events: Events, fields: Type.Optional(Fields) },
  { additionalProperties: false, examples: [{ module: 'property', events: ['update'], fields: ['marketValue'] }] }
)
export type CreateTrigger = Static<typeof CreateTriggerSchema>

export const UpdateTriggerSchema = Type.Object(
  { module: Type.Optional(Module), events: Type.Optional(Events), fields: Type.Optional(Fields) },
  { additionalProperties: false, minProperties: 1, examples: [{ events: ['create', 'update'] }] }
)
export type UpdateTrigger = Static<typeof UpdateTriggerSchema>

export const TriggerParamsSchema = Type.Object({ id: Uuid, triggerId: Uuid })
