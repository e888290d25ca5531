import type { Session } from '../db/connect.js'
import { lockHostSlots, unlockHostSlots, unlockUntrackedHostSlots } from './host-slot-repository.js'

/** The right to one call at a host, until it is given back. */
export interface HostSlot {
  host: string
  number: number
  /** The session (its backend pid) whose advisory lock this is; a lost session took its locks along. */
  session: number
  /** When the lock was taken, by this worker's clock. */
  lockedAt: number
}

interface Waiter {
  grant(slot: HostSlot | undefined): void
  /** When its delivery fell due; the line is kept in this order, the oldest first, then in the order they came. */
  dueAt: number
}

interface HostState {
  /** Slot numbers this session holds a lock on, in use or idle. */
  held: Set<number>
  idle: { slot: HostSlot; since: number }[]
  waiters: Waiter[]
  poll: NodeJS.Timeout | undefined
  /** When the database last said every slot of the host was taken (elapsed()); -Infinity: never. */
  fullAt: number
  /** Calls whose question to the database for a slot is not answered yet: each may join the line. */
  asking: number
  /** The questions for a slot not yet sent: the next round trip of the session asks for all of them (tryLock). */
  asks: ((slot: HostSlot | typeof FULL | undefined) => void)[]
  /** A poll is serving the waiters (serveWaiters): another waits for the next poll. */
  serving: boolean
}

/** How long a freed slot stays with this worker for its next call to the same host. */
const LINGER_MS = 200
/** How often a worker with calls waiting for a host looks for a slot another worker freed. */
const POLL_MS = 100
/** A slot held longer goes back to the database when its call ends, so calls waiting at other workers get their turn. */
const TURN_MS = 1000
/** A host the database found full this recently is taken to be full still (placesAt). */
const FULL_LATELY_MS = 1000
/** What tryLock answers when the database has no free slot of the host for this worker. */
const FULL = 'full'
/** The slots' times, on a timer that only goes forward: on the wall clock, a step back held idle slots from the other workers as long as the step. */
const elapsed = () => performance.now()

/**
 * The per-host limit across every worker: slot n of a host is the session-level advisory lock
 * (hashtext(host), n) on this worker's own connection, so Postgres frees a worker's slots the moment
 * its connection ends, kill -9 included. A call that finds its host full waits here, holding its
 * claim: a slot this worker gives back goes straight to the next waiter, and slots freed by other
 * workers are looked for every POLL_MS. A freed slot lingers LINGER_MS for the next call to the same
 * host, which saves two round trips per call under load. At most `maxWaiting` calls wait at once, at
 * every host together: each holds its delivery's lease, and a waiting call takes no place of
 * SCHEDULER_CONCURRENCY (onWait), so nothing else would bound them.
 */
export class HostSlots {
  private readonly hosts = new Map<string, HostState>()
  private session: Promise<Session> | undefined
  private currentSession = -1
  private sweepTimer: NodeJS.Timeout | undefined
  /** The session is one connection: its statements run one after another, and each reads `held` when it runs. */
  private queue: Promise<unknown> = Promise.resolve()
  /** Calls waiting here for a slot, and calls asking the database for one (each may join the line), at every host. */
  private waiting = 0
  private asking = 0

  constructor(
    private readonly openSession: () => Promise<Session>,
    private readonly perHost: number,
    private readonly onError: (error: unknown) => void,
    private readonly maxWaiting = Infinity
  ) {}

  /**
   * A slot for one call, waiting up to `maxWaitMs`; undefined when none came in time, when the signal
   * fired, or at once when as many calls already wait for this host here as it may take at a time.
   * Waiters are served in the order their deliveries fell due (`dueAt`, a time in ms; unset: after
   * every dated one), then in the order they came: a delivery taken back from a dead worker is called
   * before those that fell due after it. `onWait` is told when the call joins the line.
   */
  async acquire(
    host: string, maxWaitMs: number, signal?: AbortSignal, { dueAt = Infinity, onWait }: { dueAt?: number; onWait?: () => void } = {}
  ): Promise<HostSlot | undefined> {
    const state = this.stateOf(host)
    const idle = state.idle.pop()
    if (idle) return idle.slot
    if (state.waiters.length === 0) {
      state.asking += 1
      this.asking += 1
      const slot = await this.tryLock(host).finally(() => {
        state.asking -= 1
        this.asking -= 1
      })
      if (slot !== FULL && slot) return slot
      // A call that ended while the database was asked left its slot idle here: take it rather than
      // wait for a poll while it lingers. Not when the database did not answer: the connection, and
      // the lock with it, may be gone.
      const freed = slot === FULL ? state.idle.pop() : undefined
      if (freed) return freed.slot
    }
    if (this.isCrowded(host) || signal?.aborted) return undefined
    onWait?.()
    return this.wait(host, maxWaitMs, signal, dueAt)
  }

