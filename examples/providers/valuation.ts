import { EventEmitter } from 'node:events'
import { listen, short, withClaim, type Say } from './http.js'
import { queryCallValid } from './signatures.js'

/*
 * A sample valuation provider (query delivery, onOffice scheme). It verifies the signature, answers
 * 200 at once, and then values the property and writes `marketValue` back with the call's apiClaim.
 */

export interface WriteBack {
  deliveryId: string
  processId?: string
  estateId: string
  marketValue: number
}

export interface ValuationProvider {
  url: string
  secret: string
  /** 'writeBack' (WriteBack) after a value is written; 'error' when anything fails. */
  events: EventEmitter
  close(): Promise<void>
}

export async function startValuationProvider(batonUrl: string, say: Say): Promise<ValuationProvider> {
  const events = new EventEmitter()
  const seen = new Set<string>()
  const provider: ValuationProvider = { url: '', secret: '', events, close: async () => {} }
  const server = await listen(async (req, res) => {
    const receivedUrl = `${provider.url}${req.url ?? '/'}`
    const query = Object.fromEntries(new URL(receivedUrl).searchParams)
    say(`ValueCo    <- ${req.method} ${new URL(receivedUrl).pathname}?… ${describeCall(query)}`)
    if (!queryCallValid(receivedUrl, provider.secret)) {
      say('ValueCo    signature INVALID: answers 401')
      res.writeHead(401).end()
      return
    }
    say('ValueCo    signature verified (onOffice: sorted query, HMAC-SHA256 with the service secret)')
    const deliveryId = query.deliveryId ?? ''
    const repeat = seen.has(deliveryId)
    seen.add(deliveryId)
    res.writeHead(200, { 'content-type': 'text/plain' }).end('accepted')
    say(`ValueCo    -> 200 at once (Idempotency-Key ${short(String(req.headers['idempotency-key']))}); valuing in the background`)
    if (repeat) return say('ValueCo    a retry of a delivery already handled: nothing more to do')
    writeBack(batonUrl, query, say).then((done) => events.emit('writeBack', done), (error: unknown) => events.emit('error', error))
  }, (error) => events.emit('error', error))
  provider.url = server.url
  provider.close = server.close
  return provider
}

async function writeBack(batonUrl: string, query: Record<string, string>, say: Say): Promise<WriteBack> {
  const { apiClaim = '', estateId = '', deliveryId = '' } = query
  const path = `/v1/properties/${estateId}`
  const read = await withClaim(batonUrl, apiClaim, 'GET', path)
  if (read.status !== 200) throw new Error(`ValueCo could not read the property: ${read.status} ${JSON.stringify(read.data)}`)
  const marketValue = estimate(read.data.fields as Record<string, unknown>, query.mode)
  const written = await withClaim(batonUrl, apiClaim, 'PATCH', path, { fields: { marketValue } })
  if (written.status !== 200) throw new Error(`ValueCo could not write back: ${written.status} ${JSON.stringify(written.data)}`)
  say(`ValueCo    -> PATCH ${path} {"fields":{"marketValue":${marketValue}}} with the apiClaim: ${written.status}`)
  return { deliveryId, estateId, marketValue, ...(query.processId ? { processId: query.processId } : {}) }
}

// A toy model: a quick valuation from the price, a full one also counts the living area.
function estimate(fields: Record<string, unknown>, mode = 'quick'): number {
  const price = Number(fields.price ?? 0)
  const area = Number(fields.livingArea ?? 0)
  const value = price * 1.06 + (mode === 'full' ? area * 150 : 0)
  return Math.round(value / 1000) * 1000
}

function describeCall(query: Record<string, string>): string {
  const trigger = query.event ? `event=${query.event} changedFields=${query.changedFields}` : `processId=${short(query.processId)} stepId=${short(query.stepId)} mode=${query.mode}`
  return `${trigger} estateId=${short(query.estateId)} deliveryId=${short(query.deliveryId)} apiClaim=${query.apiClaim?.slice(0, 8)}…`
}
