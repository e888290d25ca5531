import { sql } from '../db/kysely.js'
import type { DB } from '../db/connect.js'
import type { DeliveryMode } from '../db/database.js'
import type { DeliveryCall } from './webhook-request.js'
import { triggerStillWants } from '../modules/records/trigger-repository.js'
import { tenantNotDeleting } from './tenant-not-deleting.js'

/** A delivery this worker holds a lease on, with what its call needs. */
export interface ClaimedDelivery extends DeliveryCall {
  tenantId: string
  /** Null for a step with a free target: its URL, secret and mode come from the instance step. */
  serviceId: string | null
  source: 'step' | 'trigger'
  round: number
  attempt: number
  fence: number
  /** When this worker's claim runs out and the reaper may hand the delivery to another worker. */
  leaseExpiresAt: Date
  /** When this attempt fell due: the call's lag is measured from it. */
  dueAt: Date
  mode: DeliveryMode
  timeZone: string
  /** The service's name, or a free target's host. */
  serviceName: string
  /**
   * `withdrawn`: the tenant deactivated the service (deleted its activation) after the delivery was
   * queued (cancelWithdrawnDeliveries); `inactive`: the operator deactivated the service, or a free
   * target's step has no target. Either way its call is not made.
   */
  serviceState: 'usable' | 'withdrawn' | 'inactive'
  /** When the tenant activated the service (null without an activation or a service): its apiClaim names that activation. */
  activatedAt: Date | null
  /** A trigger's record deleted since it was queued (cancelTriggeredDeliveries): its call is not made. */
  recordGone: boolean
  /** A trigger's change that none of its service's triggers matches any more (cancelUnwantedDeliveries): its call is not made. */
  triggerGone: boolean
}

/**
 * Claims due deliveries with `FOR UPDATE SKIP LOCKED`, so workers never take the same row: each
 * claim is a lease that expires, and bumps the fence that completion must present. The steps of the
 * claimed deliveries turn `running` in the same statement. A tenant being deleted (tenants.deleting_since)
 * has none claimed: its provider is not called for it, nor given an apiClaim that would be refused,
 * and its deliveries stay pending until the deletion takes them. The check is one look-up by the
 * tenants' key per due delivery read (test/db/foreign-key-plans.test.ts).
 *
 * The claimed rows are counted by a constant the planner reads (`limit` of a power of two at least
 * the claim's limit, which never cuts a row). With the limit only a parameter, a kept plan over
 * finished rows it had not analyzed (autovacuum off, a burst below its threshold) guessed hundreds of
 * claimed rows: beside 1,000,000 finished deliveries and 100,000 finished steps, it hashed every step
 * for the final read, and its cost passed `jit_above_cost`. The steps turn running by key: the state
 * they must still be in comes from a subquery's rows, not as a constant that a partial index of
 * open steps (instance_steps_open_idx; instance_steps_assignee_idx before migration 0031) would match. Its kept plan
 * walked that index once per claimed step: 10 ms a claim of 40 beside 100,000 finished deliveries, against 2. The subquery's
 * `limit` also keeps it from being merged into the update, which would bring the constant back. A
 * steps table the planner believes small is still read once and hashed, which is cheap at that size
 * (test/db/foreign-key-plans.test.ts).
 */
export interface ClaimOptions {
  workerId: string
  now: Date
  leaseMs: number
  limit: number
  /** Services whose host is full at this worker: not now. */
  skipServices?: string[]
  /** Hosts full at this worker (src/lib/host-key.ts): their free targets' deliveries (deliveries.target_host) not now. */
  skipHosts?: string[]
  /**
   * Only these services' deliveries and these hosts' free targets' (a host whose line at this worker
   * has a few places left). Written so that no index of service_id can serve it: whatever the
   * statistics say, a kept plan reads the due deliveries, never a service's whole history through
   * deliveries_service_idx (test/db/foreign-key-plans.test.ts).
   */
  only?: { services: string[]; hosts: string[] }
}

export async function claimDeliveries(db: DB, options: ClaimOptions): Promise<ClaimedDelivery[]> {
  const { rows } = await claimStatement(options).execute(db)
  return rows
}

