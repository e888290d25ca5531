import { spawn, spawnSync } from 'node:child_process'
import { closeSync, openSync } from 'node:fs'

/**
 * Lowers this test process's own open-files limit (the soft one; the hard one stays) so that it has no
 * file descriptor to spare, as a worker or an API past `ulimit -n` has none: every socket, connection or
 * file it opens meanwhile fails with EMFILE. The limit is set by `prlimit` from a shell started before,
 * since a process with no descriptor left cannot spawn one to raise it again.
 */
export interface FdLimit {
  /** No descriptor free from now on: the limit is set to the lowest free one. */
  exhaust(): Promise<void>
  /** The limit as it was. */
  restore(): Promise<void>
  close(): void
}

/** Why a test of the open-files limit cannot run here, or undefined when it can. */
export function fdLimitMissing(): string | undefined {
  if (process.platform !== 'linux') return 'open-files limits are set with prlimit on Linux only'
  const probe = spawnSync('prlimit', ['--version'])
  if (probe.error || probe.status !== 0) return 'prlimit (util-linux) is not installed'
  return undefined
}

export function fdLimit(): FdLimit {
  const shell = spawn('bash', ['-s'], { stdio: ['pipe', 'pipe', 'inherit'] })
  const soft = String(spawnSync('prlimit', [`--pid=${process.pid}`, '--nofile', '--raw', '--noheadings', '--output=SOFT']).stdout).trim()
  let lines = ''
  const waiters: (() => void)[] = []
  shell.stdout.on('data', (chunk: Buffer) => {
    lines += chunk.toString()
    while (lines.includes('\n')) {
      lines = lines.slice(lines.indexOf('\n') + 1)
      waiters.shift()?.()
    }
  })
  const set = (limit: string) => new Promise<void>((resolve) => {
    waiters.push(resolve)
    shell.stdin.write(`prlimit --pid=${process.pid} --nofile=${limit}: ; echo done\n`)
  })
  return {
    async exhaust() {
      // A file opens on the lowest free descriptor: a limit there leaves none below it.
      const lowestFree = openSync('/dev/null', 'r')
      closeSync(lowestFree)
      await set(String(lowestFree))
    },
    restore: () => set(soft),
    close: () => shell.kill()
  }
}
