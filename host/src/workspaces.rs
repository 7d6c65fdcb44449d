//! Workspaces: one directory per workspace under `data_dir/workspaces/<tenant>/<id>`, reached
//! only through cap-std handles, so no path a caller gives can leave its workspace.
//!
//! Over the usual size because nearly half of it is tests: every path form that tries to
//! escape, kept beside the checks it attacks.

pub use crate::config::WorkdirPolicy;
use crate::store::{Store, WorkspaceRecord, now_ms};
use crate::tenants::TenantId;
use cap_std::ambient_authority;
use cap_std::fs::Dir;
use serde::Serialize;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// How many files a listing returns at most.
pub const MAX_LISTED_FILES: usize = 10_000;

/// Why a workspace operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// No such workspace (or file) for this tenant. Another tenant's ids land here too.
    #[error("not found")]
    NotFound,
    /// A task runs in the workspace.
    #[error("a task is running in this workspace")]
    Busy,
    /// The path is not a plain relative path inside the workspace.
    #[error("bad path: {0}")]
    BadPath(String),
    /// The name is empty, too long, or has control characters.
    #[error("bad name: {0}")]
    BadName(String),
    /// The file is larger than the caller's limit.
    #[error("the file is larger than {0} bytes")]
    TooLarge(u64),
    /// Storage failed.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<crate::store::StoreError> for WorkspaceError {
    fn from(e: crate::store::StoreError) -> Self {
        WorkspaceError::Internal(e.into())
    }
}

/// One file in a workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileEntry {
    /// Relative path, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, ms since the epoch.
    pub modified: i64,
}

/// The longest file name the file systems gantry runs on take (Linux's `NAME_MAX`), in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// Check a caller's path: relative, no `..`, no NUL, not empty, no name over
/// [`MAX_NAME_BYTES`]. Returns it normalized.
pub fn check_relative_path(path: &str) -> Result<PathBuf, WorkspaceError> {
    if path.is_empty() {
        return Err(WorkspaceError::BadPath("the path is empty".into()));
    }
    if path.contains('\0') {
        return Err(WorkspaceError::BadPath(
            "the path contains a NUL byte".into(),
        ));
    }
    let mut out = PathBuf::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) if part.len() > MAX_NAME_BYTES => {
                return Err(WorkspaceError::BadPath(format!(
                    "a name in the path is longer than {MAX_NAME_BYTES} bytes"
                )));
            }
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(WorkspaceError::BadPath("'..' is not allowed".into()));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(WorkspaceError::BadPath(
                    "the path must be relative to the workspace".into(),
                ));
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(WorkspaceError::BadPath("the path names no file".into()));
    }
    Ok(out)
}

/// Where display paths of gantry's own workspaces start.
pub const DISPLAY_ROOT: &str = "/workspaces/";

/// The workspaces of every tenant.
#[derive(Debug)]
pub struct Workspaces {
    root: Dir,
    root_path: PathBuf,
    /// gantry's data directory: never a working directory of its own accord.
    data_path: PathBuf,
    workdirs: WorkdirPolicy,
    store: Arc<dyn Store>,
}

fn io(e: std::io::Error) -> WorkspaceError {
    match e.kind() {
        // ENAMETOOLONG: the caller's path, however checked, is more than the file system takes.
        std::io::ErrorKind::InvalidFilename => {
            WorkspaceError::BadPath("the path is too long".into())
        }
        _ => WorkspaceError::Internal(e.into()),
    }
}

impl Workspaces {
    /// Open (creating) `data_dir/workspaces`.
    pub fn open(data_dir: &Path, store: Arc<dyn Store>) -> anyhow::Result<Workspaces> {
        let root_path = data_dir.join("workspaces");
        std::fs::create_dir_all(&root_path)?;
        let root_path = root_path.canonicalize()?;
        let root = Dir::open_ambient_dir(&root_path, ambient_authority())?;
        Ok(Workspaces {
            root,
            data_path: data_dir.canonicalize()?,
            root_path,
            workdirs: WorkdirPolicy::default(),
            store,
        })
    }

    /// Let tenants name directories outside their workspaces, as `policy` allows.
    pub fn with_workdirs(mut self, policy: &WorkdirPolicy) -> Workspaces {
        self.workdirs = policy.resolved();
        self
    }

    fn relative(tenant: &TenantId, id: &str) -> PathBuf {
        Path::new(tenant.as_str()).join(id)
    }

