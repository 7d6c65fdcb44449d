//! `gantry:plugin/projects`: the board of the Web UI API for the calling user. The caller's
//! tenant and permissions come from the request's credentials, never from the component; a
//! call on a route without a user (no `user_auth`) is refused.

use super::ProjectsView;
use super::bindings::gantry::plugin::projects as wit;
use super::bindings::gantry::plugin::users::FieldIssue;
use crate::projects::{
    BoardTask, BulkOperation, Limits, NewProject, NewTask, Project, ProjectChange, ProjectError,
    ProjectListing, TaskChange, TaskListing,
};
use crate::store::QueueName;
use crate::store::{
    BoardTaskOrder, BoardTaskQuery, BoardTaskRecord, BoardTaskStatus, HistoryAction, HistoryView,
    ProjectOrder, ProjectQuery, ProjectStatus,
};
use crate::tasks::queue::{ExecuteOptions, Queued};
use crate::users::Principal;

fn error(e: ProjectError) -> wit::ProjectError {
    match e {
        ProjectError::ProjectNotFound => wit::ProjectError::ProjectNotFound,
        ProjectError::TaskNotFound => wit::ProjectError::TaskNotFound,
        ProjectError::Forbidden(m) => wit::ProjectError::Forbidden(m),
        ProjectError::Invalid { field, issue } => wit::ProjectError::Invalid(FieldIssue {
            field: field.to_string(),
            issue,
        }),
        ProjectError::BadSearch(m) => wit::ProjectError::BadSearch(m),
        ProjectError::InUse(m) => wit::ProjectError::InUse(m),
        ProjectError::LimitExceeded(m) => wit::ProjectError::LimitExceeded(m),
        ProjectError::AlreadyRunning => wit::ProjectError::AlreadyRunning,
        ProjectError::QueueFull(n) => wit::ProjectError::QueueFull(n),
        ProjectError::Internal(e) => {
            tracing::error!("board operation failed: {e:#}");
            wit::ProjectError::Internal("internal error".into())
        }
    }
}

fn project_status(s: ProjectStatus) -> wit::ProjectStatus {
    match s {
        ProjectStatus::Active => wit::ProjectStatus::Active,
        ProjectStatus::Archived => wit::ProjectStatus::Archived,
        ProjectStatus::Completed => wit::ProjectStatus::Completed,
    }
}

fn from_project_status(s: wit::ProjectStatus) -> ProjectStatus {
    match s {
        wit::ProjectStatus::Active => ProjectStatus::Active,
        wit::ProjectStatus::Archived => ProjectStatus::Archived,
        wit::ProjectStatus::Completed => ProjectStatus::Completed,
    }
}

pub(super) fn task_status(s: BoardTaskStatus) -> wit::TaskStatus {
    match s {
        BoardTaskStatus::Pending => wit::TaskStatus::Pending,
        BoardTaskStatus::Queued => wit::TaskStatus::Queued,
        BoardTaskStatus::Running => wit::TaskStatus::Running,
        BoardTaskStatus::Completed => wit::TaskStatus::Completed,
        BoardTaskStatus::Failed => wit::TaskStatus::Failed,
        BoardTaskStatus::Cancelled => wit::TaskStatus::Cancelled,
        BoardTaskStatus::TimedOut => wit::TaskStatus::TimedOut,
        BoardTaskStatus::Interrupted => wit::TaskStatus::Interrupted,
    }
}

fn from_task_status(s: wit::TaskStatus) -> BoardTaskStatus {
    match s {
        wit::TaskStatus::Pending => BoardTaskStatus::Pending,
        wit::TaskStatus::Queued => BoardTaskStatus::Queued,
        wit::TaskStatus::Running => BoardTaskStatus::Running,
        wit::TaskStatus::Completed => BoardTaskStatus::Completed,
        wit::TaskStatus::Failed => BoardTaskStatus::Failed,
        wit::TaskStatus::Cancelled => BoardTaskStatus::Cancelled,
        wit::TaskStatus::TimedOut => BoardTaskStatus::TimedOut,
        wit::TaskStatus::Interrupted => BoardTaskStatus::Interrupted,
    }
}

