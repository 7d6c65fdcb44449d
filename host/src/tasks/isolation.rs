//! How isolated this node's tasks are, proven at start, and what each task's sandbox holds.
//!
//! At start gantry finds what the kernel offers (namespaces, cgroups, Landlock), then runs a
//! sandboxed probe that tries the forbidden things — read the data directory, read gantry's
//! environment, signal gantry, write outside its directories, reach gantry's port, change the
//! hostname — and names the level: `full`, `partial: <what is missing>` or `off`. Serving
//! several tenants with less than `full` needs `isolation = "weak"` in the config.

use super::sandbox::{self, Layers, Rlimits, SandboxSpec, cgroup};
use super::warm::{WarmLauncher, WarmLaunchers};

pub use crate::config::{EgressConfig, IsolationMode, SandboxConfig};
use std::path::{Path, PathBuf};

/// The node's isolation, found at start.
#[derive(Debug)]
pub struct Isolation {
    config: SandboxConfig,
    launcher: Option<PathBuf>,
    layers: Layers,
    cgroups: Option<cgroup::Cgroups>,
    landlock: bool,
    root: bool,
    forbidden: Vec<PathBuf>,
    level: String,
    /// Launchers started ahead of demand (see [`super::warm`]).
    warm: Option<std::sync::Arc<WarmLaunchers>>,
}

/// Everything one task's process gets from its sandbox, ready for the launcher.
#[derive(Debug)]
pub struct TaskSandbox {
    /// The launcher's arguments.
    pub spec: SandboxSpec,
    /// The task's cgroup, removed when this is dropped.
    pub cgroup: Option<cgroup::TaskCgroup>,
}

impl Isolation {
    /// What every constructor starts from: nothing but what the kernel and this process are
    /// (no layers, no cgroups, no level yet). No task may read `data_dir` or `secrets`.
    fn base(
        config: SandboxConfig,
        launcher: Option<PathBuf>,
        data_dir: &Path,
        secrets: &[PathBuf],
    ) -> Isolation {
        let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
        Isolation {
            config,
            launcher,
            layers: Layers::default(),
            cgroups: None,
            landlock: sandbox::landlock_available(),
            // SAFETY: a plain getter.
            root: unsafe { libc::geteuid() } == 0,
            forbidden: std::iter::once(data_dir)
                .chain(secrets.iter().map(PathBuf::as_path))
                .map(canonical)
                .collect(),
            level: String::new(),
            warm: None,
        }
    }

    /// Keep `[sandbox] warm_launchers` launchers of this sandbox ready (when tasks start
    /// through a launcher at all). Called once the sandbox is what it will stay.
    fn keep_warm(mut self) -> Isolation {
        if let Some(launcher) = &self.launcher
            && self.config.warm_launchers > 0
        {
            self.warm = Some(WarmLaunchers::new(
                launcher.clone(),
                self.layers,
                self.cgroups.clone(),
                self.config.limits,
                self.config.warm_launchers,
                self.skeleton(),
            ));
        }
        self
    }

    /// The skeleton warm launchers bind a root's system entries onto ahead of demand (see
    /// [`sandbox::skeleton`]), made afresh in the data directory; `None` (the root is then
    /// built whole for each task) without a root of its own, or when it cannot be made.
    fn skeleton(&self) -> Option<PathBuf> {
        if !self.layers.mount {
            return None;
        }
        let data_dir = self.forbidden.first()?;
        // Inside what it holds, a launcher's binds would nest in each other.
        let system = sandbox::skeleton::system_entries().chain([PathBuf::from("/dev")]);
        if system.into_iter().any(|p| data_dir.starts_with(p)) {
            return None;
        }
        match sandbox::skeleton::create(data_dir) {
            Ok(dir) => Some(dir),
            Err(e) => {
                tracing::warn!(
                    "cannot make the sandbox skeleton in {} ({e}); each task's root is built whole",
                    data_dir.display()
                );
                None
            }
        }
    }

    /// A launcher already in this sandbox's namespaces and cgroups, if one is ready.
    pub(super) fn take_warm(&self) -> Option<WarmLauncher> {
        self.warm.as_ref()?.take()
    }

