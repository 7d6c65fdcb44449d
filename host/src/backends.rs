//! Which backends can run on this node: each backend plugin's binary is looked up and asked
//! for its version at start and on demand, and the answer is kept until the next probe.

use crate::contract::BackendInfo;
use crate::store::now_ms;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The `PATH` task processes get, and the one their binaries are looked up in.
pub const CHILD_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// How long a version probe may take (node-based CLIs start slowly on a busy machine).
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// A loaded backend plugin, as the layers below the runtime see it: what its manifest allows
/// and what its adapter said of itself at load.
#[derive(Debug, Clone)]
pub struct BackendPlugin {
    /// The plugin's name (what a task's `backend` names).
    pub name: String,
    /// What the adapter says about its backend.
    pub info: BackendInfo,
    /// The binary the manifest allows this backend to spawn.
    pub binary: String,
    /// The variables of gantry's environment the manifest passes to this backend's processes.
    pub passed_env: Vec<String>,
    /// The backend's model API: the `base_url` setting, else the manifest's `model_upstream`.
    pub model_upstream: Option<String>,
    /// Extra paths the manifest lets this backend's tasks read.
    pub read_only: Vec<PathBuf>,
    /// Hosts the manifest lets this backend's tasks reach.
    pub egress: Vec<String>,
}

/// One backend as last probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendStatus {
    /// The plugin's name.
    pub name: String,
    /// The binary its manifest declares.
    pub binary: String,
    /// Whether the binary was found and answered its version probe.
    pub available: bool,
    /// The first line the version probe printed.
    pub version: Option<String>,
    /// Why it is not available.
    pub reason: Option<String>,
    /// When it was probed (ms since the epoch).
    pub checked_at: i64,
}

/// The availability of every backend plugin; cheap to clone.
#[derive(Debug, Clone)]
pub struct Availability {
    /// The backends loaded now (a reload replaces them).
    backends: Arc<std::sync::RwLock<Arc<[Arc<BackendPlugin>]>>>,
    probe_dir: PathBuf,
    statuses: Arc<Mutex<BTreeMap<String, BackendStatus>>>,
    /// The first round of probes (at start, or by the first listing), shared: a listing
    /// waits on the round in flight rather than starting its own.
    first_round: Arc<tokio::sync::OnceCell<()>>,
}

impl Availability {
    /// Availability of `backends` (in load order); probes run in `data_dir/tmp/probe` (their
    /// `HOME` and cwd).
    pub fn new(backends: Vec<Arc<BackendPlugin>>, data_dir: &Path) -> anyhow::Result<Availability> {
        let probe_dir = data_dir.join("tmp").join("probe");
        std::fs::create_dir_all(&probe_dir)?;
        Ok(Availability {
            backends: Arc::new(std::sync::RwLock::new(backends.into())),
            probe_dir,
            statuses: Arc::default(),
            first_round: Arc::default(),
        })
    }

