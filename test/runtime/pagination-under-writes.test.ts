import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { setupApp } from '../helpers/app.js'
import { watchedApp } from '../helpers/watched-app.js'
import { addTaskStep, createTemplate } from '../modules/templates/fixtures.js'

// Lists walked page by page while rows of them are added, changed and deleted: a row there for the
// whole walk is sent once, in the list's order.

const ctx = await setupApp(t)

// The first statement of a steps page that reads the steps: a write right after it lands between
// whatever the page reads of the steps, if it reads them more than once.
const READS_STEPS = /^select .* from "template_steps"/

for (const [change, expected] of [['deleted', ['d', 'e', 'f']], ['added', ['d', 'e', 'f']]] as const) {
  t.test(`a step ${change} before the page's last step while the next page is read: no step skipped or sent twice`, async (t) => {
    const watched = await watchedApp(t, ctx)
    const { client: api, key } = await ctx.newTenant()
    const template = await createTemplate(api)
    const ids: string[] = []
    for (const name of ['a', 'b', 'c', 'd', 'e', 'f']) ids.push(await addTaskStep(api, template, name))

    const first = await api.get(`/v1/process-templates/${template}/steps?limit=3`)
    t.same(first.data.items.map((s: { name: string }) => s.name), ['a', 'b', 'c'])
    let written = 0
    watched.after(READS_STEPS, async () => {
      // Step c moves from 3 to 2 (a deleted) or to 4 (one added at 1).
      const write = change === 'deleted'
        ? await api.delete(`/v1/process-templates/${template}/steps/${ids[0]}`, { 'if-match': '*' })
        : await api.post(`/v1/process-templates/${template}/steps`, { kind: 'task', name: 'new', position: 1 })
      written = write.statusCode
    })
    const second = await watched.as(key).get(`/v1/process-templates/${template}/steps?limit=3&cursor=${first.data.nextCursor}`)
    t.equal(written, change === 'deleted' ? 204 : 201, 'the write landed while the page was read')
    t.same(second.data.items.map((s: { name: string }) => s.name), expected, 'the page goes on after c')
  })
}

// Over real HTTP: each list walked two rows a page while a writer, on connections of its own, adds rows,
// changes the rows there for the whole walk and deletes others. All rows share one createdAt (the
// test's clock stands still): ties the order breaks by id.

await ctx.app.listen({ port: 0, host: '127.0.0.1' })
const origin = `http://127.0.0.1:${(ctx.app.server.address() as AddressInfo).port}`

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- tests read JSON freely
type Loose = any

async function http(key: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; data: Loose }> {
  const response = await fetch(`${origin}${path}`, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
    ...(body === undefined ? {} : { body: JSON.stringify(body) })
  })
  const text = await response.text()
  return { status: response.status, data: text ? JSON.parse(text) : undefined }
}

interface WalkedList {
  path: string
  key: string
  /** How the list is ordered: by id (oldest or newest first), or by position. */
  order: 'oldest' | 'newest' | 'position'
  create(n: number): Promise<string>
  update?(id: string, n: number): Promise<unknown>
  remove?(id: string): Promise<unknown>
}

/** Creates through the API, answering the new row's id. */
async function made(answer: Promise<{ status: number; data: Loose }>): Promise<string> {
  const { status, data } = await answer
  if (status !== 201) throw new Error(`not created: ${status} ${JSON.stringify(data)}`)
  return data.id
}

async function walkWhileWriting(t: Test, list: WalkedList): Promise<void> {
  const stable: string[] = []
  const volatile: string[] = []
  for (let n = 0; n < 10; n++) stable.push(await list.create(n))
  for (let n = 10; n < 20; n++) volatile.push(await list.create(n))

  const added: string[] = []
  const deleted: string[] = []
  let n = 20
  /** One round of another client's writes: a row added, a row there for the whole walk changed, another deleted. */
  const write = async () => {
    const round = n++
    const id = await list.create(round)
    added.push(id)
    volatile.push(id)
    if (list.update) await list.update(stable[round % stable.length]!, round)
    if (list.remove) {
      const [gone] = volatile.splice(round % volatile.length, 1)
      await list.remove(gone!)
      deleted.push(gone!)
    }
  }

  const seen: Loose[] = []
  let cursor: string | null = null
  let pages = 0
  do {
    // Each page is read while a round of writes runs.
    const [page]: [{ status: number; data: Loose }, void] = await Promise.all([
      http(list.key, 'GET', `${list.path}${list.path.includes('?') ? '&' : '?'}limit=2${cursor ? `&cursor=${cursor}` : ''}`),
      write()
    ])
    if (page.status !== 200) throw new Error(`page ${pages}: ${page.status} ${JSON.stringify(page.data)}`)
    seen.push(...page.data.items)
    cursor = page.data.nextCursor
    pages++
  } while (cursor !== null)

  const ids = seen.map((item) => item.id as string)
  const twice = ids.filter((id, i) => ids.indexOf(id) !== i)
  t.same(twice, [], `${list.path}: no row sent twice (${pages} pages, ${added.length} rows added, ${deleted.length} deleted during the walk)`)
  t.same(stable.filter((id) => !ids.includes(id)), [], 'every row there for the whole walk was sent')
  const stableSeen = ids.filter((id) => stable.includes(id))
  if (list.order === 'position') {
    t.same(stableSeen, stable, 'in their order')
  } else {
    const sorted = [...ids].sort()
    t.same(ids, list.order === 'oldest' ? sorted : sorted.reverse(), `${list.order} first, by id`)
  }
  t.comment(`${list.path}: of ${added.length} rows added during the walk ${added.filter((id) => ids.includes(id)).length} were sent; of ${deleted.length} deleted, ${deleted.filter((id) => ids.includes(id)).length} had been sent before`)
}

