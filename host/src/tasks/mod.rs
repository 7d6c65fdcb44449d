//! Tasks: runs of a backend's CLI in a workspace, supervised from spawn to exit.
//!
//! A task's output is a log: every output line and every agent event its adapter parses gets
//! the next `seq` of the task and is persisted before anyone hears of it. Subscribers read the
//! log from the store from any `seq` and wait for more, so a late or reconnecting subscriber
//! loses nothing and the host holds no per-subscriber buffers. Reading stops while the log
//! catches up (a bounded channel between the pipes and the log), so memory per task stays
//! bounded however much a child prints.

pub mod egress;
pub mod isolation;
mod lines;
pub mod sandbox;
mod tail;

use crate::runtime::backend::{
    AgentEvent, ApprovalMode, CommandSpec, OutputStream, PromptRequest, RequestError, SandboxMode,
};
use crate::runtime::{CallFailure, Runtime};
use crate::store::{EventRecord, Store, TaskRecord, TaskState, now_ms};
use crate::tenants::TenantId;
use crate::workspaces::{WorkspaceError, Workspaces};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Semaphore, mpsc, watch};

/// Limits of the supervisor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskLimits {
    /// Tasks running at once, over all tenants.
    pub max_running: usize,
    /// Tasks running at once per tenant; more wait, in order.
    pub max_running_per_tenant: usize,
    /// Between TERM and KILL when a task is cancelled or times out, in ms.
    pub kill_grace_ms: u64,
    /// A task's timeout unless its request sets one, in ms; 0 means none.
    pub default_timeout_ms: u64,
    /// Longer output lines are split into pieces of this many bytes.
    pub max_line_bytes: usize,
}

impl Default for TaskLimits {
    fn default() -> Self {
        TaskLimits {
            max_running: 16,
            max_running_per_tenant: 4,
            kill_grace_ms: 5000,
            default_timeout_ms: 0,
            max_line_bytes: 64 * 1024,
        }
    }
}

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
    #[error("the backend adapter failed: {}", .0.message())]
    Adapter(CallFailure),
    /// Storage failed.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
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

#[derive(Debug, Clone, Copy)]
struct Progress {
    last_seq: u64,
    ended: bool,
}

#[derive(Debug)]
struct Live {
    workspace_id: String,
    cancel: watch::Sender<bool>,
    progress: watch::Receiver<Progress>,
    tail: Arc<Mutex<tail::Tail>>,
}

/// Events a subscription takes from the tail or the store at once.
const READ_BATCH: usize = 1000;

/// The process supervisor; cheap to clone.
#[derive(Debug, Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    runtime: Arc<Runtime>,
    store: Arc<dyn Store>,
    workspaces: Arc<Workspaces>,
    limits: TaskLimits,
    global: Arc<Semaphore>,
    per_tenant: Mutex<HashMap<String, Arc<Semaphore>>>,
    live: Mutex<HashMap<String, Live>>,
    tmp_root: PathBuf,
    homes_root: PathBuf,
    /// What each task's sandbox holds (see [`isolation`]).
    isolation: isolation::Isolation,
    /// Who may reach what through the egress proxy, and the model keys per tenant.
    egress: isolation::EgressConfig,
}

/// Why an adapter refused a request, for the caller.
pub fn refusal_message(e: &RequestError) -> String {
    match e {
        RequestError::Invalid(m) => format!("invalid request: {m}"),
        RequestError::FlagNotAllowed(f) => format!("flag {f} is not allowed"),
        RequestError::Unsupported(m) => format!("unsupported: {m}"),
    }
}

/// The JSON form of a prompt request, as stored with its task.
pub fn request_json(r: &PromptRequest) -> Value {
    json!({
        "prompt": r.prompt,
        "args": r.args,
        "model": r.model,
        "system_prompt": r.system_prompt,
        "max_turns": r.max_turns,
        "approval_mode": match r.approval_mode {
            ApprovalMode::Default => "default",
            ApprovalMode::Auto => "auto",
            ApprovalMode::None => "none",
            ApprovalMode::Always => "always",
        },
        "sandbox_mode": match r.sandbox_mode {
            SandboxMode::Default => "default",
            SandboxMode::ReadOnly => "read-only",
            SandboxMode::Workspace => "workspace",
            SandboxMode::Full => "full",
        },
        "extra_flags": r.extra_flags,
        "resume_session": r.resume_session,
    })
}

