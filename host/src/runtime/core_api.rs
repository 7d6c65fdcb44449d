//! The host side of `gantry:plugin/workspaces` and `gantry:plugin/tasks`: thin conversions
//! onto [`crate::workspaces::Workspaces`] and [`crate::tasks::Supervisor`], always for the
//! calling tenant.

use super::call::CallState;
use super::host::{Services, backends, sessions, tasks, workspaces};
use crate::store::{EventRecord, TaskRecord, WorkspaceRecord};
use crate::tasks::{StartTask, Subscription, TaskError};
use crate::workspaces::WorkspaceError;
use std::time::Duration;
use wasmtime::component::Resource;

impl CallState {
    fn services(&self) -> Option<Services> {
        self.node.services().cloned()
    }
}

fn ws_error(e: WorkspaceError) -> workspaces::WorkspaceError {
    use workspaces::WorkspaceError as W;
    match e {
        WorkspaceError::NotFound => W::NotFound,
        WorkspaceError::Busy => W::Busy,
        WorkspaceError::BadPath(m) => W::BadPath(m),
        WorkspaceError::BadName(m) => W::BadName(m),
        WorkspaceError::TooLarge(n) => W::TooLarge(n),
        WorkspaceError::Internal(e) => {
            tracing::error!("workspace operation failed: {e:#}");
            W::Internal("internal error".into())
        }
    }
}

fn unavailable() -> workspaces::WorkspaceError {
    workspaces::WorkspaceError::Internal("workspaces are not available on this node".into())
}

fn workspace(w: WorkspaceRecord) -> workspaces::Workspace {
    workspaces::Workspace {
        id: w.id,
        name: w.name,
        created_at: w.created_at,
    }
}

impl workspaces::Host for CallState {
    fn create(
        &mut self,
        name: String,
    ) -> Result<workspaces::Workspace, workspaces::WorkspaceError> {
        let s = self.services().ok_or_else(unavailable)?;
        s.workspaces
            .create(&self.tenant, &name)
            .map(workspace)
            .map_err(ws_error)
    }

    fn create_for_call(
        &mut self,
        name: String,
    ) -> Result<workspaces::Workspace, workspaces::WorkspaceError> {
        let s = self.services().ok_or_else(unavailable)?;
        let ws = s.workspaces.create(&self.tenant, &name).map_err(ws_error)?;
        self.bound_workspaces.push(ws.id.clone());
        Ok(workspace(ws))
    }

    fn list(&mut self) -> Result<Vec<workspaces::Workspace>, workspaces::WorkspaceError> {
        let s = self.services().ok_or_else(unavailable)?;
        let list = s.workspaces.list(&self.tenant).map_err(ws_error)?;
        Ok(list.into_iter().map(workspace).collect())
    }

    fn get(&mut self, id: String) -> Result<workspaces::Workspace, workspaces::WorkspaceError> {
        let s = self.services().ok_or_else(unavailable)?;
        s.workspaces
            .get(&self.tenant, &id)
            .map(workspace)
            .map_err(ws_error)
    }

    fn delete(&mut self, id: String) -> Result<(), workspaces::WorkspaceError> {
        let s = self.services().ok_or_else(unavailable)?;
        s.workspaces
            .delete(&self.tenant, &id, |ws| s.tasks.workspace_busy(ws))
            .map_err(ws_error)
    }

    fn list_files(
        &mut self,
        id: String,
    ) -> Result<Vec<workspaces::FileEntry>, workspaces::WorkspaceError> {
        let s = self.services().ok_or_else(unavailable)?;
        let files = s
            .workspaces
            .list_files(&self.tenant, &id)
            .map_err(ws_error)?;
        Ok(files
            .into_iter()
            .map(|f| workspaces::FileEntry {
                path: f.path,
                size: f.size,
                modified: f.modified,
            })
            .collect())
    }

    fn read_file(
        &mut self,
        id: String,
        path: String,
        limit: u64,
    ) -> Result<Vec<u8>, workspaces::WorkspaceError> {
        let s = self.services().ok_or_else(unavailable)?;
        s.workspaces
            .read_file(&self.tenant, &id, &path, limit)
            .map_err(ws_error)
    }

