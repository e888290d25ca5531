import { sql } from '../../src/db/kysely.js'
import type { Response, TestContext } from './app.js'
import { waitForLockWait } from './database.js'

/**
 * Begins the tenant's deletion and keeps it waiting once it has marked the tenant (deleting_since):
 * another deletion of the tenant's, which the test holds, has its turn. `finish` lets the deletion
 * go on and answers its response.
 */
export async function heldDeletion(ctx: TestContext, tenantId: string): Promise<{ finish(): Promise<Response> }> {
  let release!: () => void
  let held!: () => void
  const isHeld = new Promise<void>((resolve) => { held = resolve })
  const holder = ctx.db.transaction().execute(async (trx) => {
    await sql`select pg_advisory_xact_lock(hashtextextended(${`tenant deletion ${tenantId}`}, 0))`.execute(trx)
    held()
    await new Promise<void>((resolve) => { release = resolve })
  })
  await isHeld
  const deleting = ctx.operator.delete(`/v1/tenants/${tenantId}`)
  await waitForLockWait(ctx.db)
  return {
    async finish() {
      release()
      await holder
      return deleting
    }
  }
}
