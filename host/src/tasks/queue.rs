//! The Web UI API's queues: board tasks ([`crate::projects`]) waiting in `high`, `normal` and
//! `low`, handed to the supervisor in that order — higher queues first, first come first
//! served within one — and only when it has room for the tenant, so that a later `high` task
//! never waits behind `normal` ones the supervisor already lined up. A task starts once every
//! task it depends on has completed, while its queue is not paused and its project is under
//! its `max_concurrent_tasks`.
//!
//! A run is a gantry task of the project's workspace with the board task's title and
//! description as the prompt. Its state comes back to the board task: `running` with its
//! progress, then `completed`, `failed`, `timed_out` or `cancelled`; a failed or timed-out
//! run is queued again while retries are left. Everything is in the store, so the queues
//! survive a restart: queued tasks stay queued, and a task that was running becomes
//! `interrupted` and is queued again when it has retries left.

use super::{StartTask, Supervisor, TaskError};
use crate::contract::{EventBody, TaskState, plain_request};
use crate::events::{EventBus, EventKind, NewEvent};
use crate::projects::events::task_event;
use crate::projects::{ProjectError, history_entry};
use crate::store::{
    BoardRefusal, BoardTaskRecord, BoardTaskStatus, HistoryAction, HistoryRecord, QueueFigures,
    QueueName, Store, now_ms,
};
use crate::tenants::TenantId;
use crate::users::{Permission, Principal};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// How often the queues are looked at without being woken (a dependency completed by hand,
/// say).
const TICK: Duration = Duration::from_secs(1);
/// Queued tasks of each project looked at per round: enough to fill the slots a round can
/// hand over, so that a project held back by its own limits hides no one else's.
const PER_PROJECT: u32 = 16;
/// Who gantry's own changes are by, in a task's history.
const SYSTEM_ID: &str = "system";
const SYSTEM_NAME: &str = "gantry";
/// The backend a task runs on when nothing names one.
pub const DEFAULT_BACKEND: &str = "claude";
/// How often a write that lost a race is tried again.
const RETRIES: usize = 5;

/// How to run a task.
#[derive(Debug, Clone)]
pub struct ExecuteOptions {
    /// The queue it waits in.
    pub queue: QueueName,
    /// Its runs' timeout.
    pub timeout_secs: Option<u64>,
    /// Automatic retries after a failed run.
    pub retry_attempts: u32,
    /// The backend plugin its runs use.
    pub backend: String,
}

/// A task put in a queue.
#[derive(Debug, Clone)]
pub struct Queued {
    /// The task as stored.
    pub task: BoardTaskRecord,
    /// Queued tasks of the tenant that start before it.
    pub position: u64,
    /// Tasks it waits for that have not completed.
    pub waiting_on: Vec<String>,
}

/// The board's queues; cheap to clone.
#[derive(Debug, Clone)]
pub struct BoardQueues {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    supervisor: Supervisor,
    wake: Notify,
    /// Tasks one tenant may have waiting.
    max_queued: u32,
    /// Told of every change the queues make.
    events: EventBus,
}

fn json<T: serde::Serialize>(value: &T) -> Option<String> {
    serde_json::to_string(value).ok()
}

/// A status change, as history keeps it.
fn status_entry(
    task: &BoardTaskRecord,
    user: (&str, &str),
    from: BoardTaskStatus,
    to: BoardTaskStatus,
    at: i64,
) -> HistoryRecord {
    let mut e = history_entry(user.0, user.1, task, at, HistoryAction::StatusChanged);
    e.field = Some("status".into());
    e.old_value = json(&from.as_str());
    e.new_value = json(&to.as_str());
    e
}

/// An event that says the run is getting on: an agent's message, tool call or result.
fn is_step(body: &EventBody) -> bool {
    matches!(body, EventBody::Agent(_))
}

/// Progress after `steps` steps of a run: it starts at 5 and approaches 95, so it moves with
/// the run without claiming to know how long the run is; the end sets 100.
pub fn progress_after(steps: u32) -> u8 {
    (95.0 - 90.0 * 0.85f64.powi(steps.min(1000) as i32)).round() as u8
}

