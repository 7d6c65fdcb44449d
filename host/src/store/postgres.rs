//! [`Store`](super::Store) on PostgreSQL: several gantry nodes on one database. Chosen by
//! `store = "postgres://…"` in the config or `GANTRY_STORE`; SQLite stays the default.
//!
//! The rows are SQLite's, column for column (every integer a `BIGINT`, flags `BOOLEAN`, JSON as
//! text in [`codec`]'s encoding), so both stores answer every trait the same way. Migrations
//! are `.sql` files beside this module, applied in order under an advisory lock (two nodes
//! starting together do not race) and recorded in `gantry_migrations`; a database newer than
//! this gantry is refused, as on SQLite.
//!
//! Connections come from a `deadpool-postgres` pool; each statement is prepared once per
//! connection (`prepare_cached`). Where SQLite took its one write lock (an append judged
//! against a tenant's quota), this takes the row lock of what the transaction judges.

mod board;
mod commands;
mod events;
mod notifier;
mod webhooks;
mod work_sessions;

use super::{
    Appended, EventRecord, NodeRecord, NodeStore, OutputQuota, RetentionStore, SessionPage,
    SessionQuery, SessionRecord, SessionStore, StoreError, StoreResult, StoredOutput, TaskRecord,
    TaskState, TaskStore, UserRecord, UserStore, WorkspaceRecord, WorkspaceStore, codec,
};
use anyhow::{Context, Result};
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, Row};

/// The schema, in order: `(version, name, sql)`. Append only; never edit one that shipped.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "core", include_str!("postgres/migrations/0001_core.sql")),
    (
        2,
        "board",
        include_str!("postgres/migrations/0002_board.sql"),
    ),
    (
        3,
        "events and webhooks",
        include_str!("postgres/migrations/0003_events_webhooks.sql"),
    ),
    (
        4,
        "commands and work sessions",
        include_str!("postgres/migrations/0004_commands_work_sessions.sql"),
    ),
    (
        5,
        "roles",
        include_str!("postgres/migrations/0005_roles.sql"),
    ),
];

/// The advisory lock migrations run under (any constant of ours; "gantry" in ASCII).
const MIGRATION_LOCK: i64 = 0x67_61_6e_74_72_79;

/// How often the figures `/metrics` reads (database size, stored output per tenant) are
/// refreshed: a scrape never waits on the database.
const GAUGES_EVERY: Duration = Duration::from_secs(5);

const UNFINISHED: &str = "state IN ('pending', 'running')";

/// The advisory lock running slots are claimed under ("slots" in ASCII).
const RUN_SLOTS_LOCK: i64 = 0x73_6c_6f_74_73;

/// The store on a PostgreSQL database.
pub struct Postgres {
    pool: Pool,
    /// Where it is, without the password: `host:port/database`.
    target: String,
    /// What `/metrics` shows, refreshed in the background.
    gauges: Arc<Mutex<crate::metrics::StoreSize>>,
    /// How to connect, for the notifier's own listening connection.
    config: tokio_postgres::Config,
    /// Made when the supervisor first asks (commands such as `gantry migrate` need none).
    notifier: std::sync::OnceLock<Arc<notifier::PgNotifier>>,
    /// Ends the refresher with the store.
    _refresher: RefresherGuard,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct RefresherGuard(Option<tokio::task::AbortHandle>);

impl Drop for RefresherGuard {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
        }
    }
}

/// How a migration run went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    /// The schema version before.
    pub from: i64,
    /// The schema version now.
    pub to: i64,
}

impl Postgres {
    /// Connect to the database at `url` (a `postgres://` URL or a libpq key-value string) with
    /// a pool of up to `max_connections`, and bring its schema up to date.
    pub async fn connect(url: &str, max_connections: usize) -> Result<Postgres> {
        let store = Postgres::connect_only(url, max_connections).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connect without migrating (for `gantry migrate`, which reports what it does).
    pub async fn connect_only(url: &str, max_connections: usize) -> Result<Postgres> {
        let mut config: tokio_postgres::Config = url.parse().context(
            "the store's PostgreSQL URL is not valid (postgres://USER:PASSWORD@HOST:PORT/DATABASE)",
        )?;
        if config.get_application_name().is_none() {
            config.application_name("gantry");
        }
        config.connect_timeout(Duration::from_secs(10));
        let target = describe(&config);
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_connections.max(2))
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(10)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .context("building the PostgreSQL pool")?;
        // Fail now, with the reason, rather than at the first request.
        let client = pool
            .get()
            .await
            .with_context(|| format!("connecting to PostgreSQL at {target}"))?;
        drop(client);
        let gauges = Arc::new(Mutex::new(crate::metrics::StoreSize::default()));
        let refresher = tokio::spawn(refresh_gauges(pool.clone(), gauges.clone()));
        Ok(Postgres {
            pool,
            target,
            gauges,
            config,
            notifier: std::sync::OnceLock::new(),
            _refresher: RefresherGuard(Some(refresher.abort_handle())),
        })
    }

