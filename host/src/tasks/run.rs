//! The run state machine of one task: pending (waiting for slots) → running (its steps, one
//! process each, their output parsed by the adapter and logged) → done, failed, cancelled or
//! timed out. Every change of state is stored, then logged.

use super::adapter::AdapterRun;
use super::log::TaskLog;
use super::process::{Spawned, TaskProxy, signal_group};
use super::{Inner, lines, tenant_slots};
use crate::contract::{
    AgentEvent, CommandSpec, EventBody, OutputLine, OutputStream, PromptRequest, RunSummary,
    StateChange, TaskSummary,
};
use crate::store::{TaskRecord, TaskState, now_ms};
use crate::tenants::TenantId;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How a task's process ended, before the adapter's view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Exited,
    Cancelled,
    TimedOut,
}

/// One process of a task: the request its output is parsed for, and the command.
pub(super) struct Step {
    pub(super) request: PromptRequest,
    pub(super) spec: CommandSpec,
}

/// How one step's process ended.
struct StepEnd {
    stop: Stop,
    exit_code: Option<i32>,
    summary: Option<RunSummary>,
}

impl StepEnd {
    fn succeeded(&self) -> bool {
        self.stop == Stop::Exited
            && self.exit_code == Some(0)
            && self.summary.as_ref().is_none_or(|s| s.success)
    }
}

/// One task from admission to its end.
pub(super) struct TaskRun {
    pub(super) inner: Arc<Inner>,
    pub(super) tenant: TenantId,
    pub(super) record: TaskRecord,
    pub(super) steps: Vec<Step>,
    pub(super) binary: String,
    pub(super) timeout: Option<Duration>,
    pub(super) subdir: Option<String>,
    pub(super) proxy: TaskProxy,
    pub(super) log: TaskLog,
}

impl TaskRun {
    /// Run the task to its end; its record and log say how it went.
    pub(super) async fn run(mut self, mut cancel: watch::Receiver<bool>) {
        let id = self.record.id.clone();
        if let Err(e) = self.supervise(&mut cancel).await {
            tracing::error!(task = %id, "task supervision failed: {e:#}");
            self.record.error = Some(format!("{e:#}"));
            // Logged with the row, so that a follower reads how the task ended, not only that
            // its log did. The store may be what failed: then the row alone is tried.
            if let Err(again) = self.set_state(TaskState::Failed, None).await {
                tracing::error!(task = %id, "the failed task's end cannot be logged: {again:#}");
                self.record.state = TaskState::Failed;
                self.record.finished_at = Some(now_ms());
                let _ = self.inner.store.update_task(&self.record).await;
            }
        }
        // Leave the live set before announcing the end, so whoever sees the end sees the
        // workspace free.
        self.inner.live.lock().unwrap().remove(&id);
        self.inner
            .metrics
            .run_ended(&self.record.backend, self.record.state.as_str());
        super::phase(&id, "ended");
        self.log.end();
        let _ = std::fs::remove_dir_all(self.inner.tmp_root.join(&id));
    }

    /// Store the task in `state`, then log the change (with `reason` for a cancel before the
    /// start; a terminal state carries the exit code and error of the record).
    async fn set_state(&mut self, state: TaskState, reason: Option<&str>) -> anyhow::Result<()> {
        self.set_state_after(Vec::new(), state, reason).await
    }

    /// [`TaskRun::set_state`], logging `earlier` entries first, in the same append.
    async fn set_state_after(
        &mut self,
        mut earlier: Vec<EventBody>,
        state: TaskState,
        reason: Option<&str>,
    ) -> anyhow::Result<()> {
        // The row was inserted pending: a first `Pending` is the log's alone.
        let unchanged = state == self.record.state && state == TaskState::Pending;
        self.record.state = state;
        if state == TaskState::Running {
            self.record.started_at = Some(now_ms());
        }
        if state.is_terminal() {
            self.record.finished_at = Some(now_ms());
        }
        earlier.push(EventBody::State(self.state_change(state, reason)));
        if unchanged {
            return self.log.append(earlier).await;
        }
        // The row and its log entry in one commit (one round trip on a shared store). A
        // terminal state leaves the live set as soon as it is stored, before it is announced:
        // whoever reads the end finds the workspace free.
        let (live, id) = (&self.inner.live, &self.record.id);
        let leave = || {
            if state.is_terminal() {
                live.lock().unwrap().remove(id);
            }
        };
        self.log.append_with_row(&self.record, earlier, leave).await
    }

    /// The log's entry for a change to `state`.
    fn state_change(&self, state: TaskState, reason: Option<&str>) -> StateChange {
        StateChange {
            state,
            reason: reason.map(str::to_string),
            exit_code: self.record.exit_code,
            error: self.record.error.clone(),
        }
    }

