//! The rows of the Web UI API's board: projects, the tasks planned in them, each task's history
//! of changes, and users' preferences. `crate::projects` owns their rules; this is what the
//! store keeps and how it is asked.

use super::StoreResult;
use std::fmt;

/// Names for an enum's values as stored, with the parse back.
macro_rules! stored_names {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every value, in order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name stored and shown.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// The value named `name`.
            pub fn parse(name: &str) -> Option<$name> {
                match name {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

stored_names! {
    /// Where a project is in its life.
    ProjectStatus {
        /// In use.
        Active => "active",
        /// Kept, read-only for people.
        Archived => "archived",
        /// Done.
        Completed => "completed",
    }
}

stored_names! {
    /// Where a board task is in its life.
    BoardTaskStatus {
        /// Made, not asked to run.
        Pending => "pending",
        /// Waiting in its queue.
        Queued => "queued",
        /// Its run is going.
        Running => "running",
        /// Its run succeeded (or a person said so).
        Completed => "completed",
        /// Its run failed.
        Failed => "failed",
        /// Cancelled.
        Cancelled => "cancelled",
        /// Its run took too long.
        TimedOut => "timed_out",
        /// Its node stopped while it ran.
        Interrupted => "interrupted",
    }
}

impl BoardTaskStatus {
    /// Queued or running: a run owns it.
    pub fn is_active(self) -> bool {
        matches!(self, BoardTaskStatus::Queued | BoardTaskStatus::Running)
    }
}

stored_names! {
    /// The queues that feed the supervisor, highest first.
    QueueName {
        /// Started before the others.
        High => "high",
        /// The default.
        Normal => "normal",
        /// Started when nothing else waits.
        Low => "low",
    }
}

stored_names! {
    /// What a history entry records.
    HistoryAction {
        /// The task was made.
        Created => "created",
        /// A field without an action of its own changed.
        Updated => "updated",
        /// Its status changed.
        StatusChanged => "status_changed",
        /// It was (un)assigned.
        Assigned => "assigned",
        /// Its priority changed.
        PriorityChanged => "priority_changed",
        /// Its tags changed.
        TagsChanged => "tags_changed",
        /// Its progress changed.
        ProgressChanged => "progress_changed",
        /// It was deleted.
        Deleted => "deleted",
        /// It was put in a queue to run.
        Executed => "executed",
        /// It was cancelled.
        Cancelled => "cancelled",
        /// It was queued again after a failure.
        Retried => "retried",
    }
}

/// A project row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectRecord {
    /// Its id.
    pub id: String,
    /// The owning tenant.
    pub tenant: String,
    /// Its name.
    pub name: String,
    /// What it is for.
    pub description: Option<String>,
    /// Where it is in its life.
    pub status: ProjectStatus,
    /// The workspace its tasks run in.
    pub workspace_id: String,
    /// The user who made it.
    pub created_by: String,
    /// Creation time, ms since the epoch.
    pub created_at: i64,
    /// Last change, ms since the epoch.
    pub updated_at: i64,
    /// The surface's settings, a JSON object as text.
    pub settings: String,
    /// Tasks it may hold.
    pub max_tasks: Option<u32>,
    /// Tasks of it that may run at once.
    pub max_concurrent_tasks: Option<u32>,
    /// Bytes its workspace may hold.
    pub storage_limit_bytes: Option<u64>,
}

/// Counts over a project's (undeleted) tasks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProjectCounts {
    /// Tasks by status, in [`BoardTaskStatus::ALL`]'s order.
    pub by_status: [u32; 8],
    /// Mean run time of the completed ones that ran, in ms.
    pub average_duration_ms: Option<u64>,
}

impl ProjectCounts {
    /// Tasks with `status`.
    pub fn of(&self, status: BoardTaskStatus) -> u32 {
        let i = BoardTaskStatus::ALL
            .iter()
            .position(|s| *s == status)
            .unwrap_or(0);
        self.by_status[i]
    }

    /// All tasks.
    pub fn total(&self) -> u32 {
        self.by_status.iter().sum()
    }
}

/// How to order a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProjectOrder {
    /// By name.
    Name,
    /// By creation time.
    #[default]
    CreatedAt,
    /// By last change.
    UpdatedAt,
}

/// Which projects to list.
#[derive(Debug, Clone, Default)]
pub struct ProjectQuery {
    /// Only these.
    pub status: Option<ProjectStatus>,
    /// Only those this user made.
    pub created_by: Option<String>,
    /// An FTS5 expression over name and description.
    pub fts: Option<String>,
    /// Order.
    pub order: ProjectOrder,
    /// Descending.
    pub descending: bool,
    /// Skip this many.
    pub offset: u32,
    /// At most this many.
    pub limit: u32,
}

