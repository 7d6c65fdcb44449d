//! Putting a task back to the status it had at an earlier instant, read from its history (for
//! a working session's restore, `crate::work_sessions`). The change is an ordinary status
//! change: written with its history entry in one transaction, retried when the task moved on
//! under it, and announced as `task.updated`.

use super::STALE_RETRIES;
use super::{ProjectError, Projects};
use crate::events::EventKind;
use crate::store::{BoardRefusal, BoardTaskStatus, HistoryAction, HistoryView, now_ms};
use crate::users::{Permission, Principal};
use serde_json::Value;

/// What restoring one task's status did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusRestore {
    /// Its status changed back.
    Restored {
        /// Its status before the restore.
        from: BoardTaskStatus,
        /// Its status now, the one it had then.
        to: BoardTaskStatus,
    },
    /// It already had the status it had then.
    Unchanged(BoardTaskStatus),
    /// It was left as it is, and why.
    Skipped(String),
}

/// A task whose status a restore looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRestore {
    /// The task.
    pub task_id: String,
    /// Its title now.
    pub title: String,
    /// What happened to it.
    pub outcome: StatusRestore,
}

/// The status a task had at `at` (ms since the epoch) by its history (oldest first): the
/// status it was made with, then each status change up to and including `at`. None when it was
/// made after `at`.
pub fn status_at(history: &[HistoryView], at: i64) -> Option<BoardTaskStatus> {
    let mut status = None;
    for view in history.iter().take_while(|v| v.entry.at <= at) {
        let e = &view.entry;
        let named = match e.action {
            HistoryAction::Created => e
                .new_value
                .as_deref()
                .and_then(|v| serde_json::from_str::<Value>(v).ok())
                .and_then(|v| v.get("status")?.as_str().map(str::to_string)),
            HistoryAction::StatusChanged if e.field.as_deref() == Some("status") => e
                .new_value
                .as_deref()
                .and_then(|v| serde_json::from_str::<String>(v).ok()),
            _ => None,
        };
        if let Some(s) = named.as_deref().and_then(BoardTaskStatus::parse) {
            status = Some(s);
        }
    }
    status
}

/// The status a task had right after its latest execution (queued, unless the history says
/// otherwise): the entries up to and including that `Executed` one, by their order, not by
/// time. The queue may start the task within the same millisecond, and its change to
/// `running` then shares the execution's instant; it comes after it in the history. None
/// when it was never executed.
pub fn status_after_last_execution(history: &[HistoryView]) -> Option<BoardTaskStatus> {
    let executed = history
        .iter()
        .rposition(|v| v.entry.action == HistoryAction::Executed)?;
    status_at(&history[..=executed], history[executed].entry.at)
}

