//! The launcher's side of the namespace sandbox: what runs in the `gantry-sandbox` process
//! between gantry's spawn and the task's program.
//!
//! Three processes, as in bubblewrap:
//! - the **monitor** (the launcher itself, in gantry's namespaces) clones the task's init into
//!   new user, PID, mount, IPC, UTS and network namespaces, writes its uid and gid maps (only a
//!   process outside the new user namespace may map it to an unprivileged uid other than its
//!   own), moves it into the task's cgroups, then waits. When gantry goes away (the sync socket
//!   closes) it kills the init, and with it the whole PID namespace; it exits with the status
//!   of the task's program, re-raising a signal that ended it (and, with a PID namespace,
//!   reports that status on the socket first: [`EXIT_REPORT`]). Once the init runs the job,
//!   neither it nor the monitor holds the task's output pipes.
//! - the **init** (PID 1 of the new namespace) builds the task's root: a tmpfs holding only
//!   the system directories, the backend's install tree and the task's own directories, a
//!   private `/proc`, `/dev` and `/tmp` (a warm launcher's init binds the system part while it
//!   waits for its job: [`Prebuilt`]); brings up loopback and hands gantry a listener on it
//!   (the egress and model proxy); forks the program; forwards TERM to everything in the
//!   namespace; and when the program exits, kills whatever it left behind.
//! - the **program** drops to the task uid with no capabilities and no way to gain any, applies
//!   Landlock and the rlimits, and execs.
//!
//! Everything here runs in a single-threaded process, so `fork`-like clones are safe; the
//! code between a clone and an exec or `_exit` allocates only before it forks.
//!
//! One file on purpose: it is one sequence (monitor, init, program) of unsafe steps, and their
//! order is what makes them safe (what is opened while the process still has gantry's ids,
//! what is mounted before what, what runs between a clone and an exec or `_exit`), so it
//! reads top to bottom, roughly in the order it runs. Building the root (`prepare_binds` to
//! `build_dev`) has the narrowest interface, but its constraints are steps of the init's
//! sequence (the descriptors are opened before the init changes ids; `/proc` is mounted
//! before the binds, which reach their descriptors through it), so it stays next to the init.

use super::skeleton;
use super::warm::{self, READY};
use super::{PROXY_PORT, Restriction, Rlimits};
use rustix::mount::MountFlags;
use std::ffi::{CString, OsString};
use std::io::{Error, ErrorKind, Result};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The uid and gid a task's program has inside its user namespace.
pub const TASK_UID: u32 = 1000;
/// See [`TASK_UID`].
pub const TASK_GID: u32 = 1000;
/// The task's hostname (its own UTS namespace).
pub const HOSTNAME: &str = "gantry-task";

/// The first byte of the frame a launcher with a PID namespace sends gantry on its socket
/// once the task has ended: the program's wait status follows (4 bytes, native order). By
/// then the init has killed and reaped everything in the namespace; what is left is the
/// namespaces' teardown, a few hundred microseconds gantry need not wait for.
pub const EXIT_REPORT: u8 = b'X';

/// Which namespaces a launch makes. Each later one needs the ones before it: the user
/// namespace gives the rights to make the others, a private `/proc` needs the PID namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Layers {
    /// User (with IPC and UTS): an unprivileged uid, no capabilities outside.
    pub user: bool,
    /// PID: sees and signals only its own processes; all die with its init.
    pub pid: bool,
    /// Mount: a minimal root of its own.
    pub mount: bool,
    /// Network: only loopback, with gantry's proxy listening on it.
    pub net: bool,
}

impl Layers {
    /// Every layer.
    pub const ALL: Layers = Layers {
        user: true,
        pid: true,
        mount: true,
        net: true,
    };

    /// Parse `user,pid,mount,net` (any subset that keeps the order's prerequisites).
    pub fn parse(text: &str) -> std::result::Result<Layers, String> {
        let mut layers = Layers::default();
        for name in text.split(',').filter(|s| !s.is_empty()) {
            match name {
                "user" => layers.user = true,
                "pid" => layers.pid = true,
                "mount" => layers.mount = true,
                "net" => layers.net = true,
                other => return Err(format!("unknown namespace layer {other:?}")),
            }
        }
        if (layers.pid || layers.net) && !layers.user || layers.mount && !layers.pid {
            return Err(
                "layers need their prerequisites: pid and net need user, mount needs pid".into(),
            );
        }
        Ok(layers)
    }

    /// The `--layers` text of these layers.
    pub fn to_arg(self) -> String {
        let names = [
            (self.user, "user"),
            (self.pid, "pid"),
            (self.mount, "mount"),
            (self.net, "net"),
        ];
        let on: Vec<&str> = names
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect();
        on.join(",")
    }

    /// Whether any namespace is made.
    pub fn any(self) -> bool {
        self.user
    }
}

/// Everything the launcher needs to build one task's namespaces.
#[derive(Debug, Default)]
pub struct Plan {
    /// Which namespaces.
    pub layers: Layers,
    /// The uid and gid outside that the task uid maps to.
    pub outside_uid: Option<u32>,
    /// See `outside_uid`.
    pub outside_gid: Option<u32>,
    /// Paths the task may read (bound read-only at the same place).
    pub read: Vec<PathBuf>,
    /// Paths the task may write (bound read-write at the same place).
    pub write: Vec<PathBuf>,
    /// cgroup directories the task's init joins before anything of the task runs.
    pub cgroups: Vec<PathBuf>,
    /// The socket to gantry: the proxy listener goes over it, and its closing means gantry is
    /// gone.
    pub sync: Option<RawFd>,
    /// The loopback port of the proxy listener inside the network namespace.
    pub proxy_port: u16,
}

/// Run the task described by `plan`: returns only on failure, with the reason.
pub fn run(plan: Plan, rlimits: Rlimits, program: &Path, args: &[OsString]) -> String {
    // The program's environment and directory are the launcher's own.
    let env = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect();
    let job = std::env::current_dir()
        .map_err(|e| fail("reading the working directory", e))
        .and_then(|cwd| Job::new(plan, rlimits, program, args, env, cwd, false));
    match job.and_then(|job| monitor(Start::Now(job))) {
        Ok(never) => match never {},
        Err(e) => e.to_string(),
    }
}

/// Be a warm launcher (see [`super::warm`]) for `layers`, its init in `cgroups`, waiting for
/// its job on `sync`: returns only on failure, with the reason (it exits 0 when gantry lets
/// it go without a job).
pub fn run_warm(
    layers: Layers,
    cgroups: Vec<PathBuf>,
    sync: RawFd,
    skeleton: Option<PathBuf>,
) -> String {
    match monitor(Start::Later {
        layers,
        cgroups,
        sync,
        skeleton,
    }) {
        Ok(never) => match never {},
        Err(e) => e.to_string(),
    }
}

/// What the init runs, with everything converted before the clone (or, in a warm launcher,
/// before the init proceeds).
struct Job {
    plan: Plan,
    rlimits: Rlimits,
    program: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
    cwd: PathBuf,
    /// The program reads `/dev/null` rather than the launcher's standard input.
    null_stdin: bool,
}

impl Job {
    fn new(
        plan: Plan,
        rlimits: Rlimits,
        program: &Path,
        args: &[OsString],
        env: Vec<CString>,
        cwd: PathBuf,
        null_stdin: bool,
    ) -> Result<Job> {
        let program = CString::new(program.as_os_str().as_bytes())
            .map_err(|_| Error::new(ErrorKind::InvalidInput, "a NUL byte in the program"))?;
        let mut argv = vec![program.clone()];
        for a in args {
            argv.push(
                CString::new(a.as_bytes()).map_err(|_| {
                    Error::new(ErrorKind::InvalidInput, "a NUL byte in an argument")
                })?,
            );
        }
        Ok(Job {
            plan,
            rlimits,
            program,
            argv,
            env,
            cwd,
            null_stdin,
        })
    }

