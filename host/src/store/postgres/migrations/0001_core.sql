-- gantry's core tables on PostgreSQL: the same rows as SQLite's (host/src/store/sqlite.rs),
-- every integer a BIGINT (times are ms since the epoch), flags BOOLEAN, JSON kept as text in
-- the same encoding the SQLite store writes (store/codec.rs).
CREATE TABLE workspaces (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    path TEXT
);
CREATE INDEX workspaces_by_tenant ON workspaces (tenant, created_at);

CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    backend TEXT NOT NULL,
    request TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    exit_code BIGINT,
    error TEXT,
    summary TEXT,
    last_seq BIGINT NOT NULL DEFAULT 0,
    output_lines BIGINT NOT NULL DEFAULT 0,
    node TEXT,
    log_events BIGINT NOT NULL DEFAULT 0,
    log_bytes BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX tasks_by_tenant ON tasks (tenant, workspace_id, created_at);
CREATE INDEX tasks_by_state ON tasks (state);
CREATE INDEX tasks_by_finish ON tasks (tenant, finished_at);
CREATE INDEX tasks_unfinished_by_node ON tasks (node) WHERE state IN ('pending', 'running');

CREATE TABLE events (
    task_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (task_id, seq)
);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    backend TEXT NOT NULL,
    workspace_id TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    status TEXT NOT NULL DEFAULT 'active',
    data TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX sessions_by_tenant ON sessions (tenant, updated_at);

CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    started_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE TABLE tenant_output (
    tenant TEXT PRIMARY KEY,
    events BIGINT NOT NULL,
    bytes BIGINT NOT NULL
);

-- A deleted task's log leaves its tenant's totals, whoever deletes it (retention, a workspace's
-- cascade).
CREATE FUNCTION tasks_output_gone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE tenant_output SET events = events - OLD.log_events, bytes = bytes - OLD.log_bytes
    WHERE tenant = OLD.tenant;
    RETURN OLD;
END;
$$;
CREATE TRIGGER tasks_output_gone AFTER DELETE ON tasks
    FOR EACH ROW EXECUTE FUNCTION tasks_output_gone();

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    username TEXT NOT NULL,
    email TEXT,
    password_hash TEXT NOT NULL,
    permissions TEXT NOT NULL,
    disabled BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL,
    last_login BIGINT,
    token_generation BIGINT NOT NULL DEFAULT 0
);
-- Names are unique on the node case-insensitively, as SQLite's COLLATE NOCASE (ASCII).
CREATE UNIQUE INDEX users_by_name ON users (lower(username));
CREATE INDEX users_by_tenant ON users (tenant, created_at);

CREATE TABLE revoked_tokens (
    jti TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX revoked_tokens_by_expiry ON revoked_tokens (expires_at);

CREATE TABLE user_preferences (
    tenant TEXT NOT NULL,
    user_id TEXT NOT NULL,
    preferences TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, user_id)
);
