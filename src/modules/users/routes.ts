import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { ModuleOptions } from '../module-options.js'
import { setCreatedLocation } from '../../lib/location.js'
import { pageRequest } from '../../lib/pagination.js'
import { tenantOf } from '../../plugins/auth.js'
import { IdParamsSchema, noContent, ok, Page, problems } from '../../schemas/common.js'
import { CreateUserSchema, ListUsersQuerySchema, UpdateUserSchema, UserSchema } from './schemas.js'
import * as users from './service.js'

const User = Type.Ref('User')

export default async function userRoutes(fastify: FastifyInstance, { db, clock }: ModuleOptions): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  app.addSchema(UserSchema)
  const tags = ['users']

  app.post('/users', {
    schema: {
      operationId: 'createUser', tags, summary: 'Create a user', body: CreateUserSchema,
      response: { 201: ok(User, 'The created user', ['Location']), ...problems(400, 401, 403, 409, 422) }
    }
  }, async (request, reply) => {
    const user = await users.createUser(db, tenantOf(request), request.body)
    setCreatedLocation(request, reply, user.id)
    return reply.code(201).send(user)
  })

  app.get('/users', {
    schema: {
      operationId: 'listUsers', tags, summary: 'List users', querystring: ListUsersQuerySchema,
      response: { 200: ok(Page(User), 'A page of users'), ...problems(400, 401, 403) }
    }
  }, async (request) => users.listUsers(db, tenantOf(request), pageRequest(request), request.query))

  app.get('/users/:id', {
    schema: {
      operationId: 'getUser', tags, summary: 'Get a user', params: IdParamsSchema,
      response: { 200: ok(User, 'The user'), ...problems(400, 401, 403, 404) }
    }
  }, async (request) => users.getUser(db, tenantOf(request), request.params.id))

  app.patch('/users/:id', {
    schema: {
      operationId: 'updateUser', tags, summary: 'Update a user', params: IdParamsSchema, body: UpdateUserSchema,
      description: 'An update that changes nothing answers with the user as it was: its updatedAt stays.',
      response: { 200: ok(User, 'The updated user'), ...problems(400, 401, 403, 404, 409, 422) }
    }
  }, async (request) => users.updateUser(db, clock, tenantOf(request), request.params.id, request.body))

  app.delete('/users/:id', {
    schema: {
      operationId: 'deleteUser', tags, summary: 'Delete a user no template, record or process uses', params: IdParamsSchema,
      response: { 204: noContent('The user is deleted'), ...problems(400, 401, 403, 404, 409) }
    }
  }, async (request, reply) => {
    await users.deleteUser(db, tenantOf(request), request.params.id)
    return reply.code(204).send(null)
  })
}