  /**
   * Calls waiting for this host at this worker are as many as it may call at once, or as many wait
   * here as may at all (maxWaiting): another is turned away (placesAt is 0).
   */
  isCrowded(host: string): boolean {
    return (this.hosts.get(host)?.waiters.length ?? 0) >= this.perHost || this.waiting >= this.maxWaiting
  }

  /**
   * Places left in this host's line at this worker while the host is full (calls wait for it here,
   * this worker's calls hold every slot, or the database said within FULL_LATELY_MS that every slot
   * was taken), less the calls still asking the database and so about to join; 0 when crowded.
   * Undefined while the host is not full: its calls may start at once. A claim of more for a full
   * host would be turned away, each call going back uncounted in a transaction of its own, to be
   * claimed again (the kill drill on a busy machine: two such releases for every call made).
   */
  placesAt(host: string): number | undefined {
    const state = this.hosts.get(host)
    if (!state) return undefined
    const waiting = state.waiters.length
    const busy = state.held.size - state.idle.length >= this.perHost
    if (waiting === 0 && !busy && state.fullAt <= elapsed() - FULL_LATELY_MS) {
      this.forgetIfUnused(host, state)
      return undefined
    }
    return Math.max(0, Math.min(this.perHost - waiting - state.asking, this.maxWaiting - this.waiting - this.asking))
  }

  /** Every host this worker has asked a slot of. */
  knownHosts(): IterableIterator<string> {
    return this.hosts.keys()
  }

  release(slot: HostSlot): void {
    if (slot.session !== this.currentSession) return
    const state = this.stateOf(slot.host)
    if (elapsed() - slot.lockedAt > TURN_MS) {
      void this.unlock([slot])
      if (state.waiters.length > 0) this.schedulePoll(slot.host, state)
      return
    }
    const waiter = state.waiters.shift()
    if (waiter) return waiter.grant(slot)
    state.idle.push({ slot, since: elapsed() })
    this.sweepTimer ??= setTimeout(() => this.sweep(), LINGER_MS).unref()
  }

  /** Gives up every idle slot and ends the session: the worker is stopping. */
  async close(): Promise<void> {
    clearTimeout(this.sweepTimer)
    const idle: HostSlot[] = []
    for (const state of this.hosts.values()) {
      clearTimeout(state.poll)
      for (const waiter of state.waiters.splice(0)) waiter.grant(undefined)
      idle.push(...state.idle.splice(0).map((i) => i.slot))
    }
    await this.unlock(idle)
    const session = this.session
    this.session = undefined
    this.hosts.clear()
    await session?.then((s) => s.close()).catch(this.onError)
  }

  private wait(host: string, maxWaitMs: number, signal: AbortSignal | undefined, dueAt: number): Promise<HostSlot | undefined> {
    const state = this.stateOf(host)
    return new Promise((resolve) => {
      const give = (slot: HostSlot | undefined) => {
        this.waiting -= 1
        clearTimeout(timer)
        signal?.removeEventListener('abort', giveUp)
        resolve(slot)
      }
      const waiter: Waiter = { grant: give, dueAt }
      const giveUp = () => {
        state.waiters = state.waiters.filter((w) => w !== waiter)
        give(undefined)
      }
      const timer = setTimeout(giveUp, maxWaitMs)
      signal?.addEventListener('abort', giveUp, { once: true })
      // After every waiter due no later: among the same due time, in the order they came.
      const before = state.waiters.findIndex((w) => w.dueAt > dueAt)
      state.waiters.splice(before === -1 ? state.waiters.length : before, 0, waiter)
      this.waiting += 1
      this.schedulePoll(host, state)
    })
  }

  private schedulePoll(host: string, state: HostState): void {
    state.poll ??= setTimeout(() => {
      state.poll = undefined
      void this.serveWaiters(host, state).finally(() => {
        if (state.waiters.length > 0) this.schedulePoll(host, state)
      })
    }, POLL_MS)
  }

  /**
   * Asks for a slot for each waiter, in one round trip (tryLock), until the host is full or none waits.
   * One at a time for a host: a poll that came while another's round trip was slow asked again for every
   * waiter, and the slots locked twice over sat idle here while other workers were told the host was full.
   */
  private async serveWaiters(host: string, state: HostState): Promise<void> {
    if (state.serving) return
    state.serving = true
    try {
      await this.serveEachWaiter(host, state)
    } finally {
      state.serving = false
    }
  }

  private async serveEachWaiter(host: string, state: HostState): Promise<void> {
    while (state.waiters.length > 0) {
      const slots = await Promise.all(state.waiters.map(() => this.tryLock(host)))
      let full = false
      for (const slot of slots) {
        if (slot === FULL || !slot) {
          full = true
          continue
        }
        const waiter = state.waiters.shift()
        if (waiter) waiter.grant(slot)
        else this.release(slot)
      }
      if (full) return
    }
  }

