//! Tasks: runs of a backend's CLI in a workspace, supervised from spawn to exit.
//!
//! A task's output is a log: every output line and every agent event its adapter parses gets
//! the next `seq` of the task and is persisted before anyone hears of it. Subscribers read the
//! log from the store from any `seq` and wait for more, so a late or reconnecting subscriber
//! loses nothing and the host holds no per-subscriber buffers. Reading stops while the log
//! catches up (a bounded channel between the pipes and the log), so memory per task stays
//! bounded however much a child prints.
//!
//! By concern:
//! - this file: the supervisor's public face, admission (per-tenant and global slots) and the
//!   live set;
//! - [`log`](self::log): a task's log, its in-memory tail and subscriptions;
//! - `run`: the run state machine (pending → running → a terminal state, step by step);
//! - `process`: one step's process (environment, sandbox, pipes, proxy, signals);
//! - `warm`: sandbox launchers kept ready ahead of demand, which `process` takes;
//! - [`adapter`]: the narrow trait through which the supervisor reaches backend adapters.

pub mod adapter;
pub mod command;
pub mod egress;
pub mod isolation;
mod lease;
pub mod lines;
mod log;
mod process;
pub mod queue;
mod retention;
mod run;
pub mod sandbox;
mod tail;
mod warm;

pub use crate::config::{StorageConfig, TaskLimits};
pub use adapter::{AdapterFailure, AdapterRun, Adapters};
pub use log::Subscription;

use crate::contract::{PromptRequest, refusal_message};
use crate::metrics::Metrics;
use crate::store::{LogNotifier, LogProgress, OutputQuota, Store, TaskRecord, TaskState, now_ms};
use crate::tenants::TenantId;
use crate::workspaces::{WorkspaceError, Workspaces};
use log::TaskLog;
use process::TaskProxy;
use run::{Step, TaskRun};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, watch};

