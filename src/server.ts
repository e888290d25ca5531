import closeWithGrace from 'close-with-grace'
import { buildApp } from './app.js'
import { ConfigError, loadConfig, type Config } from './config.js'
import { DataDirBusyError, openDatabase } from './db/connect.js'
import { migrateToLatest } from './db/migrate.js'
import { resolveOperatorKey } from './modules/auth/operator-key.js'

async function main(config: Config): Promise<void> {
  const database = await openDatabase(config)
  if (config.BATON_MIGRATE_ON_START) await migrateToLatest(database)
  const operatorKey = await resolveOperatorKey(database.db, config.BATON_ADMIN_TOKEN)
  const app = await buildApp({ config, db: database.db, operatorKeyHash: operatorKey.hash })

  closeWithGrace({ delay: 10_000 }, async ({ signal, err }) => {
    if (err) app.log.error({ err }, 'shutting down after an error')
    else app.log.info({ signal }, 'shutting down')
    await app.close()
    await database.close()
  })

  const address = await app.listen({ host: config.HOST, port: config.PORT })
  app.log.info({ database: database.kind }, `Baton listening on ${address}`)
  if (operatorKey.generated) printOperatorKey(operatorKey.generated, address)
  else if (!config.BATON_ADMIN_TOKEN) app.log.info('Using the operator key generated on first start; `npm run admin:rotate-key` makes a new one.')
}

// Shown once, on the first start without BATON_ADMIN_TOKEN: only its hash is kept.
function printOperatorKey(key: string, address: string): void {
  const local = address.replace('0.0.0.0', '127.0.0.1')
  process.stdout.write(
    [
      '',
      'No BATON_ADMIN_TOKEN was set, so Baton generated an operator key. It is shown only this once:',
      '',
      `  export BATON_ADMIN_TOKEN=${key}`,
      '',
      'Try it:',
      `  curl -s -H "Authorization: Bearer $BATON_ADMIN_TOKEN" ${local}/v1/tenants`,
      '',
      'Keep it somewhere safe; `npm run admin:rotate-key` replaces it if it is lost.',
      ''
    ].join('\n') + '\n'
  )
}

try {
  await main(loadConfig(process.env))
} catch (error) {
  if (error instanceof ConfigError || error instanceof DataDirBusyError) {
    process.stderr.write(`${error.message}\n`)
    process.exit(1)
  }
  throw error
}
