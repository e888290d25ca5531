import { ConfigError } from '../config.js'
import { sql } from './kysely.js'
import type { DB } from './connect.js'

/**
 * Baton keeps its users' text as they sent it, any character of Unicode: names, record fields, notes,
 * steps' parameters and mails, providers' answers written back. A database of another encoding takes
 * only part of it. On LATIN1 or WIN1252 every text with a character outside it (an emoji, a Japanese
 * street name) answered 400 saying it held a NUL, which it did not, and a provider's answer of such
 * text could not be written back; on SQL_ASCII the bytes came back as they went in, but Postgres counts
 * them as characters and folds the case of ASCII letters alone. Postgres cannot change a database's
 * encoding, so a start (and db:migrate) on a database without Baton's tables (none reachable, as the
 * migrations would look for them) stops before it writes
 * anything, saying how to make one. An installation already on such a database goes on as it did: it
 * is told the same at each start, as a warning, and moves when its operator chooses (stopped, an
 * upgrade's new processes would not serve while the old ones go on).
 * Resolves with that warning, or undefined for a UTF8 database.
 */
export async function checkEncoding(db: DB): Promise<string | undefined> {
  const { rows } = await sql<{ encoding: string; database: string; installed: boolean }>`
    select current_setting('server_encoding') as encoding, current_database() as database,
      to_regclass('process_instances') is not null as installed`.execute(db)
  const { encoding, database, installed } = rows[0]!
  if (encoding === 'UTF8') return undefined
  const why = `the database "${database}" is encoded in ${encoding}, and Baton stores text as UTF-8: ` +
    `${encoding === 'SQL_ASCII' ? 'SQL_ASCII keeps bytes without knowing their characters, so lengths and case would be wrong' : `${encoding} cannot hold every character (an emoji, for one)`}. ` +
    'Create the database with ENCODING \'UTF8\' and a UTF-8 locale (createdb --encoding=UTF8 --locale=C.UTF-8 --template=template0 <name>, ' +
    'or CREATE DATABASE <name> ENCODING \'UTF8\' LOCALE \'C.UTF-8\' TEMPLATE template0), ' +
    'and point DATABASE_URL at it'
  if (!installed) throw new ConfigError(`DATABASE_URL: ${why}`)
  return `${why}; Baton's data in this one is moved with pg_dump and pg_restore (it runs on meanwhile, refusing text its encoding cannot hold)`
}
