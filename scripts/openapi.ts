// Writes openapi/openapi.json from the route schemas; with --check, fails when the file is stale or the
// document lacks what a client generator needs (scripts/openapi-contract.ts).
import { readFile, writeFile } from 'node:fs/promises'
import { relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { buildApp, serverOptions } from '../src/app.js'
import { loadConfig } from '../src/config.js'
import { openPostgres } from '../src/db/connect.js'
import { contractGaps, type OpenApiDocument } from './openapi-contract.js'

const targets = {
  document: new URL('../openapi/openapi.json', import.meta.url)
}
const check = process.argv.includes('--check')

async function buildDocument(): Promise<OpenApiDocument> {
  const config = loadConfig({ LOG_LEVEL: 'silent' })
  // Building the routes needs no database: the pool never connects.
  const database = openPostgres('postgres://openapi.invalid/none', { poolMax: 1 })
  const app = await buildApp({ config, db: database.db, operatorKeyHash: '0'.repeat(64), claimKey: Buffer.alloc(32) }, serverOptions(config, false))
  await app.ready()
  const document = app.swagger() as unknown as OpenApiDocument
  await app.close()
  await database.close()
  return document
}

const document = await buildDocument()
const files = new Map([[targets.document, `${JSON.stringify(document, null, 2)}\n`]])
const name = (url: URL) => relative(fileURLToPath(new URL('..', import.meta.url)), fileURLToPath(url))

if (check) {
  const failures: string[] = []
  for (const [url, text] of files) {
    if ((await readFile(url, 'utf8').catch(() => '')) !== text) failures.push(`${name(url)} is stale: run \`npm run openapi\` and commit the result.`)
  }
  failures.push(...contractGaps(document).map((gap) => `contract: ${gap}`))
  if (failures.length > 0) {
    process.stderr.write(`${failures.join('\n')}\n`)
    process.exit(1)
  }
  process.stdout.write('openapi/openapi.json is current, and every operation has what a client generator needs.\n')
} else {
  for (const [url, text] of files) {
    await writeFile(url, text)
    process.stdout.write(`wrote ${name(url)}\n`)
  }
  const gaps = contractGaps(document)
  if (gaps.length > 0) process.stderr.write(`The document lacks what a client generator needs:\n${gaps.join('\n')}\n`)
}
