import t from 'tap'
import { forbiddenRange, parseAllowedTargets, refusedLiteralHost } from '../../src/adapters/address-policy.js'
import { createHttpClient, TARGET_REFUSED } from '../../src/adapters/http-client.js'
import { setupApp } from '../helpers/app.js'
import { assertProblem } from '../helpers/assertions.js'
import { SERVICE } from '../modules/marketplace/fixtures/catalogue.js'

// Every form of a target webhooks must not reach, refused three times: when the operator stores the
// URL (422), by the HTTP client before it connects, and by the address classifier the two share.
// Host names are checked at connect time on what they resolve to (test/adapters/http-client.test.ts).

/** URL, the address it names once the URL parser has read it, and why it is refused. */
const REFUSED: [string, string, RegExp][] = [
  // Loopback, spelled every way the URL parser accepts.
  ['http://127.0.0.1/hook', '127.0.0.1', /loopback/],
  ['http://127.1/hook', '127.0.0.1', /loopback/],
  ['http://2130706433/hook', '127.0.0.1', /loopback/],
  ['http://0x7f000001/hook', '127.0.0.1', /loopback/],
  ['http://0177.0.0.1/hook', '127.0.0.1', /loopback/],
  ['http://0x7f.0.0.1/hook', '127.0.0.1', /loopback/],
  ['http://127.255.255.254:8080/hook', '127.255.255.254', /loopback/],
  ['http://[::1]/hook', '::1', /loopback/],
  ['http://[0:0:0:0:0:0:0:1]/hook', '::1', /loopback/],
  ['http://[::ffff:127.0.0.1]/hook', '::ffff:7f00:1', /loopback/],
  ['http://[::127.0.0.1]/hook', '::7f00:1', /loopback/],
  ['http://[64:ff9b::127.0.0.1]/hook', '64:ff9b::7f00:1', /loopback/],
  ['http://[2002:7f00:1::1]/hook', '2002:7f00:1::1', /6to4.*127\.0\.0\.1: a loopback address/],
  // Cloud metadata.
  ['http://169.254.169.254/latest/meta-data/', '169.254.169.254', /metadata/],
  ['http://2852039166/latest/meta-data/', '169.254.169.254', /metadata/],
  ['http://0xa9fea9fe/latest/meta-data/', '169.254.169.254', /metadata/],
  ['http://0251.0376.0251.0376/latest/meta-data/', '169.254.169.254', /metadata/],
  ['http://[::ffff:169.254.169.254]/latest/meta-data/', '::ffff:a9fe:a9fe', /metadata/],
  ['http://[64:ff9b::a9fe:a9fe]/latest/meta-data/', '64:ff9b::a9fe:a9fe', /metadata/],
  ['http://[2002:a9fe:a9fe::1]/latest/meta-data/', '2002:a9fe:a9fe::1', /6to4.*169\.254\.169\.254: a cloud metadata address/],
  ['http://[fd00:ec2::254]/latest/meta-data/', 'fd00:ec2::254', /metadata/],
  ['http://100.100.100.200/latest/meta-data/', '100.100.100.200', /metadata/],
  // Private networks, IPv4 and IPv6, also carried in IPv6.
  ['http://10.0.0.1/hook', '10.0.0.1', /private/],
  ['http://172.16.0.1/hook', '172.16.0.1', /private/],
  ['http://172.31.255.255/hook', '172.31.255.255', /private/],
  ['http://192.168.1.1/hook', '192.168.1.1', /private/],
  ['http://[fc00::1]/hook', 'fc00::1', /private/],
  ['http://[fd12:3456::1]/hook', 'fd12:3456::1', /private/],
  ['http://[fec0::1]/hook', 'fec0::1', /site-local/],
  ['http://[::ffff:10.0.0.1]/hook', '::ffff:a00:1', /private/],
  ['http://[64:ff9b::10.0.0.1]/hook', '64:ff9b::a00:1', /private/],
  ['http://[64:ff9b:1::a00:1]/hook', '64:ff9b:1::a00:1', /local-use NAT64/],
  // Link-local, unspecified, carrier-grade NAT.
  ['http://169.254.1.1/hook', '169.254.1.1', /link-local/],
  ['http://[fe80::1]/hook', 'fe80::1', /link-local/],
  ['http://0.0.0.0/hook', '0.0.0.0', /unspecified/],
  ['http://0/hook', '0.0.0.0', /unspecified/],
  ['http://[::]/hook', '::', /unspecified/],
  ['http://100.64.0.1/hook', '100.64.0.1', /carrier-grade NAT/],
  ['http://100.127.255.255/hook', '100.127.255.255', /carrier-grade NAT/],
  // Documentation and benchmarking ranges.
  ['http://192.0.2.1/hook', '192.0.2.1', /TEST-NET-1/],
  ['http://198.51.100.7/hook', '198.51.100.7', /TEST-NET-2/],
  ['http://203.0.113.9/hook', '203.0.113.9', /TEST-NET-3/],
  ['http://[2001:db8::1]/hook', '2001:db8::1', /documentation/],
  ['http://[3fff::1]/hook', '3fff::1', /documentation/],
  ['http://198.18.0.1/hook', '198.18.0.1', /benchmarking/],
  ['http://198.19.255.255/hook', '198.19.255.255', /benchmarking/],
  ['http://[2001:2::1]/hook', '2001:2::1', /IETF protocol assignments/],
  // Multicast, reserved, broadcast.
  ['http://224.0.0.1/hook', '224.0.0.1', /multicast/],
  ['http://239.255.255.250/hook', '239.255.255.250', /multicast/],
  ['http://[ff02::1]/hook', 'ff02::1', /multicast/],
  ['http://240.0.0.1/hook', '240.0.0.1', /reserved/],
  ['http://255.255.255.255/hook', '255.255.255.255', /broadcast/],
  // Other IANA special-purpose ranges.
  ['http://192.0.0.8/hook', '192.0.0.8', /IETF protocol assignments/],
  ['http://192.0.0.170/hook', '192.0.0.170', /IETF protocol assignments/],
  ['http://192.88.99.1/hook', '192.88.99.1', /6to4 relay/],
  ['http://192.31.196.1/hook', '192.31.196.1', /AS112/],
  ['http://192.52.193.1/hook', '192.52.193.1', /AMT/],
  ['http://192.175.48.1/hook', '192.175.48.1', /AS112/],
  ['http://[2620:4f:8000::1]/hook', '2620:4f:8000::1', /AS112/],
  ['http://[100::1]/hook', '100::1', /discard-only/],
  ['http://[2001::1]/hook', '2001::1', /Teredo/],
  ['http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/hook', '2001:0:4136:e378:8000:63bf:3fff:fdd2', /Teredo/],
  ['http://[2002:808:808::1]/hook', '2002:808:808::1', /6to4/],
  ['http://[::808:808]/hook', '::808:808', /IPv4-compatible/],
  ['http://[5f00::1]/hook', '5f00::1', /outside the global unicast range/],
  ['http://[4000::1]/hook', '4000::1', /outside the global unicast range/]
]

