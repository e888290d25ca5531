import http from 'node:http'
import type { AddressInfo } from 'node:net'

export type Say = (line: string) => void

export interface Listening {
  url: string
  close(): Promise<void>
}

/** A plain HTTP server on loopback, on a free port. */
export async function listen(handle: (req: http.IncomingMessage, res: http.ServerResponse) => Promise<void>, onError: (error: unknown) => void): Promise<Listening> {
  const server = http.createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      if (!res.headersSent) res.writeHead(500).end()
      onError(error)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    async close() {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}

/** The raw body, as it was signed: verify it before parsing it. */
export async function readBody(req: http.IncomingMessage): Promise<string> {
  const chunks: Buffer[] = []
  for await (const chunk of req) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks).toString('utf8')
}

/** Calls Baton's API with the apiClaim of a call: the records the call names, nothing else. */
export async function withClaim(batonUrl: string, apiClaim: string, method: 'GET' | 'PATCH', path: string, body?: unknown): Promise<{ status: number; data: Record<string, unknown> }> {
  const response = await fetch(`${batonUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${apiClaim}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body)
  })
  return { status: response.status, data: (await response.json()) as Record<string, unknown> }
}

/** The last characters of an id: Baton's ids are time-ordered, so their beginnings look alike. */
export function short(id: string | undefined): string {
  return id ? `…${id.slice(-8)}` : '-'
}
