//! The embedded store: SQLite in WAL mode, one connection guarded by a mutex.
//!
//! One file over the usual size: the schema, its migrations and every aggregate's SQL are
//! read together (a column added here is read and written here), and about half of it is the
//! tests beside the SQL they check. SQLite's calls are short and local, so the async traits run
//! them inline rather than on a blocking pool (which would add a thread hop to every append).

use super::{
    Appended, EventRecord, NodeRecord, NodeStore, OutputQuota, RetentionStore, SessionPage,
    SessionQuery, SessionRecord, SessionStore, StoreError, StoreResult, StoredOutput, TaskRecord,
    TaskState, TaskStore, UserRecord, UserStore, WorkspaceRecord, WorkspaceStore, codec,
};
use anyhow::{Context, Result};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

mod board;
mod commands;
mod events;
mod webhooks;
mod work_sessions;

/// Schema migrations; `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE workspaces (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX workspaces_by_tenant ON workspaces (tenant, created_at);
CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    backend TEXT NOT NULL,
    request TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    exit_code INTEGER,
    error TEXT,
    summary TEXT,
    last_seq INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX tasks_by_tenant ON tasks (tenant, workspace_id, created_at);
CREATE INDEX tasks_by_state ON tasks (state);
CREATE TABLE events (
    task_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (task_id, seq)
) WITHOUT ROWID;
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    backend TEXT NOT NULL,
    workspace_id TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
"#,
    // How many output lines a task logged, kept with the log so a poll need not count them.
    "ALTER TABLE tasks ADD COLUMN output_lines INTEGER NOT NULL DEFAULT 0;",
    // Sessions carry a status to filter on and the surface's own fields as JSON.
    r#"
ALTER TABLE sessions ADD COLUMN status TEXT NOT NULL DEFAULT 'active';
ALTER TABLE sessions ADD COLUMN data TEXT NOT NULL DEFAULT '{}';
CREATE INDEX sessions_by_tenant ON sessions (tenant, updated_at);
"#,
    // A workspace may be an operator-allowed directory outside the data directory.
    "ALTER TABLE workspaces ADD COLUMN path TEXT;",
    // Node leases: each task is run by one node, and a node's tasks are interrupted only by
    // itself or once its lease has expired.
    r#"
ALTER TABLE tasks ADD COLUMN node TEXT;
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    started_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
"#,
    // Stored output per task and per tenant, for quotas and retention: kept as running totals
    // (an append adds its batch's figures) so that no append counts rows. Deleting a task takes
    // its figures off its tenant's in a trigger, so that every path that deletes tasks (a
    // workspace's cascade included) keeps the totals true. Existing logs are counted once here.
    r#"
ALTER TABLE tasks ADD COLUMN log_events INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN log_bytes INTEGER NOT NULL DEFAULT 0;
UPDATE tasks SET
    log_events = (SELECT COUNT(*) FROM events WHERE events.task_id = tasks.id),
    log_bytes = (SELECT COALESCE(SUM(length(CAST(kind AS BLOB)) + length(CAST(data AS BLOB))), 0)
                 FROM events WHERE events.task_id = tasks.id);
CREATE TABLE tenant_output (
    tenant TEXT PRIMARY KEY,
    events INTEGER NOT NULL,
    bytes INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO tenant_output (tenant, events, bytes)
    SELECT tenant, SUM(log_events), SUM(log_bytes) FROM tasks GROUP BY tenant;
CREATE TRIGGER tasks_output_gone AFTER DELETE ON tasks BEGIN
    UPDATE tenant_output SET events = events - OLD.log_events, bytes = bytes - OLD.log_bytes
    WHERE tenant = OLD.tenant;
END;
CREATE INDEX tasks_by_finish ON tasks (tenant, finished_at);
"#,
    // Users of the /api surface, and the tokens logged out before their expiry. A username is
    // unique on the node, case-insensitively, so that a login names one user without a tenant.
    r#"
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    username TEXT NOT NULL UNIQUE COLLATE NOCASE,
    email TEXT,
    password_hash TEXT NOT NULL,
    permissions TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    last_login INTEGER,
    token_generation INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX users_by_tenant ON users (tenant, created_at);
CREATE TABLE revoked_tokens (
    jti TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX revoked_tokens_by_expiry ON revoked_tokens (expires_at);
"#,
    // The Web UI API's board: projects, their tasks (searched through FTS5 indexes kept by
    // triggers), each task's history, and users' preferences. Deleting is soft: a deleted row
    // keeps its history and is skipped by every read.
    r#"
CREATE TABLE projects (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT,
    status TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    settings TEXT NOT NULL,
    max_tasks INTEGER,
    max_concurrent_tasks INTEGER,
    storage_limit_bytes INTEGER,
    deleted_at INTEGER
);
CREATE INDEX projects_by_tenant ON projects (tenant, created_at);
CREATE VIRTUAL TABLE projects_fts USING fts5(name, description, content='projects');
CREATE TRIGGER projects_fts_add AFTER INSERT ON projects BEGIN
    INSERT INTO projects_fts (rowid, name, description) VALUES (new.rowid, new.name, new.description);
END;
CREATE TRIGGER projects_fts_change AFTER UPDATE OF name, description ON projects BEGIN
    INSERT INTO projects_fts (projects_fts, rowid, name, description)
        VALUES ('delete', old.rowid, old.name, old.description);
    INSERT INTO projects_fts (rowid, name, description) VALUES (new.rowid, new.name, new.description);
END;
CREATE TABLE board_tasks (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    project_id TEXT NOT NULL REFERENCES projects (id),
    title TEXT NOT NULL,
    description TEXT,
    status TEXT NOT NULL,
    priority INTEGER NOT NULL,
    progress INTEGER NOT NULL,
    estimated_duration_secs INTEGER,
    assigned_to TEXT,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    started_at INTEGER,
    completed_at INTEGER,
    tags TEXT NOT NULL,
    metadata TEXT NOT NULL,
    retry_attempt INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 0,
    deleted_at INTEGER,
    queue TEXT,
    queued_at INTEGER,
    run_id TEXT,
    retries_left INTEGER NOT NULL DEFAULT 0,
    timeout_secs INTEGER,
    backend TEXT
);
CREATE INDEX board_tasks_queued ON board_tasks (status, queued_at) WHERE deleted_at IS NULL;
CREATE INDEX board_tasks_by_tenant ON board_tasks (tenant, created_at);
CREATE INDEX board_tasks_by_project ON board_tasks (project_id, status);
CREATE VIRTUAL TABLE board_tasks_fts USING fts5(title, description, tags, content='board_tasks');
CREATE TRIGGER board_tasks_fts_add AFTER INSERT ON board_tasks BEGIN
    INSERT INTO board_tasks_fts (rowid, title, description, tags)
        VALUES (new.rowid, new.title, new.description,
                (SELECT group_concat(value, ' ') FROM json_each(new.tags)));
END;
CREATE TRIGGER board_tasks_fts_change AFTER UPDATE OF title, description, tags ON board_tasks BEGIN
    INSERT INTO board_tasks_fts (board_tasks_fts, rowid, title, description, tags)
        VALUES ('delete', old.rowid, old.title, old.description,
                (SELECT group_concat(value, ' ') FROM json_each(old.tags)));
    INSERT INTO board_tasks_fts (rowid, title, description, tags)
        VALUES (new.rowid, new.title, new.description,
                (SELECT group_concat(value, ' ') FROM json_each(new.tags)));
END;
CREATE TABLE board_task_dependencies (
    task_id TEXT NOT NULL REFERENCES board_tasks (id),
    depends_on TEXT NOT NULL REFERENCES board_tasks (id),
    PRIMARY KEY (task_id, depends_on)
) WITHOUT ROWID;
CREATE TABLE board_task_history (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    task_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    action TEXT NOT NULL,
    field TEXT,
    old_value TEXT,
    new_value TEXT,
    user_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    note TEXT
);
CREATE INDEX board_task_history_by_task ON board_task_history (task_id, at);
CREATE INDEX board_task_history_by_project ON board_task_history (project_id, at);
CREATE TABLE board_queues (
    tenant TEXT NOT NULL,
    queue TEXT NOT NULL,
    paused INTEGER NOT NULL,
    PRIMARY KEY (tenant, queue)
) WITHOUT ROWID;
CREATE TABLE user_preferences (
    tenant TEXT NOT NULL,
    user_id TEXT NOT NULL,
    preferences TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, user_id)
) WITHOUT ROWID;
"#,
    // The event bus: each tenant's events with their own sequence, and its head, which
    // outlives the retention of the events themselves so a sequence number is never reused.
    r#"
CREATE TABLE bus_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    at INTEGER NOT NULL,
    project_id TEXT,
    task_id TEXT,
    command_id TEXT,
    data TEXT NOT NULL,
    UNIQUE (tenant, seq)
);
CREATE INDEX bus_events_by_time ON bus_events (at);
CREATE TABLE bus_heads (
    tenant TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    r#"
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
    pid INTEGER,
    exit_code INTEGER,
    started_at INTEGER NOT NULL,
    completed_at INTEGER,
    error TEXT,
    node TEXT NOT NULL,
    output_bytes INTEGER NOT NULL DEFAULT 0,
    truncated INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX commands_by_user ON commands (tenant, user_id, started_at);
CREATE INDEX commands_running ON commands (node) WHERE status = 'running';
CREATE TABLE command_output (
    command_id TEXT NOT NULL REFERENCES commands (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    stream TEXT NOT NULL,
    content TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (command_id, seq)
) WITHOUT ROWID;
CREATE TABLE command_workspaces (
    tenant TEXT NOT NULL,
    user_id TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    PRIMARY KEY (tenant, user_id)
) WITHOUT ROWID;
"#,
    // The Web UI API's working sessions and their history (`store/sqlite/work_sessions.rs`).
    // Deleting is soft, as on the board: the row and its history stay, hidden from reads.
    r#"
CREATE TABLE work_sessions (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    user_id TEXT NOT NULL,
    project_id TEXT NOT NULL REFERENCES projects (id),
    settings TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_accessed INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    deleted_at INTEGER
);
CREATE INDEX work_sessions_by_user ON work_sessions (tenant, user_id, created_at);
CREATE TABLE work_session_history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    session_id TEXT NOT NULL REFERENCES work_sessions (id),
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    user_id TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX work_session_history_by_session ON work_session_history (session_id, seq);
"#,
    // Webhooks, the outbox of their deliveries, and the consumer's cursor over the event bus.
    r#"
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    active INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX webhooks_by_tenant ON webhooks (tenant, created_at);
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    webhook_id TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    tenant TEXT NOT NULL,
    event TEXT NOT NULL,
    event_id INTEGER NOT NULL,
    body BLOB NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at INTEGER,
    last_status INTEGER,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    delivered_at INTEGER
);
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, created_at);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE TABLE webhook_cursor (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    last_event_id INTEGER NOT NULL
);
"#,
];

