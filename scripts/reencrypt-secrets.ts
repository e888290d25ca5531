// `npm run secrets:reencrypt`: seals every secret Baton keeps with BATON_SECRETS_KEY: plain ones (kept
// before a key was set) and those sealed with BATON_SECRETS_KEY_PREVIOUS. See README, "Secrets at rest".
import { ConfigError } from '../src/config.js'
import { createSecretBox, SecretsKeyError } from '../src/lib/secret-box.js'
import { reencryptSecrets, ReencryptUnsettledError } from '../src/modules/secrets/reencrypt.js'
import { adminCommand } from './admin-command.js'

await adminCommand(async (database, config) => {
  const summary = await reencryptSecrets(database.db, createSecretBox(config.BATON_SECRETS_KEY, config.BATON_SECRETS_KEY_PREVIOUS))
  const count = (n: number, one: string, many: string) => `${n} ${n === 1 ? one : many}`
  process.stdout.write(`Sealed ${count(summary.sealed, 'secret', 'secrets')} with BATON_SECRETS_KEY; ${count(summary.current, 'was', 'were')} sealed with it already.\n`)
  if (summary.later > 0) {
    process.stdout.write(`Of these, ${count(summary.later, 'was', 'were')} written by running processes while this command ran `
      + '(copies of secrets as they were before), and sealed in a further pass.\n')
  }
  for (const weak of summary.weak) {
    process.stdout.write(`Warning: the signing secret of service "${weak.name}" (${weak.id}) ${weak.problem}: rotate it (PATCH /v1/marketplace-services/${weak.id}).\n`)
  }
}, {
  check: (config) => {
    if (!config.BATON_SECRETS_KEY) throw new ConfigError('Set BATON_SECRETS_KEY to the key to seal the secrets with (and BATON_SECRETS_KEY_PREVIOUS to the key they are sealed with now, if any).')
  },
  told: (error) => error instanceof SecretsKeyError || error instanceof ReencryptUnsettledError,
  migrated: true
})
