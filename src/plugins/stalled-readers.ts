import type { ServerResponse } from 'node:http'
import { Socket } from 'node:net'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'

export interface StalledReadersOptions {
  /** How long an answer may make no progress while part of it waits in memory for its client. */
  timeoutMs: number
}

/** An answer up to this size goes into the kernel's socket buffers whole, and holds none of the process's memory. */
const SMALL_ANSWER_BYTES = 64 * 1024

/**
 * A client that stops reading a large answer is cut off once nothing has moved for `timeoutMs` while
 * part of the answer waits in the process's memory. Node gives a response no time limit: 1,000
 * connections that each asked for a page of large records and read nothing held 430 KB each (the API's
 * RSS from 153 to 584 MB) for as long as they stayed open. A wait with nothing left to send is Baton's
 * own (a page read from the database in parts): the answer waits again. The watch ends with the
 * answer: Node then times the kept-alive connection as before.
 */
async function stalledReadersPlugin(app: FastifyInstance, options: StalledReadersOptions): Promise<void> {
  app.addHook('onSend', (_request, reply, payload, done) => {
    if (isLarge(payload)) watchWhileSending(reply.raw, options.timeoutMs)
    done(null, payload)
  })
}

function isLarge(payload: unknown): boolean {
  if (typeof payload === 'string') return payload.length > SMALL_ANSWER_BYTES / 4 // a character is at most 4 bytes of UTF-8
  if (Buffer.isBuffer(payload)) return payload.length > SMALL_ANSWER_BYTES
  return typeof (payload as { pipe?: unknown } | null)?.pipe === 'function'
}

function watchWhileSending(response: ServerResponse, timeoutMs: number): void {
  const socket = response.socket
  // Not a connection of the server's (light-my-request's inject): nothing to cut off.
  if (!(socket instanceof Socket)) return
  // A listener of the response's own keeps Node from closing the connection at the first timeout.
  response.on('timeout', () => {
    if (socket.writableLength > 0) socket.destroy()
    else socket.setTimeout(timeoutMs)
  })
  socket.setTimeout(timeoutMs)
}

export default fp(stalledReadersPlugin, { name: 'stalled-readers' })
