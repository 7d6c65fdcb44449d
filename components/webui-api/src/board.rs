//! `/api/projects` and `/api/tasks`: the board, in the document's shapes, over
//! `gantry:plugin/projects` (which keeps the rows, checks permissions and writes the history).

use crate::input::{
    clearable_duration, clearable_string, field, format_duration, format_size, only, opt_bool,
    opt_int, opt_object, opt_string, opt_strings, parse_duration, parse_instant, parse_size,
    query_choice, query_int, query_list, query_text,
};
use crate::{Answer, ApiError, object, string, timestamp_ms};
use gantry_guest::http::Request;
use gantry_guest::projects::{
    self, BulkFailure, BulkOperation, FieldValue, HistoryAction, HistoryEntry, NewProject, NewTask,
    Project, ProjectChange, ProjectError, ProjectQuery, ProjectSort, ProjectStatus, ProjectTask,
    ResourceLimits, TaskChange, TaskQuery, TaskSort, TaskStatus,
};
use gantry_guest::users::FieldIssue;
use serde_json::{Map, Value, json};

/// The document's page sizes: 50 by default, at most 100.
const DEFAULT_PAGE_SIZE: i64 = 50;
const MAX_PAGE_SIZE: i64 = 100;
/// Entries of recent activity a project shows.
const RECENT_ACTIVITY: u32 = 10;

pub fn error(e: ProjectError) -> ApiError {
    match e {
        ProjectError::ProjectNotFound => {
            ApiError::new(404, "PROJECT_NOT_FOUND", "Project not found.")
        }
        ProjectError::TaskNotFound => ApiError::new(404, "TASK_NOT_FOUND", "Task not found."),
        ProjectError::Forbidden(m) => ApiError::new(403, "AUTH_INSUFFICIENT_PERMISSIONS", m),
        ProjectError::Invalid(FieldIssue { field, issue }) => ApiError::invalid(&field, issue),
        ProjectError::BadSearch(m) => ApiError::invalid("search", m),
        ProjectError::InUse(m) => ApiError::new(409, "RESOURCE_IN_USE", m),
        ProjectError::LimitExceeded(m) => ApiError::new(409, "PROJECT_LIMIT_EXCEEDED", m),
        ProjectError::AlreadyRunning => ApiError::new(
            409,
            "TASK_ALREADY_RUNNING",
            "The task is queued or running.",
        ),
        ProjectError::QueueFull(max) => ApiError {
            details: json!({ "max_queued": max }),
            retry_after: Some(30),
            ..ApiError::new(
                503,
                "QUEUE_FULL",
                format!("The queues hold their maximum of {max} tasks; retry once some have run."),
            )
        },
        ProjectError::Internal(m) => ApiError::new(500, "DATABASE_ERROR", m),
    }
}

fn project_status_name(s: ProjectStatus) -> &'static str {
    match s {
        ProjectStatus::Active => "active",
        ProjectStatus::Archived => "archived",
        ProjectStatus::Completed => "completed",
    }
}

const PROJECT_STATUSES: [ProjectStatus; 3] = [
    ProjectStatus::Active,
    ProjectStatus::Archived,
    ProjectStatus::Completed,
];

fn project_status(field: &str, name: &str) -> Result<ProjectStatus, ApiError> {
    PROJECT_STATUSES
        .into_iter()
        .find(|s| project_status_name(*s) == name)
        .ok_or_else(|| ApiError::invalid(field, "must be one of active, archived, completed"))
}

pub fn task_status_name(s: TaskStatus) -> &'static str {
    match s {
        TaskStatus::Pending => "pending",
        TaskStatus::Queued => "queued",
        TaskStatus::Running => "running",
        TaskStatus::Completed => "completed",
        TaskStatus::Failed => "failed",
        TaskStatus::Cancelled => "cancelled",
        TaskStatus::TimedOut => "timed_out",
        TaskStatus::Interrupted => "interrupted",
    }
}

const TASK_STATUSES: [TaskStatus; 8] = [
    TaskStatus::Pending,
    TaskStatus::Queued,
    TaskStatus::Running,
    TaskStatus::Completed,
    TaskStatus::Failed,
    TaskStatus::Cancelled,
    TaskStatus::TimedOut,
    TaskStatus::Interrupted,
];

