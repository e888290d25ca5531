// A UTF8 database whose default collation is not C (ICU's Turkish, German, a case-insensitive level-2
// `und-u-ks-level2`, which Postgres 15 takes as a database's default but compares deterministically), made
// and migrated as an operator's platform would. What Baton compares both in SQL and in JavaScript must agree:
// under Turkish, Postgres's `lower` turned the I of INFO@x.de into a dotless ı where JavaScript's gives i, so
// INFO@x.de and info@x.de were both users of one tenant, a search for info@x.de missed INFO@x.de, and a
// service took the parameters ITEM and item; and a regular expression's \d took digits of other scripts (below).
import t from 'tap'
import { sql } from '../../src/db/kysely.js'
import { setupRuntime } from '../helpers/runtime.js'

const LOCALES = { Turkish: 'tr', German: 'de', 'case-insensitive (level 2)': 'und-u-ks-level2' }

for (const [name, locale] of Object.entries(LOCALES)) {
  t.test(`e-mail addresses and parameter names are one whatever their case, on a database collated in ${name}`, async (t) => {
    const rt = await setupRuntime(t, { databaseMade: `encoding 'UTF8' locale_provider icu icu_locale '${locale}' lc_collate 'C' lc_ctype 'C'` })
    const first = await rt.api.post('/v1/users', { name: 'Info', email: 'INFO@x.de' })
    t.equal(first.statusCode, 201, first.body)
    const again = await rt.api.post('/v1/users', { name: 'Info again', email: 'info@x.de' })
    t.equal(again.statusCode, 409, 'the address in other case is taken')
    t.equal(again.data.detail, `User ${first.data.id} already has the e-mail address info@x.de.`)
    // Two creates at once both pass the check: the unique index decides, by the same lowering.
    const written = await sql`insert into users (tenant_id, id, name, email) values (${rt.tenant.id}, gen_random_uuid(), 'Info', 'info@x.de')`
      .execute(rt.db).then(() => 'written', (error: { constraint?: string }) => error.constraint)
    t.equal(written, 'users_email_key', 'the unique index refuses it too')
    const found = await rt.api.get('/v1/users?email=info@X.DE')
    t.same(found.data.items.map((u: { id: string }) => u.id), [first.data.id], 'found in any case')
    const renamed = await rt.api.patch(`/v1/users/${rt.worker.id}`, { email: 'Info@X.de' })
    t.equal(renamed.statusCode, 409, 'nor another\'s to take')

    const parameters = `/v1/marketplace-services/${rt.serviceId}/parameters`
    const item = await rt.operator.post(parameters, { name: 'ITEM', label: 'Item', type: 'string', required: false })
    t.equal(item.statusCode, 201, item.body)
    const lower = await rt.operator.post(parameters, { name: 'item', label: 'Item', type: 'string', required: false })
    t.equal(lower.statusCode, 409, 'a parameter name in other case is taken')
  })
}

// A regular expression's \d follows the database's collation: under an ICU one it took full-width and
// Arabic-Indic digits, so a date autostart that ignores the year started a process for "１９９０-01-02"
// there and not on a libc database, where \d is 0-9 alone.
t.test('a date autostart ignoring the year takes dates of ASCII digits alone, on a database collated by ICU', async (t) => {
  const rt = await setupRuntime(t, { databaseMade: `encoding 'UTF8' locale_provider icu icu_locale 'de' lc_collate 'C' lc_ctype 'C'` })
  const created = await rt.api.post('/v1/process-templates', {
    name: 'Birthday greetings', controllerUserId: rt.controller.id,
    autostart: { on: 'dateReached', record: 'address', field: 'birthday', ignoreYear: true, responsible: 'maintainer' }
  })
  t.equal(created.statusCode, 201, created.body)
  const step = await rt.api.post(`/v1/process-templates/${created.data.id}/steps`, { kind: 'task', name: 'Send a card', refersTo: { address: true } })
  t.equal(step.statusCode, 201, step.body)
  t.equal((await rt.api.patch(`/v1/process-templates/${created.data.id}`, { active: true })).statusCode, 200)
  const birthdays = ['1990-01-02', '１９９０-01-02', '١٩٩٠-01-02']
  const addresses = []
  for (const birthday of birthdays) {
    addresses.push((await rt.api.post('/v1/addresses', { maintainerUserId: rt.worker.id, fields: { birthday } })).data.id)
  }
  rt.clock.set('2027-01-02T10:00:00Z')
  t.equal((await rt.scheduler.runOnce()).autostarts, 1, 'one birthday')
  const started = (await rt.api.get(`/v1/process-instances?templateId=${created.data.id}`)).data.items
  t.same(started.map((i: { addressId: string }) => i.addressId), [addresses[0]], 'the one written in ASCII digits')
})
