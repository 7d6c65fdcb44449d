//! [`BoardStore`] on PostgreSQL: projects, board tasks, their dependencies, history and queues,
//! as the SQLite store keeps them. Search goes through each table's `search` tsvector (see
//! `migrations/0002_board.sql`); the FTS5 expression `crate::projects::search` writes is
//! translated into a tsquery by [`tsquery`].
//!
//! Where SQLite judged a write on what it had just read in the same transaction (a project's
//! task count, whether a project's tasks are active), the rows judged are locked first, so that
//! several nodes on one database judge the same. A claim to run a task is an update naming the
//! version read: of two nodes claiming one task, one writes and the other is told it is stale.

use super::{Postgres, bad_column, signed, unsigned};
use crate::store::{
    BoardRefusal, BoardStore, BoardTaskOrder, BoardTaskQuery, BoardTaskRecord, BoardTaskStatus,
    DependencyRecord, HistoryAction, HistoryRecord, HistoryView, ProjectCounts, ProjectOrder,
    ProjectQuery, ProjectRecord, ProjectStatus, QueueCounts, QueueFigures, QueueName, StoreError,
    StoreResult, UserCounts,
};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

const PROJECT_COLUMNS: &str = "p.id, p.tenant, p.name, p.description, p.status, p.workspace_id, p.created_by, p.created_at, p.updated_at, p.settings, p.max_tasks, p.max_concurrent_tasks, p.storage_limit_bytes";

const TASK_COLUMNS: &str = "t.id, t.tenant, t.project_id, t.title, t.description, t.status, t.priority, t.progress, t.estimated_duration_secs, t.assigned_to, t.created_by, t.created_at, t.updated_at, t.started_at, t.completed_at, t.tags, t.metadata, t.retry_attempt, t.version, t.queue, t.queued_at, t.run_id, t.retries_left, t.timeout_secs, t.backend";

/// The queues' order as SQL: high first (and, as on SQLite, no queue last).
const QUEUE_RANK: &str = "CASE t.queue WHEN 'high' THEN 0 WHEN 'normal' THEN 1 ELSE 2 END";

const HISTORY_COLUMNS: &str = "h.id, h.tenant, h.task_id, h.project_id, h.at, h.action, h.field, h.old_value, h.new_value, h.user_id, h.user_name, h.note, t.title";

/// The weight that stands for each searchable column of a task in its `search` vector.
const TASK_FIELDS: &[(&str, char)] = &[("title", 'A'), ("description", 'B'), ("tags", 'C')];

/// The same for a project.
const PROJECT_FIELDS: &[(&str, char)] = &[("name", 'A'), ("description", 'B')];

/// `COLLATE NOCASE` as SQLite orders by it: ASCII letters folded, then byte order.
fn nocase(column: &str) -> String {
    format!(
        "(translate({column}, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz') COLLATE \"C\")"
    )
}

/// A stored name that no longer parses (a newer gantry wrote it).
fn bad_name(column: &str, what: &str, name: &str) -> StoreError {
    bad_column(column, anyhow::anyhow!("unknown {what} {name:?}"))
}

/// A `BIGINT` column read into a narrower integer; out of range is a bad row, as on SQLite.
fn int<T: TryFrom<i64>>(row: &Row, i: usize, column: &str) -> StoreResult<T> {
    let n: i64 = row.try_get(i)?;
    T::try_from(n).map_err(|_| bad_column(column, anyhow::anyhow!("{n} is out of range")))
}

fn opt_int<T: TryFrom<i64>>(row: &Row, i: usize, column: &str) -> StoreResult<Option<T>> {
    match row.try_get::<_, Option<i64>>(i)? {
        Some(n) => T::try_from(n)
            .map(Some)
            .map_err(|_| bad_column(column, anyhow::anyhow!("{n} is out of range"))),
        None => Ok(None),
    }
}

fn project(row: &Row) -> StoreResult<ProjectRecord> {
    let status: &str = row.try_get(4)?;
    Ok(ProjectRecord {
        id: row.try_get(0)?,
        tenant: row.try_get(1)?,
        name: row.try_get(2)?,
        description: row.try_get(3)?,
        status: ProjectStatus::parse(status)
            .ok_or_else(|| bad_name("status", "project status", status))?,
        workspace_id: row.try_get(5)?,
        created_by: row.try_get(6)?,
        created_at: row.try_get(7)?,
        updated_at: row.try_get(8)?,
        settings: row.try_get(9)?,
        max_tasks: opt_int(row, 10, "max_tasks")?,
        max_concurrent_tasks: opt_int(row, 11, "max_concurrent_tasks")?,
        storage_limit_bytes: row.try_get::<_, Option<i64>>(12)?.map(unsigned),
    })
}