    /// A warm launcher's job (a frame's body), checked against what the launcher was made
    /// for: the same namespaces, and no cgroup or socket of its own (they are the
    /// launcher's).
    fn from_frame(body: &[u8], layers: Layers, cgroups: &[PathBuf], sync: RawFd) -> Result<Job> {
        let job = warm::Job::decode(body)?;
        let env = job.env_c()?;
        let (spec, program, rest) =
            super::parse_launch(job.args).map_err(|e| Error::new(ErrorKind::InvalidData, e))?;
        if spec.layers != layers {
            return Err(Error::new(
                ErrorKind::InvalidData,
                format!(
                    "a job for namespaces {:?} sent to a warm launcher of {:?}",
                    spec.layers.to_arg(),
                    layers.to_arg()
                ),
            ));
        }
        if !spec.cgroups.is_empty() || spec.sync_fd.is_some() {
            return Err(Error::new(
                ErrorKind::InvalidData,
                "a warm launcher's job names no cgroup or socket: they are the launcher's",
            ));
        }
        let plan = Plan {
            layers,
            outside_uid: spec.outside_ids.map(|(u, _)| u),
            outside_gid: spec.outside_ids.map(|(_, g)| g),
            read: spec.read,
            write: spec.write,
            cgroups: cgroups.to_vec(),
            sync: Some(sync),
            proxy_port: PROXY_PORT,
        };
        Job::new(
            plan,
            spec.rlimits,
            &program,
            &rest,
            env,
            job.cwd,
            !job.stdin,
        )
    }
}

/// How the monitor learns its job.
enum Start {
    /// A cold launch: on the launcher's command line.
    Now(Job),
    /// A warm launcher: the namespaces and cgroups now, the job from gantry later.
    Later {
        layers: Layers,
        cgroups: Vec<PathBuf>,
        sync: RawFd,
        /// The skeleton its init binds the system entries onto while it waits.
        skeleton: Option<PathBuf>,
    },
}

impl Start {
    fn layers(&self) -> Layers {
        match self {
            Start::Now(job) => job.plan.layers,
            Start::Later { layers, .. } => *layers,
        }
    }

    fn sync(&self) -> Option<RawFd> {
        match self {
            Start::Now(job) => job.plan.sync,
            Start::Later { sync, .. } => Some(*sync),
        }
    }

    fn cgroups(&self) -> &[PathBuf] {
        match self {
            Start::Now(job) => &job.plan.cgroups,
            Start::Later { cgroups, .. } => cgroups,
        }
    }
}

/// Write all of `bytes` to `fd`, which the caller keeps.
fn write_all(fd: BorrowedFd<'_>, bytes: &[u8]) -> Result<()> {
    let mut file = std::fs::File::from(fd.try_clone_to_owned()?);
    std::io::Write::write_all(&mut file, bytes)
}

fn fail(context: &str, error: Error) -> Error {
    Error::new(error.kind(), format!("{context}: {error}"))
}

