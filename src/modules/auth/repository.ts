import type { DB } from '../../db/connect.js'

export async function findTenantIdByKeyHash(db: DB, keyHash: string): Promise<string | undefined> {
  const row = await db
    .selectFrom('api_keys')
    .select('tenant_id')
    .where('key_hash', '=', keyHash)
    .where('revoked_at', 'is', null)
    .executeTakeFirst()
  return row?.tenant_id
}

export async function findOperatorKeyHash(db: DB): Promise<string | undefined> {
  const row = await db.selectFrom('operator_keys').select('key_hash').executeTakeFirst()
  return row?.key_hash
}

/** Stores the generated operator key unless another process stored one first; returns the hash in force. */
export async function insertOperatorKeyHash(db: DB, keyHash: string): Promise<string> {
  await db.insertInto('operator_keys').values({ key_hash: keyHash }).onConflict((oc) => oc.column('id').doNothing()).execute()
  return (await findOperatorKeyHash(db)) ?? keyHash
}

export async function replaceOperatorKeyHash(db: DB, keyHash: string): Promise<void> {
  await db
    .insertInto('operator_keys')
    .values({ key_hash: keyHash })
    .onConflict((oc) => oc.column('id').doUpdateSet({ key_hash: keyHash }))
    .execute()
}