fn task(row: &Row) -> StoreResult<BoardTaskRecord> {
    let status: &str = row.try_get(5)?;
    let tags: &str = row.try_get(15)?;
    Ok(BoardTaskRecord {
        id: row.try_get(0)?,
        tenant: row.try_get(1)?,
        project_id: row.try_get(2)?,
        title: row.try_get(3)?,
        description: row.try_get(4)?,
        status: BoardTaskStatus::parse(status)
            .ok_or_else(|| bad_name("status", "task status", status))?,
        priority: int(row, 6, "priority")?,
        progress: int(row, 7, "progress")?,
        estimated_duration_secs: row.try_get::<_, Option<i64>>(8)?.map(unsigned),
        assigned_to: row.try_get(9)?,
        created_by: row.try_get(10)?,
        created_at: row.try_get(11)?,
        updated_at: row.try_get(12)?,
        started_at: row.try_get(13)?,
        completed_at: row.try_get(14)?,
        tags: serde_json::from_str(tags).map_err(|e| bad_column("tags", e.into()))?,
        metadata: row.try_get(16)?,
        retry_attempt: int(row, 17, "retry_attempt")?,
        version: row.try_get(18)?,
        queue: match row.try_get::<_, Option<&str>>(19)? {
            Some(q) => Some(QueueName::parse(q).ok_or_else(|| bad_name("queue", "queue", q))?),
            None => None,
        },
        queued_at: row.try_get(20)?,
        run_id: row.try_get(21)?,
        retries_left: int(row, 22, "retries_left")?,
        timeout_secs: row.try_get::<_, Option<i64>>(23)?.map(unsigned),
        backend: row.try_get(24)?,
    })
}

fn history(row: &Row) -> StoreResult<HistoryView> {
    let action: &str = row.try_get(5)?;
    Ok(HistoryView {
        entry: HistoryRecord {
            id: row.try_get(0)?,
            tenant: row.try_get(1)?,
            task_id: row.try_get(2)?,
            project_id: row.try_get(3)?,
            at: row.try_get(4)?,
            action: HistoryAction::parse(action)
                .ok_or_else(|| bad_name("action", "history action", action))?,
            field: row.try_get(6)?,
            old_value: row.try_get(7)?,
            new_value: row.try_get(8)?,
            user_id: row.try_get(9)?,
            user_name: row.try_get(10)?,
            note: row.try_get(11)?,
        },
        task_title: row.try_get(12)?,
    })
}

fn rows<T>(found: Vec<Row>, decode: fn(&Row) -> StoreResult<T>) -> StoreResult<Vec<T>> {
    found.iter().map(decode).collect()
}

fn tags_json(tags: &[String]) -> String {
    serde_json::Value::from(tags.to_vec()).to_string()
}

async fn insert_history<C: GenericClient>(tx: &C, h: &HistoryRecord) -> StoreResult<()> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO board_task_history (id, tenant, task_id, project_id, at, action, field, old_value, new_value, user_id, user_name, note)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &h.id,
            &h.tenant,
            &h.task_id,
            &h.project_id,
            &h.at,
            &h.action.as_str(),
            &h.field,
            &h.old_value,
            &h.new_value,
            &h.user_id,
            &h.user_name,
            &h.note,
        ],
    )
    .await?;
    Ok(())
}

/// `ASC` or `DESC`.
fn direction(descending: bool) -> &'static str {
    if descending { "DESC" } else { "ASC" }
}

/// The arguments of a query built piece by piece, each named `$n` as it is added.
#[derive(Default)]
struct Args(Vec<Box<dyn ToSql + Sync + Send>>);

impl Args {
    fn push(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.0.push(Box::new(value));
        format!("${}", self.0.len())
    }

    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.0
            .iter()
            .map(|b| b.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// A list query: its columns, table, filter (with `$n` arguments) and order.
struct Listing<'a> {
    select: &'a str,
    from: &'a str,
    where_sql: &'a str,
    order: &'a str,
}

/// The filter for an FTS5 expression on `column`, its tsquery an argument.
fn search_filter(
    args: &mut Args,
    column: &str,
    fts: &str,
    fields: &[(&str, char)],
) -> StoreResult<String> {
    match tsquery(fts, fields).map_err(|e| {
        StoreError::Internal(anyhow::anyhow!(
            "the search {fts:?} cannot be translated: {e}"
        ))
    })? {
        // In a subquery, the tsquery is made once per statement rather than once per row.
        Some(q) => Ok(format!(
            " AND {column} @@ (SELECT board_search_query({}))",
            args.push(q)
        )),
        None => Ok(" AND FALSE".into()),
    }
}

impl Postgres {
    /// A page of a listing's rows (`args` fill its filter) and how many match, read in one
    /// snapshot as SQLite's single connection read them.
    async fn page<T>(
        &self,
        listing: Listing<'_>,
        mut args: Args,
        (offset, limit): (u32, u32),
        decode: fn(&Row) -> StoreResult<T>,
    ) -> StoreResult<(Vec<T>, u64)> {
        let Listing {
            select,
            from,
            where_sql,
            order,
        } = listing;
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let count = tx
            .prepare_cached(&format!("SELECT COUNT(*) FROM {from} WHERE {where_sql}"))
            .await?;
        let total: i64 = tx.query_one(&count, &args.refs()).await?.try_get(0)?;
        let limit = args.push(i64::from(limit));
        let offset = args.push(i64::from(offset));
        let select = tx
            .prepare_cached(&format!(
                "SELECT {select} FROM {from} WHERE {where_sql} ORDER BY {order} LIMIT {limit} OFFSET {offset}"
            ))
            .await?;
        let found = tx.query(&select, &args.refs()).await?;
        tx.commit().await?;
        Ok((rows(found, decode)?, unsigned(total)))
    }
}

#[async_trait::async_trait]
impl BoardStore for Postgres {
    async fn insert_project(&self, p: &ProjectRecord) -> StoreResult<()> {
        self.execute(
            "INSERT INTO projects (id, tenant, name, description, status, workspace_id, created_by, created_at, updated_at, settings, max_tasks, max_concurrent_tasks, storage_limit_bytes)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            &[
                &p.id,
                &p.tenant,
                &p.name,
                &p.description,
                &p.status.as_str(),
                &p.workspace_id,
                &p.created_by,
                &p.created_at,
                &p.updated_at,
                &p.settings,
                &p.max_tasks.map(i64::from),
                &p.max_concurrent_tasks.map(i64::from),
                &p.storage_limit_bytes.map(signed),
            ],
        )
        .await?;
        Ok(())
    }

