//! The child's sandbox: Landlock keeps it from writing outside its workspace and its own temp
//! directory (it may read and execute anything), and rlimits bound what it can consume.
//!
//! The ruleset is built in the parent, before the fork; the child only makes two system calls
//! on the inherited descriptor, which is safe between fork and exec.

use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreatedAttr,
    path_beneath_rules,
};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

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

    /// Apply in the child, between fork and exec. Only async-signal-safe calls.
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