/// A board task row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardTaskRecord {
    /// Its id.
    pub id: String,
    /// The owning tenant.
    pub tenant: String,
    /// Its project.
    pub project_id: String,
    /// Its title.
    pub title: String,
    /// What to do.
    pub description: Option<String>,
    /// Where it is.
    pub status: BoardTaskStatus,
    /// Higher is more important.
    pub priority: i32,
    /// 0 to 100.
    pub progress: u8,
    /// What people expect it to take, in seconds.
    pub estimated_duration_secs: Option<u64>,
    /// Who should do it.
    pub assigned_to: Option<String>,
    /// Who made it.
    pub created_by: String,
    /// Creation time, ms since the epoch.
    pub created_at: i64,
    /// Last change, ms since the epoch.
    pub updated_at: i64,
    /// When its last run started.
    pub started_at: Option<i64>,
    /// When it last ended.
    pub completed_at: Option<i64>,
    /// Its tags, in order, without repeats.
    pub tags: Vec<String>,
    /// The surface's own fields, a JSON object as text.
    pub metadata: String,
    /// How many times it was retried.
    pub retry_attempt: u32,
    /// Bumped by every write; a write that names an older version changes nothing.
    pub version: i64,
    /// The queue it waits in (or last waited in).
    pub queue: Option<QueueName>,
    /// When it joined its queue (its place within the queue).
    pub queued_at: Option<i64>,
    /// The gantry task of its current or last run.
    pub run_id: Option<String>,
    /// Automatic retries left after a failed run.
    pub retries_left: u32,
    /// Its runs' timeout, in seconds.
    pub timeout_secs: Option<u64>,
    /// The backend its runs use, as chosen when it was queued.
    pub backend: Option<String>,
}

/// How to order tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BoardTaskOrder {
    /// By creation time.
    #[default]
    CreatedAt,
    /// By last change.
    UpdatedAt,
    /// By priority.
    Priority,
    /// By title.
    Title,
    /// By status.
    Status,
}

/// Which tasks to list.
#[derive(Debug, Clone, Default)]
pub struct BoardTaskQuery {
    /// Of this project.
    pub project_id: Option<String>,
    /// With any of these statuses (any when empty).
    pub statuses: Vec<BoardTaskStatus>,
    /// Assigned to this user.
    pub assigned_to: Option<String>,
    /// At least this priority.
    pub min_priority: Option<i32>,
    /// Tagged with every one of these.
    pub tags: Vec<String>,
    /// An FTS5 expression over title, description and tags.
    pub fts: Option<String>,
    /// Made after this time (ms since the epoch).
    pub created_after: Option<i64>,
    /// Made before this time.
    pub created_before: Option<i64>,
    /// Order.
    pub order: BoardTaskOrder,
    /// Descending.
    pub descending: bool,
    /// Skip this many.
    pub offset: u32,
    /// At most this many.
    pub limit: u32,
}

/// One change of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRecord {
    /// Its id.
    pub id: String,
    /// The task's tenant.
    pub tenant: String,
    /// The task.
    pub task_id: String,
    /// The task's project.
    pub project_id: String,
    /// When, ms since the epoch.
    pub at: i64,
    /// What happened.
    pub action: HistoryAction,
    /// The field that changed.
    pub field: Option<String>,
    /// Its value before, as JSON.
    pub old_value: Option<String>,
    /// Its value after, as JSON.
    pub new_value: Option<String>,
    /// Who (`system` for gantry).
    pub user_id: String,
    /// Their name at the time.
    pub user_name: String,
    /// Why, when given.
    pub note: Option<String>,
}

/// A history entry with the task's title now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryView {
    /// The entry.
    pub entry: HistoryRecord,
    /// The task's title.
    pub task_title: String,
}

/// A task another waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependencyRecord {
    /// The task waited for.
    pub depends_on: String,
    /// Its title.
    pub title: String,
    /// Its status.
    pub status: BoardTaskStatus,
}

/// What one user did, counted from the rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserCounts {
    /// Tasks they made.
    pub tasks_created: u64,
    /// Of those, completed.
    pub tasks_completed: u64,
    /// Projects they made.
    pub projects_created: u64,
}

/// One queue's tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueCounts {
    /// The queue.
    pub name: QueueName,
    /// Waiting in it now.
    pub waiting: u64,
    /// From it, running now.
    pub running: u64,
    /// From it, completed in the period.
    pub completed: u64,
}

/// Figures of a tenant's queues, from the rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueFigures {
    /// Per queue, in order.
    pub queues: Vec<QueueCounts>,
    /// Runs that completed in the period (from the history).
    pub completed: u64,
    /// Runs that failed or timed out in the period.
    pub failed: u64,
    /// Mean run time of those, in ms.
    pub average_run_ms: Option<f64>,
    /// Mean wait in the queue of the tasks that started in the period, in ms.
    pub average_wait_ms: Option<f64>,
    /// Runs that started in the period.
    pub started: u64,
}

/// Why a board write was refused by what is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoardRefusal {
    /// The project holds its `max_tasks` already.
    TooManyTasks(u32),
    /// A task of it is queued or running.
    InUse,
    /// A row changed since it was read (its version moved on).
    Stale,
}

