import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { noneMatchNames } from '../lib/versioning.js'

const inFull = new WeakSet<FastifyReply>()

/**
 * This answer is sent in full whatever If-None-Match says: what it shows may change, or differ from
 * another answer with its ETag, without its version moving on (a process while the scheduler holds a
 * call of it, a service as one tenant sees it), and a 304 would leave a client with a copy it believes current.
 */
export function answerInFull(reply: FastifyReply): void {
  inFull.add(reply)
}

/**
 * A 200 to a GET or HEAD whose If-None-Match names its ETag becomes 304 Not Modified (RFC 9110 13.1.2,
 * 15.4.5): a client polling a process with the ETag it holds is not sent the same body again. The 304 keeps
 * the 200's other headers (ETag among them) but not the body's Content-Type and Content-Length. A request
 * without If-None-Match costs one header look-up.
 */
function notModified(request: FastifyRequest, reply: FastifyReply, payload: unknown, done: (err: null, payload: unknown) => void): void {
  const ifNoneMatch = request.headers['if-none-match']
  if (ifNoneMatch !== undefined && reply.statusCode === 200 && !inFull.has(reply)) {
    const etag = reply.getHeader('etag')
    if (typeof etag === 'string' && noneMatchNames(ifNoneMatch, etag)) {
      void reply.code(304)
      reply.removeHeader('content-type')
      reply.removeHeader('content-length')
      done(null, null)
      return
    }
  }
  done(null, payload)
}

/**
 * Adds the check to the GET routes registered after this plugin and to the HEAD routes Fastify makes of
 * them. A HEAD route's last onSend hook sets Content-Length to the body's size (and cannot take the null
 * payload of a 304): the check runs after it, and takes that Content-Length away.
 */
async function conditionalGetPlugin(app: FastifyInstance): Promise<void> {
  app.addHook('onRoute', (route) => {
    const methods = [route.method].flat()
    if (!methods.includes('GET') && !methods.includes('HEAD')) return
    route.onSend = [route.onSend ?? []].flat().concat(notModified)
  })
}

export default fp(conditionalGetPlugin, { name: 'conditional-get' })