fn task_status(field: &str, name: &str) -> Result<TaskStatus, ApiError> {
    TASK_STATUSES
        .into_iter()
        .find(|s| task_status_name(*s) == name)
        .ok_or_else(|| {
            ApiError::invalid(
                field,
                "must be one of pending, queued, running, completed, failed, cancelled, timed_out, interrupted",
            )
        })
}

fn action_name(a: HistoryAction) -> &'static str {
    match a {
        HistoryAction::Created => "created",
        HistoryAction::Updated => "updated",
        HistoryAction::StatusChanged => "status_changed",
        HistoryAction::Assigned => "assigned",
        HistoryAction::PriorityChanged => "priority_changed",
        HistoryAction::TagsChanged => "tags_changed",
        HistoryAction::ProgressChanged => "progress_changed",
        HistoryAction::Deleted => "deleted",
        HistoryAction::Executed => "executed",
        HistoryAction::Cancelled => "cancelled",
        HistoryAction::Retried => "retried",
    }
}

fn value_json(v: &FieldValue) -> Value {
    match v {
        FieldValue::None => Value::Null,
        FieldValue::Text(s) => Value::String(s.clone()),
        FieldValue::Number(n) => json!(n),
        FieldValue::Tags(t) => json!(t),
    }
}

fn duration_ms(ms: u64) -> String {
    format_duration(ms.div_ceil(1000))
}

fn limits_json(l: &ResourceLimits) -> Value {
    json!({
        "max_tasks": l.max_tasks,
        "max_concurrent_tasks": l.max_concurrent_tasks,
        "storage_limit": l.storage_limit_bytes.map(format_size),
    })
}

fn project_json(p: &Project) -> Value {
    let s = &p.statistics;
    let finished = s.completed_tasks + s.failed_tasks + s.cancelled_tasks;
    let completion_rate = if s.total_tasks == 0 {
        0.0
    } else {
        f64::from(s.completed_tasks) / f64::from(s.total_tasks)
    };
    json!({
        "id": p.id,
        "name": p.name,
        "description": p.description,
        "status": project_status_name(p.status),
        "workspace_id": p.workspace_id,
        "created_by": p.created_by,
        "created_at": timestamp_ms(p.created_at),
        "updated_at": timestamp_ms(p.updated_at),
        "settings": serde_json::from_str::<Value>(&p.settings_json).unwrap_or_else(|_| json!({})),
        "resource_limits": limits_json(&p.limits),
        "statistics": {
            "total_tasks": s.total_tasks,
            "completed_tasks": s.completed_tasks,
            "pending_tasks": s.pending_tasks,
            "queued_tasks": s.queued_tasks,
            "running_tasks": s.running_tasks,
            "failed_tasks": s.failed_tasks,
            "cancelled_tasks": s.cancelled_tasks,
            "finished_tasks": finished,
            "completion_rate": completion_rate,
            "average_task_duration": s.average_duration_ms.map(duration_ms),
        },
    })
}

pub fn task_json(t: &ProjectTask) -> Value {
    json!({
        "id": t.id,
        "title": t.title,
        "description": t.description,
        "project_id": t.project_id,
        "status": task_status_name(t.status),
        "priority": t.priority,
        "progress_percentage": t.progress,
        "estimated_duration": t.estimated_duration_secs.map(format_duration),
        "actual_duration": t.actual_duration_ms.map(duration_ms),
        "assigned_to": t.assigned_to,
        "created_by": t.created_by,
        "created_at": timestamp_ms(t.created_at),
        "updated_at": timestamp_ms(t.updated_at),
        "started_at": t.started_at.map(timestamp_ms),
        "completed_at": t.completed_at.map(timestamp_ms),
        "tags": t.tags,
        "metadata": serde_json::from_str::<Value>(&t.metadata_json).unwrap_or_else(|_| json!({})),
        "retry_attempt": t.retry_attempt,
        "retries_left": t.retries_left,
        "queue": t.queue.map(crate::queues::queue_key),
        "run_id": t.run_id,
        "backend": t.backend,
        "dependencies": t.dependencies.iter().map(|d| json!({
            "id": d.depends_on,
            "depends_on_task_id": d.depends_on,
            "dependency_type": "blocks",
            "task": { "title": d.title, "status": task_status_name(d.status) },
        })).collect::<Vec<_>>(),
    })
}

