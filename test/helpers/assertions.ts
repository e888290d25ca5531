import type { Test } from 'tap'
import type { Client, Response } from './app.js'

/** The response is an RFC 9457 problem with this status. */
export function assertProblem(t: Test, response: Response, status: number, detailPattern?: RegExp): void {
  t.equal(response.statusCode, status, `status ${status}: ${response.body}`)
  t.match(String(response.headers['content-type']), /^application\/problem\+json/, 'problem content type')
  t.match(response.data, { status, title: String, detail: String, type: String }, 'problem body')
  t.notMatch(response.body, /at .+\.(ts|js):\d+|SELECT |INSERT |UPDATE /i, 'no stack trace or SQL')
  if (detailPattern) t.match(response.data.detail + JSON.stringify(response.data.errors ?? []), detailPattern)
}

export interface IsolationCase {
  /** The collection path, e.g. /v1/users. */
  collection: string
  /** The id of tenant A's resource. */
  id: string
  /** A valid update body, when the resource can be updated (PATCH unless `updateMethod` says otherwise). */
  update?: unknown
  updateMethod?: 'patch' | 'put'
  deletable?: boolean
  /** Extra query for listing (for nested collections). */
  listQuery?: string
}

/** Tenant B cannot read, update, delete or list tenant A's resource: each answers 404 or omits it. */
export async function assertIsolated(t: Test, other: Client, c: IsolationCase): Promise<void> {
  const url = `${c.collection}/${c.id}`
  assertProblem(t, await other.get(url), 404)
  if (c.update !== undefined) assertProblem(t, await other[c.updateMethod ?? 'patch'](url, c.update), 404)
  if (c.deletable !== false) assertProblem(t, await other.delete(url), 404)
  const list = await other.get(`${c.collection}${c.listQuery ?? ''}`)
  if (list.statusCode === 200) {
    t.notOk(list.data.items.some((item: { id: string }) => item.id === c.id), 'not listed for another tenant')
  } else {
    assertProblem(t, list, 404)
  }
}
