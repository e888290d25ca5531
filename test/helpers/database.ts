import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { openPostgres, type DatabaseHandle, type DB } from '../../src/db/connect.js'
import { sql, type RawBuilder } from '../../src/db/kysely.js'
import type { PostgresOptions } from '../../src/db/postgres.js'
import { migrationsDigest } from '../../src/db/embedded-template.js'
import { migrateToLatest } from '../../src/db/migrate.js'

/** A server connection the tests may create databases with. */
export const ADMIN_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'

// Named after the migrations' content (as the embedded database's migrated dump is): runs at the same
// time share it, and a changed migration gets a fresh one instead of dropping a template other runs are cloning.
export const TEMPLATE_DATABASE = `baton_tpl_${migrationsDigest()}`

export function databaseUrl(name: string): string {
  const url = new URL(ADMIN_URL)
  url.pathname = `/${name}`
  return url.toString()
}

export async function adminQuery(text: string): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: ADMIN_URL })
  await client.connect()
  try {
    return await client.query(text)
  } finally {
    await client.end()
  }
}

/**
 * A fresh database cloned from the migrated template; dropped again by `drop`. `options` set its pool (e.g. its
 * statement timeout); `settings` are the database's own (`alter database … set`), as an operator may have chosen
 * them, which every session then starts with unless its connection sets them otherwise. `made` (the rest of a
 * `create database`, as `encoding 'LATIN1' lc_collate 'C' lc_ctype 'C'` or `locale_provider icu icu_locale 'tr'`)
 * makes it from template0 as an operator's platform would, and migrates it: a clone keeps its template's
 * encoding and collation.
 */
export async function createTestDatabase(
  options: Partial<PostgresOptions> = {}, settings: Record<string, string> = {}, made?: string
): Promise<DatabaseHandle & { name: string; drop(): Promise<void> }> {
  const name = `baton_test_${process.pid}_${randomBytes(4).toString('hex')}`
  await withRetry(async () => {
    await adminQuery(made === undefined ? `create database ${name} template ${TEMPLATE_DATABASE}` : `create database ${name} template template0 ${made}`)
  })
  try {
    for (const [setting, value] of Object.entries(settings)) {
      await adminQuery(`alter database ${name} set ${setting} = ${pg.escapeLiteral(value)}`)
    }
    if (made !== undefined) {
      const migrating = openPostgres(databaseUrl(name), { poolMax: 2 })
      try {
        await migrateToLatest(migrating)
      } finally {
        await migrating.close()
      }
    }
  } catch (error) {
    await adminQuery(`drop database if exists ${name} with (force)`) // a setting Postgres refused, a failed migration: the database goes too
    throw error
  }
  const handle = openPostgres(databaseUrl(name), { poolMax: 10, ...options })
  let dropped = false
  return {
    ...handle,
    name,
    async drop() {
      if (dropped) return
      dropped = true
      await handle.close()
      await adminQuery(`drop database if exists ${name} with (force)`)
    }
  }
}

// Two files cloning the template at the same instant can collide; a short retry settles it.
async function withRetry(action: () => Promise<void>, attempts = 5): Promise<void> {
  for (let i = 1; ; i++) {
    try {
      return await action()
    } catch (error) {
      if (i >= attempts) throw error
      await new Promise((resolve) => setTimeout(resolve, 100 * i))
    }
  }
}

/** Resolves once `sessions` sessions of this database wait for a lock (one a test holds back); fails after about 5 s. */
export async function waitForLockWait(db: DB, sessions = 1): Promise<void> {
  for (let waited = 0; ; waited += 1) {
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from pg_stat_activity
      where datname = current_database() and wait_event_type = 'Lock'`.execute(db)
    if (rows[0]!.n >= sessions) return
    if (waited > 500) throw new Error('no session of the database waited for a lock')
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

/**
 * Makes Postgres refuse every activity whose row meets `condition` (SQL over `new`), as a row that
 * cannot be written would fail a chore's batch; undone when the test ends.
 */
export async function refuseActivitiesWhere(t: { teardown(fn: () => Promise<unknown>): void }, db: DB, condition: string): Promise<void> {
  await sql.raw(`
    create function refuse_activity() returns trigger language plpgsql as $$
    begin
      if ${condition} then raise exception 'this activity cannot be written'; end if;
      return new;
    end $$;
    create trigger refuse_activity before insert on activities for each row execute function refuse_activity();
  `).execute(db)
  t.teardown(() => sql.raw('drop trigger refuse_activity on activities; drop function refuse_activity()').execute(db))
}

/**
 * Runs `lock` in a transaction that holds what it locked until `release`, as another transaction would
 * (a person's write, an advance, a worker's claim); `release` resolves once that transaction has ended.
 */
export async function holdRow(db: DB, lock: RawBuilder<unknown>): Promise<{ release(): Promise<void> }> {
  let release!: () => void
  let held!: () => void
  const released = new Promise<void>((resolve) => { release = resolve })
  const isHeld = new Promise<void>((resolve) => { held = resolve })
  const holder = db.transaction().execute(async (trx) => {
    await lock.execute(trx)
    held()
    await released
  })
  await isHeld
  return {
    async release() {
      release()
      await holder
    }
  }
}

export interface ConnectionSettings {
  jit: string
  notify: string | null
  workMem: string
  /** The server's TCP keepalive on this connection: idle, interval, count and user timeout, as `60 10 6 2min`. */
  keepalives: string
}

/** What a pool of one connection on `url` reads back of that connection's own settings; rejects with its first statement's error. */
export async function connectionSettings(url: string, options: { quietTriggers?: boolean; connectTimeoutMs?: number } = {}): Promise<ConnectionSettings> {
  const handle = openPostgres(url, { poolMax: 1, quietTriggers: options.quietTriggers ?? false, ...(options.connectTimeoutMs ? { connectTimeoutMs: options.connectTimeoutMs } : {}) })
  try {
    const { rows } = await sql<ConnectionSettings>`
      select current_setting('jit') as jit, current_setting('baton.notify', true) as notify, current_setting('work_mem') as "workMem",
        current_setting('tcp_keepalives_idle') || ' ' || current_setting('tcp_keepalives_interval') || ' ' || current_setting('tcp_keepalives_count') || ' ' || current_setting('tcp_user_timeout') as keepalives
    `.execute(handle.db)
    return rows[0]!
  } finally {
    await handle.close()
  }
}