    async fn get_project(&self, tenant: &str, id: &str) -> StoreResult<Option<ProjectRecord>> {
        self.query_opt(
            &format!(
                "SELECT {PROJECT_COLUMNS} FROM projects p WHERE p.tenant = $1 AND p.id = $2 AND p.deleted_at IS NULL"
            ),
            &[&tenant, &id],
        )
        .await?
        .as_ref()
        .map(project)
        .transpose()
    }

    async fn list_projects(
        &self,
        tenant: &str,
        q: &ProjectQuery,
    ) -> StoreResult<(Vec<ProjectRecord>, u64)> {
        let mut args = Args::default();
        let mut where_sql = format!(
            "p.tenant = {} AND p.deleted_at IS NULL",
            args.push(tenant.to_string())
        );
        if let Some(status) = q.status {
            where_sql += &format!(" AND p.status = {}", args.push(status.as_str()));
        }
        if let Some(by) = &q.created_by {
            where_sql += &format!(" AND p.created_by = {}", args.push(by.clone()));
        }
        if let Some(fts) = &q.fts {
            where_sql += &search_filter(&mut args, "p.search", fts, PROJECT_FIELDS)?;
        }
        let column = match q.order {
            ProjectOrder::Name => nocase("p.name"),
            ProjectOrder::CreatedAt => "p.created_at".into(),
            ProjectOrder::UpdatedAt => "p.updated_at".into(),
        };
        let dir = direction(q.descending);
        // Ids in byte order, as SQLite compares them, whatever the database's collation.
        let order = format!("{column} {dir}, p.id COLLATE \"C\" {dir}");
        let listing = Listing {
            select: PROJECT_COLUMNS,
            from: "projects p",
            where_sql: &where_sql,
            order: &order,
        };
        self.page(listing, args, (q.offset, q.limit), project).await
    }

    async fn update_project(&self, p: &ProjectRecord) -> StoreResult<bool> {
        let n = self
            .execute(
                "UPDATE projects SET name = $3, description = $4, status = $5, updated_at = $6, settings = $7, max_tasks = $8, max_concurrent_tasks = $9, storage_limit_bytes = $10
                 WHERE tenant = $1 AND id = $2 AND deleted_at IS NULL",
                &[
                    &p.tenant,
                    &p.id,
                    &p.name,
                    &p.description,
                    &p.status.as_str(),
                    &p.updated_at,
                    &p.settings,
                    &p.max_tasks.map(i64::from),
                    &p.max_concurrent_tasks.map(i64::from),
                    &p.storage_limit_bytes.map(signed),
                ],
            )
            .await?;
        Ok(n > 0)
    }

