import { sql, type Kysely } from '../src/db/kysely.js'

// Every tenant-owned table is keyed by (tenant_id, id) and references other tenant-owned rows through
// (tenant_id, …), so no row can point into another tenant and the schema can be distributed by tenant.
// The scheduler's claim and sweep queries read the partial indexes over open rows only.
export async function up(db: Kysely<unknown>): Promise<void> {
  await runStatements(db, `
    create table operator_keys (
      id smallint primary key default 1 check (id = 1),
      key_hash text not null,
      created_at timestamptz not null default now()
    );

    create table tenants (
      id uuid primary key,
      name text not null,
      web_id text not null unique,
      time_zone text not null default 'Europe/Berlin',
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now()
    );

    create table api_keys (
      tenant_id uuid not null references tenants (id) on delete cascade,
      id uuid not null,
      name text not null,
      key_prefix text not null,
      key_hash text not null unique,
      created_at timestamptz not null default now(),
      revoked_at timestamptz,
      primary key (tenant_id, id)
    );

    create table users (
      tenant_id uuid not null references tenants (id) on delete cascade,
      id uuid not null,
      name text not null,
      email text not null,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      primary key (tenant_id, id)
    );
    create unique index users_email_key on users (tenant_id, lower(email));

    create table properties (
      tenant_id uuid not null references tenants (id) on delete cascade,
      id uuid not null,
      maintainer_user_id uuid,
      fields jsonb not null default '{}',
      version integer not null default 1,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      primary key (tenant_id, id),
      foreign key (tenant_id, maintainer_user_id) references users (tenant_id, id)
    );
    create index properties_maintainer_idx on properties (tenant_id, maintainer_user_id) where maintainer_user_id is not null;

    create table addresses (
      tenant_id uuid not null references tenants (id) on delete cascade,
      id uuid not null,
      maintainer_user_id uuid,
      fields jsonb not null default '{}',
      version integer not null default 1,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      primary key (tenant_id, id),
      foreign key (tenant_id, maintainer_user_id) references users (tenant_id, id)
    );
    create index addresses_maintainer_idx on addresses (tenant_id, maintainer_user_id) where maintainer_user_id is not null;

    create table marketplace_services (
      id uuid primary key,
      name text not null,
      provider text not null,
      webhook_url text not null,
      delivery text not null default 'query' check (delivery in ('query', 'json')),
      secret text not null,
      previous_secret text,
      previous_secret_expires_at timestamptz,
      active boolean not null default true,
      version integer not null default 1,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now()
    );

    create table service_parameters (
      service_id uuid not null references marketplace_services (id) on delete cascade,
      id uuid not null primary key,
      name text not null,
      label text not null,
      type text not null check (type in ('string', 'integer', 'number', 'boolean', 'enum')),
      allowed_values jsonb,
      required boolean not null default false,
      default_value jsonb,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      unique (service_id, name)
    );

    create table service_triggers (
      service_id uuid not null references marketplace_services (id) on delete cascade,
      id uuid not null primary key,
      module text not null check (module in ('property', 'address')),
      events text[] not null,
      fields text[] not null default '{}',
      created_at timestamptz not null default now()
    );
    create index service_triggers_module_idx on service_triggers (module, service_id);

    create table service_activations (
      tenant_id uuid not null references tenants (id) on delete cascade,
      service_id uuid not null references marketplace_services (id) on delete cascade,
      activated_at timestamptz not null default now(),
      primary key (tenant_id, service_id)
    );
    create index service_activations_service_idx on service_activations (service_id);

    create table process_templates (
      tenant_id uuid not null references tenants (id) on delete cascade,
      id uuid not null,
      name text not null,
      description text not null default '',
      active boolean not null default false,
      controller_user_id uuid,
      notify_on_completion boolean not null default false,
      version integer not null default 1,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      primary key (tenant_id, id),
      foreign key (tenant_id, controller_user_id) references users (tenant_id, id)
    );

    create table template_steps (
      tenant_id uuid not null,
      id uuid not null,
      template_id uuid not null,
      position integer not null,
      kind text not null check (kind in ('webhook', 'task')),
      name text not null,
      start_mode text not null check (start_mode in ('afterPrevious', 'daysAfterPrevious')),
      start_days integer,
      responsibility text not null check (responsibility in ('processResponsible', 'propertyMaintainer', 'addressMaintainer', 'user')),
      responsible_user_id uuid,
      deadline_days integer,
      refers_to_property boolean not null default false,
      refers_to_address boolean not null default false,
      service_id uuid references marketplace_services (id),
      parameters jsonb not null default '{}',
      version integer not null default 1,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      primary key (tenant_id, id),
      foreign key (tenant_id, template_id) references process_templates (tenant_id, id) on delete cascade,
      foreign key (tenant_id, responsible_user_id) references users (tenant_id, id),
      unique (tenant_id, template_id, position) deferrable initially immediate,
      check ((kind = 'webhook') = (service_id is not null)),
      check ((responsibility = 'user') = (responsible_user_id is not null))
    );
    create index template_steps_service_idx on template_steps (service_id) where service_id is not null;
    create index template_steps_user_idx on template_steps (tenant_id, responsible_user_id) where responsible_user_id is not null;

    create table process_instances (
      tenant_id uuid not null references tenants (id) on delete cascade,
      id uuid not null,
      template_id uuid not null,
      template_name text not null,
      status text not null default 'running' check (status in ('running', 'completed', 'cancelled')),
      responsible_user_id uuid not null,
      controller_user_id uuid not null,
      notify_on_completion boolean not null default false,
      property_id uuid,
      address_id uuid,
      current_position integer,
      idempotency_key text,
      version integer not null default 1,
      started_at timestamptz not null default now(),
      ended_at timestamptz,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      primary key (tenant_id, id),
      foreign key (tenant_id, template_id) references process_templates (tenant_id, id),
      foreign key (tenant_id, responsible_user_id) references users (tenant_id, id),
      foreign key (tenant_id, controller_user_id) references users (tenant_id, id),
      foreign key (tenant_id, property_id) references properties (tenant_id, id),
      foreign key (tenant_id, address_id) references addresses (tenant_id, id),
      unique (tenant_id, idempotency_key)
    );
    create index process_instances_running_idx on process_instances (tenant_id, id) where status = 'running';
    create index process_instances_template_idx on process_instances (tenant_id, template_id);
    create index process_instances_property_idx on process_instances (tenant_id, property_id) where property_id is not null;
    create index process_instances_address_idx on process_instances (tenant_id, address_id) where address_id is not null;

    create table instance_steps (
      tenant_id uuid not null,
      id uuid not null,
      instance_id uuid not null,
      position integer not null,
      kind text not null check (kind in ('webhook', 'task')),
      name text not null,
      start_mode text not null,
      start_days integer,
      responsibility text not null,
      responsible_user_id uuid,
      deadline_days integer,
      refers_to_property boolean not null,
      refers_to_address boolean not null,
      service_id uuid references marketplace_services (id),
      parameters jsonb not null default '{}',
      state text not null default 'pending'
        check (state in ('pending', 'waiting', 'due', 'running', 'done', 'skipped', 'failed', 'cancelled')),
      assignee_user_id uuid,
      start_at timestamptz,
      started_at timestamptz,
      ended_at timestamptz,
      deadline_at timestamptz,
      deadline_notified_at timestamptz,
      note text,
      version integer not null default 1,
      primary key (tenant_id, id),
      foreign key (tenant_id, instance_id) references process_instances (tenant_id, id) on delete cascade,
      foreign key (tenant_id, assignee_user_id) references users (tenant_id, id),
      unique (tenant_id, instance_id, position)
    );
    -- scheduler: waiting steps whose start time comes, and deadlines still to be reported
    create index instance_steps_waiting_idx on instance_steps (start_at) where state = 'waiting';
    create index instance_steps_deadline_idx on instance_steps (deadline_at)
      where deadline_at is not null and deadline_notified_at is null and state in ('due', 'running', 'failed');
    create index instance_steps_assignee_idx on instance_steps (tenant_id, assignee_user_id)
      where state in ('waiting', 'due', 'running', 'failed');

    create table deliveries (
      tenant_id uuid not null references tenants (id) on delete cascade,
      id uuid not null,
      service_id uuid not null references marketplace_services (id),
      source text not null check (source in ('step', 'trigger')),
      instance_id uuid,
      step_id uuid,
      property_id uuid,
      address_id uuid,
      event text,
      changed_fields text[],
      parameters jsonb not null default '{}',
      status text not null default 'pending' check (status in ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
      round integer not null default 1,
      attempt_count integer not null default 0,
      next_attempt_at timestamptz not null default now(),
      lease_owner text,
      lease_expires_at timestamptz,
      fence integer not null default 0,
      last_status_code integer,
      last_error text,
      created_at timestamptz not null default now(),
      finished_at timestamptz,
      primary key (tenant_id, id),
      foreign key (tenant_id, step_id) references instance_steps (tenant_id, id) on delete cascade
    );
    -- scheduler: pending deliveries by due time, and running ones whose lease may have expired
    create index deliveries_due_idx on deliveries (next_attempt_at) where status = 'pending';
    create index deliveries_lease_idx on deliveries (lease_expires_at) where status = 'running';
    create index deliveries_step_idx on deliveries (tenant_id, step_id) where step_id is not null;
    create index deliveries_instance_idx on deliveries (tenant_id, instance_id) where instance_id is not null;
    create index deliveries_service_idx on deliveries (tenant_id, service_id, id);

    create table delivery_attempts (
      tenant_id uuid not null,
      id uuid not null,
      delivery_id uuid not null,
      round integer not null,
      attempt_number integer not null,
      started_at timestamptz not null,
      duration_ms integer not null,
      outcome text not null check (outcome in ('succeeded', 'retry', 'failed')),
      status_code integer,
      error text,
      response_body text,
      primary key (tenant_id, id),
      foreign key (tenant_id, delivery_id) references deliveries (tenant_id, id) on delete cascade
    );
    create index delivery_attempts_delivery_idx on delivery_attempts (tenant_id, delivery_id, attempt_number);

    create table activities (
      tenant_id uuid not null references tenants (id) on delete cascade,
      id uuid not null,
      property_id uuid,
      address_id uuid,
      instance_id uuid,
      step_id uuid,
      service_id uuid,
      kind text not null,
      message text not null,
      data jsonb not null default '{}',
      created_at timestamptz not null default now(),
      primary key (tenant_id, id)
    );
    create index activities_property_idx on activities (tenant_id, property_id, id) where property_id is not null;
    create index activities_address_idx on activities (tenant_id, address_id, id) where address_id is not null;
    create index activities_instance_idx on activities (tenant_id, instance_id, id) where instance_id is not null;

    create table outbox_mails (
      tenant_id uuid not null references tenants (id) on delete cascade,
      id uuid not null,
      dedupe_key text not null,
      kind text not null,
      to_address text not null,
      subject text not null,
      body text not null,
      attempt_count integer not null default 0,
      next_attempt_at timestamptz not null default now(),
      lease_expires_at timestamptz,
      last_error text,
      sent_at timestamptz,
      created_at timestamptz not null default now(),
      primary key (tenant_id, id),
      unique (tenant_id, dedupe_key)
    );
    -- scheduler: mails still to send
    create index outbox_mails_unsent_idx on outbox_mails (next_attempt_at) where sent_at is null;
  `)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await runStatements(db, `
    drop table outbox_mails, activities, delivery_attempts, deliveries, instance_steps, process_instances,
      template_steps, process_templates, service_activations, service_triggers, service_parameters,
      marketplace_services, addresses, properties, users, api_keys, tenants, operator_keys;
  `)
}

// One statement per query: the embedded database's extended protocol takes a single statement.
async function runStatements(db: Kysely<unknown>, script: string): Promise<void> {
  for (const statement of script.split(/;\s*$/m).map((s) => s.trim()).filter(Boolean)) {
    await sql.raw(statement).execute(db)
  }
}
