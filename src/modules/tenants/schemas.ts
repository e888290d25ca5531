import { Type, type Static } from 'typebox'
import { Timestamp, Uuid } from '../../schemas/common.js'

const Name = Type.String({ minLength: 1, maxLength: 200 })
const WebId = Type.String({ pattern: '^[A-Za-z0-9_-]{1,64}$', description: 'Public id sent to providers as customerWebId' })
const TimeZone = Type.String({ minLength: 1, maxLength: 64, description: 'IANA time zone, in any case; stored and shown as the zone database spells it (europe/berlin is Europe/Berlin; a link such as Asia/Kolkata as given)', examples: ['Europe/Berlin'] })

export const TenantSchema = Type.Object(
  {
    id: Uuid,
    name: Type.String(),
    webId: Type.String(),
    timeZone: Type.String(),
    createdAt: Timestamp,
    updatedAt: Timestamp,
    deletingSince: Type.Union([Timestamp, Type.Null()], {
      description: 'When a deletion of the tenant began that has not finished (its API keys are refused meanwhile); null otherwise. ' +
        'A deletion cut off leaves it set: deleting the tenant again finishes it.'
    })
  },
  { $id: 'Tenant' }
)
export type Tenant = Static<typeof TenantSchema>

export const CreateTenantSchema = Type.Object(
  { name: Name, webId: WebId, timeZone: Type.Optional(TimeZone) },
  { additionalProperties: false, examples: [{ name: 'Muster Immobilien GmbH', webId: '48213', timeZone: 'Europe/Berlin' }] }
)
export type CreateTenant = Static<typeof CreateTenantSchema>

export const UpdateTenantSchema = Type.Object(
  { name: Type.Optional(Name), webId: Type.Optional(WebId), timeZone: Type.Optional(TimeZone) },
  { additionalProperties: false, minProperties: 1, examples: [{ name: 'Muster Immobilien AG' }] }
)
export type UpdateTenant = Static<typeof UpdateTenantSchema>

export const ApiKeySchema = Type.Object(
  {
    id: Uuid,
    tenantId: Uuid,
    name: Type.String(),
    prefix: Type.String({ description: 'The first characters of the key, to tell keys apart' }),
    createdAt: Timestamp,
    revokedAt: Type.Union([Timestamp, Type.Null()])
  },
  { $id: 'ApiKey' }
)
export type ApiKey = Static<typeof ApiKeySchema>

export const NewApiKeySchema = Type.Object(
  {
    ...ApiKeySchema.properties,
    key: Type.String({ description: 'The secret key: shown only in this response, stored hashed' })
  },
  { $id: 'NewApiKey' }
)
export type NewApiKey = Static<typeof NewApiKeySchema>

export const CreateApiKeySchema = Type.Object(
  { name: Type.String({ minLength: 1, maxLength: 200, default: 'default' }) },
  { additionalProperties: false, examples: [{ name: 'crm' }] }
)

export const TenantKeyParamsSchema = Type.Object({ id: Uuid, keyId: Uuid })