    async fn delete_project(
        &self,
        tenant: &str,
        id: &str,
        at: i64,
    ) -> StoreResult<Result<bool, BoardRefusal>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Its tasks locked (in one order, so two deletions cannot deadlock): none is queued
        // by another node between this look and the deletion.
        let statuses = tx
            .query(
                "SELECT status FROM board_tasks WHERE project_id = $1 AND tenant = $2 AND deleted_at IS NULL ORDER BY id FOR UPDATE",
                &[&id, &tenant],
            )
            .await?;
        for row in &statuses {
            let status: &str = row.try_get(0)?;
            if matches!(status, "queued" | "running") {
                return Ok(Err(BoardRefusal::InUse));
            }
        }
        let n = tx
            .execute(
                "UPDATE projects SET deleted_at = $3, updated_at = $3 WHERE tenant = $1 AND id = $2 AND deleted_at IS NULL",
                &[&tenant, &id, &at],
            )
            .await?;
        tx.execute(
            "UPDATE board_tasks SET deleted_at = $3 WHERE tenant = $1 AND project_id = $2 AND deleted_at IS NULL",
            &[&tenant, &id, &at],
        )
        .await?;
        tx.commit().await?;
        Ok(Ok(n > 0))
    }

    async fn project_counts(
        &self,
        tenant: &str,
        ids: &[String],
    ) -> StoreResult<Vec<(String, ProjectCounts)>> {
        // Two statements for all the projects rather than two for each.
        let client = self.client().await?;
        let by_status = client
            .prepare_cached(
                "SELECT project_id, status, COUNT(*) FROM board_tasks
                 WHERE tenant = $1 AND project_id = ANY($2) AND deleted_at IS NULL
                 GROUP BY project_id, status",
            )
            .await?;
        let average = client
            .prepare_cached(
                "SELECT project_id, AVG(completed_at - started_at)::FLOAT8 FROM board_tasks
                 WHERE tenant = $1 AND project_id = ANY($2) AND deleted_at IS NULL AND status = 'completed'
                   AND started_at IS NOT NULL AND completed_at IS NOT NULL
                 GROUP BY project_id",
            )
            .await?;
        let mut out: Vec<(String, ProjectCounts)> = ids
            .iter()
            .map(|id| (id.clone(), ProjectCounts::default()))
            .collect();
        for row in client.query(&by_status, &[&tenant, &ids]).await? {
            let project: &str = row.try_get(0)?;
            let status: &str = row.try_get(1)?;
            let n: u32 = int(&row, 2, "count")?;
            let Some(i) = BoardTaskStatus::ALL
                .iter()
                .position(|s| s.as_str() == status)
            else {
                continue;
            };
            for (_, counts) in out.iter_mut().filter(|(id, _)| id == project) {
                counts.by_status[i] = n;
            }
        }
        for row in client.query(&average, &[&tenant, &ids]).await? {
            let project: &str = row.try_get(0)?;
            let mean: Option<f64> = row.try_get(1)?;
            for (_, counts) in out.iter_mut().filter(|(id, _)| id == project) {
                counts.average_duration_ms = mean.map(|ms| ms.max(0.0).round() as u64);
            }
        }
        Ok(out)
    }

    async fn insert_board_task(
        &self,
        t: &BoardTaskRecord,
        depends_on: &[String],
        created: &HistoryRecord,
        max_tasks: Option<u32>,
    ) -> StoreResult<Result<(), BoardRefusal>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        if let Some(max) = max_tasks {
            // The project's row locked: two nodes adding its last task take turns, and the
            // second counts the first's.
            tx.execute(
                "SELECT 1 FROM projects WHERE id = $1 AND tenant = $2 FOR NO KEY UPDATE",
                &[&t.project_id, &t.tenant],
            )
            .await?;
            let held: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM board_tasks WHERE project_id = $1 AND tenant = $2 AND deleted_at IS NULL",
                    &[&t.project_id, &t.tenant],
                )
                .await?
                .try_get(0)?;
            if held >= i64::from(max) {
                return Ok(Err(BoardRefusal::TooManyTasks(max)));
            }
        }
        let insert = tx
            .prepare_cached(
                "INSERT INTO board_tasks (id, tenant, project_id, title, description, status, priority, progress, estimated_duration_secs, assigned_to, created_by, created_at, updated_at, started_at, completed_at, tags, metadata, retry_attempt, version, queue, queued_at, run_id, retries_left, timeout_secs, backend)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25)",
            )
            .await?;
        tx.execute(
            &insert,
            &[
                &t.id,
                &t.tenant,
                &t.project_id,
                &t.title,
                &t.description,
                &t.status.as_str(),
                &i64::from(t.priority),
                &i64::from(t.progress),
                &t.estimated_duration_secs.map(signed),
                &t.assigned_to,
                &t.created_by,
                &t.created_at,
                &t.updated_at,
                &t.started_at,
                &t.completed_at,
                &tags_json(&t.tags),
                &t.metadata,
                &i64::from(t.retry_attempt),
                &t.version,
                &t.queue.map(QueueName::as_str),
                &t.queued_at,
                &t.run_id,
                &i64::from(t.retries_left),
                &t.timeout_secs.map(signed),
                &t.backend,
            ],
        )
        .await?;
        let dependency = tx
            .prepare_cached(
                "INSERT INTO board_task_dependencies (task_id, depends_on) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .await?;
        for dep in depends_on {
            tx.execute(&dependency, &[&t.id, dep]).await?;
        }
        insert_history(&tx, created).await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    async fn get_board_task(&self, tenant: &str, id: &str) -> StoreResult<Option<BoardTaskRecord>> {
        self.query_opt(
            &format!(
                "SELECT {TASK_COLUMNS} FROM board_tasks t WHERE t.tenant = $1 AND t.id = $2 AND t.deleted_at IS NULL"
            ),
            &[&tenant, &id],
        )
        .await?
        .as_ref()
        .map(task)
        .transpose()
    }

    async fn list_board_tasks(
        &self,
        tenant: &str,
        q: &BoardTaskQuery,
    ) -> StoreResult<(Vec<BoardTaskRecord>, u64)> {
        let mut args = Args::default();
        let mut where_sql = format!(
            "t.tenant = {} AND t.deleted_at IS NULL",
            args.push(tenant.to_string())
        );
        if let Some(project) = &q.project_id {
            where_sql += &format!(" AND t.project_id = {}", args.push(project.clone()));
        }
        if !q.statuses.is_empty() {
            let list: Vec<&'static str> = q.statuses.iter().map(|s| s.as_str()).collect();
            where_sql += &format!(" AND t.status = ANY({})", args.push(list));
        }
        if let Some(who) = &q.assigned_to {
            where_sql += &format!(" AND t.assigned_to = {}", args.push(who.clone()));
        }
        if let Some(min) = q.min_priority {
            where_sql += &format!(" AND t.priority >= {}", args.push(i64::from(min)));
        }
        if !q.tags.is_empty() {
            // Every one of them among the task's: one containment test, one statement shape.
            where_sql += &format!(
                " AND t.tags::jsonb @> {}::text::jsonb",
                args.push(tags_json(&q.tags))
            );
        }
        if let Some(fts) = &q.fts {
            where_sql += &search_filter(&mut args, "t.search", fts, TASK_FIELDS)?;
        }
        if let Some(after) = q.created_after {
            where_sql += &format!(" AND t.created_at > {}", args.push(after));
        }
        if let Some(before) = q.created_before {
            where_sql += &format!(" AND t.created_at < {}", args.push(before));
        }
        let column = match q.order {
            BoardTaskOrder::CreatedAt => "t.created_at".into(),
            BoardTaskOrder::UpdatedAt => "t.updated_at".into(),
            BoardTaskOrder::Priority => "t.priority".into(),
            BoardTaskOrder::Title => nocase("t.title"),
            BoardTaskOrder::Status => "t.status COLLATE \"C\"".into(),
        };
        let dir = direction(q.descending);
        let order = format!("{column} {dir}, t.created_at {dir}, t.id COLLATE \"C\" {dir}");
        let listing = Listing {
            select: TASK_COLUMNS,
            from: "board_tasks t",
            where_sql: &where_sql,
            order: &order,
        };
        self.page(listing, args, (q.offset, q.limit), task).await
    }

    async fn update_board_task(
        &self,
        t: &BoardTaskRecord,
        history: &[HistoryRecord],
    ) -> StoreResult<Result<(), BoardRefusal>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The version test is the claim: a writer that waited on another's lock re-reads the
        // row and finds its version moved on.
        let update = tx
            .prepare_cached(
                "UPDATE board_tasks SET title = $4, description = $5, status = $6, priority = $7, progress = $8, estimated_duration_secs = $9, assigned_to = $10, updated_at = $11, started_at = $12, completed_at = $13, tags = $14, metadata = $15, retry_attempt = $16, queue = $17, queued_at = $18, run_id = $19, retries_left = $20, timeout_secs = $21, backend = $22, version = version + 1
                 WHERE tenant = $1 AND id = $2 AND version = $3 AND deleted_at IS NULL",
            )
            .await?;
        let n = tx
            .execute(
                &update,
                &[
                    &t.tenant,
                    &t.id,
                    &t.version,
                    &t.title,
                    &t.description,
                    &t.status.as_str(),
                    &i64::from(t.priority),
                    &i64::from(t.progress),
                    &t.estimated_duration_secs.map(signed),
                    &t.assigned_to,
                    &t.updated_at,
                    &t.started_at,
                    &t.completed_at,
                    &tags_json(&t.tags),
                    &t.metadata,
                    &i64::from(t.retry_attempt),
                    &t.queue.map(QueueName::as_str),
                    &t.queued_at,
                    &t.run_id,
                    &i64::from(t.retries_left),
                    &t.timeout_secs.map(signed),
                    &t.backend,
                ],
            )
            .await?;
        if n == 0 {
            return Ok(Err(BoardRefusal::Stale));
        }
        for h in history {
            insert_history(&tx, h).await?;
        }
        tx.commit().await?;
        Ok(Ok(()))
    }

    async fn delete_board_task(
        &self,
        t: &BoardTaskRecord,
        at: i64,
        entry: &HistoryRecord,
    ) -> StoreResult<Result<(), BoardRefusal>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let n = tx
            .execute(
                "UPDATE board_tasks SET deleted_at = $4, version = version + 1
                 WHERE tenant = $1 AND id = $2 AND version = $3 AND deleted_at IS NULL AND status NOT IN ('queued', 'running')",
                &[&t.tenant, &t.id, &t.version, &at],
            )
            .await?;
        if n == 0 {
            let active: Option<String> = tx
                .query_opt(
                    "SELECT status FROM board_tasks WHERE tenant = $1 AND id = $2 AND deleted_at IS NULL",
                    &[&t.tenant, &t.id],
                )
                .await?
                .map(|r| r.try_get(0))
                .transpose()?;
            let refusal = match active.as_deref() {
                Some("queued" | "running") => BoardRefusal::InUse,
                _ => BoardRefusal::Stale,
            };
            return Ok(Err(refusal));
        }
        insert_history(&tx, entry).await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    async fn board_task_dependencies(
        &self,
        tenant: &str,
        id: &str,
    ) -> StoreResult<Vec<DependencyRecord>> {
        self.query(
            "SELECT d.depends_on, t.title, t.status FROM board_task_dependencies d
             JOIN board_tasks t ON t.id = d.depends_on
             WHERE d.task_id = $2 AND t.tenant = $1 ORDER BY t.created_at, t.id COLLATE \"C\"",
            &[&tenant, &id],
        )
        .await?
        .iter()
        .map(|r| {
            let status: &str = r.try_get(2)?;
            Ok(DependencyRecord {
                depends_on: r.try_get(0)?,
                title: r.try_get(1)?,
                status: BoardTaskStatus::parse(status)
                    .ok_or_else(|| bad_name("status", "task status", status))?,
            })
        })
        .collect()
    }

    async fn board_task_history(&self, tenant: &str, id: &str) -> StoreResult<Vec<HistoryView>> {
        let found = self
            .query(
                &format!(
                    "SELECT {HISTORY_COLUMNS} FROM board_task_history h JOIN board_tasks t ON t.id = h.task_id
                     WHERE h.tenant = $1 AND h.task_id = $2 ORDER BY h.at, h.seq"
                ),
                &[&tenant, &id],
            )
            .await?;
        rows(found, history)
    }

    async fn project_activity(
        &self,
        tenant: &str,
        project_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<HistoryView>> {
        let found = self
            .query(
                &format!(
                    "SELECT {HISTORY_COLUMNS} FROM board_task_history h JOIN board_tasks t ON t.id = h.task_id
                     WHERE h.tenant = $1 AND h.project_id = $2 ORDER BY h.at DESC, h.seq DESC LIMIT $3"
                ),
                &[&tenant, &project_id, &i64::from(limit)],
            )
            .await?;
        rows(found, history)
    }

    async fn user_counts(&self, tenant: &str, user_id: &str) -> StoreResult<UserCounts> {
        // Deleted rows count, as on SQLite: what a user made stays made.
        let row = self
            .query_opt(
                "SELECT COUNT(*), COUNT(*) FILTER (WHERE status = 'completed'),
                        (SELECT COUNT(*) FROM projects WHERE tenant = $1 AND created_by = $2)
                 FROM board_tasks WHERE tenant = $1 AND created_by = $2",
                &[&tenant, &user_id],
            )
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(UserCounts {
            tasks_created: unsigned(row.try_get(0)?),
            tasks_completed: unsigned(row.try_get(1)?),
            projects_created: unsigned(row.try_get(2)?),
        })
    }

    async fn startable_board_tasks(&self, per_project: u32) -> StoreResult<Vec<BoardTaskRecord>> {
        // The first few of each project, not the first few overall: one tenant's (or one
        // project's) thousands of queued tasks, held back by its own limits, must not hide
        // everyone else's from the dispatcher.
        //
        // SKIP LOCKED passes over the tasks another node is claiming right now. A row locked
        // here is read as it is after any claim committed meanwhile, so the outer filter
        // tests it again: a task just claimed is not offered as queued with its new version,
        // which a second claim would match.
        let found = self
            .query(
                &format!(
                    "SELECT {TASK_COLUMNS} FROM board_tasks t
                     WHERE t.status = 'queued' AND t.deleted_at IS NULL AND t.id IN (
                         SELECT id FROM (
                             SELECT t.id, ROW_NUMBER() OVER (
                                 PARTITION BY t.tenant, t.project_id
                                 ORDER BY {QUEUE_RANK}, t.queued_at NULLS FIRST, t.seq) AS place
                             FROM board_tasks t
                             WHERE t.status = 'queued' AND t.deleted_at IS NULL
                               AND NOT EXISTS (SELECT 1 FROM board_queues q
                                               WHERE q.tenant = t.tenant AND q.queue = t.queue AND q.paused)
                               AND NOT EXISTS (SELECT 1 FROM board_task_dependencies d
                                               JOIN board_tasks x ON x.id = d.depends_on
                                               WHERE d.task_id = t.id AND x.deleted_at IS NULL AND x.status != 'completed')
                         ) ranked
                         WHERE place <= $1)
                     ORDER BY {QUEUE_RANK}, t.queued_at NULLS FIRST, t.seq
                     FOR UPDATE OF t SKIP LOCKED"
                ),
                &[&i64::from(per_project)],
            )
            .await?;
        rows(found, task)
    }

    async fn running_in_project(&self, tenant: &str, project_id: &str) -> StoreResult<u32> {
        let row = self
            .query_opt(
                "SELECT COUNT(*) FROM board_tasks WHERE tenant = $1 AND project_id = $2 AND status = 'running' AND deleted_at IS NULL",
                &[&tenant, &project_id],
            )
            .await?
            .ok_or(StoreError::NotFound)?;
        int(&row, 0, "count")
    }

    async fn board_tasks_with_status(
        &self,
        status: BoardTaskStatus,
    ) -> StoreResult<Vec<BoardTaskRecord>> {
        let found = self
            .query(
                &format!(
                    "SELECT {TASK_COLUMNS} FROM board_tasks t WHERE t.status = $1 AND t.deleted_at IS NULL ORDER BY t.seq"
                ),
                &[&status.as_str()],
            )
            .await?;
        rows(found, task)
    }

    async fn set_queue_paused(
        &self,
        tenant: &str,
        queue: QueueName,
        paused: bool,
    ) -> StoreResult<()> {
        self.execute(
            "INSERT INTO board_queues (tenant, queue, paused) VALUES ($1, $2, $3)
             ON CONFLICT (tenant, queue) DO UPDATE SET paused = excluded.paused",
            &[&tenant, &queue.as_str(), &paused],
        )
        .await?;
        Ok(())
    }

    async fn queued_count(&self, tenant: &str) -> StoreResult<u64> {
        let row = self
            .query_opt(
                "SELECT COUNT(*) FROM board_tasks WHERE tenant = $1 AND status = 'queued' AND deleted_at IS NULL",
                &[&tenant],
            )
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(unsigned(row.try_get(0)?))
    }

    async fn paused_queues(&self, tenant: &str) -> StoreResult<Vec<QueueName>> {
        let names: Vec<String> = self
            .query(
                "SELECT queue FROM board_queues WHERE tenant = $1 AND paused",
                &[&tenant],
            )
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        Ok(QueueName::ALL
            .iter()
            .copied()
            .filter(|q| names.iter().any(|n| n == q.as_str()))
            .collect())
    }

    async fn queue_position(&self, t: &BoardTaskRecord) -> StoreResult<u64> {
        let rank: i64 = match t.queue {
            Some(QueueName::High) => 0,
            Some(QueueName::Normal) | None => 1,
            Some(QueueName::Low) => 2,
        };
        let row = self
            .query_opt(
                &format!(
                    "SELECT COUNT(*) FROM board_tasks t
                     WHERE t.tenant = $1 AND t.status = 'queued' AND t.deleted_at IS NULL AND t.id != $2
                       AND ({QUEUE_RANK} < $3::BIGINT OR ({QUEUE_RANK} = $3::BIGINT AND t.queued_at <= $4))"
                ),
                &[&t.tenant, &t.id, &rank, &t.queued_at.unwrap_or(i64::MAX)],
            )
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(unsigned(row.try_get(0)?))
    }

    async fn queue_figures(&self, tenant: &str, since: i64) -> StoreResult<QueueFigures> {
        let client = self.client().await?;
        let per_queue = client
            .prepare_cached(
                "SELECT queue, COUNT(*) FILTER (WHERE status = 'queued'), COUNT(*) FILTER (WHERE status = 'running'),
                        COUNT(*) FILTER (WHERE status = 'completed' AND completed_at >= $2)
                 FROM board_tasks WHERE tenant = $1 AND queue IS NOT NULL AND deleted_at IS NULL
                 GROUP BY queue",
            )
            .await?;
        let counted = client.query(&per_queue, &[&tenant, &since]).await?;
        let mut figures = QueueFigures::default();
        for queue in QueueName::ALL {
            let mut counts = QueueCounts {
                name: *queue,
                waiting: 0,
                running: 0,
                completed: 0,
            };
            for row in &counted {
                if row.try_get::<_, &str>(0)? == queue.as_str() {
                    counts.waiting = unsigned(row.try_get(1)?);
                    counts.running = unsigned(row.try_get(2)?);
                    counts.completed = unsigned(row.try_get(3)?);
                }
            }
            figures.queues.push(counts);
        }
        // Runs, from the history: a task that failed and then completed counts both.
        let runs = client
            .prepare_cached(
                "SELECT COUNT(*) FILTER (WHERE new_value = '\"completed\"'),
                        COUNT(*) FILTER (WHERE new_value IN ('\"failed\"', '\"timed_out\"')),
                        COUNT(*) FILTER (WHERE new_value = '\"running\"'),
                        (SELECT AVG(completed_at - started_at)::FLOAT8 FROM board_tasks
                         WHERE tenant = $1 AND queue IS NOT NULL AND completed_at >= $2 AND started_at IS NOT NULL
                           AND status IN ('completed', 'failed', 'timed_out')),
                        (SELECT AVG(started_at - queued_at)::FLOAT8 FROM board_tasks
                         WHERE tenant = $1 AND queue IS NOT NULL AND started_at >= $2 AND queued_at IS NOT NULL)
                 FROM board_task_history
                 WHERE tenant = $1 AND action = 'status_changed' AND at >= $2",
            )
            .await?;
        let row = client.query_one(&runs, &[&tenant, &since]).await?;
        figures.completed = unsigned(row.try_get(0)?);
        figures.failed = unsigned(row.try_get(1)?);
        figures.started = unsigned(row.try_get(2)?);
        figures.average_run_ms = row.try_get(3)?;
        figures.average_wait_ms = row.try_get(4)?;
        Ok(figures)
    }
}

