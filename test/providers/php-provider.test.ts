import { spawn, spawnSync } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { setupRuntime } from '../helpers/runtime.js'

/*
 * SPEC §3's promise, end to end: an existing onOffice provider, written as onOffice tells providers to
 * verify (PHP's $_GET, unset signature, a plain ksort(), http_build_query, hash_hmac, hash_equals), run by
 * PHP's own web server and called by Baton's scheduler itself, verifies every call, awkward content
 * included, and writes back through the apiClaim with file_get_contents as the README shows. A json
 * service is verified by hand per Standard Webhooks in the same PHP.
 */
// The provider: one router for every path. Each service's secret is looked up by the call's path.
const PROVIDER = String.raw`<?php
$dir = getenv('PROVIDER_DIR');
$secrets = json_decode(file_get_contents($dir . '/secrets.json'), true);
$path = strtok($_SERVER['REQUEST_URI'], '?');
$secret = $secrets[$path] ?? '';
$method = $_SERVER['REQUEST_METHOD'];
$body = file_get_contents('php://input');
if ($method === 'GET') {
    // As onOffice shows it: plain ksort(), no flags.
    $params = $_GET;
    $received = $params['signature'] ?? '';
    unset($params['signature']);
    ksort($params);
    $scheme = (!empty($_SERVER['HTTPS']) && $_SERVER['HTTPS'] !== 'off') ? 'https' : 'http';
    $url = $scheme . '://' . $_SERVER['HTTP_HOST'] . $path . '?' . http_build_query($params);
    $valid = is_string($received) && hash_equals(hash_hmac('sha256', $url, $secret), $received);
    $call = $_GET;
} else {
    $id = $_SERVER['HTTP_WEBHOOK_ID'] ?? '';
    $timestamp = $_SERVER['HTTP_WEBHOOK_TIMESTAMP'] ?? '';
    $key = str_starts_with($secret, 'whsec_') ? base64_decode(substr($secret, 6)) : $secret;
    $expected = 'v1,' . base64_encode(hash_hmac('sha256', "$id.$timestamp.$body", $key, true));
    $valid = false;
    if ($id !== '' && ctype_digit($timestamp)) {
        foreach (explode(' ', $_SERVER['HTTP_WEBHOOK_SIGNATURE'] ?? '') as $signature) {
            $valid = $valid || hash_equals($expected, $signature);
        }
    }
    $call = json_decode($body, true);
}
$written = null;
if ($valid && isset($call['estateId'], $call['apiClaim'], $call['deliveryId'])) {
    // The write-back: what this provider read from the call, under a field named after the delivery.
    $context = stream_context_create(['http' => [
        'method' => 'PATCH',
        'header' => "Authorization: Bearer {$call['apiClaim']}\r\nContent-Type: application/json\r\n",
        'content' => json_encode(['fields' => ['marketValue' => 512000, 'seen-' . $call['deliveryId'] => $call]], JSON_UNESCAPED_UNICODE),
        'ignore_errors' => true,
    ]]);
    $answer = file_get_contents(getenv('BATON') . '/v1/properties/' . rawurlencode($call['estateId']), false, $context);
    $written = ['status' => $http_response_header[0] ?? '', 'body' => $answer];
}
file_put_contents($dir . '/calls.jsonl', json_encode(
    ['method' => $method, 'path' => $path, 'host' => $_SERVER['HTTP_HOST'], 'valid' => $valid, 'call' => $call, 'written' => $written],
    JSON_UNESCAPED_UNICODE | JSON_INVALID_UTF8_SUBSTITUTE
) . "\n", FILE_APPEND | LOCK_EX);
http_response_code($valid ? 200 : 401);
echo $valid ? 'valid' : 'invalid';
`

interface PhpCall {
  method: string
  path: string
  host: string
  valid: boolean
  call: Record<string, unknown>
  written: { status: string; body: string } | null
}

async function freePort(host: string): Promise<number> {
  const server = net.createServer()
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, host, resolve))
  const { port } = server.address() as net.AddressInfo
  await new Promise((resolve) => server.close(resolve))
  return port
}

function connects(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, host)
    socket.once('connect', () => {
      socket.end()
      resolve(true)
    })
    socket.once('error', () => resolve(false))
  })
}

async function startPhpServer(dir: string, host: string, baton: string): Promise<{ origin: string; stop(): void }> {
  const port = await freePort(host)
  const bracketed = host.includes(':') ? `[${host}]` : host
  const child = spawn('php', ['-S', `${bracketed}:${port}`, join(dir, 'provider.php')], {
    cwd: dir, env: { ...process.env, PROVIDER_DIR: dir, BATON: baton }, stdio: ['ignore', 'ignore', 'ignore']
  })
  const deadline = Date.now() + 10_000
  while (!(await connects(host, port))) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error('php -S did not start')
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  return { origin: `http://${bracketed}:${port}`, stop: () => child.kill() }
}

async function ipv6Loopback(): Promise<boolean> {
  try {
    await freePort('::1')
    return true
  } catch {
    return false
  }
}