    /// Where the database is, without credentials (`host:port/database`).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Apply the migrations this database lacks, in order, each in its own transaction,
    /// under an advisory lock that other nodes wait on.
    pub async fn migrate(&self) -> Result<Migrated> {
        let mut client = self.pool.get().await.context("connecting to PostgreSQL")?;
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS gantry_migrations (
                    version BIGINT PRIMARY KEY,
                    name TEXT NOT NULL,
                    applied_at BIGINT NOT NULL
                )",
            )
            .await
            .or_else(|e| {
                // Two nodes creating it at once: the loser's error is harmless.
                if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .context("creating gantry_migrations")?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let from: i64 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM gantry_migrations",
                &[],
            )
            .await?
            .get(0);
        let known = MIGRATIONS.last().map_or(0, |m| m.0);
        if from > known {
            anyhow::bail!(
                "the database has schema version {from}, newer than this gantry knows ({known}); use a newer gantry"
            );
        }
        for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > from) {
            tx.batch_execute(sql)
                .await
                .with_context(|| format!("migration {version} ({name})"))?;
            tx.execute(
                "INSERT INTO gantry_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                &[version, name, &super::now_ms()],
            )
            .await?;
            tracing::info!(version, name, "applied a PostgreSQL migration");
        }
        tx.commit().await?;
        Ok(Migrated { from, to: known })
    }

    /// A pooled connection.
    pub(crate) async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
    }

    /// Run `sql` with `params`; how many rows it touched.
    async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> StoreResult<u64> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await?;
        Ok(client.execute(&stmt, params).await?)
    }

    /// The rows of `sql`.
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> StoreResult<Vec<Row>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await?;
        Ok(client.query(&stmt, params).await?)
    }

    /// The row of `sql`, if any.
    async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> StoreResult<Option<Row>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await?;
        Ok(client.query_opt(&stmt, params).await?)
    }
}

/// `host:port/database` of a connection config, for logs and `/health` (never its password).
fn describe(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("");
    format!("{host}:{port}/{db}")
}

async fn refresh_gauges(pool: Pool, gauges: Arc<Mutex<crate::metrics::StoreSize>>) {
    loop {
        let read = async {
            let client = pool.get().await?;
            let size: i64 = client
                .query_one("SELECT pg_database_size(current_database())", &[])
                .await?
                .get(0);
            let rows = client
                .query(
                    "SELECT tenant, events, bytes FROM tenant_output WHERE events > 0 OR bytes > 0 ORDER BY tenant",
                    &[],
                )
                .await?;
            let tenants = rows
                .iter()
                .map(|r| crate::metrics::TenantOutput {
                    tenant: r.get(0),
                    events: r.get::<_, i64>(1).max(0) as u64,
                    bytes: r.get::<_, i64>(2).max(0) as u64,
                })
                .collect();
            Ok::<_, StoreError>(crate::metrics::StoreSize {
                database_bytes: size.max(0) as u64,
                wal_bytes: 0,
                tenants,
            })
        };
        match read.await {
            Ok(size) => *gauges.lock().unwrap_or_else(|p| p.into_inner()) = size,
            Err(e) => tracing::debug!("reading the store's size: {e}"),
        }
        tokio::time::sleep(GAUGES_EVERY).await;
    }
}

