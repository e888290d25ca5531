import type { DB } from '../../db/connect.js'
import { generateKey, hashKey } from '../../lib/keys.js'
import { findOperatorKeyHash, insertOperatorKeyHash, replaceOperatorKeyHash } from './repository.js'

export interface OperatorKey {
  hash: string
  /** Set only when this call generated the key: the one moment it can be shown. */
  generated?: string
}

/**
 * The operator key comes from BATON_ADMIN_TOKEN; without it, the first start generates one and keeps
 * only its hash, so a newcomer's first call needs no database work.
 */
export async function resolveOperatorKey(db: DB, adminToken: string | undefined): Promise<OperatorKey> {
  if (adminToken) return { hash: hashKey(adminToken) }
  const existing = await findOperatorKeyHash(db)
  if (existing) return { hash: existing }
  const generated = generateKey('operator')
  const hash = await insertOperatorKeyHash(db, hashKey(generated))
  return hash === hashKey(generated) ? { hash, generated } : { hash }
}

export async function rotateOperatorKey(db: DB): Promise<string> {
  const generated = generateKey('operator')
  await replaceOperatorKeyHash(db, hashKey(generated))
  return generated
}
