//! [`BoardStore`] on SQLite: projects, board tasks, their dependencies and history. Search
//! goes through the FTS5 indexes the schema's triggers keep; the FTS5 expression comes
//! already checked and quoted from `crate::projects::search`.

use super::Sqlite;
use crate::store::{
    BoardRefusal, BoardStore, BoardTaskOrder, BoardTaskQuery, BoardTaskRecord, BoardTaskStatus,
    DependencyRecord, HistoryAction, HistoryRecord, HistoryView, ProjectCounts, ProjectOrder,
    ProjectQuery, ProjectRecord, ProjectStatus, QueueCounts, QueueFigures, QueueName, StoreResult,
    UserCounts,
};
use rusqlite::types::Value as Sql;
use rusqlite::{OptionalExtension, params, params_from_iter};

const PROJECT_COLUMNS: &str = "p.id, p.tenant, p.name, p.description, p.status, p.workspace_id, p.created_by, p.created_at, p.updated_at, p.settings, p.max_tasks, p.max_concurrent_tasks, p.storage_limit_bytes";

const TASK_COLUMNS: &str = "t.id, t.tenant, t.project_id, t.title, t.description, t.status, t.priority, t.progress, t.estimated_duration_secs, t.assigned_to, t.created_by, t.created_at, t.updated_at, t.started_at, t.completed_at, t.tags, t.metadata, t.retry_attempt, t.version, t.queue, t.queued_at, t.run_id, t.retries_left, t.timeout_secs, t.backend";

/// The queues' order as SQL: high first.
const QUEUE_RANK: &str = "CASE t.queue WHEN 'high' THEN 0 WHEN 'normal' THEN 1 ELSE 2 END";

const HISTORY_COLUMNS: &str = "h.id, h.tenant, h.task_id, h.project_id, h.at, h.action, h.field, h.old_value, h.new_value, h.user_id, h.user_name, h.note, t.title";

/// A stored name that no longer parses (a newer gantry wrote it).
fn bad_name(column: usize, what: &str, name: &str) -> rusqlite::Error {
    super::bad_column(column, anyhow::anyhow!("unknown {what} {name:?}"))
}

fn project(row: &rusqlite::Row<'_>) -> rusqlite::Result<ProjectRecord> {
    let status: String = row.get(4)?;
    Ok(ProjectRecord {
        id: row.get(0)?,
        tenant: row.get(1)?,
        name: row.get(2)?,
        description: row.get(3)?,
        status: ProjectStatus::parse(&status)
            .ok_or_else(|| bad_name(4, "project status", &status))?,
        workspace_id: row.get(5)?,
        created_by: row.get(6)?,
        created_at: row.get(7)?,
        updated_at: row.get(8)?,
        settings: row.get(9)?,
        max_tasks: row.get(10)?,
        max_concurrent_tasks: row.get(11)?,
        storage_limit_bytes: row.get::<_, Option<i64>>(12)?.map(|n| n.max(0) as u64),
    })
}

fn task(row: &rusqlite::Row<'_>) -> rusqlite::Result<BoardTaskRecord> {
    let status: String = row.get(5)?;
    let tags: String = row.get(15)?;
    Ok(BoardTaskRecord {
        id: row.get(0)?,
        tenant: row.get(1)?,
        project_id: row.get(2)?,
        title: row.get(3)?,
        description: row.get(4)?,
        status: BoardTaskStatus::parse(&status)
            .ok_or_else(|| bad_name(5, "task status", &status))?,
        priority: row.get(6)?,
        progress: row.get(7)?,
        estimated_duration_secs: row.get::<_, Option<i64>>(8)?.map(|n| n.max(0) as u64),
        assigned_to: row.get(9)?,
        created_by: row.get(10)?,
        created_at: row.get(11)?,
        updated_at: row.get(12)?,
        started_at: row.get(13)?,
        completed_at: row.get(14)?,
        tags: serde_json::from_str(&tags).map_err(|e| super::bad_column(15, e.into()))?,
        metadata: row.get(16)?,
        retry_attempt: row.get(17)?,
        version: row.get(18)?,
        queue: match row.get::<_, Option<String>>(19)? {
            Some(q) => Some(QueueName::parse(&q).ok_or_else(|| bad_name(19, "queue", &q))?),
            None => None,
        },
        queued_at: row.get(20)?,
        run_id: row.get(21)?,
        retries_left: row.get(22)?,
        timeout_secs: row.get::<_, Option<i64>>(23)?.map(|n| n.max(0) as u64),
        backend: row.get(24)?,
    })
}

