import { sql, type Kysely } from '../src/db/kysely.js'

// A tenant's time zone is kept as the IANA zone Intl takes its name for (src/modules/tenants/service.ts,
// timeZoneOf): Postgres did not know some names Intl accepted (`AET`, `US/Pacific-New`: its date
// chores failed), and read others as fixed offsets (`CET`, `PST`). The zones kept before are renamed so.
export async function up(db: Kysely<unknown>): Promise<void> {
  await canonicalTimeZones(db)
}

export async function down(): Promise<void> {
  // The names before are not kept: they named the same zones, where Intl read them.
}

/** Renames each tenant's time zone to the IANA zone Intl takes it for, where that differs; returns how many it renamed. */
export async function canonicalTimeZones(db: Kysely<unknown>): Promise<number> {
  const { rows } = await sql<{ time_zone: string }>`select distinct time_zone from tenants`.execute(db)
  let renamed = 0
  for (const { time_zone: zone } of rows) {
    let canonical: string
    try {
      canonical = new Intl.DateTimeFormat('en', { timeZone: zone }).resolvedOptions().timeZone
    } catch {
      continue
    }
    if (canonical === zone) continue
    const { numAffectedRows } = await sql`update tenants set time_zone = ${canonical} where time_zone = ${zone}`.execute(db)
    renamed += Number(numAffectedRows ?? 0)
  }
  return renamed
}