t.test('every list walked page by page while rows are added, changed and deleted', async (t) => {
  const tenant = await ctx.newTenant()
  const op = ctx.operatorKey
  const key = tenant.key
  const as = (k: string) => (method: string, path: string, body?: unknown) => http(k, method, path, body, method === 'GET' || method === 'POST' ? {} : { 'if-match': '*' })
  const api = as(key)
  const operator = as(op)
  const service = await made(operator('POST', '/v1/marketplace-services', { name: 'Walked', provider: 'WalkCo', webhookUrl: 'https://walkco.example/hook' }))
  const template = await made(api('POST', '/v1/process-templates', { name: 'Walked steps' }))
  const user = await made(api('POST', '/v1/users', { name: 'Walker', email: 'walker@example.com' }))
  const active = await made(api('POST', '/v1/process-templates', { name: 'Started', controllerUserId: user }))
  await made(api('POST', `/v1/process-templates/${active}/steps`, { kind: 'task', name: 'Only' }))
  t.equal((await api('PATCH', `/v1/process-templates/${active}`, { active: true })).status, 200)

  const lists: WalkedList[] = [
    {
      path: '/v1/users', key, order: 'oldest',
      create: (n) => made(api('POST', '/v1/users', { name: `User ${n}`, email: `user${n}@example.com` })),
      update: (id, n) => api('PATCH', `/v1/users/${id}`, { name: `User ${n}'` }),
      remove: (id) => api('DELETE', `/v1/users/${id}`)
    },
    ...['properties', 'addresses'].map((records): WalkedList => ({
      path: `/v1/${records}`, key, order: 'oldest',
      create: (n) => made(api('POST', `/v1/${records}`, { fields: { n } })),
      update: (id, n) => api('PATCH', `/v1/${records}/${id}`, { fields: { n } }),
      remove: (id) => api('DELETE', `/v1/${records}/${id}`)
    })),
    {
      path: '/v1/process-templates?active=false', key, order: 'oldest',
      create: (n) => made(api('POST', '/v1/process-templates', { name: `Template ${n}` })),
      update: (id, n) => api('PATCH', `/v1/process-templates/${id}`, { name: `Template ${n}'` }),
      remove: (id) => api('DELETE', `/v1/process-templates/${id}`)
    },
    {
      path: `/v1/process-templates/${template}/steps`, key, order: 'position',
      // Added at the start, the middle or the end: the steps after move on by one.
      create: (n) => made(api('POST', `/v1/process-templates/${template}/steps`, { kind: 'task', name: `Step ${n}`, ...(n >= 20 ? { position: 1 + (n % 3) * 7 } : {}) })),
      update: (id, n) => api('PATCH', `/v1/process-templates/${template}/steps/${id}`, { name: `Step ${n}'` }),
      remove: (id) => api('DELETE', `/v1/process-templates/${template}/steps/${id}`)
    },
    {
      path: '/v1/process-instances', key, order: 'newest',
      create: () => made(api('POST', '/v1/process-instances', { templateId: active, responsibleUserId: user })),
      update: (id) => api('POST', `/v1/process-instances/${id}/cancel`, {})
    },
    {
      path: `/v1/tenants/${tenant.id}/api-keys`, key: op, order: 'oldest',
      create: (n) => made(operator('POST', `/v1/tenants/${tenant.id}/api-keys`, { name: `key ${n}` })),
      remove: (id) => operator('DELETE', `/v1/tenants/${tenant.id}/api-keys/${id}`)
    },
    {
      path: '/v1/tenants', key: op, order: 'oldest',
      create: (n) => made(operator('POST', '/v1/tenants', { name: `Walked ${n}`, webId: `walked${process.pid}x${n}` })),
      update: (id, n) => operator('PATCH', `/v1/tenants/${id}`, { name: `Walked ${n}'` }),
      remove: (id) => operator('DELETE', `/v1/tenants/${id}`)
    },
    {
      path: '/v1/marketplace-services', key: op, order: 'oldest',
      create: (n) => made(operator('POST', '/v1/marketplace-services', { name: `Service ${n}`, provider: 'WalkCo', webhookUrl: 'https://walkco.example/hook' })),
      update: (id, n) => operator('PATCH', `/v1/marketplace-services/${id}`, { name: `Service ${n}'` }),
      remove: (id) => operator('DELETE', `/v1/marketplace-services/${id}`)
    },
    {
      path: `/v1/marketplace-services/${service}/parameters`, key: op, order: 'oldest',
      create: (n) => made(operator('POST', `/v1/marketplace-services/${service}/parameters`, { name: `p${n}`, type: 'string' })),
      update: (id, n) => operator('PATCH', `/v1/marketplace-services/${service}/parameters/${id}`, { label: `P ${n}` }),
      remove: (id) => operator('DELETE', `/v1/marketplace-services/${service}/parameters/${id}`)
    }
  ]
  for (const list of lists) await walkWhileWriting(t, list)
})