    /// The backends loaded now.
    fn loaded(&self) -> Arc<[Arc<BackendPlugin>]> {
        self.backends
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The backend plugin named `name`.
    pub fn backend(&self, name: &str) -> Option<Arc<BackendPlugin>> {
        self.loaded().iter().find(|b| b.name == name).cloned()
    }

    /// From now on, the availability of `backends` (a reload's): a backend whose binary or
    /// version probe changed, or that is new, is probed again when next listed; one that is
    /// gone is forgotten.
    pub fn replace(&self, backends: Vec<Arc<BackendPlugin>>) {
        let mut loaded = self.backends.write().unwrap_or_else(|p| p.into_inner());
        let mut statuses = self.statuses.lock().unwrap();
        statuses.retain(|name, _| {
            let before = loaded.iter().find(|b| &b.name == name);
            let after = backends.iter().find(|b| &b.name == name);
            matches!((before, after), (Some(b), Some(a))
                if a.binary == b.binary && a.info.version_args == b.info.version_args)
        });
        *loaded = backends.into();
    }

    /// Probe every backend now, side by side.
    pub async fn probe_all(&self) -> Vec<BackendStatus> {
        let loaded = self.loaded();
        let probes = loaded.iter().map(|b| self.probe(&b.name));
        futures::future::join_all(probes)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Probe one backend now; `None` if there is no backend by that name.
    pub async fn probe(&self, name: &str) -> Option<BackendStatus> {
        let backend = self.backend(name)?;
        let binary = backend.binary.clone();
        let args = backend.info.version_args.clone();
        let outcome = match resolve(&binary) {
            Some(path) => run_version(&path, &args, &self.probe_dir).await,
            None => Err(format!("{binary} was not found on PATH ({CHILD_PATH})")),
        };
        let status = BackendStatus {
            name: name.to_string(),
            binary,
            available: outcome.is_ok(),
            reason: outcome.as_ref().err().cloned(),
            version: outcome.ok(),
            checked_at: now_ms(),
        };
        if !status.available {
            tracing::info!(
                backend = name,
                reason = status.reason.as_deref().unwrap_or(""),
                "backend unavailable"
            );
        }
        self.statuses
            .lock()
            .unwrap()
            .insert(name.to_string(), status.clone());
        Some(status)
    }

    /// The first round of probes: run once, side by side; later callers wait on it.
    pub async fn first_round(&self) {
        self.first_round
            .get_or_init(|| async {
                self.probe_all().await;
            })
            .await;
    }

    /// Every backend as last probed. Before the first round of probes has ended, waits for
    /// it (the one in flight since start, never a second round beside it).
    pub async fn list(&self) -> Vec<BackendStatus> {
        self.first_round().await;
        let known = self.statuses.lock().unwrap().clone();
        let mut out = Vec::new();
        for backend in self.loaded().iter() {
            match known.get(&backend.name) {
                Some(status) => out.push(status.clone()),
                // Not in the first round: a probe's record is always kept, so only a
                // backend added since; probe it now.
                None => out.extend(self.probe(&backend.name).await),
            }
        }
        out
    }
}

/// The executable a task of this binary would run: a path as given, a name looked up in
/// [`CHILD_PATH`].
pub fn resolve(binary: &str) -> Option<PathBuf> {
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if binary.contains('/') {
        let path = PathBuf::from(binary);
        return executable(&path).then_some(path);
    }
    CHILD_PATH
        .split(':')
        .map(|dir| Path::new(dir).join(binary))
        .find(|p| executable(p))
}

/// Run `path args…` with a clean environment; its first line of output, or why not.
async fn run_version(path: &Path, args: &[String], dir: &Path) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new(path);
    cmd.args(args)
        .env_clear()
        .env("PATH", CHILD_PATH)
        .env("HOME", dir)
        .env("LANG", "C.UTF-8")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let shown = format!("{} {}", path.display(), args.join(" "));
    // Spawned apart from a sandbox launcher's spawn, whose socket it must not inherit.
    let child = match crate::spawn::inheriting(&[], || cmd.spawn()) {
        Ok(Ok(child)) => child,
        Ok(Err(e)) | Err(e) => return Err(format!("`{shown}` could not be run: {e}")),
    };
    let output = match tokio::time::timeout(PROBE_TIMEOUT, child.wait_with_output()).await {
        Err(_) => return Err(format!("`{shown}` did not answer within {PROBE_TIMEOUT:?}")),
        Ok(Err(e)) => return Err(format!("`{shown}` could not be run: {e}")),
        Ok(Ok(output)) => output,
    };
    let first_line = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes)
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_string)
    };
    if output.status.success() {
        Ok(first_line(&output.stdout)
            .or_else(|| first_line(&output.stderr))
            .unwrap_or_default())
    } else {
        Err(format!(
            "`{shown}` failed ({}){}",
            output.status,
            first_line(&output.stderr)
                .map(|l| format!(": {l}"))
                .unwrap_or_default()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binaries_resolve_by_path_or_name() {
        assert!(resolve("sh").is_some_and(|p| p.is_absolute() && p.ends_with("sh")));
        assert_eq!(resolve("/bin/sh"), Some(PathBuf::from("/bin/sh")));
        assert_eq!(resolve("no-such-program-here"), None);
        assert_eq!(resolve("/no/such/file"), None);
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        assert_eq!(resolve(plain.to_str().unwrap()), None, "not executable");
        assert_eq!(resolve(dir.path().to_str().unwrap()), None, "a directory");
    }

    #[tokio::test]
    async fn version_probes_report_output_or_failure() {
        let dir = tempfile::tempdir().unwrap();
        let ok = run_version(
            Path::new("/bin/sh"),
            &["-c".into(), "echo v1.2; echo more".into()],
            dir.path(),
        )
        .await;
        assert_eq!(ok.as_deref(), Ok("v1.2"));
        let bad = run_version(
            Path::new("/bin/sh"),
            &["-c".into(), "echo broken >&2; exit 3".into()],
            dir.path(),
        )
        .await;
        let reason = bad.unwrap_err();
        assert!(
            reason.contains("exit status: 3") && reason.ends_with(": broken"),
            "{reason}"
        );
    }
}
