import { Type, type Static } from 'typebox'
import { StringEnum, Uuid } from '../../../schemas/common.js'

/**
 * A service takes at most as many parameters as a step may pass: each call carries every one with a
 * default, and PHP reads at most 1,000 query variables (max_input_vars), cutting off the signature.
 */
export const MAX_SERVICE_PARAMETERS = 100

const PARAMETER_TYPES = ['string', 'integer', 'number', 'boolean', 'enum'] as const

const ParameterType = StringEnum(PARAMETER_TYPES)
const AllowedValues = Type.Union([Type.Array(Type.String({ maxLength: 200 }), { maxItems: 200 }), Type.Null()], {
  description: 'The values an enum parameter accepts (non-empty, unique); null for other types'
})
const DefaultValue = Type.Union([Type.String({ maxLength: 2000 }), Type.Number(), Type.Boolean(), Type.Null()], {
  description: 'Sent when a step passes no value; must fit the type'
})

export const WebhookParameterSchema = Type.Object(
  {
    id: Uuid,
    serviceId: Uuid,
    name: Type.String(),
    label: Type.String(),
    type: ParameterType,
    allowedValues: AllowedValues,
    required: Type.Boolean(),
    default: DefaultValue
  },
  { $id: 'WebhookParameter' }
)
export type WebhookParameter = Static<typeof WebhookParameterSchema>
export type ParameterDefinition = Omit<WebhookParameter, 'id' | 'serviceId'>

// Name rules are checked by the service (422), so the schema only bounds the length.
const Name = Type.String({ maxLength: 64, description: 'A query parameter name: ^[A-Za-z][A-Za-z0-9_]*$, not a context parameter' })
const labelLength = { minLength: 1, maxLength: 200 }

export const CreateParameterSchema = Type.Object(
  {
    name: Name,
    label: Type.Optional(Type.String({ ...labelLength, description: 'Defaults to the name' })),
    type: ParameterType,
    allowedValues: Type.Optional(AllowedValues),
    required: Type.Optional(Type.Boolean({ default: false })),
    default: Type.Optional(DefaultValue)
  },
  { additionalProperties: false, examples: [{ name: 'mode', label: 'Mode', type: 'enum', allowedValues: ['quick', 'full'], required: false, default: 'full' }] }
)
export type CreateParameter = Static<typeof CreateParameterSchema>

export const UpdateParameterSchema = Type.Object(
  {
    name: Type.Optional(Name),
    label: Type.Optional(Type.String(labelLength)),
    type: Type.Optional(ParameterType),
    allowedValues: Type.Optional(AllowedValues),
    required: Type.Optional(Type.Boolean()),
    default: Type.Optional(DefaultValue)
  },
  { additionalProperties: false, minProperties: 1, examples: [{ allowedValues: ['quick', 'full', 'expert'] }] }
)
export type UpdateParameter = Static<typeof UpdateParameterSchema>

export const ParameterParamsSchema = Type.Object({ id: Uuid, parameterId: Uuid })
