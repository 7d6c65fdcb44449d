-- The Web UI API's commands (store/postgres/commands.rs) and working sessions
-- (store/postgres/work_sessions.rs): SQLite's rows, integers BIGINT, flags BOOLEAN.
CREATE TABLE commands (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    user_id TEXT NOT NULL,
    command TEXT NOT NULL,
    project_id TEXT,
    session_id TEXT,
    workspace_id TEXT NOT NULL,
    working_directory TEXT NOT NULL,
    status TEXT NOT NULL,
    pid BIGINT,
    exit_code BIGINT,
    started_at BIGINT NOT NULL,
    completed_at BIGINT,
    error TEXT,
    node TEXT NOT NULL,
    output_bytes BIGINT NOT NULL DEFAULT 0,
    truncated BOOLEAN NOT NULL DEFAULT FALSE,
    -- SQLite's implicit rowid: the order commands were stored in, which breaks ties between
    -- commands started in the same millisecond when listing.
    rowid BIGINT GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX commands_by_user ON commands (tenant, user_id, started_at, rowid);
CREATE INDEX commands_running ON commands (node) WHERE status = 'running';

CREATE TABLE command_output (
    command_id TEXT NOT NULL REFERENCES commands (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    stream TEXT NOT NULL,
    content TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (command_id, seq)
);

CREATE TABLE command_workspaces (
    tenant TEXT NOT NULL,
    user_id TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    PRIMARY KEY (tenant, user_id)
);

-- Deleting is soft, as on the board: the row and its history stay, hidden from reads.
CREATE TABLE work_sessions (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    user_id TEXT NOT NULL,
    project_id TEXT NOT NULL REFERENCES projects (id),
    settings TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_accessed BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE INDEX work_sessions_by_user ON work_sessions (tenant, user_id, created_at);

-- `seq` orders a session's history: entries written in the same millisecond keep the order
-- they were written in.
CREATE TABLE work_session_history (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    session_id TEXT NOT NULL REFERENCES work_sessions (id),
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    user_id TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX work_session_history_by_session ON work_session_history (session_id, seq);
