//! `gantry:plugin/tasks`: the caller's tasks and their logs, always for the calling tenant.
//! A subscription is a resource in the call's table; a handle that is not one is a trap.

use super::CallView;
use super::bindings::gantry::plugin::tasks as wit;
use crate::store::{EventRecord, TaskRecord};
use crate::tasks::{StartTask, Subscription, TaskError};
use crate::workspaces::WorkspaceError;
use std::time::Duration;
use wasmtime::component::Resource;

pub(crate) fn task_error(e: TaskError) -> wit::TaskError {
    use wit::TaskError as T;
    match e {
        TaskError::NotFound => T::NotFound,
        TaskError::Workspace(WorkspaceError::NotFound) => T::BadRequest("no such workspace".into()),
        TaskError::Workspace(e) => T::BadRequest(e.to_string()),
        TaskError::UnknownBackend(b) => T::BadRequest(format!("no backend named {b:?}")),
        TaskError::Refused(m) => T::Refused(m),
        // The adapters' pool stayed full: the caller may retry.
        TaskError::Adapter(f) if f.code == "over_capacity" => T::Busy(1),
        TaskError::Adapter(f) => T::Internal(f.message),
        TaskError::Internal(e) => {
            tracing::error!("task operation failed: {e:#}");
            T::Internal("internal error".into())
        }
    }
}

/// A task as the contract shows it.
pub(crate) fn task(t: TaskRecord) -> wit::Task {
    wit::Task {
        id: t.id,
        workspace_id: t.workspace_id,
        backend: t.backend,
        state: t.state,
        created_at: t.created_at,
        started_at: t.started_at,
        finished_at: t.finished_at,
        exit_code: t.exit_code,
        error: t.error,
        request: t.request,
        summary: t.summary,
        last_seq: t.last_seq,
        output_lines: t.output_lines,
    }
}

pub(crate) fn event(e: EventRecord) -> wit::Event {
    wit::Event {
        seq: e.seq,
        body: e.body,
        at: e.at,
    }
}

/// The most events one `next` call returns.
const MAX_EVENTS_PER_CALL: u32 = 1000;
/// About the most text one batch holds (it always holds at least one event): what a
/// component sees of a log in one call stays well inside its memory cap, whatever the lines'
/// length.
pub(crate) const MAX_BATCH_BYTES: usize = 1 << 20;

/// A `subscription` resource: the reader, and its place among the tenant's log readers until
/// it is dropped.
pub struct LogReader {
    pub(crate) reader: Subscription,
    pub(crate) _slot: crate::runtime::capacity::Permit,
}

/// Roughly the bytes an event takes once shaped (its text; a constant for the rest).
fn approx_size(body: &crate::contract::EventBody) -> usize {
    use crate::contract::{AgentEvent as A, EventBody as E};
    const FIXED: usize = 64;
    FIXED
        + match body {
            E::Output(line) => line.text.len(),
            E::Agent(A::Message(s) | A::Raw(s) | A::Error(s)) => s.len(),
            E::Agent(A::ToolUse(t)) => t.name.len() + t.input.len(),
            E::Agent(A::ToolResult(t)) => t.output.len(),
            E::Agent(A::Done(d)) => d.final_text.as_ref().map_or(0, String::len),
            E::Agent(_) | E::State(_) => 0,
        }
}

/// The next batch of `reader`: waits for one event, then takes what is already logged, up
/// to `max` events and about [`MAX_BATCH_BYTES`]. Empty once the log has ended.
pub(crate) async fn next_batch(
    reader: &mut Subscription,
    max: u32,
) -> Result<Vec<wit::Event>, TaskError> {
    let max = max.clamp(1, MAX_EVENTS_PER_CALL) as usize;
    let mut out = Vec::new();
    let Some(first) = reader.next().await.map_err(TaskError::Internal)? else {
        return Ok(out);
    };
    let mut bytes = approx_size(&first.body);
    out.push(event(std::sync::Arc::unwrap_or_clone(first)));
    while out.len() < max && bytes < MAX_BATCH_BYTES {
        match reader.next_ready().await.map_err(TaskError::Internal)? {
            Some(e) => {
                bytes += approx_size(&e.body);
                out.push(event(std::sync::Arc::unwrap_or_clone(e)));
            }
            None => break,
        }
    }
    Ok(out)
}

impl wit::Host for CallView<'_> {
    async fn start(&mut self, request: wit::StartRequest) -> Result<wit::Task, wit::TaskError> {
        // A surface runs only the backends its manifest names.
        if let Some(allowed) = self.backends
            && !allowed.contains(&request.backend)
        {
            return Err(wit::TaskError::Refused(format!(
                "this API may not start backend {:?}; it may start {}",
                request.backend,
                allowed.join(", ")
            )));
        }
        let start = StartTask {
            workspace_id: request.workspace_id,
            backend: request.backend,
            setup: request.setup,
            request: request.request,
            timeout: request.timeout_ms.map(Duration::from_millis),
            subdir: request.subdir.filter(|d| !d.is_empty()),
        };
        let started = self
            .services
            .tasks
            .start(self.tenant, start)
            .await
            .map_err(task_error)?;
        if request.bound_to_call {
            self.bound.tasks.push(started.id.clone());
        }
        Ok(task(started))
    }

    async fn wait_any(&mut self, ids: Vec<String>) -> Result<String, wit::TaskError> {
        if ids.is_empty() {
            return Err(wit::TaskError::BadRequest("no tasks to wait for".into()));
        }
        let tasks = &self.services.tasks;
        tasks.wait_any(self.tenant, &ids).await.map_err(task_error)
    }

    async fn get(&mut self, id: String) -> Result<wit::Task, wit::TaskError> {
        let tasks = &self.services.tasks;
        tasks
            .get(self.tenant, &id)
            .await
            .map(task)
            .map_err(task_error)
    }

    async fn list(
        &mut self,
        workspace_id: Option<String>,
    ) -> Result<Vec<wit::Task>, wit::TaskError> {
        let tasks = &self.services.tasks;
        let list = tasks
            .list(self.tenant, workspace_id.as_deref())
            .await
            .map_err(task_error)?;
        Ok(list.into_iter().map(task).collect())
    }

    async fn cancel(&mut self, id: String) -> Result<wit::Task, wit::TaskError> {
        let tasks = &self.services.tasks;
        tasks
            .cancel(self.tenant, &id)
            .await
            .map(task)
            .map_err(task_error)
    }

    async fn subscribe(
        &mut self,
        id: String,
        from_seq: u64,
    ) -> wasmtime::Result<Result<Resource<LogReader>, wit::TaskError>> {
        let Ok(slot) = self.capacity.stream(self.tenant) else {
            return Ok(Err(wit::TaskError::Busy(1)));
        };
        let tasks = &self.services.tasks;
        match tasks.subscribe(self.tenant, &id, from_seq).await {
            Ok(reader) => Ok(Ok(self.table.push(LogReader {
                reader,
                _slot: slot,
            })?)),
            Err(e) => Ok(Err(task_error(e))),
        }
    }
}

impl wit::HostSubscription for CallView<'_> {
    async fn next(
        &mut self,
        sub: Resource<LogReader>,
        max: u32,
    ) -> wasmtime::Result<Result<Vec<wit::Event>, wit::TaskError>> {
        let log = self.table.get_mut(&sub)?;
        Ok(next_batch(&mut log.reader, max).await.map_err(task_error))
    }

    async fn drop(&mut self, sub: Resource<LogReader>) -> wasmtime::Result<()> {
        self.table.delete(sub)?;
        Ok(())
    }
}
