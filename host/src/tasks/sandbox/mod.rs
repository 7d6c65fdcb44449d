//! A task's sandbox. A task is a hostile tenant: it must not read, write, signal or reach
//! anything that is not its own, nor hold any key.
//!
//! Walls, outermost first (each in its own module):
//! - [`namespaces`]: user (an unprivileged uid, no capabilities), PID (only its own
//!   processes; all die with it), mount (a minimal root: system directories and the backend's
//!   install tree read-only, its workspace, home and temp dir writable, nothing of gantry's),
//!   IPC, UTS and network (loopback only, where gantry's egress and model proxy listen);
//! - [`cgroup`]: pids, memory and CPU bounds per task;
//! - Landlock ([`Restriction`]): reads and writes only under the task's paths, no signals or
//!   abstract sockets beyond its own domain; rlimits.
//!
//! [`paths`] decides what a task may read. The walls are applied by a launcher process that
//! gantry spawns with `posix_spawn` (`gantry-sandbox`, or `gantry __sandbox-exec`), which
//! builds them and execs the program: no `fork` of the large host process. Without a launcher
//! (the library used on its own), only Landlock and the rlimits are applied, between `fork`
//! and `exec`, by a `pre_exec` hook that makes only system calls on inherited descriptors.

pub mod cgroup;
pub mod namespaces;
pub mod paths;
pub mod skeleton;
pub mod warm;

use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreatedAttr,
    Scope, path_beneath_rules,
};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub use namespaces::Layers;

/// The newest Landlock ABI gantry asks for (6: signal and abstract-socket scoping); older
/// kernels get what they support.
const ABI_WANTED: ABI = ABI::V6;

/// The loopback port of a task's egress and model proxy, inside its network namespace (each
/// task has its own loopback, so every task uses the same port).
pub const PROXY_PORT: u16 = 3128;

/// Resource limits of a child process.
#[derive(Debug, Clone, Copy)]
pub struct Rlimits {
    /// Processes (and threads) of the child's user.
    pub processes: u64,
    /// Open file descriptors.
    pub open_files: u64,
    /// Largest file it may write, in bytes.
    pub file_size: u64,
}

impl Default for Rlimits {
    fn default() -> Self {
        Rlimits {
            processes: 4096,
            open_files: 4096,
            file_size: 4 << 30,
        }
    }
}

/// Whether Landlock is available on this kernel.
pub fn landlock_available() -> bool {
    Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(ABI_WANTED))
        .and_then(|r| r.create())
        .map(|created| Option::<OwnedFd>::from(created).is_some())
        .unwrap_or(false)
}

/// A prepared restriction for one child: readable and writable only under its paths, and
/// bounded by its rlimits.
#[derive(Debug)]
pub struct Restriction {
    ruleset: Option<OwnedFd>,
    rlimits: Rlimits,
}

impl Restriction {
    /// Build the ruleset: readable only under `read` and `write`, writable only under
    /// `write`, no signals to processes outside the sandbox and no abstract unix sockets of
    /// theirs. An empty `read` leaves reads open (the weakest sandbox, without namespaces,
    /// where the program's own files are not known). Without Landlock support it holds only
    /// the rlimits.
    pub fn new(read: &[&Path], write: &[&Path], rlimits: Rlimits) -> anyhow::Result<Restriction> {
        let all = AccessFs::from_all(ABI_WANTED);
        let read_access = AccessFs::from_read(ABI_WANTED);
        let readable: Vec<&Path> = if read.is_empty() {
            vec![Path::new("/")]
        } else {
            let mut r = read.to_vec();
            // A private /proc, /dev and /tmp in the namespace sandbox; the system's otherwise.
            r.extend([Path::new("/proc"), Path::new("/dev"), Path::new("/tmp")]);
            r
        };
        let readable: Vec<&Path> = readable.into_iter().filter(|p| p.exists()).collect();
        let writable: Vec<&Path> = write.iter().copied().filter(|p| p.exists()).collect();
        let created = Ruleset::default()
            .set_compatibility(CompatLevel::BestEffort)
            .handle_access(all)?
            .scope(Scope::from_all(ABI_WANTED))?
            .create()?
            .add_rules(path_beneath_rules(readable, read_access))?
            .add_rules(path_beneath_rules(writable, all))?
            // Programs write to /dev/null all the time (a terminal, never: see namespaces).
            .add_rules(path_beneath_rules(
                ["/dev/null", "/dev/zero", "/dev/full"]
                    .into_iter()
                    .filter(|p| Path::new(p).exists()),
                AccessFs::from_file(ABI_WANTED),
            ))?;
        Ok(Restriction {
            ruleset: created.into(),
            rlimits,
        })
    }