/// The tsquery (text, for `board_search_query`) that finds what the FTS5 expression `fts`
/// finds; `fields` are the columns a term may name, with the weight their words carry in the
/// `search` vector. `None` when it matches nothing.
///
/// `fts` is what `crate::projects::search::Query::to_fts5` writes: terms (`"text"`, `"text" *`,
/// `field : "text"`), each binary operation in parentheses. A term's text is split into words
/// where unicode61 splits it (anything not a letter or digit), its words adjacent (`<->`) as
/// in an FTS5 phrase, the last a prefix after `*`. Lowercasing and diacritics are left to the
/// database, which treats the indexed text the same way. A term with no word (`"-"`) is an
/// empty phrase, which FTS5 matches with no row; the operations around it fold accordingly.
/// Only words made of letters and digits are ever quoted, so the user's text cannot carry
/// tsquery syntax.
fn tsquery(fts: &str, fields: &[(&str, char)]) -> Result<Option<String>, String> {
    let mut parser = Fts5 { rest: fts, fields };
    let query = parser.expr()?;
    if !parser.rest.is_empty() {
        return Err(format!("unexpected {:?}", parser.rest));
    }
    Ok(query)
}

/// A reader of the FTS5 `crate::projects::search` writes.
struct Fts5<'a> {
    rest: &'a str,
    fields: &'a [(&'a str, char)],
}

