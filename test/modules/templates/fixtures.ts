import { randomUUID } from 'node:crypto'
import type { Client } from '../../helpers/app.js'
import type { DB } from '../../../src/db/connect.js'
import type { ParameterType } from '../../../src/db/database.js'

// The marketplace routes are built elsewhere, so the catalogue is written straight into the database.

export async function createService(db: DB, overrides: { name?: string; active?: boolean } = {}): Promise<string> {
  const id = randomUUID()
  await db.insertInto('marketplace_services').values({
    id,
    name: overrides.name ?? 'Valuation',
    provider: 'Acme',
    webhook_url: 'https://provider.example/hook',
    delivery: 'query',
    secret: 'secret',
    active: overrides.active ?? true
  }).execute()
  return id
}

export interface ParameterFixture {
  name: string
  type: ParameterType
  allowedValues?: string[]
  required?: boolean
  default?: unknown
}

export async function addParameter(db: DB, serviceId: string, p: ParameterFixture): Promise<void> {
  await db.insertInto('service_parameters').values({
    service_id: serviceId,
    id: randomUUID(),
    name: p.name,
    label: p.name,
    type: p.type,
    allowed_values: p.allowedValues === undefined ? null : JSON.stringify(p.allowedValues),
    required: p.required ?? false,
    default_value: p.default === undefined ? null : JSON.stringify(p.default)
  }).execute()
}

export async function activate(db: DB, tenantId: string, serviceId: string): Promise<void> {
  await db.insertInto('service_activations').values({ tenant_id: tenantId, service_id: serviceId }).execute()
}

/** An active service with a required enum `mode` and an optional integer `rooms` defaulting to 3, activated for the tenant. */
export async function valuationService(db: DB, tenantId: string): Promise<string> {
  const id = await createService(db)
  await addParameter(db, id, { name: 'mode', type: 'enum', allowedValues: ['full', 'quick'], required: true })
  await addParameter(db, id, { name: 'rooms', type: 'integer', default: 3 })
  await activate(db, tenantId, id)
  return id
}

export async function createUser(client: Client, name = 'Anna'): Promise<string> {
  const user = await client.post('/v1/users', { name, email: `${name.toLowerCase()}.${randomUUID()}@example.com` })
  if (user.statusCode !== 201) throw new Error(`user not created: ${user.body}`)
  return user.data.id
}

export async function createTemplate(client: Client, body: Record<string, unknown> = {}): Promise<string> {
  const template = await client.post('/v1/process-templates', { name: 'Valuation process', ...body })
  if (template.statusCode !== 201) throw new Error(`template not created: ${template.body}`)
  return template.data.id
}

export async function addTaskStep(client: Client, templateId: string, name: string, extra: Record<string, unknown> = {}): Promise<string> {
  const step = await client.post(`/v1/process-templates/${templateId}/steps`, { kind: 'task', name, ...extra })
  if (step.statusCode !== 201) throw new Error(`step not created: ${step.body}`)
  return step.data.id
}