impl crate::metrics::StoreGauges for Postgres {
    fn store_size(&self) -> crate::metrics::StoreSize {
        self.gauges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        let Some(code) = e.code() else {
            // No SQLSTATE: the connection failed or closed.
            return StoreError::Unavailable(e.to_string());
        };
        if *code == SqlState::UNIQUE_VIOLATION
            || *code == SqlState::FOREIGN_KEY_VIOLATION
            || *code == SqlState::CHECK_VIOLATION
            || *code == SqlState::NOT_NULL_VIOLATION
        {
            StoreError::Conflict(e.to_string())
        } else if *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::LOCK_NOT_AVAILABLE
            || *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW
            || *code == SqlState::TOO_MANY_CONNECTIONS
            || *code == SqlState::READ_ONLY_SQL_TRANSACTION
            || *code == SqlState::QUERY_CANCELED
        {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Internal(anyhow::Error::new(e))
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

/// A column that failed to decode.
pub(crate) fn bad_column(column: &str, e: anyhow::Error) -> StoreError {
    StoreError::Internal(e.context(format!("decoding column {column}")))
}

/// A JSON text column.
fn json_column(column: &str, text: &str) -> StoreResult<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| bad_column(column, e.into()))
}

/// A count or sequence number stored as `BIGINT`.
fn unsigned(n: i64) -> u64 {
    n.max(0) as u64
}

/// A `u64` to store as `BIGINT` (saturating).
pub(crate) fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn workspace(row: &Row) -> StoreResult<WorkspaceRecord> {
    Ok(WorkspaceRecord {
        id: row.try_get(0)?,
        tenant: row.try_get(1)?,
        name: row.try_get(2)?,
        created_at: row.try_get(3)?,
        path: row.try_get(4)?,
    })
}

const WORKSPACE_COLUMNS: &str = "id, tenant, name, created_at, path";

const SESSION_COLUMNS: &str =
    "id, tenant, backend, status, workspace_id, created_at, updated_at, data";

fn session(row: &Row) -> StoreResult<SessionRecord> {
    Ok(SessionRecord {
        id: row.try_get(0)?,
        tenant: row.try_get(1)?,
        backend: row.try_get(2)?,
        status: row.try_get(3)?,
        workspace_id: row.try_get(4)?,
        created_at: row.try_get(5)?,
        updated_at: row.try_get(6)?,
        data: json_column("data", row.try_get(7)?)?,
    })
}

const TASK_COLUMNS: &str = "id, tenant, workspace_id, backend, request, state, created_at, started_at, finished_at, exit_code, error, summary, last_seq, output_lines, node";

fn task(row: &Row) -> StoreResult<TaskRecord> {
    let state: &str = row.try_get(5)?;
    let summary: Option<&str> = row.try_get(11)?;
    Ok(TaskRecord {
        id: row.try_get(0)?,
        tenant: row.try_get(1)?,
        workspace_id: row.try_get(2)?,
        backend: row.try_get(3)?,
        request: codec::request_from_json(&json_column("request", row.try_get(4)?)?)
            .map_err(|e| bad_column("request", e))?,
        state: state.parse().map_err(|e| bad_column("state", e))?,
        created_at: row.try_get(6)?,
        started_at: row.try_get(7)?,
        finished_at: row.try_get(8)?,
        exit_code: row
            .try_get::<_, Option<i64>>(9)?
            .map(|c| c.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32),
        error: row.try_get(10)?,
        summary: summary
            .map(|s| json_column("summary", s))
            .transpose()?
            .map(|v| codec::summary_from_json(&v)),
        last_seq: unsigned(row.try_get(12)?),
        output_lines: unsigned(row.try_get(13)?),
        node: row.try_get(14)?,
    })
}

fn rows<T>(rows: Vec<Row>, decode: fn(&Row) -> StoreResult<T>) -> StoreResult<Vec<T>> {
    rows.iter().map(decode).collect()
}

#[async_trait::async_trait]
impl WorkspaceStore for Postgres {
    async fn create_workspace(&self, ws: &WorkspaceRecord) -> StoreResult<()> {
        self.execute(
            &format!("INSERT INTO workspaces ({WORKSPACE_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"),
            &[&ws.id, &ws.tenant, &ws.name, &ws.created_at, &ws.path],
        )
        .await?;
        Ok(())
    }
    async fn list_workspaces(&self, tenant: &str) -> StoreResult<Vec<WorkspaceRecord>> {
        let found = self
            .query(
                &format!("SELECT {WORKSPACE_COLUMNS} FROM workspaces WHERE tenant = $1 ORDER BY created_at, id"),
                &[&tenant],
            )
            .await?;
        rows(found, workspace)
    }
    async fn get_workspace(&self, tenant: &str, id: &str) -> StoreResult<Option<WorkspaceRecord>> {
        self.query_opt(
            &format!("SELECT {WORKSPACE_COLUMNS} FROM workspaces WHERE tenant = $1 AND id = $2"),
            &[&tenant, &id],
        )
        .await?
        .as_ref()
        .map(workspace)
        .transpose()
    }
    async fn delete_workspace(&self, tenant: &str, id: &str) -> StoreResult<bool> {
        // One statement: the row goes only if no task is live in it, whichever node runs it.
        let row = self
            .query_opt(
                "WITH live AS (
                     SELECT 1 FROM tasks
                     WHERE tenant = $1 AND workspace_id = $2 AND state IN ('pending', 'running')
                     LIMIT 1
                 ), gone AS (
                     DELETE FROM workspaces
                     WHERE tenant = $1 AND id = $2 AND NOT EXISTS (SELECT 1 FROM live)
                     RETURNING 1
                 )
                 SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM live)",
                &[&tenant, &id],
            )
            .await?
            .ok_or_else(|| StoreError::Internal(anyhow::anyhow!("no answer to a deletion")))?;
        let (deleted, live): (i64, i64) = (row.get(0), row.get(1));
        if live > 0 {
            return Err(StoreError::Conflict(format!(
                "a task is pending or running in workspace {id}"
            )));
        }
        Ok(deleted > 0)
    }
}