/// The JSON form of an agent event: `{"type": ..., ...}`.
pub fn agent_event_json(e: &AgentEvent) -> Value {
    match e {
        AgentEvent::Init(i) => {
            json!({"type": "init", "session_id": i.session_id, "model": i.model})
        }
        AgentEvent::Message(text) => json!({"type": "message", "text": text}),
        AgentEvent::ToolUse(t) => {
            json!({"type": "tool_use", "id": t.id, "name": t.name, "input": t.input})
        }
        AgentEvent::ToolResult(t) => {
            json!({"type": "tool_result", "id": t.id, "output": t.output, "is_error": t.is_error})
        }
        AgentEvent::Usage(u) => json!({
            "type": "usage",
            "input_tokens": u.input_tokens,
            "output_tokens": u.output_tokens,
            "cached_tokens": u.cached_tokens,
            "reasoning_tokens": u.reasoning_tokens,
        }),
        AgentEvent::Error(message) => json!({"type": "error", "message": message}),
        AgentEvent::Done(d) => json!({
            "type": "done",
            "exit_code": d.exit_code,
            "final_text": d.final_text,
            "session_id": d.session_id,
        }),
        AgentEvent::Raw(line) => json!({"type": "raw", "line": line}),
    }
}

impl Supervisor {
    /// A supervisor over `store` and `workspaces`. Tasks a previous process left unfinished are
    /// marked interrupted first.
    pub fn new(
        runtime: Arc<Runtime>,
        store: Arc<dyn Store>,
        workspaces: Arc<Workspaces>,
        data_dir: &std::path::Path,
        limits: TaskLimits,
    ) -> anyhow::Result<Supervisor> {
        let interrupted = store.interrupt_unfinished(now_ms())?;
        if !interrupted.is_empty() {
            tracing::warn!(
                count = interrupted.len(),
                "tasks left unfinished by the previous process are now interrupted"
            );
        }
        let tmp_root = data_dir.join("tmp");
        std::fs::create_dir_all(&tmp_root)?;
        let homes_root = data_dir.join("homes");
        std::fs::create_dir_all(&homes_root)?;
        let isolation = isolation::Isolation::landlock_only(data_dir);
        Ok(Supervisor {
            inner: Arc::new(Inner {
                runtime,
                store,
                workspaces,
                global: Arc::new(Semaphore::new(limits.max_running.max(1))),
                limits,
                per_tenant: Mutex::new(HashMap::new()),
                live: Mutex::new(HashMap::new()),
                tmp_root: tmp_root.canonicalize()?,
                homes_root: homes_root.canonicalize()?,
                isolation,
                egress: isolation::EgressConfig::default(),
            }),
        })
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

    /// Let tasks reach what `egress` allows, with its model keys. Call before the supervisor
    /// is shared.
    pub fn with_egress(mut self, egress: isolation::EgressConfig) -> Supervisor {
        self.inner_mut().egress = egress;
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
        let workspace = inner.workspaces.get(tenant, &start.workspace_id)?;
        // Checked now so that a bad directory is the caller's error, not a failed run.
        if let Some(subdir) = &start.subdir {
            inner.workspaces.subdir(tenant, &workspace.id, subdir)?;
        }
        let backend = inner
            .runtime
            .backend(&start.backend)
            .ok_or_else(|| TaskError::UnknownBackend(start.backend.clone()))?;
        let task_id = uuid::Uuid::new_v4().to_string();
        let proxy = TaskProxy::new(inner, tenant, &backend, &start.backend, &task_id)
            .map_err(|e| TaskError::Refused(format!("{e:#}")))?;
        let overrides = proxy.setting_overrides();
        // Every command is built before anything runs: one refusal spawns nothing.
        let mut steps = Vec::with_capacity(start.setup.len() + 1);
        for request in start.setup.into_iter().chain([start.request.clone()]) {
            let spec = backend
                .build_command_with(tenant, &request, overrides.clone())
                .await
                .map_err(TaskError::Adapter)?
                .map_err(|e| TaskError::Refused(refusal_message(&e)))?;
            steps.push(Step { request, spec });
        }
        let binary = backend.binary().to_string();
        let task = TaskRecord {
            id: task_id,
            tenant: tenant.to_string(),
            workspace_id: workspace.id.clone(),
            backend: start.backend.clone(),
            request: request_json(&start.request),
            state: TaskState::Pending,
            created_at: now_ms(),
            started_at: None,
            finished_at: None,
            exit_code: None,
            error: None,
            summary: None,
            last_seq: 0,
            output_lines: 0,
        };
        inner.store.insert_task(&task)?;
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let (progress_tx, progress_rx) = watch::channel(Progress {
            last_seq: 0,
            ended: false,
        });
        let tail = Arc::new(Mutex::new(tail::Tail::new(1, tail::TAIL_BYTES)));
        inner.live.lock().unwrap().insert(
            task.id.clone(),
            Live {
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
                task_id: task.id.clone(),
                next_seq: 1,
                progress: progress_tx,
                tail,
            },
        };
        tokio::spawn(run.run(cancel_rx));
        Ok(task)
    }

    /// One of a tenant's tasks.
    pub fn get(&self, tenant: &TenantId, id: &str) -> Result<TaskRecord, TaskError> {
        self.inner
            .store
            .get_task(tenant.as_str(), id)?
            .ok_or(TaskError::NotFound)
    }

    /// A tenant's tasks, optionally of one workspace.
    pub fn list(
        &self,
        tenant: &TenantId,
        workspace: Option<&str>,
    ) -> Result<Vec<TaskRecord>, TaskError> {
        Ok(self.inner.store.list_tasks(tenant.as_str(), workspace)?)
    }

    /// Cancel a task: TERM to its process group, KILL after the grace period. Idempotent, and
    /// harmless on a finished task. Returns the task as it is now.
    pub fn cancel(&self, tenant: &TenantId, id: &str) -> Result<TaskRecord, TaskError> {
        let task = self.get(tenant, id)?;
        if let Some(live) = self.inner.live.lock().unwrap().get(&task.id) {
            live.cancel.send_replace(true);
        }
        Ok(task)
    }

    /// Follow a task's log from `from_seq` (1 is the start): what exists, then what comes,
    /// ending after the task's final event.
    pub fn subscribe(
        &self,
        tenant: &TenantId,
        id: &str,
        from_seq: u64,
    ) -> Result<Subscription, TaskError> {
        let task = self.get(tenant, id)?;
        let (progress, tail) = self
            .inner
            .live
            .lock()
            .unwrap()
            .get(&task.id)
            .map(|l| (l.progress.clone(), l.tail.clone()))
            .unzip();
        Ok(Subscription {
            store: self.inner.store.clone(),
            task_id: task.id,
            next_seq: from_seq.max(1),
            progress,
            tail,
            buffer: VecDeque::new(),
        })
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
            let task = self.get(tenant, id)?;
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
        self.get(tenant, id)
    }
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

/// A reader of one task's log: from the running task's in-memory tail while it keeps up,
/// from the store otherwise.
#[derive(Debug)]
pub struct Subscription {
    store: Arc<dyn Store>,
    task_id: String,
    next_seq: u64,
    progress: Option<watch::Receiver<Progress>>,
    tail: Option<Arc<Mutex<tail::Tail>>>,
    buffer: VecDeque<EventRecord>,
}

impl Subscription {
    /// Fill the buffer with what is logged from `next_seq` on; whether anything came.
    fn fill(&mut self) -> anyhow::Result<bool> {
        if let Some(tail) = &self.tail {
            match tail.lock().unwrap().read(self.next_seq, READ_BATCH) {
                tail::Read::Events(events) => {
                    self.buffer.extend(events);
                    return Ok(true);
                }
                // Everything persisted is pushed to the tail before it is announced.
                tail::Read::UpToDate => return Ok(false),
                tail::Read::Behind => {}
            }
        }
        let batch = self
            .store
            .read_events(&self.task_id, self.next_seq, READ_BATCH)?;
        let got = !batch.is_empty();
        self.buffer.extend(batch);
        Ok(got)
    }

    /// The next event if one is already logged, without waiting.
    pub fn next_ready(&mut self) -> anyhow::Result<Option<EventRecord>> {
        if self.buffer.is_empty() {
            self.fill()?;
        }
        Ok(self
            .buffer
            .pop_front()
            .inspect(|e| self.next_seq = e.seq + 1))
    }

    /// The next event, waiting for it if the task still runs; `None` after the last one.
    pub async fn next(&mut self) -> anyhow::Result<Option<EventRecord>> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.next_seq = event.seq + 1;
                return Ok(Some(event));
            }
            if self.fill()? {
                continue;
            }
            let Some(progress) = &mut self.progress else {
                return Ok(None);
            };
            let seen = *progress.borrow_and_update();
            if seen.ended {
                // One more read picks up what was appended before the end was announced.
                self.progress = None;
                continue;
            }
            if seen.last_seq >= self.next_seq {
                continue;
            }
            if progress.changed().await.is_err() {
                self.progress = None;
            }
        }
    }
}

