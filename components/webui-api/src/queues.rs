//! Running board tasks: `execute`, `cancel`, `retry` on `/api/tasks/{id}`, and the queues
//! under `/api/queues`. The host keeps the queues and feeds the supervisor from them
//! (`gantry:plugin/projects`); this component picks the backend the document's way
//! (`metadata.backend` of the task, else `settings.backend` of its project, else `claude`)
//! and words the answers.

use crate::board::{error, task_json, task_status_name};
use crate::input::{field, format_duration, only, opt_bool, opt_int, opt_string, opt_strings};
use crate::{Answer, ApiError, now_ms, object, string, timestamp_ms};
use gantry_guest::http::Request;
use gantry_guest::projects::{self, ExecuteOptions, QueueName, QueueReport, TaskStatus};
use serde_json::{Map, Value, json};

/// The backend when neither the task nor its project names one.
const DEFAULT_BACKEND: &str = "claude";
/// Automatic retries one execution may ask for.
const MAX_RETRY_ATTEMPTS: i64 = 10;
/// The longest run timeout, in seconds (a day).
const MAX_TIMEOUT_SECS: i64 = 86_400;

const QUEUES: [QueueName; 3] = [QueueName::High, QueueName::Normal, QueueName::Low];

pub(crate) fn queue_short_name(q: QueueName) -> &'static str {
    match q {
        QueueName::High => "high",
        QueueName::Normal => "normal",
        QueueName::Low => "low",
    }
}

/// The document's name of a queue (`high_priority`).
pub(crate) fn queue_key(q: QueueName) -> String {
    format!("{}_priority", queue_short_name(q))
}

/// A queue named either way (`high` or `high_priority`).
pub(crate) fn queue(field: &str, name: &str) -> Result<QueueName, ApiError> {
    QUEUES
        .into_iter()
        .find(|q| name == queue_short_name(*q) || name == queue_key(*q))
        .ok_or_else(|| {
            ApiError::invalid(
                field,
                "must be one of high, normal, low (or high_priority, normal_priority, low_priority)",
            )
        })
}

/// The queues a body names with `queue_name`: one, or all when it is absent.
fn named_queues(body: &Map<String, Value>) -> Result<Vec<QueueName>, ApiError> {
    match opt_string(body, "queue_name")? {
        Some(name) => Ok(vec![queue("queue_name", &name)?]),
        None => Ok(Vec::new()),
    }
}

/// The `backend` string of a JSON object's text, if it names one.
fn backend_in(json_text: &str) -> Option<String> {
    serde_json::from_str::<Value>(json_text)
        .ok()?
        .get("backend")?
        .as_str()
        .filter(|b| !b.trim().is_empty())
        .map(str::to_string)
}

/// `execution_id`: this execution of the task, as its attempt.
fn execution_id(task_id: &str, attempt: u32) -> String {
    format!("{task_id}.{attempt}")
}

/// When a task `ahead` places back may start, from the average run time of the last day; none
/// when there is no average to go by or it waits for other tasks.
fn estimated_start(ahead: u64, waiting_on: &[String]) -> Option<String> {
    if !waiting_on.is_empty() {
        return None;
    }
    if ahead == 0 {
        return Some(timestamp_ms(now_ms()));
    }
    let report = projects::report_queues(now_ms() - 86_400_000).ok()?;
    let average = report.average_run_ms?;
    let rounds = ahead.div_ceil(u64::from(report.workers.max(1)));
    Some(timestamp_ms(now_ms() + (average * rounds as f64) as i64))
}

pub(crate) fn queued_json(q: &projects::Queued) -> Value {
    let mut data = json!({
        "task_id": q.task.id,
        "execution_id": execution_id(&q.task.id, q.task.retry_attempt),
        "status": task_status_name(q.task.status),
        "queue": q.task.queue.map(queue_key),
        "queue_position": q.position + 1,
        "estimated_start_time": estimated_start(q.position, &q.waiting_on),
        "retry_attempt": q.task.retry_attempt,
        "waiting_on": q.waiting_on,
    });
    if !q.waiting_on.is_empty() {
        data["blocked_by"] = json!({
            "code": "TASK_DEPENDENCY_NOT_MET",
            "message": "The task starts once the tasks it depends on have completed.",
            "task_ids": q.waiting_on,
        });
    }
    data
}