fn action(a: HistoryAction) -> wit::HistoryAction {
    match a {
        HistoryAction::Created => wit::HistoryAction::Created,
        HistoryAction::Updated => wit::HistoryAction::Updated,
        HistoryAction::StatusChanged => wit::HistoryAction::StatusChanged,
        HistoryAction::Assigned => wit::HistoryAction::Assigned,
        HistoryAction::PriorityChanged => wit::HistoryAction::PriorityChanged,
        HistoryAction::TagsChanged => wit::HistoryAction::TagsChanged,
        HistoryAction::ProgressChanged => wit::HistoryAction::ProgressChanged,
        HistoryAction::Deleted => wit::HistoryAction::Deleted,
        HistoryAction::Executed => wit::HistoryAction::Executed,
        HistoryAction::Cancelled => wit::HistoryAction::Cancelled,
        HistoryAction::Retried => wit::HistoryAction::Retried,
    }
}

fn limits(l: wit::ResourceLimits) -> Limits {
    Limits {
        max_tasks: l.max_tasks,
        max_concurrent_tasks: l.max_concurrent_tasks,
        storage_limit_bytes: l.storage_limit_bytes,
    }
}

fn project(p: Project) -> wit::Project {
    let c = p.counts;
    let r = p.record;
    wit::Project {
        id: r.id,
        name: r.name,
        description: r.description,
        status: project_status(r.status),
        workspace_id: r.workspace_id,
        created_by: r.created_by,
        created_at: r.created_at,
        updated_at: r.updated_at,
        settings_json: r.settings,
        limits: wit::ResourceLimits {
            max_tasks: r.max_tasks,
            max_concurrent_tasks: r.max_concurrent_tasks,
            storage_limit_bytes: r.storage_limit_bytes,
        },
        statistics: wit::ProjectStatistics {
            total_tasks: c.total(),
            pending_tasks: c.of(BoardTaskStatus::Pending),
            queued_tasks: c.of(BoardTaskStatus::Queued),
            running_tasks: c.of(BoardTaskStatus::Running),
            completed_tasks: c.of(BoardTaskStatus::Completed),
            failed_tasks: c.of(BoardTaskStatus::Failed)
                + c.of(BoardTaskStatus::TimedOut)
                + c.of(BoardTaskStatus::Interrupted),
            cancelled_tasks: c.of(BoardTaskStatus::Cancelled),
            average_duration_ms: c.average_duration_ms,
        },
    }
}

fn task_of(r: BoardTaskRecord, dependencies: Vec<wit::Dependency>) -> wit::ProjectTask {
    let actual_duration_ms = r.started_at.map(|start| {
        let end = if r.status.is_active() {
            crate::store::now_ms()
        } else {
            r.completed_at.unwrap_or(start)
        };
        end.saturating_sub(start).max(0) as u64
    });
    wit::ProjectTask {
        id: r.id,
        project_id: r.project_id,
        title: r.title,
        description: r.description,
        status: task_status(r.status),
        priority: r.priority,
        progress: r.progress,
        estimated_duration_secs: r.estimated_duration_secs,
        actual_duration_ms,
        assigned_to: r.assigned_to,
        created_by: r.created_by,
        created_at: r.created_at,
        updated_at: r.updated_at,
        started_at: r.started_at,
        completed_at: r.completed_at,
        tags: r.tags,
        metadata_json: r.metadata,
        dependencies,
        retry_attempt: r.retry_attempt,
        queue: r.queue.map(queue_name),
        run_id: r.run_id,
        retries_left: r.retries_left,
        backend: r.backend,
    }
}

fn queue_name(q: QueueName) -> wit::QueueName {
    match q {
        QueueName::High => wit::QueueName::High,
        QueueName::Normal => wit::QueueName::Normal,
        QueueName::Low => wit::QueueName::Low,
    }
}

fn from_queue_name(q: wit::QueueName) -> QueueName {
    match q {
        wit::QueueName::High => QueueName::High,
        wit::QueueName::Normal => QueueName::Normal,
        wit::QueueName::Low => QueueName::Low,
    }
}

fn queued(q: Queued) -> wit::Queued {
    wit::Queued {
        task: task_of(q.task, Vec::new()),
        position: q.position,
        waiting_on: q.waiting_on,
    }
}

fn outcome(results: Vec<(String, Result<(), ProjectError>)>) -> wit::BulkOutcome {
    let mut out = wit::BulkOutcome {
        succeeded: Vec::new(),
        failed: Vec::new(),
    };
    for (id, result) in results {
        match result {
            Ok(()) => out.succeeded.push(id),
            Err(e) => out.failed.push(wit::BulkFailure {
                id,
                error: error(e),
            }),
        }
    }
    out
}

fn task(t: BoardTask) -> wit::ProjectTask {
    let deps = t
        .dependencies
        .into_iter()
        .map(|d| wit::Dependency {
            depends_on: d.depends_on,
            title: d.title,
            status: task_status(d.status),
        })
        .collect();
    task_of(t.record, deps)
}

