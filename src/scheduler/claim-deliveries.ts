import { sql } from '../db/kysely.js'
import type { DB } from '../db/connect.js'
import type { DeliveryMode } from '../db/database.js'
import type { DeliveryCall } from './webhook-request.js'

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
  /** False when the service was deactivated, or the tenant's activation withdrawn, after the delivery was queued. */
  serviceUsable: boolean
}

/**
 * Claims due deliveries with `FOR UPDATE SKIP LOCKED`, so workers never take the same row: each
 * claim is a lease that expires, and bumps the fence that completion must present. The steps of the
 * claimed deliveries turn `running` in the same statement.
 *
 * Every step, tenant and service is found by its primary key whatever the statistics say (issue 9:
 * finished rows the planner has not analyzed). The steps turn running by key: the state they must
 * still be in comes from each row, not as a constant that a partial index of open steps would match
 * (the kept plan walked `instance_steps_assignee_idx` once per claimed step, 10 ms a claim of 40
 * beside 100,000 finished deliveries), and their number is bounded by a constant the planner reads
 * (with the limit only a parameter, it guessed hundreds and hashed every step). The final read looks
 * each one up on its own (`offset 0`), where a plain join hashed all steps (test/db/foreign-key-plans.test.ts).
 */
export interface ClaimOptions {
  workerId: string
  now: Date
  leaseMs: number
  limit: number
  /** Services whose host already has as many calls waiting at this worker as it may make: not now. */
  skipServices?: string[]
}

export async function claimDeliveries(db: DB, options: ClaimOptions): Promise<ClaimedDelivery[]> {
  const { rows } = await claimStatement(options).execute(db)
  return rows
}

/** The claim's statement (claimDeliveries), on its own for a look at its plan. */
export function claimStatement(options: ClaimOptions) {
  const leaseUntil = new Date(options.now.getTime() + options.leaseMs)
  return sql<ClaimedDelivery>`
    with picked as (
      select tenant_id, id, step_id from deliveries
      where status = 'pending' and next_attempt_at <= ${options.now}
        and (service_id is null or service_id <> all (${options.skipServices ?? []}::uuid[]))
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
      from (select p.tenant_id, p.step_id, 'due'::text as due from picked p where p.step_id is not null limit ${sql.lit(expectedAtMost(options.limit))}) k
      where st.tenant_id = k.tenant_id and st.id = k.step_id and st.state = k.due
    )
    select c.tenant_id as "tenantId", c.id, c.service_id as "serviceId", c.source, c.instance_id as "instanceId",
      c.step_id as "stepId", c.property_id as "propertyId", c.address_id as "addressId", c.event,
      c.changed_fields as "changedFields", c.parameters, c.round, c.attempt_count as attempt, c.fence,
      c.lease_expires_at as "leaseExpiresAt", c.next_attempt_at as "dueAt",
      coalesce(s.webhook_url, st.target_url) as "webhookUrl", coalesce(s.secret, st.target_secret) as secret,
      coalesce(s.delivery, st.target_delivery) as mode,
      case when s.previous_secret_expires_at > ${options.now} then s.previous_secret end as "previousSecret",
      coalesce(s.name, substring(st.target_url from '^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]+)')) as "serviceName",
      case when c.service_id is null then st.target_url is not null
        else s.active and exists (select 1 from service_activations a where a.tenant_id = c.tenant_id and a.service_id = c.service_id) end as "serviceUsable",
      t.web_id as "customerWebId", t.name as "customerName", t.time_zone as "timeZone",
      st.assignee_user_id as "assigneeUserId"
    from claimed c
    cross join lateral (select web_id, name, time_zone from tenants x where x.id = c.tenant_id offset 0) t
    left join lateral (
      select name, webhook_url, secret, previous_secret, previous_secret_expires_at, delivery, active
      from marketplace_services x where x.id = c.service_id offset 0
    ) s on true
    left join lateral (
      select target_url, target_secret, target_delivery, assignee_user_id
      from instance_steps x where x.tenant_id = c.tenant_id and x.id = c.step_id offset 0
    ) st on true
  `
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
