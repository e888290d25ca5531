import { hostname } from 'node:os'
import { randomBytes } from 'node:crypto'
import type { Clock } from '../adapters/clock.js'
import { parseAllowedTargets } from '../adapters/address-policy.js'
import { createHttpClient } from '../adapters/http-client.js'
import { createMailer } from '../adapters/mailer.js'
import type { Config } from '../config.js'
import type { DatabaseHandle } from '../db/connect.js'
import { WORK_CHANNEL } from '../db/wakeups.js'
import { VERSION } from '../version.js'
import { DEFAULT_RETRY_POLICY } from './retry-policy.js'
import { loadClaimKey } from '../modules/auth/claim-key.js'
import type { Logger } from '../lib/logger.js'
import { once } from '../lib/once.js'
import type { BatonMetrics } from '../lib/metrics.js'
import { createSecretBox } from '../lib/secret-box.js'
import { createScheduler, type Scheduler } from './scheduler.js'

export { WORK_CHANNEL } from '../db/wakeups.js'

/** Wires the scheduler to the outside world from the configuration. */
export function buildScheduler(config: Config, database: DatabaseHandle, clock: Clock, log: Logger, metrics: BatonMetrics): Scheduler {
  const userAgent = `Baton/${VERSION}`
  const http = createHttpClient({
    maxBodyBytes: config.WEBHOOK_MAX_BODY_BYTES,
    maxSockets: config.SCHEDULER_CONCURRENCY,
    userAgent,
    allowPrivateNetworks: config.WEBHOOK_ALLOW_PRIVATE_NETWORKS,
    allowedTargets: parseAllowedTargets(config.WEBHOOK_ALLOWED_TARGETS)
  })
  if (config.WEBHOOK_ALLOW_PRIVATE_NETWORKS) {
    log.warn({}, 'WEBHOOK_ALLOW_PRIVATE_NETWORKS is on: webhooks may reach loopback, private and metadata addresses')
  } else if (config.WEBHOOK_ALLOWED_TARGETS) {
    log.info({ allowedTargets: config.WEBHOOK_ALLOWED_TARGETS }, 'webhooks may reach these private targets')
  }
  const mailer = createMailer({ smtpUrl: config.SMTP_URL, mailDir: `${config.BATON_DATA_DIR}/mail`, log })
  const secrets = createSecretBox(config.BATON_SECRETS_KEY, config.BATON_SECRETS_KEY_PREVIOUS)
  const scheduler = createScheduler({
    db: database.db,
    clock,
    http,
    mailer,
    log,
    workerId: config.BATON_WORKER_ID ?? `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`,
    settings: {
      pollIntervalMs: config.SCHEDULER_POLL_INTERVAL_MS,
      batchSize: config.SCHEDULER_BATCH_SIZE,
      concurrency: config.SCHEDULER_CONCURRENCY,
      leaseMs: config.SCHEDULER_LEASE_MS,
      timeoutMs: config.WEBHOOK_TIMEOUT_MS,
      mailFrom: config.MAIL_FROM,
      userAgent,
      policy: { ...DEFAULT_RETRY_POLICY, maxAttempts: config.WEBHOOK_MAX_ATTEMPTS },
      claimTtlMs: config.API_CLAIM_TTL_MS,
      perHostConcurrency: config.WEBHOOK_PER_HOST_CONCURRENCY,
      retentionDays: config.BATON_RETENTION_DAYS
    },
    claimKey: once(() => loadClaimKey(database.db, config.BATON_CLAIM_SECRET, secrets)),
    secrets,
    session: () => database.session({ timeouts: true }),
    listen: (onWork) => database.listen(WORK_CHANNEL, onWork),
    metrics,
    // One process holds the embedded database: claims left at its start are a crashed process's.
    soleWorker: database.kind === 'embedded'
  })
  return {
    ...scheduler,
    async stop(graceMs) {
      await scheduler.stop(graceMs)
      http.close()
      mailer.close()
    }
  }
}
