import Mustache from 'mustache'
import { Type, type Static } from 'typebox'
import type { JsonObject, StepKind } from '../../../db/database.js'
import type { FieldError } from '../../../errors.js'
import { cutText, oneLine } from '../../../lib/storable.js'
import { StringEnum } from '../../../schemas/common.js'
import { withinSmtpLengths } from '../../../lib/email-lengths.js'

/*
 * The email step kind (issue 12): a mail through the outbox to the step's assignee, the process's
 * controller, the linked address's e-mail field, or a fixed address. Its subject and body are
 * Mustache templates (mustache.js, logic-less) with placeholders from the process, its linked
 * records and the tenant, checked when the step is saved and rendered when the mail is queued.
 */

/** The field of an address record that holds its e-mail address (`to: 'addressEmail'`). */
export const ADDRESS_EMAIL_FIELD = 'email'

const SUBJECT_PATTERN = '^[^\\u0000\\r\\n]*$'
const BODY_PATTERN = '^[^\\u0000]*$'

const EmailSubjectSchema = Type.String({
  minLength: 1, maxLength: 500, pattern: SUBJECT_PATTERN, description: 'A template on one line, e.g. "New valuation for {{property.fields.street}}"'
})
const EmailBodySchema = Type.String({
  minLength: 1, maxLength: 20000, pattern: BODY_PATTERN, description: 'A template of plain text (the mail is text/plain; nothing is HTML-escaped)'
})

export const EmailSettingsSchema = Type.Object(
  {
    mode: StringEnum(['automatic', 'manual'], {
      description: 'automatic = the scheduler sends it when the step starts, and the step is done once the SMTP server took it; ' +
        'manual = the assignee sends it by advancing the step as done, optionally with edited texts'
    }),
    to: Type.Union([
      StringEnum(['assignee', 'controller', 'addressEmail'], {
        description: 'assignee = the step\'s assignee; controller = the process\'s controller; addressEmail = the "email" field of the linked address (needs refersTo.address)'
      }),
      Type.Object({ address: Type.String({ format: 'email', maxLength: 254 }) }, { additionalProperties: false, description: 'A fixed address' })
    ]),
    subject: EmailSubjectSchema,
    body: EmailBodySchema
  },
  {
    additionalProperties: false,
    description: 'An email step\'s mail. Placeholders: {{process.id}}, {{process.templateName}}, {{step.name}}, {{assignee.name}}, ' +
      '{{assignee.email}}, {{controller.name}}, {{controller.email}}, {{responsible.name}}, {{tenant.name}}, {{property.id}}, ' +
      '{{property.fields.NAME}} (needs refersTo.property), {{address.id}}, {{address.fields.NAME}} (needs refersTo.address); ' +
      'a field that is missing renders empty; {{#name}}…{{/name}} shows text only when the value is not empty, false, 0 or an empty list, ' +
      '{{^name}}…{{/name}} only when it is'
  }
)
export type EmailSettings = Static<typeof EmailSettingsSchema>

/** The texts an assignee may change when sending a manual email step (POST …/advance). */
export const EmailEditSchema = Type.Object(
  { subject: Type.Optional(EmailSubjectSchema), body: Type.Optional(EmailBodySchema) },
  { additionalProperties: false, description: 'With outcome done on a manual email step: texts that replace the step\'s subject or body; templates like them' }
)
export type EmailEdit = Static<typeof EmailEditSchema>

/** The settings of an email step as the API shows them, from template_steps.settings or instance_steps.settings. */
export function emailSettingsOf(settings: JsonObject): EmailSettings {
  return settings as unknown as EmailSettings
}

const FIXED_PLACEHOLDERS = new Set([
  'process.id', 'process.templateName', 'step.name', 'assignee.name', 'assignee.email', 'controller.name', 'controller.email',
  'responsible.name', 'tenant.name', 'property.id', 'address.id'
])
const RECORD_FIELD = /^(property|address)\.fields\.[^.\s]+$/

type Token = [string, string, number, number, Token[]?]

// A writer of our own without a cache: tenants' templates are many and would pile up in mustache.js's global one.
const writer = new Mustache.Writer()
;(writer as unknown as { templateCache: undefined }).templateCache = undefined

/** Why a name cannot be used in a template of a step that refers to these records, or undefined. */
function placeholderProblem(name: string, refersTo: { property: boolean; address: boolean }): string | undefined {
  if (!FIXED_PLACEHOLDERS.has(name) && !RECORD_FIELD.test(name)) {
    return `{{${name}}} is not a placeholder: use process.id, process.templateName, step.name, assignee.name, assignee.email, ` +
      'controller.name, controller.email, responsible.name, tenant.name, property.id, property.fields.NAME, address.id or address.fields.NAME'
  }
  const record = name.split('.')[0]
  if (record === 'property' && !refersTo.property) return `{{${name}}} needs a step that refers to the property (refersTo.property: true)`
  if (record === 'address' && !refersTo.address) return `{{${name}}} needs a step that refers to the address (refersTo.address: true)`
  return undefined
}

