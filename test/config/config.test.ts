import t from 'tap'
import { ConfigError, loadConfig } from '../../src/config.js'

t.test('WEBHOOK_ALLOWED_TARGETS takes host names and CIDR ranges; a bad entry names the variable', async (t) => {
  t.equal(loadConfig({}).WEBHOOK_ALLOWED_TARGETS, '', 'empty by default')
  t.equal(loadConfig({ WEBHOOK_ALLOWED_TARGETS: '127.0.0.1/32,provider.internal' }).WEBHOOK_ALLOWED_TARGETS, '127.0.0.1/32,provider.internal')
  for (const bad of ['10.0.0.0/33', 'provider.internal:8080', '10.0.0.1/8']) {
    t.throws(() => loadConfig({ WEBHOOK_ALLOWED_TARGETS: bad }), ConfigError, bad)
    t.throws(() => loadConfig({ WEBHOOK_ALLOWED_TARGETS: bad }), { message: new RegExp(`WEBHOOK_ALLOWED_TARGETS: "${bad}" `) }, bad)
  }
})