impl BoardQueues {
    /// The queues over `store`, feeding `supervisor`: tasks left running by the previous
    /// process become interrupted (and queued again when they have retries left), then the
    /// dispatcher starts.
    /// At most `max_queued` tasks of one tenant wait at once.
    pub async fn start(
        store: Arc<dyn Store>,
        supervisor: Supervisor,
        max_queued: u32,
        events: EventBus,
    ) -> anyhow::Result<Self> {
        let inner = Arc::new(Inner {
            store,
            supervisor,
            wake: Notify::new(),
            max_queued,
            events,
        });
        inner.recover().await?;
        let weak = Arc::downgrade(&inner);
        // On a store several nodes share, a dead node's runs end when another takes them over
        // (its lease ran out): the board hears of it by looking again now and then.
        if inner.store.store_kind() != "sqlite" {
            tokio::spawn(recover_now_and_then(weak.clone()));
        }
        tokio::spawn(dispatcher(weak));
        Ok(BoardQueues { inner })
    }

    async fn task(&self, who: &Principal, id: &str) -> Result<BoardTaskRecord, ProjectError> {
        self.inner
            .store
            .get_board_task(who.tenant.as_str(), id)
            .await?
            .ok_or(ProjectError::TaskNotFound)
    }

    /// Put a task in a queue. Refused while it is queued or running.
    pub async fn execute(
        &self,
        who: &Principal,
        id: &str,
        options: ExecuteOptions,
    ) -> Result<Queued, ProjectError> {
        who.require(Permission::Execute)?;
        for _ in 0..RETRIES {
            let before = self.task(who, id).await?;
            if before.status.is_active() {
                return Err(ProjectError::AlreadyRunning);
            }
            self.room_for_one(who).await?;
            let now = now_ms();
            let mut after = before.clone();
            queue_again(&mut after, &options, now);
            let user = (who.id.as_str(), who.username.as_str());
            let mut executed = history_entry(user.0, user.1, &after, now, HistoryAction::Executed);
            executed.field = Some("queue".into());
            executed.new_value = json(&options.queue.as_str());
            let history = vec![
                status_entry(&after, user, before.status, after.status, now),
                executed,
            ];
            match self.inner.store.update_board_task(&after, &history).await? {
                Ok(()) => {
                    self.inner.wake.notify_one();
                    return self.queued(who, &after.id).await;
                }
                Err(BoardRefusal::Stale) => continue,
                Err(other) => return Err(internal(other)),
            }
        }
        Err(raced())
    }

    /// Refuse one more queued task of `who`'s tenant when its queues are full. (Checked
    /// before the write, not with it: concurrent requests may pass the cap by a few.)
    async fn room_for_one(&self, who: &Principal) -> Result<(), ProjectError> {
        let queued = self.inner.store.queued_count(who.tenant.as_str()).await?;
        if queued >= u64::from(self.inner.max_queued) {
            return Err(ProjectError::QueueFull(self.inner.max_queued));
        }
        Ok(())
    }

    /// A queued task with its place.
    async fn queued(&self, who: &Principal, id: &str) -> Result<Queued, ProjectError> {
        let task = self.task(who, id).await?;
        let position = if task.status == BoardTaskStatus::Queued {
            self.inner.store.queue_position(&task).await?
        } else {
            0
        };
        let waiting_on = self
            .inner
            .store
            .board_task_dependencies(who.tenant.as_str(), id)
            .await?
            .into_iter()
            .filter(|d| d.status != BoardTaskStatus::Completed)
            .map(|d| d.depends_on)
            .collect();
        Ok(Queued {
            task,
            position,
            waiting_on,
        })
    }