/// `POST /api/tasks/{id}/execute`.
pub fn execute(request: Request, id: &str) -> Answer {
    let body = crate::object_or_empty(request)?;
    only(&body, &["priority", "options", "session_id"])?;
    let queue = match opt_string(&body, "priority")? {
        Some(name) => queue("priority", &name)?,
        None => QueueName::Normal,
    };
    let options = match field(&body, "options").flatten() {
        None => Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(_) => return Err(ApiError::invalid("options", "must be a JSON object")),
    };
    only(&options, &["timeout", "retry_attempts"]).map_err(|e| {
        let field = format!(
            "options.{}",
            e.details["field"].as_str().unwrap_or_default()
        );
        e.renamed(&field)
    })?;
    let timeout = opt_int(&options, "timeout", 1..=MAX_TIMEOUT_SECS)
        .map_err(|e| e.renamed("options.timeout"))?;
    let retry_attempts = opt_int(&options, "retry_attempts", 0..=MAX_RETRY_ATTEMPTS)
        .map_err(|e| e.renamed("options.retry_attempts"))?
        .unwrap_or(0);
    let session = crate::sessions::session_for_execute(&body)?;
    let queued = execute_task(id, queue, timeout.map(|t| t as u64), retry_attempts as u32)?;
    let mut data = queued_json(&queued);
    if let Some(session) = session {
        // The task is queued either way; a session that went away meanwhile is said, not
        // turned into a failed execution.
        match crate::sessions::record_execution(&session, id) {
            Ok(()) => data["session_id"] = json!(session),
            Err(e) => data["session_error"] = json!(e.message),
        }
    }
    Ok((200, data))
}

/// Queue task `id` in `queue` on the backend the document's way picks.
pub(crate) fn execute_task(
    id: &str,
    queue: QueueName,
    timeout_secs: Option<u64>,
    retry_attempts: u32,
) -> Result<projects::Queued, ApiError> {
    let task = projects::get_task(id).map_err(error)?;
    let backend = match backend_in(&task.metadata_json) {
        Some(b) => b,
        None => {
            let project = projects::get_project(&task.project_id).map_err(error)?;
            backend_in(&project.settings_json).unwrap_or_else(|| DEFAULT_BACKEND.into())
        }
    };
    projects::execute(
        id,
        &ExecuteOptions {
            queue,
            timeout_secs,
            retry_attempts,
            backend,
        },
    )
    .map_err(error)
}

/// `POST /api/tasks/{id}/retry`.
pub fn retry(id: &str) -> Answer {
    let queued = projects::retry(id).map_err(error)?;
    Ok((200, queued_json(&queued)))
}

/// `POST /api/tasks/{id}/cancel`.
pub fn cancel(request: Request, id: &str) -> Answer {
    let body = crate::object_or_empty(request)?;
    only(&body, &["reason"])?;
    let reason = opt_string(&body, "reason")?;
    if reason.as_ref().is_some_and(|r| r.chars().count() > 1000) {
        return Err(ApiError::invalid(
            "reason",
            "must be at most 1000 characters",
        ));
    }
    let task = projects::cancel(id, reason.as_deref()).map_err(error)?;
    if task.status != TaskStatus::Cancelled {
        return Err(ApiError::new(
            409,
            "TASK_NOT_RUNNING",
            format!(
                "Only a queued or running task is cancelled; this one is {}.",
                task_status_name(task.status)
            ),
        ));
    }
    Ok((
        200,
        json!({
            "task_id": task.id,
            "status": task_status_name(task.status),
            "cancelled_at": task.completed_at.map(timestamp_ms),
            "reason": reason,
            "task": task_json(&task),
        }),
    ))
}

fn per_queue(report: &QueueReport) -> Value {
    let mut queues = Map::new();
    for q in &report.queues {
        queues.insert(
            queue_key(q.name),
            json!({
                "size": q.waiting,
                "processing": q.running,
                "completed": q.completed,
                "paused": q.paused,
            }),
        );
    }
    Value::Object(queues)
}

fn success_rate(report: &QueueReport) -> Option<f64> {
    let ended = report.completed + report.failed;
    (ended > 0).then(|| report.completed as f64 / ended as f64)
}

fn duration_of(ms: Option<f64>) -> Option<String> {
    ms.map(|ms| format_duration((ms.max(0.0) / 1000.0).round() as u64))
}

