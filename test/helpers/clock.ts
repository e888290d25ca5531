import type { Clock } from '../../src/adapters/clock.js'

/** A clock tests move by hand. */
export class TestClock implements Clock {
  private current: number

  constructor(start: Date | string = '2026-03-02T09:00:00.000Z') {
    this.current = new Date(start).getTime()
  }

  now(): Date {
    return new Date(this.current)
  }

  advance(ms: number): void {
    this.current += ms
  }

  set(to: Date | string): void {
    this.current = new Date(to).getTime()
  }
}

export const MINUTE = 60_000
export const HOUR = 60 * MINUTE
export const DAY = 24 * HOUR
