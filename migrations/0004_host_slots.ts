import { sql, type Kysely } from '../src/db/kysely.js'

// One row per webhook call in flight, keyed by the provider's host:port, so the per-host limit holds
// across every worker process. Unlogged: a slot lives for one call, and after a crash an empty table
// is the right state. A slot expires on its own, so a worker that died frees its slots.
//
// acquire_host_slot serialises acquisitions per host with a transaction-scoped advisory lock; the
// count runs as its own statement after the lock, so under READ COMMITTED it sees every slot taken
// by whoever held the lock before. One round trip per call; null when the host is full.
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    create unlogged table host_slots (
      id bigint generated always as identity primary key,
      host text not null,
      owner text not null,
      expires_at timestamptz not null
    )
  `.execute(db)
  await sql`create index host_slots_host_idx on host_slots (host, expires_at)`.execute(db)
  await sql`
    create function acquire_host_slot(p_host text, p_limit integer, p_ttl_ms integer, p_owner text) returns bigint
    language plpgsql as $$
    declare
      slot bigint;
    begin
      perform pg_advisory_xact_lock(7202612, hashtext(p_host));
      delete from host_slots where host = p_host and expires_at <= clock_timestamp();
      if (select count(*) from host_slots where host = p_host) >= p_limit then
        return null;
      end if;
      insert into host_slots (host, owner, expires_at)
      values (p_host, p_owner, clock_timestamp() + p_ttl_ms * interval '1 millisecond')
      returning id into slot;
      return slot;
    end $$
  `.execute(db)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop function acquire_host_slot(text, integer, integer, text)`.execute(db)
  await sql`drop table host_slots`.execute(db)
}
