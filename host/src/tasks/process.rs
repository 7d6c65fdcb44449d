//! One step's process: its home and temp directory, its sandbox and launcher, its
//! environment (never gantry's own), its egress and model proxy, its pipes, and the signals
//! that end it.

use super::isolation::TaskSandbox;
use super::run::TaskRun;
use super::warm::WarmLauncher;
use super::{Inner, egress, lines, sandbox};
use crate::backends::BackendPlugin;
use crate::contract::{CommandSpec, ModelUsage, OutputStream};
use crate::tenants::TenantId;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// A step's process, started in its sandbox, and what must live as long as it does.
pub(super) struct Spawned {
    pub(super) child: tokio::process::Child,
    /// Its process group (the launcher's, which the task's processes share or are below).
    pub(super) pgid: Option<i32>,
    /// Its output, line by line, stdout and stderr interleaved as they come.
    pub(super) lines: mpsc::Receiver<(OutputStream, lines::Line)>,
    /// Its sandbox (its cgroup lives as long as this).
    pub(super) sandbox: Option<TaskSandbox>,
    /// The socket to its launcher: closing it (gantry gone) ends the task.
    pub(super) lifeline: Option<Lifeline>,
    /// The proxy serving the listener its network namespace handed over.
    pub(super) proxy: Option<egress::ProxyHandle>,
}

impl TaskRun {
    /// Start one step's process: `Ok(Err(why))` when it could not start (the task then
    /// fails with that reason), an error when gantry itself failed.
    pub(super) async fn spawn(
        &mut self,
        backend: &BackendPlugin,
        spec: CommandSpec,
    ) -> anyhow::Result<Result<Spawned, String>> {
        let (_, root) = self
            .inner
            .workspaces
            .dir(&self.tenant, &self.record.workspace_id)
            .await?;
        let cwd = match &self.subdir {
            Some(subdir) => {
                self.inner
                    .workspaces
                    .subdir(&self.tenant, &self.record.workspace_id, subdir)
                    .await?
            }
            None => root.clone(),
        };
        let tmp = self.inner.tmp_root.join(&self.record.id);
        std::fs::create_dir_all(&tmp)?;
        let CommandSpec {
            args,
            env,
            stdin,
            files,
        } = spec;
        let owner = self.inner.isolation.outside_ids(self.tenant.as_str());
        let home = match self.prepare_home(&files, owner) {
            Ok(home) => home,
            Err(e) => {
                let message = format!("could not prepare the backend's home directory: {e:#}");
                return Ok(Err(message));
            }
        };
        let Some(program) = crate::backends::resolve(&self.binary) else {
            let message = format!(
                "could not start {}: not found on PATH ({})",
                self.binary,
                crate::backends::CHILD_PATH
            );
            return Ok(Err(message));
        };
        super::phase(&self.record.id, "prepared");
        let launch = Launch {
            id: &self.record.id,
            tenant: &self.tenant,
            name: &self.binary,
            program,
            args,
            env,
            stdin,
            read_only: &backend.read_only,
            root: &root,
            cwd: &cwd,
            home: &home,
            tmp: &tmp,
        };
        spawn_sandboxed(&self.inner, launch, &mut self.proxy).await
    }