/// A history value, stored as JSON, typed.
fn value(json: Option<String>) -> wit::FieldValue {
    use serde_json::Value;
    match json.and_then(|j| serde_json::from_str::<Value>(&j).ok()) {
        None | Some(Value::Null) => wit::FieldValue::None,
        Some(Value::String(s)) => wit::FieldValue::Text(s),
        Some(Value::Number(n)) => n.as_i64().map_or_else(
            || wit::FieldValue::Text(n.to_string()),
            wit::FieldValue::Number,
        ),
        Some(Value::Bool(b)) => wit::FieldValue::Text(b.to_string()),
        Some(Value::Array(items)) => wit::FieldValue::Tags(
            items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                })
                .collect(),
        ),
        Some(other @ Value::Object(_)) => wit::FieldValue::Text(other.to_string()),
    }
}

fn entry(h: HistoryView) -> wit::HistoryEntry {
    let e = h.entry;
    wit::HistoryEntry {
        id: e.id,
        task_id: e.task_id,
        task_title: h.task_title,
        at: e.at,
        action: action(e.action),
        field: e.field,
        old_value: value(e.old_value),
        new_value: value(e.new_value),
        user_id: e.user_id,
        user_name: e.user_name,
        note: e.note,
    }
}

impl ProjectsView<'_> {
    fn who(&self) -> Result<&Principal, wit::ProjectError> {
        self.user.ok_or_else(|| {
            wit::ProjectError::Forbidden(
                "this needs a logged-in user or an API key on a user_auth route".into(),
            )
        })
    }
}

