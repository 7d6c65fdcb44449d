//! Projects and the tasks planned in them: the board of the Web UI API. This module owns their
//! rules — who may read and change them, what a valid field is, which changes go into a task's
//! history, how a search query is read — over the rows of [`crate::store::BoardStore`]. Each
//! project owns a workspace ([`Workspaces`]) where its tasks run.
//!
//! Every call takes the calling [`Principal`]: it acts as that user's tenant, so another
//! tenant's ids behave exactly like unknown ones, and its permissions are checked here (reads
//! need `read`, changes `write`), not left to the component that calls.

pub mod events;
mod restore;
pub mod search;

pub use restore::{StatusRestore, TaskRestore, status_after_last_execution, status_at};

use crate::events::{EventBus, EventKind};
use crate::store::{
    BoardRefusal, BoardTaskOrder, BoardTaskQuery, BoardTaskRecord, BoardTaskStatus,
    DependencyRecord, HistoryAction, HistoryRecord, HistoryView, ProjectCounts, ProjectQuery,
    ProjectRecord, ProjectStatus, Store, StoreError, UserCounts, now_ms,
};
use crate::tenants::TenantId;
use crate::users::{Denied, Permission, Principal};
use crate::workspaces::{WorkspaceError, Workspaces};
use serde_json::Value;
use std::sync::Arc;

/// The longest project name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// The longest task title, in characters.
pub const MAX_TITLE_CHARS: usize = 500;
/// The longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 10_000;
/// Tags on one task, and the longest tag.
pub const MAX_TAGS: usize = 20;
/// The longest tag, in characters.
pub const MAX_TAG_CHARS: usize = 50;
/// The largest `settings` or `metadata` object, in bytes of JSON.
pub const MAX_JSON_BYTES: usize = 16 * 1024;
/// Task priorities: 0 (least) to 100.
pub const PRIORITIES: std::ops::RangeInclusive<i32> = 0..=100;
/// Tasks one task may wait for.
pub const MAX_DEPENDENCIES: usize = 20;
/// Ids one bulk operation takes.
pub const MAX_BULK_IDS: usize = 100;
/// The longest page.
pub const MAX_PAGE: u32 = 100;
/// How often a write that lost a race with another is tried again.
const STALE_RETRIES: usize = 5;

/// The fields a task search may name.
pub const TASK_SEARCH_FIELDS: &[&str] = &["title", "description", "tags"];
/// The fields a project search may name.
pub const PROJECT_SEARCH_FIELDS: &[&str] = &["name", "description"];

/// Why a board operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    /// No such project for this tenant (or it was deleted).
    #[error("project not found")]
    ProjectNotFound,
    /// No such task for this tenant (or it was deleted).
    #[error("task not found")]
    TaskNotFound,
    /// The caller lacks a permission.
    #[error("{0}")]
    Forbidden(String),
    /// A field is wrong.
    #[error("{field}: {issue}")]
    Invalid {
        /// The field, as the request names it.
        field: &'static str,
        /// What is wrong with it.
        issue: String,
    },
    /// The search query does not parse.
    #[error("bad search: {0}")]
    BadSearch(String),
    /// It cannot be removed now.
    #[error("{0}")]
    InUse(String),
    /// A project's limits refuse it.
    #[error("{0}")]
    LimitExceeded(String),
    /// The task is queued or running.
    #[error("the task is queued or running")]
    AlreadyRunning,
    /// The tenant's queues hold their maximum of tasks.
    #[error("the queues hold their maximum of {0} tasks")]
    QueueFull(u32),
    /// Storage failed.
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl From<Denied> for ProjectError {
    fn from(e: Denied) -> Self {
        ProjectError::Forbidden(e.to_string())
    }
}

impl From<StoreError> for ProjectError {
    fn from(e: StoreError) -> Self {
        ProjectError::Internal(e.into())
    }
}

impl From<WorkspaceError> for ProjectError {
    fn from(e: WorkspaceError) -> Self {
        match e {
            WorkspaceError::BadName(issue) => invalid("name", issue),
            other => ProjectError::Internal(other.into()),
        }
    }
}

fn invalid(field: &'static str, issue: impl Into<String>) -> ProjectError {
    ProjectError::Invalid {
        field,
        issue: issue.into(),
    }
}

/// A project with the counts over its tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    /// Its row.
    pub record: ProjectRecord,
    /// Its tasks, counted.
    pub counts: ProjectCounts,
}

/// A task with what it waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardTask {
    /// Its row.
    pub record: BoardTaskRecord,
    /// The tasks it waits for.
    pub dependencies: Vec<DependencyRecord>,
}

/// A project's caps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Tasks it may hold.
    pub max_tasks: Option<u32>,
    /// Tasks that may run at once.
    pub max_concurrent_tasks: Option<u32>,
    /// Bytes its workspace may hold.
    pub storage_limit_bytes: Option<u64>,
}

/// A project to make.
#[derive(Debug, Clone, Default)]
pub struct NewProject {
    /// Its name.
    pub name: String,
    /// What it is for.
    pub description: Option<String>,
    /// Its settings (a JSON object).
    pub settings: Option<String>,
    /// Its caps.
    pub limits: Limits,
}

/// What to change of a project.
#[derive(Debug, Clone, Default)]
pub struct ProjectChange {
    /// A new name.
    pub name: Option<String>,
    /// A new description, or none.
    pub description: Option<Option<String>>,
    /// A new status.
    pub status: Option<ProjectStatus>,
    /// New settings.
    pub settings: Option<String>,
    /// New caps.
    pub limits: Option<Limits>,
}

/// Which projects to list; `search` in the search syntax.
#[derive(Debug, Clone, Default)]
pub struct ProjectListing {
    /// The filters, order and page (its `fts` is ignored).
    pub query: ProjectQuery,
    /// Words in name or description.
    pub search: Option<String>,
}

/// A task to make.
#[derive(Debug, Clone, Default)]
pub struct NewTask {
    /// Its project.
    pub project_id: String,
    /// Its title.
    pub title: String,
    /// What to do.
    pub description: Option<String>,
    /// Its priority.
    pub priority: i32,
    /// What people expect it to take.
    pub estimated_duration_secs: Option<u64>,
    /// Who should do it.
    pub assigned_to: Option<String>,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its metadata (a JSON object).
    pub metadata: Option<String>,
    /// Tasks of the project it waits for.
    pub depends_on: Vec<String>,
}