    /// No sandbox but Landlock and rlimits applied in a forked child (the library used
    /// without a launcher).
    pub fn landlock_only(data_dir: &Path) -> Isolation {
        let config = SandboxConfig {
            namespaces: false,
            ..SandboxConfig::default()
        };
        let mut isolation = Isolation::base(config, None, data_dir, &[]);
        isolation.level = if isolation.landlock {
            "partial: no launcher (Landlock and rlimits only)".into()
        } else {
            "off".into()
        };
        isolation
    }

    /// Landlock and rlimits applied by `launcher` (no namespaces, no cgroups, no probe).
    pub fn launcher_only(launcher: PathBuf, data_dir: &Path) -> Isolation {
        Isolation {
            launcher: Some(launcher),
            ..Isolation::landlock_only(data_dir)
        }
        .keep_warm()
    }

    /// Exactly `layers` (and a cgroup per task when `cgroups`), unproven: for benchmarks that
    /// measure what each wall costs. `None` when a cgroup was asked for and none can be made.
    pub fn layered(
        config: &SandboxConfig,
        launcher: PathBuf,
        data_dir: &Path,
        layers: Layers,
        cgroups: bool,
    ) -> Option<Isolation> {
        let mut isolation = Isolation::base(config.clone(), Some(launcher), data_dir, &[]);
        if cgroups {
            isolation.cgroups = Some(cgroup::Cgroups::detect(&config.cgroup_parent).ok()?);
        }
        isolation.layers = layers;
        isolation.level = "unproven".into();
        Some(isolation.keep_warm())
    }

    /// The memory limit of a task's cgroup, in bytes.
    pub fn memory_limit(&self) -> u64 {
        self.config.limits.memory_max_bytes
    }

    /// Find what this machine offers for tasks started through `launcher`, and prove it with
    /// the probe (see the module's docs). No task may read `data_dir` or `secrets` (the config
    /// file, the key file); `api_port` is gantry's own port, which a task must not reach.
    pub async fn detect(
        config: &SandboxConfig,
        launcher: PathBuf,
        data_dir: &Path,
        secrets: &[PathBuf],
        api_port: u16,
    ) -> Isolation {
        let mut isolation = Isolation::base(config.clone(), Some(launcher), data_dir, secrets);
        let data_dir = isolation.forbidden[0].clone();
        let mut missing = Vec::new();
        if !isolation.landlock {
            missing.push("Landlock".to_string());
        }
        match cgroup::Cgroups::detect(&config.cgroup_parent) {
            Ok(c) => {
                let swept = c.sweep_abandoned(cgroup::ABANDONED_AFTER);
                if swept > 0 {
                    tracing::info!(
                        swept,
                        "removed empty task cgroups that a gantry stopped before it could left behind"
                    );
                }
                isolation.cgroups = Some(c);
            }
            Err(why) => missing.push(format!("cgroups ({why})")),
        }
        if !config.namespaces {
            missing.push("namespaces (turned off by [sandbox] namespaces = false)".into());
        } else {
            isolation.layers = Layers::ALL;
            if let Err(why) = isolation.probe(&data_dir, api_port).await {
                missing.push(format!("namespaces ({why})"));
                isolation.layers = Layers::default();
            }
        }
        isolation.level = if missing.is_empty() {
            "full".into()
        } else if !isolation.landlock && !isolation.layers.any() {
            "off".into()
        } else {
            format!("partial: no {}", missing.join(", no "))
        };
        isolation.keep_warm()
    }

    /// `full`, `partial: …` or `off`.
    pub fn level(&self) -> &str {
        &self.level
    }

    /// Whether the level is `full`.
    pub fn is_full(&self) -> bool {
        self.level == "full"
    }

    /// Whether tasks get their own network namespace (and so the proxy listener from inside
    /// it).
    pub fn own_network(&self) -> bool {
        self.layers.net
    }

    /// Whether tasks get namespaces (and so a socket to gantry whose closing ends them).
    pub fn namespaced(&self) -> bool {
        self.layers.any()
    }

    /// The launcher, when tasks start through one.
    pub fn launcher(&self) -> Option<&Path> {
        self.launcher.as_deref()
    }

    /// Whether task processes run under Landlock.
    pub fn landlock(&self) -> bool {
        self.landlock
    }

