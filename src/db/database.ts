import type { ColumnType, Generated, GeneratedAlways, Insertable, Selectable, Updateable } from './kysely.js'

type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>
type CreatedAt = ColumnType<Date, Date | string | undefined, never>
type Json<T> = ColumnType<T, string | T, string | T>

export type JsonObject = Record<string, unknown>

interface SigningKeysTable {
  name: string
  secret: Buffer
  created_at: CreatedAt
}

interface OperatorKeysTable {
  id: Generated<number>
  key_hash: string
  created_at: CreatedAt
}

interface TenantsTable {
  id: string
  name: string
  web_id: string
  time_zone: Generated<string>
  created_at: CreatedAt
  updated_at: Timestamp
  /** When the operator's deletion of the tenant began; null for a tenant not being deleted (migration 0032). */
  deleting_since: Generated<Date | null>
}

interface ApiKeysTable {
  tenant_id: string
  id: string
  name: string
  key_prefix: string
  key_hash: string
  created_at: CreatedAt
  revoked_at: Date | null
}

interface UsersTable {
  tenant_id: string
  id: string
  name: string
  email: string
  created_at: CreatedAt
  updated_at: Timestamp
}

interface RecordsTable {
  tenant_id: string
  id: string
  maintainer_user_id: string | null
  fields: Json<JsonObject>
  /** The fields as JSON text, in bytes; Postgres keeps it (migration 0006). */
  fields_bytes: GeneratedAlways<number>
  /** The Idempotency-Key of the create that made the record, and a digest of its request (migration 0020). */
  idempotency_key: ColumnType<string | null, string | null | undefined, never>
  idempotency_digest: ColumnType<string | null, string | null | undefined, never>
  version: Generated<number>
  created_at: CreatedAt
  updated_at: Timestamp
}

export type ParameterType = 'string' | 'integer' | 'number' | 'boolean' | 'enum'
export type DeliveryMode = 'query' | 'json'
/** succeeded (2xx), retry (will be tried again), failed (gave up), aborted (cut off before its outcome was known). */
export type AttemptOutcome = 'succeeded' | 'retry' | 'failed' | 'aborted'

export interface MarketplaceServicesTable {
  id: string
  name: string
  provider: string
  webhook_url: string
  delivery: DeliveryMode
  secret: string
  previous_secret: string | null
  previous_secret_expires_at: Date | null
  active: boolean
  version: Generated<number>
  created_at: CreatedAt
  updated_at: Timestamp
}

interface ServiceParametersTable {
  service_id: string
  id: string
  name: string
  label: string
  type: ParameterType
  allowed_values: Json<string[]> | null
  required: boolean
  default_value: Json<unknown> | null
  created_at: CreatedAt
  updated_at: Timestamp
}

export type RecordModule = 'property' | 'address'
export type RecordEvent = 'create' | 'update'

interface ServiceTriggersTable {
  service_id: string
  id: string
  module: RecordModule
  events: RecordEvent[]
  fields: string[]
  created_at: CreatedAt
}

interface ServiceActivationsTable {
  tenant_id: string
  service_id: string
  activated_at: CreatedAt
}

export interface ProcessTemplatesTable {
  tenant_id: string
  id: string
  name: string
  description: Generated<string>
  active: Generated<boolean>
  controller_user_id: string | null
  notify_on_completion: Generated<boolean>
  /** When the template starts itself (migration 0012, src/modules/autostart); null for never. */
  autostart: ColumnType<JsonObject | null, string | null | undefined, string | null>
  /**
   * The last local date whose dateReached occasions were all claimed (migration 0019); the chore reads
   * it as text (autostart/repository.ts). Null on a template of before 0019 until the chore's first pass.
   */
  dates_checked_through: ColumnType<Date | null, never, string | null>
  version: Generated<number>
  created_at: CreatedAt
  updated_at: Timestamp
}

