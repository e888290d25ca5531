import { signClaim } from '../../src/lib/api-claims.js'
import { loadClaimKey } from '../../src/modules/auth/claim-key.js'
import type { Response, TestContext } from './app.js'

/**
 * Tenant A with one of everything, made through the API: a user, a property and an address, an
 * activated catalogue service with a parameter and a trigger, an active template with a webhook and a
 * task step, a running process with its delivery, a revoked key and an apiClaim for the property.
 * Tenant B has nothing; `hidden` is a catalogue service B cannot see. For tests that cover every route.
 */
export async function buildWorld(ctx: TestContext) {
  const { operator } = ctx
  const a = await ctx.newTenant()
  const b = await ctx.newTenant()
  const user = await expect(a.client.post('/v1/users', { name: 'Anna', email: 'anna@a.example' }), 201)
  const property = await expect(a.client.post('/v1/properties', { maintainerUserId: user.id, fields: { price: 1 } }), 201)
  const address = await expect(a.client.post('/v1/addresses', { fields: { name: 'Owner' } }), 201)
  const service = await expect(operator.post('/v1/marketplace-services', { name: 'Valuation', provider: 'ValueCo', webhookUrl: 'https://valueco.example/hook' }), 201)
  const parameter = await expect(operator.post(`/v1/marketplace-services/${service.id}/parameters`, { name: 'mode', type: 'string' }), 201)
  const trigger = await expect(operator.post(`/v1/marketplace-services/${service.id}/triggers`, { module: 'property', events: ['update'] }), 201)
  await expect(a.client.put(`/v1/marketplace-services/${service.id}/activation`), 200)
  const template = await expect(a.client.post('/v1/process-templates', { name: 'Valuation', controllerUserId: user.id }), 201)
  const templateStep = await expect(a.client.post(`/v1/process-templates/${template.id}/steps`, {
    kind: 'webhook', name: 'Ask ValueCo', serviceId: service.id, refersTo: { property: true }
  }), 201)
  await expect(a.client.post(`/v1/process-templates/${template.id}/steps`, { kind: 'task', name: 'Call the owner' }), 201)
  const version = (await a.client.get(`/v1/process-templates/${template.id}`)).data.version
  await expect(a.client.patch(`/v1/process-templates/${template.id}`, { active: true }, { 'if-match': `"${version}"` }), 200)
  const instance = await expect(a.client.post('/v1/process-instances', { templateId: template.id, responsibleUserId: user.id, propertyId: property.id }), 201)
  const keys = await expect(operator.get(`/v1/tenants/${a.id}/api-keys`), 200)
  const revoked = await expect(operator.post(`/v1/tenants/${a.id}/api-keys`, { name: 'old' }), 201)
  await expect(operator.delete(`/v1/tenants/${a.id}/api-keys/${revoked.id}`), 204)
  const hidden = await expect(operator.post('/v1/marketplace-services', { name: 'Hidden', provider: 'Nobody', webhookUrl: 'https://hidden.example/hook', active: false }), 201)
  const claim = signClaim({
    tenantId: a.id, serviceId: service.id, deliveryId: instance.steps[0].delivery.id, propertyId: property.id, addressId: null,
    expiresAt: Math.floor(ctx.clock.now().getTime() / 1000) + 3600
  }, await loadClaimKey(ctx.db, undefined))
  return {
    a, b, user, property, address, service, parameter, trigger, template, templateStep, instance, hidden, claim,
    keyId: keys.items[0].id as string,
    revokedKey: revoked.key as string,
    deliveryId: instance.steps[0].delivery.id as string
  }
}

export type World = Awaited<ReturnType<typeof buildWorld>>

async function expect(response: Promise<Response>, status: number) {
  const r = await response
  if (r.statusCode !== status) throw new Error(`fixture: ${r.statusCode} ${r.body}`)
  return r.data
}

/** A's records by the path they live under, and their ids by path parameter. */
export function ownedIds(world: World): Record<string, Record<string, string>> {
  return {
    '/v1/tenants/': { id: world.a.id, keyId: world.keyId },
    '/v1/users/': { id: world.user.id },
    '/v1/properties/': { id: world.property.id },
    '/v1/addresses/': { id: world.address.id },
    '/v1/process-templates/': { id: world.template.id, stepId: world.templateStep.id },
    '/v1/process-instances/': { id: world.instance.id, stepId: world.instance.steps[0].id },
    '/v1/deliveries/': { id: world.deliveryId }
  }
}
