import { recordRoutes } from '../records/routes.js'
import type { RecordKind } from '../records/schemas.js'

export const addressKind: RecordKind = { table: 'addresses', path: 'addresses', tag: 'addresses', noun: 'Address' }

export default recordRoutes(addressKind)
