import t from 'tap'
import { redactClaims } from '../../src/scheduler/deliver.js'

t.test('a claim echoed in a response body is not kept in the attempt log', async (t) => {
  const echoed = 'GET /hook?apiClaim=bcl_eyJ2IjoxfQ.abc-DEF_123&signature=ff failed; token bcl_eyJ2IjoxfQ'
  t.equal(redactClaims(echoed), 'GET /hook?apiClaim=bcl_[redacted]&signature=ff failed; token bcl_[redacted]')
})