/// How long a statement waits for a lock another process holds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The same, for the health probe.
const HEALTH_BUSY_TIMEOUT: Duration = Duration::from_secs(1);

/// How often the background checkpointer copies the write-ahead log into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// The write-ahead log is cut back to this size whenever it restarts from its beginning, so a
/// burst of writes does not leave it at its high-water size ([`RetentionStore::reclaim_space`]
/// truncates it to nothing).
const JOURNAL_SIZE_LIMIT: i64 = 64 << 20;

/// A task's state while it is unfinished; retention never touches such a task.
const UNFINISHED: &str = "state IN ('pending', 'running')";

/// SQLite behind [`Store`].
#[derive(Debug)]
pub struct Sqlite {
    /// The database file; its write-ahead log is beside it.
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Dropped with the store, which ends the checkpointer thread.
    _checkpointer: Option<Checkpointer>,
}

impl Sqlite {
    /// Open (creating) the database at `path` and bring its schema up to date.
    pub fn open(path: &Path) -> Result<Sqlite> {
        let conn = Connection::open(path)
            .with_context(|| format!("opening database {}", path.display()))?;
        // A new database keeps a map of free pages so that retention can give them back to the
        // file system a little at a time (`incremental_vacuum`), without a full VACUUM. An
        // existing one keeps its mode (changing it would rewrite the whole file); SQLite
        // reuses its free pages before it grows.
        let empty: i64 = conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))?;
        if empty == 0 {
            conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
        // WAL with NORMAL sync: a commit survives a crash of gantry (the kill -9 case), and
        // only an OS crash may lose the last moments.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Room for every statement of the store.
        conn.set_prepared_statement_cache_capacity(64);
        migrate(&conn)?;
        // SQLite checkpoints inside whichever commit fills the log past 1000 pages, fsync and
        // all, which made the clinvk prompt p99 20-31 ms (p50 5 ms). A thread with its own
        // connection checkpoints instead (PASSIVE: writers and readers go on meanwhile).
        let checkpointer = Checkpointer::start(path);
        if checkpointer.is_some() {
            conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        }
        Ok(Sqlite {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            _checkpointer: checkpointer,
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One statement, prepared once per connection (parsing is most of a small statement's
    /// cost).
    fn execute<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.conn().prepare_cached(sql)?.execute(params)
    }

    /// One row of a query, prepared once per connection.
    fn query_row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    {
        self.conn().prepare_cached(sql)?.query_row(params, f)
    }
}

/// The background checkpointer: a thread and its own connection.
#[derive(Debug)]
struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// None if its connection or thread cannot be had (SQLite then checkpoints as usual).
    fn start(path: &Path) -> Option<Checkpointer> {
        let conn = match Connection::open(path) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("no background checkpointer ({e}); commits will checkpoint");
                return None;
            }
        };
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("gantry-checkpoint".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!("checkpointing the store: {e}");
                    }
                }
            })
            .ok()?;
        Some(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn migrate(conn: &Connection) -> Result<()> {
    let done: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if done > MIGRATIONS.len() {
        anyhow::bail!(
            "the database has schema version {done}, newer than this gantry knows ({}); use a newer gantry",
            MIGRATIONS.len()
        );
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)
            .with_context(|| format!("migration {}", i + 1))?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(())
}

fn workspace(row: &rusqlite::Row<'_>) -> rusqlite::Result<WorkspaceRecord> {
    Ok(WorkspaceRecord {
        id: row.get(0)?,
        tenant: row.get(1)?,
        name: row.get(2)?,
        created_at: row.get(3)?,
        path: row.get(4)?,
    })
}

const SESSION_COLUMNS: &str =
    "id, tenant, backend, status, workspace_id, created_at, updated_at, data";

fn session(row: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRecord> {
    Ok(SessionRecord {
        id: row.get(0)?,
        tenant: row.get(1)?,
        backend: row.get(2)?,
        status: row.get(3)?,
        workspace_id: row.get(4)?,
        created_at: row.get(5)?,
        updated_at: row.get(6)?,
        data: json_column(row.get(7)?)?,
    })
}

const TASK_COLUMNS: &str = "id, tenant, workspace_id, backend, request, state, created_at, started_at, finished_at, exit_code, error, summary, last_seq, output_lines, node";

fn json_column(text: String) -> rusqlite::Result<serde_json::Value> {
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// A column that failed to decode, as rusqlite reports it.
fn bad_column(column: usize, e: anyhow::Error) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, e.into())
}

fn task(row: &rusqlite::Row<'_>) -> rusqlite::Result<TaskRecord> {
    let state: String = row.get(5)?;
    Ok(TaskRecord {
        id: row.get(0)?,
        tenant: row.get(1)?,
        workspace_id: row.get(2)?,
        backend: row.get(3)?,
        request: codec::request_from_json(&json_column(row.get(4)?)?)
            .map_err(|e| bad_column(4, e))?,
        state: state.parse().map_err(|e| bad_column(5, e))?,
        created_at: row.get(6)?,
        started_at: row.get(7)?,
        finished_at: row.get(8)?,
        exit_code: row.get(9)?,
        error: row.get(10)?,
        summary: row
            .get::<_, Option<String>>(11)?
            .map(json_column)
            .transpose()?
            .map(|v| codec::summary_from_json(&v)),
        last_seq: row.get::<_, i64>(12)? as u64,
        output_lines: row.get::<_, i64>(13)? as u64,
        node: row.get(14)?,
    })
}

#[async_trait::async_trait]
impl WorkspaceStore for Sqlite {
    async fn create_workspace(&self, ws: &WorkspaceRecord) -> StoreResult<()> {
        self.execute(
            "INSERT INTO workspaces (id, tenant, name, created_at, path) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![ws.id, ws.tenant, ws.name, ws.created_at, ws.path],
        )?;
        Ok(())
    }
    async fn list_workspaces(&self, tenant: &str) -> StoreResult<Vec<WorkspaceRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, tenant, name, created_at, path FROM workspaces WHERE tenant = ?1 ORDER BY created_at, id",
        )?;
        let rows = stmt.query_map([tenant], workspace)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
    async fn get_workspace(&self, tenant: &str, id: &str) -> StoreResult<Option<WorkspaceRecord>> {
        Ok(self
            .query_row(
                "SELECT id, tenant, name, created_at, path FROM workspaces WHERE tenant = ?1 AND id = ?2",
                [tenant, id],
                workspace,
            )
            .optional()?)
    }
    async fn delete_workspace(&self, tenant: &str, id: &str) -> StoreResult<bool> {
        let n = self.execute(
            "DELETE FROM workspaces WHERE tenant = ?1 AND id = ?2 AND NOT EXISTS (
                 SELECT 1 FROM tasks WHERE workspace_id = ?2 AND state IN ('pending', 'running'))",
            [tenant, id],
        )?;
        if n > 0 {
            return Ok(true);
        }
        // Nothing deleted: a task live in it (a conflict), or no such workspace.
        let live: i64 = self.query_row(
            "SELECT count(*) FROM tasks t JOIN workspaces w ON w.id = t.workspace_id
             WHERE w.tenant = ?1 AND w.id = ?2 AND t.state IN ('pending', 'running')",
            [tenant, id],
            |r| r.get(0),
        )?;
        if live > 0 {
            return Err(StoreError::Conflict(format!(
                "a task is pending or running in workspace {id}"
            )));
        }
        Ok(false)
    }
}

