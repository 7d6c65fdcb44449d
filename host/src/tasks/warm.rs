//! Sandbox launchers started ahead of demand (see [`sandbox::warm`]): a task's spawn takes a
//! launcher that is already in its namespaces and cgroups and sends it the task, instead of
//! paying for all of that (on cgroup v1, an RCU grace period per cgroup move) while the task
//! waits.
//!
//! The pool keeps up to `[sandbox] warm_launchers` ready; each one taken is replaced in the
//! background. When none is ready (a burst of tasks, or a launcher that died), the spawn starts
//! its launcher itself, as without the pool. A warm launcher holds nothing of any tenant until
//! it is taken: no path, no id mapping, no environment; what it is sent is what a launcher
//! started for the task would get on its command line.

use super::sandbox::{self, Layers, cgroup};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a new launcher may take to say it is ready.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// How long the pool rests after a launcher failed to get ready before it tries again.
const RETRY_AFTER: Duration = Duration::from_secs(60);

/// How long a launcher may wait for a task before it is replaced: what it holds of the host
/// (the `/etc` files bound into its root, the mounts its namespace copied) is the host as it
/// was when it started, and a file the host replaced since (`ldconfig` renaming a new
/// `ld.so.cache` into place) must reach tasks within minutes, not whenever the node is busy
/// again.
const REPLACE_AFTER: Duration = Duration::from_secs(300);

/// The directory whose entries a launcher's init binds one by one, as they were when it
/// started (see [`WarmLaunchers::take`]).
const ETC: &str = "/etc";

/// How much older than a launcher's start a change to [`ETC`] may look and still make the
/// launcher stale: a directory's mtime comes from the kernel's coarse clock (a tick behind at
/// most), the launcher's start from the precise one.
const ETC_SLACK: Duration = Duration::from_millis(50);

/// Launchers of one sandbox shape, ready for a task.
pub(super) struct WarmLaunchers {
    launcher: PathBuf,
    /// [`ETC`], or a stand-in for it in tests.
    etc: PathBuf,
    layers: Layers,
    cgroups: Option<cgroup::Cgroups>,
    limits: cgroup::CgroupLimits,
    want: usize,
    /// The skeleton their inits bind a root's system entries onto while they wait.
    skeleton: Option<PathBuf>,
    pool: Mutex<Pool>,
}

#[derive(Default)]
struct Pool {
    ready: Vec<WarmLauncher>,
    starting: usize,
    /// Why and when starting one last failed: the pool rests for [`RETRY_AFTER`] (tasks start
    /// their own launchers meanwhile), and says so once per failure.
    broken: Option<(String, std::time::Instant)>,
}

/// One launcher waiting for its task.
pub(super) struct WarmLauncher {
    /// The launcher (its process group's leader), with its stdin, stdout and stderr piped.
    pub(super) child: tokio::process::Child,
    /// gantry's end of its sync socket: the job goes out on it, the proxy listener comes back,
    /// and its closing ends the task.
    pub(super) socket: UnixStream,
    /// The cgroup its init is in.
    pub(super) cgroup: Option<cgroup::TaskCgroup>,
    /// When it said it was ready.
    ready_at: std::time::Instant,
    /// When it was started: an `/etc` entry the host renamed into place after this may not
    /// be in its root.
    started: std::time::SystemTime,
}

impl WarmLauncher {
    /// Let an unused launcher go: it is killed, and its cgroup removed off the caller's path.
    pub(super) fn discard(self) {
        WarmLauncher::discard_parts(self.child, self.cgroup);
    }

    /// Let an unused launcher end by itself: closing its socket lets it go, and it ends its
    /// init and removes its own cgroups (a kill would leave them behind); it is reaped once
    /// it has.
    fn let_go(mut self) {
        if let Some(cgroup) = self.cgroup.take() {
            cgroup.leave_to_launcher();
        }
        drop(self.socket);
        // Its pipes close; the process itself is not killed (its drop would).
        drop((
            self.child.stdin.take(),
            self.child.stdout.take(),
            self.child.stderr.take(),
        ));
        let mut child = self.child;
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(async move {
                let _ = child.wait().await;
            })),
            Err(_) => std::mem::forget(child),
        }
    }

    /// [`WarmLauncher::discard`] for one taken apart.
    pub(super) fn discard_parts(child: tokio::process::Child, cgroup: Option<cgroup::TaskCgroup>) {
        drop(child);
        if let Some(cgroup) = cgroup {
            remove_in_background(cgroup);
        }
    }
}