#[async_trait::async_trait]
impl TaskStore for Postgres {
    async fn insert_task(&self, t: &TaskRecord) -> StoreResult<()> {
        self.execute(
            &format!("INSERT INTO tasks ({TASK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"),
            &[
                &t.id,
                &t.tenant,
                &t.workspace_id,
                &t.backend,
                &codec::request_json(&t.request).to_string(),
                &t.state.as_str(),
                &t.created_at,
                &t.started_at,
                &t.finished_at,
                &t.exit_code.map(i64::from),
                &t.error,
                &t.summary.as_ref().map(|s| codec::summary_json(s).to_string()),
                &signed(t.last_seq),
                &signed(t.output_lines),
                &t.node,
            ],
        )
        .await?;
        Ok(())
    }
    async fn update_task(&self, t: &TaskRecord) -> StoreResult<()> {
        update_in(&self.client().await?, t).await
    }
    async fn get_task(&self, tenant: &str, id: &str) -> StoreResult<Option<TaskRecord>> {
        self.query_opt(
            &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE tenant = $1 AND id = $2"),
            &[&tenant, &id],
        )
        .await?
        .as_ref()
        .map(task)
        .transpose()
    }
    async fn list_tasks(
        &self,
        tenant: &str,
        workspace: Option<&str>,
    ) -> StoreResult<Vec<TaskRecord>> {
        let found = self
            .query(
                &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE tenant = $1 AND ($2::TEXT IS NULL OR workspace_id = $2) ORDER BY created_at, id"),
                &[&tenant, &workspace],
            )
            .await?;
        rows(found, task)
    }
    async fn append_events(
        &self,
        task_id: &str,
        events: &[EventRecord],
        quota: Option<OutputQuota>,
    ) -> StoreResult<Appended> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let appended = append_in(&tx, task_id, events, quota).await?;
        tx.commit().await?;
        Ok(appended)
    }
    async fn update_task_and_append(
        &self,
        task: &TaskRecord,
        events: &[EventRecord],
    ) -> StoreResult<Appended> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        update_in(&tx, task).await?;
        let appended = append_in(&tx, &task.id, events, None).await?;
        tx.commit().await?;
        Ok(appended)
    }
    async fn read_events(
        &self,
        task_id: &str,
        from_seq: u64,
        limit: usize,
    ) -> StoreResult<Vec<EventRecord>> {
        let found = self
            .query(
                "SELECT seq, kind, data, at FROM events WHERE task_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
                &[&task_id, &signed(from_seq), &signed(limit as u64)],
            )
            .await?;
        found
            .iter()
            .map(|row| {
                let kind: &str = row.try_get(1)?;
                let data = json_column("data", row.try_get(2)?)?;
                Ok(EventRecord {
                    seq: unsigned(row.try_get(0)?),
                    body: codec::event_body(kind, &data).map_err(|e| bad_column("data", e))?,
                    at: row.try_get(3)?,
                })
            })
            .collect()
    }
}

/// Append `events` to a task's log in `tx` (see [`TaskStore::append_events`]), in three round
/// trips whatever the batch's size. The tenant's totals row is locked first (an upsert that
/// returns it), so the quota is judged on figures no other writer changes before this commits.
/// Write a task's state, times, exit code, error and summary.
async fn update_in<C: GenericClient>(client: &C, t: &TaskRecord) -> StoreResult<()> {
    let stmt = client
        .prepare_cached(
            "UPDATE tasks SET state = $2, started_at = $3, finished_at = $4, exit_code = $5, error = $6, summary = $7 WHERE id = $1",
        )
        .await?;
    client
        .execute(
            &stmt,
            &[
                &t.id,
                &t.state.as_str(),
                &t.started_at,
                &t.finished_at,
                &t.exit_code.map(i64::from),
                &t.error,
                &t.summary
                    .as_ref()
                    .map(|s| codec::summary_json(s).to_string()),
            ],
        )
        .await?;
    Ok(())
}