#[async_trait::async_trait]
impl TaskStore for Sqlite {
    async fn insert_task(&self, t: &TaskRecord) -> StoreResult<()> {
        self.execute(
            &format!("INSERT INTO tasks ({TASK_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"),
            params![
                t.id,
                t.tenant,
                t.workspace_id,
                t.backend,
                codec::request_json(&t.request).to_string(),
                t.state.as_str(),
                t.created_at,
                t.started_at,
                t.finished_at,
                t.exit_code,
                t.error,
                t.summary.as_ref().map(|s| codec::summary_json(s).to_string()),
                t.last_seq as i64,
                t.output_lines as i64,
                t.node,
            ],
        )?;
        Ok(())
    }
    async fn update_task(&self, t: &TaskRecord) -> StoreResult<()> {
        update_in(&self.conn(), t)?;
        Ok(())
    }
    async fn get_task(&self, tenant: &str, id: &str) -> StoreResult<Option<TaskRecord>> {
        Ok(self
            .query_row(
                &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE tenant = ?1 AND id = ?2"),
                [tenant, id],
                task,
            )
            .optional()?)
    }
    async fn list_tasks(
        &self,
        tenant: &str,
        workspace: Option<&str>,
    ) -> StoreResult<Vec<TaskRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE tenant = ?1 AND (?2 IS NULL OR workspace_id = ?2) ORDER BY created_at, id"
        ))?;
        let rows = stmt.query_map(params![tenant, workspace], task)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
    async fn append_events(
        &self,
        task_id: &str,
        events: &[EventRecord],
        quota: Option<OutputQuota>,
    ) -> StoreResult<Appended> {
        let mut conn = self.conn();
        // Immediate: the quota is judged on figures no other writer can change before commit.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let appended = append_in(&tx, task_id, events, quota)?;
        tx.commit()?;
        Ok(appended)
    }
    async fn update_task_and_append(
        &self,
        task: &TaskRecord,
        events: &[EventRecord],
    ) -> StoreResult<Appended> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        update_in(&tx, task)?;
        let appended = append_in(&tx, &task.id, events, None)?;
        tx.commit()?;
        Ok(appended)
    }
    async fn read_events(
        &self,
        task_id: &str,
        from_seq: u64,
        limit: usize,
    ) -> StoreResult<Vec<EventRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT seq, kind, data, at FROM events WHERE task_id = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![task_id, from_seq as i64, limit as i64], |row| {
            let kind: String = row.get(1)?;
            let data = json_column(row.get(2)?)?;
            Ok(EventRecord {
                seq: row.get::<_, i64>(0)? as u64,
                body: codec::event_body(&kind, &data).map_err(|e| bad_column(2, e))?,
                at: row.get(3)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

fn stored_output(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<StoredOutput> {
    Ok(StoredOutput {
        events: row.get::<_, i64>(first)?.max(0) as u64,
        bytes: row.get::<_, i64>(first + 1)?.max(0) as u64,
    })
}

impl Sqlite {
    /// Delete the task the query `pick` names, if any, in a transaction of its own: the
    /// connection is held for one task at a time, so that appends wait for at most one task's
    /// deletion, not a whole pass. Whether there was one.
    fn delete_one(&self, pick: &str, params: &[&dyn rusqlite::ToSql]) -> rusqlite::Result<bool> {
        let conn = self.conn();
        let id: Option<String> = conn
            .prepare_cached(pick)?
            .query_row(params, |r| r.get(0))
            .optional()?;
        let Some(id) = id else {
            return Ok(false);
        };
        // The events go by cascade; the trigger takes the task's figures off its tenant's.
        conn.prepare_cached("DELETE FROM tasks WHERE id = ?1")?
            .execute([id])?;
        Ok(true)
    }
}

#[async_trait::async_trait]
impl RetentionStore for Sqlite {
    async fn stored_output(&self, tenant: &str) -> StoreResult<StoredOutput> {
        Ok(self
            .query_row(
                "SELECT events, bytes FROM tenant_output WHERE tenant = ?1",
                [tenant],
                |r| stored_output(r, 0),
            )
            .optional()?
            .unwrap_or_default())
    }

    async fn stored_output_by_tenant(&self) -> StoreResult<Vec<(String, StoredOutput)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT tenant, events, bytes FROM tenant_output WHERE events > 0 OR bytes > 0 ORDER BY tenant",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, stored_output(r, 1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    async fn delete_finished_before(&self, tenant: &str, before: i64) -> StoreResult<u64> {
        let pick = format!(
            "SELECT id FROM tasks WHERE tenant = ?1 AND finished_at < ?2 AND NOT ({UNFINISHED}) ORDER BY finished_at, id LIMIT 1"
        );
        let mut n = 0;
        while self.delete_one(&pick, params![tenant, before])? {
            n += 1;
        }
        Ok(n)
    }

    async fn trim_finished_to(
        &self,
        tenant: &str,
        max_bytes: u64,
        finished_before: i64,
    ) -> StoreResult<u64> {
        // The oldest finished task, while the tenant stores more than the budget.
        let pick = format!(
            "SELECT id FROM tasks WHERE tenant = ?1 AND finished_at < ?3 AND NOT ({UNFINISHED}) AND (SELECT bytes FROM tenant_output WHERE tenant = ?1) > ?2 ORDER BY finished_at, id LIMIT 1"
        );
        let budget = i64::try_from(max_bytes).unwrap_or(i64::MAX);
        let mut n = 0;
        while self.delete_one(&pick, params![tenant, budget, finished_before])? {
            n += 1;
        }
        Ok(n)
    }

    async fn reclaim_space(&self) -> StoreResult<()> {
        let conn = self.conn();
        // Free pages back to the file system (nothing unless the database was made with
        // incremental auto-vacuum), then everything in the log into the database and the log
        // cut to nothing. TRUNCATE waits for readers and blocks writers while it runs, which is
        // why the per-second checkpointer stays PASSIVE and this runs once per retention pass.
        {
            // It frees a page per step: stepped to its end.
            let mut vacuum = conn.prepare_cached("PRAGMA incremental_vacuum")?;
            let mut steps = vacuum.query([])?;
            while steps.next()?.is_some() {}
        }
        let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        if busy != 0 {
            tracing::debug!("the write-ahead log was busy; it is truncated on a later pass");
        }
        Ok(())
    }
}

impl crate::metrics::StoreGauges for Sqlite {
    fn store_size(&self) -> crate::metrics::StoreSize {
        let file = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        let tenants = (|| -> rusqlite::Result<Vec<_>> {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached(
                "SELECT tenant, events, bytes FROM tenant_output WHERE events > 0 OR bytes > 0 ORDER BY tenant",
            )?;
            let rows = stmt.query_map([], |r| {
                let s = stored_output(r, 1)?;
                Ok(crate::metrics::TenantOutput {
                    tenant: r.get(0)?,
                    events: s.events,
                    bytes: s.bytes,
                })
            })?;
            rows.collect()
        })()
        .unwrap_or_else(|e| {
            tracing::warn!("reading stored output per tenant: {e}");
            Vec::new()
        });
        crate::metrics::StoreSize {
            database_bytes: file(&self.path),
            wal_bytes: file(Path::new(&wal)),
            tenants,
        }
    }
}

#[async_trait::async_trait]
impl SessionStore for Sqlite {
    async fn create_session(&self, s: &SessionRecord) -> StoreResult<()> {
        self.execute(
            &format!(
                "INSERT INTO sessions ({SESSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ),
            params![
                s.id,
                s.tenant,
                s.backend,
                s.status,
                s.workspace_id,
                s.created_at,
                s.updated_at,
                s.data.to_string()
            ],
        )?;
        Ok(())
    }
    async fn get_session(&self, tenant: &str, id: &str) -> StoreResult<Option<SessionRecord>> {
        Ok(self
            .query_row(
                &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE tenant = ?1 AND id = ?2"),
                params![tenant, id],
                session,
            )
            .optional()?)
    }
    async fn update_session(&self, s: &SessionRecord) -> StoreResult<bool> {
        let n = self.execute(
            "UPDATE sessions SET status = ?3, workspace_id = ?4, updated_at = ?5, data = ?6 WHERE tenant = ?1 AND id = ?2",
            params![s.tenant, s.id, s.status, s.workspace_id, s.updated_at, s.data.to_string()],
        )?;
        Ok(n > 0)
    }
    async fn list_sessions(&self, tenant: &str, query: &SessionQuery) -> StoreResult<SessionPage> {
        let conn = self.conn();
        // NULL filters match everything.
        let filter = "tenant = ?1 AND (?2 IS NULL OR backend = ?2) AND (?3 IS NULL OR status = ?3)";
        let total: i64 = conn.query_row(
            &format!("SELECT COUNT(*) FROM sessions WHERE {filter}"),
            params![tenant, query.backend, query.status],
            |r| r.get(0),
        )?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE {filter} ORDER BY updated_at DESC, id LIMIT ?4 OFFSET ?5"
        ))?;
        let rows = stmt.query_map(
            params![
                tenant,
                query.backend,
                query.status,
                query.limit,
                query.offset
            ],
            session,
        )?;
        Ok(SessionPage {
            sessions: rows.collect::<rusqlite::Result<_>>()?,
            total: total as u64,
        })
    }
    async fn delete_session(&self, tenant: &str, id: &str) -> StoreResult<bool> {
        let n = self.execute(
            "DELETE FROM sessions WHERE tenant = ?1 AND id = ?2",
            params![tenant, id],
        )?;
        Ok(n > 0)
    }
    async fn count_sessions(&self) -> StoreResult<u64> {
        let mut conn = self.conn();
        // A store that answers reads but cannot take a write (another process holds the write
        // lock, say) cannot record runs: so the count is read under the write lock. A shorter
        // wait than usual, so that a health probe answers while the store is stuck.
        conn.busy_timeout(HEALTH_BUSY_TIMEOUT)?;
        let counted = (|| -> rusqlite::Result<i64> {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let n = tx.query_row("SELECT COUNT(*) FROM sessions", [], |r| r.get(0))?;
            tx.rollback()?;
            Ok(n)
        })();
        conn.busy_timeout(BUSY_TIMEOUT)?;
        Ok(counted? as u64)
    }
}

#[async_trait::async_trait]
impl NodeStore for Sqlite {
    async fn claim_lease(&self, node: &str, now: i64, lease_ms: i64) -> StoreResult<()> {
        self.execute(
            "INSERT INTO nodes (id, started_at, expires_at) VALUES (?1, ?2, ?3) ON CONFLICT (id) DO UPDATE SET expires_at = ?3",
            params![node, now, now + lease_ms],
        )?;
        Ok(())
    }

    async fn interrupt_tasks_of(&self, node: &str, at: i64) -> StoreResult<Vec<String>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let ids = interrupt(&tx, "(node = ?1 OR node IS NULL)", node, at)?;
        tx.commit()?;
        Ok(ids)
    }

    async fn take_over_expired(&self, now: i64) -> StoreResult<Vec<String>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let expired: Vec<String> = {
            let mut stmt = tx.prepare_cached("SELECT id FROM nodes WHERE expires_at < ?1")?;
            let rows = stmt.query_map([now], |r| r.get::<_, String>(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut ids = Vec::new();
        for node in &expired {
            ids.extend(interrupt(&tx, "node = ?1", node, now)?);
            tx.execute("DELETE FROM nodes WHERE id = ?1", [node])?;
        }
        tx.commit()?;
        Ok(ids)
    }

    async fn live_nodes(&self, now: i64) -> StoreResult<Vec<NodeRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, started_at, expires_at FROM nodes WHERE expires_at >= ?1 ORDER BY started_at, id",
        )?;
        let rows = stmt.query_map([now], |r| {
            Ok(NodeRecord {
                id: r.get(0)?,
                started_at: r.get(1)?,
                expires_at: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    async fn claim_run_slot(
        &self,
        _tenant: &str,
        _task_id: &str,
        _max_all: u64,
        _max_tenant: u64,
        _now: i64,
    ) -> StoreResult<bool> {
        // One node: its own slots are the limits.
        Ok(true)
    }

    async fn claim_role(
        &self,
        _role: &str,
        _node: &str,
        _now: i64,
        _lease_ms: i64,
    ) -> StoreResult<bool> {
        Ok(true)
    }

    fn store_kind(&self) -> &'static str {
        "sqlite"
    }

    fn log_notifier(&self) -> std::sync::Arc<dyn crate::store::LogNotifier> {
        // One node: every log is written in this process.
        std::sync::Arc::new(crate::store::LocalNotifier::default())
    }
}

const USER_COLUMNS: &str = "id, tenant, username, email, password_hash, permissions, disabled, created_at, last_login, token_generation";

fn user(row: &rusqlite::Row<'_>) -> rusqlite::Result<UserRecord> {
    let permissions: String = row.get(5)?;
    Ok(UserRecord {
        id: row.get(0)?,
        tenant: row.get(1)?,
        username: row.get(2)?,
        email: row.get(3)?,
        password_hash: row.get(4)?,
        permissions: permissions
            .split(',')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect(),
        disabled: row.get(6)?,
        created_at: row.get(7)?,
        last_login: row.get(8)?,
        token_generation: row.get(9)?,
    })
}

#[async_trait::async_trait]
impl UserStore for Sqlite {
    async fn create_user(&self, u: &UserRecord) -> StoreResult<()> {
        self.execute(
            &format!(
                "INSERT INTO users ({USER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
            ),
            params![
                u.id,
                u.tenant,
                u.username,
                u.email,
                u.password_hash,
                u.permissions.join(","),
                u.disabled,
                u.created_at,
                u.last_login,
                u.token_generation
            ],
        )?;
        Ok(())
    }
    async fn get_user(&self, tenant: &str, id: &str) -> StoreResult<Option<UserRecord>> {
        Ok(self
            .query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE tenant = ?1 AND id = ?2"),
                params![tenant, id],
                user,
            )
            .optional()?)
    }
    async fn find_user_by_name(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        Ok(self
            .query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE username = ?1"),
                [username],
                user,
            )
            .optional()?)
    }
    async fn list_users(&self, tenant: &str) -> StoreResult<Vec<UserRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE tenant = ?1 ORDER BY created_at, id"
        ))?;
        let rows = stmt.query_map([tenant], user)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
    async fn list_all_users(&self) -> StoreResult<Vec<UserRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {USER_COLUMNS} FROM users ORDER BY tenant, created_at, id"
        ))?;
        let rows = stmt.query_map([], user)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
    async fn update_user(&self, u: &UserRecord) -> StoreResult<bool> {
        let n = self.execute(
            "UPDATE users SET email = ?3, password_hash = ?4, permissions = ?5, disabled = ?6, token_generation = ?7 WHERE tenant = ?1 AND id = ?2",
            params![
                u.tenant,
                u.id,
                u.email,
                u.password_hash,
                u.permissions.join(","),
                u.disabled,
                u.token_generation
            ],
        )?;
        Ok(n > 0)
    }
    async fn record_login(&self, tenant: &str, id: &str, at: i64) -> StoreResult<()> {
        self.execute(
            "UPDATE users SET last_login = ?3 WHERE tenant = ?1 AND id = ?2",
            params![tenant, id, at],
        )?;
        Ok(())
    }
    async fn revoke_token(&self, jti: &str, expires_at: i64) -> StoreResult<()> {
        // Revoking twice is harmless: a token logged out twice stays logged out.
        self.execute(
            "INSERT INTO revoked_tokens (jti, expires_at) VALUES (?1, ?2) ON CONFLICT (jti) DO NOTHING",
            params![jti, expires_at],
        )?;
        Ok(())
    }
    async fn is_token_revoked(&self, jti: &str) -> StoreResult<bool> {
        Ok(self
            .query_row("SELECT 1 FROM revoked_tokens WHERE jti = ?1", [jti], |_| {
                Ok(())
            })
            .optional()?
            .is_some())
    }
    async fn prune_revoked_tokens(&self, now: i64) -> StoreResult<u64> {
        let n = self.execute("DELETE FROM revoked_tokens WHERE expires_at < ?1", [now])?;
        Ok(n as u64)
    }
    async fn get_preferences(
        &self,
        tenant: &str,
        user_id: &str,
    ) -> StoreResult<Option<(String, i64)>> {
        Ok(self
            .query_row(
                "SELECT preferences, updated_at FROM user_preferences WHERE tenant = ?1 AND user_id = ?2",
                params![tenant, user_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }
    async fn set_preferences(
        &self,
        tenant: &str,
        user_id: &str,
        json: &str,
        at: i64,
    ) -> StoreResult<()> {
        self.execute(
            "INSERT INTO user_preferences (tenant, user_id, preferences, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (tenant, user_id) DO UPDATE SET preferences = excluded.preferences, updated_at = excluded.updated_at",
            params![tenant, user_id, json, at],
        )?;
        Ok(())
    }
}

/// Append `events` to a task's log in `tx` (see [`TaskStore::append_events`]).
/// Write a task's state, times, exit code, error and summary.
fn update_in(conn: &Connection, t: &TaskRecord) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "UPDATE tasks SET state = ?2, started_at = ?3, finished_at = ?4, exit_code = ?5, error = ?6, summary = ?7 WHERE id = ?1",
    )?
    .execute(params![
        t.id,
        t.state.as_str(),
        t.started_at,
        t.finished_at,
        t.exit_code,
        t.error,
        t.summary.as_ref().map(|s| codec::summary_json(s).to_string()),
    ])
}