/// What to change of a task; `Some(None)` clears an optional field.
#[derive(Debug, Clone, Default)]
pub struct TaskChange {
    /// A new title.
    pub title: Option<String>,
    /// A new description.
    pub description: Option<Option<String>>,
    /// A new status (by hand: pending, completed, failed or cancelled).
    pub status: Option<BoardTaskStatus>,
    /// A new priority.
    pub priority: Option<i32>,
    /// New progress.
    pub progress: Option<u8>,
    /// A new estimate.
    pub estimated_duration_secs: Option<Option<u64>>,
    /// A new assignee.
    pub assigned_to: Option<Option<String>>,
    /// New tags.
    pub tags: Option<Vec<String>>,
    /// New metadata.
    pub metadata: Option<String>,
}

/// Which tasks to list; `search` in the search syntax.
#[derive(Debug, Clone, Default)]
pub struct TaskListing {
    /// The filters, order and page (its `fts` is ignored).
    pub query: BoardTaskQuery,
    /// The search query.
    pub search: Option<String>,
}

/// One operation over many tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BulkOperation {
    /// Set each one's status.
    UpdateStatus(BoardTaskStatus),
    /// Assign each one (or unassign).
    Assign(Option<String>),
    /// Add tags to each.
    AddTags(Vec<String>),
    /// Remove tags from each.
    RemoveTags(Vec<String>),
    /// Delete each.
    Delete,
    /// Set each one's priority.
    SetPriority(i32),
}

/// What a bulk operation did, per id.
#[derive(Debug, Default)]
pub struct BulkOutcome {
    /// The ids it changed.
    pub succeeded: Vec<String>,
    /// The ids it did not, and why.
    pub failed: Vec<(String, ProjectError)>,
}

/// The board service.
#[derive(Debug, Clone)]
pub struct Projects {
    store: Arc<dyn Store>,
    workspaces: Arc<Workspaces>,
    events: EventBus,
}

/// A history entry of `task` by the user `user_id` (`user_name` at the time).
pub fn history_entry(
    user_id: &str,
    user_name: &str,
    task: &BoardTaskRecord,
    at: i64,
    action: HistoryAction,
) -> HistoryRecord {
    HistoryRecord {
        id: uuid::Uuid::new_v4().to_string(),
        tenant: task.tenant.clone(),
        task_id: task.id.clone(),
        project_id: task.project_id.clone(),
        at,
        action,
        field: None,
        old_value: None,
        new_value: None,
        user_id: user_id.to_string(),
        user_name: user_name.to_string(),
        note: None,
    }
}

fn text(field: &'static str, value: &str, max: usize) -> Result<String, ProjectError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    check_length(field, trimmed, max)?;
    if trimmed.chars().any(|c| c.is_control()) {
        return Err(invalid(field, "must not hold control characters"));
    }
    Ok(trimmed.to_string())
}

fn check_length(field: &'static str, value: &str, max: usize) -> Result<(), ProjectError> {
    if value.chars().count() > max {
        return Err(invalid(field, format!("must be at most {max} characters")));
    }
    Ok(())
}

/// A description: any text up to the limit (newlines allowed); blank is none.
fn description(value: Option<String>) -> Result<Option<String>, ProjectError> {
    let Some(value) = value else { return Ok(None) };
    check_length("description", &value, MAX_DESCRIPTION_CHARS)?;
    Ok((!value.trim().is_empty()).then_some(value))
}

/// A JSON object as text, compacted; `{}` for none.
fn json_object(field: &'static str, value: Option<String>) -> Result<String, ProjectError> {
    let Some(value) = value else {
        return Ok("{}".into());
    };
    if value.len() > MAX_JSON_BYTES {
        return Err(invalid(
            field,
            format!("must be at most {MAX_JSON_BYTES} bytes of JSON"),
        ));
    }
    match serde_json::from_str::<Value>(&value) {
        Ok(v @ Value::Object(_)) => Ok(v.to_string()),
        Ok(_) => Err(invalid(field, "must be a JSON object")),
        Err(e) => Err(invalid(field, format!("is not JSON: {e}"))),
    }
}

fn priority(value: i32) -> Result<i32, ProjectError> {
    if PRIORITIES.contains(&value) {
        Ok(value)
    } else {
        Err(invalid(
            "priority",
            format!(
                "must be from {} to {}",
                PRIORITIES.start(),
                PRIORITIES.end()
            ),
        ))
    }
}

fn progress(value: u8) -> Result<u8, ProjectError> {
    if value <= 100 {
        Ok(value)
    } else {
        Err(invalid("progress_percentage", "must be from 0 to 100"))
    }
}

/// Tags trimmed, without repeats, in order.
fn tags(values: Vec<String>) -> Result<Vec<String>, ProjectError> {
    let mut out: Vec<String> = Vec::new();
    for value in values {
        let tag = text("tags", &value, MAX_TAG_CHARS)?;
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    if out.len() > MAX_TAGS {
        return Err(invalid("tags", format!("at most {MAX_TAGS} tags")));
    }
    Ok(out)
}

fn limits(l: Limits) -> Result<Limits, ProjectError> {
    if l.max_tasks == Some(0) {
        return Err(invalid(
            "resource_limits.max_tasks",
            "must be at least 1 (leave it out for no cap)",
        ));
    }
    if l.max_concurrent_tasks == Some(0) {
        return Err(invalid(
            "resource_limits.max_concurrent_tasks",
            "must be at least 1 (leave it out for no cap)",
        ));
    }
    Ok(l)
}

/// A task search, parsed and quoted for FTS5.
fn fts(search: Option<String>, fields: &[&str]) -> Result<Option<String>, ProjectError> {
    let Some(search) = search else {
        return Ok(None);
    };
    search::Query::parse(&search, fields)
        .map(|q| Some(q.to_fts5()))
        .map_err(|e| ProjectError::BadSearch(e.to_string()))
}

fn page(limit: u32) -> Result<u32, ProjectError> {
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(limit)
    } else {
        Err(invalid(
            "page_size",
            format!("must be from 1 to {MAX_PAGE}"),
        ))
    }
}

/// A value as history keeps it (JSON).
fn json<T: serde::Serialize>(value: &T) -> Option<String> {
    serde_json::to_string(value).ok()
}

impl Projects {
    /// The board over `store`, with projects' workspaces in `workspaces`, telling `events`
    /// of each change.
    pub fn new(store: Arc<dyn Store>, workspaces: Arc<Workspaces>, events: EventBus) -> Projects {
        Projects {
            store,
            workspaces,
            events,
        }
    }

    fn tenant(who: &Principal) -> &str {
        who.tenant.as_str()
    }