async fn append_in<C: GenericClient>(
    tx: &C,
    task_id: &str,
    events: &[EventRecord],
    quota: Option<OutputQuota>,
) -> StoreResult<Appended> {
    let row = tx
        .query_opt(
            &tx.prepare_cached(
                "INSERT INTO tenant_output (tenant, events, bytes) SELECT tenant, 0, 0 FROM tasks WHERE id = $1
                 ON CONFLICT (tenant) DO UPDATE SET tenant = excluded.tenant
                 RETURNING tenant, events, bytes",
            )
            .await?,
            &[&task_id],
        )
        .await?
        .ok_or(StoreError::NotFound)?;
    let tenant: String = row.try_get(0)?;
    let mut usage = StoredOutput {
        events: unsigned(row.try_get(1)?),
        bytes: unsigned(row.try_get(2)?),
    };
    // The longest prefix the quota admits, decided here, then stored in one statement.
    let (mut seqs, mut kinds, mut data, mut ats) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut lines, mut bytes) = (0u64, 0u64);
    for e in events {
        let (kind, json) = codec::event_text(&e.body);
        let size = (kind.len() + json.len()) as u64;
        if quota.is_some_and(|q| !q.admits(usage, size)) {
            break;
        }
        usage.events += 1;
        usage.bytes += size;
        bytes += size;
        lines += u64::from(e.is_output());
        seqs.push(signed(e.seq));
        kinds.push(kind);
        data.push(json);
        ats.push(e.at);
    }
    let stored = seqs.len();
    let Some(&last) = seqs.last() else {
        return Ok(Appended {
            stored,
            tenant: usage,
        });
    };
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO events (task_id, seq, kind, data, at)
             SELECT $1, * FROM unnest($2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::BIGINT[])",
        )
        .await?,
        &[&task_id, &seqs, &kinds, &data, &ats],
    )
    .await?;
    // The task's counters and its tenant's totals follow its log here, in the same
    // transaction, and nowhere else (deletions: the `tasks_output_gone` trigger).
    tx.execute(
        &tx.prepare_cached(
            "WITH task AS (
                 UPDATE tasks SET last_seq = $2, output_lines = output_lines + $3,
                     log_events = log_events + $4, log_bytes = log_bytes + $5
                 WHERE id = $1
             )
             UPDATE tenant_output SET events = events + $4, bytes = bytes + $5 WHERE tenant = $6",
        )
        .await?,
        &[
            &task_id,
            &last,
            &signed(lines),
            &signed(stored as u64),
            &signed(bytes),
            &tenant,
        ],
    )
    .await?;
    Ok(Appended {
        stored,
        tenant: usage,
    })
}

/// Mark the pending and running tasks matching `owner` (a condition on `$1`, the node)
/// interrupted, each log ending with that state; their ids.
async fn interrupt<C: GenericClient>(
    tx: &C,
    owner: &str,
    node: &str,
    at: i64,
) -> StoreResult<Vec<String>> {
    const WHY: &str = "gantry stopped while the task was unfinished";
    let unfinished = format!("{UNFINISHED} AND {owner}");
    // Locked: a node taking over and the owner restarting never both end the same task.
    let tasks: Vec<(String, i64)> = tx
        .query(
            &format!("SELECT id, last_seq FROM tasks WHERE {unfinished} ORDER BY id FOR UPDATE"),
            &[&node],
        )
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<StoreResult<_>>()?;
    tx.execute(
        &format!("UPDATE tasks SET state = $2, finished_at = $3, error = $4 WHERE {unfinished}"),
        &[&node, &TaskState::Interrupted.as_str(), &at, &WHY],
    )
    .await?;
    for (id, last_seq) in &tasks {
        let end = EventRecord {
            seq: unsigned(*last_seq) + 1,
            body: crate::contract::EventBody::State(crate::contract::StateChange {
                state: TaskState::Interrupted,
                reason: None,
                exit_code: None,
                error: Some(WHY.into()),
            }),
            at,
        };
        append_in(tx, id, &[end], None).await?;
    }
    Ok(tasks.into_iter().map(|(id, _)| id).collect())
}

fn stored_output(row: &Row, first: usize) -> StoreResult<StoredOutput> {
    Ok(StoredOutput {
        events: unsigned(row.try_get(first)?),
        bytes: unsigned(row.try_get(first + 1)?),
    })
}

