import t from 'tap'
import { buildApp, serverOptions } from '../../src/app.js'
import { loadConfig } from '../../src/config.js'
import type { KyselyPlugin, RootOperationNode } from '../../src/db/kysely.js'
import { hashKey } from '../../src/lib/keys.js'
import { client, setupApp } from '../helpers/app.js'
import { addTaskStep, createTemplate } from '../modules/templates/fixtures.js'

// Lists walked page by page while rows of them are added, changed and deleted: a row there for the
// whole walk is sent once, in the list's order.

const ctx = await setupApp(t)

/**
 * A second app on the same database whose statements can be watched: `after(pattern, action)` runs
 * `action` (another client's write) once, right after the next statement whose SQL matches has
 * answered, before the request that ran it goes on. So a write lands between two statements of one
 * request, where a busy server puts it now and then.
 */
async function watchedApp() {
  let watch: { pattern: RegExp; action: () => Promise<unknown> } | undefined
  const matched = new Set<string>()
  const plugin: KyselyPlugin = {
    transformQuery(args) {
      if (watch && watch.pattern.test(compile(args.node))) matched.add(args.queryId.queryId)
      return args.node
    },
    async transformResult(args) {
      if (watch && matched.delete(args.queryId.queryId)) {
        const { action } = watch
        watch = undefined
        await action()
      }
      return args.result
    }
  }
  const compile = (node: RootOperationNode) => ctx.db.getExecutor().compileQuery(node, { queryId: 'watch' }).sql
  const config = loadConfig({ NODE_ENV: 'test', LOG_LEVEL: 'silent', PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '0' })
  const app = await buildApp({ config, db: ctx.db.withPlugin(plugin), operatorKeyHash: hashKey(ctx.operatorKey), clock: ctx.clock }, serverOptions(config, false))
  await app.ready()
  t.teardown(() => app.close())
  return {
    as: (key: string) => client(app, key),
    after(pattern: RegExp, action: () => Promise<unknown>) { watch = { pattern, action } }
  }
}
// The first statement of a steps page that reads the steps: a write right after it lands between
// whatever the page reads of the steps, if it reads them more than once.
const READS_STEPS = /^select .* from "template_steps"/

for (const [change, expected] of [['deleted', ['d', 'e', 'f']], ['added', ['d', 'e', 'f']]] as const) {
  t.test(`a step ${change} before the page's last step while the next page is read: no step skipped or sent twice`, async (t) => {
    const watched = await watchedApp()
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
