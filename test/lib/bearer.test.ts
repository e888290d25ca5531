import { createHash } from 'node:crypto'
import type { FastifyRequest } from 'fastify'
import t from 'tap'
import { bearerOf } from '../../src/lib/bearer.js'

const request = (authorization?: string) => ({ headers: authorization === undefined ? {} : { authorization } }) as FastifyRequest
const sha256 = (text: string) => createHash('sha256').update(text).digest('hex')

t.test('the bearer key and its hash, as the key is stored', async (t) => {
  t.same(bearerOf(request('Bearer btk_abc')), { key: 'btk_abc', hash: sha256('btk_abc') })
  t.same(bearerOf(request('bearer  btk_abc ')), { key: 'btk_abc', hash: sha256('btk_abc') }, 'the scheme in any case, spaces around the key')
})

t.test('no key: no header, another scheme, or more than one word', async (t) => {
  for (const header of [undefined, '', 'Basic dXNlcjpwYXNz', 'Bearer', 'Bearer a b', 'btk_abc']) {
    t.equal(bearerOf(request(header)), undefined, JSON.stringify(header))
  }
})

t.test('worked out once a request: the rate limits and the authentication share it', async (t) => {
  const one = request('Bearer btk_one')
  t.equal(bearerOf(one), bearerOf(one), 'the same answer, not a second hash')
  const none = request()
  t.equal(bearerOf(none), undefined)
  t.equal(bearerOf(none), undefined, 'a request without a key stays without one')
  t.not(bearerOf(request('Bearer btk_one')), bearerOf(one), 'another request has its own')
})
