// Migration 0022 gives the free targets' deliveries of before it their host (deliveries.target_host),
// as a start now writes it: a worker leaves a full host's free targets out of its claims by it.
import pg from 'pg'
import t from 'tap'
import type { Kysely } from '../../src/db/kysely.js'
import { fillTargetHosts } from '../../migrations/0022_delivery_target_host.js'
import { createTestDatabase, databaseUrl } from '../helpers/database.js'

t.test('the free targets\' deliveries of before get the host their step calls, a batch at a time', async (t) => {
  const database = await createTestDatabase()
  t.teardown(() => database.drop())
  const client = new pg.Client({ connectionString: databaseUrl(database.name) })
  await client.connect()
  t.teardown(() => client.end())
  await client.query('set session_replication_role = replica') // no triggers: rows without their tenant and process
  const tenant = '00000000-0000-7000-8000-000000000001'
  const service = '00000000-0000-7000-8000-000000000002'
  const urls = ['https://Crm.Example/hooks/a?x=1', 'http://crm.example:8080/b', 'http://[::1]:9000/c', 'https://crm.example:443/d', 'not a url']
  const { rows: steps } = await client.query<{ id: string; target_url: string }>(`
    insert into instance_steps (tenant_id, id, instance_id, position, kind, name, start_mode, responsibility, refers_to_property,
      refers_to_address, state, target_url, target_delivery, target_secret)
    select $1, gen_random_uuid(), gen_random_uuid(), 1, 'webhook', 'step', 'afterPrevious', 'processResponsible', false, false, 'done', url, 'query', 'sealed'
    from unnest($2::text[]) url
    returning id, target_url`, [tenant, urls])
  const insert = (serviceId: string | null, stepId: string, host: string | null) => client.query<{ id: string }>(`
    insert into deliveries (tenant_id, id, service_id, source, step_id, parameters, status, next_attempt_at, target_host)
    values ($1, gen_random_uuid(), $2, 'step', $3, '{}', 'succeeded', now(), $4) returning id`, [tenant, serviceId, stepId, host])
  for (const step of steps) await insert(null, step.id, null)
  await insert(service, steps[0]!.id, null)
  await insert(null, steps[1]!.id, 'kept.example:80')

  t.equal(await fillTargetHosts(database.db as unknown as Kysely<unknown>, 2), 4, 'four given a host, in batches of two')
  const { rows } = await client.query<{ target_url: string; service_id: string | null; target_host: string | null }>(`
    select st.target_url, d.service_id, d.target_host from deliveries d join instance_steps st on st.id = d.step_id
    order by st.target_url, d.service_id nulls first, d.target_host`)
  t.same(rows.map((r) => [r.target_url, r.service_id === null ? 'free' : 'service', r.target_host]), [
    ['http://[::1]:9000/c', 'free', '[::1]:9000'],
    ['http://crm.example:8080/b', 'free', 'crm.example:8080'],
    ['http://crm.example:8080/b', 'free', 'kept.example:80'],
    ['https://Crm.Example/hooks/a?x=1', 'free', 'crm.example:443'],
    ['https://Crm.Example/hooks/a?x=1', 'service', null],
    ['https://crm.example:443/d', 'free', 'crm.example:443'],
    ['not a url', 'free', null]
  ], 'the host as the per-host limit counts it; a service\'s delivery, one already set and a URL that is none left alone')
  t.equal(await fillTargetHosts(database.db as unknown as Kysely<unknown>, 2), 0, 'run again: nothing left to fill')
})
