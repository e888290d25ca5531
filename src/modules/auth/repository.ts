import type { DB } from '../../db/connect.js'

/** The tenant of an unrevoked key; none for a tenant being deleted, whose keys answer as a deleted tenant's. */
export async function findTenantIdByKeyHash(db: DB, keyHash: string): Promise<string | undefined> {
  const row = await db
    .selectFrom('api_keys as k')
    .innerJoin('tenants as t', 't.id', 'k.tenant_id')
    .select('k.tenant_id')
    .where('k.key_hash', '=', keyHash)
    .where('k.revoked_at', 'is', null)
    .where('t.deleting_since', 'is', null)
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

/** Stores the signing key unless another process stored one of that name first. */
export async function insertSigningKey(db: DB, name: string, secret: Buffer): Promise<void> {
  await db.insertInto('signing_keys').values({ name, secret })
    .onConflict((oc) => oc.column('name').doNothing()).execute()
}

export async function findSigningKey(db: DB, name: string): Promise<Buffer> {
  const row = await db.selectFrom('signing_keys').select('secret').where('name', '=', name).executeTakeFirstOrThrow()
  return row.secret
}

export async function replaceOperatorKeyHash(db: DB, keyHash: string): Promise<void> {
  await db
    .insertInto('operator_keys')
    .values({ key_hash: keyHash })
    .onConflict((oc) => oc.column('id').doUpdateSet({ key_hash: keyHash }))
    .execute()
}