    /// The run's home directory, one per tenant and backend so that a CLI's sessions outlive
    /// the run (and can be resumed), with the adapter's files written into it.
    fn prepare_home(
        &self,
        files: &[(String, String)],
        owner: Option<(u32, u32)>,
    ) -> anyhow::Result<PathBuf> {
        // Tenant and plugin names are plain identifiers (checked when made): safe to join.
        let home = self
            .inner
            .homes_root
            .join(self.tenant.as_str())
            .join(&self.record.backend);
        std::fs::create_dir_all(&home)?;
        let dir = cap_std::fs::Dir::open_ambient_dir(&home, cap_std::ambient_authority())?;
        for (path, content) in files {
            let relative = crate::workspaces::check_relative_path(path)
                .map_err(|e| anyhow::anyhow!("the adapter's file {path:?}: {e}"))?;
            if let Some(parent) = relative.parent().filter(|p| !p.as_os_str().is_empty()) {
                dir.create_dir_all(parent)?;
            }
            // The home is the tenant's tasks' to shape, so never open what they may have left
            // at this name (a FIFO would block the open, a link would redirect it): write a
            // fresh file and rename it over whatever is there.
            let name = relative.file_name().unwrap_or_default().to_string_lossy();
            let fresh = relative
                .with_file_name(format!(".{name}.gantry-{}", uuid::Uuid::new_v4().simple()));
            let mut file = dir.open_with(
                &fresh,
                cap_std::fs::OpenOptions::new().write(true).create_new(true),
            )?;
            std::io::Write::write_all(&mut file, content.as_bytes())?;
            if let Some((uid, gid)) = owner {
                give_to(&dir, &relative, &file.into_std(), uid, gid)?;
            }
            dir.rename(&fresh, &dir, &relative)?;
        }
        Ok(home)
    }
}

/// What to start in a sandbox: a backend's CLI for a task's step, or a command line for the
/// Web UI API's commands. Everything here is already checked (the program resolved, the
/// directories inside the tenant's own).
pub(super) struct Launch<'a> {
    /// The task's or command's id: its sandbox's and cgroup's name.
    pub(super) id: &'a str,
    pub(super) tenant: &'a TenantId,
    /// What to call the program in messages.
    pub(super) name: &'a str,
    /// The program's host path.
    pub(super) program: PathBuf,
    pub(super) args: Vec<String>,
    /// Set on top of the clean environment (PATH, HOME, TMPDIR, LANG, the proxy's).
    pub(super) env: Vec<(String, String)>,
    pub(super) stdin: Option<String>,
    /// Host paths it may read besides the system's.
    pub(super) read_only: &'a [PathBuf],
    /// The workspace, its working directory, its home and its temp directory: all it may
    /// write.
    pub(super) root: &'a std::path::Path,
    pub(super) cwd: &'a std::path::Path,
    pub(super) home: &'a std::path::Path,
    pub(super) tmp: &'a std::path::Path,
}

