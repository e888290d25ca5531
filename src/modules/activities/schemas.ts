import { Type, type Static } from 'typebox'
import { Timestamp, Uuid } from '../../schemas/common.js'
import { JsonObjectSchema } from '../records/schemas.js'

const OptionalId = Type.Union([Uuid, Type.Null()])

export const ActivitySchema = Type.Object(
  {
    id: Uuid,
    kind: Type.String({ description: 'What happened, e.g. stepStarted, webhookCalled' }),
    message: Type.String(),
    propertyId: OptionalId,
    addressId: OptionalId,
    instanceId: OptionalId,
    stepId: OptionalId,
    serviceId: OptionalId,
    data: JsonObjectSchema,
    createdAt: Timestamp
  },
  { $id: 'Activity', description: 'An entry in a record\'s activity log' }
)
export type Activity = Static<typeof ActivitySchema>
