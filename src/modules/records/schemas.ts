import { Type, type Static } from 'typebox'
import type { JsonObject } from '../../db/database.js'
import { IdempotencyKeyHeader, PageQuerySchema, Timestamp, Uuid } from '../../schemas/common.js'

export type RecordTable = 'properties' | 'addresses'
export type RecordNoun = 'Property' | 'Address'

/** Which record module a route, service call or query is about. */
export interface RecordKind {
  table: RecordTable
  path: RecordTable
  tag: string
  noun: RecordNoun
}

/** A free JSON object; typed as one so that services need no casts. */
export const JsonObjectSchema = Type.Unsafe<JsonObject>(Type.Object({}, { additionalProperties: true }))

const FieldsSchema = Type.Unsafe<JsonObject>(Type.Object({}, {
  additionalProperties: true,
  description: 'Free JSON object, e.g. { "price": 250000, "livingArea": 92 }; at most 32 levels of objects and arrays deep ' +
    '(this object being the first) and 256 KiB as compact JSON, else 422; a top-level name may be neither empty nor contain a comma (422)'
}))

const MaintainerUserId = Type.Union([Uuid, Type.Null()], { description: 'A user of the tenant (Betreuer), or null' })

export function recordSchema(noun: RecordNoun) {
  return Type.Object(
    { id: Uuid, maintainerUserId: MaintainerUserId, fields: FieldsSchema, version: Type.Integer(), createdAt: Timestamp, updatedAt: Timestamp },
    { $id: noun }
  )
}
export type ApiRecord = Static<ReturnType<typeof recordSchema>>

export const CreateRecordSchema = Type.Object(
  { maintainerUserId: Type.Optional(MaintainerUserId), fields: Type.Optional(FieldsSchema) },
  { additionalProperties: false, examples: [{ maintainerUserId: '0190f3a4-1111-7222-8333-444455556666', fields: { price: 450000, livingArea: 96 } }] }
)
export type CreateRecord = Static<typeof CreateRecordSchema>

export const CreateRecordHeadersSchema = Type.Object({
  'idempotency-key': IdempotencyKeyHeader('A retried create with the same key returns the record the first one created, instead of creating a second one')
})

const FieldsPatchSchema = Type.Unsafe<JsonObject>(Type.Object({}, {
  additionalProperties: true,
  description: 'JSON merge patch of the top-level fields: a key set to null is removed, others replaced, keys not named kept. ' +
    'The merged fields keep the limits of a record\'s fields (32 levels, 256 KiB, no empty name and no comma in a name it sets), else 422'
}))

export const UpdateRecordSchema = Type.Object(
  { maintainerUserId: Type.Optional(MaintainerUserId), fields: Type.Optional(FieldsPatchSchema) },
  { additionalProperties: false, minProperties: 1, examples: [{ fields: { marketValue: 512000, valuationNote: null } }] }
)
export type UpdateRecord = Static<typeof UpdateRecordSchema>

export const ListRecordsQuerySchema = Type.Object({
  ...PageQuerySchema.properties,
  maintainerUserId: Type.Optional(Type.String({ format: 'uuid', description: 'Only records this user maintains' })),
  fields: Type.Optional(Type.String({
    maxLength: 2000,
    description: 'A JSON object the record\'s fields must contain (jsonb @>), e.g. {"city":"Berlin"}'
  }))
})
export type ListRecordsQuery = Static<typeof ListRecordsQuerySchema>
