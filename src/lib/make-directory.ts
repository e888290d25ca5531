import { mkdirSync, statSync } from 'node:fs'
import { dirname, resolve } from 'node:path'

/**
 * `mkdir -p`, one folder at a time. Node's own recursive mkdir never returns where a folder's parent
 * exists but refuses children with ENOENT (`/proc/nope`: it makes the parent again and again), which
 * hung a start whose BATON_DATA_DIR named such a place. Here the first refusal is thrown, with its code.
 */
export function makeDirectory(dir: string, mode?: number): void {
  const missing: string[] = []
  const target = resolve(dir)
  for (let at = target; ; at = dirname(at)) {
    try {
      if (statSync(at).isDirectory()) break
      // As Node's own mkdir says it: the path itself is taken (EEXIST), or a folder on the way is a file (ENOTDIR).
      const code = at === target ? 'EEXIST' : 'ENOTDIR'
      throw Object.assign(new Error(`${code}: ${code === 'EEXIST' ? 'file already exists' : 'not a directory'}, mkdir '${target}'`), { code, path: target })
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error
    }
    missing.push(at)
    if (dirname(at) === at) break
  }
  for (const path of missing.reverse()) {
    try {
      mkdirSync(path, mode === undefined ? undefined : { mode })
    } catch (error) {
      // Made meanwhile by another process: as good as made here.
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST' || !statSync(path).isDirectory()) throw error
    }
  }
}