/** The claim's statement (claimDeliveries), on its own for a look at its plan. */
export function claimStatement(options: ClaimOptions) {
  const leaseUntil = new Date(options.now.getTime() + options.leaseMs)
  const bound = sql.lit(expectedAtMost(options.limit))
  return sql<ClaimedDelivery>`
    with picked as (
      select tenant_id, id, step_id from deliveries
      where status = 'pending' and next_attempt_at <= ${options.now}
        and (service_id is null or service_id <> all (${options.skipServices ?? []}::uuid[]))
        ${options.skipHosts?.length ? sql`and (target_host is null or target_host <> all (${options.skipHosts}::text[]))` : sql``}
        ${options.only ? sql`and ${onlyOf(options.only)}` : sql``}
        and ${tenantNotDeleting('deliveries.tenant_id')}
      order by next_attempt_at
      limit ${options.limit}
      for update skip locked
    ), claimed as (
      update deliveries d
      set status = 'running', lease_owner = ${options.workerId}, lease_expires_at = ${leaseUntil},
          fence = d.fence + 1, attempt_count = d.attempt_count + 1
      from picked
      where d.tenant_id = picked.tenant_id and d.id = picked.id
      returning d.*
    ), running_steps as (
      update instance_steps st set state = 'running'
      from (select p.tenant_id, p.step_id, 'due'::text as due from picked p where p.step_id is not null limit ${bound}) k
      where st.tenant_id = k.tenant_id and st.id = k.step_id and st.state = k.due
    )
    select c.tenant_id as "tenantId", c.id, c.service_id as "serviceId", c.source, c.instance_id as "instanceId",
      c.step_id as "stepId", c.property_id as "propertyId", c.address_id as "addressId", c.event,
      c.changed_fields as "changedFields", ${parametersNow}, c.round, c.attempt_count as attempt, c.fence,
      c.lease_expires_at as "leaseExpiresAt", c.next_attempt_at as "dueAt",
      coalesce(s.webhook_url, st.target_url) as "webhookUrl", coalesce(s.secret, st.target_secret) as secret,
      coalesce(s.delivery, st.target_delivery) as mode,
      case when s.previous_secret_expires_at > ${options.now} then s.previous_secret end as "previousSecret",
      coalesce(s.name, substring(st.target_url from '^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]+)')) as "serviceName",
      case when c.service_id is null then (case when st.target_url is not null then 'usable' else 'inactive' end)
        when a.service_id is null then 'withdrawn'
        when s.active then 'usable' else 'inactive' end as "serviceState",
      a.activated_at as "activatedAt",
      c.source = 'trigger' and (
        (c.property_id is not null and not exists (select 1 from properties r where r.tenant_id = c.tenant_id and r.id = c.property_id))
        or (c.address_id is not null and not exists (select 1 from addresses r where r.tenant_id = c.tenant_id and r.id = c.address_id))
      ) as "recordGone",
      c.source = 'trigger' and not ${triggerStillWants('c')} as "triggerGone",
      t.web_id as "customerWebId", t.name as "customerName", t.time_zone as "timeZone",
      st.assignee_user_id as "assigneeUserId"
    from (select * from claimed limit ${bound}) c
    left join marketplace_services s on s.id = c.service_id
    left join service_activations a on a.tenant_id = c.tenant_id and a.service_id = c.service_id
    join tenants t on t.id = c.tenant_id
    left join instance_steps st on st.tenant_id = c.tenant_id and st.id = c.step_id
  `
}

/**
 * A service's call goes out with the service's parameters as they are when it is made (README: The API
 * in brief), not as they were when its step started or its trigger fired: a parameter added since with
 * a default is carried with it (the default of one made required that way, which the steps still to
 * call were let pass without), and one deleted since, which no step still to call passed (its
 * deletion answers 409 otherwise), is no longer sent. A free target's parameters are its step's own.
 */
const parametersNow = sql`case when c.service_id is null then c.parameters else coalesce((
    select jsonb_object_agg(p.name, coalesce(c.parameters -> p.name, p.default_value)) from service_parameters p
    where p.service_id = c.service_id and (c.parameters ? p.name or p.default_value is not null)
  ), '{}'::jsonb) end as parameters`

/** The deliveries of these services and these hosts' free targets only (a claim apart for one host). */
function onlyOf({ services, hosts }: { services: string[]; hosts: string[] }) {
  const ofServices = sql`array[service_id] <@ ${services}::uuid[]`
  const ofHosts = sql`array[target_host] <@ ${hosts}::text[]`
  if (hosts.length === 0) return ofServices
  return services.length === 0 ? ofHosts : sql`(${ofServices} or ${ofHosts})`
}

/**
 * A bound on the rows of a claim that the planner can read (a constant, where the limit is a
 * parameter that a kept plan guesses at): the next power of two, so a worker prepares a handful of
 * texts, not one for each limit.
 */
function expectedAtMost(limit: number): number {
  let bound = 1
  while (bound < limit) bound *= 2
  return bound
}