    /// Create a workspace and its directory.
    pub async fn create(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> Result<WorkspaceRecord, WorkspaceError> {
        if name.trim().is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
            return Err(WorkspaceError::BadName(
                "a name is 1 to 200 characters, none of them control characters".into(),
            ));
        }
        let record = WorkspaceRecord {
            id: uuid::Uuid::new_v4().to_string(),
            tenant: tenant.to_string(),
            name: name.to_string(),
            created_at: now_ms(),
            path: None,
        };
        self.root
            .create_dir_all(Self::relative(tenant, &record.id))
            .map_err(io)?;
        self.store.create_workspace(&record).await?;
        Ok(record)
    }

    /// A tenant's workspaces.
    pub async fn list(&self, tenant: &TenantId) -> Result<Vec<WorkspaceRecord>, WorkspaceError> {
        Ok(self.store.list_workspaces(tenant.as_str()).await?)
    }

    /// One of a tenant's workspaces.
    pub async fn get(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<WorkspaceRecord, WorkspaceError> {
        // Ids are UUIDs; anything else cannot name a workspace (nor a directory).
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(WorkspaceError::NotFound);
        }
        self.store
            .get_workspace(tenant.as_str(), id)
            .await?
            .ok_or(WorkspaceError::NotFound)
    }

    /// Delete a workspace and its files, unless `busy` says a task runs in it.
    pub async fn delete(
        &self,
        tenant: &TenantId,
        id: &str,
        busy: impl FnOnce(&str) -> bool,
    ) -> Result<(), WorkspaceError> {
        let ws = self.get(tenant, id).await?;
        if busy(&ws.id) {
            return Err(WorkspaceError::Busy);
        }
        // The store checks again over every node's tasks (the live set above is this node's).
        match self.store.delete_workspace(tenant.as_str(), &ws.id).await {
            Ok(_) => {}
            Err(crate::store::StoreError::Conflict(_)) => return Err(WorkspaceError::Busy),
            Err(e) => return Err(e.into()),
        }
        if ws.path.is_some() {
            // An attached directory is the operator's: only gantry's record of it goes.
            return Ok(());
        }
        match self.root.remove_dir_all(Self::relative(tenant, &ws.id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(e)),
        }
    }