    /// Whether Landlock will be enforced.
    pub fn enforced(&self) -> bool {
        self.ruleset.is_some()
    }

    /// Apply to the calling process: in a child between fork and exec, or in the launcher
    /// before it execs. Only async-signal-safe calls.
    pub fn apply_in_child(&self) -> std::io::Result<()> {
        let limits = [
            (libc::RLIMIT_NPROC, self.rlimits.processes),
            (libc::RLIMIT_NOFILE, self.rlimits.open_files),
            (libc::RLIMIT_FSIZE, self.rlimits.file_size),
        ];
        for (resource, value) in limits {
            let limit = libc::rlimit {
                rlim_cur: value,
                rlim_max: value,
            };
            // SAFETY: setrlimit with a valid pointer to a local struct.
            if unsafe { libc::setrlimit(resource, &limit) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        if let Some(fd) = &self.ruleset {
            // SAFETY: plain system calls on an inherited descriptor; no allocation.
            unsafe {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::syscall(libc::SYS_landlock_restrict_self, fd.as_raw_fd(), 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }
}

/// The first argument that makes the `gantry` binary a sandbox launcher.
pub const LAUNCHER_ARG: &str = "__sandbox-exec";

/// The first argument that makes the launcher the isolation probe (see
/// [`crate::tasks::isolation`]).
pub const PROBE_ARG: &str = "__sandbox-probe";

/// The dedicated launcher binary's name (`gantry-sandbox`, built beside `gantry`).
pub const LAUNCHER_BIN: &str = "gantry-sandbox";

/// The launcher for tasks started by the binary at `own_exe`: the dedicated `gantry-sandbox`
/// beside it when there is one (it starts in a third of the time), else that binary itself,
/// which takes the same arguments.
pub fn launcher_for(own_exe: &Path) -> PathBuf {
    let dedicated = own_exe.with_file_name(LAUNCHER_BIN);
    if dedicated.is_file() {
        dedicated
    } else {
        own_exe.to_path_buf()
    }
}

/// What one task's sandbox holds, as gantry hands it to the launcher.
#[derive(Debug, Clone, Default)]
pub struct SandboxSpec {
    /// The namespaces to make (none: Landlock and rlimits only).
    pub layers: Layers,
    /// Paths the task may read (and, with a mount namespace, the only ones it sees).
    pub read: Vec<PathBuf>,
    /// Paths the task may write.
    pub write: Vec<PathBuf>,
    /// Its rlimits.
    pub rlimits: Rlimits,
    /// The unprivileged uid and gid outside that the task's uid maps to (gantry as root);
    /// `None`: gantry's own, the only ones an unprivileged gantry may map.
    pub outside_ids: Option<(u32, u32)>,
    /// cgroup directories the task joins.
    pub cgroups: Vec<PathBuf>,
    /// The launcher's end of the socket to gantry (inherited; see [`namespaces::Plan::sync`]).
    pub sync_fd: Option<std::os::fd::RawFd>,
}

/// A command that runs `program` through `launcher` (see [`launcher_for`]) in the sandbox
/// `spec` describes. Append the program's arguments to it; set its environment, directory and
/// stdio as for the program itself.
pub fn launcher_command(
    launcher: &Path,
    spec: &SandboxSpec,
    program: &Path,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(launcher);
    cmd.arg(LAUNCHER_ARG).args(launch_args(spec, program));
    cmd
}

/// The launch arguments (what follows [`LAUNCHER_ARG`], or a warm launcher's job) that run
/// `program` in the sandbox `spec` describes; the program's own arguments go after them.
pub fn launch_args(spec: &SandboxSpec, program: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let mut flag = |name: &str, value: &OsStr| {
        args.push(name.into());
        args.push(value.to_os_string());
    };
    flag("--nproc", spec.rlimits.processes.to_string().as_ref());
    flag("--nofile", spec.rlimits.open_files.to_string().as_ref());
    flag("--fsize", spec.rlimits.file_size.to_string().as_ref());
    if spec.layers.any() {
        flag("--layers", spec.layers.to_arg().as_ref());
    }
    if let Some((uid, gid)) = spec.outside_ids {
        flag("--uid", uid.to_string().as_ref());
        flag("--gid", gid.to_string().as_ref());
    }
    if let Some(fd) = spec.sync_fd {
        flag("--sync", fd.to_string().as_ref());
    }
    for dir in &spec.read {
        flag("--read", dir.as_os_str());
    }
    for dir in &spec.write {
        flag("--write", dir.as_os_str());
    }
    for dir in &spec.cgroups {
        flag("--cgroup", dir.as_os_str());
    }
    args.push("--".into());
    args.push(program.as_os_str().to_os_string());
    args
}

/// The launcher's side (`gantry __sandbox-exec [--nproc N] [--nofile N] [--fsize N]
/// [--layers user,pid,mount,net] [--uid U --gid G] [--sync FD] [--read PATH]...
/// [--write PATH]... [--cgroup DIR]... -- PROGRAM ARGS...`, the arguments after
/// `__sandbox-exec`): sandbox this process, then become `PROGRAM`. Returns only on failure
/// (exit 127, the reason on stderr).
pub fn launch(args: Vec<OsString>) -> ExitCode {
    let message = match parse_launch(args) {
        Err(message) => message,
        Ok((spec, program, rest)) if spec.layers.any() => {
            let plan = namespaces::Plan {
                layers: spec.layers,
                outside_uid: spec.outside_ids.map(|(u, _)| u),
                outside_gid: spec.outside_ids.map(|(_, g)| g),
                read: spec.read,
                write: spec.write,
                cgroups: spec.cgroups,
                sync: spec.sync_fd,
                proxy_port: PROXY_PORT,
            };
            namespaces::run(plan, spec.rlimits, &program, &rest)
        }
        Ok((spec, program, rest)) => {
            let read: Vec<&Path> = spec.read.iter().map(PathBuf::as_path).collect();
            let write: Vec<&Path> = spec.write.iter().map(PathBuf::as_path).collect();
            match Restriction::new(&read, &write, spec.rlimits) {
                Err(e) => format!("cannot build the sandbox: {e:#}"),
                Ok(restriction) => match restriction.apply_in_child() {
                    Err(e) => format!("cannot apply the sandbox: {e}"),
                    Ok(()) => {
                        use std::os::unix::process::CommandExt;
                        let error = std::process::Command::new(&program).args(rest).exec();
                        format!("cannot run {}: {error}", program.display())
                    }
                },
            }
        }
    };
    eprintln!("gantry sandbox: {message}");
    ExitCode::from(127)
}

type Launch = (SandboxSpec, PathBuf, Vec<OsString>);

fn parse_launch(args: Vec<OsString>) -> Result<Launch, String> {
    let mut spec = SandboxSpec::default();
    let mut uid = None;
    let mut gid = None;
    let mut args = args.into_iter();
    fn number<T: std::str::FromStr>(v: Option<OsString>, flag: &str) -> Result<T, String> {
        v.and_then(|v| v.to_str()?.parse().ok())
            .ok_or_else(|| format!("{flag} needs a number"))
    }
    fn path(v: Option<OsString>, flag: &str) -> Result<PathBuf, String> {
        let p = PathBuf::from(v.ok_or_else(|| format!("{flag} needs a path"))?);
        if !p.is_absolute() {
            return Err(format!(
                "{flag} needs an absolute path, not {}",
                p.display()
            ));
        }
        Ok(p)
    }
    loop {
        let Some(arg) = args.next() else {
            return Err("no program after --".into());
        };
        match arg.to_str() {
            Some("--nproc") => spec.rlimits.processes = number(args.next(), "--nproc")?,
            Some("--nofile") => spec.rlimits.open_files = number(args.next(), "--nofile")?,
            Some("--fsize") => spec.rlimits.file_size = number(args.next(), "--fsize")?,
            Some("--uid") => uid = Some(number(args.next(), "--uid")?),
            Some("--gid") => gid = Some(number(args.next(), "--gid")?),
            Some("--sync") => spec.sync_fd = Some(number(args.next(), "--sync")?),
            Some("--layers") => {
                let text: String = number(args.next(), "--layers")?;
                spec.layers = Layers::parse(&text)?;
            }
            Some("--read") => spec.read.push(path(args.next(), "--read")?),
            Some("--write") => spec.write.push(path(args.next(), "--write")?),
            Some("--cgroup") => spec.cgroups.push(path(args.next(), "--cgroup")?),
            Some("--") => break,
            _ => return Err(format!("unknown argument {:?}", OsStr::new(&arg))),
        }
    }
    spec.outside_ids = match (uid, gid) {
        (Some(u), Some(g)) => Some((u, g)),
        (None, None) => None,
        _ => return Err("--uid and --gid go together".into()),
    };
    let program: PathBuf = args.next().ok_or("no program after --")?.into();
    Ok((spec, program, args.collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn launcher_arguments_round_trip() {
        let spec = SandboxSpec {
            layers: Layers::ALL,
            read: vec!["/usr".into()],
            write: vec!["/w".into(), "/t".into()],
            rlimits: Rlimits {
                processes: 7,
                open_files: 8,
                file_size: 9,
            },
            outside_ids: Some((100_000, 100_001)),
            cgroups: vec!["/sys/fs/cgroup/pids/gantry/t1".into()],
            sync_fd: Some(5),
        };
        let cmd = launcher_command(Path::new("/usr/bin/gantry"), &spec, Path::new("/bin/echo"));
        let std = cmd.as_std();
        assert_eq!(std.get_program(), "/usr/bin/gantry");
        let args: Vec<OsString> = std.get_args().map(OsString::from).collect();
        assert_eq!(args[0], LAUNCHER_ARG);
        let mut rest = args[1..].to_vec();
        rest.extend(os(&["-n", "hi"]));
        let (parsed, program, tail) = parse_launch(rest).unwrap();
        assert_eq!(program, PathBuf::from("/bin/echo"));
        assert_eq!(tail, os(&["-n", "hi"]));
        assert_eq!(parsed.rlimits.processes, 7);
        assert_eq!(parsed.rlimits.file_size, 9);
        assert_eq!(parsed.layers, Layers::ALL);
        assert_eq!(parsed.read, spec.read);
        assert_eq!(parsed.write, spec.write);
        assert_eq!(parsed.cgroups, spec.cgroups);
        assert_eq!(parsed.outside_ids, spec.outside_ids);
        assert_eq!(parsed.sync_fd, Some(5));
    }

    #[test]
    fn the_dedicated_launcher_is_used_only_where_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("gantry");
        std::fs::write(&own, "").unwrap();
        assert_eq!(launcher_for(&own), own, "none beside: the binary itself");
        std::fs::write(dir.path().join(LAUNCHER_BIN), "").unwrap();
        assert_eq!(launcher_for(&own), dir.path().join(LAUNCHER_BIN));
    }

    #[test]
    fn launcher_refuses_what_it_does_not_understand() {
        assert!(parse_launch(os(&["--bogus", "--", "/bin/true"])).is_err());
        assert!(parse_launch(os(&["--nproc", "x", "--", "/bin/true"])).is_err());
        assert!(parse_launch(os(&["--write", "/w"])).is_err());
        assert!(parse_launch(os(&["--"])).is_err());
        assert!(parse_launch(os(&["--write", "relative", "--", "/bin/true"])).is_err());
        assert!(parse_launch(os(&["--uid", "5", "--", "/bin/true"])).is_err());
        assert!(parse_launch(os(&["--layers", "mount", "--", "/bin/true"])).is_err());
    }
}