export type StepKind = 'webhook' | 'task' | 'email' | 'writeValues' | 'decision' | 'followUpProcess'
type StartMode = 'afterPrevious' | 'daysAfterPrevious'
type Responsibility = 'processResponsible' | 'propertyMaintainer' | 'addressMaintainer' | 'user'

/** The columns a template step and its copy in a running instance share. */
interface StepDefinitionColumns {
  tenant_id: string
  id: string
  position: number
  kind: StepKind
  name: string
  start_mode: StartMode
  start_days: number | null
  responsibility: Responsibility
  responsible_user_id: string | null
  deadline_days: number | null
  refers_to_property: boolean
  refers_to_address: boolean
  service_id: string | null
  /** A free target instead of a service: all three set, or none (migration 0008). */
  target_url: string | null
  target_delivery: DeliveryMode | null
  /** Sealed with secretContext.stepTarget when BATON_SECRETS_KEY is set. */
  target_secret: string | null
  parameters: Json<JsonObject>
  /** The kind's own settings (migration 0009): an email's texts, a decision's branches…; {} for webhook and task. */
  settings: ColumnType<JsonObject, string | JsonObject | undefined, string | JsonObject>
  version: Generated<number>
}

export interface TemplateStepsTable extends StepDefinitionColumns {
  template_id: string
  created_at: CreatedAt
  updated_at: Timestamp
}

type InstanceStatus = 'running' | 'completed' | 'cancelled'
export type StepState = 'pending' | 'waiting' | 'due' | 'running' | 'done' | 'skipped' | 'failed' | 'cancelled'

interface ProcessInstancesTable {
  tenant_id: string
  id: string
  template_id: string
  template_name: string
  status: Generated<InstanceStatus>
  responsible_user_id: string
  controller_user_id: string
  notify_on_completion: Generated<boolean>
  property_id: string | null
  address_id: string | null
  current_position: number | null
  idempotency_key: string | null
  /** The process whose follow-up step started this one, and that step (migration 0012). */
  parent_instance_id: ColumnType<string | null, string | null | undefined, never>
  parent_step_id: ColumnType<string | null, string | null | undefined, never>
  /** How many processes above this one started it (src/modules/instances/chain.ts; migration 0023). */
  chain_depth: ColumnType<number, number | undefined, never>
  /** The first process of its chain, for a process a follow-up or a process's write started (chain.ts; migration 0030). */
  chain_root_id: ColumnType<string | null, string | null | undefined, never>
  version: Generated<number>
  started_at: Timestamp
  ended_at: Date | null
  created_at: CreatedAt
  updated_at: Timestamp
}

interface InstanceStepsTable extends StepDefinitionColumns {
  instance_id: string
  state: Generated<StepState>
  /** The scheduler runs the step by itself once it is due (src/scheduler/automatic-steps). */
  automatic: Generated<boolean>
  assignee_user_id: string | null
  start_at: Date | null
  started_at: Date | null
  ended_at: Date | null
  deadline_at: Date | null
  deadline_notified_at: Date | null
  note: string | null
  /** The branch a decision step took (migration 0011). */
  decision: Generated<'yes' | 'no' | null>
}

type DeliveryStatus = 'pending' | 'running' | 'succeeded' | 'failed' | 'cancelled'

export interface DeliveriesTable {
  tenant_id: string
  id: string
  /** Null for the call of a step with a free target, which its step holds. */
  service_id: string | null
  source: 'step' | 'trigger'
  instance_id: string | null
  step_id: string | null
  property_id: string | null
  address_id: string | null
  event: RecordEvent | null
  changed_fields: string[] | null
  parameters: Json<JsonObject>
  status: Generated<DeliveryStatus>
  /** A manual retry or replay starts a new round of attempts with a fresh retry budget. */
  round: Generated<number>
  attempt_count: Generated<number>
  next_attempt_at: Timestamp
  lease_owner: string | null
  lease_expires_at: Date | null
  fence: Generated<number>
  last_status_code: number | null
  last_error: string | null
  created_at: CreatedAt
  finished_at: Date | null
  /** A free target's host:port (src/lib/host-key.ts), which a claim leaves out while it is full; null for a service's call. */
  target_host: string | null
  /** How many writers above a trigger's delivery set it off (src/modules/instances/chain.ts; migration 0024). */
  chain_depth: ColumnType<number, number | undefined, never>
  /** The first process of the chain whose write fired a trigger's delivery; null for a person's write (chain.ts; migration 0030). */
  chain_root_id: ColumnType<string | null, string | null | undefined, never>
}