/// Why a task operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// No such task for this tenant (another tenant's ids land here too).
    #[error("task not found")]
    NotFound,
    /// The workspace is missing or unusable.
    #[error("workspace: {0}")]
    Workspace(#[from] WorkspaceError),
    /// No backend plugin by that name.
    #[error("no backend named {0:?}")]
    UnknownBackend(String),
    /// The adapter refused the request (nothing was spawned).
    #[error("the backend refused the request: {0}")]
    Refused(String),
    /// The adapter itself failed.
    #[error("the backend adapter failed: {0}")]
    Adapter(AdapterFailure),
    /// Storage failed.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<crate::store::StoreError> for TaskError {
    fn from(e: crate::store::StoreError) -> Self {
        TaskError::Internal(e.into())
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct StartTask {
    /// The workspace to run in.
    pub workspace_id: String,
    /// The backend plugin.
    pub backend: String,
    /// Runs of the same backend done first, in order, in the same log; the task fails at the
    /// first of them that does not succeed.
    pub setup: Vec<PromptRequest>,
    /// The prompt and options.
    pub request: PromptRequest,
    /// Overrides the default timeout.
    pub timeout: Option<Duration>,
    /// A directory inside the workspace to run in (relative); the workspace's own when `None`.
    pub subdir: Option<String>,
}

/// A task that is pending or running on this node.
#[derive(Debug)]
struct Live {
    tenant: String,
    workspace_id: String,
    cancel: watch::Sender<bool>,
    progress: watch::Receiver<LogProgress>,
    tail: Arc<Mutex<tail::Tail>>,
}

/// The process supervisor; cheap to clone.
#[derive(Debug, Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    adapters: Arc<dyn Adapters>,
    metrics: Arc<Metrics>,
    store: Arc<dyn Store>,
    /// Announces each append to a task's log to its followers.
    notifier: Arc<dyn LogNotifier>,
    /// This node's id: its tasks' rows name it, and its lease keeps them its own.
    node: String,
    /// Renews the node's lease while the supervisor lives.
    _lease: lease::Lease,
    /// The live nodes, as last read.
    live_nodes: lease::LiveNodes,
    workspaces: Arc<Workspaces>,
    limits: TaskLimits,
    global: Arc<Semaphore>,
    per_tenant: Mutex<HashMap<String, Arc<Semaphore>>>,
    live: Arc<Mutex<HashMap<String, Live>>>,
    tmp_root: PathBuf,
    homes_root: PathBuf,
    /// What each task's sandbox holds (see [`isolation`]).
    isolation: isolation::Isolation,
    /// Who may reach what through the egress proxy, and the model keys per tenant.
    egress: isolation::EgressConfig,
    /// Caps on each tenant's stored output, and retention.
    storage: StorageConfig,
    /// Runs retention in the background while the supervisor lives.
    _retention: Option<retention::Retention>,
}

impl Supervisor {
    /// A supervisor over `store` and `workspaces`, as the node whose id is kept in
    /// `data_dir`. It claims the node's lease (and keeps renewing it), and marks what the
    /// node's previous process left unfinished interrupted first.
    pub async fn new(
        adapters: Arc<dyn Adapters>,
        store: Arc<dyn Store>,
        workspaces: Arc<Workspaces>,
        data_dir: &std::path::Path,
        limits: TaskLimits,
    ) -> anyhow::Result<Supervisor> {
        Supervisor::for_node(adapters, store, workspaces, data_dir, limits, None).await
    }

    /// [`Supervisor::new`] as the node `node` when given (nodes sharing one data directory
    /// cannot keep their ids in it), else as the node whose id `data_dir` keeps.
    pub async fn for_node(
        adapters: Arc<dyn Adapters>,
        store: Arc<dyn Store>,
        workspaces: Arc<Workspaces>,
        data_dir: &std::path::Path,
        limits: TaskLimits,
        node: Option<&str>,
    ) -> anyhow::Result<Supervisor> {
        let node = match node {
            Some(id) => id.to_string(),
            None => lease::node_id(data_dir)?,
        };
        let lease = lease::Lease::claim(
            store.clone(),
            node.clone(),
            std::time::Duration::from_millis(limits.node_lease_ms.max(300)),
        )
        .await?;
        let interrupted = store.interrupt_tasks_of(&node, now_ms()).await?;
        if !interrupted.is_empty() {
            tracing::warn!(
                count = interrupted.len(),
                "tasks left unfinished by the previous process are now interrupted"
            );
        }
        let notifier = store.log_notifier();
        let tmp_root = data_dir.join("tmp");
        std::fs::create_dir_all(&tmp_root)?;
        let homes_root = data_dir.join("homes");
        std::fs::create_dir_all(&homes_root)?;
        let isolation = isolation::Isolation::landlock_only(data_dir);
        Ok(Supervisor {
            inner: Arc::new(Inner {
                adapters,
                metrics: Arc::default(),
                store,
                notifier: notifier.clone(),
                node,
                _lease: lease,
                live_nodes: lease::LiveNodes::new(lease::LIVE_NODES_FRESH_FOR),
                workspaces,
                global: Arc::new(Semaphore::new(limits.max_running.max(1))),
                limits,
                per_tenant: Mutex::new(HashMap::new()),
                live: Arc::new(Mutex::new(HashMap::new())),
                tmp_root: tmp_root.canonicalize()?,
                homes_root: homes_root.canonicalize()?,
                isolation,
                egress: isolation::EgressConfig::default(),
                storage: StorageConfig::default(),
                _retention: None,
            }),
        }
        .hear_cancels())
    }

    fn inner_mut(&mut self) -> &mut Inner {
        Arc::get_mut(&mut self.inner).expect("the supervisor is configured before it is shared")
    }

    /// Start task processes through the launcher at `path` (see [`sandbox`]) with Landlock
    /// and rlimits only, instead of forking this process. Call before the supervisor is
    /// shared.
    pub fn with_launcher(mut self, path: PathBuf) -> Supervisor {
        let data_dir = self
            .inner
            .tmp_root
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default();
        self.inner_mut().isolation = isolation::Isolation::launcher_only(path, &data_dir);
        self
    }

    /// Sandbox tasks as `isolation` found this machine can. Call before the supervisor is
    /// shared.
    pub fn with_isolation(mut self, isolation: isolation::Isolation) -> Supervisor {
        self.inner_mut().isolation = isolation;
        self
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.node
    }

    /// What kind of store the node's rows are in (`sqlite`, `postgres`).
    pub fn store_kind(&self) -> &'static str {
        self.inner.store.store_kind()
    }

    /// The ids of the nodes whose lease holds (this one among them), oldest first, as read
    /// at most half a second ago (`/health` asks on every probe).
    pub async fn live_nodes(&self) -> Result<Vec<String>, TaskError> {
        let store = &self.inner.store;
        self.inner
            .live_nodes
            .get(async {
                let nodes = store.live_nodes(now_ms()).await?;
                Ok(nodes.into_iter().map(|n| n.id).collect())
            })
            .await
    }

    /// Count ended runs in `metrics`. Call before the supervisor is shared.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Supervisor {
        self.inner_mut().metrics = metrics;
        self
    }

    /// Let tasks reach what `egress` allows, with its model keys. Call before the supervisor
    /// is shared.
    pub fn with_egress(mut self, egress: isolation::EgressConfig) -> Supervisor {
        self.inner_mut().egress = egress;
        self
    }

    /// Cap each tenant's stored output and run retention in the background as `storage`
    /// says (without this, the default caps hold and nothing is deleted). Call before the
    /// supervisor is shared.
    pub fn with_storage(mut self, storage: StorageConfig) -> Supervisor {
        let retention = retention::Retention::start(self.inner.store.clone(), storage.clone());
        let inner = self.inner_mut();
        inner.storage = storage;
        inner._retention = retention;
        self
    }

    /// Whether task processes run under Landlock.
    pub fn sandboxed(&self) -> bool {
        self.inner.isolation.landlock()
    }

    /// The isolation level of this node's tasks: `full`, `partial: …` or `off`.
    pub fn isolation_level(&self) -> &str {
        self.inner.isolation.level()
    }

    /// Whether a task is pending or running in the workspace.
    pub fn workspace_busy(&self, workspace_id: &str) -> bool {
        self.inner
            .live
            .lock()
            .unwrap()
            .values()
            .any(|l| l.workspace_id == workspace_id)
    }

    /// Start a task: the adapter builds the command (a refusal spawns nothing), the task is
    /// stored as pending, and it runs once a slot is free.
    pub async fn start(
        &self,
        tenant: &TenantId,
        start: StartTask,
    ) -> Result<TaskRecord, TaskError> {
        let inner = &self.inner;
        // Made first so that the phases of this task's start are marked from here.
        let task_id = uuid::Uuid::new_v4().to_string();
        phase(&task_id, "start");
        let workspace = inner.workspaces.get(tenant, &start.workspace_id).await?;
        // Checked now so that a bad directory is the caller's error, not a failed run.
        if let Some(subdir) = &start.subdir {
            inner
                .workspaces
                .subdir(tenant, &workspace.id, subdir)
                .await?;
        }
        let backend = inner
            .adapters
            .backend(&start.backend)
            .ok_or_else(|| TaskError::UnknownBackend(start.backend.clone()))?;
        let quota = output_quota(&inner.storage, tenant);
        if let Some(quota) = quota {
            // A task started now would only log a marker that its output is not stored.
            let stored = inner.store.stored_output(tenant.as_str()).await?;
            if quota.is_reached(stored) {
                return Err(TaskError::Refused(format!(
                    "storage quota reached: this tenant's tasks store {} log entries and {} \
                     bytes of output, and its quota is {} entries and {} bytes (0 is no cap); \
                     delete workspaces it no longer needs, or wait for retention to remove \
                     old tasks",
                    stored.events, stored.bytes, quota.max_events, quota.max_bytes
                )));
            }
        }
        phase(&task_id, "checked");
        let proxy = TaskProxy::new(inner, tenant, &backend, &task_id)
            .map_err(|e| TaskError::Refused(format!("{e:#}")))?;
        let overrides = proxy.setting_overrides();
        // Every command is built before anything runs: one refusal spawns nothing.
        let mut steps = Vec::with_capacity(start.setup.len() + 1);
        for request in start.setup.into_iter().chain([start.request.clone()]) {
            let spec = inner
                .adapters
                .build_command(&start.backend, tenant, &request, overrides.clone())
                .await
                .map_err(TaskError::Adapter)?
                .map_err(|e| TaskError::Refused(refusal_message(&e)))?;
            steps.push(Step { request, spec });
        }
        let binary = backend.binary.clone();
        phase(&task_id, "built");
        let task = TaskRecord {
            id: task_id,
            tenant: tenant.to_string(),
            workspace_id: workspace.id.clone(),
            backend: start.backend.clone(),
            request: start.request.clone(),
            state: TaskState::Pending,
            created_at: now_ms(),
            started_at: None,
            finished_at: None,
            exit_code: None,
            error: None,
            summary: None,
            last_seq: 0,
            output_lines: 0,
            node: Some(inner.node.clone()),
        };
        inner.store.insert_task(&task).await?;
        phase(&task.id, "stored");
        let (cancel_tx, cancel_rx) = watch::channel(false);
        inner.notifier.open(&task.id);
        let progress_rx = inner
            .notifier
            .follow(&task.id)
            .expect("a log just opened is followed");
        let tail = Arc::new(Mutex::new(tail::Tail::new(1, tail::TAIL_BYTES)));
        inner.live.lock().unwrap().insert(
            task.id.clone(),
            Live {
                tenant: tenant.to_string(),
                workspace_id: workspace.id.clone(),
                cancel: cancel_tx,
                progress: progress_rx,
                tail: tail.clone(),
            },
        );
        let timeout = start.timeout.or_else(|| {
            (inner.limits.default_timeout_ms > 0)
                .then(|| Duration::from_millis(inner.limits.default_timeout_ms))
        });
        let run = TaskRun {
            inner: inner.clone(),
            tenant: tenant.clone(),
            record: task.clone(),
            steps,
            binary,
            timeout,
            subdir: start.subdir,
            proxy,
            log: TaskLog {
                store: inner.store.clone(),
                notifier: inner.notifier.clone(),
                task_id: task.id.clone(),
                next_seq: 1,
                tail,
                quota,
                truncated: false,
            },
        };
        tokio::spawn(run.run(cancel_rx));
        Ok(task)
    }

    /// One of a tenant's tasks.
    pub async fn get(&self, tenant: &TenantId, id: &str) -> Result<TaskRecord, TaskError> {
        self.inner
            .store
            .get_task(tenant.as_str(), id)
            .await?
            .ok_or(TaskError::NotFound)
    }

    /// A tenant's tasks, optionally of one workspace.
    pub async fn list(
        &self,
        tenant: &TenantId,
        workspace: Option<&str>,
    ) -> Result<Vec<TaskRecord>, TaskError> {
        Ok(self
            .inner
            .store
            .list_tasks(tenant.as_str(), workspace)
            .await?)
    }

    /// Cancel a task: TERM to its process group, KILL after the grace period. Idempotent, and
    /// harmless on a finished task. A task another node runs is cancelled by that node, asked
    /// through the store. Returns the task as it is now.
    pub async fn cancel(&self, tenant: &TenantId, id: &str) -> Result<TaskRecord, TaskError> {
        let task = self.get(tenant, id).await?;
        let here = match self.inner.live.lock().unwrap().get(&task.id) {
            Some(live) => {
                live.cancel.send_replace(true);
                true
            }
            None => false,
        };
        if !here && !task.state.is_terminal() {
            self.inner.notifier.request_cancel(&task.id);
        }
        Ok(task)
    }

    /// Cancel the tasks other nodes ask this one to, while the supervisor lives.
    fn hear_cancels(self) -> Supervisor {
        if let Some(mut requests) = self.inner.notifier.cancel_requests() {
            let live = Arc::downgrade(&self.inner.live);
            tokio::spawn(async move {
                while let Some(id) = requests.recv().await {
                    let Some(live) = live.upgrade() else {
                        return;
                    };
                    if let Some(live) = live.lock().unwrap().get(&id) {
                        tracing::info!(task = %id, "cancelled at another node's request");
                        live.cancel.send_replace(true);
                    }
                }
            });
        }
        self
    }

    /// Follow a task's log from `from_seq` (1 is the start): what exists, then what comes,
    /// ending after the task's final event.
    pub async fn subscribe(
        &self,
        tenant: &TenantId,
        id: &str,
        from_seq: u64,
    ) -> Result<Subscription, TaskError> {
        let task = self.get(tenant, id).await?;
        let (progress, tail) = self
            .inner
            .live
            .lock()
            .unwrap()
            .get(&task.id)
            .map(|l| (l.progress.clone(), l.tail.clone()))
            .unzip();
        // A task whose log is written elsewhere (another node) is followed through the
        // notifier alone, and read from the store.
        let progress = progress.or_else(|| self.inner.notifier.follow(&task.id));
        Ok(Subscription::new(
            self.inner.store.clone(),
            task.id,
            from_seq,
            progress,
            tail,
        ))
    }

    /// Whether a task of `tenant` started now would run at once rather than wait for a slot:
    /// fewer than the node's and the tenant's running limits are pending or running. A queue
    /// that feeds the supervisor asks this, so that it hands over work in its own order
    /// instead of lining it up behind the supervisor's.
    pub fn has_room(&self, tenant: &TenantId) -> bool {
        let live = self.inner.live.lock().unwrap();
        let of_tenant = live
            .values()
            .filter(|l| l.tenant == tenant.as_str())
            .count();
        live.len() < self.inner.limits.max_running.max(1)
            && of_tenant < self.inner.limits.max_running_per_tenant.max(1)
    }

    /// The most tasks of one tenant that run at once.
    pub fn tenant_workers(&self) -> usize {
        self.inner.limits.max_running_per_tenant.max(1)
    }

    /// Tasks pending or running now, over all tenants.
    pub fn active(&self) -> usize {
        self.inner.live.lock().unwrap().len()
    }

    /// Wait until one of a tenant's tasks has ended: the id of the first ended one in `ids`
    /// order. Unknown ids (another tenant's included) are `NotFound`.
    pub async fn wait_any(&self, tenant: &TenantId, ids: &[String]) -> Result<String, TaskError> {
        if ids.is_empty() {
            return Err(TaskError::Internal(anyhow::anyhow!("no tasks to wait for")));
        }
        let mut waiting = Vec::with_capacity(ids.len());
        for id in ids {
            let task = self.get(tenant, id).await?;
            if task.state.is_terminal() {
                return Ok(task.id);
            }
            let progress = self
                .inner
                .live
                .lock()
                .unwrap()
                .get(&task.id)
                .map(|l| l.progress.clone());
            match progress {
                // Stored as running but no longer live: it has just ended.
                None => return Ok(task.id),
                Some(progress) => waiting.push((task.id, progress)),
            }
        }
        let ends = waiting.into_iter().map(|(id, mut progress)| {
            Box::pin(async move {
                let _ = progress.wait_for(|p| p.ended).await;
                id
            })
        });
        let (id, _, _) = futures::future::select_all(ends).await;
        Ok(id)
    }

    /// Wait until a task has ended; its final record.
    pub async fn wait(&self, tenant: &TenantId, id: &str) -> Result<TaskRecord, TaskError> {
        let progress = self
            .inner
            .live
            .lock()
            .unwrap()
            .get(id)
            .map(|l| l.progress.clone());
        if let Some(mut progress) = progress {
            let _ = progress.wait_for(|p| p.ended).await;
        }
        self.get(tenant, id).await
    }
}

