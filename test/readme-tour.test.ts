import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { createTestDatabase, databaseUrl } from './helpers/database.js'
import { ROOT, runBash, runScript } from './helpers/process.js'

/** The README's shell blocks from the curl tour up to the API summary, in order, as one script. */
async function tourScript(): Promise<string> {
  const readme = await readFile(join(ROOT, 'README.md'), 'utf8')
  const tour = readme.slice(readme.indexOf('## A tour with curl'), readme.indexOf('## The API in brief'))
  const blocks = [...tour.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]!)
  if (blocks.length < 3) throw new Error('the README tour was not found')
  return blocks.join('\n')
}


// The README's promise: a newcomer who pastes the tour word for word gets what it says.
t.test('the README curl tour runs word for word against a running Baton', async (t) => {
  const db = await createTestDatabase()
  const dataDir = await mkdtemp(join(tmpdir(), 'baton-tour-'))
  t.teardown(async () => {
    await db.drop()
    await rm(dataDir, { recursive: true, force: true })
  })
  const server = runScript('src/server.ts', {
    DATABASE_URL: databaseUrl(db.name), BATON_DATA_DIR: dataDir, PORT: '0', LOG_LEVEL: 'info', BATON_ADMIN_TOKEN: '', SMTP_URL: ''
  }, [])
  t.teardown(async () => {
    if (server.child.exitCode === null) server.child.kill('SIGKILL')
    await server.exited
  })
  const [, address] = await server.waitFor(/Baton listening on (http:\/\/[^"\s]+)/, 60_000)
  const [, key] = await server.waitFor(/export BATON_ADMIN_TOKEN=(\S+)/)

  const script = (await tourScript()).replace('BATON=http://127.0.0.1:3000', `BATON=${address}`)
  t.not(script.indexOf(`BATON=${address}`), -1, 'the tour names the default address, which the test replaces')
  const ids = '\necho "ids: $TENANT_ID $USER_ID $SERVICE_ID $TEMPLATE_ID $PROPERTY_ID $INSTANCE_ID"\n'
  const { code, output } = await runBash(script + ids, { BATON_ADMIN_TOKEN: key! })
  t.equal(code, 0, output)

  const uuid = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}'
  t.match(output, new RegExp(`ids: ${Array(6).fill(uuid).join(' ')}\\n`), 'every id the tour picks out is a real one')
  t.match(output, /signing secret for ValueCo: \S{20,}/)
  t.match(output, /"status": 422[\s\S]*"pointer": "\/body\/parameters\/mode"/, 'the error example answers 422 pointing at the field')
  t.match(output, /"status": "completed"/, 'skipping both steps completes the process')
  t.match(output, /Step "Ask ValueCo for a valuation" skipped/, 'the property log tells the story')
  t.match(output, /Step "Ask ValueCo for a valuation" skipped \([^)\n]+\): "Valued by hand"\./, 'with the note given to advance')
  t.match(output, /Process "Re-value a property" completed/)
  // The second process: the scheduler carries out the decision, the e-mail and the follow-up by itself.
  t.match(output, /"name": "Price check",\s*"active": true|\{"name":"Price check","active":true\}/, 'the branches pass the activation check')
  t.match(output, /"name": "More than 10 % under the asking price\?",\s*"kind": "decision",\s*"state": "done",\s*"decision": "yes"/, 'the decision reads the value written back')
  t.match(output, /"name": "Tell the owner",\s*"kind": "email",\s*"state": "done"/, 'the e-mail was sent')
  t.match(output, /"name": "Open the handover",\s*"kind": "followUpProcess",\s*"state": "done"/)
  t.match(output, /"templateName": "Hand over to sales",\s*"status": "running",\s*"currentStep": "Agree a new asking price with the owner"/, 'the handover runs')
  const mails = await readdir(join(dataDir, 'mail')).catch(() => [])
  const owner = await Promise.all(mails.map((file) => readFile(join(dataDir, 'mail', file), 'utf8')))
  t.ok(owner.some((mail) => /jonas@example\.com/.test(mail) && /380000 EUR/.test(mail)), 'the owner\'s mail, with the value, is in the mail folder')
  t.notMatch(output, /"status": 5\d\d/, 'no server error anywhere')
})