impl Fts5<'_> {
    fn expr(&mut self) -> Result<Option<String>, String> {
        let Some(rest) = self.rest.strip_prefix('(') else {
            return self.term();
        };
        self.rest = rest;
        let left = self.expr()?;
        let op = [" AND ", " OR ", " NOT "]
            .into_iter()
            .find(|op| self.rest.starts_with(op))
            .ok_or_else(|| format!("expected an operator at {:?}", self.rest))?;
        self.rest = &self.rest[op.len()..];
        let right = self.expr()?;
        self.rest = self
            .rest
            .strip_prefix(')')
            .ok_or_else(|| format!("expected `)` at {:?}", self.rest))?;
        Ok(match (op, left, right) {
            (" AND ", Some(l), Some(r)) => Some(format!("({l} & {r})")),
            (" AND ", _, _) => None,
            (" OR ", Some(l), Some(r)) => Some(format!("({l} | {r})")),
            (" OR ", l, r) => l.or(r),
            // NOT: the left's rows without the right's.
            (_, Some(l), Some(r)) => Some(format!("({l} & !{r})")),
            (_, l, _) => l,
        })
    }

    fn term(&mut self) -> Result<Option<String>, String> {
        let (field, text) = if self.rest.starts_with('"') {
            let text = self.string()?;
            match self.rest.strip_prefix(" : ") {
                Some(rest) => {
                    self.rest = rest;
                    (Some(text), self.string()?)
                }
                None => (None, text),
            }
        } else {
            let end = self
                .rest
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(self.rest.len());
            let name = self.rest[..end].to_string();
            self.rest = self.rest[end..]
                .strip_prefix(" : ")
                .ok_or_else(|| format!("expected a term at {:?}", self.rest))?;
            (Some(name), self.string()?)
        };
        let prefix = match self.rest.strip_prefix(" *") {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        };
        let weight = match &field {
            None => String::new(),
            Some(field) => self
                .fields
                .iter()
                .find(|(name, _)| name == field)
                .map(|(_, weight)| weight.to_string())
                .ok_or_else(|| format!("no column {field:?}"))?,
        };
        let words: Vec<&str> = text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        let last = words.len().saturating_sub(1);
        let lexemes: Vec<String> = words
            .iter()
            .enumerate()
            .map(|(i, word)| {
                let star = if prefix && i == last { "*" } else { "" };
                if star.is_empty() && weight.is_empty() {
                    format!("'{word}'")
                } else {
                    format!("'{word}':{star}{weight}")
                }
            })
            .collect();
        Ok(match lexemes.len() {
            0 => None,
            1 => lexemes.into_iter().next(),
            _ => Some(format!("({})", lexemes.join(" <-> "))),
        })
    }

    /// An FTS5 string: in double quotes, a quote in it doubled.
    fn string(&mut self) -> Result<String, String> {
        let body = self
            .rest
            .strip_prefix('"')
            .ok_or_else(|| format!("expected a quoted string at {:?}", self.rest))?;
        let mut out = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            if c != '"' {
                out.push(c);
            } else if body[i + 1..].starts_with('"') {
                out.push('"');
                chars.next();
            } else {
                self.rest = &body[i + 1..];
                return Ok(out);
            }
        }
        Err("a quoted string is never closed".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tsquery of a task search, given as the FTS5 text `projects::search` makes of it
    /// (the store's input; written out here, since the store sits below `projects`).
    fn translate(fts: &str) -> Option<String> {
        tsquery(fts, TASK_FIELDS).expect("translates")
    }

    fn some(text: &str) -> Option<String> {
        Some(text.to_string())
    }

    #[test]
    fn terms() {
        assert_eq!(translate("\"auth\""), some("'auth'"));
        assert_eq!(translate("\"auth\" *"), some("'auth':*"));
        assert_eq!(
            translate("\"user authentication\""),
            some("('user' <-> 'authentication')")
        );
        assert_eq!(
            translate("\"auth-service\""),
            some("('auth' <-> 'service')")
        );
        assert_eq!(translate("\"auth-serv\" *"), some("('auth' <-> 'serv':*)"));
        assert_eq!(
            translate("(\"naïve\" AND \"日本\")"),
            some("('naïve' & '日本')")
        );
        assert_eq!(translate("\"AND\" *"), some("'AND':*"));
    }

    #[test]
    fn fields_are_weights() {
        assert_eq!(translate("title : \"auth\" *"), some("'auth':*A"));
        assert_eq!(translate("description : \"auth\""), some("'auth':B"));
        assert_eq!(translate("tags : \"a b\""), some("('a':C <-> 'b':C)"));
        assert_eq!(tsquery("name : \"x\"", PROJECT_FIELDS), Ok(some("'x':A")));
        // A column the table has not is an error, as FTS5's "no such column".
        assert!(tsquery("\"my col\"\"\" : \"x\"", TASK_FIELDS).is_err());
    }

    #[test]
    fn operators() {
        assert_eq!(
            translate("(\"a\" OR (\"b\" NOT \"c\"))"),
            some("('a' | ('b' & !'c'))")
        );
        assert_eq!(
            translate("((\"a\" OR \"b\") AND \"c\")"),
            some("(('a' | 'b') & 'c')")
        );
        assert_eq!(
            translate("(\"a\" NOT (\"b\" OR \"c\"))"),
            some("('a' & !('b' | 'c'))")
        );
    }

    #[test]
    fn user_text_is_never_syntax() {
        assert_eq!(translate("\"don't\""), some("('don' <-> 't')"));
        assert_eq!(translate("\"a'|'b\""), some("('a' <-> 'b')"));
        assert_eq!(translate("\"x':*A\""), some("('x' <-> 'A')"));
        assert_eq!(translate("\"http://x\""), some("('http' <-> 'x')"));
    }

    #[test]
    fn terms_without_words_match_nothing() {
        assert_eq!(translate("\"-\""), None);
        assert_eq!(translate("(\"-\" OR \"auth\")"), some("'auth'"));
        assert_eq!(translate("(\"auth\" AND \"-\")"), None);
        assert_eq!(translate("(\"auth\" NOT \"-\")"), some("'auth'"));
        assert_eq!(translate("(\"-\" NOT \"auth\")"), None);
    }

    #[test]
    fn malformed_expressions_are_errors() {
        for fts in [
            "",
            "\"a",
            "(\"a\" AND \"b\"",
            "(\"a\" XOR \"b\")",
            "\"a\" \"b\"",
            "title \"a\"",
        ] {
            assert!(tsquery(fts, TASK_FIELDS).is_err(), "{fts:?}");
        }
    }
}
