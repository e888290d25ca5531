import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { spawnSync } from 'node:child_process'
import t from 'tap'
import { ConfigSchema, loadConfig } from '../../src/config.js'

const example = readFileSync(new URL('../../.env.example', import.meta.url), 'utf8')

t.test('.env.example documents every setting', async (t) => {
  for (const key of Object.keys(ConfigSchema.properties)) {
    t.match(example, new RegExp(`^#? ?${key}=`, 'm'), key)
  }
})

t.test('the values in .env.example read the same without a shell (docker --env-file): none is quoted', async (t) => {
  const quoted = example.split('\n').filter((line) => /^[A-Z_]+=["']/.test(line))
  t.same(quoted, [], 'a quote would be part of the value')
})

t.test('the values in .env.example are valid', async (t) => {
  const env = Object.fromEntries(example.split('\n')
    .filter((line) => /^[A-Z_]+=/.test(line))
    .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]))
  t.doesNotThrow(() => loadConfig(env))
})

t.test('.env.example can be sourced as its header says, and gives the defaults', async (t) => {
  // `set -a; . ./.env; set +a`: a value the shell cannot read (an unquoted `<`) stopped the file there,
  // leaving that setting and every one after it unset.
  const shell = spawnSync('sh', ['-c', 'set -a; . "$0"; set +a; env -0', fileURLToPath(new URL('../../.env.example', import.meta.url))], {
    env: { PATH: process.env.PATH }, encoding: 'utf8'
  })
  t.equal(shell.stderr, '', 'the shell reads every line')
  t.equal(shell.status, 0)
  const sourced = Object.fromEntries(shell.stdout.split('\0').filter(Boolean).map((entry) => [entry.slice(0, entry.indexOf('=')), entry.slice(entry.indexOf('=') + 1)]))
  const defaults = loadConfig({})
  for (const line of example.split('\n').filter((line) => /^[A-Z_]+=/.test(line))) {
    const key = line.slice(0, line.indexOf('='))
    t.type(sourced[key], 'string', `${key} is set`)
    t.equal(loadConfig({ [key]: sourced[key] })[key as keyof typeof defaults], defaults[key as keyof typeof defaults], key)
  }
})
