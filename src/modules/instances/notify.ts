import type { DB } from '../../db/connect.js'
import type { InstanceRow, InstanceStepRow } from '../../db/database.js'
import { newId } from '../../lib/ids.js'
import { composeMail, type MailKind } from './mails.js'
import * as repo from './runtime-repository.js'

export interface MailCause {
  kind: MailKind
  /** Unique per tenant: the same cause queues one mail, however often it is noticed. */
  dedupeKey: string
  step?: InstanceStepRow
  now: Date
  reason?: string
  note?: string | null
  /** A missed deadline's step has ended (MailFacts.ended). */
  ended?: boolean
}

/**
 * Queues a mail to each process's controller in the caller's transaction: the facts of all of them
 * are read in a few statements, whatever their number.
 */
export async function mailControllers(db: DB, items: { instance: InstanceRow; cause: MailCause }[]): Promise<void> {
  if (items.length === 0) return
  const instances = items.map((i) => i.instance)
  const users = [
    ...instances.map((i) => ({ tenant_id: i.tenant_id, id: i.controller_user_id })),
    ...items.flatMap(({ instance, cause }) => cause.step?.assignee_user_id ? [{ tenant_id: instance.tenant_id, id: cause.step.assignee_user_id }] : [])
  ]
  const linked = (column: 'property_id' | 'address_id') => instances.flatMap((i) => i[column] ? [{ tenant_id: i.tenant_id, id: i[column] }] : [])
  const withSteps = items.filter((i) => i.cause.step).map((i) => i.instance)
  const [zones, people, stepCounts, properties, addresses] = await Promise.all([
    repo.findTimeZones(db, instances.map((i) => i.tenant_id)),
    repo.findUsers(db, users),
    repo.countStepsOf(db, withSteps),
    repo.findRecords(db, 'properties', linked('property_id')),
    repo.findRecords(db, 'addresses', linked('address_id'))
  ])
  await repo.insertOutboxMails(db, items.flatMap(({ instance, cause }) => {
    const controller = people.get(instance.controller_user_id)
    if (!controller) return []
    const step = cause.step
    const record = (found: { id: string; fields: Record<string, unknown> } | undefined) => found ? { id: found.id, fields: found.fields } : null
    const text = composeMail(cause.kind, {
      recipientName: controller.name,
      templateName: instance.template_name,
      instanceId: instance.id,
      timeZone: zones.get(instance.tenant_id) ?? 'UTC',
      ...(step ? {
        step: {
          name: step.name, position: step.position, stepCount: stepCounts.get(instance.id) ?? step.position,
          assigneeName: step.assignee_user_id ? people.get(step.assignee_user_id)?.name ?? null : null,
          startedAt: step.started_at, deadlineAt: step.deadline_at
        }
      } : {}),
      property: instance.property_id ? record(properties.get(instance.property_id)) : null,
      address: instance.address_id ? record(addresses.get(instance.address_id)) : null,
      ...(cause.kind === 'deadlineMissed' && step?.deadline_at ? { lateMs: cause.now.getTime() - step.deadline_at.getTime(), ended: cause.ended === true } : {}),
      ...(cause.reason ? { reason: cause.reason } : {}),
      note: cause.note ?? null
    })
    return [{
      tenant_id: instance.tenant_id,
      id: newId(cause.now.getTime()),
      dedupe_key: cause.dedupeKey,
      kind: cause.kind,
      to_address: controller.email,
      to_user_id: instance.controller_user_id,
      subject: text.subject,
      body: text.body,
      next_attempt_at: cause.now
    }]
  }))
}