/// Start `launch` in the node's sandbox with `proxy` as its only way out: `Ok(Err(why))` when
/// it could not start, an error when gantry itself failed. The one spawn path of every
/// process a tenant runs.
pub(super) async fn spawn_sandboxed(
    inner: &Inner,
    launch: Launch<'_>,
    proxy: &mut TaskProxy,
) -> anyhow::Result<Result<Spawned, String>> {
    let Launch {
        id,
        tenant,
        name,
        program,
        args,
        env,
        stdin,
        read_only,
        root,
        cwd,
        home,
        tmp,
    } = launch;
    let program = sandbox::paths::launch_path(&program);
    let writable = [root, tmp, home];
    let isolation = &inner.isolation;
    proxy.serve_host_listener()?;
    // The program's whole environment: a clean one (never gantry's own), the proxy's, then
    // the adapter's; a later name overrides an earlier one.
    let mut environment: Vec<(std::ffi::OsString, std::ffi::OsString)> = Vec::new();
    let fixed = [
        ("PATH", crate::backends::CHILD_PATH.as_ref()),
        ("HOME", home.as_os_str()),
        ("TMPDIR", tmp.as_os_str()),
        ("LANG", "C.UTF-8".as_ref()),
    ];
    let proxied = proxy.env();
    let given = fixed
        .into_iter()
        .map(|(k, v)| (std::ffi::OsStr::new(k), v))
        .chain(proxied.iter().map(|(k, v)| (k.as_ref(), v.as_ref())))
        .chain(env.iter().map(|(k, v)| (k.as_ref(), v.as_ref())));
    for (key, value) in given {
        environment.retain(|(k, _)| k != key);
        environment.push((key.to_os_string(), value.to_os_string()));
    }

    // A launcher started ahead of demand when one is ready, else one started now. Either way:
    // the task's sandbox (its cgroup lives as long as this), and the socket to its launcher:
    // its network namespace hands back the proxy listener over it, and its closing (gantry
    // gone) ends the task.
    // As the kernel would give a launcher started in it: the directory the sandbox binds.
    let real_cwd = match cwd.canonicalize() {
        Ok(real) => real,
        // The message reaches the task's answer: the error names no host path.
        Err(e) => return Ok(Err(format!("could not enter the task's directory: {e}"))),
    };
    super::phase(id, "environment");
    let warm = match isolation.take_warm() {
        None => None,
        Some(warm) => {
            let spec = isolation.task_spec(id, tenant.as_str(), &program, read_only, &writable);
            let spec = match spec {
                Ok(spec) => spec,
                Err(e) => {
                    warm.discard();
                    let message = format!("could not prepare the task's sandbox: {e:#}");
                    return Ok(Err(message));
                }
            };
            let mut launch_args = sandbox::launch_args(&spec, &program);
            launch_args.extend(args.iter().map(Into::into));
            let job = sandbox::warm::Job {
                args: launch_args,
                env: environment
                    .iter()
                    .map(|(k, v)| {
                        let mut kv = k.clone();
                        kv.push("=");
                        kv.push(v);
                        kv
                    })
                    .collect(),
                cwd: real_cwd,
                stdin: stdin.is_some(),
            };
            let WarmLauncher {
                child,
                socket,
                cgroup,
                ..
            } = warm;
            match send_job(socket, &job.encode(), JOB_SEND_LIMIT).await {
                Ok(socket) => Some((child, Some(socket), Some(TaskSandbox { spec, cgroup }))),
                Err(e) => {
                    tracing::warn!(
                        task = id,
                        "a warm sandbox launcher is gone ({e}); starting one"
                    );
                    WarmLauncher::discard_parts(child, cgroup);
                    None
                }
            }
        }
    };
    let (mut child, ours, task_sandbox) = match warm {
        Some(sent) => sent,
        None => {
            let mut task_sandbox = None;
            let mut sync: Option<(UnixStream, UnixStream)> = None;
            let mut cmd = match isolation.launcher() {
                Some(launcher) => {
                    let built = isolation.task(id, tenant.as_str(), &program, read_only, &writable);
                    let mut built = match built {
                        Ok(built) => built,
                        Err(e) => {
                            let message = format!("could not prepare the task's sandbox: {e:#}");
                            return Ok(Err(message));
                        }
                    };
                    if isolation.namespaced() {
                        use std::os::fd::AsRawFd;
                        let pair = UnixStream::pair()?;
                        built.spec.sync_fd = Some(pair.1.as_raw_fd());
                        sync = Some(pair);
                    }
                    let cmd = sandbox::launcher_command(launcher, &built.spec, &program);
                    task_sandbox = Some(built);
                    cmd
                }
                None => {
                    let restriction =
                        sandbox::Restriction::new(&[], &writable, sandbox::Rlimits::default())?;
                    let mut cmd = tokio::process::Command::new(&program);
                    // SAFETY: the closure makes only async-signal-safe calls (see
                    // `apply_in_child`).
                    unsafe {
                        cmd.pre_exec(move || restriction.apply_in_child());
                    }
                    cmd
                }
            };
            cmd.args(&args)
                .env_clear()
                .envs(environment.iter().map(|(k, v)| (k, v)))
                .current_dir(cwd)
                .process_group(0)
                .stdin(if stdin.is_some() {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            let spawned = {
                use std::os::fd::AsFd;
                // The launcher's end of the socket is inherited by it alone.
                let handed: Vec<_> = sync.iter().map(|(_, theirs)| theirs.as_fd()).collect();
                crate::spawn::inheriting(&handed, || cmd.spawn())?
            };
            match spawned {
                Ok(child) => (child, sync.map(|(ours, _theirs)| ours), task_sandbox),
                Err(e) => {
                    let message = format!("could not start {name}: {e}");
                    return Ok(Err(message));
                }
            }
        }
    };
    super::phase(id, "launched");
    // Held until the step ends: the launcher kills the task when it closes.
    let mut lifeline = None;
    let mut served = None;
    if let Some(ours) = ours {
        if isolation.own_network() {
            let (socket, listener) = receive_listener(ours).await;
            lifeline = Some(socket);
            match listener {
                Some(listener) => {
                    served = Some(egress::serve(listener, proxy.egress.clone())?);
                }
                // The launcher failed (its reason is in the output, read below), or is
                // stuck: never run a task without its proxy.
                None if child.try_wait()?.is_none() => {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    return Ok(Err(
                        "the task's sandbox did not hand over its proxy listener in 10 s".into(),
                    ));
                }
                None => {}
            }
        } else {
            lifeline = Some(ours);
        }
    }
    let pgid = child.id().map(|p| p as i32);
    // A warm launcher's stdin is always a pipe; the program reads /dev/null when it has no
    // input, and this end closes here.
    if let (Some(text), Some(mut stdin)) = (stdin, child.stdin.take()) {
        tokio::spawn(async move {
            let _ = stdin.write_all(text.as_bytes()).await;
        });
    }
    let (line_tx, lines) = mpsc::channel::<(OutputStream, lines::Line)>(1024);
    let limit = inner.limits.max_line_bytes.max(1);
    for (stream, pipe) in [
        (
            OutputStream::Stdout,
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ),
        (
            OutputStream::Stderr,
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ),
    ] {
        let Some(pipe) = pipe else { continue };
        let tx = line_tx.clone();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(pipe);
            while let Ok(Some(line)) = lines::next_line(&mut reader, limit).await {
                if tx.send((stream, line)).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(line_tx);
    Ok(Ok(Spawned {
        child,
        pgid,
        lines,
        sandbox: task_sandbox,
        lifeline: lifeline.map(Lifeline::new),
        proxy: served,
    }))
}

/// gantry's end of a launcher's socket, held as long as the step runs (the launcher kills
/// the task when it closes), on which a launcher with a PID namespace reports the program's
/// status before its namespaces are torn down ([`sandbox::namespaces::EXIT_REPORT`]).
pub(super) struct Lifeline {
    held: UnixStream,
    /// The same socket, registered with the reactor (absent if that failed: the status then
    /// comes from the launcher's exit alone).
    watched: Option<tokio::net::UnixStream>,
}

impl Lifeline {
    fn new(held: UnixStream) -> Lifeline {
        let watched = held
            .try_clone()
            .and_then(|socket| {
                socket.set_nonblocking(true)?;
                tokio::net::UnixStream::from_std(socket)
            })
            .ok();
        Lifeline { held, watched }
    }

    /// The program's wait status as the launcher reports it; `None` when the socket ends
    /// without a report (a launcher without namespaces closes it when it execs the program;
    /// one that failed or was killed, when it exits). Not cancel-safe: keep the future.
    pub(super) async fn exit_report(&mut self) -> Option<std::process::ExitStatus> {
        use std::os::unix::process::ExitStatusExt;
        use tokio::io::AsyncReadExt;
        let socket = self.watched.as_mut()?;
        let mut frame = [0u8; 5];
        socket.read_exact(&mut frame).await.ok()?;
        let status = i32::from_ne_bytes(frame[1..].try_into().ok()?);
        (frame[0] == sandbox::namespaces::EXIT_REPORT)
            .then(|| std::process::ExitStatus::from_raw(status))
    }
}

impl std::fmt::Debug for Lifeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lifeline")
            .field("held", &self.held)
            .finish()
    }
}

/// A task's egress and model proxy: what it may reach, the per-task token its CLI holds in
/// place of the key, and where it listens (inside the task's network namespace, or on the
/// host's loopback when tasks share the host's network).
#[derive(Debug)]
pub(super) struct TaskProxy {
    egress: Arc<egress::TaskEgress>,
    /// The variables (the manifest's `env`) that hold the token in the task.
    key_vars: Vec<String>,
    /// Where the task reaches the proxy.
    listen: std::net::SocketAddr,
    /// A listener on the host's loopback, served from the first step on (no network
    /// namespace).
    host_listener: Option<std::net::TcpListener>,
    /// The proxy serving the host listener.
    serving: Option<egress::ProxyHandle>,
}

impl TaskProxy {
    pub(super) fn new(
        inner: &Inner,
        tenant: &TenantId,
        backend: &BackendPlugin,
        task_id: &str,
    ) -> anyhow::Result<TaskProxy> {
        let config = &inner.egress;
        let mut patterns = base_patterns(inner, tenant);
        patterns.extend(backend.egress.iter().cloned());
        let key_vars = backend.passed_env.clone();
        // A token of 256 random bits (two v4 UUIDs): useless anywhere but this task's proxy.
        let token = format!(
            "gantry-task-{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let model = backend
            .model_upstream
            .as_deref()
            .map(|upstream| egress::ModelRoute {
                upstream: upstream.to_string(),
                token,
                key: key_vars
                    .iter()
                    .find_map(|var| config.model_key(tenant.as_str(), var)),
            });
        if let Some(route) = &model {
            // The model API's host too (a CLI that goes there through the egress proxy
            // instead of the model proxy has only its token, never the key). A bad URL is
            // refused here, before anything runs.
            patterns.push(route.egress_pattern().map_err(anyhow::Error::msg)?);
        }
        TaskProxy::with_policy(
            inner,
            tenant,
            task_id,
            &backend.name,
            patterns,
            key_vars,
            model,
        )
    }

    /// The proxy of a command line run for the Web UI API: the node's and the tenant's
    /// allowlists, no backend's, and no model route (no key is ever in reach).
    pub(super) fn for_command(
        inner: &Inner,
        tenant: &TenantId,
        command_id: &str,
    ) -> anyhow::Result<TaskProxy> {
        let patterns = base_patterns(inner, tenant);
        TaskProxy::with_policy(
            inner,
            tenant,
            command_id,
            "command",
            patterns,
            Vec::new(),
            None,
        )
    }

    fn with_policy(
        inner: &Inner,
        tenant: &TenantId,
        task_id: &str,
        backend: &str,
        patterns: Vec<String>,
        key_vars: Vec<String>,
        model: Option<egress::ModelRoute>,
    ) -> anyhow::Result<TaskProxy> {
        let policy = egress::EgressPolicy::new(&patterns)
            .map_err(|e| anyhow::anyhow!("the egress allowlist: {e}"))?;
        let (listen, host_listener) = if inner.isolation.own_network() {
            (
                std::net::SocketAddr::from(([127, 0, 0, 1], sandbox::PROXY_PORT)),
                None,
            )
        } else {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            (listener.local_addr()?, Some(listener))
        };
        Ok(TaskProxy {
            egress: Arc::new(egress::TaskEgress {
                tenant: tenant.to_string(),
                task: task_id.to_string(),
                backend: backend.to_string(),
                policy,
                model,
                usage: egress::ModelUsage::default(),
            }),
            key_vars,
            listen,
            host_listener,
            serving: None,
        })
    }

    /// The adapter sees the proxy as its backend's `base_url`.
    pub(super) fn setting_overrides(&self) -> Vec<(String, String)> {
        match &self.egress.model {
            Some(route) => vec![("base_url".into(), route.local_base_url(self.listen))],
            None => Vec::new(),
        }
    }

    /// The task's variables: the token in each key variable, and the proxy for HTTP.
    pub(super) fn env(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        if let Some(route) = &self.egress.model {
            env.extend(
                self.key_vars
                    .iter()
                    .map(|v| (v.clone(), route.token.clone())),
            );
        }
        let proxy = format!("http://{}", self.listen);
        for var in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            env.push((var.into(), proxy.clone()));
        }
        for var in ["NO_PROXY", "no_proxy"] {
            env.push((var.into(), "127.0.0.1,localhost".into()));
        }
        env
    }

    /// Serve the host listener, once (no network namespace).
    pub(super) fn serve_host_listener(&mut self) -> std::io::Result<()> {
        if let Some(listener) = self.host_listener.take() {
            self.serving = Some(egress::serve(listener, self.egress.clone())?);
        }
        Ok(())
    }

    /// What the model proxy counted, for the task's summary.
    pub(super) fn usage(&self) -> Option<ModelUsage> {
        let u = &self.egress.usage;
        (u.requests() > 0).then(|| ModelUsage {
            requests: u.requests(),
            input_tokens: u.input_tokens(),
            output_tokens: u.output_tokens(),
        })
    }
}

/// What every process of `tenant` may reach: the node's allowlist and the tenant's.
fn base_patterns(inner: &Inner, tenant: &TenantId) -> Vec<String> {
    let mut patterns: Vec<String> = inner.egress.allow.clone();
    patterns.extend(
        inner
            .egress
            .tenants
            .get(tenant.as_str())
            .into_iter()
            .flatten()
            .cloned(),
    );
    patterns
}

/// How long a warm launcher may take to read its job.
const JOB_SEND_LIMIT: Duration = Duration::from_secs(10);

/// Send a warm launcher its job without blocking a runtime worker (a frame may be larger than
/// the socket's buffer), `within` a limit; gives the socket back in blocking mode.
async fn send_job(
    socket: UnixStream,
    frame: &[u8],
    within: Duration,
) -> std::io::Result<UnixStream> {
    use tokio::io::AsyncWriteExt as _;
    socket.set_nonblocking(true)?;
    // A job fits the socket's buffer nearly always: written at once, without registering the
    // socket with the runtime's reactor (and taking it out again) for a write that never waits.
    let mut sent = 0;
    while sent < frame.len() {
        match std::io::Write::write(&mut &socket, &frame[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    if sent == frame.len() {
        socket.set_nonblocking(false)?;
        return Ok(socket);
    }
    let mut stream = tokio::net::UnixStream::from_std(socket)?;
    tokio::time::timeout(within, stream.write_all(&frame[sent..]))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "sending the job"))??;
    let socket = stream.into_std()?;
    socket.set_nonblocking(false)?;
    Ok(socket)
}

/// Receive the proxy listener the task's sandbox made inside its network namespace, waiting
/// at most 10 s; gives back the socket, whose closing tells the launcher gantry is gone.
async fn receive_listener(
    socket: std::os::unix::net::UnixStream,
) -> (
    std::os::unix::net::UnixStream,
    Option<std::net::TcpListener>,
) {
    tokio::task::spawn_blocking(move || {
        use std::os::fd::AsFd;
        let _ = socket.set_read_timeout(Some(Duration::from_secs(10)));
        let listener = match sandbox::namespaces::recv_fd(socket.as_fd()) {
            Ok(Some(fd)) => Some(std::net::TcpListener::from(fd)),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!("no proxy listener from the task's sandbox: {e}");
                None
            }
        };
        (socket, listener)
    })
    .await
    .expect("the receiving thread does not panic")
}

/// Hand `file` (about to become `relative` in a task's home) and the directories leading to
/// it to the task's uid, through descriptors cap-std opened inside `dir`: a link a task
/// planted cannot point the change elsewhere.
fn give_to(
    dir: &cap_std::fs::Dir,
    relative: &std::path::Path,
    file: &std::fs::File,
    uid: u32,
    gid: u32,
) -> std::io::Result<()> {
    use rustix::process::{Gid, Uid};
    let owner = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
    rustix::fs::fchown(file, owner.0, owner.1)?;
    let mut at = PathBuf::new();
    for component in relative.parent().into_iter().flat_map(|p| p.components()) {
        at.push(component);
        let parent = dir.open_dir(&at)?.into_std_file();
        // AT_EMPTY_PATH: the descriptor itself, which may be an O_PATH one.
        rustix::fs::chownat(
            &parent,
            "",
            owner.0,
            owner.1,
            rustix::fs::AtFlags::EMPTY_PATH,
        )?;
    }
    Ok(())
}

pub(super) fn signal_group(pgid: Option<i32>, signal: i32) {
    if let Some(pgid) = pgid.filter(|p| *p > 1) {
        // SAFETY: kill(2) on the child's own process group (it was spawned as its leader).
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    #[tokio::test]
    async fn a_launchers_report_is_the_programs_status_and_anything_else_is_none() {
        use std::io::Write as _;
        use std::os::unix::process::ExitStatusExt;
        let report = |frame: &[u8]| {
            let (ours, mut theirs) = UnixStream::pair().unwrap();
            // Written in two pieces: the report is read whole however it arrives.
            theirs.write_all(&frame[..2]).unwrap();
            theirs.write_all(&frame[2..]).unwrap();
            (Lifeline::new(ours), theirs)
        };
        let mut frame = vec![sandbox::namespaces::EXIT_REPORT];
        frame.extend(7i32.wrapping_shl(8).to_ne_bytes());
        let (mut lifeline, _theirs) = report(&frame);
        let status = lifeline.exit_report().await.expect("a report");
        assert_eq!(status.code(), Some(7));
        frame[1..].copy_from_slice(&9i32.to_ne_bytes());
        let (mut lifeline, _theirs) = report(&frame);
        assert_eq!(lifeline.exit_report().await.unwrap().signal(), Some(9));

        // The launcher closed its end without a report (it exec'd, failed or was killed).
        let (ours, theirs) = UnixStream::pair().unwrap();
        drop(theirs);
        assert!(Lifeline::new(ours).exit_report().await.is_none());
        // Half a report, then the end; or a frame of another kind.
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        theirs.write_all(&frame[..3]).unwrap();
        drop(theirs);
        assert!(Lifeline::new(ours).exit_report().await.is_none());
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        theirs.write_all(b"R\0\0\0\0").unwrap();
        assert!(Lifeline::new(ours).exit_report().await.is_none());
    }

    /// A launcher that reads its job gets all of it, whether it fits the socket's buffer (sent
    /// at once) or not (the rest sent as the launcher reads), and gantry gets the socket back
    /// blocking.
    #[tokio::test]
    async fn a_job_larger_than_the_socket_buffer_is_sent_whole() {
        for size in [16, 4 << 20] {
            let (ours, theirs) = UnixStream::pair().unwrap();
            let frame = vec![7u8; size];
            let reader = std::thread::spawn(move || {
                let mut got = Vec::new();
                (&theirs).read_to_end(&mut got).unwrap();
                got.len()
            });
            let socket = send_job(ours, &frame, JOB_SEND_LIMIT).await.unwrap();
            let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
            // SAFETY: fcntl on a descriptor the test holds.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
            assert_eq!(flags & libc::O_NONBLOCK, 0, "blocking again ({size} bytes)");
            drop(socket);
            assert_eq!(reader.join().unwrap(), frame.len());
        }
    }

    /// A launcher gone before its job: the send fails (and the task starts its own launcher).
    #[tokio::test]
    async fn a_job_to_a_launcher_that_is_gone_fails() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        drop(theirs);
        let e = send_job(ours, b"job", JOB_SEND_LIMIT).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }

    /// A launcher that never reads a job larger than the socket's buffer: the send gives up at
    /// its limit instead of holding the task.
    #[tokio::test]
    async fn a_job_a_launcher_never_reads_times_out() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let frame = vec![0u8; 4 << 20];
        let e = send_job(ours, &frame, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
    }
}
