import t from 'tap'
import { validateStepParameters, type ParameterDefinition } from '../../../src/modules/templates/steps/parameters.js'

const definition = (d: Partial<ParameterDefinition> & Pick<ParameterDefinition, 'name' | 'type'>): ParameterDefinition =>
  ({ allowedValues: null, required: false, default: undefined, ...d })

const definitions = [
  definition({ name: 'mode', type: 'enum', allowedValues: ['full', 'quick'], required: true }),
  definition({ name: 'rooms', type: 'integer', default: 3 }),
  definition({ name: 'factor', type: 'number' }),
  definition({ name: 'notify', type: 'boolean', default: false }),
  definition({ name: 'comment', type: 'string' })
]

t.test('valid parameters pass and missing optional ones get their defaults', async (t) => {
  const result = validateStepParameters(definitions, { mode: 'quick', factor: 1.5, comment: 'hi' })
  t.same(result.errors, [])
  t.same(result.parameters, { mode: 'quick', factor: 1.5, comment: 'hi', rooms: 3, notify: false })
})

t.test('given values win over defaults; optional ones without a default stay missing', async (t) => {
  const result = validateStepParameters(definitions, { mode: 'full', rooms: 5, notify: true })
  t.same(result.parameters, { mode: 'full', rooms: 5, notify: true })
})

t.test('an unknown name is named', async (t) => {
  const result = validateStepParameters(definitions, { mode: 'full', colour: 'red' })
  t.same(result.errors, [{ pointer: '/body/parameters/colour', detail: 'is not a parameter of the service (it takes mode, rooms, factor, notify, comment)' }])
})

t.test('a service without parameters takes none', async (t) => {
  t.match(validateStepParameters([], { x: 1 }).errors, [{ pointer: '/body/parameters/x', detail: /takes none/ }])
})

t.test('each type is checked', async (t) => {
  const result = validateStepParameters(definitions, { mode: 'slow', rooms: 2.5, factor: '1', notify: 'yes', comment: 7 })
  t.same(result.errors.map((e) => [e.pointer, e.detail]), [
    ['/body/parameters/mode', 'must be one of "full", "quick"'],
    ['/body/parameters/rooms', 'must be an integer'],
    ['/body/parameters/factor', 'must be a number'],
    ['/body/parameters/notify', 'must be a boolean'],
    ['/body/parameters/comment', 'must be a string']
  ])
})

t.test('strings cannot hold the NUL character', async (t) => {
  t.match(validateStepParameters(definitions, { mode: 'full', comment: 'a\u0000' }).errors, [{ pointer: '/body/parameters/comment', detail: /NUL/ }])
})

t.test('null is not a value of any type', async (t) => {
  t.equal(validateStepParameters(definitions, { mode: 'full', comment: null }).errors.length, 1)
})

t.test('a required parameter must be given', async (t) => {
  t.same(validateStepParameters(definitions, {}).errors, [{ pointer: '/body/parameters/mode', detail: 'is required by the service' }])
})

t.test('names are escaped in the pointer', async (t) => {
  t.equal(validateStepParameters([], { 'a/b~c': 1 }).errors[0]?.pointer, '/body/parameters/a~1b~0c')
})

t.test('an edit of a step saved before a required parameter with a default was added takes its default', async (t) => {
  const withDefault = [...definitions, definition({ name: 'language', type: 'enum', allowedValues: ['de', 'en'], required: true, default: 'de' })]
  const saved = { mode: 'quick', rooms: 3, notify: false }
  t.same(validateStepParameters(withDefault, saved, saved), { parameters: { ...saved, language: 'de' }, errors: [] })
  t.same(validateStepParameters(withDefault, saved).errors, [{ pointer: '/body/parameters/language', detail: 'is required by the service' }], 'a new step passes it')
  t.same(validateStepParameters(withDefault, saved, { ...saved, language: 'en' }).errors.map((e) => e.pointer), ['/body/parameters/language'],
    'one the step passed before is still required')
  t.same(validateStepParameters(withDefault, { rooms: 3 }, saved).errors.map((e) => e.pointer), ['/body/parameters/mode'], 'one without a default too')
})