/// Appends to one task's log and announces each append.
struct TaskLog {
    store: Arc<dyn Store>,
    task_id: String,
    next_seq: u64,
    progress: watch::Sender<Progress>,
    tail: Arc<Mutex<tail::Tail>>,
}

impl TaskLog {
    fn append(&mut self, entries: Vec<(&'static str, Value)>) -> anyhow::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let at = now_ms();
        let records: Vec<EventRecord> = entries
            .into_iter()
            .map(|(kind, data)| {
                let seq = self.next_seq;
                self.next_seq += 1;
                EventRecord {
                    seq,
                    kind: kind.to_string(),
                    data,
                    at,
                }
            })
            .collect();
        self.store.append_events(&self.task_id, &records)?;
        self.tail.lock().unwrap().push(&records);
        let last_seq = self.next_seq - 1;
        self.progress.send_modify(|p| p.last_seq = last_seq);
        Ok(())
    }

    fn end(&self) {
        self.progress.send_modify(|p| p.ended = true);
    }
}

/// How a task's process ended, before the adapter's view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Exited,
    Cancelled,
    TimedOut,
}

/// One process of a task: the request its output is parsed for, and the command.
struct Step {
    request: PromptRequest,
    spec: CommandSpec,
}

/// How one step's process ended.
struct StepEnd {
    stop: Stop,
    exit_code: Option<i32>,
    summary: Option<crate::runtime::backend::RunSummary>,
}

