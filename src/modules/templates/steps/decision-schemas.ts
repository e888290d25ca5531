import { Type, type Static } from 'typebox'
import { StringEnum } from '../../../schemas/common.js'
import { ExpressionRef } from '../expressions/schema.js'

/*
 * The settings of writeValues and decision steps as the API shows and takes them (the field named
 * after the kind on a step); template_steps.settings holds them as they are.
 */

const Branch = Type.Union([Type.Integer({ minimum: 1 }), Type.Null()], {
  description: 'The position of the step the process continues at, after the decision\'s own; null ends the process'
})

export const DecisionSchema = Type.Object(
  {
    mode: StringEnum(['automatic', 'manual'], {
      description: 'automatic = the scheduler evaluates the condition; manual = the assignee advances with "decision": "yes" or "no"'
    }),
    condition: Type.Optional(Type.Union([ExpressionRef, Type.Null()], {
      description: 'automatic: true takes yes, false takes no (needed unless yes and no are the same step, a plain jump)'
    })),
    yes: Branch,
    no: Branch
  },
  {
    additionalProperties: false,
    description: 'A decision step\'s branches and condition; null for other kinds. Branches point forward; steps jumped over are skipped',
    examples: [{ mode: 'automatic', condition: { lt: [{ field: 'property.marketValue' }, { multiply: [{ field: 'property.price' }, 0.9] }] }, yes: 4, no: 6 }]
  }
)
export type Decision = Static<typeof DecisionSchema>

const RecordName = StringEnum(['property', 'address'])

export const WriteValuesSchema = Type.Object(
  {
    values: Type.Array(Type.Object({
      record: RecordName,
      field: Type.String({ minLength: 1, maxLength: 200, description: 'A top-level field of the record; a null value removes it' }),
      value: ExpressionRef
    }, { additionalProperties: false }), { minItems: 1, maxItems: 50 })
  },
  {
    additionalProperties: false,
    description: 'The fields a writeValues step sets on the linked records, each an expression evaluated when the step runs; null for other kinds',
    examples: [{ values: [
      { record: 'property', field: 'valuationRequestedOn', value: { today: {} } },
      { record: 'property', field: 'askingPrice', value: { multiply: [{ field: 'property.marketValue' }, 1.05] } }
    ] }]
  }
)
export type WriteValues = Static<typeof WriteValuesSchema>

/** The branch a decision took, on an instance's decision step. */
export const InstanceDecisionSchema = Type.Object(
  {
    ...DecisionSchema.properties,
    chosen: Type.Union([StringEnum(['yes', 'no']), Type.Null()], { description: 'The branch taken; null until the step is decided' })
  },
  { description: 'A decision step\'s settings as copied from the template, and the branch it took' }
)
