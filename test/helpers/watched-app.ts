import type { Test } from 'tap'
import { buildApp, serverOptions } from '../../src/app.js'
import { loadConfig } from '../../src/config.js'
import type { KyselyPlugin, RootOperationNode } from '../../src/db/kysely.js'
import { hashKey } from '../../src/lib/keys.js'
import { client, type Client, type TestContext } from './app.js'

export interface WatchedApp {
  as(key: string): Client
  /** Runs `action` once, right after the next statement whose SQL matches `pattern` has answered. */
  after(pattern: RegExp, action: () => Promise<unknown>): void
}

/**
 * A second app on the same database whose statements can be watched: `after(pattern, action)` runs
 * `action` (another client's write) once, right after the next statement whose SQL matches has
 * answered, before the request that ran it goes on. So a write lands between two statements of one
 * request, where a busy server puts it now and then.
 */
export async function watchedApp(t: Test, ctx: TestContext): Promise<WatchedApp> {
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