impl StepEnd {
    fn succeeded(&self) -> bool {
        self.stop == Stop::Exited
            && self.exit_code == Some(0)
            && self.summary.as_ref().is_none_or(|s| s.success)
    }
}

struct TaskRun {
    inner: Arc<Inner>,
    tenant: TenantId,
    record: TaskRecord,
    steps: Vec<Step>,
    binary: String,
    timeout: Option<Duration>,
    subdir: Option<String>,
    proxy: TaskProxy,
    log: TaskLog,
}

/// A task's egress and model proxy: what it may reach, the per-task token its CLI holds in
/// place of the key, and where it listens (inside the task's network namespace, or on the
/// host's loopback when tasks share the host's network).
#[derive(Debug)]
struct TaskProxy {
    egress: Arc<egress::TaskEgress>,
    /// The variables (the manifest's `env`) that hold the token in the task.
    key_vars: Vec<String>,
    /// Where the task reaches the proxy.
    listen: std::net::SocketAddr,
    /// A listener on the host's loopback, served from the first step on (no network
    /// namespace).
    host_listener: Option<std::net::TcpListener>,
    /// The proxy serving the host listener.
    serving: Option<egress::ProxyHandle>,
}

impl TaskProxy {
    fn new(
        inner: &Inner,
        tenant: &TenantId,
        backend: &crate::runtime::BackendAdapter<'_>,
        backend_name: &str,
        task_id: &str,
    ) -> anyhow::Result<TaskProxy> {
        let config = &inner.egress;
        let mut patterns: Vec<String> = config.allow.clone();
        patterns.extend(
            config
                .tenants
                .get(tenant.as_str())
                .into_iter()
                .flatten()
                .cloned(),
        );
        patterns.extend(backend.egress().iter().cloned());
        let key_vars = backend.passed_env().to_vec();
        // A token of 256 random bits (two v4 UUIDs): useless anywhere but this task's proxy.
        let token = format!(
            "gantry-task-{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let model = backend.model_upstream().map(|upstream| egress::ModelRoute {
            upstream: upstream.to_string(),
            token,
            key: key_vars
                .iter()
                .find_map(|var| config.model_key(tenant.as_str(), var)),
        });
        if let Some(route) = &model {
            // The model API's host too (a CLI that goes there through the egress proxy
            // instead of the model proxy has only its token, never the key). A bad URL is
            // refused here, before anything runs.
            patterns.push(route.egress_pattern().map_err(anyhow::Error::msg)?);
        }
        let policy = egress::EgressPolicy::new(&patterns)
            .map_err(|e| anyhow::anyhow!("the egress allowlist: {e}"))?;
        let (listen, host_listener) = if inner.isolation.own_network() {
            (
                std::net::SocketAddr::from(([127, 0, 0, 1], sandbox::PROXY_PORT)),
                None,
            )
        } else {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            (listener.local_addr()?, Some(listener))
        };
        Ok(TaskProxy {
            egress: Arc::new(egress::TaskEgress {
                tenant: tenant.to_string(),
                task: task_id.to_string(),
                backend: backend_name.to_string(),
                policy,
                model,
                usage: egress::ModelUsage::default(),
            }),
            key_vars,
            listen,
            host_listener,
            serving: None,
        })
    }

    /// The adapter sees the proxy as its backend's `base_url`.
    fn setting_overrides(&self) -> Vec<(String, String)> {
        match &self.egress.model {
            Some(route) => vec![("base_url".into(), route.local_base_url(self.listen))],
            None => Vec::new(),
        }
    }

    /// The task's variables: the token in each key variable, and the proxy for HTTP.
    fn env(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        if let Some(route) = &self.egress.model {
            env.extend(
                self.key_vars
                    .iter()
                    .map(|v| (v.clone(), route.token.clone())),
            );
        }
        let proxy = format!("http://{}", self.listen);
        for var in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            env.push((var.into(), proxy.clone()));
        }
        for var in ["NO_PROXY", "no_proxy"] {
            env.push((var.into(), "127.0.0.1,localhost".into()));
        }
        env
    }

    /// Serve the host listener, once (no network namespace).
    fn serve_host_listener(&mut self) -> std::io::Result<()> {
        if let Some(listener) = self.host_listener.take() {
            self.serving = Some(egress::serve(listener, self.egress.clone())?);
        }
        Ok(())
    }

    /// What the model proxy counted, for the task's summary.
    fn usage(&self) -> Option<Value> {
        let u = &self.egress.usage;
        (u.requests() > 0).then(|| {
            json!({
                "requests": u.requests(),
                "input_tokens": u.input_tokens(),
                "output_tokens": u.output_tokens(),
            })
        })
    }
}

