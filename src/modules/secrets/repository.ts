import type { DB } from '../../db/connect.js'

// The rows that hold secrets Baton reads back, locked while they are sealed again.

export function lockServiceSecrets(trx: DB) {
  return trx.selectFrom('marketplace_services').select(['id', 'name', 'secret', 'previous_secret']).orderBy('id').forUpdate().execute()
}

export function updateServiceSecrets(trx: DB, id: string, secrets: { secret: string; previous_secret: string | null }) {
  return trx.updateTable('marketplace_services').set(secrets).where('id', '=', id).execute()
}

export function lockSigningKeys(trx: DB) {
  return trx.selectFrom('signing_keys').select(['name', 'secret']).orderBy('name').forUpdate().execute()
}

export function updateSigningKey(trx: DB, name: string, secret: Buffer) {
  return trx.updateTable('signing_keys').set({ secret }).where('name', '=', name).execute()
}