/// Projects, board tasks and their history, and users' preferences. Every read takes the
/// tenant and skips deleted rows, so no query crosses tenants or sees what was deleted.
#[async_trait::async_trait]
pub trait BoardStore: Send + Sync {
    /// Add a project.
    async fn insert_project(&self, project: &ProjectRecord) -> StoreResult<()>;
    /// One of a tenant's projects.
    async fn get_project(&self, tenant: &str, id: &str) -> StoreResult<Option<ProjectRecord>>;
    /// A page of a tenant's projects and how many match.
    async fn list_projects(
        &self,
        tenant: &str,
        query: &ProjectQuery,
    ) -> StoreResult<(Vec<ProjectRecord>, u64)>;
    /// Write a project's fields; whether it is there.
    async fn update_project(&self, project: &ProjectRecord) -> StoreResult<bool>;
    /// Mark a project and its tasks deleted at `at`, unless one of its tasks is active.
    async fn delete_project(
        &self,
        tenant: &str,
        id: &str,
        at: i64,
    ) -> StoreResult<Result<bool, BoardRefusal>>;
    /// Counts over each project's tasks.
    async fn project_counts(
        &self,
        tenant: &str,
        ids: &[String],
    ) -> StoreResult<Vec<(String, ProjectCounts)>>;
    /// Add a task, its dependencies and its `created` entry in one transaction, unless its
    /// project would hold more than `max_tasks`.
    async fn insert_board_task(
        &self,
        task: &BoardTaskRecord,
        depends_on: &[String],
        created: &HistoryRecord,
        max_tasks: Option<u32>,
    ) -> StoreResult<Result<(), BoardRefusal>>;
    /// One of a tenant's tasks.
    async fn get_board_task(&self, tenant: &str, id: &str) -> StoreResult<Option<BoardTaskRecord>>;
    /// A page of a tenant's tasks and how many match.
    async fn list_board_tasks(
        &self,
        tenant: &str,
        query: &BoardTaskQuery,
    ) -> StoreResult<(Vec<BoardTaskRecord>, u64)>;
    /// Write a task (whose `version` is the one read) and its history entries in one
    /// transaction; the stored version becomes `version + 1`. [`BoardRefusal::Stale`] when
    /// the stored version is another (nothing is written).
    async fn update_board_task(
        &self,
        task: &BoardTaskRecord,
        history: &[HistoryRecord],
    ) -> StoreResult<Result<(), BoardRefusal>>;
    /// Mark a task deleted, with its entry, unless it is active or stale.
    async fn delete_board_task(
        &self,
        task: &BoardTaskRecord,
        at: i64,
        entry: &HistoryRecord,
    ) -> StoreResult<Result<(), BoardRefusal>>;
    /// What a task waits for.
    async fn board_task_dependencies(
        &self,
        tenant: &str,
        id: &str,
    ) -> StoreResult<Vec<DependencyRecord>>;
    /// A task's history, oldest first (kept after it is deleted).
    async fn board_task_history(&self, tenant: &str, id: &str) -> StoreResult<Vec<HistoryView>>;
    /// The latest entries over a project's tasks, newest first.
    async fn project_activity(
        &self,
        tenant: &str,
        project_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<HistoryView>>;
    /// What a user made and completed.
    async fn user_counts(&self, tenant: &str, user_id: &str) -> StoreResult<UserCounts>;
    /// Queued tasks of every tenant that may start now — their queue is not paused and every
    /// task they wait for has completed (or was deleted) — at most `per_project` of each
    /// project, in queue order: high, normal, low, then first queued first.
    async fn startable_board_tasks(&self, per_project: u32) -> StoreResult<Vec<BoardTaskRecord>>;
    /// A project's running tasks.
    async fn running_in_project(&self, tenant: &str, project_id: &str) -> StoreResult<u32>;
    /// Every tenant's undeleted tasks with `status`.
    async fn board_tasks_with_status(
        &self,
        status: BoardTaskStatus,
    ) -> StoreResult<Vec<BoardTaskRecord>>;
    /// Pause or resume one of a tenant's queues.
    async fn set_queue_paused(
        &self,
        tenant: &str,
        queue: QueueName,
        paused: bool,
    ) -> StoreResult<()>;
    /// How many of a tenant's tasks are queued.
    async fn queued_count(&self, tenant: &str) -> StoreResult<u64>;
    /// A tenant's paused queues.
    async fn paused_queues(&self, tenant: &str) -> StoreResult<Vec<QueueName>>;
    /// How many of the tenant's queued tasks start before `task` (queued now).
    async fn queue_position(&self, task: &BoardTaskRecord) -> StoreResult<u64>;
    /// A tenant's queue figures: waiting and running now, and what ended or started since
    /// `since` (ms since the epoch).
    async fn queue_figures(&self, tenant: &str, since: i64) -> StoreResult<QueueFigures>;
}
