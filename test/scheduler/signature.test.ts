import { existsSync, readFileSync } from 'node:fs'
import t from 'tap'
import { phpUrlEncode, phpUrlEncodeBytes, signQueryUrl, verifyQuerySignature } from '../../src/scheduler/signature.js'

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
