import { readFileSync } from 'node:fs'

// package.json sits one folder up from src/ when run from source and two up from dist/src/ when built.
function readVersion(): string {
  for (const candidate of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(candidate, import.meta.url), 'utf8')) as { name?: string; version?: string }
      if (pkg.name === 'baton' && pkg.version) return pkg.version
    } catch {
      // try the next candidate
    }
  }
  return '0.0.0'
}

export const VERSION: string = readVersion()
