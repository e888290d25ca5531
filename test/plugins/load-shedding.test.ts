import t from 'tap'
import { setupApp } from '../helpers/app.js'
import { assertProblem } from '../helpers/assertions.js'

/** Keeps the event loop busy in slices of `sliceMs`, letting timers run late between them, for `totalMs`. */
async function saturate(totalMs: number, sliceMs: number): Promise<void> {
  const end = Date.now() + totalMs
  while (Date.now() < end) {
    const sliceEnd = Date.now() + sliceMs
    while (Date.now() < sliceEnd) { /* busy */ }
    await new Promise((resolve) => setImmediate(resolve))
  }
}

t.test('a saturated event loop sheds new requests with 503 and Retry-After; /health/live still answers', async (t) => {
  const ctx = await setupApp(t, { PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '50' })
  const { client } = await ctx.newTenant()
  t.equal((await client.get('/v1/users')).statusCode, 200, 'not under pressure')

  await new Promise((resolve) => setTimeout(resolve, 2100))
  await saturate(2500, 200)
  const shed = await client.get('/v1/users')
  assertProblem(t, shed, 503, /too busy to take this request \(event-loop delay \d+ ms\)/)
  t.equal(shed.headers['retry-after'], '5')
  assertProblem(t, await ctx.anonymous.get('/v1/users'), 503, undefined)
  t.equal((await ctx.anonymous.get('/health/live')).statusCode, 200, 'liveness is not shed')

  await new Promise((resolve) => setTimeout(resolve, 2500))
  t.equal((await client.get('/v1/users')).statusCode, 200, 'answered again once the loop is free')
})

t.test('a saturated event loop sheds new requests also when the clock was stepped back after the start', async (t) => {
  const wallNow = Date.now
  t.teardown(() => { Date.now = wallNow })
  const ctx = await setupApp(t, { PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '50' })
  const { client } = await ctx.newTenant()
  // The machine's clock is stepped back a minute once the app is ready.
  Date.now = () => wallNow() - 60_000
  await new Promise((resolve) => setTimeout(resolve, 2100))
  await saturate(2500, 200)
  assertProblem(t, await client.get('/v1/users'), 503, /too busy to take this request/)
})
