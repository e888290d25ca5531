import { recordRoutes } from '../records/routes.js'
import type { RecordKind } from '../records/schemas.js'

export const propertyKind: RecordKind = { table: 'properties', path: 'properties', tag: 'properties', noun: 'Property' }

export default recordRoutes(propertyKind)
