//! What the board tells the event bus: the `data` of its `project.*` and `task.*` events, in
//! the shapes of the Web UI API document's webhook payload and WebSocket messages, so that
//! one event serves both.

use crate::events::{EventKind, NewEvent};
use crate::store::{BoardTaskRecord, BoardTaskStatus, ProjectRecord};
use serde_json::{Value, json};

/// RFC 3339 in UTC with second precision, from ms since the epoch.
pub fn rfc3339(ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let at = at.replace_nanosecond(0).unwrap_or(at);
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A duration as the document writes it: `HH:MM:SS`.
pub fn hms(ms: i64) -> String {
    let secs = ms.max(0) / 1000;
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// `project.created` or `project.updated` about `project`.
pub fn project_event(kind: EventKind, project: &ProjectRecord, deleted: bool) -> NewEvent {
    NewEvent::new(
        kind,
        json!({
            "project_id": project.id,
            "name": project.name,
            "status": if deleted { "deleted" } else { project.status.as_str() },
            "updated_at": rfc3339(project.updated_at),
        }),
    )
    .project(&project.id)
}

/// The event a task's new state makes: `task.completed` or `task.failed` (failed, timed out,
/// interrupted) when an update ends it, else `kind` (`task.created` or `task.updated`).
/// `exit_code` is its run's, when the run told.
pub fn task_event(
    kind: EventKind,
    task: &BoardTaskRecord,
    deleted: bool,
    exit_code: Option<i32>,
) -> NewEvent {
    let mut data = json!({
        "task_id": task.id,
        "project_id": task.project_id,
        "title": task.title,
        "status": if deleted { "deleted" } else { task.status.as_str() },
        "priority": task.priority,
        "progress_percentage": task.progress,
        "queue": task.queue.map(|q| q.as_str()),
        "updated_at": rfc3339(task.updated_at),
    });
    let ended = match task.status {
        BoardTaskStatus::Completed => Some(EventKind::TaskCompleted),
        BoardTaskStatus::Failed | BoardTaskStatus::TimedOut | BoardTaskStatus::Interrupted => {
            Some(EventKind::TaskFailed)
        }
        _ => None,
    };
    let kind = match ended {
        Some(ended) if kind == EventKind::TaskUpdated && !deleted => {
            if let (Value::Object(map), Some(done)) = (&mut data, task.completed_at) {
                map.insert("completed_at".into(), rfc3339(done).into());
                let started = task.started_at.unwrap_or(done);
                map.insert("duration".into(), hms(done - started).into());
                if let Some(code) = exit_code {
                    map.insert("exit_code".into(), code.into());
                }
            }
            ended
        }
        _ => kind,
    };
    NewEvent::new(kind, data)
        .project(&task.project_id)
        .task(&task.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_times_read_as_the_document_writes_them() {
        assert_eq!(hms(330_000), "00:05:30");
        assert_eq!(hms(3_600_000 * 25 + 1_999), "25:00:01");
        assert_eq!(rfc3339(1_753_884_000_123), "2025-07-30T14:00:00Z");
    }
}