/** Public addresses, also carried in IPv6, and names: these are stored and called. */
const ALLOWED = [
  'https://8.8.8.8/hook', 'https://1.1.1.1/hook', 'http://93.184.216.34/hook', 'http://172.32.0.1/hook', 'http://100.128.0.1/hook',
  'http://11.0.0.1/hook', 'http://192.0.1.1/hook', 'http://198.20.0.1/hook', 'http://[2606:4700:4700::1111]/hook',
  'http://[2001:4860:4860::8888]/hook', 'http://[::ffff:8.8.8.8]/hook', 'http://[64:ff9b::8.8.8.8]/hook', 'https://provider.example/hook',
  'https://localhost.example/hook'
]

const GUARD_ON = { allowPrivateNetworks: false, allowed: parseAllowedTargets('') }

t.test('the classifier refuses every address of the corpus and lets public ones through', async (t) => {
  for (const [url, address, reason] of REFUSED) {
    t.equal(new URL(url).hostname.replace(/^\[|\]$/g, ''), address, `${url} names ${address}`)
    t.match(forbiddenRange(address), reason, `${address} is refused`)
    t.match(refusedLiteralHost(new URL(url).hostname, GUARD_ON), reason, `${url} is refused before any lookup`)
  }
  for (const url of ALLOWED) t.equal(refusedLiteralHost(new URL(url).hostname, GUARD_ON), undefined, `${url} may be called`)
  t.comment(`SSRF corpus: ${REFUSED.length} refused URL forms, ${ALLOWED.length} allowed`)
})

t.test('the HTTP client refuses every URL of the corpus before connecting', async (t) => {
  const http = createHttpClient({ maxBodyBytes: 1024, maxSockets: 4, userAgent: 'Baton/test' })
  t.teardown(() => http.close())
  for (const [url, , reason] of REFUSED) {
    const error = await http.send({ method: 'GET', url, headers: {}, timeoutMs: 1000 }).then(() => undefined, (e: unknown) => e)
    t.match(error, { code: TARGET_REFUSED, message: reason }, url)
  }
})

