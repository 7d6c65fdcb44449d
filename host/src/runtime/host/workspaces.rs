//! `gantry:plugin/workspaces`: the caller's workspaces, always for the calling tenant.

use super::CallView;
use super::bindings::gantry::plugin::workspaces as wit;
use crate::store::WorkspaceRecord;
use crate::workspaces::WorkspaceError;

pub(crate) fn ws_error(e: WorkspaceError) -> wit::WorkspaceError {
    use wit::WorkspaceError as W;
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

fn workspace(w: WorkspaceRecord) -> wit::Workspace {
    wit::Workspace {
        id: w.id,
        name: w.name,
        created_at: w.created_at,
    }
}

impl wit::Host for CallView<'_> {
    async fn create(&mut self, name: String) -> Result<wit::Workspace, wit::WorkspaceError> {
        let ws = self.services.workspaces.create(self.tenant, &name).await;
        ws.map(workspace).map_err(ws_error)
    }

    async fn create_for_call(
        &mut self,
        name: String,
    ) -> Result<wit::Workspace, wit::WorkspaceError> {
        let ws = self
            .services
            .workspaces
            .create(self.tenant, &name)
            .await
            .map_err(ws_error)?;
        self.bound.workspaces.push(ws.id.clone());
        Ok(workspace(ws))
    }

    async fn list(&mut self) -> Result<Vec<wit::Workspace>, wit::WorkspaceError> {
        let list = self
            .services
            .workspaces
            .list(self.tenant)
            .await
            .map_err(ws_error)?;
        Ok(list.into_iter().map(workspace).collect())
    }

    async fn get(&mut self, id: String) -> Result<wit::Workspace, wit::WorkspaceError> {
        let ws = self.services.workspaces.get(self.tenant, &id).await;
        ws.map(workspace).map_err(ws_error)
    }

    async fn delete(&mut self, id: String) -> Result<(), wit::WorkspaceError> {
        let tasks = &self.services.tasks;
        self.services
            .workspaces
            .delete(self.tenant, &id, |ws| tasks.workspace_busy(ws))
            .await
            .map_err(ws_error)
    }

    async fn list_files(&mut self, id: String) -> Result<Vec<wit::FileEntry>, wit::WorkspaceError> {
        let files = self
            .services
            .workspaces
            .list_files(self.tenant, &id)
            .await
            .map_err(ws_error)?;
        Ok(files
            .into_iter()
            .map(|f| wit::FileEntry {
                path: f.path,
                size: f.size,
                modified: f.modified,
            })
            .collect())
    }

    async fn exists(&mut self, id: String, path: String) -> Result<bool, wit::WorkspaceError> {
        let ws = &self.services.workspaces;
        ws.exists(self.tenant, &id, &path).await.map_err(ws_error)
    }

    async fn read_file(
        &mut self,
        id: String,
        path: String,
        limit: u64,
    ) -> Result<Vec<u8>, wit::WorkspaceError> {
        let ws = &self.services.workspaces;
        ws.read_file(self.tenant, &id, &path, limit)
            .await
            .map_err(ws_error)
    }

    async fn display_path(&mut self, id: String) -> Result<String, wit::WorkspaceError> {
        let ws = &self.services.workspaces;
        ws.display_path(self.tenant, &id).await.map_err(ws_error)
    }

    async fn locate(&mut self, path: String) -> Result<wit::Location, wit::WorkspaceError> {
        let ws = &self.services.workspaces;
        let (ws, subdir) = ws.locate(self.tenant, &path).await.map_err(ws_error)?;
        Ok(wit::Location {
            workspace_id: ws.id,
            subdir,
        })
    }
}
