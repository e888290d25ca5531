// The API benchmarks' shared setup: a tenant with a key, an activated service, a user, and two active
// templates (a webhook then a task, to start; twenty tasks, to advance), created through the API.

export interface Fixture {
  json: Record<string, string>
  userId: string
  serviceId: string
  startTemplate: string
  advanceTemplate: string
}

export async function fixture(base: string, operatorKey: string): Promise<Fixture> {
  const call = async (key: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}) => {
    const response = await fetch(`${base}${path}`, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
      ...(body === undefined ? {} : { body: JSON.stringify(body) })
    })
    const data = await response.json().catch(() => undefined)
    if (response.status >= 300) throw new Error(`${method} ${path}: ${response.status} ${JSON.stringify(data)}`)
    return data
  }
  const tenant = await call(operatorKey, 'POST', '/v1/tenants', { name: 'Bench Immobilien', webId: `bench${process.pid}${Math.floor(Math.random() * 1e6)}` })
  const { key } = await call(operatorKey, 'POST', `/v1/tenants/${tenant.id}/api-keys`, { name: 'bench' })
  const service = await call(operatorKey, 'POST', '/v1/marketplace-services', { name: 'ValueCo', provider: 'ValueCo', webhookUrl: 'http://127.0.0.1:9/hook' })
  await call(key, 'PUT', `/v1/marketplace-services/${service.id}/activation`)
  const user = await call(key, 'POST', '/v1/users', { name: 'Bea Bench', email: 'bea@example.com' })
  const template = async (steps: Record<string, unknown>[]) => {
    const created = await call(key, 'POST', '/v1/process-templates', { name: `Bench ${steps.length}`, controllerUserId: user.id })
    for (const step of steps) await call(key, 'POST', `/v1/process-templates/${created.id}/steps`, { start: { mode: 'afterPrevious' }, responsibility: 'processResponsible', ...step })
    const { version } = await call(key, 'GET', `/v1/process-templates/${created.id}`)
    await call(key, 'PATCH', `/v1/process-templates/${created.id}`, { active: true }, { 'if-match': `"${version}"` })
    return created.id as string
  }
  return {
    json: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    userId: user.id,
    serviceId: service.id,
    startTemplate: await template([{ kind: 'webhook', name: 'Ask ValueCo', serviceId: service.id }, { kind: 'task', name: 'Call the owner', deadlineDays: 2 }]),
    advanceTemplate: await template(Array.from({ length: 20 }, (_, i) => ({ kind: 'task', name: `Task ${i + 1}` })))
  }
}

export async function startMany(base: string, fx: Fixture, templateId: string, count: number): Promise<string[]> {
  const ids: string[] = []
  for (let i = 0; i < count; i++) {
    const response = await fetch(`${base}/v1/process-instances`, { method: 'POST', headers: fx.json, body: JSON.stringify({ templateId, responsibleUserId: fx.userId }) })
    ids.push(((await response.json()) as { id: string }).id)
  }
  return ids
}

/** The routes the API benchmarks load, by the names `--routes` takes. */
const ROUTE_NAMES = ['start', 'read', 'advance'] as const

/** `--routes start,read`: the names given, each one checked. */
export function routesOf(list: string): string[] {
  const routes = list.split(',').map((r) => r.trim())
  for (const route of routes) {
    if (!(ROUTE_NAMES as readonly string[]).includes(route)) throw new Error(`--routes: no route "${route}" (${ROUTE_NAMES.join(', ')})`)
  }
  return routes
}
