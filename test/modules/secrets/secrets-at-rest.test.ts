import { randomBytes } from 'node:crypto'
import t from 'tap'
import { createHttpClient } from '../../../src/adapters/http-client.js'
import { NO_ALLOWED_TARGETS } from '../../../src/adapters/address-policy.js'
import { systemClock } from '../../../src/adapters/clock.js'
import { loadConfig } from '../../../src/config.js'
import { newId } from '../../../src/lib/ids.js'
import { createSecretBox, secretContext, secretsKeyProblem, SecretsKeyError } from '../../../src/lib/secret-box.js'
import { CLAIM_KEY, loadClaimKey } from '../../../src/modules/auth/claim-key.js'
import { updateService } from '../../../src/modules/marketplace/services/service.js'
import { reencryptSecrets } from '../../../src/modules/secrets/reencrypt.js'
import { createScheduler } from '../../../src/scheduler/scheduler.js'
import { setupApp } from '../../helpers/app.js'
import { createTestDatabase, databaseUrl } from '../../helpers/database.js'
import { runScript } from '../../helpers/process.js'
import { FAST_RETRIES, setupRuntime } from '../../helpers/runtime.js'
import { SERVICE } from '../marketplace/fixtures/catalogue.js'

const newKey = () => randomBytes(32).toString('base64')
const KEY_A = newKey()
const KEY_B = newKey()

t.test('the box seals with AES-256-GCM, bound to its row; plain values read as they are', async (t) => {
  const box = createSecretBox(KEY_A)
  const context = secretContext.service(newId())
  const sealed = box.seal('whsec_the-plain-secret', context)
  t.match(sealed, /^enc:v1:[0-9a-f]{8}:[\w-]+:[\w-]+:[\w-]+$/)
  t.notMatch(sealed, /the-plain-secret/)
  t.not(box.seal('whsec_the-plain-secret', context), sealed, 'a fresh IV each time')
  t.equal(box.open(sealed, context), 'whsec_the-plain-secret')
  t.equal(box.open('a plain secret from before', context), 'a plain secret from before')
  t.ok(box.isSealedWithCurrentKey(sealed))
  t.throws(() => box.open(sealed, secretContext.service(newId())), SecretsKeyError, 'copied to another row, it does not open')
  const tampered = sealed.replace(/:([\w-])([\w-]*)$/, (_, c: string, rest: string) => `:${c === 'A' ? 'B' : 'A'}${rest}`)
  t.throws(() => box.open(tampered, context), SecretsKeyError, 'altered, it does not open')
  // GCM checks as many bytes of the tag as it is given: a tag cut to 4 bytes left 32 bits of the check.
  const shortTag = sealed.replace(/:([\w-]+)$/, (_, tag: string) => `:${Buffer.from(tag, 'base64url').subarray(0, 4).toString('base64url')}`)
  t.throws(() => box.open(shortTag, context), SecretsKeyError, 'with its tag cut short, it does not open')
  t.throws(() => createSecretBox(KEY_B).open(sealed, context), { name: 'SecretsKeyError', message: /neither BATON_SECRETS_KEY nor BATON_SECRETS_KEY_PREVIOUS/ })
  t.equal(createSecretBox(KEY_B, KEY_A).open(sealed, context), 'whsec_the-plain-secret', 'the previous key still opens')
  t.throws(() => createSecretBox().open(sealed, context), SecretsKeyError, 'without a key a sealed value is refused, never used as it is')

  const bytes = randomBytes(32)
  const sealedBytes = box.sealBytes(bytes, 'signing_keys:x')
  t.ok(sealedBytes.toString('latin1').startsWith('enc:v1:'))
  t.same(box.openBytes(sealedBytes, 'signing_keys:x'), bytes)
  t.same(box.openBytes(bytes, 'signing_keys:x'), bytes, 'plain key bytes read as they are')
  t.same(createSecretBox().sealBytes(bytes, 'x'), bytes, 'no key: stored as it is')
})