    /// The workspace's directory handle, and its host path (a child's working directory).
    pub async fn dir(&self, tenant: &TenantId, id: &str) -> Result<(Dir, PathBuf), WorkspaceError> {
        let ws = self.get(tenant, id).await?;
        if let Some(path) = &ws.path {
            // Checked again at each use: the policy may have changed since it was attached.
            let path = PathBuf::from(path);
            if !self.workdirs.permits(tenant, &path, &self.data_path) {
                return Err(WorkspaceError::BadPath(format!(
                    "{} is no longer an allowed working directory",
                    path.display()
                )));
            }
            let dir =
                Dir::open_ambient_dir(&path, ambient_authority()).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => WorkspaceError::NotFound,
                    _ => io(e),
                })?;
            return Ok((dir, path));
        }
        let relative = Self::relative(tenant, &ws.id);
        let dir = self.root.open_dir(&relative).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => WorkspaceError::NotFound,
            _ => io(e),
        })?;
        Ok((dir, self.root_path.join(relative)))
    }

    /// The host path of a directory inside the workspace (`subdir` relative), checked to be a
    /// directory reached without leaving the workspace.
    pub async fn subdir(
        &self,
        tenant: &TenantId,
        id: &str,
        subdir: &str,
    ) -> Result<PathBuf, WorkspaceError> {
        let (dir, path) = self.dir(tenant, id).await?;
        if subdir.is_empty() {
            return Ok(path);
        }
        let relative = check_relative_path(subdir)?;
        // cap-std refuses a walk that a symlink would take out of the workspace.
        dir.open_dir(&relative).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory => {
                WorkspaceError::BadPath(format!("{subdir} is not a directory in the workspace"))
            }
            std::io::ErrorKind::PermissionDenied => {
                WorkspaceError::BadPath("the path leads outside the workspace".into())
            }
            _ => io(e),
        })?;
        Ok(path.join(relative))
    }

    /// A path for people that never shows the host's layout: `/workspaces/<id>` for a
    /// workspace of gantry's own, the directory the operator allowed for an attached one (the
    /// caller named it in the first place).
    pub async fn display_path(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<String, WorkspaceError> {
        let ws = self.get(tenant, id).await?;
        Ok(match ws.path {
            Some(attached) => attached,
            None => format!("{DISPLAY_ROOT}{}", ws.id),
        })
    }

    /// The workspace and subdirectory of a display path's part after `/workspaces/`.
    async fn locate_display(
        &self,
        tenant: &TenantId,
        rest: &str,
    ) -> Result<(WorkspaceRecord, String), WorkspaceError> {
        let (id, subdir) = rest.split_once('/').unwrap_or((rest, ""));
        let subdir = subdir.trim_end_matches('/');
        let ws = self.get(tenant, id).await?;
        if !subdir.is_empty() {
            self.subdir(tenant, &ws.id, subdir).await?;
        }
        Ok((ws, subdir.to_string()))
    }

    /// Which of the tenant's workspaces holds the directory at the path `path` (a
    /// display path `/workspaces/<id>/…`, or an absolute host path),
    /// and where inside it; or, for a directory the `[workdirs]` policy allows the tenant, the
    /// workspace attached to it. A path that does not exist, is not a directory, or is neither
    /// gets one answer, so callers learn nothing of other paths.
    pub async fn locate(
        &self,
        tenant: &TenantId,
        path: &str,
    ) -> Result<(WorkspaceRecord, String), WorkspaceError> {
        let refused = || {
            WorkspaceError::BadPath(format!(
                "{path} is not a directory inside one of your workspaces"
            ))
        };
        if let Some(rest) = path.strip_prefix(DISPLAY_ROOT) {
            return self
                .locate_display(tenant, rest)
                .await
                .map_err(|e| match e {
                    WorkspaceError::Internal(e) => WorkspaceError::Internal(e),
                    _ => refused(),
                });
        }
        let given = Path::new(path);
        if !given.is_absolute() || path.contains('\0') {
            return Err(WorkspaceError::BadPath(
                "a working directory must be an absolute path".into(),
            ));
        }
        // Resolved first, so a symlink cannot make a path look like it is inside.
        let resolved = std::fs::canonicalize(given).map_err(|_| refused())?;
        let Ok(inside) = resolved.strip_prefix(self.root_path.join(tenant.as_str())) else {
            return self
                .attach(tenant, &resolved)
                .await?
                .map(|ws| (ws, String::new()))
                .ok_or_else(refused);
        };
        let mut parts = inside.components();
        let id = match parts.next() {
            Some(Component::Normal(id)) => id.to_str().ok_or_else(refused)?.to_string(),
            _ => return Err(refused()),
        };
        let subdir: Vec<&str> = parts
            .map(|c| c.as_os_str().to_str().ok_or_else(refused))
            .collect::<Result<_, _>>()?;
        let subdir = subdir.join("/");
        let ws = self.get(tenant, &id).await.map_err(|e| match e {
            WorkspaceError::NotFound => refused(),
            other => other,
        })?;
        self.subdir(tenant, &ws.id, &subdir)
            .await
            .map_err(|_| refused())?;
        Ok((ws, subdir))
    }

    /// The tenant's workspace for an operator-allowed directory outside the data directory
    /// (made on first use); `None` when the policy does not allow it.
    async fn attach(
        &self,
        tenant: &TenantId,
        dir: &Path,
    ) -> Result<Option<WorkspaceRecord>, WorkspaceError> {
        if !self.workdirs.permits(tenant, dir, &self.data_path) || !dir.is_dir() {
            return Ok(None);
        }
        let path = dir.to_str().ok_or_else(|| {
            WorkspaceError::BadPath("the working directory's path is not UTF-8".into())
        })?;
        let existing = self.store.list_workspaces(tenant.as_str()).await?;
        if let Some(ws) = existing
            .into_iter()
            .find(|w| w.path.as_deref() == Some(path))
        {
            return Ok(Some(ws));
        }
        let record = WorkspaceRecord {
            id: uuid::Uuid::new_v4().to_string(),
            tenant: tenant.to_string(),
            name: format!("workdir {path}"),
            created_at: now_ms(),
            path: Some(path.to_string()),
        };
        self.store.create_workspace(&record).await?;
        Ok(Some(record))
    }

    /// Copy the regular files and directories of workspace `from` into workspace `to` (both
    /// the tenant's); symlinks and special files are skipped, so nothing outside `from` is
    /// reached. How many files were copied.
    pub async fn copy_files(
        &self,
        tenant: &TenantId,
        from: &str,
        to: &str,
    ) -> Result<u64, WorkspaceError> {
        let (source, _) = self.dir(tenant, from).await?;
        let (target, _) = self.dir(tenant, to).await?;
        tokio::task::spawn_blocking(move || copy_tree(&source, &target))
            .await
            .map_err(|e| WorkspaceError::Internal(e.into()))?
            .map_err(io)
    }

    /// Every regular file in the workspace (symlinks are not followed), sorted by path.
    pub async fn list_files(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<Vec<FileEntry>, WorkspaceError> {
        let (dir, _) = self.dir(tenant, id).await?;
        let mut out = Vec::new();
        walk(&dir, "", &mut out).map_err(io)?;
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Whether something exists at `path` in the workspace (symlinks are not followed, so a
    /// link counts as itself, wherever it points).
    pub async fn exists(
        &self,
        tenant: &TenantId,
        id: &str,
        path: &str,
    ) -> Result<bool, WorkspaceError> {
        let relative = check_relative_path(path)?;
        let (dir, _) = self.dir(tenant, id).await?;
        match dir.symlink_metadata(&relative) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(
                WorkspaceError::BadPath("the path leads outside the workspace".into()),
            ),
            Err(e) => Err(io(e)),
        }
    }

    /// Read one file, refusing escaping paths and files over `limit` bytes.
    pub async fn read_file(
        &self,
        tenant: &TenantId,
        id: &str,
        path: &str,
        limit: u64,
    ) -> Result<Vec<u8>, WorkspaceError> {
        let (file, meta) = self.open_file(tenant, id, path).await?;
        if meta.len() > limit {
            return Err(WorkspaceError::TooLarge(limit));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.take(limit + 1).read_to_end(&mut bytes).map_err(io)?;
        if bytes.len() as u64 > limit {
            return Err(WorkspaceError::TooLarge(limit));
        }
        Ok(bytes)
    }

    /// A regular file of the tenant's workspace, opened for reading inside it (a symlink
    /// out is refused), with its metadata: for answers that stream it.
    pub async fn open_file(
        &self,
        tenant: &TenantId,
        id: &str,
        path: &str,
    ) -> Result<(std::fs::File, std::fs::Metadata), WorkspaceError> {
        let relative = check_relative_path(path)?;
        let (dir, _) = self.dir(tenant, id).await?;
        let file = dir.open(&relative).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => WorkspaceError::NotFound,
            // cap-std refuses symlinks that lead outside the directory.
            std::io::ErrorKind::PermissionDenied => {
                WorkspaceError::BadPath("the path leads outside the workspace".into())
            }
            _ => io(e),
        })?;
        let file = file.into_std();
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(WorkspaceError::BadPath("not a regular file".into()));
        }
        Ok((file, meta))
    }
}

