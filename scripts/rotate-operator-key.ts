// `npm run admin:rotate-key`: replaces the generated operator key (when BATON_ADMIN_TOKEN is unset).
import { rotateOperatorKey } from '../src/modules/auth/operator-key.js'
import { adminCommand } from './admin-command.js'

await adminCommand(async (database) => {
  const key = await rotateOperatorKey(database.db)
  process.stdout.write(`New operator key (shown once; running Baton processes take it within 2 seconds, and the old one stops working then):\n\n  export BATON_ADMIN_TOKEN=${key}\n\n`)
})
