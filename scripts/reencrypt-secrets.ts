// `npm run secrets:reencrypt`: seals every secret Baton keeps with BATON_SECRETS_KEY: plain ones (kept
// before a key was set) and those sealed with BATON_SECRETS_KEY_PREVIOUS. See README, "Secrets at rest".
import { asDatabaseUrlProblem, ConfigError, loadConfig } from '../src/config.js'
import { DataDirBusyError, openDatabase } from '../src/db/connect.js'
import { createSecretBox, SecretsKeyError } from '../src/lib/secret-box.js'
import { reencryptSecrets } from '../src/modules/secrets/reencrypt.js'

try {
  const config = loadConfig(process.env)
  if (!config.BATON_SECRETS_KEY) throw new ConfigError('Set BATON_SECRETS_KEY to the key to seal the secrets with (and BATON_SECRETS_KEY_PREVIOUS to the key they are sealed with now, if any).')
  const database = await openDatabase(config)
  try {
    const summary = await reencryptSecrets(database.db, createSecretBox(config.BATON_SECRETS_KEY, config.BATON_SECRETS_KEY_PREVIOUS))
    process.stdout.write(`Sealed ${summary.sealed} secrets with BATON_SECRETS_KEY; ${summary.current} were sealed with it already.\n`)
    for (const weak of summary.weak) {
      process.stdout.write(`Warning: the signing secret of service "${weak.name}" (${weak.id}) ${weak.problem}: rotate it (PATCH /v1/marketplace-services/${weak.id}).\n`)
    }
  } finally {
    await database.close()
  }
} catch (caught) {
  const error = asDatabaseUrlProblem(caught)
  if (!(error instanceof ConfigError || error instanceof DataDirBusyError || error instanceof SecretsKeyError)) throw error
  process.stderr.write(`${error.message}\n`)
  process.exit(1)
}