/// A history entry as the task history shows it.
fn history_json(h: &HistoryEntry) -> Value {
    let details = match h.action {
        HistoryAction::Created => {
            let initial = match &h.new_value {
                FieldValue::Text(text) => serde_json::from_str(text).unwrap_or(Value::Null),
                other => value_json(other),
            };
            json!({ "initial_data": initial })
        }
        _ => {
            let mut d = Map::new();
            if let Some(field) = &h.field {
                d.insert("field".into(), json!(field));
                d.insert("old_value".into(), value_json(&h.old_value));
                d.insert("new_value".into(), value_json(&h.new_value));
            }
            if let Some(note) = &h.note {
                d.insert("reason".into(), json!(note));
            }
            Value::Object(d)
        }
    };
    json!({
        "id": h.id,
        "timestamp": timestamp_ms(h.at),
        "action": action_name(h.action),
        "user_id": h.user_id,
        "user_name": h.user_name,
        "details": details,
    })
}

/// A page, as the document's pagination answer, with links that keep the request's filters.
pub(crate) fn page_json(
    request: &Request,
    items: Vec<Value>,
    total: u64,
    page: i64,
    page_size: i64,
) -> Value {
    let size = page_size as u64;
    let pages = total.div_ceil(size).max(1);
    let page_u = page as u64;
    let link = |p: u64| {
        let mut query: Vec<String> = request
            .query_string()
            .split('&')
            .filter(|kv| {
                !kv.is_empty() && !kv.starts_with("page=") && !kv.starts_with("page_size=")
            })
            .map(str::to_string)
            .collect();
        query.push(format!("page={p}"));
        query.push(format!("page_size={size}"));
        format!("{}?{}", request.path(), query.join("&"))
    };
    json!({
        "items": items,
        "total": total,
        "page": page,
        "page_size": page_size,
        "pages": pages,
        "has_next": page_u < pages,
        "has_previous": page_u > 1,
        "pagination": {
            "total": total,
            "page": page,
            "page_size": page_size,
            "pages": pages,
            "links": {
                "first": link(1),
                "previous": (page_u > 1).then(|| link((page_u - 1).min(pages))),
                "next": (page_u < pages).then(|| link(page_u + 1)),
                "last": link(pages),
            },
        },
    })
}

/// `page` and `page_size`, checked; and the row offset they make.
pub(crate) fn paging(request: &Request) -> Result<(i64, i64, u32), ApiError> {
    let page = query_int(request, "page", 1, 1..=1_000_000)?;
    let page_size = query_int(request, "page_size", DEFAULT_PAGE_SIZE, 1..=MAX_PAGE_SIZE)?;
    let offset = u32::try_from((page - 1) * page_size)
        .map_err(|_| ApiError::invalid("page", "is too large"))?;
    Ok((page, page_size, offset))
}

fn descending(request: &Request) -> Result<bool, ApiError> {
    Ok(query_choice(request, "order", "desc", &["asc", "desc"])? == "desc")
}

fn limits(body: &Map<String, Value>, name: &str) -> Result<Option<ResourceLimits>, ApiError> {
    let Some(value) = field(body, name).flatten() else {
        return Ok(None);
    };
    let Value::Object(l) = value else {
        return Err(ApiError::invalid(name, "must be a JSON object"));
    };
    only(l, &["max_tasks", "max_concurrent_tasks", "storage_limit"])?;
    let count = |key: &str| -> Result<Option<u32>, ApiError> {
        opt_int(l, key, 1..=1_000_000)
            .map(|n| n.map(|n| n as u32))
            .map_err(|e| e.renamed(&format!("{name}.{key}")))
    };
    Ok(Some(ResourceLimits {
        max_tasks: count("max_tasks")?,
        max_concurrent_tasks: count("max_concurrent_tasks")?,
        storage_limit_bytes: match field(l, "storage_limit").flatten() {
            None => None,
            Some(v) => Some(parse_size(&format!("{name}.storage_limit"), v)?),
        },
    }))
}