    /// A history entry by `who`.
    fn entry(
        who: &Principal,
        task: &BoardTaskRecord,
        at: i64,
        action: HistoryAction,
    ) -> HistoryRecord {
        history_entry(&who.id, &who.username, task, at, action)
    }

    async fn project_record(
        &self,
        who: &Principal,
        id: &str,
    ) -> Result<ProjectRecord, ProjectError> {
        self.store
            .get_project(Self::tenant(who), id)
            .await?
            .ok_or(ProjectError::ProjectNotFound)
    }

    async fn with_counts(
        &self,
        tenant: &str,
        records: Vec<ProjectRecord>,
    ) -> Result<Vec<Project>, ProjectError> {
        let ids: Vec<String> = records.iter().map(|p| p.id.clone()).collect();
        let counts = self.store.project_counts(tenant, &ids).await?;
        Ok(records
            .into_iter()
            .zip(counts)
            .map(|(record, (_, counts))| Project { record, counts })
            .collect())
    }

    async fn project(
        &self,
        who: &Principal,
        record: ProjectRecord,
    ) -> Result<Project, ProjectError> {
        let mut all = self.with_counts(Self::tenant(who), vec![record]).await?;
        all.pop()
            .ok_or_else(|| ProjectError::Internal(anyhow::anyhow!("no counts")))
    }

    /// Check that `user` names a user of the caller's tenant (or its service user).
    async fn assignee(
        &self,
        who: &Principal,
        user: Option<String>,
    ) -> Result<Option<String>, ProjectError> {
        let Some(user) = user else { return Ok(None) };
        let tenant = TenantId::new(Self::tenant(who)).map_err(ProjectError::Internal)?;
        if user == Principal::service(&tenant).id
            || self
                .store
                .get_user(Self::tenant(who), &user)
                .await?
                .is_some()
        {
            Ok(Some(user))
        } else {
            Err(invalid("assigned_to", "no such user in this tenant"))
        }
    }

    /// Make a project and its workspace.
    pub async fn create_project(
        &self,
        who: &Principal,
        new: NewProject,
    ) -> Result<Project, ProjectError> {
        who.require(Permission::Write)?;
        let name = text("name", &new.name, MAX_NAME_CHARS)?;
        let description = description(new.description)?;
        let settings = json_object("settings", new.settings)?;
        let limits = limits(new.limits)?;
        let workspace = self.workspaces.create(&who.tenant, &name).await?;
        let now = now_ms();
        let record = ProjectRecord {
            id: uuid::Uuid::new_v4().to_string(),
            tenant: who.tenant.to_string(),
            name,
            description,
            status: ProjectStatus::Active,
            workspace_id: workspace.id,
            created_by: who.id.clone(),
            created_at: now,
            updated_at: now,
            settings,
            max_tasks: limits.max_tasks,
            max_concurrent_tasks: limits.max_concurrent_tasks,
            storage_limit_bytes: limits.storage_limit_bytes,
        };
        self.store.insert_project(&record).await?;
        self.events
            .announce(
                &who.tenant,
                events::project_event(EventKind::ProjectCreated, &record, false),
            )
            .await;
        Ok(Project {
            record,
            counts: ProjectCounts::default(),
        })
    }

    /// One of the caller's projects.
    pub async fn get_project(&self, who: &Principal, id: &str) -> Result<Project, ProjectError> {
        who.require(Permission::Read)?;
        let record = self.project_record(who, id).await?;
        self.project(who, record).await
    }

    /// A page of the caller's projects and how many match.
    pub async fn list_projects(
        &self,
        who: &Principal,
        listing: ProjectListing,
    ) -> Result<(Vec<Project>, u64), ProjectError> {
        who.require(Permission::Read)?;
        let mut query = listing.query;
        query.limit = page(query.limit)?;
        query.fts = fts(listing.search, PROJECT_SEARCH_FIELDS)?;
        let (records, total) = self.store.list_projects(Self::tenant(who), &query).await?;
        Ok((self.with_counts(Self::tenant(who), records).await?, total))
    }

    /// Change a project.
    pub async fn update_project(
        &self,
        who: &Principal,
        id: &str,
        change: ProjectChange,
    ) -> Result<Project, ProjectError> {
        who.require(Permission::Write)?;
        let mut record = self.project_record(who, id).await?;
        if let Some(name) = change.name {
            record.name = text("name", &name, MAX_NAME_CHARS)?;
        }
        if let Some(d) = change.description {
            record.description = description(d)?;
        }
        if let Some(status) = change.status {
            record.status = status;
        }
        if let Some(settings) = change.settings {
            record.settings = json_object("settings", Some(settings))?;
        }
        if let Some(l) = change.limits {
            let l = limits(l)?;
            record.max_tasks = l.max_tasks;
            record.max_concurrent_tasks = l.max_concurrent_tasks;
            record.storage_limit_bytes = l.storage_limit_bytes;
        }
        record.updated_at = now_ms();
        if !self.store.update_project(&record).await? {
            return Err(ProjectError::ProjectNotFound);
        }
        self.events
            .announce(
                &who.tenant,
                events::project_event(EventKind::ProjectUpdated, &record, false),
            )
            .await;
        self.project(who, record).await
    }

    /// Delete a project (softly); when.
    pub async fn delete_project(&self, who: &Principal, id: &str) -> Result<i64, ProjectError> {
        who.require(Permission::Write)?;
        let mut record = self.project_record(who, id).await?;
        let at = now_ms();
        match self.store.delete_project(Self::tenant(who), id, at).await? {
            Ok(true) => {
                record.updated_at = at;
                self.events
                    .announce(
                        &who.tenant,
                        events::project_event(EventKind::ProjectUpdated, &record, true),
                    )
                    .await;
                Ok(at)
            }
            Ok(false) => Err(ProjectError::ProjectNotFound),
            Err(_) => Err(ProjectError::InUse(
                "a task of the project is queued or running; cancel it first".into(),
            )),
        }
    }

