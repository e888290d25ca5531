import { EventEmitter } from 'node:events'
import { listen, readBody, short, withClaim, type Say } from './http.js'
import { standardWebhookValid } from './signatures.js'

/*
 * A sample newsletter provider (json delivery, Standard Webhooks). A trigger on `marketValue` calls
 * it; it verifies the signature on the raw body, answers 200 and reads the property with the claim.
 */

export interface Sync {
  deliveryId: string
  estateId: string
  marketValue: unknown
}

export interface NewsletterProvider {
  url: string
  secret: string
  /** 'sync' (Sync) after a call was handled; 'error' when anything fails. */
  events: EventEmitter
  close(): Promise<void>
}

interface JsonCall {
  deliveryId: string
  estateId?: string
  event?: string
  changedFields?: string[]
  apiClaim: string
}

export async function startNewsletterProvider(batonUrl: string, say: Say): Promise<NewsletterProvider> {
  const events = new EventEmitter()
  const seen = new Set<string>()
  const provider: NewsletterProvider = { url: '', secret: '', events, close: async () => {} }
  const server = await listen(async (req, res) => {
    const body = await readBody(req)
    const webhookId = String(req.headers['webhook-id'] ?? '')
    say(`ListCo     <- ${req.method} ${req.url} webhook-id=${short(webhookId)} (${body.length} bytes of JSON)`)
    if (!standardWebhookValid(req.headers, body, provider.secret)) {
      say('ListCo     signature INVALID: answers 401')
      res.writeHead(401).end()
      return
    }
    const call = JSON.parse(body) as JsonCall
    say(`ListCo     signature verified (Standard Webhooks); event=${call.event} changedFields=${JSON.stringify(call.changedFields)}`)
    const repeat = seen.has(webhookId)
    seen.add(webhookId)
    res.writeHead(200, { 'content-type': 'text/plain' }).end('ok')
    if (repeat) return say('ListCo     a retry of a delivery already handled: nothing more to do')
    sync(batonUrl, call, say).then((done) => events.emit('sync', done), (error: unknown) => events.emit('error', error))
  }, (error) => events.emit('error', error))
  provider.url = server.url
  provider.close = server.close
  return provider
}

async function sync(batonUrl: string, call: JsonCall, say: Say): Promise<Sync> {
  const estateId = call.estateId ?? ''
  const read = await withClaim(batonUrl, call.apiClaim, 'GET', `/v1/properties/${estateId}`)
  if (read.status !== 200) throw new Error(`ListCo could not read the property: ${read.status} ${JSON.stringify(read.data)}`)
  const marketValue = (read.data.fields as Record<string, unknown>).marketValue
  say(`ListCo     read the property with the apiClaim: marketValue ${String(marketValue)}; the subscribers' list is updated`)
  return { deliveryId: call.deliveryId, estateId, marketValue }
}
