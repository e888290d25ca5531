import { sql, type Kysely } from '../src/db/kysely.js'

// The work triggers of 0002 ask whether the connection is quiet (`baton.notify = off`, 0013) in their
// WHEN clause, not in their function: on the API's connections a write that starts or ends a step no
// longer calls PL/pgSQL nor queues an after-trigger event for each row, only to find it has nothing to
// do. Every other writer notifies as before (test/runtime/coalesced-wakeups.test.ts). `create or
// replace trigger` takes a SHARE ROW EXCLUSIVE lock on each table, where dropping a trigger would
// take an ACCESS EXCLUSIVE one and queue every reader behind a long transaction.
const LOUD = `current_setting('baton.notify', true) is distinct from 'off'`

const triggers = (quiet: string) => [
  `create or replace trigger deliveries_notify_work after insert or update of status, next_attempt_at on deliveries
   for each row when (new.status = 'pending'${quiet}) execute function baton_notify_work()`,
  `create or replace trigger instance_steps_notify_work after insert or update of state, start_at on instance_steps
   for each row when (new.state in ('waiting', 'due')${quiet}) execute function baton_notify_work()`,
  `create or replace trigger outbox_mails_notify_work after insert on outbox_mails
   for each statement${quiet ? ` when (${LOUD})` : ''} execute function baton_notify_work()`
]

export async function up(db: Kysely<unknown>): Promise<void> {
  for (const statement of triggers(` and ${LOUD}`)) await sql.raw(statement).execute(db)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  for (const statement of triggers('')) await sql.raw(statement).execute(db)
}
