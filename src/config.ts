import { Type, type Static } from 'typebox'
import { Value } from 'typebox/value'

const Flag = Type.Boolean({ default: false })

export const ConfigSchema = Type.Object({
  NODE_ENV: Type.Union([Type.Literal('development'), Type.Literal('production'), Type.Literal('test')], { default: 'development' }),
  HOST: Type.String({ minLength: 1, default: '127.0.0.1' }),
  PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 3000 }),
  LOG_LEVEL: Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)), { default: 'info' }),
  DATABASE_URL: Type.Optional(Type.String({ pattern: '^postgres(ql)?://' })),
  DATABASE_POOL_MAX: Type.Integer({ minimum: 1, maximum: 100, default: 10 }),
  BATON_DATA_DIR: Type.String({ minLength: 1, default: './data' }),
  BATON_ADMIN_TOKEN: Type.Optional(Type.String({ minLength: 24 })),
  BATON_MIGRATE_ON_START: Type.Boolean({ default: true }),
  BATON_TRUST_PROXY: Flag
})

export type Config = Readonly<Static<typeof ConfigSchema>>

export class ConfigError extends Error {
  override name = 'ConfigError'
}

/** Reads settings from an environment map; a wrong value throws naming the variable and what it expects. */
export function loadConfig(env: Record<string, string | undefined>): Config {
  const known = Object.keys(ConfigSchema.properties)
  const raw: Record<string, unknown> = {}
  for (const key of known) {
    const value = env[key]
    if (value !== undefined && value !== '') raw[key] = value
  }
  const config = Value.Convert(ConfigSchema, Value.Default(ConfigSchema, raw)) as Record<string, unknown>
  const problems = Object.entries(ConfigSchema.properties).flatMap(([key, schema]) => {
    if (config[key] === undefined) return []
    const first = Value.Errors(schema, config[key])[0]
    return first ? [`${key}: ${expectation(schema as { anyOf?: { const?: unknown }[] }, first.message)}`] : []
  })
  if (problems.length > 0) {
    throw new ConfigError(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`)
  }
  return Object.freeze(config as Static<typeof ConfigSchema>)
}

function expectation(schema: { anyOf?: { const?: unknown }[] }, message: string): string {
  return schema.anyOf ? `must be one of ${schema.anyOf.map((s) => s.const).join(', ')}` : message
}
