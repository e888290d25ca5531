import { randomBytes } from 'node:crypto'
import { readdir, readFile } from 'node:fs/promises'
import t from 'tap'
import { secretProblem } from '../../../src/modules/marketplace/services/secret-strength.js'
import { setupApp } from '../../helpers/app.js'
import { assertProblem } from '../../helpers/assertions.js'
import { createService, SERVICE } from './fixtures/catalogue.js'

const whsec = (bytes: number) => `whsec_${randomBytes(bytes).toString('base64')}`

// Secrets that anyone could forge calls with, or that are not secrets at all.
const REFUSED: [string, RegExp][] = [
  ['whsec_!!!!!!!!!!!!!!!!!!!!', /standard base64/],
  [`whsec_${randomBytes(32).toString('base64url')}`, /standard base64/],
  [`whsec_${randomBytes(32).toString('base64').replace(/=+$/, '')}`, /standard base64/],
  [`whsec_${randomBytes(32).toString('base64')} `, /standard base64/],
  [whsec(16), /24 to 64 random bytes, not 16/],
  [whsec(65), /24 to 64 random bytes, not 65/],
  ['whsec_', /24 to 64 random bytes, not 0/],
  ['a'.repeat(40), /8 different characters/],
  ['12121212121212121212121212', /8 different characters/],
  ['only-23-characters-long', /at least 24 characters/],
  [' leading-space-0123456789abcdef', /spaces/],
  ['line\nbreak-0123456789abcdefghij', /line breaks/],
  ['tab\tinside-0123456789abcdefghij', /control characters/],
  ['zero\u200Bwidth-0123456789abcdefghij', /control characters/],
  // Kept plain without BATON_SECRETS_KEY, it would read back as a sealed secret that does not open: no call, a 500 on the next PATCH.
  ['enc:v1:abcdefghijklmnopqrstuvwxyz0123', /must not start with enc:/]
]
const ACCEPTED = [whsec(24), whsec(32), whsec(64), randomBytes(12).toString('hex'), randomBytes(32).toString('base64url'), 'correct-horse-battery-staple-42']

t.test('secretProblem', async (t) => {
  for (const [secret, problem] of REFUSED) t.match(secretProblem(secret), problem, JSON.stringify(secret))
  for (const secret of ACCEPTED) t.equal(secretProblem(secret), undefined, secret)
})

// A tenant who pastes the README's example into a step (or an operator into a service) has a secret the world can read.
t.test('every secret Baton\'s documents show is refused as public, on a service and on a free target', async (t) => {
  const documents = ['README.md', 'openapi/openapi.json', ...(await readdir('docs')).filter((name) => name.endsWith('.md')).map((name) => `docs/${name}`)]
  const shown = new Set<string>()
  for (const document of documents) for (const [secret] of (await readFile(document, 'utf8')).matchAll(/whsec_[A-Za-z0-9+/=]+/g)) shown.add(secret)
  t.ok(shown.size >= 3, `the documents show secrets (${[...shown].join(', ')})`)
  for (const secret of shown) t.match(secretProblem(secret), /example from Baton's documentation/, secret)

  const { operator, newTenant } = await setupApp(t)
  for (const secret of shown) {
    assertProblem(t, await operator.post('/v1/marketplace-services', { ...SERVICE, secret }), 422, /example from Baton's documentation/)
  }
  const { client } = await newTenant()
  const template = (await client.post('/v1/process-templates', { name: 'Own hooks' })).data
  const step = await client.post(`/v1/process-templates/${template.id}/steps`,
    { kind: 'webhook', name: 'Tell our CRM', target: { url: 'https://crm.muster.example/hooks/baton', secret: [...shown][0], delivery: 'json' } })
  assertProblem(t, step, 422, /example from Baton's documentation/)
  t.equal(step.data.errors[0].pointer, '/body/target/secret')
})

t.test('a forgeable secret is 422 on create and on rotation, and nothing is stored', async (t) => {
  const { operator, db } = await setupApp(t)
  const service = await createService(operator)
  for (const [secret, problem] of REFUSED.filter(([s]) => s.length >= 16 && s.length <= 256)) {
    const created = await operator.post('/v1/marketplace-services', { ...SERVICE, secret })
    assertProblem(t, created, 422, problem)
    t.equal(created.data.errors[0].pointer, '/body/secret')
    assertProblem(t, await operator.patch(`/v1/marketplace-services/${service.id}`, { secret }), 422, problem)
  }
  const row = await db.selectFrom('marketplace_services').select(['secret', 'previous_secret', 'version']).where('id', '=', service.id).executeTakeFirstOrThrow()
  t.match(row, { secret: service.secret, previous_secret: null, version: 1 }, 'the refused rotations changed nothing')
  t.equal((await db.selectFrom('marketplace_services').select('id').execute()).length, 1, 'no refused service was created')

  for (const secret of ACCEPTED) {
    t.equal((await operator.post('/v1/marketplace-services', { ...SERVICE, secret })).statusCode, 201, secret)
    t.equal((await operator.patch(`/v1/marketplace-services/${service.id}`, { secret })).statusCode, 200, secret)
  }
})
