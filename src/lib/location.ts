import type { FastifyReply, FastifyRequest } from 'fastify'

/** Location of a resource a POST created in the collection it was posted to: that path and the new id. */
export function setCreatedLocation(request: FastifyRequest, reply: FastifyReply, id: string): void {
  const collection = (request.url.split('?')[0] ?? request.url).replace(/\/+$/, '')
  void reply.header('location', `${collection}/${id}`)
}