    /// A copy of a project named `name`: its workspace's files, and its settings and tasks
    /// when asked.
    pub async fn clone_project(
        &self,
        who: &Principal,
        id: &str,
        name: &str,
        include_tasks: bool,
        include_settings: bool,
    ) -> Result<Project, ProjectError> {
        who.require(Permission::Write)?;
        let source = self.project_record(who, id).await?;
        let new = NewProject {
            name: name.to_string(),
            description: source.description.clone(),
            settings: include_settings.then(|| source.settings.clone()),
            limits: if include_settings {
                Limits {
                    max_tasks: source.max_tasks,
                    max_concurrent_tasks: source.max_concurrent_tasks,
                    storage_limit_bytes: source.storage_limit_bytes,
                }
            } else {
                Limits::default()
            },
        };
        let copy = self.create_project(who, new).await?;
        match self
            .workspaces
            .copy_files(&who.tenant, &source.workspace_id, &copy.record.workspace_id)
            .await
        {
            Ok(_) => {}
            // The source's workspace was deleted through another API: there are no files to
            // copy, and the copy is a project like any new one.
            Err(WorkspaceError::NotFound) => {
                tracing::info!(project = %source.id, "cloning a project whose workspace is gone");
            }
            Err(e) => return Err(e.into()),
        }
        if include_tasks {
            let mut offset = 0;
            loop {
                let query = BoardTaskQuery {
                    project_id: Some(source.id.clone()),
                    order: BoardTaskOrder::CreatedAt,
                    offset,
                    limit: MAX_PAGE,
                    ..BoardTaskQuery::default()
                };
                let (tasks, _) = self
                    .store
                    .list_board_tasks(Self::tenant(who), &query)
                    .await?;
                for task in &tasks {
                    let new = NewTask {
                        project_id: copy.record.id.clone(),
                        title: task.title.clone(),
                        description: task.description.clone(),
                        priority: task.priority,
                        estimated_duration_secs: task.estimated_duration_secs,
                        assigned_to: task.assigned_to.clone(),
                        tags: task.tags.clone(),
                        metadata: Some(task.metadata.clone()),
                        depends_on: Vec::new(),
                    };
                    self.create_task(who, new).await?;
                }
                if tasks.len() < MAX_PAGE as usize {
                    break;
                }
                offset += MAX_PAGE;
            }
        }
        self.get_project(who, &copy.record.id).await
    }

    /// The latest changes to a project's tasks, newest first.
    pub async fn activity(
        &self,
        who: &Principal,
        id: &str,
        limit: u32,
    ) -> Result<Vec<HistoryView>, ProjectError> {
        who.require(Permission::Read)?;
        self.project_record(who, id).await?;
        Ok(self
            .store
            .project_activity(Self::tenant(who), id, limit.min(MAX_PAGE))
            .await?)
    }

    /// Make a task in one of the caller's projects.
    pub async fn create_task(
        &self,
        who: &Principal,
        new: NewTask,
    ) -> Result<BoardTask, ProjectError> {
        who.require(Permission::Write)?;
        let project = self
            .project_record(who, &new.project_id)
            .await
            .map_err(|e| match e {
                ProjectError::ProjectNotFound => invalid("project_id", "no such project"),
                other => other,
            })?;
        let title = text("title", &new.title, MAX_TITLE_CHARS)?;
        let description = description(new.description)?;
        let priority = priority(new.priority)?;
        let tags = tags(new.tags)?;
        let metadata = json_object("metadata", new.metadata)?;
        let assigned_to = self.assignee(who, new.assigned_to).await?;
        if new.depends_on.len() > MAX_DEPENDENCIES {
            return Err(invalid(
                "dependencies",
                format!("at most {MAX_DEPENDENCIES} tasks"),
            ));
        }
        let mut depends_on: Vec<String> = Vec::new();
        for dep in new.depends_on {
            match self.store.get_board_task(Self::tenant(who), &dep).await? {
                Some(t) if t.project_id == project.id => {
                    if !depends_on.contains(&t.id) {
                        depends_on.push(t.id);
                    }
                }
                _ => {
                    return Err(invalid(
                        "dependencies",
                        format!("{dep:?} is not a task of this project"),
                    ));
                }
            }
        }
        let now = now_ms();
        let record = BoardTaskRecord {
            id: uuid::Uuid::new_v4().to_string(),
            tenant: who.tenant.to_string(),
            project_id: project.id.clone(),
            title,
            description,
            status: BoardTaskStatus::Pending,
            priority,
            progress: 0,
            estimated_duration_secs: new.estimated_duration_secs,
            assigned_to,
            created_by: who.id.clone(),
            created_at: now,
            updated_at: now,
            started_at: None,
            completed_at: None,
            tags,
            metadata,
            retry_attempt: 0,
            version: 0,
            queue: None,
            queued_at: None,
            run_id: None,
            retries_left: 0,
            timeout_secs: None,
            backend: None,
        };
        let mut created = Self::entry(who, &record, now, HistoryAction::Created);
        created.new_value = json(&serde_json::json!({
            "title": record.title,
            "status": record.status.as_str(),
            "priority": record.priority,
        }));
        match self
            .store
            .insert_board_task(&record, &depends_on, &created, project.max_tasks)
            .await?
        {
            Ok(()) => {
                self.events
                    .announce(
                        &who.tenant,
                        events::task_event(EventKind::TaskCreated, &record, false, None),
                    )
                    .await;
            }
            Err(BoardRefusal::TooManyTasks(max)) => {
                return Err(ProjectError::LimitExceeded(format!(
                    "the project holds its maximum of {max} tasks"
                )));
            }
            Err(other) => {
                return Err(ProjectError::Internal(anyhow::anyhow!(
                    "inserting a task: {other:?}"
                )));
            }
        }
        self.get_task(who, &record.id).await
    }

    async fn task_record(
        &self,
        who: &Principal,
        id: &str,
    ) -> Result<BoardTaskRecord, ProjectError> {
        self.store
            .get_board_task(Self::tenant(who), id)
            .await?
            .ok_or(ProjectError::TaskNotFound)
    }

    /// One of the caller's tasks, with what it waits for.
    pub async fn get_task(&self, who: &Principal, id: &str) -> Result<BoardTask, ProjectError> {
        who.require(Permission::Read)?;
        let record = self.task_record(who, id).await?;
        let dependencies = self
            .store
            .board_task_dependencies(Self::tenant(who), id)
            .await?;
        Ok(BoardTask {
            record,
            dependencies,
        })
    }

    /// A page of the caller's tasks and how many match.
    pub async fn list_tasks(
        &self,
        who: &Principal,
        listing: TaskListing,
    ) -> Result<(Vec<BoardTaskRecord>, u64), ProjectError> {
        who.require(Permission::Read)?;
        let mut query = listing.query;
        query.limit = page(query.limit)?;
        query.fts = fts(listing.search, TASK_SEARCH_FIELDS)?;
        if let Some(project) = &query.project_id {
            self.project_record(who, project).await?;
        }
        Ok(self
            .store
            .list_board_tasks(Self::tenant(who), &query)
            .await?)
    }

