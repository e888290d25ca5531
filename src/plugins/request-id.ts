import type { IncomingHttpHeaders } from 'node:http'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { REQUEST_ID_HEADER, requestIdFrom } from '../lib/request-id.js'

/** Fastify's `genReqId`: the request's id is the client's X-Request-Id when usable, a new UUID otherwise. */
export function genReqId(request: { headers: IncomingHttpHeaders }): string {
  return requestIdFrom(request.headers[REQUEST_ID_HEADER])
}

/**
 * Every answer names its request in X-Request-Id (problems also in `requestId`), and every log line
 * of the request carries it as `requestId`: a client quotes it, an operator finds the lines.
 */
async function requestIdPlugin(app: FastifyInstance): Promise<void> {
  app.addHook('onRequest', (request, reply, done) => {
    reply.header(REQUEST_ID_HEADER, request.id)
    done()
  })
}

export default fp(requestIdPlugin, { name: 'request-id' })
