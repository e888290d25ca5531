import { Type, type Static } from 'typebox'
import { PageQuerySchema, StringEnum, Timestamp, Uuid } from '../../../schemas/common.js'
import { WEBHOOK_URL_RULE } from './webhook-url.js'

const Delivery = StringEnum(['query', 'json'], {
  description: 'query = GET with signed query parameters (onOffice-compatible); json = POST with a Standard Webhooks body'
})

export const MarketplaceServiceSchema = Type.Object(
  {
    id: Uuid,
    name: Type.String(),
    provider: Type.String(),
    webhookUrl: Type.String(),
    delivery: Delivery,
    active: Type.Boolean({ description: 'Only active services can be activated by tenants' }),
    version: Type.Integer({ description: 'Send as If-Match to update' }),
    createdAt: Timestamp,
    updatedAt: Timestamp,
    activated: Type.Optional(Type.Boolean({ description: 'For tenant callers: whether the calling tenant has activated the service' }))
  },
  { $id: 'MarketplaceService' }
)
export type MarketplaceService = Static<typeof MarketplaceServiceSchema>

export const MarketplaceServiceWithSecretSchema = Type.Object(
  {
    ...MarketplaceServiceSchema.properties,
    secret: Type.String({ description: 'The signing secret: shown only in this response' })
  },
  { $id: 'MarketplaceServiceWithSecret' }
)
export type MarketplaceServiceWithSecret = Static<typeof MarketplaceServiceWithSecretSchema>

const Name = Type.String({ minLength: 1, maxLength: 200 })
const WebhookUrl = Type.String({
  minLength: 1,
  maxLength: 2000,
  description: WEBHOOK_URL_RULE
})
const secretLength = { minLength: 16, maxLength: 256 }
const SECRET_RULE = 'Either whsec_ and strict, padded base64 of 24 to 64 random bytes (the Standard Webhooks form), or at least ' +
  '24 characters with 8 different ones, no spaces or control characters and not starting with enc:; else 422'

export const CreateServiceSchema = Type.Object(
  {
    name: Name,
    provider: Name,
    webhookUrl: WebhookUrl,
    delivery: Type.Optional(StringEnum(['query', 'json'], { default: 'query' })),
    secret: Type.Optional(Type.String({ ...secretLength, description: `The signing secret (write-only); generated when absent. ${SECRET_RULE}` })),
    active: Type.Optional(Type.Boolean({ default: true }))
  },
  { additionalProperties: false, examples: [{ name: 'Valuation', provider: 'ValueCo', webhookUrl: 'https://valueco.example/hooks/valuation' }] }
)
export type CreateService = Static<typeof CreateServiceSchema>

export const UpdateServiceSchema = Type.Object(
  {
    name: Type.Optional(Name),
    provider: Type.Optional(Name),
    webhookUrl: Type.Optional(WebhookUrl),
    delivery: Type.Optional(Delivery),
    active: Type.Optional(Type.Boolean()),
    secret: Type.Optional(Type.String({
      ...secretLength,
      description: `A new signing secret; the old one stays valid for 24 hours while providers switch. ${SECRET_RULE}`
    }))
  },
  { additionalProperties: false, minProperties: 1, examples: [{ webhookUrl: 'https://valueco.example/hooks/valuation-v2' }] }
)
export type UpdateService = Static<typeof UpdateServiceSchema>

export const ListServicesQuerySchema = Type.Object({
  ...PageQuerySchema.properties,
  active: Type.Optional(Type.Boolean()),
  provider: Type.Optional(Type.String({ maxLength: 200, description: 'Exact provider name' })),
  activated: Type.Optional(Type.Boolean({ description: 'Tenant callers only: activated by the calling tenant or not' }))
})
export type ListServicesQuery = Static<typeof ListServicesQuerySchema>

export const ServiceActivationSchema = Type.Object(
  { serviceId: Uuid, activated: Type.Literal(true), activatedAt: Timestamp },
  { $id: 'ServiceActivation' }
)
export type ServiceActivation = Static<typeof ServiceActivationSchema>
