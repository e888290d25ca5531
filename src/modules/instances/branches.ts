import { sql } from '../../db/kysely.js'
import type { DB } from '../../db/connect.js'
import type { InstanceStepRow } from '../../db/database.js'

/*
 * What a decision changes beyond ending its step (process-changes.ts): the branch it took, and the
 * steps between it and the step it continues at, which are skipped without a mail (a jump forward;
 * branches never point back, src/modules/templates/steps/graph.ts).
 */

/** A decision that ended: its step, the branch taken, and where the process continues (null: it ends). */
export interface Jump {
  step: InstanceStepRow
  decision: 'yes' | 'no' | null
  continueAt: number | null
}

const NOT_ON_BRANCH = 'not on the chosen branch'

/** Records the branches taken and skips the steps jumped over, in one statement; returns the skipped steps. */
export async function writeJumps(db: DB, jumps: Jump[], now: Date): Promise<InstanceStepRow[]> {
  if (jumps.length === 0) return []
  const rows = jumps.map(({ step, decision, continueAt }) => ({
    tenant_id: step.tenant_id, instance_id: step.instance_id, id: step.id, decision,
    after: step.position, before: continueAt ?? 2_147_483_647
  }))
  const { rows: skipped } = await sql<InstanceStepRow>`
    with v as (
      select * from jsonb_to_recordset(${JSON.stringify(rows)}::jsonb)
        as v(tenant_id uuid, instance_id uuid, id uuid, decision text, after integer, before integer)
    ), decided as (
      update instance_steps s set decision = v.decision
      from v where s.tenant_id = v.tenant_id and s.id = v.id and v.decision is not null
    )
    update instance_steps s
    set state = 'skipped', ended_at = ${now}, note = ${NOT_ON_BRANCH}, version = s.version + 1
    from v
    where s.tenant_id = v.tenant_id and s.instance_id = v.instance_id and s.position > v.after and s.position < v.before
      and s.state = 'pending'
    returning s.*`.execute(db)
  return skipped
}