fn secs(n: Option<u64>) -> Option<i64> {
    n.map(|n| n.min(i64::MAX as u64) as i64)
}

fn history(row: &rusqlite::Row<'_>) -> rusqlite::Result<HistoryView> {
    let action: String = row.get(5)?;
    Ok(HistoryView {
        entry: HistoryRecord {
            id: row.get(0)?,
            tenant: row.get(1)?,
            task_id: row.get(2)?,
            project_id: row.get(3)?,
            at: row.get(4)?,
            action: HistoryAction::parse(&action)
                .ok_or_else(|| bad_name(5, "history action", &action))?,
            field: row.get(6)?,
            old_value: row.get(7)?,
            new_value: row.get(8)?,
            user_id: row.get(9)?,
            user_name: row.get(10)?,
            note: row.get(11)?,
        },
        task_title: row.get(12)?,
    })
}

fn tags_json(tags: &[String]) -> String {
    serde_json::Value::from(tags.to_vec()).to_string()
}

fn insert_history(tx: &rusqlite::Transaction<'_>, h: &HistoryRecord) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO board_task_history (id, tenant, task_id, project_id, at, action, field, old_value, new_value, user_id, user_name, note)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        h.id,
        h.tenant,
        h.task_id,
        h.project_id,
        h.at,
        h.action.as_str(),
        h.field,
        h.old_value,
        h.new_value,
        h.user_id,
        h.user_name,
        h.note
    ])?;
    Ok(())
}

/// `ASC` or `DESC`.
fn direction(descending: bool) -> &'static str {
    if descending { "DESC" } else { "ASC" }
}

/// A list query: its columns, table, filter (with `?N` arguments) and order.
struct Listing<'a> {
    select: &'a str,
    from: &'a str,
    where_sql: &'a str,
    order: &'a str,
}