    async fn supervise(&mut self, cancel: &mut watch::Receiver<bool>) -> anyhow::Result<()> {
        super::phase(&self.record.id, "running-task");
        // Wait for this tenant's slot, then a global one; both queues are first come, first
        // served. A cancel while waiting ends the task without running it.
        // On a store shared by several nodes the limits hold over all of them: the store
        // hands out a running slot too (on one node it always has one to give).
        let inner = self.inner.clone();
        let (tenant_name, task_id) = (self.tenant.as_str().to_string(), self.record.id.clone());
        // Slots free now (a semaphore hands out none while others queue for it): no wait, so
        // the pending state is logged with the running one, in one commit instead of two.
        let tenant_now = tenant_slots(&inner, &tenant_name).try_acquire_owned().ok();
        let global_now = tenant_now
            .as_ref()
            .and_then(|_| inner.global.clone().try_acquire_owned().ok());
        let claimed_now = global_now.is_some() && claim_slot(&inner, &tenant_name, &task_id).await;
        let _slots = if claimed_now {
            let pending = EventBody::State(self.state_change(TaskState::Pending, None));
            self.set_state_after(vec![pending], TaskState::Running, None)
                .await?;
            (tenant_now, global_now)
        } else {
            self.set_state(TaskState::Pending, None).await?;
            let slots = async move {
                // Semaphores that are never closed: acquiring one does not fail.
                let tenant = match tenant_now {
                    Some(permit) => Some(permit),
                    None => tenant_slots(&inner, &tenant_name)
                        .acquire_owned()
                        .await
                        .ok(),
                };
                let global = match global_now {
                    Some(permit) => Some(permit),
                    None => inner.global.clone().acquire_owned().await.ok(),
                };
                while !claim_slot(&inner, &tenant_name, &task_id).await {
                    tokio::time::sleep(CLUSTER_SLOT_RETRY).await;
                }
                (tenant, global)
            };
            let slots = tokio::select! {
                slots = slots => slots,
                () = cancelled(cancel) => {
                    return self.set_state(TaskState::Cancelled, Some("cancelled before it started")).await;
                }
            };
            self.set_state(TaskState::Running, None).await?;
            slots
        };
        super::phase(&self.record.id, "state-running");

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
            return self.finish(end).await;
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
        let adapters = self.inner.adapters.clone();
        // A reload may have removed the backend while the task waited for its slot.
        let Some(backend) = adapters.backend(&self.record.backend) else {
            let gone = format!(
                "backend {} is no longer configured (a reload removed it)",
                self.record.backend
            );
            return self.could_not_start(gone).await;
        };
        let started = adapters
            .start_run(&self.record.backend, &self.tenant, &step.request)
            .await;
        super::phase(&self.record.id, "adapter-started");
        let mut adapter = match started {
            Ok(run) => Some(run),
            Err(failure) => return self.could_not_start(failure.message).await,
        };
        let Spawned {
            mut child,
            pgid,
            mut lines,
            sandbox: task_sandbox,
            mut lifeline,
            proxy: _proxy,
        } = match self.spawn(&backend, step.spec).await? {
            Ok(spawned) => spawned,
            Err(message) => return self.could_not_start(message).await,
        };

        let grace = Duration::from_millis(self.inner.limits.kill_grace_ms);
        super::phase(&self.record.id, "spawned");
        let mut stop = Stop::Exited;
        let mut kill_at: Option<tokio::time::Instant> = None;
        let mut status = None;
        let mut output_open = true;
        let mut batch = Vec::new();
        // The launcher's report of the program's status, which comes before its own exit.
        let report = async {
            match lifeline.as_mut() {
                Some(lifeline) => lifeline.exit_report().await,
                None => None,
            }
        };
        tokio::pin!(report);
        let mut report_pending = true;
        let mut reported = false;
        while status.is_none() || output_open {
            tokio::select! {
                n = lines.recv_many(&mut batch, LINES_PER_BATCH), if output_open => {
                    if n == 0 {
                        output_open = false;
                    } else {
                        self.record_lines(&mut adapter, std::mem::take(&mut batch)).await?;
                    }
                }
                exit = child.wait(), if status.is_none() => {
                    status = Some(exit?);
                    super::phase(&self.record.id, "exited");
                    // Whatever the child left behind in its group goes with it.
                    signal_group(pgid, libc::SIGKILL);
                }
                exit = &mut report, if status.is_none() && report_pending => {
                    report_pending = false;
                    if let Some(exit) = exit {
                        // Everything of the task is gone (its init killed and reaped the
                        // whole PID namespace); the launcher ends by itself, and is not
                        // killed (its init must be reaped by it, not orphaned).
                        status = Some(exit);
                        reported = true;
                        super::phase(&self.record.id, "exited");
                    }
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
        super::phase(&self.record.id, "output-read");
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
        // Removing a cgroup may wait a moment for the kernel to let go of it (and, after a
        // report, for the launcher to end): not on the task's path.
        if reported {
            tokio::spawn(async move {
                let _ = child.wait().await;
                if let Some(sandbox) = task_sandbox {
                    let _ = tokio::task::spawn_blocking(move || drop(sandbox)).await;
                }
            });
        } else if let Some(sandbox) = task_sandbox {
            tokio::task::spawn_blocking(move || drop(sandbox));
        }
        let summary = match adapter.take() {
            Some(run) => match run.finish(exit_code).await {
                Ok(s) => Some(s),
                Err(f) => {
                    self.record.error = Some(format!("adapter: {}", f.message));
                    None
                }
            },
            None => None,
        };
        super::phase(&self.record.id, "adapter-finished");
        Ok(Some(StepEnd {
            stop,
            exit_code,
            summary,
        }))
    }

    /// The step could not start: the task fails with `message`, and the step has no end.
    async fn could_not_start(&mut self, message: String) -> anyhow::Result<Option<StepEnd>> {
        self.record.error = Some(message);
        self.set_state(TaskState::Failed, None).await?;
        Ok(None)
    }

    /// Record how the task ended, from the end of its last step.
    async fn finish(&mut self, end: StepEnd) -> anyhow::Result<()> {
        let succeeded = end.succeeded();
        let StepEnd {
            stop,
            exit_code,
            summary,
        } = end;
        self.record.exit_code = exit_code;
        if let Some(s) = &summary
            && self.record.error.is_none()
        {
            self.record.error.clone_from(&s.error);
        }
        let model_usage = self.proxy.usage();
        if summary.is_some() || model_usage.is_some() {
            self.record.summary = Some(TaskSummary {
                run: summary,
                model_usage,
            });
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
        self.set_state(state, None).await
    }

    /// Persist a batch of lines and the agent events parsed from them (one adapter call for
    /// the batch), in one append: each line, then its events.
    async fn record_lines(
        &mut self,
        adapter: &mut Option<Box<dyn AdapterRun>>,
        batch: Vec<(OutputStream, lines::Line)>,
    ) -> anyhow::Result<()> {
        let lines: Vec<OutputLine> = batch
            .into_iter()
            .map(|(stream, line)| OutputLine {
                stream,
                text: line.text,
                partial: line.partial,
            })
            .collect();
        let mut parsed = Vec::new();
        let mut failed = None;
        if let Some(run) = adapter {
            match run.parse_lines(&lines).await {
                Ok(events) => parsed = events,
                Err(failure) => {
                    // The output is still kept; only its interpretation stops.
                    failed = Some(failure);
                    *adapter = None;
                }
            }
        }
        let mut entries = Vec::with_capacity(lines.len() * 2);
        let mut parsed = parsed.into_iter();
        for line in lines {
            entries.push(EventBody::Output(line));
            entries.extend(parsed.next().into_iter().flatten().map(EventBody::Agent));
        }
        if let Some(failure) = failed {
            let message = format!("adapter failed: {}", failure.message);
            entries.push(EventBody::Agent(AgentEvent::Error(message)));
        }
        // Parsed even once the quota has cut the output: the adapter's summary, and so the
        // task's final state, come from all of it.
        self.log.append_output(entries).await
    }
}

/// Output lines read, parsed (one adapter call) and committed (one append) together at most.
/// A child printing slowly gets each line committed alone; a fast one is read in batches as
/// large as this. 1024 measured no faster than 256 (`cargo bench --bench tasks`): past a few
/// hundred lines a batch's cost is per line (SQLite's B-tree inserts), not per commit.
const LINES_PER_BATCH: usize = 256;

/// Ask the store for a running slot for `task` (on one node it always has one to give).
async fn claim_slot(inner: &Inner, tenant: &str, task: &str) -> bool {
    let limits = &inner.limits;
    let claimed = inner
        .store
        .claim_run_slot(
            tenant,
            task,
            limits.max_running.max(1) as u64,
            limits.max_running_per_tenant.max(1) as u64,
            now_ms(),
        )
        .await;
    claimed.unwrap_or_else(|e| {
        tracing::warn!(task, "claiming a running slot: {e}");
        false
    })
}

/// How often a task waiting for a running slot another node holds asks again.
const CLUSTER_SLOT_RETRY: Duration = Duration::from_millis(100);

/// Resolves once a cancel was asked for (never, if the sender is gone).
pub(super) async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    if cancel.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

pub(super) async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