/// Spawns that pass a descriptor to the child clear its close-on-exec flag for the moment of
/// the spawn; holding this keeps other such spawns from inheriting it.
static INHERIT_LOCK: Mutex<()> = Mutex::new(());

fn set_inheritable(fd: std::os::fd::BorrowedFd<'_>, inherit: bool) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let flag = if inherit { 0 } else { libc::FD_CLOEXEC };
    // SAFETY: fcntl on a descriptor we hold.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, flag) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Receive the proxy listener the task's sandbox made inside its network namespace, waiting
/// at most 10 s; gives back the socket, whose closing tells the launcher gantry is gone.
async fn receive_listener(
    socket: std::os::unix::net::UnixStream,
) -> (
    std::os::unix::net::UnixStream,
    Option<std::net::TcpListener>,
) {
    tokio::task::spawn_blocking(move || {
        use std::os::fd::AsFd;
        let _ = socket.set_read_timeout(Some(Duration::from_secs(10)));
        let listener = match sandbox::namespaces::recv_fd(socket.as_fd()) {
            Ok(Some(fd)) => Some(std::net::TcpListener::from(fd)),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!("no proxy listener from the task's sandbox: {e}");
                None
            }
        };
        (socket, listener)
    })
    .await
    .expect("the receiving thread does not panic")
}

impl TaskRun {
    async fn run(mut self, mut cancel: watch::Receiver<bool>) {
        let id = self.record.id.clone();
        if let Err(e) = self.supervise(&mut cancel).await {
            tracing::error!(task = %id, "task supervision failed: {e:#}");
            self.record.state = TaskState::Failed;
            self.record.error = Some(format!("{e:#}"));
            self.record.finished_at = Some(now_ms());
            let _ = self.inner.store.update_task(&self.record);
        }
        // Leave the live set before announcing the end, so whoever sees the end sees the
        // workspace free.
        self.inner.live.lock().unwrap().remove(&id);
        self.inner
            .runtime
            .node()
            .metrics()
            .run_ended(&self.record.backend, self.record.state.as_str());
        self.log.end();
        let _ = std::fs::remove_dir_all(self.inner.tmp_root.join(&id));
    }

    fn set_state(&mut self, state: TaskState, extra: Value) -> anyhow::Result<()> {
        self.record.state = state;
        if state == TaskState::Running {
            self.record.started_at = Some(now_ms());
        }
        if state.is_terminal() {
            self.record.finished_at = Some(now_ms());
        }
        self.inner.store.update_task(&self.record)?;
        let mut data = json!({ "state": state.as_str() });
        if let (Value::Object(d), Value::Object(e)) = (&mut data, extra) {
            d.extend(e);
        }
        self.log.append(vec![("state", data)])
    }

    async fn supervise(&mut self, cancel: &mut watch::Receiver<bool>) -> anyhow::Result<()> {
        self.set_state(TaskState::Pending, json!({}))?;
        // Wait for this tenant's slot, then a global one; both queues are first come, first
        // served. A cancel while waiting ends the task without running it.
        let slots = async {
            let tenant = tenant_slots(&self.inner, self.tenant.as_str())
                .acquire_owned()
                .await;
            let global = self.inner.global.clone().acquire_owned().await;
            (tenant, global)
        };
        let _slots = tokio::select! {
            slots = slots => slots,
            () = cancelled(cancel) => {
                return self.set_state(TaskState::Cancelled, json!({ "reason": "cancelled before it started" }));
            }
        };
        self.set_state(TaskState::Running, json!({}))?;

        let deadline = self.timeout.map(|t| tokio::time::Instant::now() + t);
        let steps = std::mem::take(&mut self.steps);
        let count = steps.len();
        for (i, step) in steps.into_iter().enumerate() {
            let Some(end) = self.run_step(step, cancel, deadline).await? else {
                return Ok(()); // The step could not start; the task is already failed.
            };
            if i + 1 < count && end.succeeded() {
                continue;
            }
            return self.finish(end);
        }
        Ok(())
    }

