import type { DB } from '../../db/connect.js'
import type { InstanceRow, InstanceStepRow } from '../../db/database.js'
import { newId } from '../../lib/ids.js'
import { cutText } from '../../lib/storable.js'
import {
  ADDRESS_EMAIL_FIELD, emailSettingsOf, isEmailAddress, renderBody, renderSubject, RENDERED_BODY_MAX, type EmailEdit, type EmailSettings, type EmailView
} from '../templates/steps/email.js'
import * as repo from './runtime-repository.js'

/** A mail of an email step, rendered and addressed, ready for the outbox. */
export interface StepMail {
  to: string
  subject: string
  body: string
}

/**
 * The mail the step sends now, or why it cannot (no assignee, no linked address, no e-mail in it…);
 * `tooLong` when its body renders past RENDERED_BODY_MAX characters.
 */
export type PreparedMail = { mail: StepMail } | { problem: string; tooLong?: true }

/**
 * What a step's placeholders read ({{property.fields.price}}, {{tenant.name}}, …), in a few statements:
 * the people of the process, its tenant, and the linked records the step refers to (the address also
 * when `wantsAddress`, for its e-mail). Email steps and writeValues steps render with it.
 */
export async function readStepView(db: DB, instance: InstanceRow, step: InstanceStepRow, wantsAddress = step.refers_to_address) {
  const tenantId = instance.tenant_id
  const userIds = [instance.controller_user_id, instance.responsible_user_id, ...(step.assignee_user_id ? [step.assignee_user_id] : [])]
  const [tenant, users, properties, addresses] = await Promise.all([
    db.selectFrom('tenants').select('name').where('id', '=', tenantId).executeTakeFirst(),
    repo.findUsers(db, userIds.map((id) => ({ tenant_id: tenantId, id }))),
    step.refers_to_property && instance.property_id ? repo.findRecords(db, 'properties', [{ tenant_id: tenantId, id: instance.property_id }]) : undefined,
    wantsAddress && instance.address_id ? repo.findRecords(db, 'addresses', [{ tenant_id: tenantId, id: instance.address_id }]) : undefined
  ])
  const person = (id: string | null) => (id ? users.get(id) : undefined)
  const assignee = person(step.assignee_user_id)
  const controller = person(instance.controller_user_id)
  const property = instance.property_id ? properties?.get(instance.property_id) : undefined
  const address = instance.address_id ? addresses?.get(instance.address_id) : undefined
  const view: EmailView = {
    process: { id: instance.id, templateName: instance.template_name },
    step: { name: step.name },
    assignee: { name: assignee?.name ?? '', email: assignee?.email ?? '' },
    controller: { name: controller?.name ?? '', email: controller?.email ?? '' },
    responsible: { name: person(instance.responsible_user_id)?.name ?? '' },
    tenant: { name: tenant?.name ?? '' },
    property: step.refers_to_property && property ? { id: property.id, fields: property.fields } : null,
    address: step.refers_to_address && address ? { id: address.id, fields: address.fields } : null
  }
  return { view, assignee, controller, address }
}

/**
 * Renders the step's mail from the process, its linked records and the tenant as they are now, and
 * finds its recipient. `edit` replaces the subject or body (a manual step's texts as the assignee
 * changed them; checked by the caller). Reads in a few statements, in the caller's transaction.
 */
export async function prepareStepMail(db: DB, instance: InstanceRow, step: InstanceStepRow, edit: EmailEdit = {}): Promise<PreparedMail> {
  const settings = emailSettingsOf(step.settings)
  const { view, assignee, controller, address } = await readStepView(db, instance, step, step.refers_to_address || settings.to === 'addressEmail')
  const recipient = recipientOf(settings, instance, { assignee, controller, address })
  if ('problem' in recipient) return recipient
  const body = renderBody(edit.body ?? settings.body, view)
  if (body === undefined) {
    return { problem: `the body renders to more than ${RENDERED_BODY_MAX.toLocaleString('en')} characters (the fields it shows are too large)`, tooLong: true }
  }
  return { mail: { to: recipient.to, subject: renderSubject(edit.subject ?? settings.subject, view), body } }
}

function recipientOf(
  settings: EmailSettings, instance: InstanceRow,
  found: { assignee: { email: string } | undefined; controller: { email: string } | undefined; address: { fields: Record<string, unknown> } | undefined }
): { to: string } | { problem: string } {
  // A field may hold 256 KiB: the reason (an activity, the controller's mail, a 409) shows its start.
  const shown = (to: string) => to.length > 200 ? `${JSON.stringify(cutText(to, 200)).slice(0, -1)}…" (${to.length.toLocaleString('en')} characters)` : JSON.stringify(to)
  const checked = (to: string, who: string) => isEmailAddress(to) ? { to } : { problem: `${who} ${shown(to)} is not an e-mail address` }
  switch (settings.to) {
    case 'assignee':
      return found.assignee ? checked(found.assignee.email, 'the assignee\'s e-mail') : { problem: 'the step has no assignee to mail' }
    case 'controller':
      return found.controller ? checked(found.controller.email, 'the controller\'s e-mail') : { problem: 'the process has no controller to mail' }
    case 'addressEmail': {
      if (!instance.address_id) return { problem: 'the process has no linked address to mail' }
      if (!found.address) return { problem: `the linked address ${instance.address_id} no longer exists` }
      const value = found.address.fields[ADDRESS_EMAIL_FIELD]
      if (value === null || value === undefined || (typeof value === 'string' && value.trim() === '')) {
        return { problem: `the linked address has no e-mail (its field "${ADDRESS_EMAIL_FIELD}" is empty)` }
      }
      // A number, a list or an object is no address, and no empty field either: the reason shows it as the JSON it is.
      if (typeof value !== 'string') {
        const json = JSON.stringify(value)
        return { problem: `the linked address's field "${ADDRESS_EMAIL_FIELD}" holds ${json.length > 200 ? `${cutText(json, 200)}…` : json}, which is not an e-mail address` }
      }
      return checked(value.trim(), `the linked address's field "${ADDRESS_EMAIL_FIELD}"`)
    }
    default:
      return checked(settings.to.address, 'the fixed recipient')
  }
}

/**
 * Queues the step's mail in the caller's transaction, once per step however often it is tried (its
 * dedupe key names the step). The scheduler tells the step when the SMTP server took it or refused it
 * for good (settle_step, src/scheduler/email-steps.ts).
 */
export async function queueStepMail(db: DB, now: Date, instance: InstanceRow, step: InstanceStepRow, mail: StepMail): Promise<void> {
  await repo.insertOutboxMails(db, [{
    tenant_id: instance.tenant_id,
    id: newId(now.getTime()),
    dedupe_key: `emailStep:${step.id}`,
    kind: 'emailStep',
    to_address: mail.to,
    subject: mail.subject,
    body: mail.body,
    next_attempt_at: now,
    instance_id: instance.id,
    step_id: step.id,
    settle_step: true
  }])
}