impl wit::Host for ProjectsView<'_> {
    async fn create_project(
        &mut self,
        new: wit::NewProject,
    ) -> Result<wit::Project, wit::ProjectError> {
        let who = self.who()?;
        let new = NewProject {
            name: new.name,
            description: new.description,
            settings: new.settings_json,
            limits: limits(new.limits),
        };
        self.projects
            .create_project(who, new)
            .await
            .map(project)
            .map_err(error)
    }

    async fn get_project(&mut self, id: String) -> Result<wit::Project, wit::ProjectError> {
        let who = self.who()?;
        self.projects
            .get_project(who, &id)
            .await
            .map(project)
            .map_err(error)
    }

    async fn list_projects(
        &mut self,
        q: wit::ProjectQuery,
    ) -> Result<wit::ProjectPage, wit::ProjectError> {
        let who = self.who()?;
        let listing = ProjectListing {
            query: ProjectQuery {
                status: q.status.map(from_project_status),
                created_by: q.created_by,
                fts: None,
                order: match q.sort {
                    wit::ProjectSort::Name => ProjectOrder::Name,
                    wit::ProjectSort::CreatedAt => ProjectOrder::CreatedAt,
                    wit::ProjectSort::UpdatedAt => ProjectOrder::UpdatedAt,
                },
                descending: q.descending,
                offset: q.offset,
                limit: q.limit,
            },
            search: q.search,
        };
        let (items, total) = self
            .projects
            .list_projects(who, listing)
            .await
            .map_err(error)?;
        Ok(wit::ProjectPage {
            items: items.into_iter().map(project).collect(),
            total,
        })
    }

    async fn update_project(
        &mut self,
        id: String,
        c: wit::ProjectChange,
    ) -> Result<wit::Project, wit::ProjectError> {
        let who = self.who()?;
        let change = ProjectChange {
            name: c.name,
            description: c.description,
            status: c.status.map(from_project_status),
            settings: c.settings_json,
            limits: c.limits.map(limits),
        };
        self.projects
            .update_project(who, &id, change)
            .await
            .map(project)
            .map_err(error)
    }

    async fn delete_project(&mut self, id: String) -> Result<i64, wit::ProjectError> {
        let who = self.who()?;
        self.projects.delete_project(who, &id).await.map_err(error)
    }

    async fn clone_project(
        &mut self,
        id: String,
        name: String,
        include_tasks: bool,
        include_settings: bool,
    ) -> Result<wit::Project, wit::ProjectError> {
        let who = self.who()?;
        self.projects
            .clone_project(who, &id, &name, include_tasks, include_settings)
            .await
            .map(project)
            .map_err(error)
    }

    async fn project_analytics(
        &mut self,
        id: String,
        days: u32,
    ) -> Result<wit::Analytics, wit::ProjectError> {
        let who = self.who()?;
        let a = self
            .projects
            .analytics(who, &id, days)
            .await
            .map_err(error)?;
        Ok(wit::Analytics {
            days: a.days,
            created_per_day: a.created_per_day,
            completed_per_day: a.completed_per_day,
            created: a.created,
            completed: a.completed,
            average_duration_ms: a.average_duration_ms,
            median_duration_ms: a.median_duration_ms,
            completion_rate: a.completion_rate,
            on_time_rate: a.on_time_rate,
            users: a
                .users
                .into_iter()
                .map(|u| wit::UserFigures {
                    user_id: u.user_id,
                    user_name: u.user_name,
                    tasks: u.tasks,
                    completed: u.completed,
                    average_duration_ms: u.average_duration_ms,
                })
                .collect(),
        })
    }

    async fn project_activity(
        &mut self,
        id: String,
        limit: u32,
    ) -> Result<Vec<wit::HistoryEntry>, wit::ProjectError> {
        let who = self.who()?;
        let entries = self
            .projects
            .activity(who, &id, limit)
            .await
            .map_err(error)?;
        Ok(entries.into_iter().map(entry).collect())
    }

    async fn create_task(
        &mut self,
        new: wit::NewTask,
    ) -> Result<wit::ProjectTask, wit::ProjectError> {
        let who = self.who()?;
        let new = NewTask {
            project_id: new.project_id,
            title: new.title,
            description: new.description,
            priority: new.priority,
            estimated_duration_secs: new.estimated_duration_secs,
            assigned_to: new.assigned_to,
            tags: new.tags,
            metadata: new.metadata_json,
            depends_on: new.depends_on,
        };
        self.projects
            .create_task(who, new)
            .await
            .map(task)
            .map_err(error)
    }

    async fn get_task(&mut self, id: String) -> Result<wit::ProjectTask, wit::ProjectError> {
        let who = self.who()?;
        self.projects
            .get_task(who, &id)
            .await
            .map(task)
            .map_err(error)
    }

    async fn list_tasks(&mut self, q: wit::TaskQuery) -> Result<wit::TaskPage, wit::ProjectError> {
        let who = self.who()?;
        let listing = TaskListing {
            query: BoardTaskQuery {
                project_id: q.project_id,
                statuses: q.statuses.into_iter().map(from_task_status).collect(),
                assigned_to: q.assigned_to,
                min_priority: q.min_priority,
                tags: q.tags,
                fts: None,
                created_after: q.created_after,
                created_before: q.created_before,
                order: match q.sort {
                    wit::TaskSort::CreatedAt => BoardTaskOrder::CreatedAt,
                    wit::TaskSort::UpdatedAt => BoardTaskOrder::UpdatedAt,
                    wit::TaskSort::Priority => BoardTaskOrder::Priority,
                    wit::TaskSort::Title => BoardTaskOrder::Title,
                    wit::TaskSort::Status => BoardTaskOrder::Status,
                },
                descending: q.descending,
                offset: q.offset,
                limit: q.limit,
            },
            search: q.search,
        };
        let (items, total) = self
            .projects
            .list_tasks(who, listing)
            .await
            .map_err(error)?;
        Ok(wit::TaskPage {
            items: items.into_iter().map(|r| task_of(r, Vec::new())).collect(),
            total,
        })
    }

    async fn update_task(
        &mut self,
        id: String,
        c: wit::TaskChange,
    ) -> Result<wit::ProjectTask, wit::ProjectError> {
        let who = self.who()?;
        let change = TaskChange {
            title: c.title,
            description: c.description,
            status: c.status.map(from_task_status),
            priority: c.priority,
            progress: c.progress,
            estimated_duration_secs: c.estimated_duration_secs,
            assigned_to: c.assigned_to,
            tags: c.tags,
            metadata: c.metadata_json,
        };
        self.projects
            .update_task(who, &id, change)
            .await
            .map(task)
            .map_err(error)
    }

    async fn delete_task(&mut self, id: String) -> Result<i64, wit::ProjectError> {
        let who = self.who()?;
        self.projects.delete_task(who, &id).await.map_err(error)
    }

    async fn bulk(
        &mut self,
        op: wit::BulkOperation,
        ids: Vec<String>,
    ) -> Result<wit::BulkOutcome, wit::ProjectError> {
        let who = self.who()?;
        let op = match op {
            wit::BulkOperation::UpdateStatus(s) => BulkOperation::UpdateStatus(from_task_status(s)),
            wit::BulkOperation::Assign(user) => BulkOperation::Assign(user),
            wit::BulkOperation::AddTags(t) => BulkOperation::AddTags(t),
            wit::BulkOperation::RemoveTags(t) => BulkOperation::RemoveTags(t),
            wit::BulkOperation::Delete => BulkOperation::Delete,
            wit::BulkOperation::SetPriority(p) => BulkOperation::SetPriority(p),
        };
        let outcome = self.projects.bulk(who, op, ids).await.map_err(error)?;
        Ok(wit::BulkOutcome {
            succeeded: outcome.succeeded,
            failed: outcome
                .failed
                .into_iter()
                .map(|(id, e)| wit::BulkFailure {
                    id,
                    error: error(e),
                })
                .collect(),
        })
    }

    async fn task_history(
        &mut self,
        id: String,
    ) -> Result<Vec<wit::HistoryEntry>, wit::ProjectError> {
        let who = self.who()?;
        let entries = self.projects.history(who, &id).await.map_err(error)?;
        Ok(entries.into_iter().map(entry).collect())
    }

    async fn my_statistics(&mut self) -> Result<wit::UserStatistics, wit::ProjectError> {
        let who = self.who()?;
        let c = self.projects.user_counts(who).await.map_err(error)?;
        Ok(wit::UserStatistics {
            tasks_created: c.tasks_created,
            tasks_completed: c.tasks_completed,
            projects_created: c.projects_created,
        })
    }

    async fn execute(
        &mut self,
        id: String,
        o: wit::ExecuteOptions,
    ) -> Result<wit::Queued, wit::ProjectError> {
        let who = self.who()?;
        let options = ExecuteOptions {
            queue: from_queue_name(o.queue),
            timeout_secs: o.timeout_secs,
            retry_attempts: o.retry_attempts,
            backend: o.backend,
        };
        self.queues
            .execute(who, &id, options)
            .await
            .map(queued)
            .map_err(error)
    }

    async fn retry(&mut self, id: String) -> Result<wit::Queued, wit::ProjectError> {
        let who = self.who()?;
        self.queues.retry(who, &id).await.map(queued).map_err(error)
    }

    async fn cancel(
        &mut self,
        id: String,
        reason: Option<String>,
    ) -> Result<wit::ProjectTask, wit::ProjectError> {
        let who = self.who()?;
        self.queues
            .cancel(who, &id, reason)
            .await
            .map(|t| task_of(t, Vec::new()))
            .map_err(error)
    }

    async fn report_queues(&mut self, since: i64) -> Result<wit::QueueReport, wit::ProjectError> {
        let who = self.who()?;
        let (figures, paused) = self.queues.report(who, since).await.map_err(error)?;
        Ok(wit::QueueReport {
            queues: figures
                .queues
                .iter()
                .map(|q| wit::QueueState {
                    name: queue_name(q.name),
                    waiting: q.waiting,
                    running: q.running,
                    completed: q.completed,
                    paused: paused.contains(&q.name),
                })
                .collect(),
            workers: u32::try_from(self.queues.workers()).unwrap_or(u32::MAX),
            completed: figures.completed,
            failed: figures.failed,
            started: figures.started,
            average_run_ms: figures.average_run_ms,
            average_wait_ms: figures.average_wait_ms,
        })
    }

    async fn pause_queues(&mut self, queues: Vec<wit::QueueName>) -> Result<(), wit::ProjectError> {
        let who = self.who()?;
        let queues: Vec<QueueName> = queues.into_iter().map(from_queue_name).collect();
        self.queues.pause(who, &queues).await.map_err(error)
    }

    async fn resume_queues(
        &mut self,
        queues: Vec<wit::QueueName>,
    ) -> Result<(), wit::ProjectError> {
        let who = self.who()?;
        let queues: Vec<QueueName> = queues.into_iter().map(from_queue_name).collect();
        self.queues.resume(who, &queues).await.map_err(error)
    }

    async fn clear_queues(
        &mut self,
        queues: Vec<wit::QueueName>,
        reason: Option<String>,
    ) -> Result<Vec<String>, wit::ProjectError> {
        let who = self.who()?;
        let queues: Vec<QueueName> = queues.into_iter().map(from_queue_name).collect();
        self.queues.clear(who, &queues, reason).await.map_err(error)
    }

    async fn move_to_queue(
        &mut self,
        ids: Vec<String>,
        queue: wit::QueueName,
    ) -> Result<wit::BulkOutcome, wit::ProjectError> {
        let who = self.who()?;
        let results = self
            .queues
            .move_to(who, &ids, from_queue_name(queue))
            .await
            .map_err(error)?;
        Ok(outcome(results))
    }
}