    /// Run one step's process to its end. `None` when it could not start (the task is then
    /// marked failed).
    async fn run_step(
        &mut self,
        step: Step,
        cancel: &mut watch::Receiver<bool>,
        deadline: Option<tokio::time::Instant>,
    ) -> anyhow::Result<Option<StepEnd>> {
        let backend = self
            .inner
            .runtime
            .backend(&self.record.backend)
            .ok_or_else(|| anyhow::anyhow!("backend {} is gone", self.record.backend))?;
        let mut adapter = match backend.start_run(&self.tenant, &step.request).await {
            Ok(run) => Some(run),
            Err(failure) => return self.could_not_start(failure.message()),
        };
        let (_, root) = self
            .inner
            .workspaces
            .dir(&self.tenant, &self.record.workspace_id)?;
        let cwd = match &self.subdir {
            Some(subdir) => {
                self.inner
                    .workspaces
                    .subdir(&self.tenant, &self.record.workspace_id, subdir)?
            }
            None => root.clone(),
        };
        let tmp = self.inner.tmp_root.join(&self.record.id);
        std::fs::create_dir_all(&tmp)?;
        let CommandSpec {
            args,
            env,
            stdin,
            files,
        } = step.spec;
        let owner = self.inner.isolation.outside_ids(self.tenant.as_str());
        let home = match self.prepare_home(&files, owner) {
            Ok(home) => home,
            Err(e) => {
                let message = format!("could not prepare the backend's home directory: {e:#}");
                return self.could_not_start(message);
            }
        };
        let Some(program) = crate::backends::resolve(&self.binary) else {
            let message = format!(
                "could not start {}: not found on PATH ({})",
                self.binary,
                crate::backends::CHILD_PATH
            );
            return self.could_not_start(message);
        };
        let program = sandbox::paths::launch_path(&program);
        let writable = [root.as_path(), tmp.as_path(), home.as_path()];
        let isolation = &self.inner.isolation;
        // The task's sandbox (its cgroup lives as long as this), and the socket to its
        // launcher: its network namespace hands back the proxy listener over it, and its
        // closing (gantry gone) ends the task.
        let mut task_sandbox = None;
        let mut sync: Option<(
            std::os::unix::net::UnixStream,
            std::os::unix::net::UnixStream,
        )> = None;
        let mut cmd = match isolation.launcher() {
            Some(launcher) => {
                let built = isolation.task(
                    &self.record.id,
                    self.tenant.as_str(),
                    &program,
                    backend.read_only(),
                    &writable,
                );
                let mut built = match built {
                    Ok(built) => built,
                    Err(e) => {
                        let message = format!("could not prepare the task's sandbox: {e:#}");
                        return self.could_not_start(message);
                    }
                };
                if isolation.namespaced() {
                    use std::os::fd::AsRawFd;
                    let pair = std::os::unix::net::UnixStream::pair()?;
                    built.spec.sync_fd = Some(pair.1.as_raw_fd());
                    sync = Some(pair);
                }
                let cmd = sandbox::launcher_command(launcher, &built.spec, &program);
                task_sandbox = Some(built);
                cmd
            }
            None => {
                let restriction =
                    sandbox::Restriction::new(&[], &writable, sandbox::Rlimits::default())?;
                let mut cmd = tokio::process::Command::new(&program);
                // SAFETY: the closure makes only async-signal-safe calls (see
                // `apply_in_child`).
                unsafe {
                    cmd.pre_exec(move || restriction.apply_in_child());
                }
                cmd
            }
        };
        self.proxy.serve_host_listener()?;

        cmd.args(&args)
            .env_clear()
            .env("PATH", crate::backends::CHILD_PATH)
            .env("HOME", &home)
            .env("TMPDIR", &tmp)
            .env("LANG", "C.UTF-8")
            .envs(self.proxy.env())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(&cwd)
            .process_group(0)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let spawned = {
            use std::os::fd::AsFd;
            // The launcher's end of the socket is inherited by it alone.
            let _inherit = INHERIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, theirs)) = &sync {
                set_inheritable(theirs.as_fd(), true)?;
            }
            let spawned = cmd.spawn();
            if let Some((_, theirs)) = &sync {
                set_inheritable(theirs.as_fd(), false)?;
            }
            spawned
        };
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let message = format!("could not start {}: {e}", self.binary);
                return self.could_not_start(message);
            }
        };
        // Held until the step ends: the launcher kills the task when it closes.
        let mut _lifeline = None;
        let mut _proxy = None;
        if let Some((ours, theirs)) = sync.take() {
            drop(theirs);
            if isolation.own_network() {
                let (socket, listener) = receive_listener(ours).await;
                _lifeline = Some(socket);
                match listener {
                    Some(listener) => {
                        _proxy = Some(egress::serve(listener, self.proxy.egress.clone())?);
                    }
                    // The launcher failed (its reason is in the output, read below), or is
                    // stuck: never run a task without its proxy.
                    None if child.try_wait()?.is_none() => {
                        let _ = child.start_kill();
                        let _ = child.wait().await;
                        return self.could_not_start(
                            "the task's sandbox did not hand over its proxy listener in 10 s"
                                .into(),
                        );
                    }
                    None => {}
                }
            } else {
                _lifeline = Some(ours);
            }
        }
        let pgid = child.id().map(|p| p as i32);
        if let (Some(text), Some(mut stdin)) = (stdin, child.stdin.take()) {
            tokio::spawn(async move {
                let _ = stdin.write_all(text.as_bytes()).await;
            });
        }
        let (line_tx, mut lines) = mpsc::channel::<(OutputStream, lines::Line)>(1024);
        let limit = self.inner.limits.max_line_bytes.max(1);
        for (stream, pipe) in [
            (
                OutputStream::Stdout,
                child
                    .stdout
                    .take()
                    .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            ),
            (
                OutputStream::Stderr,
                child
                    .stderr
                    .take()
                    .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            ),
        ] {
            let Some(pipe) = pipe else { continue };
            let tx = line_tx.clone();
            tokio::spawn(async move {
                let mut reader = tokio::io::BufReader::new(pipe);
                while let Ok(Some(line)) = lines::next_line(&mut reader, limit).await {
                    if tx.send((stream, line)).await.is_err() {
                        break;
                    }
                }
            });
        }
        drop(line_tx);

        let grace = Duration::from_millis(self.inner.limits.kill_grace_ms);
        let mut stop = Stop::Exited;
        let mut kill_at: Option<tokio::time::Instant> = None;
        let mut status = None;
        let mut output_open = true;
        let mut batch = Vec::new();
        while status.is_none() || output_open {
            tokio::select! {
                n = lines.recv_many(&mut batch, 256), if output_open => {
                    if n == 0 {
                        output_open = false;
                    } else {
                        self.record_lines(&mut adapter, std::mem::take(&mut batch)).await?;
                    }
                }
                exit = child.wait(), if status.is_none() => {
                    status = Some(exit?);
                    // Whatever the child left behind in its group goes with it.
                    signal_group(pgid, libc::SIGKILL);
                }
                () = cancelled(cancel), if stop == Stop::Exited && status.is_none() => {
                    stop = Stop::Cancelled;
                    signal_group(pgid, libc::SIGTERM);
                    kill_at = Some(tokio::time::Instant::now() + grace);
                }
                () = sleep_until(deadline), if stop == Stop::Exited && status.is_none() => {
                    stop = Stop::TimedOut;
                    signal_group(pgid, libc::SIGTERM);
                    kill_at = Some(tokio::time::Instant::now() + grace);
                }
                () = sleep_until(kill_at), if status.is_none() => {
                    signal_group(pgid, libc::SIGKILL);
                    kill_at = None;
                }
            }
        }
        let status = status.expect("the loop ends after the exit");
        let exit_code = status.code();
        // A program that lost a child to the memory limit and still succeeded is not failed.
        if let Some(cgroup) = task_sandbox.as_ref().and_then(|t| t.cgroup.as_ref())
            && !status.success()
            && cgroup.oom_kills() > 0
        {
            self.record.error = Some(format!(
                "killed: out of memory (the task's limit is {} bytes)",
                self.inner.isolation.memory_limit()
            ));
        }
        // Removing a cgroup may wait a moment for the kernel to let go of it: not on the
        // task's path.
        if let Some(sandbox) = task_sandbox {
            tokio::task::spawn_blocking(move || drop(sandbox));
        }
        let summary = match adapter.take() {
            Some(run) => match run.finish(exit_code).await {
                Ok(s) => Some(s),
                Err(f) => {
                    self.record.error = Some(format!("adapter: {}", f.message()));
                    None
                }
            },
            None => None,
        };
        Ok(Some(StepEnd {
            stop,
            exit_code,
            summary,
        }))
    }

    /// The step could not start: the task fails with `message`, and the step has no end.
    fn could_not_start(&mut self, message: String) -> anyhow::Result<Option<StepEnd>> {
        self.record.error = Some(message.clone());
        self.set_state(TaskState::Failed, json!({ "error": message }))?;
        Ok(None)
    }

    /// The run's home directory, one per tenant and backend so that a CLI's sessions outlive
    /// the run (and can be resumed), with the adapter's files written into it.
    fn prepare_home(
        &self,
        files: &[(String, String)],
        owner: Option<(u32, u32)>,
    ) -> anyhow::Result<PathBuf> {
        // Tenant and plugin names are plain identifiers (checked when made): safe to join.
        let home = self
            .inner
            .homes_root
            .join(self.tenant.as_str())
            .join(&self.record.backend);
        std::fs::create_dir_all(&home)?;
        let dir = cap_std::fs::Dir::open_ambient_dir(&home, cap_std::ambient_authority())?;
        for (path, content) in files {
            let relative = crate::workspaces::check_relative_path(path)
                .map_err(|e| anyhow::anyhow!("the adapter's file {path:?}: {e}"))?;
            if let Some(parent) = relative.parent().filter(|p| !p.as_os_str().is_empty()) {
                dir.create_dir_all(parent)?;
            }
            // The home is the tenant's tasks' to shape, so never open what they may have left
            // at this name (a FIFO would block the open, a link would redirect it): write a
            // fresh file and rename it over whatever is there.
            let name = relative.file_name().unwrap_or_default().to_string_lossy();
            let fresh = relative
                .with_file_name(format!(".{name}.gantry-{}", uuid::Uuid::new_v4().simple()));
            let mut file = dir.open_with(
                &fresh,
                cap_std::fs::OpenOptions::new().write(true).create_new(true),
            )?;
            std::io::Write::write_all(&mut file, content.as_bytes())?;
            if let Some((uid, gid)) = owner {
                give_to(&dir, &relative, &file.into_std(), uid, gid)?;
            }
            dir.rename(&fresh, &dir, &relative)?;
        }
        Ok(home)
    }

    /// Record how the task ended, from the end of its last step.
    fn finish(&mut self, end: StepEnd) -> anyhow::Result<()> {
        let succeeded = end.succeeded();
        let StepEnd {
            stop,
            exit_code,
            summary,
        } = end;
        self.record.exit_code = exit_code;
        if let Some(s) = &summary {
            self.record.summary = Some(json!({
                "success": s.success,
                "session_id": s.session_id,
                "final_text": s.final_text,
                "error": s.error,
                "usage": s.usage.as_ref().map(|u| agent_event_json(&AgentEvent::Usage(*u))),
            }));
            if self.record.error.is_none() {
                self.record.error.clone_from(&s.error);
            }
        }
        if let Some(usage) = self.proxy.usage() {
            let summary = self.record.summary.get_or_insert_with(|| json!({}));
            summary["model_usage"] = usage;
        }
        let state = match stop {
            Stop::Cancelled => TaskState::Cancelled,
            Stop::TimedOut => {
                self.record.error = Some(format!(
                    "timed out after {} ms",
                    self.timeout.unwrap_or_default().as_millis()
                ));
                TaskState::TimedOut
            }
            Stop::Exited if succeeded => TaskState::Done,
            Stop::Exited => TaskState::Failed,
        };
        self.set_state(
            state,
            json!({ "exit_code": exit_code, "error": self.record.error }),
        )
    }

    /// Persist a batch of lines and the agent events parsed from them, in one append.
    async fn record_lines(
        &mut self,
        adapter: &mut Option<crate::runtime::AdapterRun>,
        batch: Vec<(OutputStream, lines::Line)>,
    ) -> anyhow::Result<()> {
        let mut entries = Vec::with_capacity(batch.len() * 2);
        for (stream, line) in batch {
            let kind = match stream {
                OutputStream::Stdout => "stdout",
                OutputStream::Stderr => "stderr",
            };
            let mut data = json!({ "line": line.text });
            if line.partial {
                data["partial"] = true.into();
            }
            entries.push((kind, data));
            if let Some(run) = adapter {
                match run.parse_line(stream, &line.text).await {
                    Ok(events) => {
                        entries.extend(events.iter().map(|e| ("agent", agent_event_json(e))))
                    }
                    Err(failure) => {
                        // The output is still kept; only its interpretation stops.
                        entries.push((
                            "agent",
                            json!({ "type": "error", "message": format!("adapter failed: {}", failure.message()) }),
                        ));
                        *adapter = None;
                    }
                }
            }
        }
        self.log.append(entries)
    }
}

