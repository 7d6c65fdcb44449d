//! The Web UI API's commands (`/api/commands`): a user's command line run as `sh -c LINE` in
//! a workspace of its tenant — a project's, or the user's own — inside the same sandbox as
//! every task ([`crate::tasks::Supervisor::spawn_command`]), its output stored line by line,
//! and the checks and suggestions around it.
//!
//! - this file: the service (permissions, workspace, limits, the run and its output);
//! - [`env`]: the request's environment, checked against a denylist;
//! - [`validate`]: the static checks of a command line (pure functions);
//! - [`suggest`]: the shipped catalogue and the user's history, ranked.
//!
//! A user's own workspace (no `project_id`): the first command a user runs without a project
//! creates a workspace named `commands: <username>` in its tenant and remembers it
//! (`CommandStore::command_workspace`); later commands run there. If that workspace was
//! deleted, the next command makes a new one.

pub mod env;
pub mod suggest;
pub mod validate;

use crate::config::CommandsConfig;
use crate::contract::OutputStream;
use crate::events::{EventBus, EventKind, NewEvent};
use crate::projects::events::rfc3339;
use crate::projects::{ProjectError, Projects};
use crate::store::{CommandOutputRecord, CommandRecord, CommandStatus, Store, now_ms};
use crate::tasks::command::{CommandEnd, CommandLaunch};
use crate::tasks::lines::Line;
use crate::tasks::{Supervisor, TaskError};
use crate::users::{Denied, Permission, Principal};
use crate::workspaces::{WorkspaceError, Workspaces};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// The longest command line taken, in bytes.
pub const MAX_COMMAND_BYTES: usize = 16 * 1024;
/// The exit code a cancelled command reports (the document's: ended by SIGTERM).
pub const CANCELLED_EXIT_CODE: i32 = -15;
/// The most output lines one status answer carries.
pub const MAX_STATUS_LINES: usize = 10_000;

/// Why a command operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// No such command of this user (another user's or tenant's ids land here too).
    #[error("command not found")]
    NotFound,
    /// No such project for this tenant.
    #[error("project not found")]
    ProjectNotFound,
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
    /// Too many commands run already.
    #[error("{0}")]
    TooMany(String),
    /// Storage or gantry itself failed.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<Denied> for CommandError {
    fn from(e: Denied) -> Self {
        CommandError::Forbidden(e.to_string())
    }
}

impl From<crate::store::StoreError> for CommandError {
    fn from(e: crate::store::StoreError) -> Self {
        CommandError::Internal(e.into())
    }
}

impl From<WorkspaceError> for CommandError {
    fn from(e: WorkspaceError) -> Self {
        match e {
            WorkspaceError::BadPath(issue) => CommandError::Invalid {
                field: "working_directory",
                issue,
            },
            other => CommandError::Internal(other.into()),
        }
    }
}

impl From<TaskError> for CommandError {
    fn from(e: TaskError) -> Self {
        match e {
            TaskError::Workspace(w) => w.into(),
            other => CommandError::Internal(other.into()),
        }
    }
}

/// What to run, as the request gives it.
#[derive(Debug, Clone, Default)]
pub struct ExecuteRequest {
    /// The command line.
    pub command: String,
    /// The project whose workspace it runs in; the user's own workspace when none.
    pub project_id: Option<String>,
    /// The session it belongs to (stored with it).
    pub session_id: Option<String>,
    /// A directory inside the workspace, relative.
    pub working_directory: Option<String>,
    /// Seconds; the config's default when none.
    pub timeout_secs: Option<u64>,
    /// Variables on top of the clean environment.
    pub environment: Vec<(String, String)>,
    /// Publish each line on the event bus as it comes.
    pub stream_output: bool,
}

/// A command and the output asked for.
#[derive(Debug, Clone)]
pub struct CommandStatusView {
    /// The command.
    pub record: CommandRecord,
    /// Its output so far, oldest first.
    pub output: Vec<CommandOutputRecord>,
}

/// The Web UI API's commands; cheap to clone.
#[derive(Debug, Clone)]
pub struct Commands {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    tasks: Supervisor,
    projects: Projects,
    workspaces: Arc<Workspaces>,
    config: CommandsConfig,
    /// Where streamed output and ends are published.
    events: EventBus,
    /// The commands running on this node, by id.
    live: Mutex<HashMap<String, Live>>,
    /// Working sessions, which keep the commands run in them in their history.
    sessions: std::sync::OnceLock<crate::work_sessions::WorkSessions>,
}

