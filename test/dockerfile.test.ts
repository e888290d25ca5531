import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import t from 'tap'

// The image's HEALTHCHECK, run as Docker runs it (exec form), against listeners on this machine.
const dockerfile = readFileSync(new URL('../Dockerfile', import.meta.url), 'utf8')
const [command, ...args] = JSON.parse(/^HEALTHCHECK .* CMD (\[.*\])$/m.exec(dockerfile)?.[1] ?? '[]') as string[]

function healthcheck(env: Record<string, string>): Promise<number | null> {
  return new Promise((resolve) => spawn(command!, args, { env: { ...process.env, ...env }, stdio: 'ignore' }).on('exit', resolve))
}

async function listen(status: number): Promise<{ server: Server; port: string; paths: string[] }> {
  const paths: string[] = []
  const server = createServer((request, response) => {
    paths.push(request.url ?? '')
    response.writeHead(status).end()
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { server, port: String((server.address() as AddressInfo).port), paths }
}

async function closedPort(): Promise<string> {
  const { server, port } = await listen(200)
  await new Promise((resolve) => server.close(resolve))
  return port
}

t.test('the HEALTHCHECK asks /health/live on PORT, else on WORKER_HTTP_PORT, with node alone', async (t) => {
  t.equal(command, 'node', 'no curl in a slim image')
  const api = await listen(200)
  const worker = await listen(200)
  const sick = await listen(503)
  t.teardown(() => Promise.all([api, worker, sick].map(({ server }) => new Promise((resolve) => server.close(resolve)))))
  const closed = await closedPort()

  t.equal(await healthcheck({ PORT: api.port, WORKER_HTTP_PORT: closed }), 0, 'an API answering is healthy')
  t.same(api.paths, ['/health/live'])
  t.equal(await healthcheck({ PORT: closed, WORKER_HTTP_PORT: worker.port }), 0, 'a worker answering is healthy')
  t.same(worker.paths, ['/health/live'])
  t.equal(await healthcheck({ PORT: sick.port, WORKER_HTTP_PORT: worker.port }), 1, 'an API answering 503 is not')
  t.equal(await healthcheck({ PORT: closed, WORKER_HTTP_PORT: closed }), 1, 'nothing listening is not')
})

t.test('the image runs node with the heap and WebAssembly flags npm start, start:api and worker pass', async (t) => {
  const { scripts } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { scripts: Record<string, string> }
  const nodeFlags = (words: string[]) => words.filter((w) => /^--(?:(?:max-semi-space-size|heap-growing-percent|max-old-space-size)=|liftoff-only$)/.test(w))
  const start = nodeFlags(scripts.start!.split(/\s+/))
  t.ok(start.length > 0, 'npm start sets the heap')
  t.ok(start.includes('--liftoff-only'), "npm start compiles the embedded database's WebAssembly once")
  for (const name of ['start:api', 'worker']) t.same(nodeFlags(scripts[name]!.split(/\s+/)), start, name)
  const cmd = JSON.parse(/^CMD (\[.*\])$/m.exec(dockerfile)?.[1] ?? '[]') as string[]
  t.same(nodeFlags(cmd), start, 'the image')
})

t.test("the image compiles the operator's commands (npm runs them with tsx, which the image has not)", async (t) => {
  const { scripts } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { scripts: Record<string, string> }
  const { include } = JSON.parse(readFileSync(new URL('../tsconfig.build.json', import.meta.url), 'utf8')) as { include: string[] }
  const copied = dockerfile.split('\n').filter((line) => line.startsWith('COPY ')).join(' ')
  const commands = ['db:migrate', 'admin:rotate-key', 'secrets:reencrypt'].map((name) => /^tsx (scripts\/\S+\.ts)$/.exec(scripts[name] ?? '')?.[1])
  for (const file of [...commands, 'scripts/admin-command.ts']) {
    t.ok(file && include.includes(file), `${file} is built`)
    t.ok(file && copied.includes(file), `${file} is copied into the build`)
  }
})
