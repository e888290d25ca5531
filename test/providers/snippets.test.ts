import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { phpQueryKeyProblem } from '../../src/modules/marketplace/services/webhook-url.js'
import { signQueryUrl, standardWebhookSignature } from '../../src/scheduler/signature.js'
import { ROOT, runBash } from '../helpers/process.js'
import { runNode, runPython, startPhp, type Case, type Scheme } from './harness.js'
import { codeBlocks, onlyBlock, providersSection, subsection } from './readme-snippets.js'
import { captureRealCalls, type CapturedCall } from './real-calls.js'

// The README's promise to providers: every snippet it shows verifies Baton's real calls, and only them.
const section = await providersSection()
const snippets: Record<Scheme, Record<'php' | 'js' | 'python', string>> = {
  query: { php: '', js: '', python: '' },
  json: { php: '', js: '', python: '' }
}
for (const [scheme, heading] of [['query', 'Verifying a query call'], ['json', 'Verifying a json call']] as const) {
  const text = subsection(section, heading)
  for (const language of ['php', 'js', 'python'] as const) snippets[scheme][language] = onlyBlock(text, language)
}

const calls = await captureRealCalls(t)
const dir = await mkdtemp(join(tmpdir(), 'baton-snippets-'))
t.teardown(() => rm(dir, { recursive: true, force: true }))

const withUrl = (call: CapturedCall, url: string): CapturedCall => ({ ...call, url })
const withBody = (call: CapturedCall, body: string): CapturedCall => ({ ...call, body })
const otherSecret = `whsec_${randomBytes(32).toString('base64')}`
const { query, json } = calls

/** Each case with the verdict a correct provider reaches. */
const queryCases: [string, Case, 'valid' | 'invalid'][] = [
  ['a step call (umlauts, &, ~, %, + and / in a parameter; the webhook URL has a query of its own)', { call: query.step, secret: query.previousSecret }, 'valid'],
  ['a trigger call', { call: query.trigger, secret: query.previousSecret }, 'valid'],
  ['a call after a rotation, with the new secret', { call: query.afterRotation, secret: query.secret }, 'valid'],
  ['a call after a rotation, with the old secret', { call: query.afterRotation, secret: query.previousSecret }, 'invalid'],
  ['a step call with another estateId', { call: withUrl(query.step, query.step.url.replace(/estateId=[^&]+/, 'estateId=0badf00d')), secret: query.previousSecret }, 'invalid'],
  ['a trigger call with a parameter added', { call: withUrl(query.trigger, query.trigger.url.replace('&signature=', '&mode=quick&signature=')), secret: query.previousSecret }, 'invalid'],
  ['a step call checked with another secret', { call: query.step, secret: otherSecret }, 'invalid']
]
const jsonCases: [string, Case, 'valid' | 'invalid'][] = [
  ['a step call (typed parameters, umlauts)', { call: json.step, secret: json.previousSecret }, 'valid'],
  ['a trigger call', { call: json.trigger, secret: json.previousSecret }, 'valid'],
  ['a call during a rotation, with the new secret', { call: json.duringRotation, secret: json.secret }, 'valid'],
  ['a call during a rotation, with the old secret', { call: json.duringRotation, secret: json.previousSecret }, 'valid'],
  ['a call signed ten minutes ago', { call: json.stale, secret: json.previousSecret }, 'invalid'],
  ['a step call with its body changed', { call: withBody(json.step, json.step.body.replace('Käufer Köln', 'Käufer Bonn')), secret: json.previousSecret }, 'invalid'],
  ['a trigger call with another webhook-id', { call: { ...json.trigger, headers: { ...json.trigger.headers, 'webhook-id': 'another' } }, secret: json.previousSecret }, 'invalid'],
  ['a trigger call checked with another secret', { call: json.trigger, secret: otherSecret }, 'invalid']
]

