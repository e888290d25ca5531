// How schedulers learn of new work (docs/architecture.md, "Waking the schedulers"). They LISTEN on
// WORK_CHANNEL; the payload names the table whose rows became work. A process that only serves the API
// announces its work itself, after its transactions commit and coalesced over a few milliseconds; every
// other writer's rows notify through the triggers of migrations 0002 and 0013.

export const WORK_CHANNEL = 'baton_work'

/** Tables whose rows are work for a scheduler: a pending delivery, a waiting or due step, a mail to send. */
export type WorkTable = 'deliveries' | 'instance_steps' | 'outbox_mails'

export interface Wakeups {
  /** Tells the schedulers of work that has committed; called after the transaction, never inside it. */
  announce(tables: Iterable<WorkTable>): void
}

/** The connections' triggers notify (a scheduler's process, the embedded database, tests): nothing to add. */
export const TRIGGERS_NOTIFY: Wakeups = { announce() {} }

/** How long announcements are gathered into one NOTIFY after the previous one was sent. */
const WAKEUP_WINDOW_MS = 20

export interface CoalescedWakeups extends Wakeups {
  /**
   * Sends what is still gathered and waits for the NOTIFYs under way. Announcements after it send
   * nothing: the database closes next, and the schedulers' poll finds that work.
   */
  close(): Promise<void>
}

/**
 * Announcements gathered into at most one `send` per window: the first after a quiet spell goes out at
 * once, later ones within `windowMs` of it wait for the window to end and go out together. `send` runs
 * outside any transaction (its own short statement); if it fails, the schedulers' poll interval still
 * finds the work, so the error is only reported.
 */
export function coalescedWakeups(
  send: (tables: WorkTable[]) => Promise<void>, options: { windowMs?: number; onError?: (error: Error) => void } = {}
): CoalescedWakeups {
  const windowMs = options.windowMs ?? WAKEUP_WINDOW_MS
  const onError = options.onError ?? (() => {})
  const gathered = new Set<WorkTable>()
  const sending = new Set<Promise<void>>()
  let lastSent = -Infinity
  let timer: NodeJS.Timeout | undefined
  // A request that outlived the server's close (its client gone, Fastify no longer waiting for it) may
  // commit and announce after the database began closing: a send then failed as a lost connection.
  let closed = false

  const flush = () => {
    timer = undefined
    if (gathered.size === 0) return
    const tables = [...gathered]
    gathered.clear()
    lastSent = performance.now()
    const sent = send(tables).catch((error: Error) => onError(error)).finally(() => sending.delete(sent))
    sending.add(sent)
  }

  return {
    announce(tables) {
      if (closed) return
      for (const table of tables) gathered.add(table)
      if (gathered.size === 0 || timer) return
      const wait = lastSent + windowMs - performance.now()
      if (wait <= 0) flush()
      else timer = setTimeout(flush, wait)
    },
    async close() {
      closed = true
      clearTimeout(timer)
      flush()
      await Promise.all(sending)
    }
  }
}