/// `r` as an io result: system calls return -1 and set errno.
fn check(r: libc::c_long, context: &str) -> Result<libc::c_long> {
    if r < 0 {
        Err(fail(context, Error::last_os_error()))
    } else {
        Ok(r)
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    check(
        unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }.into(),
        "pipe",
    )?;
    // SAFETY: both were just returned by pipe2.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn block_signals(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in signals {
            libc::sigaddset(&mut set, *s);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn unblock_all_signals() {
    // SAFETY: as above.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

fn write_file(path: &str, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| fail(&format!("writing {path}"), e))
}

/// The monitor: clone the init, put it in its cgroups, map it (a warm launcher: once its job
/// came), wait for it.
fn monitor(start: Start) -> Result<std::convert::Infallible> {
    // A group TERM from gantry reaches the init (and the program) directly; the monitor stays
    // to report the status. It leaves with the init.
    block_signals(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP]);
    // A write to an init or a gantry that is gone fails; it does not kill the monitor.
    // SAFETY: setting a signal's action to ignore.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let sync = start.sync();
    // Nothing gantry's process had open reaches the task: every descriptor above stderr is
    // closed at exec (gantry passed the sync socket without close-on-exec on purpose).
    let ranges = match sync {
        Some(keep) if keep >= 3 => [(3, keep - 1), (keep + 1, libc::c_int::MAX)],
        _ => [(3, libc::c_int::MAX), (1, 0)],
    };
    for (from, to) in ranges {
        if from <= to {
            // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only marks descriptors.
            unsafe {
                libc::syscall(
                    libc::SYS_close_range,
                    from as libc::c_uint,
                    to as libc::c_uint,
                    libc::CLOSE_RANGE_CLOEXEC,
                )
            };
        }
    }
    if let Some(sync) = sync {
        // SAFETY: fcntl on a descriptor gantry handed us.
        unsafe { libc::fcntl(sync, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    let (go_read, go_write) = pipe()?;
    let (status_read, status_write) = pipe()?;
    let joins = CgroupJoins::open(start.cgroups())?;

    let layers = start.layers();
    let mut flags = libc::CLONE_NEWUSER | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    if layers.pid {
        flags |= libc::CLONE_NEWPID;
    }
    if layers.mount {
        flags |= libc::CLONE_NEWNS;
    }
    if layers.net {
        flags |= libc::CLONE_NEWNET;
    }
    // SAFETY: a fork-like clone (no new stack: the child continues on a copy of ours) of a
    // single-threaded process.
    let pid = check(
        unsafe {
            libc::syscall(
                libc::SYS_clone,
                (flags | libc::SIGCHLD) as libc::c_ulong,
                0usize,
                0usize,
                0usize,
                0usize,
            )
        },
        "creating the task's namespaces (clone)",
    )? as libc::pid_t;
    if pid == 0 {
        drop(go_write);
        drop(status_read);
        let code = match init(&start, joins, go_read, status_write) {
            Ok(never) => match never {},
            Err(e) => {
                eprintln!("gantry sandbox: {e}");
                127
            }
        };
        // SAFETY: leave without running the parent's atexit handlers or flushing its buffers.
        unsafe { libc::_exit(code) };
    }
    drop(go_read);
    drop(status_write);
    // The init has its own copies of the `tasks` descriptors.
    let CgroupJoins { by_itself, by_pid } = joins;
    drop(by_itself);
    let kill_init = || {
        // SAFETY: kill(2) on our own child; a pid > 0.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    };
    // `Ok(false)`: a warm launcher that gantry let go without a job.
    let setup = (|| -> Result<bool> {
        for procs in &by_pid {
            std::fs::write(procs, pid.to_string())
                .map_err(|e| fail(&format!("joining {}", procs.display()), e))?;
        }
        match &start {
            Start::Now(job) => {
                map_ids(pid, &job.plan)?;
                write_all(go_write.as_fd(), &[1]).map_err(|e| fail("starting the task", e))?;
            }
            Start::Later {
                layers,
                cgroups,
                sync,
                ..
            } => {
                // SAFETY: the sync descriptor is open for the life of this process.
                let socket = unsafe { BorrowedFd::borrow_raw(*sync) };
                write_all(socket, &[READY]).map_err(|e| fail("saying it is ready", e))?;
                wait_for_job(socket, status_read.as_fd())?;
                let mut reader = std::fs::File::from(socket.try_clone_to_owned()?);
                let Some(body) = warm::Job::read_frame(&mut reader)
                    .map_err(|e| fail("reading the task's job", e))?
                else {
                    return Ok(false);
                };
                // Checked here, before anything of the job reaches the init.
                let job = Job::from_frame(&body, *layers, cgroups, *sync)
                    .map_err(|e| fail("the task's job", e))?;
                map_ids(pid, &job.plan)?;
                let mut frame = (body.len() as u32).to_le_bytes().to_vec();
                frame.extend(body);
                write_all(go_write.as_fd(), &frame).map_err(|e| fail("starting the task", e))?;
            }
        }
        Ok(true)
    })();
    match setup {
        Ok(true) => {}
        Ok(false) => {
            kill_init();
            reap(pid);
            remove_cgroups(start.cgroups());
            // SAFETY: leave without unwinding; nothing to flush.
            unsafe { libc::_exit(0) };
        }
        Err(e) => {
            kill_init();
            reap(pid);
            if matches!(start, Start::Later { .. }) {
                // A warm launcher's cgroups are its own until its job came: gantry may be gone.
                remove_cgroups(start.cgroups());
            }
            return Err(e);
        }
    }
    drop(go_write);
    // Nothing of the monitor's reaches the task's output from here: its copies of the output
    // pipes close, so that the output ends when the task's processes are gone, not when the
    // launcher is.
    let _ = stdio_to_null();
    let (program_status, gantry_gone) = wait_for_init(sync, status_read.as_fd(), kill_init);
    if let (Some(status), Some(sync), false, true) =
        (program_status, sync, gantry_gone, start.layers().pid)
    {
        let mut frame = [EXIT_REPORT; 5];
        frame[1..].copy_from_slice(&status.to_ne_bytes());
        // SAFETY: the sync descriptor is open for the life of this process.
        let _ = write_all(unsafe { BorrowedFd::borrow_raw(sync) }, &frame);
    }
    let init_status = reap(pid);
    if gantry_gone {
        // No one is left to remove the task's cgroups (gantry removes them once it has the
        // status).
        remove_cgroups(start.cgroups());
    }
    // The program's status when the init reported it; else the init's own (killed by gantry,
    // or by the kernel when out of memory).
    let status = program_status.unwrap_or(init_status);
    exit_like(status)
}

/// How the init comes into its cgroups.
///
/// In a v1 hierarchy the init moves itself, writing `0` to the cgroup's `tasks` file through a
/// descriptor the monitor opened (the kernel checks the opener's credentials, so the init may
/// use it without any id in its user namespace yet). A thread that moves itself is spared the
/// kernel's global threadgroup lock, whose write side waits for an RCU grace period: writing
/// the init's pid to `cgroup.procs` took 6–10 ms after a quiet moment on this project's
/// machines, against well under 0.1 ms this way. The init has one thread, so moving it moves
/// the whole process, and all it forks follows it. A v2 hierarchy has no `tasks` file (and
/// takes threads only into threaded cgroups): there the monitor writes the init's pid to
/// `cgroup.procs`, as before.
struct CgroupJoins {
    /// `tasks` files, opened by the monitor, for the init to write itself into.
    by_itself: Vec<(PathBuf, std::fs::File)>,
    /// `cgroup.procs` files the monitor writes the init's pid into.
    by_pid: Vec<PathBuf>,
}

impl CgroupJoins {
    fn open(dirs: &[PathBuf]) -> Result<CgroupJoins> {
        let mut joins = CgroupJoins {
            by_itself: Vec::new(),
            by_pid: Vec::new(),
        };
        for dir in dirs {
            let tasks = dir.join("tasks");
            match std::fs::OpenOptions::new().write(true).open(&tasks) {
                Ok(file) => joins.by_itself.push((tasks, file)),
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    joins.by_pid.push(dir.join("cgroup.procs"));
                }
                Err(e) => return Err(fail(&format!("opening {}", tasks.display()), e)),
            }
        }
        Ok(joins)
    }

    /// In the init, first of all: move its one thread into each v1 cgroup.
    fn join_itself(self) -> Result<()> {
        for (tasks, mut file) in self.by_itself {
            std::io::Write::write_all(&mut file, b"0")
                .map_err(|e| fail(&format!("joining {}", tasks.display()), e))?;
        }
        Ok(())
    }
}

/// Point standard input, output and error at `/dev/null`.
fn stdio_to_null() -> Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for fd in 0..3 {
        // SAFETY: dup2 onto one of this process's standard descriptors.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(Error::last_os_error());
        }
    }
    Ok(())
}

/// Wait until gantry sends a job (or lets the launcher go) on `sync`; fail if the init dies
/// meanwhile (its end of `status` closes), so that the launcher is seen dead before it is
/// taken.
fn wait_for_job(sync: BorrowedFd<'_>, status: BorrowedFd<'_>) -> Result<()> {
    let mut fds = [
        libc::pollfd {
            fd: sync.as_raw_fd(),
            events: libc::POLLIN | libc::POLLRDHUP,
            revents: 0,
        },
        libc::pollfd {
            fd: status.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: poll on descriptors we hold, with a correct length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            let error = Error::last_os_error();
            if error.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(fail("waiting for the task's job", error));
        }
        if fds[1].revents != 0 {
            return Err(Error::other("the task's init died while it waited"));
        }
        if fds[0].revents != 0 {
            return Ok(());
        }
    }
}

/// Remove the (empty) cgroups of an init that is gone; a v1 cgroup lets go a moment after its
/// last process was reaped, so try for about a second, as gantry's own removal does.
fn remove_cgroups(cgroups: &[PathBuf]) {
    for dir in cgroups.iter().rev() {
        for attempt in 0..10u32 {
            match std::fs::remove_dir(dir) {
                Err(e) if e.kind() != ErrorKind::NotFound && attempt < 9 => {
                    std::thread::sleep(std::time::Duration::from_millis(1 << attempt));
                }
                _ => break,
            }
        }
    }
}

/// Wait until the init reports the program's status or dies; kill it when gantry goes away
/// (then also says so).
fn wait_for_init(
    sync: Option<RawFd>,
    status: BorrowedFd<'_>,
    kill_init: impl Fn(),
) -> (Option<i32>, bool) {
    let mut fds = vec![libc::pollfd {
        fd: status.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    if let Some(sync) = sync {
        fds.push(libc::pollfd {
            fd: sync,
            events: libc::POLLRDHUP,
            revents: 0,
        });
    }
    let mut gone = false;
    loop {
        // SAFETY: poll on descriptors we hold, with a correct length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            if Error::last_os_error().kind() == ErrorKind::Interrupted {
                continue;
            }
            kill_init();
            return (None, gone);
        }
        if fds.len() > 1 && fds[1].revents != 0 {
            // gantry is gone (or closed its end): nothing of the task may outlive it.
            kill_init();
            gone = true;
            fds.truncate(1);
        }
        if fds[0].revents != 0 {
            let mut buf = [0u8; 4];
            // SAFETY: read into a local buffer of the given length.
            let n = unsafe { libc::read(fds[0].fd, buf.as_mut_ptr().cast(), buf.len()) };
            return ((n == 4).then(|| i32::from_ne_bytes(buf)), gone);
        }
    }
}

fn reap(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child with a local status.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if r == pid {
            return status;
        }
        if r < 0 && Error::last_os_error().kind() != ErrorKind::Interrupted {
            return status;
        }
    }
}