    /// Queue a task that ended without completing again, with one more retry counted.
    pub async fn retry(&self, who: &Principal, id: &str) -> Result<Queued, ProjectError> {
        who.require(Permission::Execute)?;
        for _ in 0..RETRIES {
            let before = self.task(who, id).await?;
            if before.status.is_active() {
                return Err(ProjectError::AlreadyRunning);
            }
            if matches!(
                before.status,
                BoardTaskStatus::Pending | BoardTaskStatus::Completed
            ) {
                return Err(ProjectError::Invalid {
                    field: "status",
                    issue: format!(
                        "a {} task is not retried; execute it instead",
                        before.status
                    ),
                });
            }
            self.room_for_one(who).await?;
            let now = now_ms();
            let options = ExecuteOptions {
                queue: before.queue.unwrap_or(QueueName::Normal),
                timeout_secs: before.timeout_secs,
                retry_attempts: before.retries_left,
                backend: before
                    .backend
                    .clone()
                    .unwrap_or_else(|| DEFAULT_BACKEND.into()),
            };
            let mut after = before.clone();
            queue_again(&mut after, &options, now);
            after.retry_attempt += 1;
            let user = (who.id.as_str(), who.username.as_str());
            let mut retried = history_entry(user.0, user.1, &after, now, HistoryAction::Retried);
            retried.field = Some("retry_attempt".into());
            retried.old_value = json(&before.retry_attempt);
            retried.new_value = json(&after.retry_attempt);
            let history = vec![
                status_entry(&after, user, before.status, after.status, now),
                retried,
            ];
            match self.inner.store.update_board_task(&after, &history).await? {
                Ok(()) => {
                    self.inner.wake.notify_one();
                    return self.queued(who, &after.id).await;
                }
                Err(BoardRefusal::Stale) => continue,
                Err(other) => return Err(internal(other)),
            }
        }
        Err(raced())
    }

    /// Cancel a queued or running task (a running one's process is stopped). Cancelling a
    /// task that is neither changes nothing.
    pub async fn cancel(
        &self,
        who: &Principal,
        id: &str,
        reason: Option<String>,
    ) -> Result<BoardTaskRecord, ProjectError> {
        who.require(Permission::Execute)?;
        let user = (who.id.as_str(), who.username.as_str());
        self.inner
            .cancel(user, who.tenant.as_str(), id, reason)
            .await
    }

    /// Pause queues (all when `queues` is empty): they start nothing new; running tasks go
    /// on.
    pub async fn pause(&self, who: &Principal, queues: &[QueueName]) -> Result<(), ProjectError> {
        self.set_paused(who, queues, true).await
    }

    /// Resume queues (all when `queues` is empty).
    pub async fn resume(&self, who: &Principal, queues: &[QueueName]) -> Result<(), ProjectError> {
        self.set_paused(who, queues, false).await?;
        self.inner.wake.notify_one();
        Ok(())
    }

    async fn set_paused(
        &self,
        who: &Principal,
        queues: &[QueueName],
        paused: bool,
    ) -> Result<(), ProjectError> {
        who.require(Permission::Execute)?;
        for queue in chosen(queues) {
            self.inner
                .store
                .set_queue_paused(who.tenant.as_str(), queue, paused)
                .await?;
        }
        Ok(())
    }

    /// Cancel every task waiting in `queues` (all when empty); their ids.
    pub async fn clear(
        &self,
        who: &Principal,
        queues: &[QueueName],
        reason: Option<String>,
    ) -> Result<Vec<String>, ProjectError> {
        who.require(Permission::Execute)?;
        let chosen = chosen(queues);
        let queued = self
            .inner
            .store
            .board_tasks_with_status(BoardTaskStatus::Queued)
            .await?;
        let mut cleared = Vec::new();
        let user = (who.id.as_str(), who.username.as_str());
        for task in queued {
            if task.tenant != who.tenant.as_str()
                || !task.queue.is_some_and(|q| chosen.contains(&q))
            {
                continue;
            }
            let done = self
                .inner
                .cancel(user, &task.tenant, &task.id, reason.clone())
                .await?;
            if done.status == BoardTaskStatus::Cancelled {
                cleared.push(task.id);
            }
        }
        Ok(cleared)
    }

    /// Move queued tasks to another queue (at its end); each id on its own.
    pub async fn move_to(
        &self,
        who: &Principal,
        ids: &[String],
        queue: QueueName,
    ) -> Result<Vec<(String, Result<(), ProjectError>)>, ProjectError> {
        who.require(Permission::Execute)?;
        let mut out = Vec::new();
        for id in ids {
            out.push((id.clone(), self.move_one(who, id, queue).await));
        }
        self.inner.wake.notify_one();
        Ok(out)
    }

