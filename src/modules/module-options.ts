import type { TargetPolicy } from '../adapters/address-policy.js'
import type { Clock } from '../adapters/clock.js'
import type { DB } from '../db/connect.js'
import type { Wakeups } from '../db/wakeups.js'
import type { SecretBox } from '../lib/secret-box.js'
import type { KnownKeys } from './auth/known-keys.js'

/** Module options every route plugin receives. */
export interface ModuleOptions {
  db: DB
  clock: Clock
  /** Seals the secrets Baton keeps (BATON_SECRETS_KEY); without a key they are stored as they are. */
  secrets: SecretBox
  /** Which webhook targets are refused (WEBHOOK_ALLOW_PRIVATE_NETWORKS, WEBHOOK_ALLOWED_TARGETS), as the worker refuses them. */
  targets: TargetPolicy
  /** Tenant keys the auth hook verified lately; revoking a key or deleting a tenant forgets them. */
  knownKeys: KnownKeys
  /** Tells the schedulers of work a request committed (src/db/wakeups.ts). */
  wakeups: Wakeups
}