fn append_in(
    tx: &rusqlite::Transaction<'_>,
    task_id: &str,
    events: &[EventRecord],
    quota: Option<OutputQuota>,
) -> StoreResult<Appended> {
    let (tenant, mut usage) = tx
        .prepare_cached(
            "SELECT t.tenant, COALESCE(o.events, 0), COALESCE(o.bytes, 0) FROM tasks t LEFT JOIN tenant_output o ON o.tenant = t.tenant WHERE t.id = ?1",
        )?
        .query_row([task_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                StoredOutput {
                    events: r.get::<_, i64>(1)? as u64,
                    bytes: r.get::<_, i64>(2)? as u64,
                },
            ))
        })
        .optional()?
        .ok_or(StoreError::NotFound)?;
    let (mut stored, mut lines, mut bytes) = (0usize, 0u64, 0u64);
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO events (task_id, seq, kind, data, at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for e in events {
            let (kind, data) = codec::event_text(&e.body);
            let size = (kind.len() + data.len()) as u64;
            if quota.is_some_and(|q| !q.admits(usage, size)) {
                break;
            }
            insert.execute(params![task_id, e.seq as i64, kind, data, e.at])?;
            usage.events += 1;
            usage.bytes += size;
            bytes += size;
            stored += 1;
            lines += u64::from(e.is_output());
        }
    }
    if let Some(last) = events[..stored].last() {
        // The task's counters and its tenant's totals follow its log here, in the same
        // transaction, and nowhere else (deletions: the `tasks_output_gone` trigger).
        tx.prepare_cached(
            "UPDATE tasks SET last_seq = ?2, output_lines = output_lines + ?3, log_events = log_events + ?4, log_bytes = log_bytes + ?5 WHERE id = ?1",
        )?
        .execute(params![
            task_id,
            last.seq as i64,
            lines as i64,
            stored as i64,
            bytes as i64
        ])?;
        tx.prepare_cached(
            "INSERT INTO tenant_output (tenant, events, bytes) VALUES (?1, ?2, ?3) ON CONFLICT (tenant) DO UPDATE SET events = events + excluded.events, bytes = bytes + excluded.bytes",
        )?
        .execute(params![tenant, stored as i64, bytes as i64])?;
    }
    Ok(Appended {
        stored,
        tenant: usage,
    })
}

