import { randomBytes } from 'node:crypto'
import t from 'tap'
import { createSecretBox, secretContext } from '../../../src/lib/secret-box.js'
import { reencryptSecrets } from '../../../src/modules/secrets/reencrypt.js'
import { TestProvider } from '../../helpers/provider.js'
import { setupRuntime } from '../../helpers/runtime.js'

t.test('secrets:reencrypt seals the secrets of free targets, in templates and in running processes', async (t) => {
  const rt = await setupRuntime(t)
  const crm = await TestProvider.start(`whsec_${randomBytes(32).toString('base64')}`)
  t.teardown(() => crm.close())
  const url = `${crm.url}/hooks/own`
  const templateId = await rt.template([{ kind: 'webhook', name: 'Own CRM', target: { url, secret: crm.secret, delivery: 'json' } }])
  const started = await rt.start(templateId)
  const rows = () => Promise.all(['template_steps', 'instance_steps'].map((table) =>
    rt.db.selectFrom(table as 'template_steps').select(['tenant_id', 'target_secret']).where('target_url', '=', url).executeTakeFirstOrThrow()))
  t.same((await rows()).map((r) => r.target_secret), [crm.secret, crm.secret], 'without BATON_SECRETS_KEY the secret is stored as given')

  const box = createSecretBox(randomBytes(32).toString('base64'))
  const summary = await reencryptSecrets(rt.db, box)
  t.ok(summary.sealed >= 3, `the service's secret and both steps' secrets are sealed (${summary.sealed})`)
  for (const row of await rows()) {
    t.match(row.target_secret, /^enc:v1:/)
    t.equal(box.open(row.target_secret!, secretContext.stepTarget(row.tenant_id, url)), crm.secret, 'it opens, bound to its tenant and URL')
    t.throws(() => box.open(row.target_secret!, secretContext.stepTarget(row.tenant_id, `${url}x`)), { name: 'SecretsKeyError' }, 'and not for another URL')
  }
  t.match(await reencryptSecrets(rt.db, box), { sealed: 0 }, 'a second run has nothing to do')

  // A worker with the key opens the instance's copy and signs with it.
  await rt.newScheduler({}, undefined, { secrets: box }).runOnce()
  t.equal(crm.calls.length, 1)
  t.ok(crm.calls[0]!.signatureValid, 'the call verifies with the secret the tenant gave')
  t.equal((await rt.instance(started.id)).steps[0].state, 'done')
})
