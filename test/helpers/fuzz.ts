import type { Test } from 'tap'
import { setupApp, type TestContext } from './app.js'
import { buildWorld, ownedIds, type World } from './world.js'

/** The app and world the fuzz tests send every operation to, with the ids to put in its paths and bodies. */
export interface FuzzTarget {
  ctx: TestContext
  world: World
  /** By path prefix, the ids of the resources those paths name, owned by the caller. */
  owned: Record<string, Record<string, string>>
  /** The marketplace catalogue's ids, by path parameter. */
  catalogue: Record<string, string>
  /** An existing id for each body field that names a resource. */
  byField: Record<string, string>
}

/**
 * An app whose limits would not answer 429 or 503 on their own (the fuzz tests are about what input
 * does), with a world in it. The operator's tenant routes act on a tenant of their own: deleting A or
 * revoking its key would leave every later case at 401.
 */
export async function fuzzTarget(t: Test): Promise<FuzzTarget> {
  const ctx = await setupApp(t, { RATE_LIMIT_MAX: '0', AUTH_FAILURE_LIMIT: '0', PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '0' })
  const world = await buildWorld(ctx)
  const victim = await ctx.newTenant()
  const victimKeys = (await ctx.operator.get(`/v1/tenants/${victim.id}/api-keys`)).data
  return {
    ctx,
    world,
    owned: { ...ownedIds(world), '/v1/tenants/': { id: victim.id, keyId: victimKeys.items[0].id as string } },
    catalogue: { id: world.service.id, parameterId: world.parameter.id, triggerId: world.trigger.id },
    byField: {
      maintainerUserId: world.user.id, controllerUserId: world.user.id, responsibleUserId: world.user.id, user: world.user.id,
      templateId: world.template.id, propertyId: world.property.id, addressId: world.address.id, serviceId: world.service.id,
      stepId: world.templateStep.id, stepIds: world.templateStep.id, instanceId: world.instance.id, assigneeUserId: world.user.id
    }
  }
}