    fn host_path(&mut self, id: String) -> Result<String, workspaces::WorkspaceError> {
        let s = self.services().ok_or_else(unavailable)?;
        let (_, path) = s.workspaces.dir(&self.tenant, &id).map_err(ws_error)?;
        Ok(path.display().to_string())
    }

    fn locate(&mut self, path: String) -> Result<workspaces::Location, workspaces::WorkspaceError> {
        let s = self.services().ok_or_else(unavailable)?;
        let (ws, subdir) = s.workspaces.locate(&self.tenant, &path).map_err(ws_error)?;
        Ok(workspaces::Location {
            workspace_id: ws.id,
            subdir,
        })
    }

    fn exists(&mut self, id: String, path: String) -> Result<bool, workspaces::WorkspaceError> {
        let s = self.services().ok_or_else(unavailable)?;
        s.workspaces
            .exists(&self.tenant, &id, &path)
            .map_err(ws_error)
    }
}

fn task_error(e: TaskError) -> tasks::TaskError {
    use tasks::TaskError as T;
    match e {
        TaskError::NotFound => T::NotFound,
        TaskError::Workspace(WorkspaceError::NotFound) => T::BadRequest("no such workspace".into()),
        TaskError::Workspace(e) => T::BadRequest(e.to_string()),
        TaskError::UnknownBackend(b) => T::BadRequest(format!("no backend named {b:?}")),
        TaskError::Refused(m) => T::Refused(m),
        TaskError::Adapter(f) => T::Internal(f.message()),
        TaskError::Internal(e) => {
            tracing::error!("task operation failed: {e:#}");
            T::Internal("internal error".into())
        }
    }
}

fn no_tasks() -> tasks::TaskError {
    tasks::TaskError::Internal("tasks are not available on this node".into())
}

fn task(t: TaskRecord) -> tasks::Task {
    tasks::Task {
        id: t.id,
        workspace_id: t.workspace_id,
        backend: t.backend,
        state: t.state.as_str().to_string(),
        created_at: t.created_at,
        started_at: t.started_at,
        finished_at: t.finished_at,
        exit_code: t.exit_code,
        error: t.error,
        request_json: t.request.to_string(),
        summary_json: t.summary.map(|s| s.to_string()),
        last_seq: t.last_seq,
        output_lines: t.output_lines,
    }
}

fn event(e: EventRecord) -> tasks::Event {
    tasks::Event {
        seq: e.seq,
        kind: e.kind,
        data_json: e.data.to_string(),
        at: e.at,
    }
}

/// The most events one `next` call returns.
const MAX_EVENTS_PER_CALL: u32 = 1000;

impl tasks::Host for CallState {
    async fn start(
        &mut self,
        request: tasks::StartRequest,
    ) -> Result<tasks::Task, tasks::TaskError> {
        let s = self.services().ok_or_else(no_tasks)?;
        let start = StartTask {
            workspace_id: request.workspace_id,
            backend: request.backend,
            setup: request.setup.into_iter().map(convert_request).collect(),
            request: convert_request(request.request),
            timeout: request.timeout_ms.map(Duration::from_millis),
            subdir: request.subdir.filter(|d| !d.is_empty()),
        };
        let started = s
            .tasks
            .start(&self.tenant, start)
            .await
            .map_err(task_error)?;
        if request.bound_to_call {
            self.bound_tasks.push(started.id.clone());
        }
        Ok(task(started))
    }

    async fn wait_any(&mut self, ids: Vec<String>) -> Result<String, tasks::TaskError> {
        let s = self.services().ok_or_else(no_tasks)?;
        if ids.is_empty() {
            return Err(tasks::TaskError::BadRequest("no tasks to wait for".into()));
        }
        s.tasks
            .wait_any(&self.tenant, &ids)
            .await
            .map_err(task_error)
    }

    fn get(&mut self, id: String) -> Result<tasks::Task, tasks::TaskError> {
        let s = self.services().ok_or_else(no_tasks)?;
        s.tasks.get(&self.tenant, &id).map(task).map_err(task_error)
    }