    /// Apply `change` to a task read now, with its history; tried again when another write
    /// got there first.
    pub async fn update_task(
        &self,
        who: &Principal,
        id: &str,
        change: TaskChange,
    ) -> Result<BoardTask, ProjectError> {
        who.require(Permission::Write)?;
        // Checked once, before the store is asked: the values do not depend on the row.
        let title = change
            .title
            .as_deref()
            .map(|t| text("title", t, MAX_TITLE_CHARS))
            .transpose()?;
        let desc = change.description.clone().map(description).transpose()?;
        let prio = change.priority.map(priority).transpose()?;
        let prog = change.progress.map(progress).transpose()?;
        let new_tags = change.tags.clone().map(tags).transpose()?;
        let metadata = change
            .metadata
            .clone()
            .map(|m| json_object("metadata", Some(m)))
            .transpose()?;
        let assignee = match change.assigned_to.clone() {
            Some(a) => Some(self.assignee(who, a).await?),
            None => None,
        };
        if let Some(status) = change.status {
            manual_status(status)?;
        }
        for _ in 0..STALE_RETRIES {
            let before = self.task_record(who, id).await?;
            let mut after = before.clone();
            if let Some(t) = &title {
                after.title = t.clone();
            }
            if let Some(d) = &desc {
                after.description = d.clone();
            }
            if let Some(p) = prio {
                after.priority = p;
            }
            if let Some(p) = prog {
                after.progress = p;
            }
            if let Some(e) = change.estimated_duration_secs {
                after.estimated_duration_secs = e;
            }
            if let Some(a) = &assignee {
                after.assigned_to = a.clone();
            }
            if let Some(t) = &new_tags {
                after.tags = t.clone();
            }
            if let Some(m) = &metadata {
                after.metadata = m.clone();
            }
            let now = now_ms();
            if let Some(status) = change.status {
                set_status_by_hand(&before, &mut after, status, now)?;
            }
            let history = changes(who, &before, &after, now);
            if history.is_empty() {
                return self.get_task(who, id).await;
            }
            after.updated_at = now;
            match self.store.update_board_task(&after, &history).await? {
                Ok(()) => {
                    self.events
                        .announce(
                            &who.tenant,
                            events::task_event(EventKind::TaskUpdated, &after, false, None),
                        )
                        .await;
                    return self.get_task(who, id).await;
                }
                Err(BoardRefusal::Stale) => continue,
                Err(other) => {
                    return Err(ProjectError::Internal(anyhow::anyhow!(
                        "updating a task: {other:?}"
                    )));
                }
            }
        }
        Err(ProjectError::Internal(anyhow::anyhow!(
            "the task kept changing under this update"
        )))
    }

    /// Delete a task (softly; its history stays); when.
    pub async fn delete_task(&self, who: &Principal, id: &str) -> Result<i64, ProjectError> {
        who.require(Permission::Write)?;
        for _ in 0..STALE_RETRIES {
            let task = self.task_record(who, id).await?;
            if task.status.is_active() {
                return Err(ProjectError::AlreadyRunning);
            }
            let at = now_ms();
            let entry = Self::entry(who, &task, at, HistoryAction::Deleted);
            match self.store.delete_board_task(&task, at, &entry).await? {
                Ok(()) => {
                    let mut gone = task;
                    gone.updated_at = at;
                    self.events
                        .announce(
                            &who.tenant,
                            events::task_event(EventKind::TaskUpdated, &gone, true, None),
                        )
                        .await;
                    return Ok(at);
                }
                Err(BoardRefusal::InUse) => return Err(ProjectError::AlreadyRunning),
                Err(_) => continue,
            }
        }
        Err(ProjectError::Internal(anyhow::anyhow!(
            "the task kept changing under this delete"
        )))
    }

    /// Apply one operation to each of `ids` on its own.
    pub async fn bulk(
        &self,
        who: &Principal,
        operation: BulkOperation,
        ids: Vec<String>,
    ) -> Result<BulkOutcome, ProjectError> {
        who.require(Permission::Write)?;
        if ids.is_empty() || ids.len() > MAX_BULK_IDS {
            return Err(invalid(
                "task_ids",
                format!("must name 1 to {MAX_BULK_IDS} tasks"),
            ));
        }
        let mut outcome = BulkOutcome::default();
        let mut seen: Vec<&String> = Vec::new();
        for id in &ids {
            if seen.contains(&id) {
                continue;
            }
            seen.push(id);
            let result = match &operation {
                BulkOperation::Delete => self.delete_task(who, id).await.map(|_| ()),
                op => {
                    let change = match op {
                        BulkOperation::UpdateStatus(s) => TaskChange {
                            status: Some(*s),
                            ..TaskChange::default()
                        },
                        BulkOperation::Assign(user) => TaskChange {
                            assigned_to: Some(user.clone()),
                            ..TaskChange::default()
                        },
                        BulkOperation::SetPriority(p) => TaskChange {
                            priority: Some(*p),
                            ..TaskChange::default()
                        },
                        BulkOperation::AddTags(add) => match self.task_record(who, id).await {
                            Ok(t) => TaskChange {
                                tags: Some(t.tags.into_iter().chain(add.iter().cloned()).collect()),
                                ..TaskChange::default()
                            },
                            Err(e) => {
                                outcome.failed.push((id.clone(), e));
                                continue;
                            }
                        },
                        BulkOperation::RemoveTags(remove) => {
                            match self.task_record(who, id).await {
                                Ok(t) => TaskChange {
                                    tags: Some(
                                        t.tags
                                            .into_iter()
                                            .filter(|t| !remove.contains(t))
                                            .collect(),
                                    ),
                                    ..TaskChange::default()
                                },
                                Err(e) => {
                                    outcome.failed.push((id.clone(), e));
                                    continue;
                                }
                            }
                        }
                        BulkOperation::Delete => unreachable!("handled above"),
                    };
                    self.update_task(who, id, change).await.map(|_| ())
                }
            };
            match result {
                Ok(()) => outcome.succeeded.push(id.clone()),
                Err(e) => outcome.failed.push((id.clone(), e)),
            }
        }
        Ok(outcome)
    }

    /// Every change of one of the caller's tasks, oldest first.
    pub async fn history(
        &self,
        who: &Principal,
        id: &str,
    ) -> Result<Vec<HistoryView>, ProjectError> {
        who.require(Permission::Read)?;
        self.task_record(who, id).await?;
        Ok(self.store.board_task_history(Self::tenant(who), id).await?)
    }