async function run(): Promise<void> {
  const rt = await setupRuntime(t)
  rt.clock.set(new Date())
  const dir = await mkdtemp(join(tmpdir(), 'baton-php-provider-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  await writeFile(join(dir, 'provider.php'), PROVIDER)
  const baton = await rt.app.listen({ host: '127.0.0.1', port: 0 })
  const v4 = await startPhpServer(dir, '127.0.0.1', baton)
  t.teardown(v4.stop)
  const v6 = (await ipv6Loopback()) ? await startPhpServer(dir, '::1', baton) : undefined
  if (v6) t.teardown(v6.stop)

  const secrets: Record<string, string> = {}
  const op = rt.operator
  async function service(name: string, webhookUrl: string, delivery: 'query' | 'json' = 'query') {
    const created = await op.post('/v1/marketplace-services', { name, provider: 'PHP & Co.', webhookUrl, delivery })
    if (created.statusCode !== 201) throw new Error(created.body)
    secrets[new URL(webhookUrl).pathname] = created.data.secret
    await writeFile(join(dir, 'secrets.json'), JSON.stringify(secrets))
    const activated = await rt.api.put(`/v1/marketplace-services/${created.data.id}/activation`)
    if (activated.statusCode >= 300) throw new Error(activated.body)
    return created.data.id as string
  }
  const calls = async (): Promise<PhpCall[]> => {
    const text = await readFile(join(dir, 'calls.jsonl'), 'utf8').catch(() => '')
    return text.split('\n').filter((line) => line !== '').map((line) => JSON.parse(line) as PhpCall)
  }
  async function drain(count: number) {
    for (let pass = 0; pass < 40 && (await calls()).length < count; pass++) await rt.scheduler.runOnce()
    return calls()
  }

  // The tenant's own name travels as customerName.
  const renamed = await op.patch(`/v1/tenants/${rt.tenant.id}`, { name: 'Müller & Söhne + Co. = 100% 😀 e\u0301' })
  if (renamed.statusCode !== 200) throw new Error(renamed.body)

  // Awkward values a string parameter takes, each sent in a step call of its own.
  const values: Record<string, string> = {
    spaces: ' a  b ',
    plus: 'a+b++',
    ampersandEquals: 'a&b=c&&==',
    percent: '100% %41 %zz %',
    emoji: '😀👍🏽🇩🇪',
    combining: 'e\u0301 a\u0308 \u0338',
    controls: '\t\n\r\u0001\u001f\u007f\u0085\u009f',
    invisible: '\u00a0\u200b\u200f\u202e\ufeff\ufffe\uffff',
    long: `${'Grüße & Co. '.repeat(150)}😀`,
    empty: '',
    brackets: 'opts[a]=1&x[]=2',
    dotsAndTilde: "a.b ~!*'()",
    lookalikeSignature: '&signature=0000',
    newlines: 'line1\r\nline2\n'
  }
  const queryId = await service('Valuation', `${v4.origin}/hooks/val%C3%BCation/a%20b.php?source=crm&a=1&a=2&9=x&flag&empty=&city=K%C3%B6ln+Mitte&x=%2B%26%3D`)
  for (const [name, type, extra] of [
    ['note', 'string', {}], ['count', 'integer', {}], ['ratio', 'number', {}], ['urgent', 'boolean', {}],
    ['mode', 'enum', { allowedValues: ['a b', 'x&y=z', '😀', '1+1'] }]
  ] as const) {
    const added = await op.post(`/v1/marketplace-services/${queryId}/parameters`, { name, label: name, type, required: false, ...extra })
    if (added.statusCode !== 201) throw new Error(added.body)
  }
  const numbers = [[-0, 0.1 + 0.2], [9007199254740991, 1e21], [-42, -1.5e-7]] as const
  const modes = ['a b', 'x&y=z', '😀', '1+1']
  const refersTo = { property: true, address: false }
  let sent = 0
  const steps: Record<string, Record<string, unknown>> = {}
  for (const [i, [what, note]] of Object.entries(values).entries()) {
    const [count, ratio] = numbers[i % numbers.length]!
    const parameters = { note, count, ratio, urgent: i % 2 === 0, mode: modes[i % modes.length] }
    const templateId = await rt.template([{ kind: 'webhook', name: `Value it (${what})`, refersTo, serviceId: queryId, parameters }])
    const started = await rt.start(templateId)
    steps[started.id] = { what, ...parameters }
    sent += 1
  }

  // A free target (query) and a json service, on the same PHP; an IPv6 literal host where this machine has ::1.
  const targetSecret = 'free-target-secret_0123456789!&+='
  secrets['/tenant/own%20hook'] = targetSecret
  await writeFile(join(dir, 'secrets.json'), JSON.stringify(secrets))
  const targetTemplate = await rt.template([{
    kind: 'webhook', name: 'Own hook', refersTo,
    target: { url: `${v4.origin}/tenant/own%20hook?from=baton&a=1&a=2`, secret: targetSecret, delivery: 'query' },
    parameters: { note: values.ampersandEquals!, extra: '😀 +', n: 7, yes: false }
  }])
  steps[(await rt.start(targetTemplate)).id] = { what: 'free target' }
  sent += 1
  const jsonId = await service('Newsletter', `${v4.origin}/hooks/newsletter.php?list=k%C3%B6ln`, 'json')
  await op.post(`/v1/marketplace-services/${jsonId}/parameters`, { name: 'note', label: 'Note', type: 'string', required: false })
  const jsonTemplate = await rt.template([{ kind: 'webhook', name: 'Tell the list', refersTo, serviceId: jsonId, parameters: { note: Object.values(values).join('|') } }])
  steps[(await rt.start(jsonTemplate)).id] = { what: 'json' }
  sent += 1
  if (v6) {
    const v6Id = await service('Valuation over IPv6', `${v6.origin}/hooks/v6.php?a=1`)
    const v6Template = await rt.template([{ kind: 'webhook', name: 'Value it over IPv6', refersTo, serviceId: v6Id, parameters: {} }])
    steps[(await rt.start(v6Template)).id] = { what: 'ipv6' }
    sent += 1
  }

  await t.test('every step call verifies in PHP, and PHP reads each value as it was saved', async (t) => {
    const received = await drain(sent)
    t.equal(received.length, sent, 'one call per step')
    for (const call of received) {
      t.ok(call.valid, `${call.method} ${call.path} (process ${String(call.call.processId)}) verifies`)
      // A free target's call carries no apiClaim (README, Free targets): the endpoint calls back with the tenant's key.
      if (call.path === '/tenant/own%20hook') t.equal(call.written, null, 'a free target\'s call has no claim to write back with')
      else t.match(call.written?.status, / 200 /, `${call.path}: the write-back with the apiClaim is accepted`)
    }
    const queryCalls = received.filter((c) => c.path === '/hooks/val%C3%BCation/a%20b.php')
    t.equal(queryCalls.length, Object.keys(values).length)
    for (const call of queryCalls) {
      const step = steps[String(call.call.processId)]!
      t.equal(call.call.note, step.note, `${String(step.what)}: PHP reads note as saved`)
      t.equal(call.call.mode, step.mode, `${String(step.what)}: and mode`)
      t.match(call.call, { source: 'crm', a: '2', 9: 'x', flag: '', empty: '', city: 'Köln Mitte', x: '+&=', customerName: 'Müller & Söhne + Co. = 100% 😀 e\u0301' })
    }
    const json = received.find((c) => c.method === 'POST')!
    t.equal((json.call.parameters as { note: string }).note, Object.values(values).join('|'), 'the json call carries the note as saved')
    const own = received.find((c) => c.path === '/tenant/own%20hook')!
    t.match(own.call, { from: 'baton', a: '2', note: values.ampersandEquals, extra: '😀 +', n: '7', yes: '0' })
    if (v6) t.ok(received.some((c) => c.host.startsWith('[::1]:') && c.valid), 'the IPv6 literal host verifies')
    else t.comment('no IPv6 loopback here: the IPv6 case is left out')
  })

  await t.test('trigger calls with awkward field names verify in PHP', async (t) => {
    const before = (await calls()).length
    const fields = ['a b', 'x+y', 'a&b=c', '100%', '😀', 'e\u0301', 'Straße', '[x]', 'a.b', '9', '10', 'sig&signature=1', '\t']
    const trigger = await op.post(`/v1/marketplace-services/${queryId}/triggers`, { module: 'property', events: ['update'], fields })
    t.equal(trigger.statusCode, 201, 'the trigger takes the field names')
    const changed = await rt.api.patch(`/v1/properties/${rt.propertyId}`, { fields: Object.fromEntries(fields.map((name, i) => [name, `value ${i}`])) })
    t.equal(changed.statusCode, 200, 'the property takes the fields')
    const received = (await drain(before + 1)).slice(before)
    t.equal(received.length, 1, 'one trigger call')
    t.ok(received[0]?.valid, 'it verifies')
    t.equal(received[0]?.call.changedFields, [...fields].sort().join(','), 'PHP reads changedFields as sent')
    t.match(received[0]?.written?.status, / 200 /, 'and writes back')
  })

  await t.test('the write-backs reached the property', async (t) => {
    const property = (await rt.api.get(`/v1/properties/${rt.propertyId}`)).data as { fields: Record<string, unknown> }
    t.equal(property.fields.marketValue, 512000)
    const seen = Object.keys(property.fields).filter((name) => name.startsWith('seen-'))
    t.equal(seen.length, (await calls()).filter((call) => call.written !== null).length, 'one field per call PHP wrote back')
  })
}

const php = spawnSync('php', ['-v'])
if (php.error || php.status !== 0) {
  t.test('an onOffice provider in PHP verifies Baton\'s calls and writes back', { skip: 'php is not installed (on Debian: apt-get install php-cli)' }, () => {})
} else {
  await run()
}
