/** What Baton's background work logs through: pino's logger fits, and tests pass a quiet one. */
export interface Logger {
  info(obj: object, msg?: string): void
  warn(obj: object, msg?: string): void
  error(obj: object, msg?: string): void
}
