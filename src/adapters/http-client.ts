import http from 'node:http'
import https from 'node:https'
import got, { type Method } from 'got'

export interface HttpRequest {
  method: 'GET' | 'POST'
  url: string
  headers: Record<string, string>
  body?: string
  timeoutMs: number
  signal?: AbortSignal
}

export interface HttpResponse {
  status: number
  headers: Record<string, string | string[] | undefined>
  /** The body, decoded as UTF-8, up to the client's cap. */
  body: string
  truncated: boolean
}

/** A call that produced no HTTP response: refused, reset, timed out, aborted. */
export class HttpCallError extends Error {
  override name = 'HttpCallError'
  constructor(readonly code: string, message: string) {
    super(message)
  }
}

export interface HttpClient {
  send(request: HttpRequest): Promise<HttpResponse>
  close(): void
}

export interface HttpClientOptions {
  /** Bytes of a response body kept (after decompression); the rest is dropped unread. */
  maxBodyBytes: number
  maxSockets: number
  userAgent: string
}

export function createHttpClient(options: HttpClientOptions): HttpClient {
  const agent = {
    http: new http.Agent({ keepAlive: true, maxSockets: options.maxSockets }),
    https: new https.Agent({ keepAlive: true, maxSockets: options.maxSockets })
  }
  return {
    send: (request) => send(request, options, agent),
    close: () => {
      agent.http.destroy()
      agent.https.destroy()
    }
  }
}

function send(request: HttpRequest, options: HttpClientOptions, agent: { http: http.Agent; https: https.Agent }): Promise<HttpResponse> {
  const stream = got.stream(request.url, {
    method: request.method as Method,
    headers: { 'user-agent': options.userAgent, ...request.headers },
    ...(request.body === undefined ? {} : { body: request.body }),
    agent,
    followRedirect: false,
    throwHttpErrors: false,
    retry: { limit: 0 },
    timeout: { request: request.timeoutMs },
    ...(request.signal ? { signal: request.signal } : {})
  })
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    let status = 0
    let headers: HttpResponse['headers'] = {}
    let settled = false
    const finish = (truncated: boolean) => {
      if (settled) return
      settled = true
      resolve({ status, headers, body: Buffer.concat(chunks).toString('utf8'), truncated })
    }
    stream.on('response', (response: http.IncomingMessage) => {
      status = response.statusCode ?? 0
      headers = response.headers
    })
    stream.on('data', (chunk: Buffer) => {
      const room = options.maxBodyBytes - size
      if (room > 0) chunks.push(chunk.subarray(0, room))
      size += Math.min(room, chunk.length)
      if (chunk.length >= room) {
        finish(true)
        stream.destroy()
      }
    })
    stream.on('end', () => finish(false))
    stream.on('error', (error: Error & { code?: string }) => {
      if (settled) return
      settled = true
      reject(new HttpCallError(error.code ?? 'ERR_HTTP', describe(error, request.timeoutMs)))
    })
  })
}

function describe(error: Error & { code?: string }, timeoutMs: number): string {
  if (error.code === 'ETIMEDOUT') return `no response within ${timeoutMs} ms`
  if (error.name === 'AbortError' || error.code === 'ERR_ABORTED') return 'the call was aborted'
  return error.message
}
