//! The child's sandbox: Landlock keeps it from writing outside its workspace and its own temp
//! directory (it may read and execute anything), and rlimits bound what it can consume.
//!
//! Two ways to apply it. With a launcher (the `gantry` binary itself, run as
//! `gantry __sandbox-exec …`), the host spawns the launcher with `posix_spawn` and the
//! launcher restricts itself and execs the program: no `fork` of the large host process, which
//! costs milliseconds. Without one (the library used on its own), the ruleset is built in the
//! parent and applied between `fork` and `exec` by a `pre_exec` hook that makes only two system
//! calls on the inherited descriptor.

use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreatedAttr,
    path_beneath_rules,
};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The newest Landlock ABI gantry asks for; older kernels get what they support.
const ABI_WANTED: ABI = ABI::V5;

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

/// A prepared restriction for one child: writable only under `writable` paths.
#[derive(Debug)]
pub struct Restriction {
    ruleset: Option<OwnedFd>,
    rlimits: Rlimits,
}

impl Restriction {
    /// Build the ruleset in the parent. Without Landlock support it holds only the rlimits.
    pub fn new(writable: &[&Path], rlimits: Rlimits) -> anyhow::Result<Restriction> {
        let all = AccessFs::from_all(ABI_WANTED);
        let read = AccessFs::from_read(ABI_WANTED);
        let created = Ruleset::default()
            .set_compatibility(CompatLevel::BestEffort)
            .handle_access(all)?
            .create()?
            // Read and execute everything; the point is to keep writes inside the workspace.
            .add_rules(path_beneath_rules(["/"], read))?
            .add_rules(path_beneath_rules(writable, all))?
            // Programs write to /dev/null and their terminal all the time.
            .add_rules(path_beneath_rules(
                ["/dev/null", "/dev/zero", "/dev/tty"],
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

/// A command that runs `program` through `launcher` (see [`launcher_for`]) under the
/// restriction: writable only under `writable`, bounded by `rlimits`. Append the program's
/// arguments to it; set its environment, directory and stdio as for the program itself.
pub fn launcher_command(
    launcher: &Path,
    writable: &[&Path],
    rlimits: Rlimits,
    program: &Path,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(launcher);
    cmd.arg(LAUNCHER_ARG)
        .args(["--nproc", &rlimits.processes.to_string()])
        .args(["--nofile", &rlimits.open_files.to_string()])
        .args(["--fsize", &rlimits.file_size.to_string()]);
    for dir in writable {
        cmd.arg("--write").arg(dir);
    }
    cmd.arg("--").arg(program);
    cmd
}

/// The launcher's side (`gantry __sandbox-exec [--nproc N] [--nofile N] [--fsize N]
/// [--write DIR]... -- PROGRAM ARGS...`, the arguments after `__sandbox-exec`): restrict this
/// process, then become `PROGRAM`. Returns only on failure (exit 127, the reason on stderr).
pub fn launch(args: Vec<OsString>) -> ExitCode {
    match parse_launch(args).and_then(
        |(restriction, program, rest)| -> Result<std::convert::Infallible, String> {
            restriction
                .apply_in_child()
                .map_err(|e| format!("cannot apply the sandbox: {e}"))?;
            use std::os::unix::process::CommandExt;
            let error = std::process::Command::new(&program).args(rest).exec();
            Err(format!("cannot run {}: {error}", program.display()))
        },
    ) {
        Ok(never) => match never {},
        Err(message) => {
            eprintln!("gantry sandbox: {message}");
            ExitCode::from(127)
        }
    }
}

type Launch = (Restriction, PathBuf, Vec<OsString>);

fn parse_launch(args: Vec<OsString>) -> Result<Launch, String> {
    let mut rlimits = Rlimits::default();
    let mut writable: Vec<PathBuf> = Vec::new();
    let mut args = args.into_iter();
    let number = |v: Option<OsString>, flag: &str| -> Result<u64, String> {
        v.and_then(|v| v.to_str()?.parse().ok())
            .ok_or_else(|| format!("{flag} needs a number"))
    };
    loop {
        let Some(arg) = args.next() else {
            return Err("no program after --".into());
        };
        match arg.to_str() {
            Some("--nproc") => rlimits.processes = number(args.next(), "--nproc")?,
            Some("--nofile") => rlimits.open_files = number(args.next(), "--nofile")?,
            Some("--fsize") => rlimits.file_size = number(args.next(), "--fsize")?,
            Some("--write") => writable.push(args.next().ok_or("--write needs a path")?.into()),
            Some("--") => break,
            _ => return Err(format!("unknown argument {:?}", OsStr::new(&arg))),
        }
    }
    let program: PathBuf = args.next().ok_or("no program after --")?.into();
    let dirs: Vec<&Path> = writable.iter().map(PathBuf::as_path).collect();
    let restriction = Restriction::new(&dirs, rlimits).map_err(|e| format!("{e:#}"))?;
    Ok((restriction, program, args.collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn launcher_arguments_round_trip() {
        let cmd = launcher_command(
            Path::new("/usr/bin/gantry"),
            &[Path::new("/w"), Path::new("/t")],
            Rlimits {
                processes: 7,
                open_files: 8,
                file_size: 9,
            },
            Path::new("/bin/echo"),
        );
        let std = cmd.as_std();
        assert_eq!(std.get_program(), "/usr/bin/gantry");
        let args: Vec<OsString> = std.get_args().map(OsString::from).collect();
        assert_eq!(args[0], LAUNCHER_ARG);
        let mut rest = args[1..].to_vec();
        rest.extend(os(&["-n", "hi"]));
        let (restriction, program, tail) = parse_launch(rest).unwrap();
        assert_eq!(program, PathBuf::from("/bin/echo"));
        assert_eq!(tail, os(&["-n", "hi"]));
        assert_eq!(restriction.rlimits.processes, 7);
        assert_eq!(restriction.rlimits.file_size, 9);
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
    }
}
