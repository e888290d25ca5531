import t from 'tap'
import { compileSchemasEagerly } from '../../src/plugins/validation.js'
import { setupApp } from '../helpers/app.js'

// The app compiles a route's validators and serializers on its first request (src/plugins/validation.ts).
// Compiled all at once here, a schema that cannot be compiled fails the suite instead of a first request.
t.test('every route schema compiles', async (t) => {
  compileSchemasEagerly(true)
  t.teardown(() => compileSchemasEagerly(false))
  const { app, operator } = await setupApp(t)
  t.ok(app.printRoutes().length > 0, 'the app booted with every validator and serializer compiled')
  const answer = await operator.post('/v1/tenants', { name: 'Eager', webId: 'eager' })
  t.equal(answer.statusCode, 201, 'an eagerly compiled route answers as a lazy one does')
})

t.test('a lazily compiled route validates, coerces and serializes on its first request', async (t) => {
  const { operator } = await setupApp(t)
  const bad = await operator.post('/v1/tenants', { name: 'x', webId: 5 })
  t.equal(bad.statusCode, 400, 'a body of the wrong type is refused on the first call')
  t.same(bad.data.errors, [{ pointer: '/body/webId', detail: 'must be a string' }])
  const again = await operator.post('/v1/tenants', { name: 'x' })
  t.equal(again.statusCode, 400, 'and on the next, with the errors of that call')
  t.match(again.data.errors, [{ pointer: '/body', detail: /webId/ }])
  t.notMatch(JSON.stringify(again.data.errors), /must be a string/, 'the errors are not those of the call before')
  const list = await operator.get('/v1/tenants?limit=2')
  t.equal(list.statusCode, 200, 'a query string is coerced to its types')
  t.ok(Array.isArray(list.data.items))
})