/// Hand `file` (about to become `relative` in a task's home) and the directories leading to
/// it to the task's uid, through descriptors cap-std opened inside `dir`: a link a task
/// planted cannot point the change elsewhere.
fn give_to(
    dir: &cap_std::fs::Dir,
    relative: &std::path::Path,
    file: &std::fs::File,
    uid: u32,
    gid: u32,
) -> std::io::Result<()> {
    use rustix::process::{Gid, Uid};
    let owner = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
    rustix::fs::fchown(file, owner.0, owner.1)?;
    let mut at = PathBuf::new();
    for component in relative.parent().into_iter().flat_map(|p| p.components()) {
        at.push(component);
        let parent = dir.open_dir(&at)?.into_std_file();
        // AT_EMPTY_PATH: the descriptor itself, which may be an O_PATH one.
        rustix::fs::chownat(
            &parent,
            "",
            owner.0,
            owner.1,
            rustix::fs::AtFlags::EMPTY_PATH,
        )?;
    }
    Ok(())
}

/// Resolves once a cancel was asked for (never, if the sender is gone).
async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    if cancel.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn signal_group(pgid: Option<i32>, signal: i32) {
    if let Some(pgid) = pgid.filter(|p| *p > 1) {
        // SAFETY: kill(2) on the child's own process group (it was spawned as its leader).
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}