    fn list(&mut self, workspace_id: Option<String>) -> Result<Vec<tasks::Task>, tasks::TaskError> {
        let s = self.services().ok_or_else(no_tasks)?;
        let list = s
            .tasks
            .list(&self.tenant, workspace_id.as_deref())
            .map_err(task_error)?;
        Ok(list.into_iter().map(task).collect())
    }

    fn cancel(&mut self, id: String) -> Result<tasks::Task, tasks::TaskError> {
        let s = self.services().ok_or_else(no_tasks)?;
        s.tasks
            .cancel(&self.tenant, &id)
            .map(task)
            .map_err(task_error)
    }

    fn subscribe(
        &mut self,
        id: String,
        from_seq: u64,
    ) -> Result<Resource<Subscription>, tasks::TaskError> {
        let s = self.services().ok_or_else(no_tasks)?;
        let sub = s
            .tasks
            .subscribe(&self.tenant, &id, from_seq)
            .map_err(task_error)?;
        self.table()
            .push(sub)
            .map_err(|e| tasks::TaskError::Internal(e.to_string()))
    }
}

impl tasks::HostSubscription for CallState {
    async fn next(
        &mut self,
        sub: Resource<Subscription>,
        max: u32,
    ) -> Result<Vec<tasks::Event>, tasks::TaskError> {
        let sub = self
            .table()
            .get_mut(&sub)
            .map_err(|e| tasks::TaskError::Internal(e.to_string()))?;
        let max = max.clamp(1, MAX_EVENTS_PER_CALL) as usize;
        let mut out = Vec::new();
        // Wait for the first event, then take what is already there.
        match sub.next().await {
            Ok(Some(first)) => out.push(event(first)),
            Ok(None) => return Ok(out),
            Err(e) => return Err(task_error(TaskError::Internal(e))),
        }
        while out.len() < max {
            match sub.next_ready() {
                Ok(Some(e)) => out.push(event(e)),
                Ok(None) => break,
                Err(e) => return Err(task_error(TaskError::Internal(e))),
            }
        }
        Ok(out)
    }

    fn drop(&mut self, sub: Resource<Subscription>) -> wasmtime::Result<()> {
        self.table().delete(sub)?;
        Ok(())
    }
}

impl backends::Host for CallState {
    async fn list(&mut self, refresh: bool) -> Vec<backends::Backend> {
        let Some(s) = self.services() else {
            return vec![];
        };
        let statuses = if refresh {
            s.backends.probe_all().await
        } else {
            s.backends.list().await
        };
        let runtime = s.backends.runtime();
        statuses
            .into_iter()
            .filter_map(|b| {
                let info = runtime.backend(&b.name)?.info().clone();
                Some(backends::Backend {
                    name: b.name,
                    binary: b.binary,
                    available: b.available,
                    version: b.version,
                    reason: b.reason,
                    supports_resume: info.supports_resume,
                    supports_system_prompt: info.supports_system_prompt,
                    supports_model: info.supports_model,
                    supports_max_turns: info.supports_max_turns,
                    checked_at: b.checked_at,
                })
            })
            .collect()
    }

    async fn preview(
        &mut self,
        name: String,
        request: super::host::types::PromptRequest,
    ) -> Result<Vec<String>, String> {
        let s = self
            .services()
            .ok_or_else(|| "backends are not available on this node".to_string())?;
        let runtime = s.backends.runtime();
        let backend = runtime
            .backend(&name)
            .ok_or_else(|| format!("no backend named {name:?}"))?;
        let spec = backend
            .build_command(&self.tenant, &convert_request(request))
            .await
            .map_err(|f| f.message())?
            .map_err(|e| crate::tasks::refusal_message(&e))?;
        Ok(std::iter::once(backend.binary().to_string())
            .chain(spec.args)
            .collect())
    }
}