/// Leave the way `status` says the task ended: its exit code, or its signal.
fn exit_like(status: i32) -> Result<std::convert::Infallible> {
    if libc::WIFSIGNALED(status) {
        let signal = libc::WTERMSIG(status);
        // SAFETY: restore the default action and raise it on ourselves.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, signal);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::raise(signal);
        }
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    // SAFETY: as in the child: nothing to flush.
    unsafe { libc::_exit(code) }
}

/// Map the task uid and gid to unprivileged ids outside. Root maps them to the ids gantry
/// chose; anyone else can map only its own ids (and must give up `setgroups` to map a gid).
fn map_ids(pid: libc::pid_t, plan: &Plan) -> Result<()> {
    // SAFETY: plain getters.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let uid = plan.outside_uid.unwrap_or(euid);
    let gid = plan.outside_gid.unwrap_or(egid);
    if uid == 0 || gid == 0 {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            "refusing to map a task to uid or gid 0",
        ));
    }
    if euid != 0 {
        write_file(&format!("/proc/{pid}/setgroups"), "deny")?;
    }
    write_file(
        &format!("/proc/{pid}/uid_map"),
        &format!("{TASK_UID} {uid} 1\n"),
    )?;
    write_file(
        &format!("/proc/{pid}/gid_map"),
        &format!("{TASK_GID} {gid} 1\n"),
    )
}

/// The init: PID 1 of the task's namespaces.
fn init(
    start: &Start,
    joins: CgroupJoins,
    go: OwnedFd,
    status: OwnedFd,
) -> Result<std::convert::Infallible> {
    // The monitor is single-threaded, so its death is the parent's death: nothing of the task
    // outlives it.
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    // Into its cgroups before anything else: all it does from here on counts against the
    // task's limits. Should this fail, the monitor sees the init die.
    joins.join_itself()?;
    let mut go = std::fs::File::from(go);
    let not_started = |_| Error::other("gantry did not start the task");
    let sent;
    let mut prebuilt = None;
    let mut proxy_ahead = None;
    let job = match start {
        Start::Now(job) => {
            std::io::Read::read_exact(&mut go, &mut [0u8; 1]).map_err(not_started)?;
            job
        }
        Start::Later {
            layers,
            cgroups,
            sync,
            skeleton,
        } => {
            // While it waits, with gantry's ids still (the job is read after it). A skeleton
            // that does not match this machine is no error: the root is then built whole.
            prebuilt = skeleton
                .as_deref()
                .filter(|_| layers.mount)
                .and_then(|s| Prebuilt::bind(s).ok());
            // Loopback and the proxy's listener are no tenant's either: made now, sent when
            // the job comes (or made then, should this fail).
            if layers.net {
                proxy_ahead = proxy_network(PROXY_PORT).ok();
            }
            let body = warm::Job::read_frame(&mut go)
                .map_err(not_started)?
                .ok_or_else(|| Error::other("gantry did not start the task"))?;
            sent = Job::from_frame(&body, *layers, cgroups, *sync)?;
            &sent
        }
    };
    drop(go);
    let Job {
        plan,
        rlimits,
        program,
        argv,
        env,
        cwd,
        null_stdin,
    } = job;
    let rlimits = *rlimits;
    // The system entries bound ahead of demand serve only a job that reads exactly them.
    let prebuilt = prebuilt.filter(|p| p.fits(plan));
    // Opened while this process still has gantry's ids (so it can look up `/root/.cache/…`
    // below a `0700` home) and after the clone (a bind's source must be a mount of this
    // namespace).
    let binds = if plan.layers.mount {
        prepare_binds(plan, prebuilt.is_some())?
    } else {
        Vec::new()
    };
    // Files the init makes (its root's skeleton) must be owned by an id mapped in the user
    // namespace, so it becomes the task uid now, keeping its capabilities in the namespace
    // until the program drops them.
    become_task_ids(plan.outside_uid.is_none(), true)?;
    // Set after the change of ids, which clears it.
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    // The monitor may have died before that: its end of the status pipe is then closed.
    let mut pipe = libc::pollfd {
        fd: status.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    // SAFETY: poll on one descriptor we hold, without waiting.
    if unsafe { libc::poll(&mut pipe, 1, 0) } != 0 && pipe.revents & libc::POLLERR != 0 {
        return Err(Error::other("the launcher is gone"));
    }
    if plan.layers.mount {
        build_root(&binds, prebuilt.as_ref()).map_err(|e| fail("building the task's root", e))?;
        // The descriptors of the host's paths go before anything of the task runs.
        drop(binds);
        drop(prebuilt);
    }
    // No namespaces below this one (the kernel surface a user namespace opens is where local
    // privilege escalations live), and no keyring shared with gantry or other tasks. Both
    // are limits of this namespace's own; the probe and the tests check the first.
    let _ = std::fs::write("/proc/sys/user/max_user_namespaces", "0");
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: keyctl with a null name: join a new anonymous session keyring.
    unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, 0usize) };
    // The message reaches the task's answer: it names no host path.
    std::env::set_current_dir(cwd).map_err(|e| fail("entering the task's directory", e))?;
    doing(rustix::system::sethostname(HOSTNAME.as_bytes()), || {
        "setting the hostname".into()
    })?;
    if plan.layers.net {
        let ahead = proxy_ahead.filter(|_| plan.proxy_port == PROXY_PORT);
        match (plan.sync, ahead) {
            (Some(sync), Some(listener)) => send_listener(sync, listener)?,
            (Some(sync), None) => send_listener(sync, proxy_network(plan.proxy_port)?)?,
            (None, _) => loopback_up().map_err(|e| fail("bringing up loopback", e))?,
        }
    }
    if let Some(sync) = plan.sync {
        // SAFETY: our copy of the sync socket; the monitor keeps its own.
        unsafe { libc::close(sync) };
    }
    // Everything the program's start needs is made here, before it: the child shares this
    // process's memory until its `execve`, so it makes system calls only.
    // Landlock's rules name the paths as they are in the new root, built above.
    let restriction = {
        let read = landlock_read_paths(&plan.read, plan.layers.mount);
        let mut write: Vec<&Path> = plan.write.iter().map(PathBuf::as_path).collect();
        if plan.layers.mount {
            // Its own tmpfs, not the host's.
            write.extend([Path::new("/tmp"), Path::new("/dev/shm")]);
        }
        Restriction::new(&read, &write, rlimits)
            .map_err(|e| Error::other(format!("restricting the program: {e:#}")))?
    };
    let stdin = match null_stdin {
        true => Some(std::fs::File::open("/dev/null").map_err(|e| fail("opening /dev/null", e))?),
        false => None,
    };
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut env_p: Vec<*const libc::c_char> = env.iter().map(|a| a.as_ptr()).collect();
    env_p.push(std::ptr::null());
    let mut start = ProgramStart {
        stdin: stdin.as_ref().map(AsRawFd::as_raw_fd),
        denied_setgroups: plan.outside_uid.is_none(),
        restriction: &restriction,
        program,
        argv: &argv_p,
        env: &env_p,
        failed: None,
    };
    let waited = block_signals(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGCHLD]);
    let child = start.spawn()?;
    if let Some(error) = start.failed.take() {
        // Still the task's stderr: the task's answer says why nothing ran.
        eprintln!(
            "gantry sandbox: cannot run {}: {error}",
            program.to_string_lossy()
        );
    }
    drop((stdin, restriction));
    // As the monitor's: the init's copies of the output pipes close.
    let _ = stdio_to_null();
    supervise(plan.layers.pid, child, &waited, status)
}