/// `tenant`'s caps on stored output, if it has any.
fn output_quota(storage: &StorageConfig, tenant: &TenantId) -> Option<OutputQuota> {
    let settings = storage.for_tenant(tenant.as_str());
    let quota = OutputQuota {
        max_events: settings.max_output_events,
        max_bytes: settings.max_output_bytes,
    };
    quota.is_capped().then_some(quota)
}

fn tenant_slots(inner: &Inner, tenant: &str) -> Arc<Semaphore> {
    inner
        .per_tenant
        .lock()
        .unwrap()
        .entry(tenant.to_string())
        .or_insert_with(|| Arc::new(Semaphore::new(inner.limits.max_running_per_tenant.max(1))))
        .clone()
}

/// The tracing target of a task's phases (see [`phase`]).
pub const PHASE_TARGET: &str = "gantry::tasks::phase";

/// Mark that task `task` reached `phase` on its way from admission through its spawn to its
/// end: a trace-level event (target [`PHASE_TARGET`]) for a profiler's subscriber to timestamp
/// (`BENCH_PROFILE_SPAWN` in `benches/tasks.rs` prints the median time to each). Disabled, as
/// it is unless traced, it costs one relaxed load.
pub(crate) fn phase(task: &str, phase: &'static str) {
    tracing::trace!(target: PHASE_TARGET, task, phase);
}