impl Postgres {
    /// Delete the task the query `pick` names, if any, in a statement of its own, so that
    /// appends wait for at most one task's deletion. Whether there was one.
    async fn delete_one(
        &self,
        pick: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> StoreResult<bool> {
        // The events go by cascade; the trigger takes the task's figures off its tenant's.
        let n = self
            .execute(
                &format!("DELETE FROM tasks WHERE id = ({pick} FOR UPDATE SKIP LOCKED)"),
                params,
            )
            .await?;
        Ok(n > 0)
    }
}

#[async_trait::async_trait]
impl RetentionStore for Postgres {
    async fn stored_output(&self, tenant: &str) -> StoreResult<StoredOutput> {
        self.query_opt(
            "SELECT events, bytes FROM tenant_output WHERE tenant = $1",
            &[&tenant],
        )
        .await?
        .map(|r| stored_output(&r, 0))
        .transpose()
        .map(Option::unwrap_or_default)
    }

    async fn stored_output_by_tenant(&self) -> StoreResult<Vec<(String, StoredOutput)>> {
        self.query(
            "SELECT tenant, events, bytes FROM tenant_output WHERE events > 0 OR bytes > 0 ORDER BY tenant",
            &[],
        )
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, stored_output(r, 1)?)))
        .collect()
    }

    async fn delete_finished_before(&self, tenant: &str, before: i64) -> StoreResult<u64> {
        let pick = format!(
            "SELECT id FROM tasks WHERE tenant = $1 AND finished_at < $2 AND NOT ({UNFINISHED}) ORDER BY finished_at, id LIMIT 1"
        );
        let mut n = 0;
        while self.delete_one(&pick, &[&tenant, &before]).await? {
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
            "SELECT id FROM tasks WHERE tenant = $1 AND finished_at < $3 AND NOT ({UNFINISHED}) AND (SELECT bytes FROM tenant_output WHERE tenant = $1) > $2 ORDER BY finished_at, id LIMIT 1"
        );
        let budget = signed(max_bytes);
        let mut n = 0;
        while self
            .delete_one(&pick, &[&tenant, &budget, &finished_before])
            .await?
        {
            n += 1;
        }
        Ok(n)
    }

    async fn reclaim_space(&self) -> StoreResult<()> {
        // PostgreSQL's autovacuum makes deleted rows' space reusable on its own, and its
        // write-ahead log is the server's to manage: nothing for one node to do here.
        Ok(())
    }
}

#[async_trait::async_trait]
impl SessionStore for Postgres {
    async fn create_session(&self, s: &SessionRecord) -> StoreResult<()> {
        self.execute(
            &format!(
                "INSERT INTO sessions ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            ),
            &[
                &s.id,
                &s.tenant,
                &s.backend,
                &s.status,
                &s.workspace_id,
                &s.created_at,
                &s.updated_at,
                &s.data.to_string(),
            ],
        )
        .await?;
        Ok(())
    }
    async fn get_session(&self, tenant: &str, id: &str) -> StoreResult<Option<SessionRecord>> {
        self.query_opt(
            &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE tenant = $1 AND id = $2"),
            &[&tenant, &id],
        )
        .await?
        .as_ref()
        .map(session)
        .transpose()
    }
    async fn update_session(&self, s: &SessionRecord) -> StoreResult<bool> {
        let n = self
            .execute(
                "UPDATE sessions SET status = $3, workspace_id = $4, updated_at = $5, data = $6 WHERE tenant = $1 AND id = $2",
                &[
                    &s.tenant,
                    &s.id,
                    &s.status,
                    &s.workspace_id,
                    &s.updated_at,
                    &s.data.to_string(),
                ],
            )
            .await?;
        Ok(n > 0)
    }
    async fn list_sessions(&self, tenant: &str, query: &SessionQuery) -> StoreResult<SessionPage> {
        // NULL filters match everything.
        let filter = "tenant = $1 AND ($2::TEXT IS NULL OR backend = $2) AND ($3::TEXT IS NULL OR status = $3)";
        let total: i64 = self
            .query_opt(
                &format!("SELECT COUNT(*) FROM sessions WHERE {filter}"),
                &[&tenant, &query.backend, &query.status],
            )
            .await?
            .map_or(Ok(0), |r| r.try_get(0))?;
        let found = self
            .query(
                &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE {filter} ORDER BY updated_at DESC, id LIMIT $4 OFFSET $5"),
                &[
                    &tenant,
                    &query.backend,
                    &query.status,
                    &i64::from(query.limit),
                    &i64::from(query.offset),
                ],
            )
            .await?;
        Ok(SessionPage {
            sessions: rows(found, session)?,
            total: unsigned(total),
        })
    }
    async fn delete_session(&self, tenant: &str, id: &str) -> StoreResult<bool> {
        let n = self
            .execute(
                "DELETE FROM sessions WHERE tenant = $1 AND id = $2",
                &[&tenant, &id],
            )
            .await?;
        Ok(n > 0)
    }
    async fn count_sessions(&self) -> StoreResult<u64> {
        // A database that answers reads but takes no writes (a standby after a failover) cannot
        // record runs: a health probe says so.
        // Within a second, as SQLite's probe: a health check answers while the store is stuck
        // (a lock held elsewhere), and says it is unavailable.
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.batch_execute("SET LOCAL statement_timeout = 1000; SET LOCAL lock_timeout = 1000")
            .await?;
        let row = tx
            .query_one(
                "SELECT pg_is_in_recovery(), (SELECT COUNT(*) FROM sessions)",
                &[],
            )
            .await?;
        tx.rollback().await?;
        if row.try_get::<_, bool>(0)? {
            return Err(StoreError::Unavailable(
                "the database is read-only (in recovery)".into(),
            ));
        }
        Ok(unsigned(row.try_get(1)?))
    }
}

#[async_trait::async_trait]
impl NodeStore for Postgres {
    async fn claim_lease(&self, node: &str, now: i64, lease_ms: i64) -> StoreResult<()> {
        self.execute(
            "INSERT INTO nodes (id, started_at, expires_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE SET expires_at = $3",
            &[&node, &now, &(now + lease_ms)],
        )
        .await?;
        Ok(())
    }