/// Mark the pending and running tasks matching `owner` (a condition on `?1`, the node)
/// interrupted; their ids.
fn interrupt(
    tx: &rusqlite::Transaction<'_>,
    owner: &str,
    node: &str,
    at: i64,
) -> StoreResult<Vec<String>> {
    const WHY: &str = "gantry stopped while the task was unfinished";
    let unfinished = format!("state IN ('pending', 'running') AND {owner}");
    let tasks = {
        let mut stmt = tx.prepare(&format!(
            "SELECT id, last_seq FROM tasks WHERE {unfinished}"
        ))?;
        let rows = stmt.query_map([node], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    tx.execute(
        &format!("UPDATE tasks SET state = ?2, finished_at = ?3, error = ?4 WHERE {unfinished}"),
        params![node, TaskState::Interrupted.as_str(), at, WHY],
    )?;
    // Each log ends with the final state, as every other end does, so that a reader following
    // it learns how it ended. Without a quota: how a task ended is always logged.
    for (id, last_seq) in &tasks {
        let end = EventRecord {
            seq: *last_seq as u64 + 1,
            body: crate::contract::EventBody::State(crate::contract::StateChange {
                state: TaskState::Interrupted,
                reason: None,
                exit_code: None,
                error: Some(WHY.into()),
            }),
            at,
        };
        append_in(tx, id, &[end], None)?;
    }
    Ok(tasks.into_iter().map(|(id, _)| id).collect())
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                StoreError::Unavailable(e.to_string())
            }
            Some(ErrorCode::ConstraintViolation) => StoreError::Conflict(e.to_string()),
            _ => StoreError::Internal(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ws(id: &str, tenant: &str) -> WorkspaceRecord {
        WorkspaceRecord {
            path: None,
            id: id.into(),
            tenant: tenant.into(),
            name: format!("{id}-name"),
            created_at: 1,
        }
    }

    fn task(id: &str, tenant: &str, ws: &str, state: TaskState) -> TaskRecord {
        TaskRecord {
            id: id.into(),
            tenant: tenant.into(),
            workspace_id: ws.into(),
            backend: "exec".into(),
            request: crate::contract::plain_request("p"),
            state,
            created_at: 2,
            started_at: None,
            finished_at: None,
            exit_code: None,
            error: None,
            summary: None,
            last_seq: 0,
            output_lines: 0,
            node: None,
        }
    }

    fn event(seq: u64) -> EventRecord {
        EventRecord {
            seq,
            body: line(&format!("l{seq}")),
            at: 3,
        }
    }

    fn line(text: &str) -> crate::contract::EventBody {
        crate::contract::EventBody::Output(crate::contract::OutputLine {
            stream: crate::contract::OutputStream::Stdout,
            text: text.into(),
            partial: false,
        })
    }

    #[tokio::test]
    async fn rows_are_scoped_to_their_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(&dir.path().join("g.db")).unwrap();
        db.create_workspace(&ws("w1", "alice")).await.unwrap();
        db.create_workspace(&ws("w2", "bob")).await.unwrap();
        assert_eq!(
            db.list_workspaces("alice").await.unwrap(),
            vec![ws("w1", "alice")]
        );
        assert_eq!(db.get_workspace("bob", "w1").await.unwrap(), None);
        assert!(!db.delete_workspace("bob", "w1").await.unwrap());
        db.insert_task(&task("t1", "alice", "w1", TaskState::Running))
            .await
            .unwrap();
        assert!(db.get_task("bob", "t1").await.unwrap().is_none());
        assert_eq!(db.list_tasks("alice", Some("w1")).await.unwrap().len(), 1);
        assert_eq!(db.list_tasks("alice", Some("w2")).await.unwrap().len(), 0);
        assert_eq!(db.list_tasks("bob", None).await.unwrap().len(), 0);
    }

    #[tokio::test]
    async fn events_append_in_order_and_read_from_any_seq() {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(&dir.path().join("g.db")).unwrap();
        db.create_workspace(&ws("w1", "alice")).await.unwrap();
        db.insert_task(&task("t1", "alice", "w1", TaskState::Running))
            .await
            .unwrap();
        let batch: Vec<_> = (1..=10).map(event).collect();
        db.append_events("t1", &batch, None).await.unwrap();
        let state = EventRecord {
            seq: 11,
            body: crate::contract::EventBody::State(crate::contract::StateChange {
                state: TaskState::Running,
                reason: None,
                exit_code: None,
                error: None,
            }),
            at: 3,
        };
        db.append_events("t1", &[state], None).await.unwrap();
        let t = db.get_task("alice", "t1").await.unwrap().unwrap();
        assert_eq!((t.last_seq, t.output_lines), (11, 10));
        let read = db.read_events("t1", 4, 3).await.unwrap();
        assert_eq!(read.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5, 6]);
        assert_eq!(read[0].body, line("l4"));
        // A seq written twice is refused, and the batch with it leaves nothing behind.
        assert!(
            db.append_events("t1", &[event(12), event(11)], None)
                .await
                .is_err()
        );
        assert_eq!(db.read_events("t1", 12, 10).await.unwrap(), vec![]);
        let t = db.get_task("alice", "t1").await.unwrap().unwrap();
        assert_eq!((t.last_seq, t.output_lines), (11, 10));
    }

    #[tokio::test]
    async fn a_state_and_its_log_entry_commit_together_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(&dir.path().join("g.db")).unwrap();
        db.create_workspace(&ws("w1", "alice")).await.unwrap();
        let mut t = task("t1", "alice", "w1", TaskState::Pending);
        db.insert_task(&t).await.unwrap();
        t.state = TaskState::Running;
        t.started_at = Some(5);
        let appended = db
            .update_task_and_append(&t, &[event(1), event(2)])
            .await
            .unwrap();
        assert_eq!(appended.stored, 2);
        let stored = db.get_task("alice", "t1").await.unwrap().unwrap();
        assert_eq!(stored.state, TaskState::Running);
        assert_eq!((stored.started_at, stored.last_seq), (Some(5), 2));
        // A seq already logged: neither the row nor the log changes.
        t.state = TaskState::Done;
        assert!(db.update_task_and_append(&t, &[event(2)]).await.is_err());
        let stored = db.get_task("alice", "t1").await.unwrap().unwrap();
        assert_eq!((stored.state, stored.last_seq), (TaskState::Running, 2));
        assert_eq!(db.read_events("t1", 1, 10).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn reopening_keeps_everything_and_interrupts_unfinished_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        {
            let db = Sqlite::open(&path).unwrap();
            db.create_workspace(&ws("w1", "alice")).await.unwrap();
            db.insert_task(&task("run", "alice", "w1", TaskState::Running))
                .await
                .unwrap();
            db.insert_task(&task("wait", "alice", "w1", TaskState::Pending))
                .await
                .unwrap();
            db.insert_task(&task("ok", "alice", "w1", TaskState::Done))
                .await
                .unwrap();
            db.append_events("run", &[event(1)], None).await.unwrap();
        }
        let db = Sqlite::open(&path).unwrap();
        let mut ids = db.interrupt_tasks_of("n1", 9).await.unwrap();
        ids.sort();
        assert_eq!(ids, ["run", "wait"]);
        let run = db.get_task("alice", "run").await.unwrap().unwrap();
        assert_eq!(run.state, TaskState::Interrupted);
        assert_eq!(run.finished_at, Some(9));
        assert_eq!(
            db.get_task("alice", "ok").await.unwrap().unwrap().state,
            TaskState::Done
        );
        // The log is kept, and ends with the final state.
        let log = db.read_events("run", 1, 10).await.unwrap();
        assert_eq!(log.len(), 2);
        let crate::contract::EventBody::State(end) = &log[1].body else {
            panic!("{:?}", log[1]);
        };
        assert_eq!((log[1].seq, end.state), (2, TaskState::Interrupted));
        assert_eq!(
            db.get_task("alice", "run").await.unwrap().unwrap().last_seq,
            2
        );
    }

    #[tokio::test]
    async fn a_nodes_tasks_are_taken_over_only_once_its_lease_has_expired() {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(&dir.path().join("g.db")).unwrap();
        db.create_workspace(&ws("w1", "alice")).await.unwrap();
        for (id, node) in [("ta", "a"), ("tb", "b")] {
            let mut t = task(id, "alice", "w1", TaskState::Running);
            t.node = Some(node.into());
            db.insert_task(&t).await.unwrap();
        }
        db.claim_lease("a", 1_000, 30_000).await.unwrap();
        db.claim_lease("b", 1_000, 30_000).await.unwrap();
        // While both leases hold, nothing is taken over.
        assert!(db.take_over_expired(20_000).await.unwrap().is_empty());
        let live = db.live_nodes(20_000).await.unwrap();
        assert_eq!(
            live.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        // b renews; a does not, and its task is taken over once its lease is past.
        db.claim_lease("b", 25_000, 30_000).await.unwrap();
        assert_eq!(db.take_over_expired(40_000).await.unwrap(), ["ta"]);
        let ta = db.get_task("alice", "ta").await.unwrap().unwrap();
        assert_eq!(ta.state, TaskState::Interrupted);
        let tb = db.get_task("alice", "tb").await.unwrap().unwrap();
        assert_eq!(
            tb.state,
            TaskState::Running,
            "a live node's task is never taken"
        );
        let live = db.live_nodes(40_000).await.unwrap();
        assert_eq!(
            live.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
        // A node restarting interrupts what its previous process left, and only that.
        assert_eq!(db.interrupt_tasks_of("b", 41_000).await.unwrap(), ["tb"]);
    }

    #[tokio::test]
    async fn store_errors_are_typed() {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(&dir.path().join("g.db")).unwrap();
        db.create_workspace(&ws("w1", "alice")).await.unwrap();
        let again = db.create_workspace(&ws("w1", "alice")).await.unwrap_err();
        assert!(matches!(again, StoreError::Conflict(_)), "{again:?}");
    }

    #[tokio::test]
    async fn deleting_a_workspace_removes_its_tasks_and_events() {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(&dir.path().join("g.db")).unwrap();
        db.create_workspace(&ws("w1", "alice")).await.unwrap();
        db.insert_task(&task("t1", "alice", "w1", TaskState::Done))
            .await
            .unwrap();
        db.append_events("t1", &[event(1)], None).await.unwrap();
        assert!(db.delete_workspace("alice", "w1").await.unwrap());
        assert!(db.get_task("alice", "t1").await.unwrap().is_none());
        assert!(db.read_events("t1", 0, 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_workspace_with_a_live_task_is_not_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(&dir.path().join("g.db")).unwrap();
        db.create_workspace(&ws("w1", "alice")).await.unwrap();
        for state in [TaskState::Pending, TaskState::Running] {
            let t = task("t1", "alice", "w1", state);
            if state == TaskState::Pending {
                db.insert_task(&t).await.unwrap();
                db.append_events("t1", &[event(1)], None).await.unwrap();
            } else {
                db.update_task(&t).await.unwrap();
            }
            let refused = db.delete_workspace("alice", "w1").await.unwrap_err();
            assert!(matches!(refused, StoreError::Conflict(_)), "{refused:?}");
            assert!(db.get_workspace("alice", "w1").await.unwrap().is_some());
            assert_eq!(db.read_events("t1", 1, 10).await.unwrap().len(), 1);
        }
        assert!(!db.delete_workspace("bob", "w1").await.unwrap());
        db.update_task(&task("t1", "alice", "w1", TaskState::Failed))
            .await
            .unwrap();
        assert!(db.delete_workspace("alice", "w1").await.unwrap());
    }

    fn sess(id: &str, tenant: &str, backend: &str, status: &str, at: i64) -> SessionRecord {
        SessionRecord {
            id: id.into(),
            tenant: tenant.into(),
            backend: backend.into(),
            status: status.into(),
            workspace_id: None,
            created_at: at,
            updated_at: at,
            data: json!({ "title": id }),
        }
    }

    /// Commits never checkpoint (that stall moved to a thread), yet the log does not grow
    /// without bound: once the checkpointer has run, the next writes reuse the log from its
    /// start.
    #[tokio::test]
    async fn the_log_is_checkpointed_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        let wal = dir.path().join("g.db-wal");
        let db = Sqlite::open(&path).unwrap();
        let auto: i64 = db
            .conn()
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .unwrap();
        assert_eq!(auto, 0, "commits do not checkpoint");
        async fn round(db: &Sqlite, wal: &Path, r: usize) -> u64 {
            for i in 0..50 {
                let s = sess(&format!("r{r}-{i}"), "alice", "claude", "active", 1);
                db.create_session(&s).await.unwrap();
            }
            std::fs::metadata(wal).unwrap().len()
        }
        let first = round(&db, &wal, 0).await;
        for r in 1..=10 {
            tokio::time::sleep(CHECKPOINT_EVERY + Duration::from_millis(300)).await;
            if round(&db, &wal, r).await <= first + first / 2 {
                return;
            }
        }
        panic!(
            "the log kept growing: {} bytes after 11 rounds, {first} after one",
            std::fs::metadata(&wal).unwrap().len()
        );
    }

    #[tokio::test]
    async fn sessions_filter_page_and_stay_with_their_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        {
            let db = Sqlite::open(&path).unwrap();
            for (i, (backend, status)) in [
                ("claude", "active"),
                ("codex", "active"),
                ("claude", "error"),
                ("claude", "active"),
            ]
            .into_iter()
            .enumerate()
            {
                db.create_session(&sess(&format!("s{i}"), "alice", backend, status, i as i64))
                    .await
                    .unwrap();
            }
            db.create_session(&sess("b0", "bob", "claude", "active", 9))
                .await
                .unwrap();
        }
        // Reopened: sessions persist.
        let db = Sqlite::open(&path).unwrap();
        let q = |backend: Option<&str>, status: Option<&str>, limit, offset| SessionQuery {
            backend: backend.map(Into::into),
            status: status.map(Into::into),
            limit,
            offset,
        };
        let ids = |p: SessionPage| {
            (
                p.sessions.into_iter().map(|s| s.id).collect::<Vec<_>>(),
                p.total,
            )
        };
        assert_eq!(
            ids(db
                .list_sessions("alice", &q(None, None, 10, 0))
                .await
                .unwrap()),
            (vec!["s3".into(), "s2".into(), "s1".into(), "s0".into()], 4)
        );
        assert_eq!(
            ids(db
                .list_sessions("alice", &q(Some("claude"), Some("active"), 10, 0))
                .await
                .unwrap()),
            (vec!["s3".into(), "s0".into()], 2)
        );
        assert_eq!(
            ids(db
                .list_sessions("alice", &q(None, None, 2, 1))
                .await
                .unwrap()),
            (vec!["s2".into(), "s1".into()], 4)
        );
        assert_eq!(db.count_sessions().await.unwrap(), 5);
        assert!(db.get_session("alice", "b0").await.unwrap().is_none());
        assert!(!db.delete_session("alice", "b0").await.unwrap());
        let mut s = db.get_session("alice", "s0").await.unwrap().unwrap();
        assert_eq!(s.data["title"], "s0");
        s.status = "completed".into();
        s.updated_at = 100;
        assert!(db.update_session(&s).await.unwrap());
        assert_eq!(
            db.get_session("alice", "s0").await.unwrap().unwrap().status,
            "completed"
        );
        assert!(db.delete_session("alice", "s0").await.unwrap());
        assert!(db.get_session("alice", "s0").await.unwrap().is_none());
        // Another connection holding the write lock: the store cannot record, so no count.
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        assert!(db.count_sessions().await.is_err());
        other.execute_batch("ROLLBACK").unwrap();
        assert_eq!(db.count_sessions().await.unwrap(), 4);
    }

    #[tokio::test]
    async fn a_quota_stores_what_fits_and_drops_the_rest_of_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(&dir.path().join("g.db")).unwrap();
        db.create_workspace(&ws("w1", "alice")).await.unwrap();
        db.create_workspace(&ws("w2", "bob")).await.unwrap();
        db.insert_task(&task("t1", "alice", "w1", TaskState::Running))
            .await
            .unwrap();
        db.insert_task(&task("t2", "alice", "w1", TaskState::Running))
            .await
            .unwrap();
        db.insert_task(&task("b1", "bob", "w2", TaskState::Running))
            .await
            .unwrap();
        // `{"line":"l1"}` and its kind `stdout`: 19 bytes an entry (l1..l9).
        let one = db.append_events("t1", &[event(1)], None).await.unwrap();
        assert_eq!(one.stored, 1);
        assert_eq!(
            one.tenant,
            StoredOutput {
                events: 1,
                bytes: 19
            }
        );
        let quota = OutputQuota {
            max_events: 4,
            max_bytes: 0,
        };
        let batch: Vec<_> = (2..=6).map(event).collect();
        let cut = db.append_events("t1", &batch, Some(quota)).await.unwrap();
        assert_eq!(cut.stored, 3, "room for three more entries");
        assert_eq!(cut.tenant.events, 4);
        let t = db.get_task("alice", "t1").await.unwrap().unwrap();
        assert_eq!((t.last_seq, t.output_lines), (4, 4));
        assert_eq!(db.read_events("t1", 1, 10).await.unwrap().len(), 4);
        // The cap is the tenant's, over all its tasks; nothing more fits, for any of them.
        let none = db
            .append_events("t2", &[event(1)], Some(quota))
            .await
            .unwrap();
        assert_eq!(none.stored, 0);
        assert!(db.read_events("t2", 1, 10).await.unwrap().is_empty());
        // Past the quota, what must be stored still is (a state change, a marker).
        assert_eq!(
            db.append_events("t1", &[event(5)], None)
                .await
                .unwrap()
                .stored,
            1
        );
        // Another tenant's quota is its own.
        let bob = db.append_events("b1", &batch, Some(quota)).await.unwrap();
        assert_eq!(bob.stored, 4);
        // A byte cap cuts at the entry that would pass it.
        let bytes = OutputQuota {
            max_events: 0,
            max_bytes: 4 * 19 + 10,
        };
        db.insert_task(&task("b2", "bob", "w2", TaskState::Running))
            .await
            .unwrap();
        let cut = db
            .append_events("b2", &[event(1)], Some(bytes))
            .await
            .unwrap();
        assert_eq!((cut.stored, cut.tenant.bytes), (0, 4 * 19));
        assert!(bytes.is_reached(StoredOutput {
            events: 1,
            bytes: 4 * 19 + 10
        }));
        assert!(!bytes.is_reached(cut.tenant));
        // An unknown task is not found.
        assert!(matches!(
            db.append_events("nope", &[event(1)], None).await,
            Err(StoreError::NotFound)
        ));
    }

    #[tokio::test]
    async fn stored_output_follows_appends_and_every_deletion() {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(&dir.path().join("g.db")).unwrap();
        for (w, tenant) in [("w1", "alice"), ("w2", "alice"), ("w3", "bob")] {
            db.create_workspace(&ws(w, tenant)).await.unwrap();
        }
        for (t, w, tenant) in [
            ("t1", "w1", "alice"),
            ("t2", "w2", "alice"),
            ("b1", "w3", "bob"),
        ] {
            db.insert_task(&task(t, tenant, w, TaskState::Done))
                .await
                .unwrap();
            let batch: Vec<_> = (1..=3).map(event).collect();
            db.append_events(t, &batch, None).await.unwrap();
        }
        let three = StoredOutput {
            events: 3,
            bytes: 57,
        };
        let six = StoredOutput {
            events: 6,
            bytes: 114,
        };
        assert_eq!(db.stored_output("alice").await.unwrap(), six);
        assert_eq!(
            db.stored_output("nobody").await.unwrap(),
            StoredOutput::default()
        );
        assert_eq!(
            db.stored_output_by_tenant().await.unwrap(),
            vec![("alice".to_string(), six), ("bob".to_string(), three)]
        );
        // A workspace's tasks go by cascade, and their output with them.
        assert!(db.delete_workspace("alice", "w1").await.unwrap());
        assert_eq!(db.stored_output("alice").await.unwrap(), three);
        assert_eq!(db.delete_finished_before("alice", 0).await.unwrap(), 0);
        // Every task here finished at `None`: retention by age does not see them as finished.
        let mut done = task("t3", "alice", "w2", TaskState::Done);
        done.finished_at = Some(5);
        db.insert_task(&done).await.unwrap();
        db.append_events("t3", &[event(1)], None).await.unwrap();
        assert_eq!(db.delete_finished_before("alice", 6).await.unwrap(), 1);
        assert_eq!(db.stored_output("alice").await.unwrap(), three);
        assert_eq!(db.stored_output("bob").await.unwrap(), three);
    }

    #[tokio::test]
    async fn the_migration_counts_logs_already_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        {
            // A database as the version before stored output was counted left it.
            let conn = Connection::open(&path).unwrap();
            for sql in &MIGRATIONS[..5] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 5).unwrap();
            conn.execute_batch(
                "INSERT INTO workspaces (id, tenant, name, created_at) VALUES ('w1', 'alice', 'w', 1);
                 INSERT INTO tasks (id, tenant, workspace_id, backend, request, state, created_at)
                     VALUES ('t1', 'alice', 'w1', 'sh', '{\"prompt\":\"p\"}', 'done', 1);
                 INSERT INTO events (task_id, seq, kind, data, at)
                     VALUES ('t1', 1, 'stdout', '{\"line\":\"é\"}', 1), ('t1', 2, 'stdout', '{}', 1);",
            )
            .unwrap();
        }
        let db = Sqlite::open(&path).unwrap();
        // Bytes, not characters: `é` is two.
        assert_eq!(
            db.stored_output("alice").await.unwrap(),
            StoredOutput {
                events: 2,
                bytes: 6 + 13 + 6 + 2
            }
        );
    }

    #[tokio::test]
    async fn reclaiming_space_truncates_the_log_and_shrinks_a_new_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        let wal = dir.path().join("g.db-wal");
        let db = Sqlite::open(&path).unwrap();
        let mode: i64 = db
            .conn()
            .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, 2, "a new database vacuums incrementally");
        db.create_workspace(&ws("w1", "alice")).await.unwrap();
        let mut t = task("t1", "alice", "w1", TaskState::Done);
        t.finished_at = Some(1);
        db.insert_task(&t).await.unwrap();
        let long = "x".repeat(1000);
        for chunk in 0..20 {
            let batch: Vec<_> = (1..=100)
                .map(|i| EventRecord {
                    seq: chunk * 100 + i,
                    body: line(&long),
                    at: 1,
                })
                .collect();
            db.append_events("t1", &batch, None).await.unwrap();
        }
        db.reclaim_space().await.unwrap();
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0, "the log is cut");
        let full = std::fs::metadata(&path).unwrap().len();
        assert!(full > 2_000_000, "{full}");
        assert_eq!(db.delete_finished_before("alice", 2).await.unwrap(), 1);
        assert!(std::fs::metadata(&wal).unwrap().len() > 0);
        db.reclaim_space().await.unwrap();
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0);
        let after = std::fs::metadata(&path).unwrap().len();
        assert!(after < full / 10, "{after} of {full}");
        use crate::metrics::StoreGauges;
        let size = db.store_size();
        assert_eq!((size.database_bytes, size.wal_bytes), (after, 0));
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = Sqlite::open(&path).unwrap_err().to_string();
        assert!(err.contains("schema version 99"), "{err}");
    }

    fn a_user(id: &str, tenant: &str, username: &str) -> UserRecord {
        UserRecord {
            id: id.into(),
            tenant: tenant.into(),
            username: username.into(),
            email: None,
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            permissions: vec!["read".into(), "write".into()],
            disabled: false,
            created_at: 1,
            last_login: None,
            token_generation: 0,
        }
    }

    #[tokio::test]
    async fn users_are_unique_per_node_and_read_within_their_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(&dir.path().join("g.db")).unwrap();
        db.create_user(&a_user("u1", "alice", "Ann")).await.unwrap();
        let taken = db.create_user(&a_user("u2", "bob", "ann")).await;
        assert!(
            matches!(taken, Err(StoreError::Conflict(_))),
            "names are unique across tenants, whatever their case"
        );
        db.create_user(&a_user("u3", "bob", "ben")).await.unwrap();
        assert!(db.get_user("bob", "u1").await.unwrap().is_none());
        let ann = db.get_user("alice", "u1").await.unwrap().unwrap();
        assert_eq!(ann.permissions, ["read", "write"]);
        assert_eq!(db.find_user_by_name("ANN").await.unwrap().unwrap().id, "u1");
        assert_eq!(db.list_users("bob").await.unwrap().len(), 1);
        assert_eq!(db.list_all_users().await.unwrap().len(), 2);
        let mut changed = ann.clone();
        changed.tenant = "bob".into();
        changed.disabled = true;
        assert!(
            !db.update_user(&changed).await.unwrap(),
            "an update names the user's own tenant"
        );
        changed.tenant = "alice".into();
        assert!(db.update_user(&changed).await.unwrap());
        assert!(db.get_user("alice", "u1").await.unwrap().unwrap().disabled);
    }

    #[tokio::test]
    async fn revoked_tokens_are_kept_until_they_expire() {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(&dir.path().join("g.db")).unwrap();
        db.revoke_token("old", 100).await.unwrap();
        db.revoke_token("new", 300).await.unwrap();
        db.revoke_token("new", 300).await.unwrap();
        assert!(db.is_token_revoked("old").await.unwrap());
        assert!(!db.is_token_revoked("other").await.unwrap());
        assert_eq!(db.prune_revoked_tokens(200).await.unwrap(), 1);
        assert!(!db.is_token_revoked("old").await.unwrap());
        assert!(db.is_token_revoked("new").await.unwrap());
    }
}