export interface DeliveryAttemptsTable {
  tenant_id: string
  id: string
  delivery_id: string
  round: number
  attempt_number: number
  started_at: Date
  duration_ms: number
  outcome: AttemptOutcome
  status_code: number | null
  error: string | null
  response_body: string | null
}

interface ActivitiesTable {
  tenant_id: string
  id: string
  property_id: string | null
  address_id: string | null
  instance_id: string | null
  step_id: string | null
  service_id: string | null
  kind: string
  message: string
  data: Json<JsonObject>
  created_at: CreatedAt
}

export interface OutboxMailsTable {
  tenant_id: string
  id: string
  dedupe_key: string
  kind: string
  to_address: string
  subject: string
  body: string
  attempt_count: Generated<number>
  next_attempt_at: Timestamp
  lease_expires_at: Date | null
  last_error: string | null
  sent_at: Date | null
  created_at: CreatedAt
  /** The process and step of an email step's mail (migration 0010); null for the controller's mails. */
  instance_id: string | null
  step_id: string | null
  /** The step has yet to hear that its mail was sent or given up. */
  settle_step: Generated<boolean>
  /** A step's mail the SMTP server refused for good: it is not tried again. */
  failed_at: Date | null
  /** The user a controller's mail is for (migration 0028): a claim sends it to that user's address as it is then. */
  to_user_id: string | null
}

export interface AutostartRunsTable {
  tenant_id: string
  id: string
  template_id: string
  record_kind: 'property' | 'address'
  record_id: string
  /** 'created', 'changed:<record version>', 'date:<YYYY-MM-DD>': one run per template, record and occurrence. */
  occurrence: string
  outcome: 'started' | 'skipped'
  reason: string | null
  instance_id: string | null
  created_at: CreatedAt
}

export interface Database {
  operator_keys: OperatorKeysTable
  signing_keys: SigningKeysTable
  tenants: TenantsTable
  api_keys: ApiKeysTable
  users: UsersTable
  properties: RecordsTable
  addresses: RecordsTable
  marketplace_services: MarketplaceServicesTable
  service_parameters: ServiceParametersTable
  service_triggers: ServiceTriggersTable
  service_activations: ServiceActivationsTable
  process_templates: ProcessTemplatesTable
  template_steps: TemplateStepsTable
  process_instances: ProcessInstancesTable
  instance_steps: InstanceStepsTable
  deliveries: DeliveriesTable
  delivery_attempts: DeliveryAttemptsTable
  activities: ActivitiesTable
  outbox_mails: OutboxMailsTable
  autostart_runs: AutostartRunsTable
}

export type TenantRow = Selectable<TenantsTable>
export type NewTenantRow = Insertable<TenantsTable>
export type TenantUpdate = Updateable<TenantsTable>
export type UserRow = Selectable<UsersTable>
export type RecordRow = Selectable<RecordsTable>
export type ServiceRow = Selectable<MarketplaceServicesTable>
export type ParameterRow = Selectable<ServiceParametersTable>
export type TriggerRow = Selectable<ServiceTriggersTable>
export type TemplateRow = Selectable<ProcessTemplatesTable>
export type TemplateStepRow = Selectable<TemplateStepsTable>
export type InstanceRow = Selectable<ProcessInstancesTable>
export type InstanceStepRow = Selectable<InstanceStepsTable>
export type DeliveryRow = Selectable<DeliveriesTable>
export type DeliveryAttemptRow = Selectable<DeliveryAttemptsTable>
