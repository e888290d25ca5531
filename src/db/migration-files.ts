import { fileURLToPath } from 'node:url'

/** The migrations' folder: `migrations/` beside `src/` (and beside `dist/src/` once built). */
export const migrationFolder = fileURLToPath(new URL('../../migrations', import.meta.url))

/** The files the migrator imports (src/db/migrate.ts). */
export function isMigrationFile(file: string): boolean {
  return /\.(js|mjs)$/.test(file) || (/\.m?ts$/.test(file) && !/\.d\.m?ts$/.test(file))
}
