import { Type, type Static } from 'typebox'
import { PageQuerySchema, StringEnum, Timestamp, Uuid } from '../../schemas/common.js'

/** The furthest a dateReached autostart may start from its date, either way (daysOffset). */
export const MAX_DAYS_OFFSET = 366

/** How many days before today the date chore still checks when workers did not run on them (docs/architecture.md, Autostart). */
export const DATE_CATCH_UP_DAYS = 31

/**
 * How many days after its date (`date:<YYYY-MM-DD>`) a date run may still be looked for, so that the
 * retention keeps it: a pass checks the days from DATE_CATCH_UP_DAYS before today through today, each
 * for the date daysOffset days before it, and a template's offset may change to any within
 * MAX_DAYS_OFFSET (a run for a date, started with offset 0, is looked for again a year later once
 * the offset is 366). One day more for the tenant's today, which is at most a day behind UTC's, and
 * one for a worker whose clock is behind.
 */
export const DATE_RUN_LOOK_BACK_DAYS = MAX_DAYS_OFFSET + DATE_CATCH_UP_DAYS + 2

const Scalar = Type.Union([Type.String({ maxLength: 1000 }), Type.Number(), Type.Boolean(), Type.Null()])

const FilterSchema = Type.Union([
  Type.Object({ eq: Scalar }, { additionalProperties: false }),
  Type.Object({ in: Type.Array(Scalar, { minItems: 1, maxItems: 100 }) }, { additionalProperties: false })
], { description: 'fieldChanged only: the new value equals eq, or is one of in; without a filter any change of the field starts a process' })

export const AutostartSchema = Type.Object(
  {
    on: StringEnum(['recordCreated', 'fieldChanged', 'dateReached'], {
      description: 'recordCreated = a record is created; fieldChanged = a field of a record changes (to a value the filter matches); dateReached = a date field of a record is daysOffset days away from today in the tenant\'s time zone (checked by the scheduler)'
    }),
    record: StringEnum(['property', 'address'], { description: 'The kind of record that starts the process; the process is linked to it' }),
    field: Type.Optional(Type.String({ minLength: 1, maxLength: 200, description: 'fieldChanged and dateReached: the top-level field of the record\'s fields; a date is YYYY-MM-DD (or an ISO timestamp, of which the date counts)' })),
    filter: Type.Optional(FilterSchema),
    daysOffset: Type.Optional(Type.Integer({ minimum: -MAX_DAYS_OFFSET, maximum: MAX_DAYS_OFFSET, description: 'dateReached: start this many days after the date (negative: before); default 0' })),
    ignoreYear: Type.Optional(Type.Boolean({ description: 'dateReached: every year on the day and month of the date (birthdays, anniversaries; 29 February counts on 28 February in other years)' })),
    responsible: Type.Union([Type.Literal('maintainer'), Type.Object({ user: Uuid }, { additionalProperties: false })], {
      description: 'The started process\'s responsible user: the record\'s maintainer (a record without one is skipped), or a named user'
    })
  },
  {
    additionalProperties: false,
    description: 'When the template starts a process by itself, only while it is active; at most one process per template, record and occurrence',
    examples: [{ on: 'fieldChanged', record: 'property', field: 'status', filter: { eq: 'sold' }, responsible: 'maintainer' }]
  }
)
export type Autostart = Static<typeof AutostartSchema>

export const AutostartRunSchema = Type.Object(
  {
    id: Uuid,
    templateId: Uuid,
    record: StringEnum(['property', 'address']),
    recordId: Uuid,
    occurrence: Type.String({ description: 'created, changed:<record version>, or date:<YYYY-MM-DD>: one run per template, record and occurrence' }),
    outcome: StringEnum(['started', 'skipped']),
    reason: Type.Union([Type.String(), Type.Null()], { description: 'Why the run was skipped; null when it started a process' }),
    instanceId: Type.Union([Uuid, Type.Null()], { description: 'The process it started' }),
    createdAt: Timestamp
  },
  { $id: 'AutostartRun', description: 'One occasion on which a template\'s autostart fired' }
)
export type AutostartRun = Static<typeof AutostartRunSchema>

export const ListAutostartRunsQuerySchema = Type.Object({
  ...PageQuerySchema.properties,
  outcome: Type.Optional(StringEnum(['started', 'skipped']))
})
export type ListAutostartRunsQuery = Static<typeof ListAutostartRunsQuerySchema>