    /// A project's figures over the `days` days that end today (UTC), from its tasks.
    pub async fn analytics(
        &self,
        who: &Principal,
        id: &str,
        days: u32,
    ) -> Result<Analytics, ProjectError> {
        who.require(Permission::Read)?;
        if !(1..=366).contains(&days) {
            return Err(invalid("period", "must be from 1 to 366 days"));
        }
        self.project_record(who, id).await?;
        let mut tasks = Vec::new();
        let mut offset = 0;
        loop {
            let query = BoardTaskQuery {
                project_id: Some(id.to_string()),
                offset,
                limit: MAX_PAGE,
                ..BoardTaskQuery::default()
            };
            let (page, _) = self
                .store
                .list_board_tasks(Self::tenant(who), &query)
                .await?;
            let full = page.len() == MAX_PAGE as usize;
            tasks.extend(page);
            if !full {
                break;
            }
            offset += MAX_PAGE;
        }
        let mut figures = analytics_of(&tasks, days, now_ms());
        for user in &mut figures.users {
            user.user_name = match self
                .store
                .get_user(Self::tenant(who), &user.user_id)
                .await?
            {
                Some(u) => Some(u.username),
                None if user.user_id == who.id => Some(who.username.clone()),
                None => None,
            };
        }
        Ok(figures)
    }

    /// What the caller made and completed.
    pub async fn user_counts(&self, who: &Principal) -> Result<UserCounts, ProjectError> {
        who.require(Permission::Read)?;
        Ok(self.store.user_counts(Self::tenant(who), &who.id).await?)
    }
}

/// A project's figures over a period, computed from its tasks' rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Analytics {
    /// Days in the period, today (UTC) the last.
    pub days: u32,
    /// Tasks made on each day, oldest first.
    pub created_per_day: Vec<u32>,
    /// Tasks completed on each day, oldest first.
    pub completed_per_day: Vec<u32>,
    /// Tasks made in the period.
    pub created: u32,
    /// Tasks completed in the period.
    pub completed: u32,
    /// Mean run time of the runs completed in the period.
    pub average_duration_ms: Option<u64>,
    /// Their median.
    pub median_duration_ms: Option<u64>,
    /// Of the tasks made in the period, the share completed.
    pub completion_rate: Option<f64>,
    /// Of the completed tasks with an estimate, the share that ran within it.
    pub on_time_rate: Option<f64>,
    /// Per user (the assignee, else the maker).
    pub users: Vec<UserFigures>,
}

/// One user's part of a project's period.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserFigures {
    /// The user's id.
    pub user_id: String,
    /// Their name, when known.
    pub user_name: Option<String>,
    /// Tasks of theirs made in the period.
    pub tasks: u32,
    /// Of those, completed.
    pub completed: u32,
    /// Mean run time of their completed ones.
    pub average_duration_ms: Option<u64>,
}

const DAY_MS: i64 = 86_400_000;

/// The figures of `tasks` over the `days` days that end with today (UTC) at `now`.
pub fn analytics_of(tasks: &[BoardTaskRecord], days: u32, now: i64) -> Analytics {
    let first_day = now.div_euclid(DAY_MS) - i64::from(days) + 1;
    let since = first_day * DAY_MS;
    let day_of = |at: i64| usize::try_from(at.div_euclid(DAY_MS) - first_day).ok();
    let mut a = Analytics {
        days,
        created_per_day: vec![0; days as usize],
        completed_per_day: vec![0; days as usize],
        ..Analytics::default()
    };
    let mut durations = Vec::new();
    let (mut estimated, mut on_time) = (0u32, 0u32);
    let mut users: Vec<(UserFigures, Vec<u64>)> = Vec::new();
    for t in tasks {
        let owner = t
            .assigned_to
            .clone()
            .unwrap_or_else(|| t.created_by.clone());
        let slot = match users.iter().position(|(u, _)| u.user_id == owner) {
            Some(i) => i,
            None => {
                users.push((
                    UserFigures {
                        user_id: owner,
                        ..UserFigures::default()
                    },
                    Vec::new(),
                ));
                users.len() - 1
            }
        };
        if t.created_at >= since
            && let Some(day) = day_of(t.created_at).filter(|d| *d < days as usize)
        {
            a.created_per_day[day] += 1;
            a.created += 1;
            users[slot].0.tasks += 1;
            if t.status == BoardTaskStatus::Completed {
                users[slot].0.completed += 1;
            }
        }
        let Some(done) = t.completed_at.filter(|at| *at >= since) else {
            continue;
        };
        if t.status != BoardTaskStatus::Completed {
            continue;
        }
        if let Some(day) = day_of(done).filter(|d| *d < days as usize) {
            a.completed_per_day[day] += 1;
        }
        a.completed += 1;
        if let Some(start) = t.started_at {
            let ran = done.saturating_sub(start).max(0) as u64;
            durations.push(ran);
            users[slot].1.push(ran);
            if let Some(estimate) = t.estimated_duration_secs {
                estimated += 1;
                if ran <= estimate.saturating_mul(1000) {
                    on_time += 1;
                }
            }
        }
    }
    let mean = |v: &[u64]| (!v.is_empty()).then(|| v.iter().sum::<u64>() / v.len() as u64);
    a.average_duration_ms = mean(&durations);
    durations.sort_unstable();
    a.median_duration_ms = (!durations.is_empty()).then(|| {
        let n = durations.len();
        if n % 2 == 1 {
            durations[n / 2]
        } else {
            (durations[n / 2 - 1] + durations[n / 2]) / 2
        }
    });
    a.completion_rate = (a.created > 0).then(|| {
        let done_of_created = users.iter().map(|(u, _)| u.completed).sum::<u32>();
        f64::from(done_of_created) / f64::from(a.created)
    });
    a.on_time_rate = (estimated > 0).then(|| f64::from(on_time) / f64::from(estimated));
    a.users = users
        .into_iter()
        .filter(|(u, runs)| u.tasks > 0 || !runs.is_empty())
        .map(|(mut u, runs)| {
            u.average_duration_ms = mean(&runs);
            u
        })
        .collect();
    a
}

/// Whether a person may set `status` by hand (the others come from runs).
fn manual_status(status: BoardTaskStatus) -> Result<(), ProjectError> {
    match status {
        BoardTaskStatus::Pending
        | BoardTaskStatus::Completed
        | BoardTaskStatus::Failed
        | BoardTaskStatus::Cancelled => Ok(()),
        other => Err(invalid(
            "status",
            format!(
                "{other} is set by running the task (execute); by hand a task may become pending, completed, failed or cancelled"
            ),
        )),
    }
}