t.test('BATON_SECRETS_KEY must be 32 bytes in base64', async (t) => {
  t.equal(secretsKeyProblem(KEY_A), undefined)
  for (const bad of ['short', randomBytes(31).toString('base64'), randomBytes(32).toString('hex'), randomBytes(32).toString('base64url')]) {
    t.ok(secretsKeyProblem(bad), bad)
  }
  t.throws(() => loadConfig({ BATON_SECRETS_KEY: 'secret' }), /BATON_SECRETS_KEY: must be 32 random bytes in base64/)
  t.throws(() => loadConfig({ BATON_SECRETS_KEY: KEY_A, BATON_SECRETS_KEY_PREVIOUS: 'x' }), /BATON_SECRETS_KEY_PREVIOUS: must be/)
  t.equal(loadConfig({ BATON_SECRETS_KEY: KEY_A }).BATON_SECRETS_KEY, KEY_A)
  // The previous key alone opened what it sealed and stored every new secret unsealed, without a word.
  t.throws(() => loadConfig({ BATON_SECRETS_KEY_PREVIOUS: KEY_A }), { name: 'ConfigError', message: /BATON_SECRETS_KEY_PREVIOUS: is set without BATON_SECRETS_KEY/ })
  t.equal(loadConfig({ BATON_SECRETS_KEY: KEY_B, BATON_SECRETS_KEY_PREVIOUS: KEY_A }).BATON_SECRETS_KEY_PREVIOUS, KEY_A)
})

t.test('with BATON_SECRETS_KEY, service secrets and the apiClaim key are stored sealed', async (t) => {
  const { operator, db } = await setupApp(t, { BATON_SECRETS_KEY: KEY_A })
  const created = await operator.post('/v1/marketplace-services', SERVICE)
  t.equal(created.statusCode, 201)
  const plain = created.data.secret as string
  t.match(plain, /^whsec_/, 'the answer shows the secret itself, once')
  const row = () => db.selectFrom('marketplace_services').select(['secret', 'previous_secret']).where('id', '=', created.data.id).executeTakeFirstOrThrow()
  const stored = await row()
  t.match(stored.secret, /^enc:v1:/)
  t.notOk(stored.secret.includes(plain.slice(6)), 'the database does not hold the secret in plain')

  const same = await operator.patch(`/v1/marketplace-services/${created.data.id}`, { secret: plain })
  t.equal(same.statusCode, 200)
  t.equal((await row()).previous_secret, null, 'the same secret again is no rotation')
  const next = `whsec_${randomBytes(32).toString('base64')}`
  t.equal((await operator.patch(`/v1/marketplace-services/${created.data.id}`, { secret: next })).statusCode, 200)
  const rotated = await row()
  t.equal(rotated.previous_secret, stored.secret, 'the previous secret is kept as it was stored')
  t.equal(createSecretBox(KEY_A).open(rotated.secret, secretContext.service(created.data.id)), next)
  // Ids are case-insensitive: the secret is sealed to the service's id as stored, not as the path wrote it.
  const upper = `/v1/marketplace-services/${String(created.data.id).toUpperCase()}`
  const third = `whsec_${randomBytes(32).toString('base64')}`
  t.equal((await operator.patch(upper, { secret: third })).statusCode, 200, 'an upper-case id rotates the secret too')
  t.equal(createSecretBox(KEY_A).open((await row()).secret, secretContext.service(created.data.id)), third, 'sealed to the stored id')
  t.equal((await operator.patch(upper, { secret: third })).statusCode, 200, 'and opened by it')
  // Validation lowers a path's id before the service sees it: called with the id as written, the
  // service still seals to the stored one.
  const fourth = `whsec_${randomBytes(32).toString('base64')}`
  const writes = { db, clock: systemClock, secrets: createSecretBox(KEY_A), targets: { allowPrivateNetworks: false, allowed: NO_ALLOWED_TARGETS } }
  await updateService(writes, String(created.data.id).toUpperCase(), { secret: fourth }, undefined)
  t.equal(createSecretBox(KEY_A).open((await row()).secret, secretContext.service(created.data.id)), fourth,
    'a service called with an upper-case id seals to the stored id')

  const claimKey = await loadClaimKey(db, undefined, createSecretBox(KEY_A))
  const keyRow = await db.selectFrom('signing_keys').select('secret').where('name', '=', CLAIM_KEY).executeTakeFirstOrThrow()
  t.ok(keyRow.secret.toString('latin1').startsWith('enc:v1:'), 'the apiClaim key is sealed')
  t.same(await loadClaimKey(db, undefined, createSecretBox(KEY_A)), claimKey, 'and reads back the same')
  await t.rejects(loadClaimKey(db, undefined, createSecretBox()), SecretsKeyError, 'a process without the key says so')
})

