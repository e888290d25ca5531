// Writes openapi/openapi.json from the route schemas; with --check, fails when the file is stale.
import { readFile, writeFile } from 'node:fs/promises'
import { buildApp, serverOptions } from '../src/app.js'
import { loadConfig } from '../src/config.js'
import { openPostgres } from '../src/db/connect.js'

const target = new URL('../openapi/openapi.json', import.meta.url)
const check = process.argv.includes('--check')

const config = loadConfig({ LOG_LEVEL: 'silent' })
// Building the routes needs no database: the pool never connects.
const database = openPostgres('postgres://openapi.invalid/none', { poolMax: 1 })
const app = await buildApp({ config, db: database.db, operatorKeyHash: '0'.repeat(64), claimKey: Buffer.alloc(32) }, serverOptions(config, false))
await app.ready()
const document = `${JSON.stringify(app.swagger(), null, 2)}\n`
await app.close()
await database.close()

if (check) {
  const current = await readFile(target, 'utf8').catch(() => '')
  if (current !== document) {
    process.stderr.write('openapi/openapi.json is stale: run `npm run openapi` and commit the result.\n')
    process.exit(1)
  }
  process.stdout.write('openapi/openapi.json is current.\n')
} else {
  await writeFile(target, document)
  process.stdout.write(`wrote ${target.pathname.split('/').slice(-2).join('/')}\n`)
}