/// Set a status by hand: not while a run owns the task.
fn set_status_by_hand(
    before: &BoardTaskRecord,
    after: &mut BoardTaskRecord,
    status: BoardTaskStatus,
    now: i64,
) -> Result<(), ProjectError> {
    if status == before.status {
        return Ok(());
    }
    if before.status.is_active() {
        return Err(ProjectError::AlreadyRunning);
    }
    after.status = status;
    match status {
        BoardTaskStatus::Pending => after.completed_at = None,
        BoardTaskStatus::Completed => {
            after.progress = 100;
            after.completed_at = Some(now);
        }
        _ => after.completed_at = Some(now),
    }
    Ok(())
}

/// The history entries between two versions of a task.
fn changes(
    who: &Principal,
    before: &BoardTaskRecord,
    after: &BoardTaskRecord,
    at: i64,
) -> Vec<HistoryRecord> {
    let mut out = Vec::new();
    let mut push =
        |action: HistoryAction, field: &str, old: Option<String>, new: Option<String>| {
            let mut e = Projects::entry(who, after, at, action);
            e.field = Some(field.to_string());
            e.old_value = old;
            e.new_value = new;
            out.push(e);
        };
    if before.status != after.status {
        push(
            HistoryAction::StatusChanged,
            "status",
            json(&before.status.as_str()),
            json(&after.status.as_str()),
        );
    }
    if before.title != after.title {
        push(
            HistoryAction::Updated,
            "title",
            json(&before.title),
            json(&after.title),
        );
    }
    if before.description != after.description {
        push(
            HistoryAction::Updated,
            "description",
            json(&before.description),
            json(&after.description),
        );
    }
    if before.priority != after.priority {
        push(
            HistoryAction::PriorityChanged,
            "priority",
            json(&before.priority),
            json(&after.priority),
        );
    }
    if before.progress != after.progress {
        push(
            HistoryAction::ProgressChanged,
            "progress_percentage",
            json(&before.progress),
            json(&after.progress),
        );
    }
    if before.estimated_duration_secs != after.estimated_duration_secs {
        push(
            HistoryAction::Updated,
            "estimated_duration",
            json(&before.estimated_duration_secs),
            json(&after.estimated_duration_secs),
        );
    }
    if before.assigned_to != after.assigned_to {
        push(
            HistoryAction::Assigned,
            "assigned_to",
            json(&before.assigned_to),
            json(&after.assigned_to),
        );
    }
    if before.tags != after.tags {
        push(
            HistoryAction::TagsChanged,
            "tags",
            json(&before.tags),
            json(&after.tags),
        );
    }
    if before.metadata != after.metadata {
        push(
            HistoryAction::Updated,
            "metadata",
            Some(before.metadata.clone()),
            Some(after.metadata.clone()),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn board(dir: &std::path::Path) -> Projects {
        let store: Arc<dyn Store> =
            Arc::new(crate::store::Sqlite::open(&dir.join("g.db")).unwrap());
        let workspaces = Arc::new(Workspaces::open(dir, store.clone()).unwrap());
        let events = EventBus::open(store.clone()).await.unwrap();
        Projects::new(store, workspaces, events)
    }

    fn key(tenant: &str) -> Principal {
        Principal::service(&TenantId::new(tenant).unwrap())
    }

    fn reader(tenant: &str) -> Principal {
        Principal {
            permissions: vec![Permission::Read],
            ..key(tenant)
        }
    }

    async fn project(board: &Projects, who: &Principal, name: &str) -> Project {
        board
            .create_project(
                who,
                NewProject {
                    name: name.into(),
                    ..NewProject::default()
                },
            )
            .await
            .unwrap()
    }

    fn task(project: &Project, title: &str) -> NewTask {
        NewTask {
            project_id: project.record.id.clone(),
            title: title.into(),
            priority: 1,
            ..NewTask::default()
        }
    }

    #[tokio::test]
    async fn another_tenants_ids_are_unknown_and_reading_is_not_writing() {
        let dir = tempfile::tempdir().unwrap();
        let board = board(dir.path()).await;
        let (alice, bob) = (key("alice"), key("bob"));
        let p = project(&board, &alice, "site").await;
        let t = board.create_task(&alice, task(&p, "login")).await.unwrap();
        assert!(matches!(
            board.get_project(&bob, &p.record.id).await,
            Err(ProjectError::ProjectNotFound)
        ));
        assert!(matches!(
            board.get_task(&bob, &t.record.id).await,
            Err(ProjectError::TaskNotFound)
        ));
        assert!(matches!(
            board.create_task(&bob, task(&p, "theirs")).await,
            Err(ProjectError::Invalid {
                field: "project_id",
                ..
            })
        ));
        let listing = TaskListing {
            query: BoardTaskQuery {
                limit: 10,
                ..BoardTaskQuery::default()
            },
            search: None,
        };
        assert_eq!(board.list_tasks(&bob, listing.clone()).await.unwrap().1, 0);
        // Alice's reader sees, and cannot change.
        let r = reader("alice");
        assert_eq!(board.list_tasks(&r, listing).await.unwrap().1, 1);
        assert!(matches!(
            board.delete_task(&r, &t.record.id).await,
            Err(ProjectError::Forbidden(_))
        ));
    }

    #[tokio::test]
    async fn every_change_is_in_the_history_with_its_old_and_new_value() {
        let dir = tempfile::tempdir().unwrap();
        let board = board(dir.path()).await;
        let alice = key("alice");
        let p = project(&board, &alice, "site").await;
        let t = board.create_task(&alice, task(&p, "login")).await.unwrap();
        let id = t.record.id.clone();
        board
            .update_task(
                &alice,
                &id,
                TaskChange {
                    priority: Some(5),
                    tags: Some(vec!["auth".into(), "auth".into(), " security ".into()]),
                    status: Some(BoardTaskStatus::Completed),
                    ..TaskChange::default()
                },
            )
            .await
            .unwrap();
        let history = board.history(&alice, &id).await.unwrap();
        let actions: Vec<HistoryAction> = history.iter().map(|h| h.entry.action).collect();
        assert_eq!(
            actions,
            [
                HistoryAction::Created,
                HistoryAction::StatusChanged,
                HistoryAction::PriorityChanged,
                HistoryAction::ProgressChanged,
                HistoryAction::TagsChanged,
            ]
        );
        let prio = &history[2].entry;
        assert_eq!(
            (prio.old_value.as_deref(), prio.new_value.as_deref()),
            (Some("1"), Some("5"))
        );
        assert_eq!(
            history[4].entry.new_value.as_deref(),
            Some(r#"["auth","security"]"#)
        );
        // A change to nothing is no entry; a deleted task keeps its history but is gone.
        board
            .update_task(&alice, &id, TaskChange::default())
            .await
            .unwrap();
        board.delete_task(&alice, &id).await.unwrap();
        assert!(matches!(
            board.get_task(&alice, &id).await,
            Err(ProjectError::TaskNotFound)
        ));
        let kept = board.store.board_task_history("alice", &id).await.unwrap();
        assert_eq!(kept.len(), 6);
        assert_eq!(kept[5].entry.action, HistoryAction::Deleted);
    }

    #[tokio::test]
    async fn max_tasks_holds_and_bad_fields_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let board = board(dir.path()).await;
        let alice = key("alice");
        let p = board
            .create_project(
                &alice,
                NewProject {
                    name: "small".into(),
                    limits: Limits {
                        max_tasks: Some(2),
                        ..Limits::default()
                    },
                    ..NewProject::default()
                },
            )
            .await
            .unwrap();
        board.create_task(&alice, task(&p, "one")).await.unwrap();
        board.create_task(&alice, task(&p, "two")).await.unwrap();
        assert!(matches!(
            board.create_task(&alice, task(&p, "three")).await,
            Err(ProjectError::LimitExceeded(_))
        ));
        let bad = |f: fn(&mut NewTask)| {
            let mut t = task(&p, "x");
            f(&mut t);
            t
        };
        for (new, field) in [
            (bad(|t| t.title = "  ".into()), "title"),
            (bad(|t| t.priority = 101), "priority"),
            (bad(|t| t.metadata = Some("[1]".into())), "metadata"),
            (bad(|t| t.tags = vec![String::new()]), "tags"),
            (
                bad(|t| t.assigned_to = Some("nobody".into())),
                "assigned_to",
            ),
            (bad(|t| t.depends_on = vec!["nope".into()]), "dependencies"),
        ] {
            match board.create_task(&alice, new).await {
                Err(ProjectError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        assert_eq!(
            board
                .get_project(&alice, &p.record.id)
                .await
                .unwrap()
                .counts
                .total(),
            2
        );
    }

    #[tokio::test]
    async fn search_filters_and_sorts() {
        let dir = tempfile::tempdir().unwrap();
        let board = board(dir.path()).await;
        let alice = key("alice");
        let p = project(&board, &alice, "site").await;
        for (title, prio, tags) in [
            ("Implement user authentication", 3, vec!["security"]),
            ("Authentication tests", 1, vec!["tests"]),
            ("Dark theme", 2, vec!["ui"]),
        ] {
            let mut t = task(&p, title);
            t.priority = prio;
            t.tags = tags.into_iter().map(String::from).collect();
            board.create_task(&alice, t).await.unwrap();
        }
        let find = |search: &str| {
            let board = board.clone();
            let alice = alice.clone();
            let search = search.to_string();
            async move {
                let listing = TaskListing {
                    query: BoardTaskQuery {
                        order: BoardTaskOrder::Priority,
                        descending: true,
                        limit: 10,
                        ..BoardTaskQuery::default()
                    },
                    search: Some(search),
                };
                board
                    .list_tasks(&alice, listing)
                    .await
                    .map(|(items, _)| items.into_iter().map(|t| t.title).collect::<Vec<_>>())
            }
        };
        assert_eq!(
            find("auth*").await.unwrap(),
            ["Implement user authentication", "Authentication tests"]
        );
        assert_eq!(
            find("\"user authentication\"").await.unwrap(),
            ["Implement user authentication"]
        );
        assert_eq!(
            find("auth* AND NOT tests").await.unwrap(),
            ["Implement user authentication"]
        );
        assert_eq!(
            find("tags:ui OR tags:tests").await.unwrap(),
            ["Dark theme", "Authentication tests"]
        );
        assert!(matches!(
            find("title:(").await,
            Err(ProjectError::BadSearch(_))
        ));
        assert!(matches!(
            find("owner:me").await,
            Err(ProjectError::BadSearch(_))
        ));
    }

    #[test]
    fn analytics_count_days_durations_and_people() {
        let day = 86_400_000;
        let now = 100 * day + 3_600_000;
        let base = BoardTaskRecord {
            id: String::new(),
            tenant: "alice".into(),
            project_id: "p".into(),
            title: "t".into(),
            description: None,
            status: BoardTaskStatus::Pending,
            priority: 0,
            progress: 0,
            estimated_duration_secs: None,
            assigned_to: None,
            created_by: "ann".into(),
            created_at: 0,
            updated_at: 0,
            started_at: None,
            completed_at: None,
            tags: vec![],
            metadata: "{}".into(),
            retry_attempt: 0,
            version: 0,
            queue: None,
            queued_at: None,
            run_id: None,
            retries_left: 0,
            timeout_secs: None,
            backend: None,
        };
        let done =
            |created: i64, ran_ms: i64, estimate: Option<u64>, who: Option<&str>| BoardTaskRecord {
                status: BoardTaskStatus::Completed,
                created_at: created,
                started_at: Some(created + 1000),
                completed_at: Some(created + 1000 + ran_ms),
                estimated_duration_secs: estimate,
                assigned_to: who.map(String::from),
                ..base.clone()
            };
        let tasks = vec![
            done(now - 1000 * 60, 10_000, Some(60), None),
            done(now - day, 30_000, Some(10), Some("bob")),
            done(now - 2 * day, 20_000, None, None),
            // Made before the period: not counted as made, nor completed (it ended then too).
            done(now - 30 * day, 5_000, None, None),
            BoardTaskRecord {
                created_at: now - 10,
                ..base.clone()
            },
        ];
        let a = analytics_of(&tasks, 7, now);
        assert_eq!(a.created_per_day, [0, 0, 0, 0, 1, 1, 2]);
        assert_eq!(a.completed_per_day, [0, 0, 0, 0, 1, 1, 1]);
        assert_eq!((a.created, a.completed), (4, 3));
        assert_eq!(a.average_duration_ms, Some(20_000));
        assert_eq!(a.median_duration_ms, Some(20_000));
        assert_eq!(a.completion_rate, Some(0.75));
        assert_eq!(a.on_time_rate, Some(0.5));
        let bob = a.users.iter().find(|u| u.user_id == "bob").unwrap();
        assert_eq!(
            (bob.tasks, bob.completed, bob.average_duration_ms),
            (1, 1, Some(30_000))
        );
        let ann = a.users.iter().find(|u| u.user_id == "ann").unwrap();
        assert_eq!((ann.tasks, ann.completed), (3, 2));
        // Nothing in the period: no rates, no durations, zeros per day.
        let empty = analytics_of(&[], 30, now);
        assert_eq!(empty.created_per_day.len(), 30);
        assert_eq!(
            (empty.completion_rate, empty.median_duration_ms),
            (None, None)
        );
    }
}
