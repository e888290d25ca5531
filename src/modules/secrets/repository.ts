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

/** The steps (of templates or of running processes) whose free target has a secret. */
export function lockStepTargetSecrets(trx: DB, table: 'template_steps' | 'instance_steps') {
  return trx.selectFrom(table).select(['tenant_id', 'id', 'target_url', 'target_secret'])
    .where('target_secret', 'is not', null).where('target_url', 'is not', null)
    .$narrowType<{ target_url: string; target_secret: string }>()
    .orderBy('tenant_id').orderBy('id').forUpdate().execute()
}

export function updateStepTargetSecret(trx: DB, table: 'template_steps' | 'instance_steps', step: { tenant_id: string; id: string }, secret: string) {
  return trx.updateTable(table).set({ target_secret: secret }).where('tenant_id', '=', step.tenant_id).where('id', '=', step.id).execute()
}
