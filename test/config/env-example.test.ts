import { readFileSync } from 'node:fs'
import t from 'tap'
import { ConfigSchema, loadConfig } from '../../src/config.js'

const example = readFileSync(new URL('../../.env.example', import.meta.url), 'utf8')

t.test('.env.example documents every setting', async (t) => {
  for (const key of Object.keys(ConfigSchema.properties)) {
    t.match(example, new RegExp(`^#? ?${key}=`, 'm'), key)
  }
})

t.test('the values in .env.example are valid', async (t) => {
  const env = Object.fromEntries(example.split('\n')
    .filter((line) => /^[A-Z_]+=/.test(line))
    .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]))
  t.doesNotThrow(() => loadConfig(env))
})