    async fn move_one(
        &self,
        who: &Principal,
        id: &str,
        queue: QueueName,
    ) -> Result<(), ProjectError> {
        for _ in 0..RETRIES {
            let before = self.task(who, id).await?;
            if before.status != BoardTaskStatus::Queued {
                return Err(ProjectError::Invalid {
                    field: "task_ids",
                    issue: format!("task {id} is {}, not queued", before.status),
                });
            }
            if before.queue == Some(queue) {
                return Ok(());
            }
            let now = now_ms();
            let mut after = before.clone();
            after.queue = Some(queue);
            after.queued_at = Some(now);
            after.updated_at = now;
            let mut moved =
                history_entry(&who.id, &who.username, &after, now, HistoryAction::Updated);
            moved.field = Some("queue".into());
            moved.old_value = before.queue.and_then(|q| json(&q.as_str()));
            moved.new_value = json(&queue.as_str());
            match self.inner.store.update_board_task(&after, &[moved]).await? {
                Ok(()) => return Ok(()),
                Err(BoardRefusal::Stale) => continue,
                Err(other) => return Err(internal(other)),
            }
        }
        Err(raced())
    }

    /// The caller's queues: waiting and running per queue, which are paused, and the figures
    /// of what ended or started since `since`.
    pub async fn report(
        &self,
        who: &Principal,
        since: i64,
    ) -> Result<(QueueFigures, Vec<QueueName>), ProjectError> {
        who.require(Permission::Read)?;
        let figures = self
            .inner
            .store
            .queue_figures(who.tenant.as_str(), since)
            .await?;
        let paused = self.inner.store.paused_queues(who.tenant.as_str()).await?;
        Ok((figures, paused))
    }

    /// How many of one tenant's tasks run at once.
    pub fn workers(&self) -> usize {
        self.inner.supervisor.tenant_workers()
    }

    /// Look at the queues now (after a change that may let a task start).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }
}

/// Every queue when none is named.
fn chosen(queues: &[QueueName]) -> Vec<QueueName> {
    if queues.is_empty() {
        QueueName::ALL.to_vec()
    } else {
        queues.to_vec()
    }
}

/// Put `task` at the end of a queue, fresh: nothing of its last run is left on it.
fn queue_again(task: &mut BoardTaskRecord, options: &ExecuteOptions, now: i64) {
    task.status = BoardTaskStatus::Queued;
    task.queue = Some(options.queue);
    task.queued_at = Some(now);
    task.timeout_secs = options.timeout_secs;
    task.retries_left = options.retry_attempts;
    task.backend = Some(options.backend.clone());
    task.progress = 0;
    task.started_at = None;
    task.completed_at = None;
    task.run_id = None;
    task.updated_at = now;
}

fn internal(refusal: BoardRefusal) -> ProjectError {
    ProjectError::Internal(anyhow::anyhow!(
        "the store refused a queue write: {refusal:?}"
    ))
}

fn raced() -> ProjectError {
    ProjectError::Internal(anyhow::anyhow!("the task kept changing under this change"))
}

impl Inner {
    /// Write `after` (read as `after.version`) with `history`; on success its version is the
    /// stored one. Whether it was written (false: it changed meanwhile).
    async fn write(
        &self,
        after: &mut BoardTaskRecord,
        history: &[HistoryRecord],
    ) -> Result<bool, ProjectError> {
        self.write_ended(after, history, None).await
    }

    /// [`write`](Self::write), telling the event bus of the change (with its run's exit
    /// code, when it ended one).
    async fn write_ended(
        &self,
        after: &mut BoardTaskRecord,
        history: &[HistoryRecord],
        exit_code: Option<i32>,
    ) -> Result<bool, ProjectError> {
        let written = self.write_unannounced(after, history).await?;
        if written {
            self.announce(after, exit_code).await;
        }
        Ok(written)
    }

    /// [`write`](Self::write) of a change no reader of the task's events would see (its run's
    /// id), so without an event.
    async fn write_unannounced(
        &self,
        after: &mut BoardTaskRecord,
        history: &[HistoryRecord],
    ) -> Result<bool, ProjectError> {
        match self.store.update_board_task(after, history).await? {
            Ok(()) => {
                after.version += 1;
                Ok(true)
            }
            Err(BoardRefusal::Stale) => Ok(false),
            Err(other) => Err(internal(other)),
        }
    }