t.test('the API refuses to store them: 422 on create and on update', async (t) => {
  const { operator, db } = await setupApp(t)
  const service = await operator.post('/v1/marketplace-services', SERVICE)
  for (const [url, , reason] of REFUSED) {
    const created = await operator.post('/v1/marketplace-services', { ...SERVICE, webhookUrl: url })
    assertProblem(t, created, 422, reason)
    t.equal(created.data.errors[0].pointer, '/body/webhookUrl')
    assertProblem(t, await operator.patch(`/v1/marketplace-services/${service.data.id}`, { webhookUrl: url }), 422, reason)
  }
  for (const url of ALLOWED) t.equal((await operator.post('/v1/marketplace-services', { ...SERVICE, webhookUrl: url })).statusCode, 201, url)
  const stored = await db.selectFrom('marketplace_services').select('webhook_url').execute()
  t.equal(stored.length, ALLOWED.length + 1, 'nothing refused was stored')
})

t.test('control characters and surrounding or inner spaces are 422, never stored', async (t) => {
  const { operator, db } = await setupApp(t)
  const service = await operator.post('/v1/marketplace-services', SERVICE)
  const cases: [string, RegExp][] = [
    ['https://provider.example/hook\r\nX-Injected: 1', /control characters/],
    ['https://provider.example/ho\tok', /control characters/],
    ['https://provider.example/hook\u0000', /control characters/],
    ['https://provider.example/hook\u0085', /control characters/],
    ['https://provider.example/\u202Ekoob', /control characters/],
    [' https://provider.example/hook', /start or end with spaces/],
    ['https://provider.example/hook ', /start or end with spaces/],
    ['https://provider.example/hook\u00A0', /start or end with spaces/],
    ['https://provider.example/a hook', /must not contain spaces/]
  ]
  for (const [url, reason] of cases) {
    assertProblem(t, await operator.post('/v1/marketplace-services', { ...SERVICE, webhookUrl: url }), 422, reason)
    assertProblem(t, await operator.patch(`/v1/marketplace-services/${service.data.id}`, { webhookUrl: url }), 422, reason)
  }
  const urls = (await db.selectFrom('marketplace_services').select('webhook_url').execute()).map((r) => r.webhook_url)
  t.same(urls, [SERVICE.webhookUrl])
})

t.test('the API reads WEBHOOK_ALLOW_PRIVATE_NETWORKS and WEBHOOK_ALLOWED_TARGETS as the worker does', async (t) => {
  const open = await setupApp(t, { WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'true' })
  for (const [url] of REFUSED) t.equal((await open.operator.post('/v1/marketplace-services', { ...SERVICE, webhookUrl: url })).statusCode, 201, `${url} with private networks allowed`)

  const listed = await setupApp(t, { WEBHOOK_ALLOWED_TARGETS: '127.0.0.0/8,fd00::/8,10.1.0.0/16' })
  for (const url of ['http://127.0.0.1:8080/hook', 'http://[::ffff:127.0.0.1]/hook', 'http://[fd12::1]/hook', 'http://10.1.2.3/hook']) {
    t.equal((await listed.operator.post('/v1/marketplace-services', { ...SERVICE, webhookUrl: url })).statusCode, 201, `${url} is listed`)
  }
  for (const url of ['http://10.0.0.1/hook', 'http://169.254.169.254/', 'http://[::1]/hook']) {
    assertProblem(t, await listed.operator.post('/v1/marketplace-services', { ...SERVICE, webhookUrl: url }), 422)
  }

  // A tenant's own target gets none of what the operator allowed for marketplace services.
  const tenant = await listed.newTenant()
  const template = await tenant.client.post('/v1/process-templates', { name: 'Free targets' })
  const step = (url: string) => tenant.client.post(`/v1/process-templates/${template.data.id}/steps`, {
    kind: 'webhook', name: 'Own target', start: { mode: 'afterPrevious' }, responsibility: 'processResponsible',
    target: { url, secret: `whsec_${Buffer.alloc(32, 7).toString('base64')}`, delivery: 'json' }
  })
  for (const url of ['http://127.0.0.1:8080/hook', 'http://[fd12::1]/hook', 'http://10.1.2.3/hook']) {
    assertProblem(t, await step(url), 422, /own target may not call \(WEBHOOK_ALLOWED_TARGETS opens addresses to marketplace services only\)/)
  }
  t.equal((await step('https://crm.example/hook')).statusCode, 201, 'a public one is stored')
})