fn copy_tree(source: &Dir, target: &Dir) -> std::io::Result<u64> {
    let mut copied = 0;
    for entry in source.entries()? {
        let entry = entry?;
        let name = entry.file_name();
        let ty = entry.file_type()?;
        if ty.is_dir() {
            match target.create_dir(&name) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            copied += copy_tree(&entry.open_dir()?, &target.open_dir(&name)?)?;
        } else if ty.is_file() {
            source.copy(&name, target, &name)?;
            copied += 1;
        }
    }
    Ok(copied)
}

fn walk(dir: &Dir, prefix: &str, out: &mut Vec<FileEntry>) -> std::io::Result<()> {
    for entry in dir.entries()? {
        if out.len() >= MAX_LISTED_FILES {
            return Ok(());
        }
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        let ty = entry.file_type()?;
        if ty.is_dir() {
            walk(&entry.open_dir()?, &path, out)?;
        } else if ty.is_file() {
            let meta = entry.metadata()?;
            let modified = meta
                .modified()
                .ok()
                .map(|t| t.into_std())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as i64);
            out.push(FileEntry {
                path,
                size: meta.len(),
                modified,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Sqlite;

    fn setup() -> (tempfile::TempDir, Workspaces) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Sqlite::open(&dir.path().join("g.db")).unwrap());
        let ws = Workspaces::open(dir.path(), store).unwrap();
        (dir, ws)
    }

    fn alice() -> TenantId {
        TenantId::new("alice").unwrap()
    }

    #[tokio::test]
    async fn workdirs_locate_own_workspaces_and_allowed_directories_only() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let outside = tmp.path().join("srv");
        for d in ["alice/proj/src", "alice/secret", "bob"] {
            std::fs::create_dir_all(outside.join(d)).unwrap();
        }
        std::fs::create_dir_all(&data).unwrap();
        let store = Arc::new(Sqlite::open(&data.join("g.db")).unwrap());
        let policy = WorkdirPolicy {
            allowed: [
                ("alice".to_string(), vec![outside.join("alice")]),
                // Even an allowed prefix over the data directory does not reach it.
                ("*".to_string(), vec![data.clone()]),
            ]
            .into(),
            blocked: vec![outside.join("alice/secret")],
        };
        let spaces = Workspaces::open(&data, store)
            .unwrap()
            .with_workdirs(&policy);
        let bob = TenantId::new("bob").unwrap();
        let path = |p: &Path| p.display().to_string();

        // A directory inside one's own workspace.
        let own = spaces.create(&alice(), "own").await.unwrap();
        let (dir, root) = spaces.dir(&alice(), &own.id).await.unwrap();
        dir.create_dir_all("sub/deeper").unwrap();
        let (found, subdir) = spaces
            .locate(&alice(), &path(&root.join("sub/deeper")))
            .await
            .unwrap();
        assert_eq!(
            (found.id.as_str(), subdir.as_str()),
            (own.id.as_str(), "sub/deeper")
        );
        assert_eq!(
            spaces.subdir(&alice(), &own.id, "sub").await.unwrap(),
            root.join("sub")
        );

        // Another tenant cannot name it, allowed prefix over the data directory or not.
        assert!(matches!(
            spaces.locate(&bob, &path(&root)).await,
            Err(WorkspaceError::BadPath(_))
        ));

        // An allowed directory becomes a workspace once; its files stay when it goes.
        let proj = outside.join("alice/proj").canonicalize().unwrap();
        let (attached, subdir) = spaces.locate(&alice(), &path(&proj)).await.unwrap();
        assert_eq!(subdir, "");
        assert_eq!(attached.path.as_deref(), Some(path(&proj).as_str()));
        let (again, _) = spaces
            .locate(&alice(), &format!("{}/./", path(&proj)))
            .await
            .unwrap();
        assert_eq!(again.id, attached.id);
        assert_eq!(spaces.dir(&alice(), &attached.id).await.unwrap().1, proj);
        spaces
            .delete(&alice(), &attached.id, |_| false)
            .await
            .unwrap();
        assert!(
            proj.join("src").is_dir(),
            "gantry never deletes an attached directory"
        );

        for refused in [
            outside.join("alice/secret"), // blocked inside an allowed prefix
            outside.join("bob"),          // allowed to no one
            outside.join("alice/missing"),
            tmp.path().to_path_buf(),
            PathBuf::from("/etc"),
        ] {
            assert!(
                matches!(
                    spaces.locate(&alice(), &path(&refused)).await,
                    Err(WorkspaceError::BadPath(_))
                ),
                "{}",
                refused.display()
            );
        }
        // Bob is allowed nothing outside his own workspaces.
        assert!(spaces.locate(&bob, &path(&proj)).await.is_err());
        assert!(matches!(
            spaces.locate(&alice(), "relative").await,
            Err(WorkspaceError::BadPath(_))
        ));
    }

    #[tokio::test]
    async fn every_escaping_path_form_is_refused() {
        for bad in [
            "",
            "..",
            "../x",
            "a/../../x",
            "a/..",
            "/etc/passwd",
            "a\0b",
            ".",
            "./",
        ] {
            assert!(
                matches!(check_relative_path(bad), Err(WorkspaceError::BadPath(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            check_relative_path("./a/b.txt").unwrap(),
            PathBuf::from("a/b.txt")
        );
    }

    #[tokio::test]
    async fn names_and_paths_too_long_for_the_file_system_are_bad_paths() {
        let longest = "a".repeat(MAX_NAME_BYTES);
        check_relative_path(&format!("{longest}/b")).unwrap();
        let over = "a".repeat(MAX_NAME_BYTES + 1);
        assert!(matches!(
            check_relative_path(&format!("x/{over}")),
            Err(WorkspaceError::BadPath(_))
        ));
        // Each name fits, the whole does not (PATH_MAX): the file system's refusal is the
        // caller's, not a storage failure.
        let (_tmp, spaces) = setup();
        let ws = spaces.create(&alice(), "w").await.unwrap();
        let deep = vec![longest.as_str(); 20].join("/");
        for result in [
            spaces
                .read_file(&alice(), &ws.id, &deep, 10)
                .await
                .map(|_| ()),
            spaces.exists(&alice(), &ws.id, &deep).await.map(|_| ()),
            spaces.subdir(&alice(), &ws.id, &deep).await.map(|_| ()),
        ] {
            assert!(
                matches!(result, Err(WorkspaceError::BadPath(_))),
                "{result:?}"
            );
        }
    }

    #[tokio::test]
    async fn files_list_and_read_inside_the_workspace_only() {
        let (tmp, spaces) = setup();
        let ws = spaces.create(&alice(), "demo").await.unwrap();
        let (dir, host_path) = spaces.dir(&alice(), &ws.id).await.unwrap();
        assert!(host_path.starts_with(tmp.path().canonicalize().unwrap()));
        dir.create_dir_all("src").unwrap();
        dir.write("src/main.rs", b"fn main() {}").unwrap();
        dir.write("README", b"hi").unwrap();
        std::fs::write(tmp.path().join("secret"), b"outside").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret"), host_path.join("link")).unwrap();
        std::os::unix::fs::symlink("../../../secret", host_path.join("rel-link")).unwrap();

        assert!(spaces.exists(&alice(), &ws.id, "src").await.unwrap());
        assert!(spaces.exists(&alice(), &ws.id, "link").await.unwrap());
        assert!(
            !spaces
                .exists(&alice(), &ws.id, "src/missing")
                .await
                .unwrap()
        );
        assert!(matches!(
            spaces.exists(&alice(), &ws.id, "../../secret").await,
            Err(WorkspaceError::BadPath(_))
        ));

        let files = spaces.list_files(&alice(), &ws.id).await.unwrap();
        let paths: Vec<_> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["README", "src/main.rs"]);
        assert_eq!(files[1].size, 12);
        assert_eq!(
            spaces
                .read_file(&alice(), &ws.id, "src/main.rs", 100)
                .await
                .unwrap(),
            b"fn main() {}"
        );
        for escaping in [
            "link",
            "rel-link",
            "../../../secret",
            "/etc/passwd",
            "src/../../x",
        ] {
            let err = spaces
                .read_file(&alice(), &ws.id, escaping, 100)
                .await
                .unwrap_err();
            assert!(
                matches!(err, WorkspaceError::BadPath(_)),
                "{escaping}: {err:?}"
            );
        }
        assert!(matches!(
            spaces.read_file(&alice(), &ws.id, "missing", 100).await,
            Err(WorkspaceError::NotFound)
        ));
        assert!(matches!(
            spaces.read_file(&alice(), &ws.id, "src/main.rs", 5).await,
            Err(WorkspaceError::TooLarge(5))
        ));
        assert!(matches!(
            spaces.read_file(&alice(), &ws.id, "src", 100).await,
            Err(WorkspaceError::BadPath(_))
        ));
    }

    #[tokio::test]
    async fn another_tenants_ids_are_unknown() {
        let (_tmp, spaces) = setup();
        let ws = spaces.create(&alice(), "mine").await.unwrap();
        let bob = TenantId::new("bob").unwrap();
        assert!(matches!(
            spaces.get(&bob, &ws.id).await,
            Err(WorkspaceError::NotFound)
        ));
        assert!(matches!(
            spaces.list_files(&bob, &ws.id).await,
            Err(WorkspaceError::NotFound)
        ));
        assert!(matches!(
            spaces.delete(&bob, &ws.id, |_| false).await,
            Err(WorkspaceError::NotFound)
        ));
        assert!(spaces.list(&bob).await.unwrap().is_empty());
        // Ids that are not UUIDs never reach the filesystem.
        assert!(matches!(
            spaces.get(&alice(), "../bob").await,
            Err(WorkspaceError::NotFound)
        ));
        assert_eq!(spaces.list(&alice()).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn delete_is_refused_while_busy_and_removes_files_after() {
        let (_tmp, spaces) = setup();
        let ws = spaces.create(&alice(), "w").await.unwrap();
        let (_, path) = spaces.dir(&alice(), &ws.id).await.unwrap();
        assert!(matches!(
            spaces.delete(&alice(), &ws.id, |_| true).await,
            Err(WorkspaceError::Busy)
        ));
        assert!(path.exists());
        spaces.delete(&alice(), &ws.id, |_| false).await.unwrap();
        assert!(!path.exists());
        assert!(matches!(
            spaces.get(&alice(), &ws.id).await,
            Err(WorkspaceError::NotFound)
        ));
    }

    #[tokio::test]
    async fn bad_names_are_refused() {
        let (_tmp, spaces) = setup();
        for bad in ["", "   ", "a\nb", &"x".repeat(201)] {
            assert!(matches!(
                spaces.create(&alice(), bad).await,
                Err(WorkspaceError::BadName(_))
            ));
        }
    }
}