    /// The uid and gid outside that a tenant's tasks run as: gantry's own unless it is root.
    pub fn outside_ids(&self, tenant: &str) -> Option<(u32, u32)> {
        if !self.root || !self.layers.user {
            return None;
        }
        // FNV-1a: stable across releases, unlike std's hasher.
        let mut hash: u32 = 0x811c_9dc5;
        for b in tenant.bytes() {
            hash = (hash ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        let id = self.config.uid_base.saturating_add(hash % 65_536);
        Some((id, id))
    }

    /// The sandbox of task `id` of `tenant` running `program`, reading also `extra_read`,
    /// writing `write`. Makes its cgroup and hands its directories to the task's uid.
    pub fn task(
        &self,
        id: &str,
        tenant: &str,
        program: &Path,
        extra_read: &[PathBuf],
        write: &[&Path],
    ) -> anyhow::Result<TaskSandbox> {
        let mut spec = self.task_spec(id, tenant, program, extra_read, write)?;
        // One cgroup per process run: a task's next step may start while the last one's
        // cgroup is still being removed.
        static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let cgroup = match &self.cgroups {
            Some(c) => {
                let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Some(c.create(&format!("{id}-{run}"), &self.config.limits)?)
            }
            None => None,
        };
        spec.cgroups = cgroup
            .as_ref()
            .map(|c| c.dirs().to_vec())
            .unwrap_or_default();
        Ok(TaskSandbox { spec, cgroup })
    }

    /// What [`Isolation::task`] makes but the cgroup: for a warm launcher, which has its own.
    pub(super) fn task_spec(
        &self,
        id: &str,
        tenant: &str,
        program: &Path,
        extra_read: &[PathBuf],
        write: &[&Path],
    ) -> anyhow::Result<SandboxSpec> {
        let mut extra = self.config.read_only.clone();
        extra.extend(extra_read.iter().cloned());
        let forbidden: Vec<&Path> = self.forbidden.iter().map(PathBuf::as_path).collect();
        let (read, warnings) = sandbox::paths::task_read_paths(
            program,
            crate::backends::CHILD_PATH,
            &extra,
            &forbidden,
        );
        for w in warnings {
            tracing::warn!(task = id, "{w}");
        }
        let write: Vec<PathBuf> = write
            .iter()
            .map(|p| p.canonicalize())
            .collect::<std::io::Result<_>>()?;
        let outside_ids = self.outside_ids(tenant);
        if let Some((uid, gid)) = outside_ids {
            for dir in write
                .iter()
                .filter(|d| self.forbidden.iter().any(|f| d.starts_with(f)))
            {
                // Only gantry's own directories (never an operator's attached workdir), and
                // only the directory itself: what is inside was written by this tenant's
                // tasks, as this uid, or by gantry for them (chowned when written).
                std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
            }
        }
        Ok(SandboxSpec {
            layers: self.layers,
            read,
            write,
            rlimits: Rlimits::default(),
            outside_ids,
            cgroups: Vec::new(),
            sync_fd: None,
        })
    }

    /// Run the probe in a full sandbox; `Err` names the first thing that was not refused, or
    /// why the sandbox could not be made.
    async fn probe(&self, data_dir: &Path, api_port: u16) -> Result<(), String> {
        let launcher = self.launcher.as_deref().ok_or("no launcher")?;
        let canary_dir = data_dir
            .join("tmp")
            .join(format!("probe-{}", std::process::id()));
        std::fs::create_dir_all(&canary_dir).map_err(|e| e.to_string())?;
        let canary = data_dir.join(".isolation-canary");
        std::fs::write(&canary, b"not for tasks").map_err(|e| e.to_string())?;
        let result = self
            .run_probe(launcher, &canary, &canary_dir, api_port)
            .await;
        let _ = std::fs::remove_file(&canary);
        let _ = std::fs::remove_dir_all(&canary_dir);
        result
    }

    async fn run_probe(
        &self,
        launcher: &Path,
        canary: &Path,
        scratch: &Path,
        api_port: u16,
    ) -> Result<(), String> {
        // Unique, not just this process's id: a gantry killed during its probe leaves its
        // cgroup behind, and a later gantry given the same pid failed to make its own (EEXIST)
        // and came up without namespaces.
        let id = format!(
            "probe-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        // The probe is the launcher binary itself, run in probe mode inside the sandbox.
        let program = launcher.canonicalize().map_err(|e| e.to_string())?;
        let sandbox = self
            .task(
                &id,
                "gantry-probe",
                &program,
                std::slice::from_ref(&program),
                &[scratch],
            )
            .map_err(|e| format!("{e:#}"))?;
        let mut cmd = sandbox::launcher_command(launcher, &sandbox.spec, &program);
        cmd.arg(sandbox::PROBE_ARG)
            .arg(canary)
            .arg(std::process::id().to_string())
            .arg(api_port.to_string())
            .env_clear()
            .env("PATH", crate::backends::CHILD_PATH)
            .current_dir(scratch)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(std::time::Duration::from_secs(20), cmd.output())
            .await
            .map_err(|_| "the probe did not finish in 20 s".to_string())?
            .map_err(|e| format!("cannot start the probe: {e}"))?;
        drop(sandbox);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if let Some(breach) = stdout.lines().find_map(|l| l.strip_prefix("breach: ")) {
            return Err(format!("a sandboxed task could {breach}"));
        }
        if !out.status.success() || !stdout.lines().any(|l| l == "sealed") {
            let why = stderr.lines().last().unwrap_or("no reason given").trim();
            return Err(format!("the sandbox could not be made: {why}"));
        }
        Ok(())
    }
}

/// The probe's side (`gantry-sandbox __sandbox-probe CANARY GANTRY_PID API_PORT`), run inside
/// the sandbox: try each forbidden thing, print `breach: …` for any that works and `sealed`
/// at the end.
pub fn probe_main(args: &[std::ffi::OsString]) -> u8 {
    let arg = |i: usize| args.get(i).and_then(|a| a.to_str()).unwrap_or_default();
    let (canary, pid, port) = (arg(0), arg(1).parse::<i32>().unwrap_or(0), arg(2));
    let mut breaches = Vec::new();
    if std::fs::read(canary).is_ok() {
        breaches.push("read gantry's data directory");
    }
    if pid > 2 {
        if std::fs::read(format!("/proc/{pid}/environ")).is_ok() {
            breaches.push("read gantry's environment");
        }
        // SAFETY: kill(2) with signal 0 only checks.
        if unsafe { libc::kill(pid, 0) } == 0 {
            breaches.push("signal gantry");
        }
    }
    if std::fs::write("/gantry-probe", b"x").is_ok()
        || std::fs::write("/usr/gantry-probe", b"x").is_ok()
    {
        breaches.push("write outside its directories");
    }
    if let Ok(addr) = format!("127.0.0.1:{port}").parse()
        && std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(500))
            .is_ok()
    {
        breaches.push("reach gantry's port");
    }
    // SAFETY: sethostname with a valid buffer; it must fail without CAP_SYS_ADMIN.
    if unsafe { libc::sethostname(c"x".as_ptr(), 1) } == 0 {
        breaches.push("change the hostname");
    }
    // SAFETY: a plain getter.
    if unsafe { libc::geteuid() } == 0 {
        breaches.push("run as uid 0");
    }
    // Last: it moves this probe into a namespace of its own when it works.
    // SAFETY: unshare(2) of this single-threaded probe, which only prints and exits after.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER) } == 0 {
        breaches.push("make a user namespace of its own");
    }
    for b in &breaches {
        println!("breach: {b}");
    }
    println!("sealed");
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_get_stable_distinct_unprivileged_ids_only_when_gantry_is_root() {
        let mut iso = Isolation::landlock_only(Path::new("/nonexistent"));
        assert_eq!(iso.outside_ids("alice"), None, "not root: gantry's own ids");
        iso.root = true;
        iso.layers = Layers::ALL;
        let (a, _) = iso.outside_ids("alice").unwrap();
        let (b, _) = iso.outside_ids("bob").unwrap();
        assert_ne!(a, b);
        assert_eq!(iso.outside_ids("alice").unwrap().0, a, "stable");
        assert!((2_100_000_000..2_100_000_000 + 65_536).contains(&a));
    }
}