t.test('calls are signed with the sealed secret, opened by the worker', async (t) => {
  const rt = await setupRuntime(t, { secretsKey: KEY_A })
  const stored = await rt.db.selectFrom('marketplace_services').select('secret').where('id', '=', rt.serviceId).executeTakeFirstOrThrow()
  t.match(stored.secret, /^enc:v1:/)
  const templateId = await rt.template([{ kind: 'webhook', name: 'Valuation', refersTo: { property: true } }])
  const instance = await rt.start(templateId)

  const errors: unknown[] = []
  const http = createHttpClient({ maxBodyBytes: 1024, maxSockets: 1, userAgent: 'Baton/test', allowPrivateNetworks: true })
  t.teardown(() => http.close())
  const keyless = createScheduler({
    db: rt.db, clock: rt.clock, http, mailer: { send: async () => {}, close() {} }, workerId: 'keyless',
    log: { info() {}, warn() {}, error: (obj) => errors.push(obj) },
    settings: { pollIntervalMs: 50, batchSize: 10, concurrency: 1, leaseMs: 60_000, timeoutMs: 2000, mailFrom: 'x@example.com', userAgent: 'Baton/test', policy: FAST_RETRIES, claimTtlMs: 60_000 }
  })
  await keyless.runOnce()
  t.equal(rt.provider.calls.length, 0, 'a worker without the key makes no call')
  t.match(errors[0], { err: { name: 'SecretsKeyError' } }, 'and says why')
  t.match((await rt.api.get(`/v1/deliveries/${instance.steps[0].delivery.id}`)).data, { status: 'pending', attemptCount: 0, attempts: [] },
    'the delivery waits, no attempt used')

  rt.clock.advance(60_000)
  await rt.scheduler.runOnce()
  const call = rt.provider.calls.at(-1)
  t.ok(call?.signatureValid, 'the provider verifies the call with the secret it was given')
})

