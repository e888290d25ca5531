import { mkdir, writeFile } from 'node:fs/promises'
import { join, normalize, sep } from 'node:path'

const WRITES_AT_ONCE = 64

/**
 * Writes the directories and regular files of a tar archive (ustar or GNU, as PGlite's dumps are)
 * under `dest`, the files in parallel. Refuses any other kind of entry and any path that leaves
 * `dest`, before writing anything.
 */
export async function extractTar(archive: Buffer, dest: string): Promise<{ files: number }> {
  const dirs = new Set<string>()
  const files: { path: string; data: Buffer }[] = []
  let longName: string | undefined
  for (let offset = 0; offset + 512 <= archive.length;) {
    const header = archive.subarray(offset, offset + 512)
    if (header.every((byte) => byte === 0)) break
    const field = (start: number, length: number) => {
      const bytes = header.subarray(start, start + length)
      const end = bytes.indexOf(0)
      return bytes.subarray(0, end < 0 ? length : end).toString('utf8')
    }
    const size = Number.parseInt(field(124, 12).trim() || '0', 8)
    if (!Number.isInteger(size) || size < 0) throw new Error(`tar: a bad size at byte ${offset}`)
    if (offset + 512 + size > archive.length) throw new Error(`tar: the archive ends inside the entry at byte ${offset}`)
    const type = header[156] === 0 ? '0' : String.fromCharCode(header[156]!)
    const data = archive.subarray(offset + 512, offset + 512 + size)
    offset += 512 + Math.ceil(size / 512) * 512
    if (type === 'L') {
      longName = data.toString('utf8').replace(/\0+$/, '')
      continue
    }
    // Only ustar headers have a name prefix there (GNU ones keep times in those bytes).
    const prefix = header.subarray(257, 263).toString('latin1') === 'ustar\0' ? field(345, 155) : ''
    const name = longName ?? (prefix ? `${prefix}/${field(0, 100)}` : field(0, 100))
    longName = undefined
    const path = safePath(name)
    if (type === '5') {
      if (path) dirs.add(path)
    } else if (type === '0' && path) {
      files.push({ path, data })
    } else {
      throw new Error(`tar: "${name}" is neither a directory nor a regular file`)
    }
  }
  await mkdir(dest, { recursive: true, mode: 0o700 })
  for (const file of files) dirs.add(join(file.path, '..'))
  for (const dir of [...dirs].sort()) await mkdir(join(dest, dir), { recursive: true, mode: 0o700 })
  // In parallel, a bounded number at a time: a cluster has more files than some limits on open ones.
  for (let i = 0; i < files.length; i += WRITES_AT_ONCE) {
    await Promise.all(files.slice(i, i + WRITES_AT_ONCE).map((f) => writeFile(join(dest, f.path), f.data, { mode: 0o600 })))
  }
  return { files: files.length }
}

/** The entry's path relative to the destination ('' for the destination itself); throws for one outside it. */
function safePath(name: string): string {
  const path = normalize(name.replace(/^\/+/, '')).replace(/[\\/]+$/, '')
  if (path === '.' || path === '') return ''
  if (path.split(sep).includes('..')) throw new Error(`tar: "${name}" leaves the destination`)
  return path
}