    async fn cancel(
        &self,
        user: (&str, &str),
        tenant: &str,
        id: &str,
        reason: Option<String>,
    ) -> Result<BoardTaskRecord, ProjectError> {
        for _ in 0..RETRIES {
            let before = self
                .store
                .get_board_task(tenant, id)
                .await?
                .ok_or(ProjectError::TaskNotFound)?;
            if !before.status.is_active() {
                return Ok(before);
            }
            let now = now_ms();
            let mut after = before.clone();
            after.status = BoardTaskStatus::Cancelled;
            after.completed_at = Some(now);
            after.updated_at = now;
            let mut cancelled = status_entry(&after, user, before.status, after.status, now);
            cancelled.action = HistoryAction::Cancelled;
            cancelled.note = reason.clone();
            if self.write(&mut after, &[cancelled]).await? {
                if let (Some(run), Ok(tenant)) = (&before.run_id, TenantId::new(tenant)) {
                    let _ = self.supervisor.cancel(&tenant, run).await;
                }
                self.wake.notify_one();
                return Ok(after);
            }
        }
        Err(raced())
    }

    async fn announce(&self, task: &BoardTaskRecord, exit_code: Option<i32>) {
        if let Ok(tenant) = TenantId::new(&task.tenant) {
            self.events
                .announce(
                    &tenant,
                    task_event(EventKind::TaskUpdated, task, false, exit_code),
                )
                .await;
        }
    }

    /// What a stopped node left: running tasks whose run is no longer live (this node's
    /// previous process, or a node whose lease ran out) become interrupted, and are queued
    /// again when they have retries left; each tenant hears of it as a `system.alert`. A run
    /// still live on some node is that node's to finish.
    async fn recover(&self) -> anyhow::Result<()> {
        let mut interrupted: std::collections::BTreeMap<String, u32> = Default::default();
        let running = self
            .store
            .board_tasks_with_status(BoardTaskStatus::Running)
            .await?;
        let shared = self.store.store_kind() != "sqlite";
        for task in running {
            match (&task.run_id, TenantId::new(&task.tenant)) {
                (Some(run_id), Ok(tenant)) => match self.supervisor.get(&tenant, run_id).await {
                    Ok(run) if !run.state.is_terminal() => continue,
                    // Ended just now, not by a take-over: its follower is recording how (it
                    // reads the board task, then writes its end), and this pass must not
                    // call it interrupted meanwhile (seen on PostgreSQL under load).
                    Ok(run)
                        if run.state != TaskState::Interrupted
                            && run
                                .finished_at
                                .is_some_and(|at| now_ms() - at < CLAIM_GRACE_MS) =>
                    {
                        continue;
                    }
                    _ => {}
                },
                // Claimed but its run not started yet: on a shared store another node may be
                // starting it right now; it is left alone for a while.
                (None, _) if shared && now_ms() - task.updated_at < CLAIM_GRACE_MS => continue,
                _ => {}
            }
            let now = now_ms();
            let mut after = task.clone();
            after.status = BoardTaskStatus::Interrupted;
            after.completed_at = Some(now);
            after.updated_at = now;
            let mut history = vec![status_entry(
                &after,
                (SYSTEM_ID, SYSTEM_NAME),
                task.status,
                after.status,
                now,
            )];
            history[0].note = Some("gantry stopped while it ran".into());
            self.requeue_if_retries_left(&mut after, &mut history, now);
            if let Err(e) = self.store.update_board_task(&after, &history).await? {
                tracing::warn!(task = %task.id, "recovering a board task: {e:?}");
                continue;
            }
            self.announce(&after, None).await;
            *interrupted.entry(task.tenant.clone()).or_default() += 1;
        }
        for (tenant, n) in interrupted {
            let Ok(tenant) = TenantId::new(&tenant) else {
                continue;
            };
            let alert = serde_json::json!({
                "level": "warning",
                "title": "Tasks interrupted",
                "message": format!(
                    "gantry stopped while {n} task(s) ran; they were interrupted and queued again where retries were left"
                ),
            });
            self.events
                .announce(&tenant, NewEvent::new(EventKind::SystemAlert, alert))
                .await;
        }
        Ok(())
    }

    /// After a run that did not complete: queue `task` again when it has retries left,
    /// adding the entries to `history`.
    fn requeue_if_retries_left(
        &self,
        task: &mut BoardTaskRecord,
        history: &mut Vec<HistoryRecord>,
        now: i64,
    ) {
        if task.retries_left == 0 {
            return;
        }
        let ended = task.status;
        task.retries_left -= 1;
        task.retry_attempt += 1;
        task.status = BoardTaskStatus::Queued;
        task.queued_at = Some(now);
        task.started_at = None;
        task.completed_at = None;
        task.progress = 0;
        let mut retried = history_entry(SYSTEM_ID, SYSTEM_NAME, task, now, HistoryAction::Retried);
        retried.field = Some("retry_attempt".into());
        retried.old_value = json(&(task.retry_attempt - 1));
        retried.new_value = json(&task.retry_attempt);
        history.push(retried);
        history.push(status_entry(
            task,
            (SYSTEM_ID, SYSTEM_NAME),
            ended,
            BoardTaskStatus::Queued,
            now,
        ));
    }