/// A page of a listing's rows (`args` fill its filter) and how many match.
fn page<T>(
    conn: &rusqlite::Connection,
    listing: Listing<'_>,
    args: Vec<Sql>,
    (offset, limit): (u32, u32),
    f: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<(Vec<T>, u64)> {
    let Listing {
        select,
        from,
        where_sql,
        order,
    } = listing;
    let total: i64 = conn.query_row(
        &format!("SELECT COUNT(*) FROM {from} WHERE {where_sql}"),
        params_from_iter(args.iter()),
        |r| r.get(0),
    )?;
    let mut all = args;
    all.push(Sql::Integer(i64::from(limit)));
    all.push(Sql::Integer(i64::from(offset)));
    let n = all.len();
    let mut stmt = conn.prepare(&format!(
        "SELECT {select} FROM {from} WHERE {where_sql} ORDER BY {order} LIMIT ?{} OFFSET ?{n}",
        n - 1
    ))?;
    let rows = stmt.query_map(params_from_iter(all.iter()), f)?;
    Ok((rows.collect::<rusqlite::Result<_>>()?, total.max(0) as u64))
}

#[async_trait::async_trait]
impl BoardStore for Sqlite {
    async fn insert_project(&self, p: &ProjectRecord) -> StoreResult<()> {
        self.execute(
            "INSERT INTO projects (id, tenant, name, description, status, workspace_id, created_by, created_at, updated_at, settings, max_tasks, max_concurrent_tasks, storage_limit_bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                p.id,
                p.tenant,
                p.name,
                p.description,
                p.status.as_str(),
                p.workspace_id,
                p.created_by,
                p.created_at,
                p.updated_at,
                p.settings,
                p.max_tasks,
                p.max_concurrent_tasks,
                p.storage_limit_bytes.map(|n| n.min(i64::MAX as u64) as i64)
            ],
        )?;
        Ok(())
    }

    async fn get_project(&self, tenant: &str, id: &str) -> StoreResult<Option<ProjectRecord>> {
        Ok(self
            .query_row(
                &format!(
                    "SELECT {PROJECT_COLUMNS} FROM projects p WHERE p.tenant = ?1 AND p.id = ?2 AND p.deleted_at IS NULL"
                ),
                params![tenant, id],
                project,
            )
            .optional()?)
    }

    async fn list_projects(
        &self,
        tenant: &str,
        q: &ProjectQuery,
    ) -> StoreResult<(Vec<ProjectRecord>, u64)> {
        let mut where_sql = String::from("p.tenant = ?1 AND p.deleted_at IS NULL");
        let mut args = vec![Sql::Text(tenant.to_string())];
        if let Some(status) = q.status {
            args.push(Sql::Text(status.as_str().to_string()));
            where_sql += &format!(" AND p.status = ?{}", args.len());
        }
        if let Some(by) = &q.created_by {
            args.push(Sql::Text(by.clone()));
            where_sql += &format!(" AND p.created_by = ?{}", args.len());
        }
        if let Some(fts) = &q.fts {
            args.push(Sql::Text(fts.clone()));
            where_sql += &format!(
                " AND p.rowid IN (SELECT rowid FROM projects_fts WHERE projects_fts MATCH ?{})",
                args.len()
            );
        }
        let column = match q.order {
            ProjectOrder::Name => "p.name COLLATE NOCASE",
            ProjectOrder::CreatedAt => "p.created_at",
            ProjectOrder::UpdatedAt => "p.updated_at",
        };
        let dir = direction(q.descending);
        let order = format!("{column} {dir}, p.id {dir}");
        let conn = self.conn();
        let listing = Listing {
            select: PROJECT_COLUMNS,
            from: "projects p",
            where_sql: &where_sql,
            order: &order,
        };
        Ok(page(&conn, listing, args, (q.offset, q.limit), project)?)
    }

    async fn update_project(&self, p: &ProjectRecord) -> StoreResult<bool> {
        let n = self.execute(
            "UPDATE projects SET name = ?3, description = ?4, status = ?5, updated_at = ?6, settings = ?7, max_tasks = ?8, max_concurrent_tasks = ?9, storage_limit_bytes = ?10
             WHERE tenant = ?1 AND id = ?2 AND deleted_at IS NULL",
            params![
                p.tenant,
                p.id,
                p.name,
                p.description,
                p.status.as_str(),
                p.updated_at,
                p.settings,
                p.max_tasks,
                p.max_concurrent_tasks,
                p.storage_limit_bytes.map(|n| n.min(i64::MAX as u64) as i64)
            ],
        )?;
        Ok(n > 0)
    }

    async fn delete_project(
        &self,
        tenant: &str,
        id: &str,
        at: i64,
    ) -> StoreResult<Result<bool, BoardRefusal>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let active: i64 = tx.query_row(
            "SELECT COUNT(*) FROM board_tasks WHERE project_id = ?1 AND tenant = ?2 AND deleted_at IS NULL AND status IN ('queued', 'running')",
            params![id, tenant],
            |r| r.get(0),
        )?;
        if active > 0 {
            return Ok(Err(BoardRefusal::InUse));
        }
        let n = tx.execute(
            "UPDATE projects SET deleted_at = ?3, updated_at = ?3 WHERE tenant = ?1 AND id = ?2 AND deleted_at IS NULL",
            params![tenant, id, at],
        )?;
        tx.execute(
            "UPDATE board_tasks SET deleted_at = ?3 WHERE tenant = ?1 AND project_id = ?2 AND deleted_at IS NULL",
            params![tenant, id, at],
        )?;
        tx.commit()?;
        Ok(Ok(n > 0))
    }

    async fn project_counts(
        &self,
        tenant: &str,
        ids: &[String],
    ) -> StoreResult<Vec<(String, ProjectCounts)>> {
        let conn = self.conn();
        let mut by_status = conn.prepare_cached(
            "SELECT status, COUNT(*) FROM board_tasks WHERE tenant = ?1 AND project_id = ?2 AND deleted_at IS NULL GROUP BY status",
        )?;
        let mut average = conn.prepare_cached(
            "SELECT AVG(completed_at - started_at) FROM board_tasks
             WHERE tenant = ?1 AND project_id = ?2 AND deleted_at IS NULL AND status = 'completed'
               AND started_at IS NOT NULL AND completed_at IS NOT NULL",
        )?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let mut counts = ProjectCounts::default();
            let rows = by_status.query_map(params![tenant, id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?))
            })?;
            for row in rows {
                let (status, n) = row?;
                if let Some(i) = BoardTaskStatus::ALL
                    .iter()
                    .position(|s| s.as_str() == status)
                {
                    counts.by_status[i] = n;
                }
            }
            let mean: Option<f64> = average.query_row(params![tenant, id], |r| r.get(0))?;
            counts.average_duration_ms = mean.map(|ms| ms.max(0.0).round() as u64);
            out.push((id.clone(), counts));
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
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if let Some(max) = max_tasks {
            let held: u32 = tx.query_row(
                "SELECT COUNT(*) FROM board_tasks WHERE project_id = ?1 AND tenant = ?2 AND deleted_at IS NULL",
                params![t.project_id, t.tenant],
                |r| r.get(0),
            )?;
            if held >= max {
                return Ok(Err(BoardRefusal::TooManyTasks(max)));
            }
        }
        tx.prepare_cached(
            "INSERT INTO board_tasks (id, tenant, project_id, title, description, status, priority, progress, estimated_duration_secs, assigned_to, created_by, created_at, updated_at, started_at, completed_at, tags, metadata, retry_attempt, version, queue, queued_at, run_id, retries_left, timeout_secs, backend)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25)",
        )?
        .execute(params![
            t.id,
            t.tenant,
            t.project_id,
            t.title,
            t.description,
            t.status.as_str(),
            t.priority,
            t.progress,
            t.estimated_duration_secs.map(|n| n.min(i64::MAX as u64) as i64),
            t.assigned_to,
            t.created_by,
            t.created_at,
            t.updated_at,
            t.started_at,
            t.completed_at,
            tags_json(&t.tags),
            t.metadata,
            t.retry_attempt,
            t.version,
            t.queue.map(QueueName::as_str),
            t.queued_at,
            t.run_id,
            t.retries_left,
            secs(t.timeout_secs),
            t.backend
        ])?;
        for dep in depends_on {
            tx.prepare_cached(
                "INSERT INTO board_task_dependencies (task_id, depends_on) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            )?
            .execute(params![t.id, dep])?;
        }
        insert_history(&tx, created)?;
        tx.commit()?;
        Ok(Ok(()))
    }

    async fn get_board_task(&self, tenant: &str, id: &str) -> StoreResult<Option<BoardTaskRecord>> {
        Ok(self
            .query_row(
                &format!(
                    "SELECT {TASK_COLUMNS} FROM board_tasks t WHERE t.tenant = ?1 AND t.id = ?2 AND t.deleted_at IS NULL"
                ),
                params![tenant, id],
                task,
            )
            .optional()?)
    }

    async fn list_board_tasks(
        &self,
        tenant: &str,
        q: &BoardTaskQuery,
    ) -> StoreResult<(Vec<BoardTaskRecord>, u64)> {
        let mut where_sql = String::from("t.tenant = ?1 AND t.deleted_at IS NULL");
        let mut args = vec![Sql::Text(tenant.to_string())];
        let arg = |args: &mut Vec<Sql>, value: Sql| {
            args.push(value);
            format!("?{}", args.len())
        };
        if let Some(project) = &q.project_id {
            let p = arg(&mut args, Sql::Text(project.clone()));
            where_sql += &format!(" AND t.project_id = {p}");
        }
        if !q.statuses.is_empty() {
            let list: Vec<String> = q
                .statuses
                .iter()
                .map(|s| arg(&mut args, Sql::Text(s.as_str().to_string())))
                .collect();
            where_sql += &format!(" AND t.status IN ({})", list.join(", "));
        }
        if let Some(who) = &q.assigned_to {
            let p = arg(&mut args, Sql::Text(who.clone()));
            where_sql += &format!(" AND t.assigned_to = {p}");
        }
        if let Some(min) = q.min_priority {
            let p = arg(&mut args, Sql::Integer(i64::from(min)));
            where_sql += &format!(" AND t.priority >= {p}");
        }
        for tag in &q.tags {
            let p = arg(&mut args, Sql::Text(tag.clone()));
            where_sql +=
                &format!(" AND EXISTS (SELECT 1 FROM json_each(t.tags) WHERE value = {p})");
        }
        if let Some(fts) = &q.fts {
            let p = arg(&mut args, Sql::Text(fts.clone()));
            where_sql += &format!(
                " AND t.rowid IN (SELECT rowid FROM board_tasks_fts WHERE board_tasks_fts MATCH {p})"
            );
        }
        if let Some(after) = q.created_after {
            let p = arg(&mut args, Sql::Integer(after));
            where_sql += &format!(" AND t.created_at > {p}");
        }
        if let Some(before) = q.created_before {
            let p = arg(&mut args, Sql::Integer(before));
            where_sql += &format!(" AND t.created_at < {p}");
        }
        let column = match q.order {
            BoardTaskOrder::CreatedAt => "t.created_at",
            BoardTaskOrder::UpdatedAt => "t.updated_at",
            BoardTaskOrder::Priority => "t.priority",
            BoardTaskOrder::Title => "t.title COLLATE NOCASE",
            BoardTaskOrder::Status => "t.status",
        };
        let dir = direction(q.descending);
        let order = format!("{column} {dir}, t.created_at {dir}, t.id {dir}");
        let conn = self.conn();
        let listing = Listing {
            select: TASK_COLUMNS,
            from: "board_tasks t",
            where_sql: &where_sql,
            order: &order,
        };
        Ok(page(&conn, listing, args, (q.offset, q.limit), task)?)
    }

    async fn update_board_task(
        &self,
        t: &BoardTaskRecord,
        history: &[HistoryRecord],
    ) -> StoreResult<Result<(), BoardRefusal>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n = tx
            .prepare_cached(
                "UPDATE board_tasks SET title = ?4, description = ?5, status = ?6, priority = ?7, progress = ?8, estimated_duration_secs = ?9, assigned_to = ?10, updated_at = ?11, started_at = ?12, completed_at = ?13, tags = ?14, metadata = ?15, retry_attempt = ?16, queue = ?17, queued_at = ?18, run_id = ?19, retries_left = ?20, timeout_secs = ?21, backend = ?22, version = version + 1
                 WHERE tenant = ?1 AND id = ?2 AND version = ?3 AND deleted_at IS NULL",
            )?
            .execute(params![
                t.tenant,
                t.id,
                t.version,
                t.title,
                t.description,
                t.status.as_str(),
                t.priority,
                t.progress,
                t.estimated_duration_secs.map(|n| n.min(i64::MAX as u64) as i64),
                t.assigned_to,
                t.updated_at,
                t.started_at,
                t.completed_at,
                tags_json(&t.tags),
                t.metadata,
                t.retry_attempt,
                t.queue.map(QueueName::as_str),
                t.queued_at,
                t.run_id,
                t.retries_left,
                secs(t.timeout_secs),
                t.backend
            ])?;
        if n == 0 {
            return Ok(Err(BoardRefusal::Stale));
        }
        for h in history {
            insert_history(&tx, h)?;
        }
        tx.commit()?;
        Ok(Ok(()))
    }

    async fn delete_board_task(
        &self,
        t: &BoardTaskRecord,
        at: i64,
        entry: &HistoryRecord,
    ) -> StoreResult<Result<(), BoardRefusal>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n = tx.execute(
            "UPDATE board_tasks SET deleted_at = ?4, version = version + 1
             WHERE tenant = ?1 AND id = ?2 AND version = ?3 AND deleted_at IS NULL AND status NOT IN ('queued', 'running')",
            params![t.tenant, t.id, t.version, at],
        )?;
        if n == 0 {
            let active: Option<String> = tx
                .query_row(
                    "SELECT status FROM board_tasks WHERE tenant = ?1 AND id = ?2 AND deleted_at IS NULL",
                    params![t.tenant, t.id],
                    |r| r.get(0),
                )
                .optional()?;
            let refusal = match active.as_deref() {
                Some("queued" | "running") => BoardRefusal::InUse,
                _ => BoardRefusal::Stale,
            };
            return Ok(Err(refusal));
        }
        insert_history(&tx, entry)?;
        tx.commit()?;
        Ok(Ok(()))
    }

    async fn board_task_dependencies(
        &self,
        tenant: &str,
        id: &str,
    ) -> StoreResult<Vec<DependencyRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT d.depends_on, t.title, t.status FROM board_task_dependencies d
             JOIN board_tasks t ON t.id = d.depends_on
             WHERE d.task_id = ?2 AND t.tenant = ?1 ORDER BY t.created_at, t.id",
        )?;
        let rows = stmt.query_map(params![tenant, id], |r| {
            let status: String = r.get(2)?;
            Ok(DependencyRecord {
                depends_on: r.get(0)?,
                title: r.get(1)?,
                status: BoardTaskStatus::parse(&status)
                    .ok_or_else(|| bad_name(2, "task status", &status))?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    async fn board_task_history(&self, tenant: &str, id: &str) -> StoreResult<Vec<HistoryView>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {HISTORY_COLUMNS} FROM board_task_history h JOIN board_tasks t ON t.id = h.task_id
             WHERE h.tenant = ?1 AND h.task_id = ?2 ORDER BY h.at, h.rowid"
        ))?;
        let rows = stmt.query_map(params![tenant, id], history)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    async fn project_activity(
        &self,
        tenant: &str,
        project_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<HistoryView>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {HISTORY_COLUMNS} FROM board_task_history h JOIN board_tasks t ON t.id = h.task_id
             WHERE h.tenant = ?1 AND h.project_id = ?2 ORDER BY h.at DESC, h.rowid DESC LIMIT ?3"
        ))?;
        let rows = stmt.query_map(params![tenant, project_id, limit], history)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    async fn user_counts(&self, tenant: &str, user_id: &str) -> StoreResult<UserCounts> {
        let conn = self.conn();
        let (created, completed): (i64, i64) = conn.prepare_cached(
            "SELECT COUNT(*), COALESCE(SUM(status = 'completed'), 0) FROM board_tasks WHERE tenant = ?1 AND created_by = ?2",
        )?
        .query_row(params![tenant, user_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let projects: i64 = conn
            .prepare_cached("SELECT COUNT(*) FROM projects WHERE tenant = ?1 AND created_by = ?2")?
            .query_row(params![tenant, user_id], |r| r.get(0))?;
        Ok(UserCounts {
            tasks_created: created.max(0) as u64,
            tasks_completed: completed.max(0) as u64,
            projects_created: projects.max(0) as u64,
        })
    }

    async fn startable_board_tasks(&self, per_project: u32) -> StoreResult<Vec<BoardTaskRecord>> {
        // The first few of each project, not the first few overall: one tenant's (or one
        // project's) thousands of queued tasks, held back by its own limits, must not hide
        // everyone else's from the dispatcher.
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {TASK_COLUMNS} FROM (
                 SELECT t.*, t.rowid AS rid, ROW_NUMBER() OVER (
                     PARTITION BY t.tenant, t.project_id
                     ORDER BY {QUEUE_RANK}, t.queued_at, t.rowid) AS place
                 FROM board_tasks t
                 WHERE t.status = 'queued' AND t.deleted_at IS NULL
                   AND NOT EXISTS (SELECT 1 FROM board_queues q
                                   WHERE q.tenant = t.tenant AND q.queue = t.queue AND q.paused)
                   AND NOT EXISTS (SELECT 1 FROM board_task_dependencies d
                                   JOIN board_tasks x ON x.id = d.depends_on
                                   WHERE d.task_id = t.id AND x.deleted_at IS NULL AND x.status != 'completed')
             ) t
             WHERE t.place <= ?1
             ORDER BY {QUEUE_RANK}, t.queued_at, t.rid"
        ))?;
        let rows = stmt.query_map([per_project], task)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    async fn running_in_project(&self, tenant: &str, project_id: &str) -> StoreResult<u32> {
        Ok(self.query_row(
            "SELECT COUNT(*) FROM board_tasks WHERE tenant = ?1 AND project_id = ?2 AND status = 'running' AND deleted_at IS NULL",
            params![tenant, project_id],
            |r| r.get(0),
        )?)
    }

    async fn board_tasks_with_status(
        &self,
        status: BoardTaskStatus,
    ) -> StoreResult<Vec<BoardTaskRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {TASK_COLUMNS} FROM board_tasks t WHERE t.status = ?1 AND t.deleted_at IS NULL ORDER BY t.rowid"
        ))?;
        let rows = stmt.query_map([status.as_str()], task)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    async fn set_queue_paused(
        &self,
        tenant: &str,
        queue: QueueName,
        paused: bool,
    ) -> StoreResult<()> {
        self.execute(
            "INSERT INTO board_queues (tenant, queue, paused) VALUES (?1, ?2, ?3)
             ON CONFLICT (tenant, queue) DO UPDATE SET paused = excluded.paused",
            params![tenant, queue.as_str(), paused],
        )?;
        Ok(())
    }

    async fn queued_count(&self, tenant: &str) -> StoreResult<u64> {
        let n: i64 = self.query_row(
            "SELECT COUNT(*) FROM board_tasks WHERE tenant = ?1 AND status = 'queued' AND deleted_at IS NULL",
            [tenant],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }

    async fn paused_queues(&self, tenant: &str) -> StoreResult<Vec<QueueName>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT queue FROM board_queues WHERE tenant = ?1 AND paused")?;
        let rows = stmt.query_map([tenant], |r| r.get::<_, String>(0))?;
        let names = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(QueueName::ALL
            .iter()
            .copied()
            .filter(|q| names.iter().any(|n| n == q.as_str()))
            .collect())
    }

    async fn queue_position(&self, t: &BoardTaskRecord) -> StoreResult<u64> {
        let rank = match t.queue {
            Some(QueueName::High) => 0,
            Some(QueueName::Normal) | None => 1,
            Some(QueueName::Low) => 2,
        };
        let ahead: i64 = self.query_row(
            &format!(
                "SELECT COUNT(*) FROM board_tasks t
                 WHERE t.tenant = ?1 AND t.status = 'queued' AND t.deleted_at IS NULL AND t.id != ?2
                   AND ({QUEUE_RANK} < ?3 OR ({QUEUE_RANK} = ?3 AND t.queued_at <= ?4))"
            ),
            params![t.tenant, t.id, rank, t.queued_at.unwrap_or(i64::MAX)],
            |r| r.get(0),
        )?;
        Ok(ahead.max(0) as u64)
    }

    async fn queue_figures(&self, tenant: &str, since: i64) -> StoreResult<QueueFigures> {
        let conn = self.conn();
        let mut figures = QueueFigures::default();
        let mut per_queue = conn.prepare_cached(
            "SELECT COALESCE(SUM(status = 'queued'), 0), COALESCE(SUM(status = 'running'), 0),
                    COALESCE(SUM(status = 'completed' AND completed_at >= ?3), 0)
             FROM board_tasks WHERE tenant = ?1 AND queue = ?2 AND deleted_at IS NULL",
        )?;
        for queue in QueueName::ALL {
            let (waiting, running, completed): (i64, i64, i64) = per_queue
                .query_row(params![tenant, queue.as_str(), since], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
            figures.queues.push(QueueCounts {
                name: *queue,
                waiting: waiting.max(0) as u64,
                running: running.max(0) as u64,
                completed: completed.max(0) as u64,
            });
        }
        // Runs, from the history: a task that failed and then completed counts both.
        let (completed, failed, started): (i64, i64, i64) = conn
            .prepare_cached(
                "SELECT COALESCE(SUM(new_value = '\"completed\"'), 0),
                        COALESCE(SUM(new_value IN ('\"failed\"', '\"timed_out\"')), 0),
                        COALESCE(SUM(new_value = '\"running\"'), 0)
                 FROM board_task_history
                 WHERE tenant = ?1 AND action = 'status_changed' AND at >= ?2",
            )?
            .query_row(params![tenant, since], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
        let average_run: Option<f64> = conn
            .prepare_cached(
                "SELECT AVG(completed_at - started_at) FROM board_tasks
                 WHERE tenant = ?1 AND queue IS NOT NULL AND completed_at >= ?2 AND started_at IS NOT NULL
                   AND status IN ('completed', 'failed', 'timed_out')",
            )?
            .query_row(params![tenant, since], |r| r.get(0))?;
        let average_wait: Option<f64> = conn
            .prepare_cached(
                "SELECT AVG(started_at - queued_at) FROM board_tasks
                 WHERE tenant = ?1 AND queue IS NOT NULL AND started_at >= ?2 AND queued_at IS NOT NULL",
            )?
            .query_row(params![tenant, since], |r| r.get(0))?;
        figures.completed = completed.max(0) as u64;
        figures.failed = failed.max(0) as u64;
        figures.average_run_ms = average_run;
        figures.started = started.max(0) as u64;
        figures.average_wait_ms = average_wait;
        Ok(figures)
    }
}