/** Everything wrong with a subject or body template, each at the pointer given. */
export function templateErrors(template: string, pointer: string, refersTo: { property: boolean; address: boolean }): FieldError[] {
  let tokens: Token[]
  try {
    tokens = writer.parse(template) as unknown as Token[]
  } catch (error) {
    return [{ pointer, detail: `is not a valid template: ${(error as Error).message}` }]
  }
  const errors: FieldError[] = []
  const walk = (list: Token[], inSection: boolean) => {
    for (const [type, value, , , children] of list) {
      if (type === 'text' || type === '!') continue
      if (type === '>' || type === '=') {
        errors.push({ pointer, detail: `{{${type}${value}}}: partials and delimiter changes are not supported` })
        continue
      }
      if (!(inSection && value === '.')) {
        const problem = placeholderProblem(value, refersTo)
        if (problem) errors.push({ pointer, detail: problem })
      }
      // {{#name}} enters its value, so {{.}} inside is that value; {{^name}} enters nothing (its {{.}} would be the whole view).
      if (children) walk(children, type === '#' || inSection)
    }
  }
  walk(tokens, false)
  return errors
}

/**
 * The 422 errors of a step's `email` field: an email step needs it, and valid templates; a step of
 * another kind leaves it null.
 */
export function emailStepErrors(draft: { kind: StepKind; email: EmailSettings | null; refersTo: { property: boolean; address: boolean } }): FieldError[] {
  const email = draft.email
  if (draft.kind !== 'email') {
    return email === null ? [] : [{ pointer: '/body/email', detail: `a ${draft.kind} step sends no mail: leave email null` }]
  }
  if (email === null) return [{ pointer: '/body/email', detail: 'an email step needs its mail: mode, to, subject and body' }]
  const errors: FieldError[] = []
  if (email.to === 'addressEmail' && !draft.refersTo.address) {
    errors.push({ pointer: '/body/email/to', detail: 'addressEmail needs a step that refers to the address (refersTo.address: true)' })
  }
  errors.push(...templateErrors(email.subject, '/body/email/subject', draft.refersTo))
  errors.push(...templateErrors(email.body, '/body/email/body', draft.refersTo))
  return errors
}

/** What the placeholders read: each value a string (a record's field as JSON text when it is not one). */
export interface EmailView {
  process: { id: string; templateName: string }
  step: { name: string }
  assignee: { name: string; email: string }
  controller: { name: string; email: string }
  responsible: { name: string }
  tenant: { name: string }
  property: { id: string; fields: Record<string, unknown> } | null
  address: { id: string; fields: Record<string, unknown> } | null
}

/**
 * Objects without a prototype: Mustache looks names up with `in`, which would otherwise find
 * `constructor` and the like on every object.
 */
function bare(entries: Record<string, unknown>): Record<string, unknown> {
  const object = Object.create(null) as Record<string, unknown>
  for (const [key, value] of Object.entries(entries)) object[key] = value
  return object
}

function fieldText(value: unknown): string {
  if (value === null || value === undefined) return ''
  if (typeof value === 'string') return value
  if (typeof value === 'number' || typeof value === 'boolean') return String(value)
  return JSON.stringify(value)
}

/**
 * A record's field as a placeholder reads it: its text, but false, 0 and an empty list stay as they
 * are, as Mustache holds them false (mustache.js, 0 included) like null and empty text: {{#name}}
 * hides its text for them and {{^name}} shows it. Written, they read as their text (see `written`).
 */
function fieldValue(value: unknown): unknown {
  return value === false || value === 0 || (Array.isArray(value) && value.length === 0) ? value : fieldText(value)
}

function viewObject(view: EmailView): Record<string, unknown> {
  const record = (found: EmailView['property']) => found
    ? bare({ id: found.id, fields: bare(Object.fromEntries(Object.entries(found.fields).map(([k, v]) => [k, fieldValue(v)]))) })
    : bare({ fields: bare({}) })
  return bare({
    process: bare(view.process),
    step: bare(view.step),
    assignee: bare(view.assignee),
    controller: bare(view.controller),
    responsible: bare(view.responsible),
    tenant: bare(view.tenant),
    property: record(view.property),
    address: record(view.address)
  })
}