    /// Start what may start now.
    async fn dispatch(self: &Arc<Self>) -> anyhow::Result<()> {
        let candidates = self.store.startable_board_tasks(PER_PROJECT).await?;
        let mut full: Vec<String> = Vec::new();
        for task in candidates {
            if full.contains(&task.tenant) {
                continue;
            }
            let tenant = TenantId::new(&task.tenant)?;
            if !self.supervisor.has_room(&tenant) {
                full.push(task.tenant.clone());
                continue;
            }
            let Some(project) = self
                .store
                .get_project(&task.tenant, &task.project_id)
                .await?
            else {
                continue;
            };
            if let Some(max) = project.max_concurrent_tasks
                && self
                    .store
                    .running_in_project(&task.tenant, &project.id)
                    .await?
                    >= max
            {
                continue;
            }
            self.start_one(task, tenant, project.workspace_id).await?;
        }
        Ok(())
    }

    /// Claim a queued task and start its run.
    async fn start_one(
        self: &Arc<Self>,
        task: BoardTaskRecord,
        tenant: TenantId,
        workspace_id: String,
    ) -> anyhow::Result<()> {
        let now = now_ms();
        let mut after = task.clone();
        after.status = BoardTaskStatus::Running;
        after.started_at = Some(now);
        after.completed_at = None;
        after.progress = progress_after(0);
        after.updated_at = now;
        let claim = status_entry(
            &after,
            (SYSTEM_ID, SYSTEM_NAME),
            task.status,
            after.status,
            now,
        );
        if !self.write(&mut after, &[claim]).await.map_err(anyhow_of)? {
            // Cancelled or moved meanwhile: the next round sees it as it is now.
            return Ok(());
        }
        let prompt = match &task.description {
            Some(d) => format!("{}\n\n{d}", task.title),
            None => task.title.clone(),
        };
        let start = StartTask {
            workspace_id,
            backend: task
                .backend
                .clone()
                .unwrap_or_else(|| DEFAULT_BACKEND.into()),
            setup: Vec::new(),
            request: plain_request(&prompt),
            timeout: task.timeout_secs.map(Duration::from_secs),
            subdir: None,
        };
        match self.supervisor.start(&tenant, start).await {
            Ok(run) => {
                after.run_id = Some(run.id.clone());
                // The claim told of the status already; the run's id is not in any event.
                if !self
                    .write_unannounced(&mut after, &[])
                    .await
                    .map_err(anyhow_of)?
                {
                    // Cancelled between the claim and now: stop the run it no longer wants.
                    let _ = self.supervisor.cancel(&tenant, &run.id).await;
                    return Ok(());
                }
                tokio::spawn(follow(Arc::downgrade(self), tenant, after, run.id));
            }
            Err(e) => {
                let why = match &e {
                    TaskError::UnknownBackend(b) => format!("no backend named {b:?}"),
                    other => other.to_string(),
                };
                self.finish(after, BoardTaskStatus::Failed, Some(why), false, None)
                    .await?;
            }
        }
        Ok(())
    }

    /// The run of `task` ended as `status`: write it, retrying as the task allows.
    async fn finish(
        &self,
        mut task: BoardTaskRecord,
        status: BoardTaskStatus,
        note: Option<String>,
        retry: bool,
        exit_code: Option<i32>,
    ) -> anyhow::Result<()> {
        for _ in 0..RETRIES {
            if task.status != BoardTaskStatus::Running {
                // Cancelled (or changed) by someone while it ran: that stands.
                return Ok(());
            }
            let now = now_ms();
            let mut after = task.clone();
            after.status = status;
            after.completed_at = Some(now);
            after.updated_at = now;
            if status == BoardTaskStatus::Completed {
                after.progress = 100;
            }
            let mut history = vec![status_entry(
                &after,
                (SYSTEM_ID, SYSTEM_NAME),
                task.status,
                status,
                now,
            )];
            history[0].note = note.clone();
            if retry {
                self.requeue_if_retries_left(&mut after, &mut history, now);
            }
            if self
                .write_ended(&mut after, &history, exit_code)
                .await
                .map_err(anyhow_of)?
            {
                self.wake.notify_one();
                return Ok(());
            }
            match self.store.get_board_task(&task.tenant, &task.id).await? {
                Some(fresh) => task = fresh,
                None => return Ok(()),
            }
        }
        anyhow::bail!("task {} kept changing while its run ended", task.id)
    }
}

