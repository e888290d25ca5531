import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'

/**
 * From the signal on, every answer says `Connection: close`. A connection kept alive through
 * SHUTDOWN_DELAY_MS was closed as idle when the listener closed, while its client (a load balancer's
 * pool) could be sending on it: the request met a reset, never served, and a POST's client could not
 * tell. Closed after an answer, the client opens a new connection, served until the listener closes.
 */
async function drainingPlugin(app: FastifyInstance, { stopping }: { stopping: () => boolean }): Promise<void> {
  app.addHook('onSend', (_request, reply, payload, done) => {
    if (stopping()) void reply.header('connection', 'close')
    done(null, payload)
  })
}

export default fp(drainingPlugin, { name: 'draining' })