/// The program's start, prepared by the init: a child made with `CLONE_VM | CLONE_VFORK` (as
/// `posix_spawn` does) on a stack of its own, which drops the init's privileges, applies the
/// restriction and calls `execve`. Sharing the init's memory until then, it copies no page
/// tables and takes no copy-on-write faults, and the init, suspended meanwhile, has nothing to
/// unmap afterwards: a `fork` and the `exec` that followed it cost about 160 µs more on this
/// project's machines.
struct ProgramStart<'a> {
    /// `/dev/null`, to become standard input; `None` keeps the launcher's.
    stdin: Option<RawFd>,
    denied_setgroups: bool,
    restriction: &'a Restriction,
    program: &'a std::ffi::CStr,
    /// NUL-terminated arrays of pointers into the job's strings.
    argv: &'a [*const libc::c_char],
    env: &'a [*const libc::c_char],
    /// Why the child could not run the program, put here by the child (same memory) before it
    /// exits with 127.
    failed: Option<Error>,
}

/// The child's stack: only system calls and, on failure, one error value need it.
const PROGRAM_START_STACK: usize = 256 << 10;

impl ProgramStart<'_> {
    /// Start the program; its pid. Returns once the child has called `execve` (or exited).
    fn spawn(&mut self) -> Result<libc::pid_t> {
        let page = 4096;
        // SAFETY: an anonymous private mapping of our own, unmapped below.
        let stack = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PROGRAM_START_STACK,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if stack == libc::MAP_FAILED {
            return Err(fail(
                "mapping the program's start stack",
                Error::last_os_error(),
            ));
        }
        // SAFETY: the lowest page of the mapping above: a guard against overflowing it.
        unsafe { libc::mprotect(stack, page, libc::PROT_NONE) };
        // SAFETY: the child runs `start_program` on the stack above (it grows down from its
        // end) with `self`, which outlives it: CLONE_VFORK suspends this process until the
        // child has called `execve` or exited, and this process is single-threaded, so no
        // other thread touches the memory they share meanwhile.
        let pid = unsafe {
            let top = stack.cast::<u8>().add(PROGRAM_START_STACK);
            libc::clone(
                start_program,
                top.cast(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                (self as *mut Self).cast(),
            )
        };
        let error = Error::last_os_error();
        // SAFETY: the mapping above; the child no longer runs on it.
        unsafe { libc::munmap(stack, PROGRAM_START_STACK) };
        if pid < 0 {
            return Err(fail("starting the program", error));
        }
        Ok(pid)
    }
}

/// The child of [`ProgramStart::spawn`].
extern "C" fn start_program(start: *mut libc::c_void) -> libc::c_int {
    // SAFETY: the `ProgramStart` the init passed, alive and not touched by the init (it is
    // suspended) until this child execs or exits.
    let start = unsafe { &mut *start.cast::<ProgramStart>() };
    // Default actions for every signal (a Rust launcher starts with SIGPIPE ignored, which an
    // exec would keep), and a session of its own: no controlling terminal. The child has its
    // own copy of the signal actions (no CLONE_SIGHAND) and its own mask.
    for signal in 1..32 {
        // SAFETY: signal(2) with the default action; KILL and STOP refuse it, harmlessly.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
    }
    unblock_all_signals();
    // SAFETY: setsid in the new child, which leads no group yet.
    unsafe { libc::setsid() };
    let stdin = match start.stdin {
        // SAFETY: dup2 of the init's descriptor onto this child's standard input.
        Some(null) if unsafe { libc::dup2(null, 0) } < 0 => Err(Error::last_os_error()),
        _ => Ok(()),
    };
    let error = stdin
        .and_then(|()| drop_privileges(start.denied_setgroups))
        .and_then(|()| start.restriction.apply_in_child())
        .map(|()| {
            // SAFETY: execve with NUL-terminated arrays of valid C strings.
            unsafe {
                libc::execve(
                    start.program.as_ptr(),
                    start.argv.as_ptr(),
                    start.env.as_ptr(),
                )
            };
            Error::last_os_error()
        })
        .unwrap_or_else(|e| e);
    start.failed = Some(error);
    127
}

/// The paths Landlock lets the program read: `read`, except that in a root of its own
/// (`own_root`) the entries under `/etc` are one rule on `/etc`. That root's `/etc` holds
/// nothing but those entries (it is built from the same list), so the one rule allows what the
/// two dozen did, and every spawn opens and adds two dozen rules fewer.
fn landlock_read_paths(read: &[PathBuf], own_root: bool) -> Vec<&Path> {
    let etc = Path::new("/etc");
    let mut paths: Vec<&Path> = Vec::with_capacity(read.len());
    let mut any_etc = false;
    for path in read {
        if own_root && path.starts_with(etc) {
            any_etc = true;
        } else {
            paths.push(path);
        }
    }
    if any_etc {
        paths.push(etc);
    }
    paths
}

/// The init's loop: forward TERM, INT and HUP; reap; when the program ends, end the rest.
fn supervise(
    pid_namespace: bool,
    child: libc::pid_t,
    waited: &libc::sigset_t,
    status: OwnedFd,
) -> Result<std::convert::Infallible> {
    // Everyone in the namespace but the init, or only the program when there is no namespace
    // of its own (kill(-1) outside one would reach every process of the task's uid).
    let everyone = |signal| {
        // SAFETY: kill(2); -1 only inside our own PID namespace.
        unsafe {
            if pid_namespace {
                libc::kill(-1, signal);
            } else {
                libc::kill(child, signal);
            }
        }
    };
    loop {
        // SAFETY: wait for one of the blocked signals.
        let signal = unsafe { libc::sigwaitinfo(waited, std::ptr::null_mut()) };
        if signal < 0 {
            continue;
        }
        if signal != libc::SIGCHLD {
            everyone(signal);
            continue;
        }
        loop {
            let mut wstatus = 0;
            // SAFETY: reap any child without blocking.
            let r = unsafe { libc::waitpid(-1, &mut wstatus, libc::WNOHANG | libc::__WALL) };
            if r <= 0 {
                break;
            }
            if r == child {
                // The task is its program: what it leaves behind goes with it.
                everyone(libc::SIGKILL);
                // SAFETY: reap the rest, blocking, until none is left.
                while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::__WALL) } > 0 {}
                let bytes = wstatus.to_ne_bytes();
                // SAFETY: write a local buffer to our pipe.
                unsafe { libc::write(status.as_raw_fd(), bytes.as_ptr().cast(), 4) };
                // SAFETY: leave without unwinding.
                unsafe { libc::_exit(0) };
            }
        }
    }
}

/// Become the task uid and gid, with no supplementary groups. `keep_caps`: keep the
/// capabilities this process has in its user namespace (the init, which still builds the
/// task's root); else they go with the change of uid.
fn become_task_ids(denied_setgroups: bool, keep_caps: bool) -> Result<()> {
    use rustix::thread::{
        CapabilitiesSecureBits, Gid, Uid, capabilities, set_capabilities,
        set_capabilities_secure_bits, set_thread_groups, set_thread_res_gid, set_thread_res_uid,
    };
    if keep_caps {
        set_capabilities_secure_bits(CapabilitiesSecureBits::KEEP_CAPS)
            .map_err(|e| fail("keeping capabilities", e.into()))?;
    }
    // Without the right to set groups (an unprivileged gantry denied it to map its gid), the
    // task keeps gantry's own.
    if let Err(e) = set_thread_groups(&[])
        && !denied_setgroups
    {
        return Err(fail("dropping supplementary groups", e.into()));
    }
    let (uid, gid) = (Uid::from_raw(TASK_UID), Gid::from_raw(TASK_GID));
    set_thread_res_gid(gid, gid, gid).map_err(|e| fail("becoming the task gid", e.into()))?;
    set_thread_res_uid(uid, uid, uid).map_err(|e| fail("becoming the task uid", e.into()))?;
    if keep_caps {
        // The change of uid cleared the effective set; raise it again from the permitted one.
        let mut caps = capabilities(None).map_err(|e| fail("reading capabilities", e.into()))?;
        caps.effective = caps.permitted;
        set_capabilities(None, caps).map_err(|e| fail("raising capabilities", e.into()))?;
    }
    Ok(())
}