    async fn interrupt_tasks_of(&self, node: &str, at: i64) -> StoreResult<Vec<String>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let ids = interrupt(&tx, "(node = $1 OR node IS NULL)", node, at).await?;
        tx.commit().await?;
        Ok(ids)
    }

    async fn take_over_expired(&self, now: i64) -> StoreResult<Vec<String>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // SKIP LOCKED: when two live nodes look at once, each dead node is taken by one.
        let expired: Vec<String> = tx
            .query(
                "SELECT id FROM nodes WHERE expires_at < $1 ORDER BY id FOR UPDATE SKIP LOCKED",
                &[&now],
            )
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        let mut ids = Vec::new();
        for node in &expired {
            ids.extend(interrupt(&tx, "node = $1", node, now).await?);
            tx.execute("DELETE FROM nodes WHERE id = $1", &[node])
                .await?;
        }
        tx.commit().await?;
        Ok(ids)
    }

    async fn live_nodes(&self, now: i64) -> StoreResult<Vec<NodeRecord>> {
        self.query(
            "SELECT id, started_at, expires_at FROM nodes WHERE expires_at >= $1 ORDER BY started_at, id",
            &[&now],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(NodeRecord {
                id: r.try_get(0)?,
                started_at: r.try_get(1)?,
                expires_at: r.try_get(2)?,
            })
        })
        .collect()
    }

    async fn claim_run_slot(
        &self,
        tenant: &str,
        task_id: &str,
        max_all: u64,
        max_tenant: u64,
        now: i64,
    ) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // One claim at a time over all nodes: a count and the write it allows never interleave
        // with another node's.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&RUN_SLOTS_LOCK])
            .await?;
        let row = tx
            .query_one(
                &tx.prepare_cached(
                    "SELECT COUNT(*), COUNT(*) FILTER (WHERE tenant = $1) FROM tasks WHERE state = 'running'",
                )
                .await?,
                &[&tenant],
            )
            .await?;
        let (all, of_tenant): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        if all >= signed(max_all) || of_tenant >= signed(max_tenant) {
            tx.rollback().await?;
            return Ok(false);
        }
        let claimed = tx
            .execute(
                &tx.prepare_cached(
                    "UPDATE tasks SET state = 'running', started_at = $2 WHERE id = $1 AND state = 'pending'",
                )
                .await?,
                &[&task_id, &now],
            )
            .await?;
        tx.commit().await?;
        Ok(claimed > 0)
    }

    async fn claim_role(
        &self,
        role: &str,
        node: &str,
        now: i64,
        lease_ms: i64,
    ) -> StoreResult<bool> {
        // Taken or renewed in one statement; a live holder's row is left alone, and then no
        // row comes back.
        let held = self
            .query_opt(
                "INSERT INTO roles (name, node, expires_at) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET node = excluded.node, expires_at = excluded.expires_at
                 WHERE roles.node = excluded.node OR roles.expires_at < $4
                 RETURNING node",
                &[&role, &node, &now.saturating_add(lease_ms), &now],
            )
            .await?;
        Ok(held.is_some())
    }

    fn store_kind(&self) -> &'static str {
        "postgres"
    }

    fn log_notifier(&self) -> Arc<dyn super::LogNotifier> {
        self.notifier
            .get_or_init(|| notifier::PgNotifier::start(self.pool.clone(), self.config.clone()))
            .clone()
    }
}

const USER_COLUMNS: &str = "id, tenant, username, email, password_hash, permissions, disabled, created_at, last_login, token_generation";