// The conformance vectors and the README's own example URL, for the snippets that take a URL.
const vectors = (JSON.parse(await readFile(join(ROOT, 'test/fixtures/signature-vectors.json'), 'utf8')) as { vectors: { name: string; sentUrl: string; secret: string }[] }).vectors
const exampleUrl = codeBlocks(subsection(section, 'How a call looks'), 'text')[0]!.match(/^GET (\S+)/)![1]!
const exampleSecret = section.match(/With the secret `(whsec_[^`]+)` that URL verifies/)![1]!
const urlOnly = (url: string, secret: string): Case => ({ call: { method: 'GET', url, headers: {}, body: '' }, secret })
const urlCases: [string, Case, 'valid' | 'invalid'][] = [
  ...vectors.map((v): [string, Case, 'valid'] => [`the conformance vector "${v.name}"`, urlOnly(v.sentUrl, v.secret), 'valid']),
  ['the README example URL with the README secret', urlOnly(exampleUrl, exampleSecret), 'valid'],
  ['the README example URL with another secret', urlOnly(exampleUrl, otherSecret), 'invalid']
]

function check(t: Test, cases: [string, Case, string][], verdicts: string[]) {
  t.equal(verdicts.length, cases.length, 'one verdict per call')
  cases.forEach(([what, , expected], i) => t.equal(verdicts[i], expected, `${what}: ${expected}`))
}

t.test('the Node.js snippets verify real calls and refuse tampered ones', async (t) => {
  const all = [...queryCases, ...urlCases]
  check(t, all, await runNode(dir, snippets.query.js, 'query', all.map(([, c]) => c)))
  check(t, jsonCases, await runNode(dir, snippets.json.js, 'json', jsonCases.map(([, c]) => c)))
})

t.test('the Python snippets verify real calls and refuse tampered ones', async (t) => {
  const all = [...queryCases, ...urlCases]
  check(t, all, await runPython(dir, snippets.query.python, 'query', all.map(([, c]) => c)))
  check(t, jsonCases, await runPython(dir, snippets.json.python, 'json', jsonCases.map(([, c]) => c)))
})

t.test('the PHP snippets, run by PHP\'s web server, verify real calls and refuse tampered ones', async (t) => {
  const php = await startPhp(dir, { query: snippets.query.php, json: snippets.json.php })
  t.teardown(php.stop)
  // PHP sees the scheme of its own server, so only the http:// vectors apply.
  const all = [...queryCases, ...urlCases.filter(([, c]) => c.call.url.startsWith('http:'))]
  check(t, all, await php.run(all.map(([, c]) => c)))
  check(t, jsonCases, await php.run(jsonCases.map(([, c]) => c)))
})

// The rule on a query webhook URL's own keys, held against PHP itself.
t.test('PHP verifies calls to the webhook URLs Baton accepts for query delivery, and not to those it refuses', async (t) => {
  const accepted = ['?a=1&b-c=2', '?a]b=1&%E2%82%AC=2&a%09b=3', '?x=a.b+c[d]%00&y=']
  // A lone opts[a]=1 happens to verify, as http_build_query writes PHP's array back alike; not so with [], beside opts2 or beside a plain a.
  const refused = ['?api.key=abc', '?a[]=1&a[]=2', '?opts[a]=1&opts2=2', '?a[b]=1&a=2', '?my%20key=1', '?my+key=1', '?=1', '?+lead=1', '?a[b=1', '?a%00b=1']
  const params = { customerWebId: '48213', stepId: 'a-step', timestamp: '1764300000', note: 'Grüße a.b [c]' }
  const signed = (query: string) => urlOnly(signQueryUrl(`http://provider.example/hook.php${query}`, params, otherSecret).url, otherSecret)
  const cases: [string, Case, 'valid' | 'invalid'][] = [
    ...accepted.map((query): [string, Case, 'valid'] => [`accepted ${query}`, signed(query), 'valid']),
    ...refused.map((query): [string, Case, 'invalid'] => [`refused ${query}`, signed(query), 'invalid'])
  ]
  for (const query of accepted) t.equal(phpQueryKeyProblem(`http://provider.example/hook.php${query}`), undefined, `${query} is accepted`)
  for (const query of refused) t.ok(phpQueryKeyProblem(`http://provider.example/hook.php${query}`), `${query} is refused`)
  const php = await startPhp(dir, { query: snippets.query.php, json: snippets.json.php })
  t.teardown(php.stop)
  check(t, cases, await php.run(cases.map(([, c]) => c)))
})

