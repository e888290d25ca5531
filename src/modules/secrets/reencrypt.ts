import type { DB } from '../../db/connect.js'
import { secretContext, type SecretBox } from '../../lib/secret-box.js'
import { secretProblem } from '../marketplace/services/secret-strength.js'
import * as repo from './repository.js'

export interface ReencryptSummary {
  /** Values sealed now: plain ones, and those sealed with the previous key. */
  sealed: number
  /** Values already sealed with the current key. */
  current: number
  /** Services whose signing secret could be forged (stored before such secrets were refused): rotate them. */
  weak: { id: string; name: string; problem: string }[]
  /** Of `sealed`, those a further pass sealed: copies running processes wrote meanwhile of secrets as they were. */
  later: number
}

/** Passes over the secrets before the command gives up, as secrets sealed with another key keep appearing. */
const MAX_PASSES = 5

/** Running processes kept writing secrets sealed with another key while the command sealed them again. */
export class ReencryptUnsettledError extends Error {
  override name = 'ReencryptUnsettledError'
}

/**
 * Seals every secret Baton keeps with the box's current key: service signing secrets (current and
 * previous), the secrets of steps' free targets and the signing keys (the apiClaim key). Plain values and values sealed with the previous
 * key are opened and sealed again; all in one transaction, with the rows locked. A running process
 * copies a step's secret as it read it (a process started from its template, a template copied, a
 * step changed): one that read it before that transaction committed writes the copy after, sealed as
 * it was, among rows the transaction had passed already. So further passes follow, until one finds
 * nothing to seal; without them that copy was left sealed with the old key, and lost with it. A copy
 * read before one pass committed and written only after the next, the last, has looked can still be
 * missed (a narrow window): the README has the command run once more before the old key goes.
 */
export async function reencryptSecrets(db: DB, secrets: SecretBox): Promise<ReencryptSummary> {
  if (!secrets.sealing) throw new Error('Set BATON_SECRETS_KEY to the key to seal the secrets with.')
  const summary = await reencryptPass(db, secrets)
  for (let pass = 2, last = summary.sealed; last > 0; pass += 1) {
    if (pass > MAX_PASSES) {
      throw new ReencryptUnsettledError(`Secrets sealed with another key than BATON_SECRETS_KEY kept appearing while this command sealed them (${last} in its pass ${pass - 1}): `
        + 'a running Baton process may still seal with the old key, or with none. Give every process BATON_SECRETS_KEY set to this key and BATON_SECRETS_KEY_PREVIOUS '
        + 'to the old one (if any), run this command again, and keep BATON_SECRETS_KEY_PREVIOUS until it finishes.')
    }
    last = (await reencryptPass(db, secrets)).sealed
    summary.sealed += last
    summary.later += last
  }
  return summary
}

/** One pass over every secret, in one transaction. */
function reencryptPass(db: DB, secrets: SecretBox): Promise<ReencryptSummary> {
  return db.transaction().execute(async (trx) => {
    const summary: ReencryptSummary = { sealed: 0, current: 0, weak: [], later: 0 }
    const again = (stored: string, context: string) => {
      if (secrets.isSealedWithCurrentKey(stored)) {
        summary.current += 1
        return stored
      }
      summary.sealed += 1
      return secrets.seal(secrets.open(stored, context), context)
    }
    for (const row of await repo.lockServiceSecrets(trx)) {
      const context = secretContext.service(row.id)
      const problem = secretProblem(secrets.open(row.secret, context))
      if (problem) summary.weak.push({ id: row.id, name: row.name, problem })
      const previous = row.previous_secret === null ? null : again(row.previous_secret, context)
      await repo.updateServiceSecrets(trx, row.id, { secret: again(row.secret, context), previous_secret: previous })
    }
    for (const table of ['template_steps', 'instance_steps'] as const) {
      for (const step of await repo.lockStepTargetSecrets(trx, table)) {
        const sealed = again(step.target_secret, secretContext.stepTarget(step.tenant_id, step.target_url))
        if (sealed !== step.target_secret) await repo.updateStepTargetSecret(trx, table, step, sealed)
      }
    }
    for (const row of await repo.lockSigningKeys(trx)) {
      const context = secretContext.signingKey(row.name)
      if (secrets.isSealedWithCurrentKey(row.secret.toString('latin1'))) {
        summary.current += 1
        continue
      }
      summary.sealed += 1
      await repo.updateSigningKey(trx, row.name, secrets.sealBytes(secrets.openBytes(row.secret, context), context))
    }
    return summary
  })
}