/// `GET /api/queues/status`: now, with what completed since midnight (UTC) and the last
/// hour's pace.
pub fn status() -> Answer {
    let now = now_ms();
    let midnight = now - now.rem_euclid(86_400_000);
    let today = projects::report_queues(midnight).map_err(error)?;
    let last_hour = projects::report_queues(now - 3_600_000).map_err(error)?;
    let mut queues = per_queue(&today);
    for q in &today.queues {
        queues[queue_key(q.name)]["completed_today"] = json!(q.completed);
    }
    let active: u64 = today.queues.iter().map(|q| q.running).sum();
    let total = u64::from(today.workers);
    Ok((
        200,
        json!({
            "queues": queues,
            "workers": {
                "active": active,
                "idle": total.saturating_sub(active),
                "total": total,
            },
            "performance": {
                "tasks_per_minute": last_hour.completed as f64 / 60.0,
                "average_processing_time": duration_of(today.average_run_ms),
                "success_rate": success_rate(&today),
            },
        }),
    ))
}

/// `GET /api/queues/metrics?period=`.
pub fn metrics(request: &Request) -> Answer {
    let period = crate::input::query_choice(request, "period", "24h", &["1h", "24h", "7d", "30d"])?;
    let minutes: i64 = match period {
        "1h" => 60,
        "7d" => 7 * 1440,
        "30d" => 30 * 1440,
        _ => 1440,
    };
    let since = now_ms() - minutes * 60_000;
    let report = projects::report_queues(since).map_err(error)?;
    Ok((
        200,
        json!({
            "period": period,
            "since": timestamp_ms(since),
            "queues": per_queue(&report),
            "started": report.started,
            "completed": report.completed,
            "failed": report.failed,
            "tasks_per_minute": report.completed as f64 / minutes as f64,
            "average_processing_time": duration_of(report.average_run_ms),
            "average_wait_time": duration_of(report.average_wait_ms),
            "success_rate": success_rate(&report),
        }),
    ))
}

/// `POST /api/queues/pause` and `/resume`.
pub fn pause_or_resume(request: Request, pause: bool) -> Answer {
    let body = crate::object_or_empty(request)?;
    only(&body, &["queue_name", "reason"])?;
    let queues = named_queues(&body)?;
    if pause {
        projects::pause_queues(&queues).map_err(error)?;
    } else {
        projects::resume_queues(&queues).map_err(error)?;
    }
    let names: Vec<String> = if queues.is_empty() {
        QUEUES.into_iter().map(queue_key).collect()
    } else {
        queues.into_iter().map(queue_key).collect()
    };
    Ok((
        200,
        json!({ "queues": names, "paused": pause, "reason": opt_string(&body, "reason")? }),
    ))
}

/// `DELETE /api/queues/clear`: needs `confirm: true`.
pub fn clear(request: Request) -> Answer {
    let body = object(request)?;
    only(&body, &["queue_name", "confirm", "reason"])?;
    if opt_bool(&body, "confirm")? != Some(true) {
        return Err(ApiError::invalid(
            "confirm",
            "must be true: clearing cancels every task waiting in the queue",
        ));
    }
    let queues = named_queues(&body)?;
    let reason = opt_string(&body, "reason")?.or_else(|| Some("queue cleared".into()));
    let cleared = projects::clear_queues(&queues, reason.as_deref()).map_err(error)?;
    Ok((
        200,
        json!({ "cleared_count": cleared.len(), "cancelled": cleared }),
    ))
}

/// `POST /api/queues/priority`: move queued tasks to another queue.
pub fn set_priority(request: Request) -> Answer {
    let body = object(request)?;
    only(&body, &["task_ids", "priority"])?;
    let ids = opt_strings(&body, "task_ids")?
        .ok_or_else(|| ApiError::invalid("task_ids", "Field is required"))?;
    if ids.is_empty() || ids.len() > 100 {
        return Err(ApiError::invalid("task_ids", "must name 1 to 100 tasks"));
    }
    let target = queue("priority", &string(&body, "priority")?)?;
    let outcome = projects::move_to_queue(&ids, target).map_err(error)?;
    let errors: Vec<Value> = outcome
        .failed
        .iter()
        .map(|f| {
            let e = error(f.error.clone());
            json!({ "task_id": f.id, "code": e.code, "message": e.message })
        })
        .collect();
    Ok((
        200,
        json!({
            "priority": queue_key(target),
            "affected_count": outcome.succeeded.len(),
            "successful": outcome.succeeded,
            "failed": outcome.failed.iter().map(|f| f.id.clone()).collect::<Vec<_>>(),
            "errors": errors,
        }),
    ))
}