  /**
   * The first free slot of the host, FULL, or undefined when the database did not answer (logged).
   * The asks for one host that come while the session is busy go together: one round trip locks a
   * slot for each of them (lockHostSlots), as many as are free, and FULL answers the rest.
   */
  private tryLock(host: string): Promise<HostSlot | typeof FULL | undefined> {
    const state = this.stateOf(host)
    return new Promise((answer) => {
      state.asks.push(answer)
      if (state.asks.length === 1) void this.serial(() => this.lockAsked(host, state))
    })
  }

  private async lockAsked(host: string, state: HostState): Promise<void> {
    const asks = state.asks.splice(0)
    try {
      const session = await this.sessionDb()
      const { pid, slots } = await lockHostSlots(session.db, host, this.perHost, [...this.stateOf(host).held], asks.length)
      this.noteSession(pid)
      if (slots.length < asks.length) this.stateOf(host).fullAt = elapsed()
      for (const [index, answer] of asks.entries()) {
        const slot = slots[index]
        if (slot === undefined) {
          answer(FULL)
          continue
        }
        this.stateOf(host).held.add(slot)
        answer({ host, number: slot, session: pid, lockedAt: elapsed() })
      }
    } catch (error) {
      this.onError(error)
      for (const answer of asks) answer(undefined)
      // The slots the failed statement locked before it failed stay locked on a session that lives on: given back.
      try {
        const session = await this.sessionDb()
        await unlockUntrackedHostSlots(session.db, host, [...this.stateOf(host).held])
      } catch {
        // The session is gone, and its locks with it; the next ask makes a new one.
      }
    }
  }

  /** A new backend pid means the connection was lost and made again: the old locks went with it. */
  private noteSession(pid: number): void {
    if (pid !== this.currentSession) this.forgetLocks(pid)
  }

  private forgetLocks(session: number): void {
    this.currentSession = session
    for (const [host, state] of this.hosts) {
      state.held.clear()
      state.idle = []
      this.forgetIfUnused(host, state)
    }
  }

  /**
   * Forgets a host this worker holds nothing of, has no call waiting or asking for, and has not found
   * full lately: over weeks a worker calls ever more hosts (each tenant's free targets among them),
   * and each pass of the scheduler looks at every host known here (placesAt).
   */
  private forgetIfUnused(host: string, state: HostState): void {
    if (state.held.size > 0 || state.idle.length > 0 || state.waiters.length > 0 || state.poll !== undefined || state.asking > 0 || state.asks.length > 0 || state.serving) return
    if (state.fullAt > elapsed() - FULL_LATELY_MS) return
    if (this.hosts.get(host) === state) this.hosts.delete(host)
  }

  private sweep(): void {
    this.sweepTimer = undefined
    const cutoff = elapsed() - LINGER_MS
    const stale: HostSlot[] = []
    for (const state of this.hosts.values()) {
      stale.push(...state.idle.filter((i) => i.since <= cutoff).map((i) => i.slot))
      state.idle = state.idle.filter((i) => i.since > cutoff)
      if (state.idle.length > 0) this.sweepTimer ??= setTimeout(() => this.sweep(), LINGER_MS).unref()
    }
    if (stale.length > 0) void this.unlock(stale)
  }

  private unlock(slots: HostSlot[]): Promise<void> {
    return this.serial(async () => {
      const current = slots.filter((s) => s.session === this.currentSession)
      if (current.length === 0) return
      await unlockHostSlots((await this.sessionDb()).db, current)
      for (const slot of current) {
        const state = this.hosts.get(slot.host)
        state?.held.delete(slot.number)
        if (state) this.forgetIfUnused(slot.host, state)
      }
    }).catch((error: unknown) => {
      // The locks stay with the session while it lives (and are tried again as idle slots); if it is gone, so are they.
      this.onError(error)
      for (const slot of slots.filter((s) => s.session === this.currentSession)) {
        slot.lockedAt = elapsed()
        this.release(slot)
      }
    })
  }

  private serial<T>(op: () => Promise<T>): Promise<T> {
    const next = this.queue.then(op)
    this.queue = next.catch(() => undefined)
    return next
  }

  private sessionDb(): Promise<Session> {
    this.session ??= this.openSession().then((session) => {
      session.onLost(() => this.forgetLocks(-1))
      return session
    }, (error: unknown) => {
      this.session = undefined
      throw error
    })
    return this.session
  }

  private stateOf(host: string): HostState {
    let state = this.hosts.get(host)
    if (!state) {
      state = { held: new Set(), idle: [], waiters: [], poll: undefined, fullAt: -Infinity, asking: 0, asks: [], serving: false }
      this.hosts.set(host, state)
    }
    return state
  }
}
