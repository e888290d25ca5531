import { sql, type Kysely } from '../src/db/kysely.js'
import { hostKey } from '../src/lib/host-key.js'

// A free target's delivery keeps the host:port its step's URL calls (the per-host limit's key,
// src/lib/host-key.ts), so that a worker can leave a full host's free targets out of its claims as it
// leaves out the host's services (src/scheduler/claim-deliveries.ts). Null for a service's delivery,
// whose service may move its URL. The free targets' deliveries of before are given theirs here: any of
// them may be queued again (a retry, a replay).
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table deliveries add column target_host text`.execute(db)
  await fillTargetHosts(db)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`alter table deliveries drop column target_host`.execute(db)
}

/** Sets target_host on free targets' deliveries without one, a thousand at a time, in the order of their keys. */
export async function fillTargetHosts(db: Kysely<unknown>, batch = 1000): Promise<number> {
  let filled = 0
  let after: { tenant_id: string; id: string } | undefined
  for (;;) {
    const { rows } = await sql<{ tenant_id: string; id: string; target_url: string | null }>`
      select d.tenant_id, d.id, st.target_url from deliveries d
      join instance_steps st on st.tenant_id = d.tenant_id and st.id = d.step_id
      where d.service_id is null and d.target_host is null
        ${after ? sql`and (d.tenant_id, d.id) > (${after.tenant_id}::uuid, ${after.id}::uuid)` : sql``}
      order by d.tenant_id, d.id
      limit ${batch}`.execute(db)
    const hosts = rows.flatMap((row) => {
      const host = row.target_url === null ? undefined : hostKey(row.target_url)
      return host === undefined ? [] : [{ tenant_id: row.tenant_id, id: row.id, host }]
    })
    if (hosts.length > 0) {
      await sql`
        update deliveries d set target_host = v.host
        from jsonb_to_recordset(${JSON.stringify(hosts)}::jsonb) as v(tenant_id uuid, id uuid, host text)
        where d.tenant_id = v.tenant_id and d.id = v.id`.execute(db)
      filled += hosts.length
    }
    if (rows.length < batch) return filled
    after = rows[rows.length - 1]
  }
}
