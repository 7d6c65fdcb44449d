//! Spawning child processes with exactly the descriptors they are meant to have.
//!
//! Every descriptor gantry opens is close-on-exec, so a child inherits none of them. A spawn
//! that hands one over (a sandbox launcher's end of its socket) clears the flag for the
//! moment of its `fork`/`exec`, under [`inheriting`]'s lock; every other spawn in gantry
//! happens under the same lock, so none of them can inherit that descriptor in the meantime.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Mutex;

/// Held by every spawn; see the module's documentation.
static SPAWN_LOCK: Mutex<()> = Mutex::new(());

/// Run `spawn` with `handed` inheritable for its duration, and no spawn elsewhere in gantry
/// meanwhile. With nothing to hand over, it only waits for a spawn that does.
pub fn inheriting<T>(handed: &[BorrowedFd<'_>], spawn: impl FnOnce() -> T) -> std::io::Result<T> {
    let _lock = SPAWN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    for fd in handed {
        set_inheritable(*fd, true)?;
    }
    let spawned = spawn();
    for fd in handed {
        set_inheritable(*fd, false)?;
    }
    Ok(spawned)
}

/// Set or clear `fd`'s close-on-exec flag.
pub fn set_inheritable(fd: BorrowedFd<'_>, inherit: bool) -> std::io::Result<()> {
    let flag = if inherit { 0 } else { libc::FD_CLOEXEC };
    // SAFETY: fcntl on a descriptor the caller holds.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, flag) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn cloexec(fd: BorrowedFd<'_>) -> bool {
        // SAFETY: fcntl on a descriptor the test holds.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
        assert!(flags >= 0);
        flags & libc::FD_CLOEXEC != 0
    }

    /// A handed descriptor is inheritable during the spawn only, and a child sees it then.
    /// The child writes through `/proc/self/fd/N` (so a pipe, which can be reopened there)
    /// because `dash` reads `>&N` as one digit only, and a test binary running many threads
    /// often has descriptors past 9.
    #[test]
    fn a_handed_descriptor_is_inheritable_for_the_spawn_alone() {
        let (mut ours, writer) = std::io::pipe().unwrap();
        // Past 9 on purpose, as it is in a busy test binary.
        // SAFETY: fcntl on a descriptor the test holds; the new one is owned below.
        let high = unsafe { libc::fcntl(writer.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 20) };
        assert!(high >= 20);
        // SAFETY: `high` is a fresh descriptor no one else owns.
        let theirs = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(high) };
        drop(writer);
        assert!(cloexec(theirs.as_fd()));
        let fd = theirs.as_raw_fd();
        let status = inheriting(&[theirs.as_fd()], || {
            assert!(!cloexec(theirs.as_fd()));
            std::process::Command::new("/bin/sh")
                .args(["-c", &format!("echo x > /proc/self/fd/{fd}")])
                .status()
                .unwrap()
        })
        .unwrap();
        assert!(status.success(), "the child wrote to the handed descriptor");
        assert!(
            cloexec(theirs.as_fd()),
            "close-on-exec again after the spawn"
        );
        let mut got = [0u8; 2];
        std::io::Read::read_exact(&mut ours, &mut got).unwrap();
        assert_eq!(&got, b"x\n");
        // A spawn handing nothing over: the descriptor is not the child's.
        let status = inheriting(&[], || {
            std::process::Command::new("/bin/sh")
                .args(["-c", &format!("echo y > /proc/self/fd/{fd}")])
                .status()
                .unwrap()
        })
        .unwrap();
        assert!(!status.success(), "a bad descriptor in the child");
    }
}
