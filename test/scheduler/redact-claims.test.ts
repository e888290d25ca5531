import t from 'tap'
import { hostBusyDelayMs, redactClaims } from '../../src/scheduler/deliver.js'

t.test('a delivery deferred for a busy host waits longer each time, up to 30 s', async (t) => {
  const delays = [0, 1, 2, 3, 4, 5, 9].map((waits) => hostBusyDelayMs({ fence: 3 + waits, attempt: 3 }, 0.5))
  t.same(delays, [1000, 2000, 4000, 8000, 16000, 30000, 30000])
  t.equal(hostBusyDelayMs({ fence: 1, attempt: 1 }, 0), 500, 'jitter spreads it from half...')
  t.equal(hostBusyDelayMs({ fence: 1, attempt: 1 }, 0.999), 1499, '...to one and a half times')
})

t.test('a claim echoed in a response body is not kept in the attempt log', async (t) => {
  const echoed = 'GET /hook?apiClaim=bcl_eyJ2IjoxfQ.abc-DEF_123&signature=ff failed; token bcl_eyJ2IjoxfQ'
  t.equal(redactClaims(echoed), 'GET /hook?apiClaim=bcl_[redacted]&signature=ff failed; token bcl_[redacted]')
})
