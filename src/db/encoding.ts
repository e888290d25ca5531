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
 * encoding, so the start (and db:migrate) stops before it writes anything, saying how to make one.
 */
export async function refuseOtherEncodings(db: DB): Promise<void> {
  const { rows } = await sql<{ encoding: string; database: string }>`
    select current_setting('server_encoding') as encoding, current_database() as database`.execute(db)
  const { encoding, database } = rows[0]!
  if (encoding === 'UTF8') return
  throw new ConfigError(`DATABASE_URL: the database "${database}" is encoded in ${encoding}, and Baton stores text as UTF-8: ` +
    `${encoding === 'SQL_ASCII' ? 'SQL_ASCII keeps bytes without knowing their characters, so lengths and case would be wrong' : `${encoding} cannot hold most characters (an emoji, Chinese or Greek text)`}. ` +
    `Create the database with ENCODING 'UTF8' (createdb --encoding=UTF8 --template=template0 <name>, or CREATE DATABASE <name> ENCODING 'UTF8' TEMPLATE template0), ` +
    'and point DATABASE_URL at it; a database with data of Baton\'s in it is moved with pg_dump and pg_restore')
}