#[derive(Debug)]
struct Live {
    tenant: String,
    user_id: String,
    cancel: watch::Sender<bool>,
    /// Becomes true once its end is stored.
    done: watch::Receiver<bool>,
}

impl Commands {
    /// The commands service of this node. Commands the node's previous process left
    /// running are marked interrupted first (they died with it).
    pub async fn new(
        store: Arc<dyn Store>,
        tasks: Supervisor,
        projects: Projects,
        workspaces: Arc<Workspaces>,
        config: CommandsConfig,
        events: EventBus,
    ) -> anyhow::Result<Commands> {
        let interrupted = store
            .interrupt_commands_of(tasks.node_id(), now_ms())
            .await?;
        if interrupted > 0 {
            tracing::warn!(
                count = interrupted,
                "commands left running by the previous process are now interrupted"
            );
        }
        Ok(Commands {
            inner: Arc::new(Inner {
                store,
                tasks,
                projects,
                workspaces,
                config,
                events,
                live: Mutex::new(HashMap::new()),
                sessions: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Record the commands run with a `session_id` in that working session's history (and
    /// refuse, running nothing, a session that is not the caller's active one).
    pub fn keep_history_in(&self, sessions: crate::work_sessions::WorkSessions) {
        let _ = self.inner.sessions.set(sessions);
    }

    /// Run a command line for the caller: checked, stored as running, and started in the
    /// sandbox; its output is stored as it comes. A command that could not start is stored
    /// as failed, with why.
    pub async fn execute(
        &self,
        who: &Principal,
        request: ExecuteRequest,
    ) -> Result<CommandRecord, CommandError> {
        who.require(Permission::Execute)?;
        let inner = &self.inner;
        let command = request.command;
        if command.trim().is_empty() {
            return Err(invalid("command", "must not be empty"));
        }
        if command.len() > MAX_COMMAND_BYTES {
            return Err(invalid(
                "command",
                format!("must be at most {MAX_COMMAND_BYTES} bytes"),
            ));
        }
        if command.contains('\0') {
            return Err(invalid("command", "must not contain a NUL byte"));
        }
        let timeout = match request.timeout_secs {
            None => inner.config.default_timeout_secs,
            Some(t) if (1..=inner.config.max_timeout_secs).contains(&t) => t,
            Some(_) => {
                return Err(invalid(
                    "timeout",
                    format!(
                        "must be from 1 to {} seconds",
                        inner.config.max_timeout_secs
                    ),
                ));
            }
        };
        let environment =
            env::check(&request.environment).map_err(|issue| invalid("environment", issue))?;
        let working_directory = match request.working_directory.as_deref() {
            None | Some("" | ".") => String::new(),
            Some(dir) => crate::workspaces::check_relative_path(dir)
                .map_err(|e| invalid("working_directory", e.to_string()))?
                .to_string_lossy()
                .into_owned(),
        };
        let workspace_id = match &request.project_id {
            Some(project) => self.project_workspace(who, project).await?,
            None => self.own_workspace(who).await?,
        };
        let id = uuid::Uuid::new_v4().to_string();
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let (done_tx, done_rx) = watch::channel(false);
        self.admit(who, &id, cancel_tx, done_rx)?;
        // Whatever happens from here, the live entry goes when this guard does (unless the
        // run takes it over).
        let admitted = Admitted {
            inner: inner.clone(),
            id: id.clone(),
        };
        let mut record = CommandRecord {
            id: id.clone(),
            tenant: who.tenant.to_string(),
            user_id: who.id.clone(),
            command: command.clone(),
            project_id: request.project_id.clone(),
            session_id: request.session_id.clone(),
            workspace_id: workspace_id.clone(),
            working_directory: working_directory.clone(),
            status: CommandStatus::Running,
            pid: None,
            exit_code: None,
            started_at: now_ms(),
            completed_at: None,
            error: None,
            node: inner.tasks.node_id().to_string(),
            output_bytes: 0,
            truncated: false,
        };
        // The directory is checked before anything is stored: a bad one is the caller's
        // error, not a failed command.
        inner
            .workspaces
            .subdir(&who.tenant, &workspace_id, &working_directory)
            .await?;
        if let (Some(session), Some(sessions)) = (&request.session_id, inner.sessions.get()) {
            sessions
                .record_command_run(who, session, &id, &record.command)
                .await
                .map_err(|e| {
                    invalid(
                        "session_id",
                        format!("{e}: name one of your active sessions (/api/sessions)"),
                    )
                })?;
        }
        let launch = CommandLaunch {
            id: id.clone(),
            workspace_id,
            subdir: working_directory,
            line: command,
            env: environment,
        };
        let started = inner.tasks.spawn_command(&who.tenant, launch).await?;
        let running = match started {
            Ok(running) => running,
            Err(why) => {
                record.status = CommandStatus::Failed;
                record.error = Some(why);
                record.completed_at = Some(now_ms());
                inner.store.insert_command(&record).await?;
                return Ok(record);
            }
        };
        record.pid = running.pid();
        inner.store.insert_command(&record).await?;
        let run = Run {
            inner: inner.clone(),
            record: record.clone(),
            next_seq: 1,
            stream_output: request.stream_output,
            timeout: Duration::from_secs(timeout),
        };
        tokio::spawn(async move {
            run.run(running, cancel_rx, done_tx).await;
            drop(admitted);
        });
        Ok(record)
    }

    /// Count the caller's and its tenant's running commands against the config's caps, and
    /// join the live set.
    fn admit(
        &self,
        who: &Principal,
        id: &str,
        cancel: watch::Sender<bool>,
        done: watch::Receiver<bool>,
    ) -> Result<(), CommandError> {
        let config = &self.inner.config;
        let mut live = self.inner.live.lock().unwrap();
        let of_tenant: Vec<&Live> = live
            .values()
            .filter(|l| l.tenant == who.tenant.as_str())
            .collect();
        let of_user = of_tenant.iter().filter(|l| l.user_id == who.id).count();
        if of_user >= config.max_running_per_user as usize {
            return Err(CommandError::TooMany(format!(
                "you have {of_user} commands running, the most one user may; wait for one to end or cancel it"
            )));
        }
        if of_tenant.len() >= config.max_running_per_tenant as usize {
            return Err(CommandError::TooMany(format!(
                "this tenant has {} commands running, the most it may",
                of_tenant.len()
            )));
        }
        live.insert(
            id.to_string(),
            Live {
                tenant: who.tenant.to_string(),
                user_id: who.id.clone(),
                cancel,
                done,
            },
        );
        Ok(())
    }

    async fn project_workspace(
        &self,
        who: &Principal,
        project: &str,
    ) -> Result<String, CommandError> {
        match self.inner.projects.get_project(who, project).await {
            Ok(p) => Ok(p.record.workspace_id),
            Err(ProjectError::ProjectNotFound) => Err(CommandError::ProjectNotFound),
            Err(ProjectError::Forbidden(m)) => Err(CommandError::Forbidden(m)),
            Err(e) => Err(CommandError::Internal(e.into())),
        }
    }

    /// The caller's own workspace, made on first use (see the module's docs).
    async fn own_workspace(&self, who: &Principal) -> Result<String, CommandError> {
        let inner = &self.inner;
        let tenant = who.tenant.as_str();
        let known = inner.store.command_workspace(tenant, &who.id).await?;
        if let Some(id) = &known {
            match inner.workspaces.get(&who.tenant, id).await {
                Ok(ws) => return Ok(ws.id),
                Err(WorkspaceError::NotFound) => {}
                Err(e) => return Err(CommandError::Internal(e.into())),
            }
        }
        let name = format!("commands: {}", who.username);
        let name: String = name.chars().filter(|c| !c.is_control()).take(200).collect();
        let made = inner.workspaces.create(&who.tenant, &name).await?;
        let chosen = inner
            .store
            .set_command_workspace(tenant, &who.id, &made.id, known.as_deref())
            .await?;
        if chosen != made.id {
            // Another request made one first: ours goes.
            let _ = inner
                .workspaces
                .delete(&who.tenant, &made.id, |_| false)
                .await;
        }
        Ok(chosen)
    }

    /// One of the caller's commands with its output (at most [`MAX_STATUS_LINES`] lines
    /// after `after_seq`).
    pub async fn status(
        &self,
        who: &Principal,
        id: &str,
        after_seq: u64,
    ) -> Result<CommandStatusView, CommandError> {
        who.require(Permission::Execute)?;
        let record = self.get(who, id).await?;
        let output = self
            .inner
            .store
            .command_output(&record.tenant, &record.id, after_seq, MAX_STATUS_LINES)
            .await?;
        Ok(CommandStatusView { record, output })
    }

    async fn get(&self, who: &Principal, id: &str) -> Result<CommandRecord, CommandError> {
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(CommandError::NotFound);
        }
        self.inner
            .store
            .get_command(who.tenant.as_str(), &who.id, id)
            .await?
            .ok_or(CommandError::NotFound)
    }

    /// Cancel one of the caller's commands: TERM to its process group, KILL after the grace
    /// period; answers once its end is stored (`cancelled`, exit code -15). A command that
    /// has already ended is answered as it is.
    pub async fn cancel(&self, who: &Principal, id: &str) -> Result<CommandRecord, CommandError> {
        who.require(Permission::Execute)?;
        let record = self.get(who, id).await?;
        let done = self.inner.live.lock().unwrap().get(&record.id).map(|l| {
            l.cancel.send_replace(true);
            l.done.clone()
        });
        if let Some(mut done) = done {
            let _ = done.wait_for(|d| *d).await;
        }
        self.get(who, id).await
    }

    /// The caller's running commands, newest first.
    pub async fn running(&self, who: &Principal) -> Result<Vec<CommandRecord>, CommandError> {
        who.require(Permission::Execute)?;
        let (commands, _) = self
            .inner
            .store
            .list_commands(who.tenant.as_str(), &who.id, true, 1000, 0)
            .await?;
        Ok(commands)
    }

    /// A page of the caller's commands, newest first, and how many there are.
    pub async fn history(
        &self,
        who: &Principal,
        limit: usize,
        offset: usize,
    ) -> Result<(Vec<CommandRecord>, u64), CommandError> {
        who.require(Permission::Execute)?;
        Ok(self
            .inner
            .store
            .list_commands(who.tenant.as_str(), &who.id, false, limit, offset)
            .await?)
    }

    /// Suggestions for `prefix` in `context`: the caller's own commands and the catalogue,
    /// ranked (see [`suggest`]).
    pub async fn suggestions(
        &self,
        who: &Principal,
        context: &str,
        prefix: &str,
    ) -> Result<Vec<suggest::Suggestion>, CommandError> {
        who.require(Permission::Read)?;
        let history = self
            .inner
            .store
            .frequent_commands(who.tenant.as_str(), &who.id, 200)
            .await?;
        Ok(suggest::rank(
            &history,
            context,
            prefix,
            suggest::MAX_SUGGESTIONS,
        ))
    }

    /// The static checks of a command line (see [`validate`]).
    pub fn validate(
        &self,
        who: &Principal,
        command: &str,
        check_safety: bool,
    ) -> Result<validate::Validation, CommandError> {
        who.require(Permission::Read)?;
        if command.len() > MAX_COMMAND_BYTES {
            return Err(invalid(
                "command",
                format!("must be at most {MAX_COMMAND_BYTES} bytes"),
            ));
        }
        Ok(validate::validate(command, check_safety))
    }
}

fn invalid(field: &'static str, issue: impl Into<String>) -> CommandError {
    CommandError::Invalid {
        field,
        issue: issue.into(),
    }
}

/// Removes an admitted command from the live set when dropped.
struct Admitted {
    inner: Arc<Inner>,
    id: String,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.inner.live.lock().unwrap().remove(&self.id);
    }
}

/// One running command: its record, and where its output goes.
struct Run {
    inner: Arc<Inner>,
    record: CommandRecord,
    next_seq: u64,
    stream_output: bool,
    timeout: Duration,
}

impl Run {
    async fn run(
        mut self,
        running: crate::tasks::command::RunningCommand,
        cancel: watch::Receiver<bool>,
        done: watch::Sender<bool>,
    ) {
        let timeout = self.timeout;
        let end = {
            let this = &mut self;
            // Output is stored in order, batch by batch: the next batch waits.
            running
                .finish(cancel, timeout, |batch| this.store_lines(batch))
                .await
        };
        let record = &mut self.record;
        record.completed_at = Some(now_ms());
        match end {
            Ok(CommandEnd::Exited(Some(0))) => {
                record.status = CommandStatus::Completed;
                record.exit_code = Some(0);
            }
            Ok(CommandEnd::Exited(code)) => {
                record.status = CommandStatus::Failed;
                record.exit_code = code;
                if code.is_none() {
                    record.error = Some("killed by a signal".into());
                }
            }
            Ok(CommandEnd::Cancelled) => {
                record.status = CommandStatus::Cancelled;
                record.exit_code = Some(CANCELLED_EXIT_CODE);
            }
            Ok(CommandEnd::TimedOut) => {
                record.status = CommandStatus::TimedOut;
                record.exit_code = Some(CANCELLED_EXIT_CODE);
                record.error = Some(format!("timed out after {} s", timeout.as_secs()));
            }
            Err(e) => {
                record.status = CommandStatus::Failed;
                record.error = Some(format!("waiting for the process failed: {e}"));
            }
        }
        if let Err(e) = self.inner.store.finish_command(&self.record).await {
            tracing::error!(command = %self.record.id, "storing a command's end failed: {e:#}");
        }
        self.publish_finished();
        done.send_replace(true);
    }

    /// Store a batch of lines (within the output cap), then publish them.
    fn store_lines(
        &mut self,
        batch: Vec<(OutputStream, Line)>,
    ) -> impl std::future::Future<Output = ()> + use<> {
        let cap = self.inner.config.max_output_bytes;
        let now = now_ms();
        let mut records = Vec::with_capacity(batch.len());
        let mut bytes = 0u64;
        let mut truncated = false;
        for (stream, line) in batch {
            if self.record.truncated {
                break;
            }
            let mut content = line.text;
            if !line.partial {
                content.push('\n');
            }
            let size = content.len() as u64;
            if self.record.output_bytes + bytes + size > cap {
                truncated = true;
                self.record.truncated = true;
                records.push(CommandOutputRecord {
                    seq: self.next_seq,
                    stream: "stderr".into(),
                    content: format!(
                        "gantry: output past {cap} bytes is not stored; the command runs on\n"
                    ),
                    at: now,
                });
                self.next_seq += 1;
                break;
            }
            bytes += size;
            records.push(CommandOutputRecord {
                seq: self.next_seq,
                stream: stream_name(stream).into(),
                content,
                at: now,
            });
            self.next_seq += 1;
        }
        self.record.output_bytes += bytes;
        let store = self.inner.store.clone();
        let tenant = self.record.tenant.clone();
        let id = self.record.id.clone();
        let publish = if self.stream_output {
            self.publisher()
        } else {
            None
        };
        async move {
            if records.is_empty() {
                return;
            }
            let stored = store
                .append_command_output(&tenant, &id, &records, bytes, truncated)
                .await;
            if let Err(e) = stored {
                tracing::error!(command = %id, "storing a command's output failed: {e:#}");
                return;
            }
            if let Some(publish) = publish {
                publish.output(&records).await;
            }
        }
    }

    fn publisher(&self) -> Option<Publisher> {
        // The tenant was a checked id when the command was made.
        let tenant = crate::tenants::TenantId::new(&self.record.tenant).ok()?;
        Some(Publisher {
            events: self.inner.events.clone(),
            tenant,
            command_id: self.record.id.clone(),
            project_id: self.record.project_id.clone(),
            user_id: self.record.user_id.clone(),
        })
    }

    fn publish_finished(&self) {
        if self.stream_output
            && let Some(publisher) = self.publisher()
        {
            let record = self.record.clone();
            tokio::spawn(async move { publisher.finished(&record).await });
        }
    }
}

/// Publishes a command's lines and end on the event bus (only when the request asked for
/// `stream_output`), in the document's `command_output` shape; the integrator's WebSocket
/// forwards them. A line is published after it is stored, so the bus never tells of output
/// that status would not show.
struct Publisher {
    events: EventBus,
    tenant: crate::tenants::TenantId,
    command_id: String,
    project_id: Option<String>,
    /// Whose command it is: a command's output is its user's (the WebSocket's `my-commands`
    /// topic matches it), so the event names no project that others of the tenant follow.
    user_id: String,
}

impl Publisher {
    fn event(&self, kind: EventKind, mut data: serde_json::Value) -> NewEvent {
        if let Some(map) = data.as_object_mut() {
            map.insert("user_id".into(), self.user_id.clone().into());
            map.insert("project_id".into(), self.project_id.clone().into());
        }
        NewEvent::new(kind, data).command(&self.command_id)
    }

    /// One event per line, published together (one transaction for a read's lines).
    async fn output(&self, lines: &[CommandOutputRecord]) {
        let events = lines
            .iter()
            .map(|line| {
                let data = serde_json::json!({
                    "command_id": self.command_id,
                    "stream": line.stream,
                    "content": line.content,
                    "timestamp": rfc3339(line.at),
                });
                self.event(EventKind::CommandOutput, data)
            })
            .collect();
        self.events.announce_all(&self.tenant, events).await;
    }

    async fn finished(&self, record: &CommandRecord) {
        let data = serde_json::json!({
            "command_id": self.command_id,
            "status": record.status.as_str(),
            "exit_code": record.exit_code,
            "completed_at": record.completed_at.map(rfc3339),
        });
        let event = self.event(EventKind::CommandFinished, data);
        self.events.announce(&self.tenant, event).await;
    }
}

/// The document's name of an output stream.
pub fn stream_name(stream: OutputStream) -> &'static str {
    match stream {
        OutputStream::Stdout => "stdout",
        OutputStream::Stderr => "stderr",
    }
}