fn anyhow_of(e: ProjectError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// Follow a run: its progress while it goes, its end.
async fn follow(inner: Weak<Inner>, tenant: TenantId, mut task: BoardTaskRecord, run_id: String) {
    let Some(strong) = inner.upgrade() else {
        return;
    };
    let supervisor = strong.supervisor.clone();
    drop(strong);
    if let Ok(mut log) = supervisor.subscribe(&tenant, &run_id, 1).await {
        let mut steps = 0u32;
        while let Ok(Some(event)) = log.next().await {
            if !is_step(&event.body) {
                continue;
            }
            steps += 1;
            let progress = progress_after(steps);
            if progress <= task.progress {
                continue;
            }
            let Some(inner) = inner.upgrade() else { return };
            let mut after = task.clone();
            after.progress = progress;
            match inner.write(&mut after, &[]).await {
                Ok(true) => task = after,
                // Changed meanwhile (cancelled, say): read it again.
                _ => match inner.store.get_board_task(&task.tenant, &task.id).await {
                    Ok(Some(fresh)) if fresh.status == BoardTaskStatus::Running => task = fresh,
                    _ => break,
                },
            }
        }
    }
    let ended = supervisor.wait(&tenant, &run_id).await;
    let Some(inner) = inner.upgrade() else { return };
    let task = match inner.store.get_board_task(&task.tenant, &task.id).await {
        Ok(Some(fresh)) => fresh,
        _ => return,
    };
    let exit_code = ended.as_ref().ok().and_then(|run| run.exit_code);
    let (status, note, retry) = match ended {
        Ok(run) => match run.state {
            TaskState::Done => (BoardTaskStatus::Completed, None, false),
            TaskState::TimedOut => (BoardTaskStatus::TimedOut, run.error, true),
            TaskState::Cancelled => (BoardTaskStatus::Cancelled, run.error, false),
            TaskState::Interrupted => (BoardTaskStatus::Interrupted, run.error, true),
            _ => (
                BoardTaskStatus::Failed,
                run.error
                    .or_else(|| run.exit_code.map(|c| format!("exited with code {c}"))),
                true,
            ),
        },
        Err(e) => (BoardTaskStatus::Failed, Some(e.to_string()), true),
    };
    if let Err(e) = inner.finish(task, status, note, retry, exit_code).await {
        tracing::error!("ending a board task's run: {e:#}");
    }
}

/// How long a board task claimed without a run yet is taken to be starting on some node.
const CLAIM_GRACE_MS: i64 = 60_000;

/// How often the board looks for runs another node's take-over ended.
const RECOVER_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// [`Inner::recover`] every [`RECOVER_EVERY`], until the queues are dropped.
async fn recover_now_and_then(inner: std::sync::Weak<Inner>) {
    loop {
        tokio::time::sleep(RECOVER_EVERY).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if let Err(e) = inner.recover().await {
            tracing::warn!("looking for board tasks whose node stopped: {e:#}");
        }
    }
}

/// Start what may start whenever woken, and every [`TICK`], while the queues live.
async fn dispatcher(inner: Weak<Inner>) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        if let Err(e) = strong.dispatch().await {
            tracing::warn!("starting queued board tasks: {e:#}");
        }
        // Held for at most a tick: the Weak lets the queues go once the node drops them.
        let _ = tokio::time::timeout(TICK, strong.wake.notified()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_moves_and_never_claims_the_end() {
        assert_eq!(progress_after(0), 5);
        let mut last = 0;
        for steps in 0..200 {
            let p = progress_after(steps);
            assert!(p >= last && p <= 95, "{steps}: {p}");
            last = p;
        }
        assert_eq!(progress_after(u32::MAX), 95);
    }
}