/// Become the task uid with no capabilities and no way to gain any.
fn drop_privileges(denied_setgroups: bool) -> Result<()> {
    use rustix::thread::{
        CapabilitiesSecureBits, CapabilitySet, CapabilitySets, clear_ambient_capability_set,
        remove_capability_from_bounding_set, set_capabilities, set_capabilities_secure_bits,
        set_no_new_privs,
    };
    // The bounding set while we still may (CAP_SETPCAP in our namespace); a capability this
    // kernel does not know is refused, and harmless.
    for cap in CapabilitySet::all().iter() {
        let _ = remove_capability_from_bounding_set(cap);
    }
    clear_ambient_capability_set().map_err(|e| fail("clearing ambient capabilities", e.into()))?;
    set_capabilities_secure_bits(CapabilitiesSecureBits::empty())
        .map_err(|e| fail("clearing securebits", e.into()))?;
    become_task_ids(denied_setgroups, false)?;
    // Whatever capabilities are left in our namespace: none.
    let none = CapabilitySets {
        effective: CapabilitySet::empty(),
        permitted: CapabilitySet::empty(),
        inheritable: CapabilitySet::empty(),
    };
    set_capabilities(None, none).map_err(|e| fail("dropping capabilities", e.into()))?;
    set_no_new_privs(true).map_err(|e| fail("setting no_new_privs", e.into()))
}

fn cstr(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::new(ErrorKind::InvalidInput, "a NUL byte in a path"))
}

/// `r` with what was being done, for the task's error.
fn doing<T>(r: rustix::io::Result<T>, what: impl FnOnce() -> String) -> Result<T> {
    r.map_err(|e| fail(&what(), e.into()))
}

/// A fresh tmpfs at `target` (`mode`, e.g. `c"mode=0755"`).
fn tmpfs(target: &Path, flags: MountFlags, mode: &std::ffi::CStr) -> Result<()> {
    doing(
        rustix::mount::mount("tmpfs", target, "tmpfs", flags, mode),
        || format!("mounting a tmpfs on {}", target.display()),
    )
}

/// Remount the bind mount at `target` with `flags` (read-only, nosuid, …).
fn remount_bind(target: &Path, flags: MountFlags) -> Result<()> {
    doing(
        rustix::mount::mount_remount(target, MountFlags::BIND | flags, ""),
        || format!("remounting {}", target.display()),
    )
}

/// The flags a bind mount of `fd`'s file system must keep when remounted (a user namespace
/// may not clear them on a mount it did not make).
fn locked_flags(fd: BorrowedFd<'_>) -> MountFlags {
    use rustix::fs::StatVfsMountFlags as St;
    let Ok(st) = rustix::fs::fstatvfs(fd) else {
        return MountFlags::empty();
    };
    [
        (St::NOEXEC, MountFlags::NOEXEC),
        (St::NOATIME, MountFlags::NOATIME),
        (St::NODIRATIME, MountFlags::NODIRATIME),
        (St::RELATIME, MountFlags::RELATIME),
        (St::RDONLY, MountFlags::RDONLY),
    ]
    .into_iter()
    .filter(|(flag, _)| st.f_flag.contains(*flag))
    .fold(MountFlags::empty(), |acc, (_, ms)| acc | ms)
}

/// One path of the task's root, opened by the init before it becomes the task uid, which may
/// not be able to look it up (`/root/.cache/…` below a `0700` home): it binds the descriptor
/// instead of the path.
#[derive(Debug)]
struct Bind {
    path: PathBuf,
    writable: bool,
    source: Source,
}

#[derive(Debug)]
enum Source {
    /// An optional system path that is not on this machine.
    Missing,
    /// Recreated as the same symlink (`/bin -> usr/bin`).
    Symlink(PathBuf),
    Dir(OwnedFd),
    File(OwnedFd),
}

/// Open every read and write path of `plan`, parents before children (so a write path inside
/// a read path lands on top of it); with `prebuilt`, all but the system entries, which are
/// bound already.
fn prepare_binds(plan: &Plan, prebuilt: bool) -> Result<Vec<Bind>> {
    let mut paths: Vec<(&PathBuf, bool)> = plan
        .read
        .iter()
        .filter(|p| !(prebuilt && skeleton::is_system_entry(p)))
        .map(|p| (p, false))
        .chain(plan.write.iter().map(|p| (p, true)))
        .collect();
    paths.sort_by_key(|(p, _)| p.components().count());
    let mut binds = Vec::with_capacity(paths.len());
    for (path, writable) in paths {
        let source = match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == ErrorKind::NotFound && !writable => Source::Missing,
            Err(e) => return Err(fail(&format!("reading {}", path.display()), e)),
            Ok(meta) if meta.file_type().is_symlink() => Source::Symlink(std::fs::read_link(path)?),
            Ok(meta) => {
                let fd = open_path(path)?;
                if meta.is_dir() {
                    Source::Dir(fd)
                } else {
                    Source::File(fd)
                }
            }
        };
        if writable && !matches!(source, Source::Dir(_)) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{} is not a directory", path.display()),
            ));
        }
        binds.push(Bind {
            path: path.clone(),
            writable,
            source,
        });
    }
    Ok(binds)
}

const OLD: &str = "/oldroot";
const NEW: &str = "/newroot";

fn under(root: &str, path: &Path) -> PathBuf {
    Path::new(root).join(path.strip_prefix("/").unwrap_or(path))
}

fn bind(bind: &Bind) -> Result<()> {
    let target = under(NEW, &bind.path);
    let (fd, dir) = match &bind.source {
        Source::Missing => return Ok(()),
        Source::Symlink(link) => {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            if std::fs::symlink_metadata(&target).is_err() {
                std::os::unix::fs::symlink(link, &target)?;
            }
            return Ok(());
        }
        Source::Dir(fd) => (fd, true),
        Source::File(fd) => (fd, false),
    };
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if std::fs::symlink_metadata(&target).is_err() {
        if dir {
            std::fs::create_dir_all(&target)?;
        } else {
            std::fs::write(&target, b"")?;
        }
    }
    // The task's own /proc (mounted first) resolves our descriptor without a path lookup.
    let source = PathBuf::from(format!("{NEW}/proc/self/fd/{}", fd.as_raw_fd()));
    doing(
        rustix::mount::mount_bind_recursive(&source, &target),
        || format!("binding onto {}", target.display()),
    )?;
    let mut flags = MountFlags::NOSUID | MountFlags::NODEV | locked_flags(fd.as_fd());
    if !bind.writable {
        flags |= MountFlags::RDONLY;
    }
    remount_bind(&target, flags)
}

