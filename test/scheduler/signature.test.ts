import { existsSync, readFileSync } from 'node:fs'
import fc from 'fast-check'
import t from 'tap'
import { buildQuery, phpUrlEncode, phpUrlEncodeBytes, signQueryUrl, verifyQuerySignature } from '../../src/scheduler/signature.js'

interface Vector {
  name: string
  webhookUrl: string
  secret: string
  params: Record<string, string>
  canonical: string
  signature: string
  sentUrl: string
}

// The project's shared conformance vectors sit beside the repository; a copy in test/fixtures keeps a
// clone that stands alone testable, and is checked against the shared file wherever that is present.
const sharedFile = new URL('../../../shared/conformance/signature-vectors.json', import.meta.url)
const copyFile = new URL('../fixtures/signature-vectors.json', import.meta.url)
const read = (file: URL) => JSON.parse(readFileSync(file, 'utf8')) as { vectors: Vector[] }
const { vectors } = read(existsSync(sharedFile) ? sharedFile : copyFile)

t.ok(vectors.length >= 3, 'the conformance vectors are loaded')
if (existsSync(sharedFile)) t.same(read(copyFile), read(sharedFile), 'the copy in test/fixtures matches the shared vectors')

for (const v of vectors) {
  t.test(`conformance vector: ${v.name}`, async (t) => {
    const signed = signQueryUrl(v.webhookUrl, v.params, v.secret)
    t.equal(signed.canonical, v.canonical, 'canonical text')
    t.equal(signed.signature, v.signature, 'signature')
    t.equal(signed.url, v.sentUrl, 'the URL sent')
    t.ok(verifyQuerySignature(v.sentUrl, v.secret), 'a provider verifies the sent URL')
    t.notOk(verifyQuerySignature(v.sentUrl, `${v.secret}x`), 'a wrong secret fails')
    t.notOk(verifyQuerySignature(v.sentUrl.replace('timestamp=', 'timestamp=9'), v.secret), 'a changed parameter fails')
  })
}

t.test('PHP urlencode rules', async (t) => {
  t.equal(phpUrlEncode('a b~c*d\'e(f)!'), 'a+b%7Ec%2Ad%27e%28f%29%21')
  t.equal(phpUrlEncode('Az09-_.'), 'Az09-_.')
  t.equal(phpUrlEncode('ä'), '%C3%A4')
  t.equal(phpUrlEncode('\ud800x'), '%EF%BF%BDx', 'a lone surrogate is written as U+FFFD')
})

t.test('urlencode agrees with the byte-by-byte rules: every code point below U+3000, then every 97th', async (t) => {
  let differ = 0
  for (let code = 0; code <= 0x10ffff; code += code < 0x3000 ? 1 : 97) {
    const text = `a${String.fromCodePoint(code)} z`
    if (phpUrlEncode(text) !== phpUrlEncodeBytes(text)) differ += 1
  }
  t.equal(differ, 0)
})

t.test('a signature parameter in the input is never signed', async (t) => {
  const signed = signQueryUrl('https://p.example/h?signature=old', { a: '1', signature: 'forged' }, 's')
  t.equal(signed.canonical, 'https://p.example/h?a=1')
})

t.test('keys sort by their UTF-8 bytes, also where UTF-16 code units would order them otherwise', async (t) => {
  // U+FF21 (EF BC A1) comes before U+1F600 (F0 9F 98 80) in UTF-8; as UTF-16 (FF21 against D83D DE00), after it.
  const signed = signQueryUrl('https://p.example/h', { '\u{1F600}': '1', '\uFF21': '2', a: '3' }, 's')
  t.equal(signed.canonical, 'https://p.example/h?a=3&%EF%BC%A1=2&%F0%9F%98%80=1')
})

t.test('the query is built as a byte-by-byte reference builds it, for any keys and values', async (t) => {
  const reference = (params: Map<string, string>) => [...params]
    .sort(([a], [b]) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8')))
    .map(([key, value]) => `${phpUrlEncodeBytes(key)}=${phpUrlEncodeBytes(value)}`)
    .join('&')
  const text = fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.constantFrom('a', 'A', '_', '-', '.', '~', ' ', '\uFF21', '\u{1F600}'))
  fc.assert(fc.property(fc.dictionary(text, text), (entries) => {
    const params = new Map(Object.entries(entries))
    return buildQuery(params) === reference(params)
  }), { numRuns: 300 })
  t.pass('300 random sets of parameters')
})

t.test('a webhook URL signed again keeps its own parameters and none of the last call\'s', async (t) => {
  const url = 'https://p.example/h?source=crm&b=1'
  t.equal(signQueryUrl(url, { a: '1' }, 's').canonical, 'https://p.example/h?a=1&b=1&source=crm')
  t.equal(signQueryUrl(url, { c: '2', b: '3' }, 's').canonical, 'https://p.example/h?b=3&c=2&source=crm')
  t.equal(signQueryUrl(url, {}, 's').canonical, 'https://p.example/h?b=1&source=crm')
})
