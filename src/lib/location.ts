import type { FastifyReply, FastifyRequest } from 'fastify'
import { setETag } from './versioning.js'

/** Location of a resource a POST created in the collection it was posted to: that path and the new id. */
export function setCreatedLocation(request: FastifyRequest, reply: FastifyReply, id: string): void {
  const collection = (request.url.split('?')[0] ?? request.url).replace(/\/+$/, '')
  void reply.header('location', `${collection}/${id}`)
}

/**
 * The answer's status and headers to a create that honours an Idempotency-Key: 201 with its ETag and
 * Location, or, when an earlier create with the key made it (`created` false), 200 with the same and
 * `Idempotent-Replayed: true`.
 */
export function markCreated(request: FastifyRequest, reply: FastifyReply, resource: { id: string; version: number }, created: boolean): void {
  setETag(reply, resource.version)
  setCreatedLocation(request, reply, resource.id)
  if (!created) void reply.header('idempotent-replayed', 'true')
  void reply.code(created ? 201 : 200)
}