impl std::fmt::Debug for WarmLaunchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("WarmLaunchers")
            .field("layers", &self.layers)
            .field("want", &self.want)
            .field("ready", &pool.ready.len())
            .field("starting", &pool.starting)
            .field("broken", &pool.broken)
            .finish()
    }
}

impl WarmLaunchers {
    /// Keep `want` launchers of `launcher` ready with `layers` (and a cgroup each when
    /// `cgroups` and there are namespaces: an init to put in it; the system entries of a root
    /// of its own bound onto `skeleton` when there is one). Starts filling at once when called
    /// inside a tokio runtime, else at the first [`WarmLaunchers::take`].
    pub(super) fn new(
        launcher: PathBuf,
        layers: Layers,
        cgroups: Option<cgroup::Cgroups>,
        limits: cgroup::CgroupLimits,
        want: usize,
        skeleton: Option<PathBuf>,
    ) -> Arc<WarmLaunchers> {
        let pool = Arc::new(WarmLaunchers {
            launcher,
            etc: PathBuf::from(ETC),
            layers,
            cgroups: cgroups.filter(|_| layers.any()),
            limits,
            want,
            skeleton: skeleton.filter(|_| layers.mount),
            pool: Mutex::default(),
        });
        pool.top_up();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(replace_stale_while_alive(Arc::downgrade(&pool)));
        }
        pool
    }

    /// Let the launchers that waited longer than `after` go, and start new ones in their
    /// place; how many went.
    fn replace_stale(self: &Arc<Self>, after: Duration) -> usize {
        let stale: Vec<WarmLauncher> = {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            let (stale, fresh) = std::mem::take(&mut pool.ready)
                .into_iter()
                .partition(|w| w.ready_at.elapsed() > after);
            pool.ready = fresh;
            stale
        };
        let count = stale.len();
        for warm in stale {
            warm.let_go();
        }
        if count > 0 {
            self.top_up();
        }
        count
    }

    /// A ready launcher, if there is one; it is replaced in the background.
    pub(super) fn take(self: &Arc<Self>) -> Option<WarmLauncher> {
        // The host's `/etc` changed since (a file renamed into place: `ld.so.cache` after
        // `ldconfig`, `resolv.conf`): a launcher started before that binds what it replaced.
        // A file written in place needs no check: the bind shows the same file.
        // A time ahead of the clock (a skewed image) would make every launcher stale: ignored.
        let now = std::time::SystemTime::now();
        let etc_changed = std::fs::metadata(&self.etc)
            .and_then(|m| m.modified())
            .ok()
            .filter(|at| *at <= now)
            .map(|at| at.checked_add(ETC_SLACK).unwrap_or(at));
        let (taken, stale) = {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            let (mut taken, mut stale) = (None, Vec::new());
            while let Some(mut warm) = pool.ready.pop() {
                // One that died while waiting (killed from outside) is no use.
                if !matches!(warm.child.try_wait(), Ok(None)) {
                    tracing::warn!("a warm sandbox launcher died while waiting; dropped");
                    warm.discard();
                } else if etc_changed.is_some_and(|changed| changed >= warm.started) {
                    stale.push(warm);
                } else {
                    taken = Some(warm);
                    break;
                }
            }
            (taken, stale)
        };
        if !stale.is_empty() {
            tracing::debug!(
                stale = stale.len(),
                "the host's /etc changed: sandbox launchers started before are let go"
            );
        }
        for warm in stale {
            warm.let_go();
        }
        self.top_up();
        taken
    }

    /// Start launchers until `want` are ready or starting.
    fn top_up(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool
            .broken
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() < RETRY_AFTER)
        {
            return;
        }
        pool.broken = None;
        while pool.broken.is_none() && pool.ready.len() + pool.starting < self.want {
            pool.starting += 1;
            let this = self.clone();
            runtime.spawn(async move {
                let started = this.start_one().await;
                let mut pool = this.pool.lock().unwrap_or_else(|e| e.into_inner());
                pool.starting -= 1;
                match started {
                    Ok(warm) => pool.ready.push(warm),
                    Err(e) if pool.broken.is_none() => {
                        let why = format!("{e:#}");
                        tracing::warn!(
                            "cannot keep sandbox launchers ready ({why}); tasks start their own, \
                             and the pool tries again in {} s",
                            RETRY_AFTER.as_secs()
                        );
                        pool.broken = Some((why, std::time::Instant::now()));
                    }
                    Err(_) => {}
                }
            });
        }
    }

    /// Start one launcher and wait until it is ready.
    async fn start_one(&self) -> anyhow::Result<WarmLauncher> {
        let started = std::time::SystemTime::now();
        let mut cgroup = match self.cgroups.clone() {
            Some(cgroups) => {
                let limits = self.limits;
                let name = format!("warm-{}", uuid::Uuid::new_v4().simple());
                Some(tokio::task::spawn_blocking(move || cgroups.create(&name, &limits)).await??)
            }
            None => None,
        };
        let dirs: Vec<PathBuf> = cgroup.iter().flat_map(|c| c.dirs()).cloned().collect();
        match self.start_in(&dirs).await {
            Ok((child, socket)) => Ok(WarmLauncher {
                child,
                socket,
                cgroup,
                ready_at: std::time::Instant::now(),
                started,
            }),
            Err(e) => {
                // Removing it may wait for the kernel: not on a runtime worker.
                if let Some(cgroup) = cgroup.take() {
                    remove_in_background(cgroup);
                }
                Err(e)
            }
        }
    }

    /// Start a launcher whose init joins `cgroups`, and wait until it says it is ready.
    async fn start_in(
        &self,
        cgroups: &[PathBuf],
    ) -> anyhow::Result<(tokio::process::Child, UnixStream)> {
        let (ours, theirs) = UnixStream::pair()?;
        let mut cmd = tokio::process::Command::new(&self.launcher);
        cmd.arg(sandbox::warm::WARM_ARG);
        if self.layers.any() {
            cmd.args(["--layers", &self.layers.to_arg()]);
        }
        for dir in cgroups {
            cmd.arg("--cgroup").arg(dir);
        }
        if let Some(skeleton) = &self.skeleton {
            cmd.arg("--skeleton").arg(skeleton);
        }
        cmd.args(["--sync", &theirs.as_raw_fd().to_string()])
            .env_clear()
            .current_dir("/")
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // Off the runtime's workers: the spawn's vfork holds its thread until the launcher
        // execs, and the launcher's start is read with a blocking read.
        let (mut child, socket, ready) = tokio::task::spawn_blocking(move || {
            // The launcher's end of the socket is inherited by it alone.
            let child = crate::spawn::inheriting(&[theirs.as_fd()], || cmd.spawn())??;
            drop(theirs);
            let _ = ours.set_read_timeout(Some(READY_WITHIN));
            let mut byte = [0u8; 1];
            // A signal handler running on this thread (SIGCHLD, SIGHUP) interrupts the read.
            let ready = loop {
                match (&ours).read(&mut byte) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    other => break other,
                }
            };
            let _ = ours.set_read_timeout(None);
            let ready = ready.map(|n| n == 1 && byte[0] == sandbox::warm::READY);
            std::io::Result::Ok((child, ours, ready))
        })
        .await??;
        if !matches!(ready, Ok(true)) {
            let _ = child.start_kill();
            let mut why = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                use tokio::io::AsyncReadExt;
                let _ = tokio::time::timeout(READY_WITHIN, stderr.read_to_string(&mut why)).await;
            }
            let _ = child.wait().await;
            anyhow::bail!(
                "a warm launcher did not get ready: {}",
                why.lines().last().unwrap_or("no reason given")
            );
        }
        Ok((child, socket))
    }
}