// onOffice tells its providers to sort with ksort($params), whose default flags compare two numeric keys
// as numbers: a URL whose own keys that sorts otherwise than by bytes is refused for query delivery.
t.test('a query URL whose own keys PHP\'s plain ksort() orders otherwise is refused; those it orders by bytes verify', async (t) => {
  const accepted = ['?9=a&x=1', '?1=a&2=b&3=c', '?-10=a&-5=b', '?09=a&10=b', '?1e3=a&abc=b', '?1e1=a&10=b']
  const refused = ['?9=a&10=b', '?10=a&9=b', '?1e3=a&999=b', '?1=a&2=b&10=c', '?2=a&10=b&x=c', '?%0910=a&9=b']
  const params = { customerWebId: '48213', stepId: 'a-step', timestamp: '1764300000' }
  // As $_GET would hold the query: parse_str; then the check as onOffice shows it, with plain ksort().
  const verify = `parse_str($argv[1], $p); $s = $p['signature']; unset($p['signature']); ksort($p);
    echo hash_equals(hash_hmac('sha256', 'http://provider.example/hook.php?' . http_build_query($p), $argv[2]), $s) ? 'valid' : 'invalid';`
  const verdict = (query: string) => {
    const sent = new URL(signQueryUrl(`http://provider.example/hook.php${query}`, params, otherSecret).url)
    return execFileSync('php', ['-r', verify, '--', sent.search.slice(1), otherSecret], { encoding: 'utf8' })
  }
  for (const query of accepted) {
    t.equal(phpQueryKeyProblem(`http://provider.example/hook.php${query}`), undefined, `${query} is accepted`)
    t.equal(verdict(query), 'valid', `${query}: plain ksort() verifies the call`)
  }
  for (const query of refused) {
    t.match(phpQueryKeyProblem(`http://provider.example/hook.php${query}`), /ksort\(\) orders the query keys .* by their numbers/, `${query} is refused`)
    t.equal(verdict(query), 'invalid', `${query}: plain ksort() could not verify it`)
  }
})

t.test('the README examples are what Baton sends', async (t) => {
  const names = (url: string) => [...new URL(url).searchParams.keys()]
  const ownParameters = ['v', 'note']
  t.same(names(exampleUrl), names(query.step.url).filter((name) => !ownParameters.includes(name)), 'the example URL has a step call\'s parameters, in the same order')

  const text = subsection(section, 'How a call looks')
  const body = onlyBlock(text, 'json').trim()
  t.same(Object.keys(JSON.parse(body) as object), Object.keys(JSON.parse(json.trigger.body) as object), 'the example body has a trigger call\'s fields, in the same order')
  const header = (name: string) => codeBlocks(text, 'text')[1]!.match(new RegExp(`^${name}: (.+)$`, 'm'))![1]!
  const jsonSecret = text.match(/verifies with the secret\s+`(whsec_[^`]+)`/)![1]!
  t.equal(header('webhook-signature'), standardWebhookSignature(jsonSecret, header('webhook-id'), Number(header('webhook-timestamp')), body),
    'the example signature is right for the example secret')
  t.equal(header('webhook-id'), JSON.parse(body).deliveryId)
})

t.test('the README curl write-back works with a real call\'s apiClaim', async (t) => {
  const address = await calls.rt.app.listen({ host: '127.0.0.1', port: 0 })
  const apiClaim = new URL(query.afterRotation.url).searchParams.get('apiClaim')!
  const curl = onlyBlock(subsection(section, 'Writing back with the apiClaim'), 'sh')
  await calls.rt.api.patch(`/v1/properties/${calls.propertyId}`, { fields: { valuationNote: 'to be removed' } })
  const { code, output } = await runBash(curl, { BATON: address, API_CLAIM: apiClaim, ESTATE_ID: calls.propertyId })
  t.equal(code, 0, output)
  // Two JSON answers, one after the other; JSON never has `}{` inside one document.
  const [read, written] = output.trim().replace(/}\s*{/g, '}\n{').split('\n').map((line) => JSON.parse(line) as { id: string; fields: Record<string, unknown> })
  t.equal(read?.id, calls.propertyId, 'the claim reads the record')
  t.equal(written?.fields.marketValue, 512000, 'and writes marketValue')
  t.notOk(written && 'valuationNote' in written.fields, 'null removed a field')
  const activities = (await calls.rt.api.get(`/v1/properties/${calls.propertyId}/activities`)).data.items
  t.match(activities[0], { message: /Valuation updated marketValue, valuationNote/ })
})

