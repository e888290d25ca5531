import t from 'tap'
import { HOUR } from '../helpers/clock.js'
import { setupRuntime } from '../helpers/runtime.js'

const rt = await setupRuntime(t)

t.test('a mail shows its times in the tenant\'s zone with their UTC offset, so the hour a DST change repeats reads unambiguously', async (t) => {
  const templateId = await rt.template([{ kind: 'task', name: 'Survey the cellar', deadlineDays: 1 }])
  // Europe/Berlin goes back from 03:00 CEST to 02:00 CET on 25 October 2026: 02:30 comes twice, an hour apart.
  rt.clock.set('2026-10-25T00:30:00.000Z')
  const first = await rt.start(templateId)
  rt.clock.set('2026-10-25T01:30:00.000Z')
  const second = await rt.start(templateId)
  t.equal(first.steps[0].deadlineAt, '2026-10-26T01:30:00.000Z', 'a calendar day later, at 02:30 (CET)')
  t.equal(second.steps[0].deadlineAt, '2026-10-26T01:30:00.000Z')

  rt.clock.set('2026-10-26T03:30:00.000Z')
  await rt.scheduler.runOnce()
  await rt.scheduler.runOnce()
  const mailOf = (id: string) => rt.smtp.mails.find((m) => m.subject.startsWith('Deadline missed: "Survey the cellar"') && m.text.includes(id))
  const [a, b] = [mailOf(first.id), mailOf(second.id)]
  t.match(a?.text, /^Started: +25\/10\/2026, 02:30 \(Europe\/Berlin, UTC\+02:00\)\r?$/m, 'the first 02:30, in summer time')
  t.match(b?.text, /^Started: +25\/10\/2026, 02:30 \(Europe\/Berlin, UTC\+01:00\)\r?$/m, 'the second, an hour later, in winter time')
  for (const mail of [a, b]) {
    t.match(mail?.text, /^Deadline: +26\/10\/2026, 02:30 \(Europe\/Berlin, UTC\+01:00\)\r?$/m)
    t.match(mail?.text, /^Late by: +2 hours\r?$/m)
  }
  t.equal(rt.clock.now().getTime() - new Date(first.steps[0].deadlineAt).getTime(), 2 * HOUR)
})
