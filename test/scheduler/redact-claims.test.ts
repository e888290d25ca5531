import t from 'tap'
import { redactClaims } from '../../src/scheduler/deliver.js'

t.test('a claim echoed in a response body is not kept in the attempt log', async (t) => {
  const echoed = 'GET /hook?apiClaim=bcl_eyJ2IjoxfQ.abc-DEF_123&signature=ff failed; token bcl_eyJ2IjoxfQ'
  t.equal(redactClaims(echoed), 'GET /hook?apiClaim=bcl_[redacted]&signature=ff failed; token bcl_[redacted]')
})

t.test('a claim echoed percent-encoded is not kept either', async (t) => {
  const echoed = 'GET /hook?apiClaim=bcl%5FeyJ2IjoxfQ.abc-DEF%5F123&x=1 and bcl%5feyJ2IjoxfQ%2Eabc'
  t.equal(redactClaims(echoed), 'GET /hook?apiClaim=bcl_[redacted]&x=1 and bcl_[redacted]')
})
