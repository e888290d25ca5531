import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { writeFile } from 'node:fs/promises'
import http from 'node:http'
import net from 'node:net'
import { join } from 'node:path'
import type { CapturedCall } from './real-calls.js'

/*
 * Runs a README snippet as a provider would: Node.js and Python snippets are called with a captured
 * call (the URL as received, or the headers and raw body); PHP snippets run in PHP's own web server,
 * and each captured call is sent to it again byte for byte, Host header included, so $_GET, $_SERVER
 * and php://input are PHP's own. Each prints `valid` or `invalid` per call.
 */

export type Scheme = 'query' | 'json'

export interface Case {
  call: CapturedCall
  secret: string
}

const input = (cases: Case[]) => JSON.stringify(cases.map(({ call, secret }) => ({ ...call, secret })))

const nodeDriver: Record<Scheme, string> = {
  query: 'queryCallValid(c.url, c.secret)',
  json: 'standardWebhookValid(c.headers, c.body, c.secret)'
}

export async function runNode(dir: string, snippet: string, scheme: Scheme, cases: Case[]): Promise<string[]> {
  const file = join(dir, `${scheme}.mjs`)
  await writeFile(file, `${snippet}
import { readFileSync as readHarnessInput } from 'node:fs'
for (const c of JSON.parse(readHarnessInput(0, 'utf8'))) console.log(${nodeDriver[scheme]} ? 'valid' : 'invalid')
`)
  return run(process.execPath, [file], input(cases))
}

const pythonDriver: Record<Scheme, string> = {
  query: "query_call_valid(case['url'], case['secret'])",
  json: "standard_webhook_valid(case['headers'], case['body'].encode(), case['secret'])"
}

export async function runPython(dir: string, snippet: string, scheme: Scheme, cases: Case[]): Promise<string[]> {
  const file = join(dir, `snippet_${scheme}.py`)
  await writeFile(file, `${snippet}

import json as harness_json
import sys as harness_sys
for case in harness_json.load(harness_sys.stdin):
    print('valid' if ${pythonDriver[scheme]} else 'invalid')
`)
  return run('python3', [file], input(cases), { PYTHONIOENCODING: 'utf-8' })
}

/** PHP's built-in web server with both snippets behind a router; the secret travels in a header of the harness's own. */
export async function startPhp(dir: string, snippets: Record<Scheme, string>): Promise<{ run(cases: Case[]): Promise<string[]>; stop(): void }> {
  await writeFile(join(dir, 'query.php'), `<?php\n${snippets.query}`)
  await writeFile(join(dir, 'json.php'), `<?php\n${snippets.json}`)
  await writeFile(join(dir, 'router.php'), `<?php
$secret = $_SERVER['HTTP_X_HARNESS_SECRET'] ?? '';
require __DIR__ . ($_SERVER['REQUEST_METHOD'] === 'GET' ? '/query.php' : '/json.php');
echo $valid ? 'valid' : 'invalid';
`)
  const port = await freePort()
  const child = spawn('php', ['-S', `127.0.0.1:${port}`, join(dir, 'router.php')], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
  let log = ''
  let failed: Error | undefined
  child.on('error', (error) => (failed = new Error(`php could not run (on Debian: apt-get install php-cli): ${error.message}`)))
  child.stdout.on('data', (chunk: Buffer) => (log += chunk.toString()))
  child.stderr.on('data', (chunk: Buffer) => (log += chunk.toString()))
  await waitUntil(async () => {
    if (failed) throw failed
    if (child.exitCode !== null) throw new Error(`php -S exited: ${log}`)
    return connects(port)
  })
  return {
    async run(cases) {
      const verdicts: string[] = []
      for (const { call, secret } of cases) verdicts.push(await replay(port, call, secret))
      return verdicts
    },
    stop: () => child.kill()
  }
}

async function replay(port: number, call: CapturedCall, secret: string): Promise<string> {
  const url = new URL(call.url)
  const headers: Record<string, string> = {
    host: url.host, ...call.headers, 'x-harness-secret': secret, 'content-length': String(Buffer.byteLength(call.body))
  }
  delete headers.connection
  const request = http.request({ host: '127.0.0.1', port, method: call.method, path: `${url.pathname}${url.search}`, headers })
  request.end(call.body)
  const [response] = (await once(request, 'response')) as [http.IncomingMessage]
  let text = ''
  for await (const chunk of response) text += String(chunk)
  return text.trim()
}

function run(command: string, args: string[], stdin: string, env: Record<string, string> = {}): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()))
    child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()))
    child.on('error', reject)
    child.on('exit', (code) => (code === 0 ? resolve(out.trim().split('\n')) : reject(new Error(`${command} exited ${code}: ${err}`))))
    child.stdin.end(stdin)
  })
}

async function freePort(): Promise<number> {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as net.AddressInfo
  await new Promise((resolve) => server.close(resolve))
  return port
}

function connects(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1')
    socket.once('connect', () => {
      socket.end()
      resolve(true)
    })
    socket.once('error', () => resolve(false))
  })
}

async function waitUntil(check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('timed out')
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}
