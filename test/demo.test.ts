import { spawn } from 'node:child_process'
import t from 'tap'
import { ROOT } from './helpers/process.js'

function npmRunDemo(env: Record<string, string> = {}): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn('npm', ['run', 'demo'], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()))
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()))
    child.on('exit', (code) => resolve({ code, output }))
  })
}

// The issue's promise: `npm run demo` on a fresh clone, no setup, shows the whole loop and exits 0.
t.test('npm run demo runs the marketplace loop and an autostarted process end to end and exits 0', async (t) => {
  const { code, output } = await npmRunDemo()
  t.equal(code, 0, output)
  const lines = [
    /Baton listens on http:\/\/127\.0\.0\.1:\d+/,
    /-> PATCH \/v1\/properties\/\S+ \{"fields":\{"price":475000\}\}/,
    /ValueCo +<- GET \/hooks\/valuation\?… event=update changedFields=price/,
    /ValueCo +signature verified \(onOffice/,
    /ValueCo +-> 200 at once/,
    /ValueCo +-> PATCH \/v1\/properties\/\S+ \{"fields":\{"marketValue":504000\}\} with the apiClaim: 200/,
    /ListCo +<- POST \/hooks\/newsletter/,
    /ListCo +signature verified \(Standard Webhooks\); event=update changedFields=\["marketValue"\]/,
    /ListCo +read the property with the apiClaim: marketValue 504000/,
    /ValueCo +<- GET \/hooks\/valuation\?… processId=\S+ stepId=\S+ mode=full/,
    /marketValue":518000\}\} with the apiClaim: 200/,
    /step 1 "Ask ValueCo for a full valuation": done; step 2 "Call the owner with the new value": due/,
    /-> PATCH \/v1\/properties\/\S+ \{"fields":\{"status":"sold"\}\}/,
    /autostart run changed:\d+: started, process \S+/,
    /process +"Hand over a sold property" running; step 1 "Hand over the keys": due, assigned to Anna Berg/,
    /Valuation answered HTTP 200 \(triggered by the update of price\)\.\n.*Valuation updated marketValue\.\n.*Newsletter sync answered HTTP 200 \(triggered by the update of marketValue\)\./,
    /Process "Hand over a sold property" started by its autostart as the property's status became "sold"\./,
    /Demo complete in [\d.]+ s/
  ]
  let from = 0
  for (const line of lines) {
    const at = output.slice(from).search(line)
    t.not(at, -1, `prints ${line} in order`)
    if (at >= 0) from += at
  }
  t.notMatch(output, /INVALID|did not complete/)
})

t.test('a demo that runs out of time says so, stops Baton and exits non-zero', async (t) => {
  const { code, output } = await npmRunDemo({ DEMO_TIMEOUT_MS: '1500' })
  t.equal(code, 1, output)
  t.match(output, /The demo did not complete: timed out after 1\.5 s waiting for Baton to start/)
})