fn session_error(e: crate::sessions::SessionError) -> sessions::SessionError {
    use crate::sessions::SessionError as E;
    match e {
        E::NotFound => sessions::SessionError::NotFound,
        E::BadRequest(m) => sessions::SessionError::BadRequest(m),
        E::Internal(e) => {
            tracing::error!("session operation failed: {e:#}");
            sessions::SessionError::Internal("internal error".into())
        }
    }
}

fn no_sessions() -> sessions::SessionError {
    sessions::SessionError::Internal("sessions are not available on this node".into())
}

fn session(r: crate::store::SessionRecord) -> sessions::Session {
    sessions::Session {
        id: r.id,
        backend: r.backend,
        status: r.status,
        workspace_id: r.workspace_id,
        created_at: r.created_at,
        updated_at: r.updated_at,
        data_json: r.data.to_string(),
    }
}

fn session_data(json: &str) -> Result<serde_json::Value, sessions::SessionError> {
    serde_json::from_str(json)
        .map_err(|e| sessions::SessionError::BadRequest(format!("data-json is not JSON: {e}")))
}

impl sessions::Host for CallState {
    fn create(
        &mut self,
        new: sessions::Session,
    ) -> Result<sessions::Session, sessions::SessionError> {
        let s = self.services().ok_or_else(no_sessions)?;
        let data = session_data(&new.data_json)?;
        s.sessions
            .create(
                &self.tenant,
                &new.backend,
                &new.status,
                new.workspace_id,
                data,
            )
            .map(session)
            .map_err(session_error)
    }

    fn get(&mut self, id: String) -> Result<sessions::Session, sessions::SessionError> {
        let s = self.services().ok_or_else(no_sessions)?;
        s.sessions
            .get(&self.tenant, &id)
            .map(session)
            .map_err(session_error)
    }

    fn update(
        &mut self,
        changed: sessions::Session,
    ) -> Result<sessions::Session, sessions::SessionError> {
        let s = self.services().ok_or_else(no_sessions)?;
        let data = session_data(&changed.data_json)?;
        s.sessions
            .update(
                &self.tenant,
                &changed.id,
                &changed.status,
                changed.workspace_id,
                data,
            )
            .map(session)
            .map_err(session_error)
    }

    fn list(&mut self, query: sessions::Query) -> Result<sessions::Page, sessions::SessionError> {
        let s = self.services().ok_or_else(no_sessions)?;
        let page = s
            .sessions
            .list(
                &self.tenant,
                &crate::store::SessionQuery {
                    backend: query.backend,
                    status: query.status,
                    limit: query.limit,
                    offset: query.offset,
                },
            )
            .map_err(session_error)?;
        Ok(sessions::Page {
            sessions: page.sessions.into_iter().map(session).collect(),
            total: page.total,
        })
    }

    fn delete(&mut self, id: String) -> Result<(), sessions::SessionError> {
        let s = self.services().ok_or_else(no_sessions)?;
        s.sessions.delete(&self.tenant, &id).map_err(session_error)
    }
}

fn convert_request(r: super::host::types::PromptRequest) -> crate::runtime::backend::PromptRequest {
    // The handler and backend bindings each have their own copy of the shared types.
    use super::host::types as h;
    use crate::runtime::backend as b;
    b::PromptRequest {
        prompt: r.prompt,
        args: r.args,
        model: r.model,
        system_prompt: r.system_prompt,
        max_turns: r.max_turns,
        approval_mode: match r.approval_mode {
            h::ApprovalMode::Default => b::ApprovalMode::Default,
            h::ApprovalMode::Auto => b::ApprovalMode::Auto,
            h::ApprovalMode::None => b::ApprovalMode::None,
            h::ApprovalMode::Always => b::ApprovalMode::Always,
        },
        sandbox_mode: match r.sandbox_mode {
            h::SandboxMode::Default => b::SandboxMode::Default,
            h::SandboxMode::ReadOnly => b::SandboxMode::ReadOnly,
            h::SandboxMode::Workspace => b::SandboxMode::Workspace,
            h::SandboxMode::Full => b::SandboxMode::Full,
        },
        extra_flags: r.extra_flags,
        resume_session: r.resume_session,
    }
}
