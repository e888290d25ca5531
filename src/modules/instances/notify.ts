import type { DB } from '../../db/connect.js'
import type { InstanceRow, InstanceStepRow } from '../../db/database.js'
import { newId } from '../../lib/ids.js'
import { composeMail, type MailFacts, type MailKind } from './mails.js'
import * as repo from './runtime-repository.js'

export interface MailCause {
  kind: MailKind
  /** Unique per tenant: the same cause queues one mail, however often it is noticed. */
  dedupeKey: string
  step?: InstanceStepRow
  now: Date
  reason?: string
  note?: string | null
}

/** Queues a mail to the process controller in the caller's transaction. */
export async function mailController(db: DB, instance: InstanceRow, cause: MailCause): Promise<void> {
  const controller = await repo.findUser(db, instance.tenant_id, instance.controller_user_id)
  if (!controller) return
  const text = composeMail(cause.kind, { ...(await gatherFacts(db, instance, cause)), recipientName: controller.name })
  await repo.insertOutboxMail(db, {
    tenant_id: instance.tenant_id,
    id: newId(cause.now.getTime()),
    dedupe_key: cause.dedupeKey,
    kind: cause.kind,
    to_address: controller.email,
    subject: text.subject,
    body: text.body,
    next_attempt_at: cause.now
  })
}

async function gatherFacts(db: DB, instance: InstanceRow, cause: MailCause): Promise<Omit<MailFacts, 'recipientName'>> {
  const tenantId = instance.tenant_id
  const [tenant, stepCount, assignee, property, address] = await Promise.all([
    repo.findTenantProfile(db, tenantId),
    repo.countSteps(db, tenantId, instance.id),
    cause.step?.assignee_user_id ? repo.findUser(db, tenantId, cause.step.assignee_user_id) : undefined,
    instance.property_id ? repo.findRecordFields(db, tenantId, 'properties', instance.property_id) : undefined,
    instance.address_id ? repo.findRecordFields(db, tenantId, 'addresses', instance.address_id) : undefined
  ])
  const step = cause.step
  return {
    templateName: instance.template_name,
    instanceId: instance.id,
    timeZone: tenant.time_zone,
    ...(step ? {
      step: {
        name: step.name, position: step.position, stepCount, assigneeName: assignee?.name ?? null,
        startedAt: step.started_at, deadlineAt: step.deadline_at
      }
    } : {}),
    property: property ?? null,
    address: address ?? null,
    ...(cause.kind === 'deadlineMissed' && step?.deadline_at ? { lateMs: cause.now.getTime() - step.deadline_at.getTime() } : {}),
    ...(cause.reason ? { reason: cause.reason } : {}),
    note: cause.note ?? null
  }
}