fn user(row: &Row) -> StoreResult<UserRecord> {
    let permissions: &str = row.try_get(5)?;
    Ok(UserRecord {
        id: row.try_get(0)?,
        tenant: row.try_get(1)?,
        username: row.try_get(2)?,
        email: row.try_get(3)?,
        password_hash: row.try_get(4)?,
        permissions: permissions
            .split(',')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect(),
        disabled: row.try_get(6)?,
        created_at: row.try_get(7)?,
        last_login: row.try_get(8)?,
        token_generation: row.try_get(9)?,
    })
}

#[async_trait::async_trait]
impl UserStore for Postgres {
    async fn create_user(&self, u: &UserRecord) -> StoreResult<()> {
        self.execute(
            &format!(
                "INSERT INTO users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            ),
            &[
                &u.id,
                &u.tenant,
                &u.username,
                &u.email,
                &u.password_hash,
                &u.permissions.join(","),
                &u.disabled,
                &u.created_at,
                &u.last_login,
                &u.token_generation,
            ],
        )
        .await?;
        Ok(())
    }
    async fn get_user(&self, tenant: &str, id: &str) -> StoreResult<Option<UserRecord>> {
        self.query_opt(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE tenant = $1 AND id = $2"),
            &[&tenant, &id],
        )
        .await?
        .as_ref()
        .map(user)
        .transpose()
    }
    async fn find_user_by_name(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        self.query_opt(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE lower(username) = lower($1)"),
            &[&username],
        )
        .await?
        .as_ref()
        .map(user)
        .transpose()
    }
    async fn list_users(&self, tenant: &str) -> StoreResult<Vec<UserRecord>> {
        let found = self
            .query(
                &format!(
                    "SELECT {USER_COLUMNS} FROM users WHERE tenant = $1 ORDER BY created_at, id"
                ),
                &[&tenant],
            )
            .await?;
        rows(found, user)
    }
    async fn list_all_users(&self) -> StoreResult<Vec<UserRecord>> {
        let found = self
            .query(
                &format!("SELECT {USER_COLUMNS} FROM users ORDER BY tenant, created_at, id"),
                &[],
            )
            .await?;
        rows(found, user)
    }
    async fn update_user(&self, u: &UserRecord) -> StoreResult<bool> {
        let n = self
            .execute(
                "UPDATE users SET email = $3, password_hash = $4, permissions = $5, disabled = $6, token_generation = $7 WHERE tenant = $1 AND id = $2",
                &[
                    &u.tenant,
                    &u.id,
                    &u.email,
                    &u.password_hash,
                    &u.permissions.join(","),
                    &u.disabled,
                    &u.token_generation,
                ],
            )
            .await?;
        Ok(n > 0)
    }
    async fn record_login(&self, tenant: &str, id: &str, at: i64) -> StoreResult<()> {
        self.execute(
            "UPDATE users SET last_login = $3 WHERE tenant = $1 AND id = $2",
            &[&tenant, &id, &at],
        )
        .await?;
        Ok(())
    }
    async fn revoke_token(&self, jti: &str, expires_at: i64) -> StoreResult<()> {
        // Revoking twice is harmless: a token logged out twice stays logged out.
        self.execute(
            "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING",
            &[&jti, &expires_at],
        )
        .await?;
        Ok(())
    }
    async fn is_token_revoked(&self, jti: &str) -> StoreResult<bool> {
        Ok(self
            .query_opt("SELECT 1 FROM revoked_tokens WHERE jti = $1", &[&jti])
            .await?
            .is_some())
    }
    async fn prune_revoked_tokens(&self, now: i64) -> StoreResult<u64> {
        self.execute("DELETE FROM revoked_tokens WHERE expires_at < $1", &[&now])
            .await
    }
    async fn get_preferences(
        &self,
        tenant: &str,
        user_id: &str,
    ) -> StoreResult<Option<(String, i64)>> {
        self.query_opt(
            "SELECT preferences, updated_at FROM user_preferences WHERE tenant = $1 AND user_id = $2",
            &[&tenant, &user_id],
        )
        .await?
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .transpose()
    }
    async fn set_preferences(
        &self,
        tenant: &str,
        user_id: &str,
        json: &str,
        at: i64,
    ) -> StoreResult<()> {
        self.execute(
            "INSERT INTO user_preferences (tenant, user_id, preferences, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant, user_id) DO UPDATE SET preferences = excluded.preferences, updated_at = excluded.updated_at",
            &[&tenant, &user_id, &json, &at],
        )
        .await?;
        Ok(())
    }
}
