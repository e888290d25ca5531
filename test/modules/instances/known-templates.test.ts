import { randomUUID } from 'node:crypto'
import t from 'tap'
import { KnownTemplates } from '../../../src/modules/instances/service.js'

type Facts = Parameters<KnownTemplates['remember']>[1]

/** A template's facts as a start reads them: `steps` email steps whose bodies have `bodyChars` characters each. */
function facts(steps: number, bodyChars: number): Facts {
  const template = { id: randomUUID(), version: 1, name: 'Re-value a property', active: true }
  return {
    template,
    timeZone: 'Europe/Berlin',
    steps: Array.from({ length: steps }, (_, i) => ({
      id: randomUUID(), version: 1, position: i + 1, kind: 'email', service_id: null, target_secret: null,
      email: { mode: 'manual', to: 'controller', subject: `Mail ${i}`, body: 'x'.repeat(bodyChars) }
    }))
  } as unknown as Facts
}

t.test('the templates kept weigh no more than the budget in all, however many were started from', async (t) => {
  const budget = 1_000_000
  const known = new KnownTemplates(1000, budget)
  // 100 templates of 20 email steps of 5,000 characters (100 KB of JSON each): ten fit the budget.
  const started = Array.from({ length: 100 }, () => facts(20, 5000))
  for (const each of started) known.remember('tenant-a', each)
  t.ok(known.kept.chars <= budget, `${known.kept.chars} characters kept`)
  t.ok(known.kept.templates >= 9 && known.kept.templates <= 10, `${known.kept.templates} templates kept`)
  t.ok(known.get('tenant-a', started[99]!.template.id), 'the template used last is kept')
  t.equal(known.get('tenant-a', started[0]!.template.id), undefined, 'the one used longest ago is not')
})

t.test('small templates are kept up to the count; one larger than an eighth of the budget is not kept', async (t) => {
  const known = new KnownTemplates(3, 1_000_000)
  const small = Array.from({ length: 4 }, () => facts(2, 100))
  for (const each of small) known.remember('tenant-a', each)
  t.equal(known.kept.templates, 3)
  t.equal(known.get('tenant-a', small[0]!.template.id), undefined)
  t.ok(known.get('tenant-a', small[3]!.template.id))
  const large = facts(30, 5000)
  known.remember('tenant-a', large)
  t.equal(known.get('tenant-a', large.template.id), undefined, 'a 150 KB template is read at each start')
  t.equal(known.kept.templates, 3, 'and pushed none out')
  const before = known.kept.chars
  known.forget('tenant-a', small[3]!.template.id.toUpperCase())
  t.equal(known.kept.templates, 2)
  t.equal(known.kept.chars, before / 3 * 2, 'a forgotten template\'s characters are given back')
})
