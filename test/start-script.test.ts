// scripts/start.mjs, which `npm start`, `npm run start:api` and `npm run worker` run: the sources
// compiled by esbuild into node_modules/.cache/baton/start/<key>, again when a source changed.
import { appendFile, cp, mkdir, mkdtemp, readdir, readFile, rm, symlink, utimes } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import t from 'tap'
import { ROOT, runCommand } from './helpers/process.js'

const CACHE = join(ROOT, 'node_modules', '.cache', 'baton', 'start')

t.test('a changed source is compiled, once, and two starts at once both run it', async (t) => {
  // A copy of the tree whose node_modules is this one's, with one source changed.
  const root = await mkdtemp(join(tmpdir(), 'baton-start-'))
  t.teardown(() => rm(root, { recursive: true, force: true }))
  for (const part of ['src', 'migrations', 'scripts', 'package.json', 'tsconfig.json']) await cp(join(ROOT, part), join(root, part), { recursive: true })
  await symlink(join(ROOT, 'node_modules'), join(root, 'node_modules'))
  const marker = `changed source ${process.pid}-${Date.now()}`
  // With a stack trace of its own: it points into the TypeScript source, not the compiled file.
  await appendFile(join(root, 'src/version.ts'), `\nconsole.log(${JSON.stringify(marker)}, new Error('here').stack)\n`)

  const start = async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'baton-start-data-'))
    t.teardown(() => rm(dataDir, { recursive: true, force: true }))
    // Through a shell that clears NODE_OPTIONS: tap's hooks, which it adds to every process a test starts,
    // turn source maps on, and start.mjs must do that itself.
    const server = runCommand('sh', ['-c', 'NODE_OPTIONS= exec "$0" scripts/start.mjs', process.execPath], {
      BATON_DATA_DIR: dataDir, PORT: '0', LOG_LEVEL: 'info', DATABASE_URL: '', BATON_ADMIN_TOKEN: 'a-test-operator-key-of-enough-length',
      SHUTDOWN_DELAY_MS: '0'
    }, { cwd: root })
    t.teardown(() => { server.child.kill('SIGKILL') })
    return server
  }
  // What earlier starts left: a compile unused for two hours, one used a minute ago, a half-removed one.
  const hoursAgo = new Date(Date.now() - 2 * 3600_000)
  const left = { stale: join(CACHE, `stale-${process.pid}`), recent: join(CACHE, `recent-${process.pid}`) }
  const removing = `${left.stale}.1-1.removing`
  for (const dir of [left.stale, left.recent, removing]) await mkdir(join(dir, 'src'), { recursive: true })
  await utimes(left.stale, hoursAgo, hoursAgo)
  t.teardown(() => Promise.all([left.stale, left.recent, removing].map((dir) => rm(dir, { recursive: true, force: true }))))

  const servers = [await start(), await start()]
  for (const server of servers) {
    await server.waitFor(/Baton listening on/, 90_000)
    t.match(server.output(), marker, 'it runs the changed source')
    t.match(server.output(), /Error: here\n\s+at .*src\/version\.ts:\d+:\d+/, 'its stack trace points into the source')
    server.child.kill('SIGTERM')
    t.equal(await server.exited, 0)
  }

  const names = await readdir(CACHE)
  const compiled: string[] = []
  for (const name of names.filter((n) => /^[0-9a-f]{16}$/.test(n))) {
    if ((await readFile(join(CACHE, name, 'src/version.js'), 'utf8')).includes(marker)) compiled.push(name)
  }
  t.teardown(() => Promise.all(compiled.map((name) => rm(join(CACHE, name), { recursive: true, force: true }))))
  t.equal(compiled.length, 1, 'one compiled folder for the changed tree')
  t.match(await readFile(join(CACHE, compiled[0]!, 'node_modules/typebox/index.mjs'), 'utf8'), /^\/\/ typebox, bundled/, 'with typebox bundled into one module in its own node_modules')
  t.same(names.filter((n) => compiled.some((c) => n.startsWith(`${c}.`))), [], 'nothing half written or half removed is left beside it')
  t.notOk(names.some((n) => n.startsWith(basename(left.stale))), 'a compile no start used for an hour is removed, and a half-removed one')
  t.ok(names.includes(basename(left.recent)), 'a compile used a minute ago is kept')
})