/// Build the task's root and make it `/`: a read-only tmpfs with the read paths bound
/// read-only, the write paths read-write, and a private `/proc`, `/dev` and `/tmp`.
fn build_root(binds: &[Bind], prebuilt: Option<&Prebuilt>) -> Result<()> {
    use rustix::mount::{MountPropagationFlags, UnmountFlags};
    let slash = Path::new("/");
    let private = MountFlags::NOSUID | MountFlags::NODEV;
    // Nothing mounted here propagates back to gantry's namespace.
    doing(
        rustix::mount::mount_change(
            slash,
            MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC,
        ),
        || "making mounts private".into(),
    )?;
    // A scratch tmpfs becomes the root for a moment, with the old root beneath it at /oldroot
    // (bubblewrap's way: pivot_root needs a mount point, and /tmp is one everywhere).
    let base = Path::new("/tmp");
    tmpfs(base, private, c"mode=0755")?;
    std::env::set_current_dir(base)?;
    std::fs::create_dir("newroot")?;
    std::fs::create_dir("oldroot")?;
    doing(rustix::process::pivot_root(".", "oldroot"), || {
        "pivot_root".into()
    })?;
    std::env::set_current_dir(slash)?;
    tmpfs(Path::new(NEW), private, c"mode=0755")?;
    // The private directories first: a task's own directories may lie below /tmp.
    let proc_dir = under(NEW, Path::new("/proc"));
    std::fs::create_dir_all(&proc_dir)?;
    doing(
        rustix::mount::mount(
            "proc",
            &proc_dir,
            "proc",
            private | MountFlags::NOEXEC,
            None,
        ),
        || "mounting /proc".into(),
    )?;
    match prebuilt {
        Some(prebuilt) => prebuilt.graft()?,
        None => build_dev()?,
    }
    let tmp = under(NEW, Path::new("/tmp"));
    std::fs::create_dir_all(&tmp)?;
    tmpfs(&tmp, private, c"mode=1777")?;
    for b in binds {
        bind(b).map_err(|e| fail(&format!("binding {}", b.path.display()), e))?;
    }
    // The new root replaces the old one, which is then gone from this namespace entirely.
    std::env::set_current_dir(NEW)?;
    doing(rustix::process::pivot_root(".", "."), || {
        "pivot_root".into()
    })?;
    doing(rustix::mount::unmount(".", UnmountFlags::DETACH), || {
        "detaching the old root".into()
    })?;
    std::env::set_current_dir(slash)?;
    remount_bind(slash, private | MountFlags::RDONLY)
}

/// A `/dev` with the harmless devices only.
fn build_dev() -> Result<()> {
    let dev = under(NEW, Path::new("/dev"));
    std::fs::create_dir_all(&dev)?;
    tmpfs(&dev, MountFlags::NOSUID, c"mode=0755")?;
    for name in skeleton::DEVICES {
        let source = Path::new(OLD).join("dev").join(name);
        let target = dev.join(name);
        if std::fs::metadata(&source).is_ok() {
            std::fs::write(&target, b"")?;
            doing(rustix::mount::mount_bind(&source, &target), || {
                format!("binding /dev/{name}")
            })?;
        }
    }
    for (name, target) in skeleton::DEVICE_LINKS {
        std::os::unix::fs::symlink(target, dev.join(name))?;
    }
    let shm = dev.join("shm");
    std::fs::create_dir_all(&shm)?;
    tmpfs(&shm, MountFlags::NOSUID | MountFlags::NODEV, c"mode=1777")
}

/// The system part of a task's root, bound by a warm launcher's init while it waits for its
/// job (see [`skeleton`]): the host's system entries and devices on the skeleton's
/// mountpoints, read-only, in the init's own mount namespace. When the job comes, each of
/// the skeleton's top-level entries is one recursive bind (or one symlink) into the new root,
/// in place of a bind and a remount per entry.
#[derive(Debug)]
struct Prebuilt {
    /// The skeleton's top-level entries but `dev`: a directory with the host's entries bound
    /// beneath it, or a symlink.
    top: Vec<(OsString, Source)>,
    /// The skeleton's `dev`, with the devices bound onto it.
    dev: OwnedFd,
}

impl Prebuilt {
    /// Bind the host's system entries onto the skeleton at `skeleton`. Done before the uid
    /// map exists (the init may make no file then, only mounts), with gantry's ids. Fails when
    /// the skeleton does not match the host (an entry changed kind since gantry made it).
    fn bind(skeleton: &Path) -> Result<Prebuilt> {
        use rustix::mount::MountPropagationFlags;
        // Nothing mounted here propagates back to gantry's namespace.
        doing(
            rustix::mount::mount_change(
                Path::new("/"),
                MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC,
            ),
            || "making mounts private".into(),
        )?;
        let base = MountFlags::NOSUID | MountFlags::NODEV;
        // The skeleton's own directories read-only, whatever the file system it lies on.
        doing(rustix::mount::mount_bind(skeleton, skeleton), || {
            "binding the skeleton".into()
        })?;
        let own = open_path(skeleton)?;
        remount_bind(
            skeleton,
            base | MountFlags::RDONLY | locked_flags(own.as_fd()),
        )?;
        for host in skeleton::system_entries() {
            let at = under(&skeleton.to_string_lossy(), &host);
            let host_meta = std::fs::symlink_metadata(&host);
            let at_meta = std::fs::symlink_metadata(&at);
            let (host_meta, at_meta) = match (host_meta, at_meta) {
                (Err(_), Err(_)) => continue,
                (Ok(h), Ok(a)) => (h, a),
                _ => return Err(mismatch(&host)),
            };
            if host_meta.file_type().is_symlink() || at_meta.file_type().is_symlink() {
                if std::fs::read_link(&host).ok() != std::fs::read_link(&at).ok() {
                    return Err(mismatch(&host));
                }
                continue;
            }
            if host_meta.is_dir() != at_meta.is_dir() {
                return Err(mismatch(&host));
            }
            let source = open_path(&host)?;
            doing(rustix::mount::mount_bind_recursive(&host, &at), || {
                format!("binding {}", host.display())
            })?;
            let flags = base | MountFlags::RDONLY | locked_flags(source.as_fd());
            remount_bind(&at, flags)?;
        }
        let dev = skeleton.join("dev");
        for name in skeleton::DEVICES {
            let (host, at) = (Path::new("/dev").join(name), dev.join(name));
            match (std::fs::metadata(&host).is_ok(), at.is_file()) {
                (false, false) => {}
                (true, true) => doing(rustix::mount::mount_bind(&host, &at), || {
                    format!("binding /dev/{name}")
                })?,
                _ => return Err(mismatch(&host)),
            }
        }
        let mut top = Vec::new();
        for entry in std::fs::read_dir(skeleton)? {
            let entry = entry?;
            let name = entry.file_name();
            if name == "dev" {
                continue;
            }
            let source = if entry.file_type()?.is_symlink() {
                Source::Symlink(std::fs::read_link(entry.path())?)
            } else {
                Source::Dir(open_path(&entry.path())?)
            };
            top.push((name, source));
        }
        Ok(Prebuilt {
            top,
            dev: open_path(&dev)?,
        })
    }

    /// Whether `plan`'s root is what this holds plus the task's own paths: it reads every
    /// system entry (none was left out as forbidden), writes none, and nothing else of it
    /// lies in `/etc` or `/dev`, where the prebuilt tree has no mountpoint to give it.
    fn fits(&self, plan: &Plan) -> bool {
        skeleton::system_entries().all(|e| plan.read.contains(&e))
            && plan.write.iter().all(|p| !skeleton::is_system_entry(p))
            && plan
                .read
                .iter()
                .chain(&plan.write)
                .filter(|p| !skeleton::is_system_entry(p))
                .all(|p| !p.starts_with("/etc") && !p.starts_with("/dev"))
    }