t.test('npm run secrets:reencrypt seals plain rows, then moves them to a new key', async (t) => {
  const database = await createTestDatabase()
  t.teardown(() => database.drop())
  const serviceId = newId()
  const weakId = newId()
  const plain = `whsec_${randomBytes(32).toString('base64')}`
  await database.db.insertInto('marketplace_services').values([
    { id: serviceId, name: 'Valuation', provider: 'P', webhook_url: 'https://p.example/hook', delivery: 'json', secret: plain, previous_secret: 'an-older-secret-0123456789', previous_secret_expires_at: new Date(), active: true },
    { id: weakId, name: 'Forgeable', provider: 'P', webhook_url: 'https://p.example/hook', delivery: 'json', secret: 'whsec_!!!!!!!!!!!!!!!!!!!!', active: true }
  ]).execute()
  const claimKey = await loadClaimKey(database.db, undefined)

  const env = { DATABASE_URL: databaseUrl(database.name), BATON_ADMIN_TOKEN: '', LOG_LEVEL: 'warn' }
  const noKey = runScript('scripts/reencrypt-secrets.ts', env)
  t.equal(await noKey.exited, 1)
  t.match(noKey.output(), /Set BATON_SECRETS_KEY/)

  const first = runScript('scripts/reencrypt-secrets.ts', { ...env, BATON_SECRETS_KEY: KEY_A })
  t.equal(await first.exited, 0, first.output())
  t.match(first.output(), /Sealed 4 secrets with BATON_SECRETS_KEY; 0 were sealed with it already/)
  t.match(first.output(), new RegExp(`service "Forgeable" \\(${weakId}\\) after whsec_ must come standard base64.*rotate it`))
  const row = () => database.db.selectFrom('marketplace_services').select(['secret', 'previous_secret']).where('id', '=', serviceId).executeTakeFirstOrThrow()
  const sealedA = await row()
  const boxA = createSecretBox(KEY_A)
  t.equal(boxA.open(sealedA.secret, secretContext.service(serviceId)), plain)
  t.equal(boxA.open(sealedA.previous_secret!, secretContext.service(serviceId)), 'an-older-secret-0123456789')
  t.same(await loadClaimKey(database.db, undefined, boxA), claimKey)

  const wrongPrevious = runScript('scripts/reencrypt-secrets.ts', { ...env, BATON_SECRETS_KEY: KEY_B })
  t.equal(await wrongPrevious.exited, 1, 'without the old key nothing can be moved')
  t.match(wrongPrevious.output(), /neither BATON_SECRETS_KEY nor BATON_SECRETS_KEY_PREVIOUS/)
  t.same(await row(), sealedA, 'and nothing changed')

  const boxB = createSecretBox(KEY_B, KEY_A)
  const summary = await reencryptSecrets(database.db, boxB)
  t.match(summary, { sealed: 4, current: 0 })
  t.equal(createSecretBox(KEY_B).open((await row()).secret, secretContext.service(serviceId)), plain, 'the new key alone opens it')
  t.same(await loadClaimKey(database.db, undefined, createSecretBox(KEY_B)), claimKey)
  t.match(await reencryptSecrets(database.db, boxB), { sealed: 0, current: 4 }, 'a second run has nothing to do')
})

t.test('a service whose secret this process cannot open takes changes without a secret, and a new secret answers 409 saying why', async (t) => {
  const { operator, db } = await setupApp(t, { BATON_SECRETS_KEY: KEY_A })
  const created = await operator.post('/v1/marketplace-services', SERVICE)
  const id = created.data.id as string
  // Sealed by a process with another key, as after a key change this process was not told of.
  const foreign = createSecretBox(KEY_B).seal(created.data.secret as string, secretContext.service(id))
  await db.updateTable('marketplace_services').set({ secret: foreign }).where('id', '=', id).execute()
  const renamed = await operator.patch(`/v1/marketplace-services/${id}`, { name: 'Valuation II' })
  t.equal(renamed.statusCode, 200, renamed.body)
  const next = `whsec_${randomBytes(32).toString('base64')}`
  const rotated = await operator.patch(`/v1/marketplace-services/${id}`, { secret: next, name: 'Valuation III' })
  t.equal(rotated.statusCode, 409, rotated.body)
  t.match(rotated.headers['content-type'], /application\/problem\+json/)
  t.match(rotated.data.detail, /sealed with a key this process was not given .*BATON_SECRETS_KEY_PREVIOUS/)
  t.notOk(rotated.body.includes(next.slice(6)) || rotated.body.includes(foreign), 'neither secret is in the answer')
  const stored = await db.selectFrom('marketplace_services').select(['secret', 'previous_secret', 'name']).where('id', '=', id).executeTakeFirstOrThrow()
  t.same(stored, { secret: foreign, previous_secret: null, name: 'Valuation II' }, 'nothing of the refused PATCH was written')
  t.equal(createSecretBox(KEY_A, KEY_B).open(foreign, secretContext.service(id)), created.data.secret, 'the key it was sealed with opens it')
})
