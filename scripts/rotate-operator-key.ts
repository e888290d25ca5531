// `npm run admin:rotate-key`: replaces the generated operator key (when BATON_ADMIN_TOKEN is unset).
import { ConfigError } from '../src/config.js'
import { hashKey, hasKeyPrefix, sameHash } from '../src/lib/keys.js'
import { rotateOperatorKey } from '../src/modules/auth/operator-key.js'
import { findOperatorKeyHash } from '../src/modules/auth/repository.js'
import { adminCommand } from './admin-command.js'

await adminCommand(async (database, config) => {
  const token = config.BATON_ADMIN_TOKEN
  // Processes given a BATON_ADMIN_TOKEN of their own never read the stored key: a new one would work nowhere, and
  // the old one on. The generated key itself in BATON_ADMIN_TOKEN is what the first start told to export.
  const stored = token === undefined ? undefined : await findOperatorKeyHash(database.db)
  if (token !== undefined && stored !== undefined && hasKeyPrefix('operator', token) && !sameHash(hashKey(token), stored)) {
    throw new ConfigError('BATON_ADMIN_TOKEN holds a generated operator key that is not the current one (rotated since?): '
      + 'set it to the current key, or unset it, and run this command again.')
  }
  if (token !== undefined && (stored === undefined || !sameHash(hashKey(token), stored))) {
    throw new ConfigError('BATON_ADMIN_TOKEN is set to a key of its own: the operator key is the one it gives, and Baton processes started with it never read a generated one. '
      + 'To change the key, set BATON_ADMIN_TOKEN to a new value (e.g. `openssl rand -base64 32`) and restart the processes; '
      + 'to use a generated key instead, unset it everywhere and run this command again.')
  }
  const key = await rotateOperatorKey(database.db)
  process.stdout.write(`New operator key (shown once; running Baton processes take it within 2 seconds, and the old one stops working then):\n\n  export BATON_ADMIN_TOKEN=${key}\n\n`)
  if (token !== undefined) process.stdout.write('Processes started with BATON_ADMIN_TOKEN set use the old key until they are restarted with the new one.\n')
}, { migrated: true })
