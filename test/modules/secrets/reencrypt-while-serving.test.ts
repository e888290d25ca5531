import { randomBytes } from 'node:crypto'
import t from 'tap'
import { sql } from '../../../src/db/kysely.js'
import { newId } from '../../../src/lib/ids.js'
import { createSecretBox, secretContext } from '../../../src/lib/secret-box.js'
import { loadClaimKey } from '../../../src/modules/auth/claim-key.js'
import { setupApp } from '../../helpers/app.js'
import { createTestDatabase, databaseUrl, holdRow, waitForLockWait } from '../../helpers/database.js'
import { runScript } from '../../helpers/process.js'

const newKey = () => randomBytes(32).toString('base64')
const KEY_A = newKey()
const KEY_B = newKey()

// README, "Secrets at rest": give every process the new key and the old one as previous, run secrets:reencrypt, then
// remove the old one. A process started while it ran copied its template step's secret as the start read it, sealed
// with the old key, after the command had sealed the processes' steps: the command said it had sealed them all, and
// once the old key was gone that process's call stayed queued for good (1,074 of 4,000 starts made during a run).
t.test('secrets:reencrypt also seals the copies running processes made from secrets as they were while it ran', async (t) => {
  const ctx = await setupApp(t, { BATON_SECRETS_KEY: KEY_B, BATON_SECRETS_KEY_PREVIOUS: KEY_A })
  const tenant = await ctx.newTenant()
  const user = await tenant.client.post('/v1/users', { name: 'Anna', email: 'anna@a.example' })
  const template = await tenant.client.post('/v1/process-templates', { name: 'Own CRM', controllerUserId: user.data.id })
  const url = 'https://crm.example/hooks/own'
  const secret = `whsec_${randomBytes(32).toString('base64')}`
  const step = await tenant.client.post(`/v1/process-templates/${template.data.id}/steps`, {
    kind: 'webhook', name: 'Tell the CRM', start: { mode: 'daysAfterPrevious', days: 5 }, target: { url, secret, delivery: 'json' }
  })
  t.equal(step.statusCode, 201, step.body)
  const version = (await tenant.client.get(`/v1/process-templates/${template.data.id}`)).data.version
  t.equal((await tenant.client.patch(`/v1/process-templates/${template.data.id}`, { active: true }, { 'if-match': `"${version}"` })).statusCode, 200)
  // The step's secret as a process with the old key stored it, before the key change.
  const context = secretContext.stepTarget(tenant.id, url)
  await ctx.db.updateTable('template_steps').set({ target_secret: createSecretBox(KEY_A).seal(secret, context) }).where('id', '=', step.data.id).execute()
  await loadClaimKey(ctx.db, undefined, createSecretBox(KEY_B, KEY_A))

  // The command seals the template's step and the processes' steps, and waits for the signing key's row
  // before it commits: a process starts meanwhile and reads the step as it was.
  const held = await holdRow(ctx.db, sql`select from signing_keys for update`)
  const run = runScript('scripts/reencrypt-secrets.ts', {
    DATABASE_URL: ctx.databaseUrl, BATON_SECRETS_KEY: KEY_B, BATON_SECRETS_KEY_PREVIOUS: KEY_A, BATON_ADMIN_TOKEN: '', LOG_LEVEL: 'warn'
  })
  await waitForLockWait(ctx.db)
  const started = await tenant.client.post('/v1/process-instances', { templateId: template.data.id, responsibleUserId: user.data.id })
  t.equal(started.statusCode, 201, started.body)
  await held.release()
  t.equal(await run.exited, 0, run.output())
  t.match(run.output(), /^Sealed 2 secrets with BATON_SECRETS_KEY; 1 was sealed with it already\.\nOf these, 1 was written by running processes while this command ran \(copies of secrets as they were before\), and sealed in a further pass\.\n$/)

  // With the old key removed, every secret still opens.
  const newOnly = createSecretBox(KEY_B)
  for (const table of ['template_steps', 'instance_steps'] as const) {
    const rows = await ctx.db.selectFrom(table).select('target_secret').where('target_url', '=', url).execute()
    t.equal(rows.length, 1, table)
    t.equal(newOnly.open(rows[0]!.target_secret!, context), secret, `${table}: sealed with the new key`)
  }
  t.ok((await loadClaimKey(ctx.db, undefined, newOnly)).length > 0, 'the signing key too')
})

t.test('secrets:reencrypt stops with a message when secrets sealed with another key keep appearing', async (t) => {
  const database = await createTestDatabase()
  t.teardown(() => database.drop())
  const id = newId()
  const oldSealed = createSecretBox(KEY_A).seal(`whsec_${randomBytes(32).toString('base64')}`, secretContext.service(id))
  await database.db.insertInto('marketplace_services').values({
    id, name: 'Valuation', provider: 'P', webhook_url: 'https://p.example/hook', delivery: 'json', secret: oldSealed, active: true
  }).execute()
  // As a process that still seals with the old key would, however often the command seals it again.
  await sql.raw(`
    create function keep_old_secret() returns trigger language plpgsql as $$
    begin new.secret := old.secret; return new; end $$;
    create trigger keep_old_secret before update on marketplace_services for each row execute function keep_old_secret();
  `).execute(database.db)
  const run = runScript('scripts/reencrypt-secrets.ts', {
    DATABASE_URL: databaseUrl(database.name), BATON_SECRETS_KEY: KEY_B, BATON_SECRETS_KEY_PREVIOUS: KEY_A, BATON_ADMIN_TOKEN: '', LOG_LEVEL: 'warn'
  })
  t.equal(await run.exited, 1, run.output())
  t.equal(run.output(), 'Secrets sealed with another key than BATON_SECRETS_KEY kept appearing while this command sealed them (1 in its pass 5): '
    + 'a running Baton process may still seal with the old key, or with none. Give every process BATON_SECRETS_KEY set to this key and BATON_SECRETS_KEY_PREVIOUS '
    + 'to the old one (if any), run this command again, and keep BATON_SECRETS_KEY_PREVIOUS until it finishes.\n', 'the message alone, no stack trace')
})