pub fn create_project(request: Request) -> Answer {
    let body = object(request)?;
    only(
        &body,
        &["name", "description", "settings", "resource_limits"],
    )?;
    let new = NewProject {
        name: string(&body, "name")?,
        description: opt_string(&body, "description")?,
        settings_json: opt_object(&body, "settings")?,
        limits: limits(&body, "resource_limits")?.unwrap_or(ResourceLimits {
            max_tasks: None,
            max_concurrent_tasks: None,
            storage_limit_bytes: None,
        }),
    };
    let p = projects::create_project(&new).map_err(error)?;
    Ok((201, project_json(&p)))
}

pub fn list_projects(request: &Request) -> Answer {
    let (page, page_size, offset) = paging(request)?;
    let status = match query_text(request, "status") {
        Some(s) => Some(project_status("status", &s)?),
        None => None,
    };
    let sort = match query_choice(
        request,
        "sort",
        "created_at",
        &["name", "created_at", "updated_at"],
    )? {
        "name" => ProjectSort::Name,
        "updated_at" => ProjectSort::UpdatedAt,
        _ => ProjectSort::CreatedAt,
    };
    let query = ProjectQuery {
        status,
        created_by: query_text(request, "created_by"),
        search: query_text(request, "search"),
        sort,
        descending: descending(request)?,
        offset,
        limit: page_size as u32,
    };
    let found = projects::list_projects(&query).map_err(error)?;
    let items = found.items.iter().map(project_json).collect();
    Ok((200, page_json(request, items, found.total, page, page_size)))
}

fn activity_json(h: &HistoryEntry) -> Value {
    let action = match (h.action, &h.new_value) {
        (HistoryAction::StatusChanged, FieldValue::Text(s)) if s == "completed" => {
            "task_completed".to_string()
        }
        (action, _) => format!("task_{}", action_name(action)),
    };
    json!({
        "timestamp": timestamp_ms(h.at),
        "action": action,
        "task_id": h.task_id,
        "task_title": h.task_title,
        "user_id": h.user_id,
        "user_name": h.user_name,
    })
}

pub fn get_project(id: &str) -> Answer {
    let p = projects::get_project(id).map_err(error)?;
    let activity = projects::project_activity(id, RECENT_ACTIVITY).map_err(error)?;
    let mut data = project_json(&p);
    data["recent_activity"] = activity.iter().map(activity_json).collect();
    Ok((200, data))
}

/// `GET /api/projects/{id}/analytics?period=7d|30d|90d|1y`.
pub fn analytics(request: &Request, id: &str) -> Answer {
    let period = query_choice(request, "period", "30d", &["7d", "30d", "90d", "1y"])?;
    let days = match period {
        "7d" => 7,
        "90d" => 90,
        "1y" => 365,
        _ => 30,
    };
    let a = projects::project_analytics(id, days).map_err(error)?;
    let average = a.average_duration_ms.map(duration_ms);
    Ok((
        200,
        json!({
            "project_id": id,
            "period": period,
            "summary": {
                "total_tasks": a.created,
                "completed_tasks": a.completed,
                "average_completion_time": average,
                // Not a figure gantry can measure: null rather than made up.
                "productivity_score": null,
            },
            "task_trends": {
                "created_per_day": a.created_per_day,
                "completed_per_day": a.completed_per_day,
            },
            "performance_metrics": {
                "average_task_duration": average,
                "median_task_duration": a.median_duration_ms.map(duration_ms),
                "completion_rate": a.completion_rate,
                "on_time_completion_rate": a.on_time_rate,
            },
            "team_performance": a.users.iter().map(|u| json!({
                "user_id": u.user_id,
                "user_name": u.user_name,
                "tasks": u.tasks,
                "tasks_completed": u.completed,
                "average_duration": u.average_duration_ms.map(duration_ms),
                "completion_rate": (u.tasks > 0).then(|| f64::from(u.completed) / f64::from(u.tasks)),
            })).collect::<Vec<_>>(),
        }),
    ))
}

pub fn update_project(request: Request, id: &str) -> Answer {
    let body = object(request)?;
    only(
        &body,
        &[
            "name",
            "description",
            "status",
            "settings",
            "resource_limits",
        ],
    )?;
    let status = match opt_string(&body, "status")? {
        Some(s) => Some(project_status("status", &s)?),
        None => None,
    };
    let change = ProjectChange {
        name: opt_string(&body, "name")?,
        description: clearable_string(&body, "description")?,
        status,
        settings_json: opt_object(&body, "settings")?,
        limits: limits(&body, "resource_limits")?,
    };
    let p = projects::update_project(id, &change).map_err(error)?;
    Ok((200, project_json(&p)))
}

