import { readFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sql } from '../../../src/db/kysely.js'
import t from 'tap'
import { newId } from '../../../src/lib/ids.js'
import { encodeCursor, listScope, PAGE_MAX_BYTES } from '../../../src/lib/pagination.js'
import { FIELDS_MAX_BYTES } from '../../../src/modules/records/limits.js'
import { createTestDatabase, databaseUrl } from '../../helpers/database.js'
import { runScript } from '../../helpers/process.js'

// One tenant could grow the process's memory for everyone: a page of 60 records of 1 MiB was a 63 MB
// body, and four such pages in parallel took the server's RSS from 257 to 1,061 MiB. A page now ends
// at 4 MiB and loads only the records that fit. Measured on a real server process, as a user runs it.
const MiB = 1024 * 1024
const database = await createTestDatabase()
t.teardown(() => database.drop())
const dataDir = await mkdtemp(join(tmpdir(), 'baton-budget-'))
t.teardown(() => rm(dataDir, { recursive: true, force: true }))
const adminToken = `bop_${'x'.repeat(40)}`
const server = runScript('src/server.ts', {
  DATABASE_URL: databaseUrl(database.name), BATON_DATA_DIR: dataDir, BATON_ADMIN_TOKEN: adminToken, PORT: '0', LOG_LEVEL: 'info', SMTP_URL: '',
  // The server as a user runs it, without the test runner's coverage hooks.
  NODE_OPTIONS: '', NODE_V8_COVERAGE: ''
}, ['--role=api'])
t.teardown(() => { server.child.kill('SIGKILL') })
const [, base] = await server.waitFor(/Baton listening on (http:\/\/[^"\s]+)/, 60_000)

async function call(path: string, key: string, body?: unknown) {
  const response = await fetch(`${base}${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) })
  })
  const text = await response.text()
  return { status: response.status, bytes: Buffer.byteLength(text), data: JSON.parse(text) }
}

const tenant = (await call('/v1/tenants', adminToken, { name: 'Budget', webId: 'budget' })).data
const { key } = (await call(`/v1/tenants/${tenant.id}/api-keys`, adminToken, { name: 'test' })).data

/** Records written straight into the database, so that no process of the test holds their fields; their ids in order. */
async function insertRecords(count: number, bytes: number): Promise<string[]> {
  const filler = bytes - '{"blob": ""}'.length
  const ids: string[] = []
  for (let i = 0; i < count; i++) {
    ids.push(newId())
    await sql`insert into properties (tenant_id, id, fields)
      values (${tenant.id}, ${ids.at(-1)}, jsonb_build_object('blob', repeat(md5(${String(i)}), ${Math.floor(filler / 32)}) || repeat('x', ${filler % 32})))`
      .execute(database.db)
  }
  return ids
}

// The largest records the API takes (256 KiB), and records of 1 MiB stored before the limit existed.
const largest = await insertRecords(40, FIELDS_MAX_BYTES)
await insertRecords(20, MiB)

/** The server's resident memory, read from /proc (Linux). */
function serverRss(): number {
  const status = readFileSync(`/proc/${server.child.pid}/status`, 'utf8')
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1]) * 1024
}

// MEMORY_ROUNDS=20 shows a steady stream of such pages: V8 lets about 100 MiB of freed strings wait
// for a full GC: the peak was 317 MiB there.
const ROUNDS = Number(process.env.MEMORY_ROUNDS ?? 2)
const pageAt = (cursor: string | null) => call(`/v1/properties?limit=200${cursor ? `&cursor=${cursor}` : ''}`, key)

t.test('four parallel pages of the largest records keep the server\'s RSS under 300 MiB', { skip: process.platform !== 'linux' && 'reads /proc' }, async (t) => {
  // The first page holds records of 256 KiB; the one after the last of them, records of 1 MiB.
  const starts = [null, encodeCursor(listScope('/v1/properties', {}), largest.at(-1)!)]
  const before = serverRss()
  let peak = before
  const sampler = setInterval(() => { peak = Math.max(peak, serverRss()) }, 5)
  try {
    for (let round = 0; round < ROUNDS; round++) {
      const pages = await Promise.all([0, 1, 2, 3].map(() => pageAt(starts[round % 2]!)))
      for (const page of pages) t.ok(page.status === 200 && page.bytes <= PAGE_MAX_BYTES && page.data.nextCursor !== null, `round ${round + 1}: a page of ${page.data.items.length}`)
    }
  } finally {
    clearInterval(sampler)
  }
  peak = Math.max(peak, serverRss())
  t.comment(`server RSS ${(before / MiB).toFixed(0)} MiB before, at most ${(peak / MiB).toFixed(0)} MiB during ${ROUNDS} rounds of 4 parallel pages (of records of 256 KiB, then of 1 MiB)`)
  t.ok(peak < 300 * MiB, `peak RSS ${(peak / MiB).toFixed(0)} MiB < 300 MiB`)
})

t.test('a list page stops before 4 MiB and carries nextCursor; following it reaches every record', async (t) => {
  const seen = new Set<string>()
  let cursor: string | null = null
  let pages = 0
  do {
    const page = await pageAt(cursor)
    t.equal(page.status, 200)
    t.ok(page.bytes <= PAGE_MAX_BYTES, `page ${pages + 1}: ${page.data.items.length} records, ${(page.bytes / MiB).toFixed(2)} MiB`)
    for (const item of page.data.items) seen.add(item.id)
    cursor = page.data.nextCursor
    pages += 1
  } while (cursor !== null && pages < 100)
  t.equal(seen.size, 60, 'every record once')
  t.ok(pages >= 8, `${pages} pages`)
})