impl Drop for WarmLaunchers {
    fn drop(&mut self) {
        let pool = self.pool.get_mut().unwrap_or_else(|e| e.into_inner());
        for warm in pool.ready.drain(..) {
            warm.let_go();
        }
    }
}

/// Replace the pool's stale launchers (see [`REPLACE_AFTER`]) every so often, for as long as
/// the pool is there.
async fn replace_stale_while_alive(pool: std::sync::Weak<WarmLaunchers>) {
    let mut every = tokio::time::interval(REPLACE_AFTER / 4);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let replaced = pool.replace_stale(REPLACE_AFTER);
        if replaced > 0 {
            tracing::debug!(replaced, "replaced sandbox launchers that waited too long");
        }
    }
}

/// Remove a dead launcher's cgroup off the caller's path (it retries while the kernel lets
/// go of it).
fn remove_in_background(cgroup: cgroup::TaskCgroup) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(move || drop(cgroup))),
        Err(_) => drop(cgroup),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for a ready launcher that has waited `waited`: a process, and the socket
    /// gantry keeps to it.
    async fn standing_in(waited: Duration) -> (WarmLauncher, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let child = tokio::process::Command::new("sleep")
            .arg("30")
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let ready_at = std::time::Instant::now().checked_sub(waited).unwrap();
        let started = std::time::SystemTime::now().checked_sub(waited).unwrap();
        let warm = WarmLauncher {
            child,
            socket: ours,
            cgroup: None,
            ready_at,
            started,
        };
        (warm, theirs)
    }

    /// A pool that wants `want` launchers of a program that can never be one: `/bin/false`
    /// takes the arguments and exits without a word.
    fn failing_pool(want: usize) -> Arc<WarmLaunchers> {
        WarmLaunchers::new(
            "/bin/false".into(),
            Layers::default(),
            None,
            cgroup::CgroupLimits::default(),
            want,
            None,
        )
    }

    #[tokio::test]
    async fn launchers_that_waited_too_long_are_let_go_and_the_others_kept() {
        let pool = failing_pool(0);
        let (old, old_end) = standing_in(Duration::from_secs(400)).await;
        let (new, new_end) = standing_in(Duration::from_secs(10)).await;
        pool.pool.lock().unwrap().ready.extend([old, new]);
        assert_eq!(pool.replace_stale(REPLACE_AFTER), 1);
        let ready = &pool.pool.lock().unwrap().ready;
        assert_eq!(ready.len(), 1);
        assert!(ready[0].ready_at.elapsed() < REPLACE_AFTER);
        // The stale one's socket is closed (a launcher then ends by itself); the other's not.
        let mut byte = [0u8; 1];
        assert_eq!((&old_end).read(&mut byte).unwrap(), 0, "closed");
        new_end.set_nonblocking(true).unwrap();
        assert!(
            (&new_end).read(&mut byte).is_err(),
            "still open: nothing to read yet"
        );
    }

    #[tokio::test]
    async fn launchers_started_before_etc_changed_are_let_go_not_taken() {
        let etc = tempfile::tempdir().unwrap();
        // An empty pool that reads `etc` for the host's `/etc`, and starts nothing.
        let pool = Arc::new(WarmLaunchers {
            launcher: "/bin/false".into(),
            etc: etc.path().to_path_buf(),
            layers: Layers::default(),
            cgroups: None,
            limits: cgroup::CgroupLimits::default(),
            want: 0,
            skeleton: None,
            pool: Mutex::default(),
        });
        let set_etc_mtime = |at: std::time::SystemTime| {
            std::fs::File::open(etc.path())
                .unwrap()
                .set_modified(at)
                .unwrap();
        };
        let now = std::time::SystemTime::now();
        // `/etc` last changed a minute ago: launchers of 5 s ago are fresh.
        set_etc_mtime(now - Duration::from_secs(60));
        let (fresh, _fresh_end) = standing_in(Duration::from_secs(5)).await;
        let (before, before_end) = standing_in(Duration::from_secs(5)).await;
        pool.pool.lock().unwrap().ready.extend([before, fresh]);
        assert!(pool.take().is_some(), "no change since it started");
        // A file renamed into place, as `ldconfig` does with `ld.so.cache`.
        std::fs::write(etc.path().join("new"), "x").unwrap();
        std::fs::rename(etc.path().join("new"), etc.path().join("ld.so.cache")).unwrap();
        assert!(pool.take().is_none(), "the only launcher left is stale");
        let mut byte = [0u8; 1];
        assert_eq!(
            (&before_end).read(&mut byte).unwrap(),
            0,
            "let go: its socket closed"
        );
        assert!(pool.pool.lock().unwrap().ready.is_empty());
        // One started a moment after the change is taken.
        let changed = std::fs::metadata(etc.path()).unwrap().modified().unwrap();
        let (mut after, _after_end) = standing_in(Duration::ZERO).await;
        after.started = changed + ETC_SLACK * 2;
        pool.pool.lock().unwrap().ready.push(after);
        assert!(pool.take().is_some(), "a launcher started after the change");
        // A modification time ahead of the clock (a skewed image) stales nothing.
        set_etc_mtime(now + Duration::from_secs(3600));
        let (old, _old_end) = standing_in(Duration::from_secs(5)).await;
        pool.pool.lock().unwrap().ready.push(old);
        assert!(pool.take().is_some(), "a time in the future is ignored");
    }

    #[tokio::test]
    async fn a_launcher_that_never_gets_ready_rests_the_pool() {
        let pool = failing_pool(2);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while pool.pool.lock().unwrap().starting > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the attempts never ended"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            pool.take().is_none(),
            "nothing ready: the task starts its own"
        );
        let state = pool.pool.lock().unwrap();
        let (why, _) = state.broken.as_ref().expect("the failure is kept");
        assert!(why.contains("did not get ready"), "{why}");
        assert_eq!(state.starting, 0, "resting: no new attempt at once");
        assert!(state.ready.is_empty());
    }
}