    /// Graft the prebuilt tree into the new root (at [`NEW`], with its `/proc` mounted): its
    /// `/dev` with a fresh `/dev/shm`, and the system entries.
    fn graft(&self) -> Result<()> {
        let from = |fd: &OwnedFd| PathBuf::from(format!("{NEW}/proc/self/fd/{}", fd.as_raw_fd()));
        let dev = under(NEW, Path::new("/dev"));
        std::fs::create_dir(&dev)?;
        doing(
            rustix::mount::mount_bind_recursive(from(&self.dev), &dev),
            || "binding /dev".into(),
        )?;
        tmpfs(
            &dev.join("shm"),
            MountFlags::NOSUID | MountFlags::NODEV,
            c"mode=1777",
        )?;
        for (name, source) in &self.top {
            let target = Path::new(NEW).join(name);
            match source {
                Source::Symlink(link) => std::os::unix::fs::symlink(link, &target)?,
                Source::Dir(fd) => {
                    std::fs::create_dir(&target)?;
                    doing(
                        rustix::mount::mount_bind_recursive(from(fd), &target),
                        || format!("binding {}", target.display()),
                    )?;
                }
                Source::File(_) | Source::Missing => {}
            }
        }
        Ok(())
    }
}

fn mismatch(host: &Path) -> Error {
    Error::other(format!(
        "the sandbox skeleton does not match {}",
        host.display()
    ))
}

/// An `O_PATH` descriptor of `path`, not following a last symlink.
fn open_path(path: &Path) -> Result<OwnedFd> {
    let c = cstr(path)?;
    // SAFETY: open(2) with a valid C string; the descriptor is ours.
    let fd = check(
        unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            )
        }
        .into(),
        &format!("opening {}", path.display()),
    )?;
    // SAFETY: just returned by open.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Bring up `lo` in the task's network namespace (it starts down).
fn loopback_up() -> Result<()> {
    // SAFETY: a datagram socket for the interface ioctls, closed on drop.
    let fd = check(
        unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) }.into(),
        "socket",
    )?;
    // SAFETY: the descriptor was just returned to us.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    // SAFETY: ifreq is plain data; the ioctls read and write it in place.
    unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        check(
            libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req).into(),
            "SIOCGIFFLAGS",
        )?;
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        check(
            libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS, &req).into(),
            "SIOCSIFFLAGS",
        )?;
    }
    Ok(())
}

/// Bring up loopback and listen on the proxy port on it, inside the task's network
/// namespace.
fn proxy_network(port: u16) -> Result<std::net::TcpListener> {
    loopback_up().map_err(|e| fail("bringing up loopback", e))?;
    std::net::TcpListener::bind(("127.0.0.1", port)).map_err(|e| fail("starting the proxy", e))
}

/// Hand the proxy's listener to gantry, which serves it from outside (a socket stays in the
/// namespace it was made in).
fn send_listener(sync: RawFd, listener: std::net::TcpListener) -> Result<()> {
    // SAFETY: the sync descriptor is open for the life of this process.
    let sync = unsafe { BorrowedFd::borrow_raw(sync) };
    send_fd(sync, listener.as_fd()).map_err(|e| fail("starting the proxy", e))
}

/// Send one descriptor over a unix socket (SCM_RIGHTS), with one byte of data.
pub fn send_fd(socket: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut ancillary = SendAncillaryBuffer::new(&mut space);
    let fds = [fd];
    ancillary.push(SendAncillaryMessage::ScmRights(&fds));
    rustix::net::sendmsg(
        socket,
        &[std::io::IoSlice::new(b"L")],
        &mut ancillary,
        SendFlags::empty(),
    )?;
    Ok(())
}

/// Receive one descriptor sent by [`send_fd`]; `None` at end of stream.
pub fn recv_fd(socket: BorrowedFd<'_>) -> Result<Option<OwnedFd>> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut ancillary = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let msg = rustix::net::recvmsg(
        socket,
        &mut [std::io::IoSliceMut::new(&mut byte)],
        &mut ancillary,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    if msg.bytes == 0 {
        return Ok(None);
    }
    for message in ancillary.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = message
            && let Some(fd) = fds.next()
        {
            return Ok(Some(fd));
        }
    }
    Err(Error::new(
        ErrorKind::InvalidData,
        "no descriptor in the message",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_init_moves_itself_where_a_tasks_file_exists_and_is_moved_by_pid_elsewhere() {
        let root = tempfile::tempdir().unwrap();
        let (v1, v2) = (root.path().join("pids/t"), root.path().join("unified/t"));
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::write(v1.join("tasks"), "").unwrap();
        let joins = CgroupJoins::open(&[v1.clone(), v2.clone()]).unwrap();
        let itself: Vec<_> = joins.by_itself.iter().map(|(p, _)| p.clone()).collect();
        assert_eq!(itself, [v1.join("tasks")]);
        assert_eq!(joins.by_pid, [v2.join("cgroup.procs")]);
        // What the init writes: `0`, itself.
        joins.join_itself().unwrap();
        assert_eq!(std::fs::read_to_string(v1.join("tasks")).unwrap(), "0");
        // A `tasks` file that cannot be opened is an error, not a silent move by pid.
        let unreadable = root.path().join("memory/t");
        std::fs::create_dir_all(unreadable.join("tasks")).unwrap();
        let error = CgroupJoins::open(&[unreadable]).err().unwrap();
        assert!(error.to_string().contains("memory/t/tasks"), "{error}");
    }

    #[test]
    fn layers_parse_and_print() {
        assert_eq!(Layers::parse("user,pid,mount,net").unwrap(), Layers::ALL);
        assert_eq!(Layers::parse(&Layers::ALL.to_arg()).unwrap(), Layers::ALL);
        assert_eq!(Layers::parse("").unwrap(), Layers::default());
        assert!(Layers::parse("pid").is_err(), "pid without user");
        assert!(Layers::parse("user,mount").is_err(), "mount without pid");
        assert!(Layers::parse("user,bogus").is_err());
    }

    #[test]
    fn etc_is_one_landlock_rule_only_in_a_root_of_its_own() {
        let read: Vec<PathBuf> = ["/usr", "/etc/hosts", "/etc/ssl", "/opt/tool", "/etcetera/x"]
            .into_iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(
            landlock_read_paths(&read, true),
            [
                Path::new("/usr"),
                Path::new("/opt/tool"),
                Path::new("/etcetera/x"),
                Path::new("/etc")
            ]
        );
        // Without a mount namespace the task sees the host's whole /etc: a rule per entry.
        assert_eq!(
            landlock_read_paths(&read, false),
            read.iter().map(PathBuf::as_path).collect::<Vec<_>>()
        );
        let no_etc = [PathBuf::from("/usr")];
        assert_eq!(landlock_read_paths(&no_etc, true), [Path::new("/usr")]);
    }

    #[test]
    fn paths_land_under_the_new_root() {
        assert_eq!(
            under(NEW, Path::new("/usr/lib")),
            PathBuf::from("/newroot/usr/lib")
        );
        assert_eq!(under(OLD, Path::new("/")), PathBuf::from("/oldroot"));
    }

    #[test]
    fn descriptors_cross_a_socket_pair() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        send_fd(a.as_fd(), file.as_fd()).unwrap();
        let got = recv_fd(b.as_fd()).unwrap().expect("a descriptor");
        assert_ne!(got.as_raw_fd(), file.as_raw_fd());
        drop(a);
        assert!(recv_fd(b.as_fd()).unwrap().is_none(), "end of stream");
    }
}
