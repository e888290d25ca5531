import { createRequire } from 'node:module'
import type * as K from 'kysely'

/*
 * Kysely, loaded as CommonJS. Its ES module build is some 260 files, and under a loader's hooks (tsx:
 * the tests, `npm run dev`) each file is a round trip to the hooks' thread: about 0.3 s of CPU a start,
 * against one require of the CommonJS build. Import Kysely from here, not from 'kysely', so one copy loads.
 */
const kysely = createRequire(import.meta.url)('kysely') as typeof K

export type * from 'kysely'
export const { sql, CompiledQuery, Kysely, PostgresDialect, Migrator, DEFAULT_MIGRATION_TABLE } = kysely
export type Kysely<DB> = K.Kysely<DB>
export type PostgresDialect = K.PostgresDialect
export type Migrator = K.Migrator
export type CompiledQuery<Row = unknown> = K.CompiledQuery<Row>
