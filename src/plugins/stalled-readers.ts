import type { ServerResponse } from 'node:http'
import { Socket } from 'node:net'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'

interface StalledReadersOptions {
  /** How long an answer may make no progress while part of it waits in memory for its client. */
  timeoutMs: number
}

/** An answer up to this size goes into the kernel's socket buffers whole, and holds none of the process's memory. */
const SMALL_ANSWER_BYTES = 64 * 1024

/**
 * A client that stops reading a large answer is cut off once nothing has moved for `timeoutMs` while
 * part of it waits in the process's memory. Node gives a response no time limit: 1,000 connections that
 * each asked for a page of large records and read nothing held 430 KB each (the API's RSS from 153 to
 * 584 MB) for as long as they stayed open. A wait with nothing waiting to be sent is Baton's own (a page
 * read from the database in parts, an answer queued behind a slower one on a pipelining connection): not
 * a stall. The watch is a timer of its own, not the socket's timeout, which Node sets for kept-alive
 * connections and which would outlive the answer for the next one on the connection.
 */
async function stalledReadersPlugin(app: FastifyInstance, options: StalledReadersOptions): Promise<void> {
  app.addHook('onSend', (request, reply, payload, done) => {
    // The request's socket: a pipelined answer queued behind another has none of its own yet.
    const socket = request.raw.socket
    // Not a connection of the server's (light-my-request's inject): nothing to cut off.
    if (isLarge(payload) && socket instanceof Socket) watchWhileSending(reply.raw, socket, options.timeoutMs)
    done(null, payload)
  })
}

function isLarge(payload: unknown): boolean {
  if (typeof payload === 'string') return payload.length > SMALL_ANSWER_BYTES / 4 // a character is at most 4 bytes of UTF-8
  if (Buffer.isBuffer(payload)) return payload.length > SMALL_ANSWER_BYTES
  return typeof (payload as { pipe?: unknown } | null)?.pipe === 'function'
}

function watchWhileSending(response: ServerResponse, socket: Socket, timeoutMs: number): void {
  // What waits in memory for the client: in the stream's buffer, and the part of the write libuv is
  // handing to the kernel (one write of a whole answer can take long to drain to a slow reader: without
  // it, a client reading steadily looked stalled until the write ended).
  // Writes that ended count as progress too (bytesWritten counts what waits in memory as well): a new
  // part of a page added meanwhile may leave more waiting than before.
  const waiting = () => socket.writableLength + writeQueueSize(socket)
  const written = () => socket.bytesWritten - socket.writableLength
  let last = { waiting: waiting(), written: written(), buffered: socket.writableLength }
  let movedAt = performance.now()
  const timer = setInterval(() => {
    if (socket.destroyed) return stop()
    const now = { waiting: waiting(), written: written() }
    // A write that ended counts only while no more came to wait (a string's characters and its bytes
    // differ in the two counts, so a part added moves `written` too).
    const ended = now.written > last.written && socket.writableLength <= last.buffered
    if (now.waiting === 0 || now.waiting < last.waiting || ended) movedAt = performance.now()
    last = { ...now, buffered: socket.writableLength }
    if (now.waiting > 0 && performance.now() - movedAt >= timeoutMs) {
      socket.destroy()
      stop()
    }
  }, Math.max(timeoutMs / 4, 10)).unref()
  const stop = () => clearInterval(timer)
  response.once('finish', stop)
  response.once('close', stop)
}

/**
 * The bytes of the socket's writes libuv has not yet handed to the kernel (Node's own count, on its
 * handle). It moves when the kernel has room again, about half a send buffer at a time: a client
 * reading slower than that per `timeoutMs` looks stalled. Plain TCP only, as Baton serves it (a TLS
 * socket's own handle does not move; TLS ends in front of Baton).
 */
function writeQueueSize(socket: Socket): number {
  const size = (socket as unknown as { _handle?: { writeQueueSize?: unknown } | null })._handle?.writeQueueSize
  return typeof size === 'number' ? size : 0
}

export default fp(stalledReadersPlugin, { name: 'stalled-readers' })
