-- The event bus, webhooks, the outbox of their deliveries and the consumer's cursor: the rows of
-- SQLite's bus and webhook migrations (host/src/store/sqlite.rs), integers BIGINT, flags BOOLEAN.

-- Each tenant's events with their own sequence. `id` orders every tenant's events for durable
-- consumers; appends commit in `id` order (store/postgres/events.rs), so a consumer reading
-- past its cursor never misses one committed late.
CREATE TABLE bus_events (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant TEXT NOT NULL,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    at BIGINT NOT NULL,
    project_id TEXT,
    task_id TEXT,
    command_id TEXT,
    data TEXT NOT NULL,
    UNIQUE (tenant, seq)
);
CREATE INDEX bus_events_by_time ON bus_events (at);

-- A tenant's newest sequence number. It outlives the retention of the events themselves, so a
-- number is never reused; its row lock serialises the tenant's appenders.
CREATE TABLE bus_heads (
    tenant TEXT PRIMARY KEY,
    seq BIGINT NOT NULL
);

CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    active BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX webhooks_by_tenant ON webhooks (tenant, created_at);

CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    webhook_id TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    tenant TEXT NOT NULL,
    event TEXT NOT NULL,
    event_id BIGINT NOT NULL,
    body BYTEA NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at BIGINT,
    last_status BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    delivered_at BIGINT,
    -- SQLite's rowid, which PostgreSQL has not: the order deliveries were stored in, which
    -- breaks ties of `created_at` (one batch's deliveries share it) as it does there.
    stored BIGINT GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, created_at, stored);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';

-- The global id of the last bus event turned into deliveries: one row.
CREATE TABLE webhook_cursor (
    id BIGINT PRIMARY KEY CHECK (id = 0),
    last_event_id BIGINT NOT NULL
);
