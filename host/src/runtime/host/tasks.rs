//! `gantry:plugin/tasks`: the caller's tasks and their logs, always for the calling tenant.
//! A subscription is a resource in the call's table; a handle that is not one is a trap.

use super::CallView;
use super::bindings::gantry::plugin::tasks as wit;
use crate::store::{EventRecord, TaskRecord};
use crate::tasks::{StartTask, Subscription, TaskError};
use crate::workspaces::WorkspaceError;
use std::time::Duration;
use wasmtime::component::Resource;

fn task_error(e: TaskError) -> wit::TaskError {
    use wit::TaskError as T;
    match e {
        TaskError::NotFound => T::NotFound,
        TaskError::Workspace(WorkspaceError::NotFound) => T::BadRequest("no such workspace".into()),
        TaskError::Workspace(e) => T::BadRequest(e.to_string()),
        TaskError::UnknownBackend(b) => T::BadRequest(format!("no backend named {b:?}")),
        TaskError::Refused(m) => T::Refused(m),
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

fn event(e: EventRecord) -> wit::Event {
    wit::Event {
        seq: e.seq,
        body: e.body,
        at: e.at,
    }
}

/// The most events one `next` call returns.
const MAX_EVENTS_PER_CALL: u32 = 1000;

impl wit::Host for CallView<'_> {
    async fn start(&mut self, request: wit::StartRequest) -> Result<wit::Task, wit::TaskError> {
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
    ) -> wasmtime::Result<Result<Resource<Subscription>, wit::TaskError>> {
        let tasks = &self.services.tasks;
        match tasks.subscribe(self.tenant, &id, from_seq).await {
            Ok(sub) => Ok(Ok(self.table.push(sub)?)),
            Err(e) => Ok(Err(task_error(e))),
        }
    }
}

impl wit::HostSubscription for CallView<'_> {
    async fn next(
        &mut self,
        sub: Resource<Subscription>,
        max: u32,
    ) -> wasmtime::Result<Result<Vec<wit::Event>, wit::TaskError>> {
        let sub = self.table.get_mut(&sub)?;
        let max = max.clamp(1, MAX_EVENTS_PER_CALL) as usize;
        let mut out = Vec::new();
        // Wait for the first event, then take what is already there.
        match sub.next().await {
            Ok(Some(first)) => out.push(event(first)),
            Ok(None) => return Ok(Ok(out)),
            Err(e) => return Ok(Err(task_error(TaskError::Internal(e)))),
        }
        while out.len() < max {
            match sub.next_ready().await {
                Ok(Some(e)) => out.push(event(e)),
                Ok(None) => break,
                Err(e) => return Ok(Err(task_error(TaskError::Internal(e)))),
            }
        }
        Ok(Ok(out))
    }

    async fn drop(&mut self, sub: Resource<Subscription>) -> wasmtime::Result<()> {
        self.table.delete(sub)?;
        Ok(())
    }
}