/**
 * A value as a placeholder writes it: as it is, without HTML escaping, as the mail is plain text; a
 * field's empty list as JSON, like the field's other lists. Another object is the view or a part of
 * it ({{.}} in an inverted section of a step saved before templateErrors refused it): it renders
 * empty instead of throwing.
 */
function written(value: unknown): string {
  if (Array.isArray(value)) return JSON.stringify(value)
  return typeof value === 'object' && value !== null ? '' : String(value)
}
const PLAIN_TEXT = { escape: written }

/*
 * Characters a rendered mail body may take. A body template holds up to 20,000 characters and a
 * record's field up to 256 KiB, so a template repeating a large field rendered hundreds of megabytes
 * into one outbox row, and a scheduler batch renders up to SCHEDULER_BATCH_SIZE mails in one
 * transaction. A million characters hold the template with three of the largest fields in full, far
 * more than a mail needs; a body past it is not sent.
 */
export const RENDERED_BODY_MAX = 1_000_000
/** Characters of a subject rendered before it is made one line and cut to 500: room for collapsed line breaks. */
const RENDERED_SUBJECT_READ = 10_000

/**
 * mustache.js's writer, stopping as soon as the text passes `cap` characters: each list of tokens (a
 * template, a section's content) stops after the token that passed it, and the lists around it stop
 * too, so no text is built much past the cap (a section's part and one value beyond it at most).
 */
class CappedWriter extends Mustache.Writer {
  passed = false

  constructor(private readonly cap: number) {
    super()
    ;(this as unknown as { templateCache: undefined }).templateCache = undefined
  }

  override renderTokens(tokens: string[][], ...rest: Tail<Parameters<Mustache.Writer['renderTokens']>>): string {
    let text = ''
    for (const token of tokens) {
      if (this.passed) break
      text += super.renderTokens([token], ...rest)
      if (text.length > this.cap) this.passed = true
    }
    return text
  }

  override unescapedValue(token: string[], context: Mustache.Context): string {
    const value: unknown = super.unescapedValue(token, context)
    return value === undefined ? '' : written(value)
  }
}
type Tail<T extends unknown[]> = T extends [unknown, ...infer Rest] ? Rest : never

/**
 * mustache.js's context, but a section's context over a text (or a number) has for parent the nearest
 * context over an object, the view at the end: a name other than {{.}} is never found on a text, so
 * the lookup goes on to the view at once. Mustache's own went through every section around it, each a
 * level: sections nested as deep as a body holds (700) took 200 to 300 ms of the event loop a mail.
 */
class SectionContext extends Mustache.Context {
  override push(view: unknown): Mustache.Context {
    const parent = typeof this.view === 'object' && this.view !== null ? this : this.parent!
    return new SectionContext(view, parent)
  }
}

/** Renders a checked template up to about `cap` characters; a placeholder whose value is missing renders empty. */
function renderUpTo(template: string, view: EmailView, cap: number): { text: string; complete: boolean } {
  const capped = new CappedWriter(cap)
  const text = capped.render(template, new SectionContext(viewObject(view)), {}, PLAIN_TEXT)
  return { text, complete: !capped.passed }
}

/** A rendered mail body, or undefined when it passes RENDERED_BODY_MAX characters (rendering stops there). */
export function renderBody(template: string, view: EmailView): string | undefined {
  const { text, complete } = renderUpTo(template, view, RENDERED_BODY_MAX)
  return complete ? text : undefined
}

/** A text with placeholders: a writeValues step renders such a value instead of taking it as it is. */
export function isTemplate(value: unknown): value is string {
  return typeof value === 'string' && value.includes('{{')
}

/** A rendered subject on one line (a field's line breaks become spaces), at most 500 characters. */
export function renderSubject(template: string, view: EmailView): string {
  return cutText(oneLine(renderUpTo(template, view, RENDERED_SUBJECT_READ).text).trim(), 500)
}

// Each side of the @: no space, no control character (C0, DEL or C1) and none that shows as nothing (a
// zero-width space or joiner, the word joiner), which no SMTP server takes as written.
// eslint-disable-next-line no-control-regex -- control characters are what it refuses
const ADDRESS = /^[^\s@<>()[\]\\,;:"\u0000-\u001f\u007f-\u009f\u200b-\u200d\u2060]+@[^\s@<>()[\]\\,;:"\u0000-\u001f\u007f-\u009f\u200b-\u200d\u2060]+$/

/** A plausible e-mail address: one @ with text either side, no spaces or control characters, within what SMTP carries. */
export function isEmailAddress(text: string): boolean {
  return withinSmtpLengths(text) && ADDRESS.test(text)
}