pub fn delete_project(id: &str) -> Answer {
    let at = projects::delete_project(id).map_err(error)?;
    Ok((
        200,
        json!({ "message": "Project deleted successfully", "deleted_at": timestamp_ms(at) }),
    ))
}

pub fn clone_project(request: Request, id: &str) -> Answer {
    let body = object(request)?;
    only(&body, &["name", "include_tasks", "include_settings"])?;
    let name = string(&body, "name")?;
    let include_tasks = opt_bool(&body, "include_tasks")?.unwrap_or(false);
    let include_settings = opt_bool(&body, "include_settings")?.unwrap_or(true);
    let p = projects::clone_project(id, &name, include_tasks, include_settings).map_err(error)?;
    Ok((201, project_json(&p)))
}

const TASK_FIELDS: &[&str] = &[
    "title",
    "description",
    "project_id",
    "priority",
    "estimated_duration",
    "assigned_to",
    "tags",
    "metadata",
    "dependencies",
];

pub fn create_task(request: Request) -> Answer {
    let body = object(request)?;
    only(&body, TASK_FIELDS)?;
    let estimated = match opt_string(&body, "estimated_duration")? {
        Some(text) => Some(parse_duration("estimated_duration", &text)?),
        None => None,
    };
    let new = NewTask {
        project_id: string(&body, "project_id")?,
        title: string(&body, "title")?,
        description: opt_string(&body, "description")?,
        priority: opt_int(&body, "priority", 0..=100)?.unwrap_or(0) as i32,
        estimated_duration_secs: estimated,
        assigned_to: opt_string(&body, "assigned_to")?,
        tags: opt_strings(&body, "tags")?.unwrap_or_default(),
        metadata_json: opt_object(&body, "metadata")?,
        depends_on: opt_strings(&body, "dependencies")?.unwrap_or_default(),
    };
    let t = projects::create_task(&new).map_err(error)?;
    Ok((201, task_json(&t)))
}

/// The task list's filters, as `GET /api/tasks` and `GET /api/projects/{id}/tasks` read them.
pub fn list_tasks(request: &Request, project: Option<&str>) -> Answer {
    let (page, page_size, offset) = paging(request)?;
    let statuses = query_list(request, "status")
        .iter()
        .map(|s| task_status("status", s))
        .collect::<Result<Vec<_>, _>>()?;
    let min_priority = match request.query("priority") {
        Some(_) => Some(query_int(request, "priority", 0, 0..=100)? as i32),
        None => None,
    };
    let instant = |name: &str| -> Result<Option<i64>, ApiError> {
        query_text(request, name)
            .map(|t| parse_instant(name, &t))
            .transpose()
    };
    let sort = match query_choice(
        request,
        "sort",
        "created_at",
        &["created_at", "updated_at", "priority", "title", "status"],
    )? {
        "updated_at" => TaskSort::UpdatedAt,
        "priority" => TaskSort::Priority,
        "title" => TaskSort::Title,
        "status" => TaskSort::Status,
        _ => TaskSort::CreatedAt,
    };
    let project_id = match project {
        Some(id) => Some(id.to_string()),
        None => query_text(request, "project_id"),
    };
    let query = TaskQuery {
        project_id,
        statuses,
        assigned_to: query_text(request, "assigned_to"),
        min_priority,
        tags: query_list(request, "tags"),
        search: query_text(request, "search"),
        created_after: instant("created_after")?,
        created_before: instant("created_before")?,
        sort,
        descending: descending(request)?,
        offset,
        limit: page_size as u32,
    };
    let found = projects::list_tasks(&query).map_err(error)?;
    let items = found.items.iter().map(task_json).collect();
    Ok((200, page_json(request, items, found.total, page, page_size)))
}

pub fn get_task(id: &str) -> Answer {
    let t = projects::get_task(id).map_err(error)?;
    let history = projects::task_history(id).map_err(error)?;
    let mut data = task_json(&t);
    data["history"] = history
        .iter()
        .map(|h| {
            json!({
                "timestamp": timestamp_ms(h.at),
                "action": action_name(h.action),
                "field": h.field,
                "old_value": value_json(&h.old_value),
                "new_value": value_json(&h.new_value),
                "user_id": h.user_id,
            })
        })
        .collect();
    Ok((200, data))
}