impl Projects {
    /// Put one of the caller's tasks back to the status it had at `at`, with `note` in the
    /// history entry of the change (needs `write`). A task that is queued or running now is
    /// left alone (a run owns it), and so is one that was queued or running then (a restore
    /// never queues or runs anything).
    pub async fn restore_status(
        &self,
        who: &Principal,
        id: &str,
        at: i64,
        note: &str,
    ) -> Result<TaskRestore, ProjectError> {
        who.require(Permission::Write)?;
        for _ in 0..STALE_RETRIES {
            let before = self.task_record(who, id).await?;
            let history = self.store.board_task_history(Self::tenant(who), id).await?;
            let done = |outcome| {
                Ok(TaskRestore {
                    task_id: before.id.clone(),
                    title: before.title.clone(),
                    outcome,
                })
            };
            let Some(then) = status_at(&history, at) else {
                return done(StatusRestore::Skipped(
                    "the task did not exist at the restore point".into(),
                ));
            };
            if then == before.status {
                return done(StatusRestore::Unchanged(then));
            }
            if then.is_active() {
                return done(StatusRestore::Skipped(format!(
                    "the task was {then} at the restore point; a restore does not queue or run tasks"
                )));
            }
            if before.status.is_active() {
                return done(StatusRestore::Skipped(format!(
                    "the task is {} now; cancel it first",
                    before.status
                )));
            }
            let now = now_ms();
            let mut after = before.clone();
            after.status = then;
            after.updated_at = now;
            match then {
                BoardTaskStatus::Pending => after.completed_at = None,
                BoardTaskStatus::Completed => {
                    after.progress = 100;
                    after.completed_at = Some(now);
                }
                _ => after.completed_at = Some(now),
            }
            let mut entry = Self::entry(who, &after, now, HistoryAction::StatusChanged);
            entry.field = Some("status".into());
            entry.old_value = super::json(&before.status.as_str());
            entry.new_value = super::json(&then.as_str());
            entry.note = Some(note.to_string());
            match self.store.update_board_task(&after, &[entry]).await? {
                Ok(()) => {
                    self.events
                        .announce(
                            &who.tenant,
                            super::events::task_event(EventKind::TaskUpdated, &after, false, None),
                        )
                        .await;
                    return done(StatusRestore::Restored {
                        from: before.status,
                        to: then,
                    });
                }
                Err(BoardRefusal::Stale) => continue,
                Err(other) => {
                    return Err(ProjectError::Internal(anyhow::anyhow!(
                        "restoring a task's status: {other:?}"
                    )));
                }
            }
        }
        Err(ProjectError::Internal(anyhow::anyhow!(
            "the task kept changing under this restore"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::HistoryRecord;

    fn view(at: i64, action: HistoryAction, field: Option<&str>, new: &str) -> HistoryView {
        HistoryView {
            entry: HistoryRecord {
                id: format!("h{at}"),
                tenant: "t".into(),
                task_id: "task".into(),
                project_id: "p".into(),
                at,
                action,
                field: field.map(str::to_string),
                old_value: None,
                new_value: Some(new.into()),
                user_id: "u".into(),
                user_name: "u".into(),
                note: None,
            },
            task_title: "T".into(),
        }
    }

    #[test]
    fn the_status_at_an_instant_is_the_last_change_up_to_it() {
        let history = vec![
            view(
                10,
                HistoryAction::Created,
                None,
                r#"{"status":"pending","title":"T"}"#,
            ),
            view(
                20,
                HistoryAction::StatusChanged,
                Some("status"),
                r#""queued""#,
            ),
            view(20, HistoryAction::Executed, Some("queue"), r#""normal""#),
            view(30, HistoryAction::PriorityChanged, Some("priority"), "5"),
            view(
                40,
                HistoryAction::StatusChanged,
                Some("status"),
                r#""completed""#,
            ),
        ];
        assert_eq!(status_at(&history, 9), None, "before it was made");
        assert_eq!(status_at(&history, 10), Some(BoardTaskStatus::Pending));
        assert_eq!(status_at(&history, 19), Some(BoardTaskStatus::Pending));
        assert_eq!(status_at(&history, 20), Some(BoardTaskStatus::Queued));
        assert_eq!(status_at(&history, 39), Some(BoardTaskStatus::Queued));
        assert_eq!(status_at(&history, 40), Some(BoardTaskStatus::Completed));
        assert_eq!(
            status_at(&history, i64::MAX),
            Some(BoardTaskStatus::Completed)
        );
    }

    #[test]
    fn the_status_after_an_execution_ignores_a_start_in_the_same_millisecond() {
        let queued = |at| {
            view(
                at,
                HistoryAction::StatusChanged,
                Some("status"),
                r#""queued""#,
            )
        };
        let running = |at| {
            view(
                at,
                HistoryAction::StatusChanged,
                Some("status"),
                r#""running""#,
            )
        };
        let executed = |at| view(at, HistoryAction::Executed, Some("queue"), r#""normal""#);
        let created = view(10, HistoryAction::Created, None, r#"{"status":"pending"}"#);
        // Started within the execution's millisecond: `status_at` that instant says running.
        let history = vec![created.clone(), queued(20), executed(20), running(20)];
        assert_eq!(status_at(&history, 20), Some(BoardTaskStatus::Running));
        assert_eq!(
            status_after_last_execution(&history),
            Some(BoardTaskStatus::Queued)
        );
        // The latest of two executions counts.
        let history = vec![
            created.clone(),
            queued(20),
            executed(20),
            running(30),
            view(
                40,
                HistoryAction::StatusChanged,
                Some("status"),
                r#""failed""#,
            ),
            queued(50),
            executed(50),
            running(50),
        ];
        assert_eq!(
            status_after_last_execution(&history),
            Some(BoardTaskStatus::Queued)
        );
        assert_eq!(status_after_last_execution(&[created]), None);
    }

    #[test]
    fn unreadable_entries_are_passed_over() {
        let history = vec![
            view(10, HistoryAction::Created, None, r#"{"status":"pending"}"#),
            view(20, HistoryAction::StatusChanged, Some("status"), "not json"),
            view(
                30,
                HistoryAction::StatusChanged,
                Some("status"),
                r#""no-such""#,
            ),
        ];
        assert_eq!(status_at(&history, 30), Some(BoardTaskStatus::Pending));
    }
}