pub fn update_task(request: Request, id: &str) -> Answer {
    let body = object(request)?;
    only(
        &body,
        &[
            "title",
            "description",
            "status",
            "priority",
            "progress_percentage",
            "estimated_duration",
            "assigned_to",
            "tags",
            "metadata",
        ],
    )?;
    let status = match opt_string(&body, "status")? {
        Some(s) => Some(task_status("status", &s)?),
        None => None,
    };
    let change = TaskChange {
        title: opt_string(&body, "title")?,
        description: clearable_string(&body, "description")?,
        status,
        priority: opt_int(&body, "priority", 0..=100)?.map(|n| n as i32),
        progress: opt_int(&body, "progress_percentage", 0..=100)?.map(|n| n as u8),
        estimated_duration_secs: clearable_duration(&body, "estimated_duration")?,
        assigned_to: clearable_string(&body, "assigned_to")?,
        tags: opt_strings(&body, "tags")?,
        metadata_json: opt_object(&body, "metadata")?,
    };
    let t = projects::update_task(id, &change).map_err(error)?;
    Ok((200, task_json(&t)))
}

pub fn delete_task(id: &str) -> Answer {
    let at = projects::delete_task(id).map_err(error)?;
    Ok((
        200,
        json!({ "message": "Task deleted successfully", "deleted_at": timestamp_ms(at) }),
    ))
}

pub fn task_history(id: &str) -> Answer {
    let history = projects::task_history(id).map_err(error)?;
    Ok((
        200,
        json!({ "task_id": id, "history": history.iter().map(history_json).collect::<Vec<_>>() }),
    ))
}

/// A field of a bulk operation's `data` that it needs.
fn required<T>(value: Option<T>, key: &str) -> Result<T, ApiError> {
    value.ok_or_else(|| ApiError::invalid(&format!("data.{key}"), "Field is required"))
}

const BULK_OPERATIONS: &[&str] = &[
    "update_status",
    "assign",
    "add_tags",
    "remove_tags",
    "delete",
    "set_priority",
];

pub fn bulk(request: Request) -> Answer {
    let body = object(request)?;
    only(&body, &["operation", "task_ids", "data"])?;
    let name = string(&body, "operation")?;
    let ids = opt_strings(&body, "task_ids")?
        .ok_or_else(|| ApiError::invalid("task_ids", "Field is required"))?;
    let data = match field(&body, "data").flatten() {
        None => Map::new(),
        Some(Value::Object(d)) => d.clone(),
        Some(_) => return Err(ApiError::invalid("data", "must be a JSON object")),
    };
    let operation = match name.as_str() {
        "update_status" => {
            let s = required(opt_string(&data, "status")?, "status")?;
            BulkOperation::UpdateStatus(task_status("data.status", &s)?)
        }
        "assign" => {
            let who = required(clearable_string(&data, "assigned_to")?, "assigned_to")?;
            BulkOperation::Assign(who)
        }
        "add_tags" => BulkOperation::AddTags(required(opt_strings(&data, "tags")?, "tags")?),
        "remove_tags" => BulkOperation::RemoveTags(required(opt_strings(&data, "tags")?, "tags")?),
        "delete" => BulkOperation::Delete,
        "set_priority" => BulkOperation::SetPriority(required(
            opt_int(&data, "priority", 0..=100)?,
            "priority",
        )? as i32),
        _ => {
            return Err(ApiError::invalid(
                "operation",
                format!("must be one of {}", BULK_OPERATIONS.join(", ")),
            ));
        }
    };
    let outcome = projects::bulk(&operation, &ids).map_err(error)?;
    let errors: Vec<Value> = outcome
        .failed
        .iter()
        .map(|BulkFailure { id, error: e }| {
            let e = error(e.clone());
            json!({ "task_id": id, "code": e.code, "message": e.message })
        })
        .collect();
    Ok((
        200,
        json!({
            "operation": name,
            "affected_count": outcome.succeeded.len(),
            "successful": outcome.succeeded,
            "failed": outcome.failed.iter().map(|f| f.id.clone()).collect::<Vec<_>>(),
            "errors": errors,
        }),
    ))
}
