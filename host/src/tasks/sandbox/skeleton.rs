//! The system part of a task's root, made once so that warm launchers can bind it ahead of
//! demand.
//!
//! Every task in a root of its own reads the same system entries ([`SYSTEM_DIRS`] and
//! [`ETC_ENTRIES`]) and the same few devices. Binding them one by one (a mountpoint made, a
//! bind, a read-only remount, each) was about a third of a full-sandbox spawn. A warm
//! launcher's init can bind them before its task exists, but not into a tmpfs of its own: it
//! has no uid in its user namespace until the job names the tenant, and an unmapped process
//! may not create a file there. So gantry makes the mountpoints here, once, on the host: a
//! directory holding an empty file or directory for each entry (a symlink as the same
//! symlink), and `dev/` with the devices' mountpoints. The init binds the host's entries onto
//! them in its own mount namespace while it waits, and grafts the whole tree into the task's
//! root in a few recursive binds when the job comes (see `namespaces::Prebuilt`).
//!
//! The skeleton itself holds nothing of the host but the names and kinds of those entries; it
//! is read-only to everyone but gantry.

use super::paths::{ETC_ENTRIES, SYSTEM_DIRS};
use std::io::{ErrorKind, Result};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The devices a task's `/dev` holds (no `tty`: a task must not reach a terminal gantry may
/// have; TIOCSTI types into it).
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];

/// The links a task's `/dev` holds, to its own descriptors.
pub const DEVICE_LINKS: &[(&str, &str)] = &[
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

/// Every system entry a root of its own holds, as the host paths they are bound from.
pub fn system_entries() -> impl Iterator<Item = PathBuf> {
    SYSTEM_DIRS
        .iter()
        .map(PathBuf::from)
        .chain(ETC_ENTRIES.iter().map(|e| Path::new("/etc").join(e)))
}

/// Whether `path` is one of [`system_entries`].
pub fn is_system_entry(path: &Path) -> bool {
    SYSTEM_DIRS.iter().any(|d| path == Path::new(d))
        || (path.parent() == Some(Path::new("/etc"))
            && path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| ETC_ENTRIES.contains(&n)))
}

/// Make the skeleton at `dir` (replacing one left by an earlier start: the host may have
/// changed since). It is built beside `dir` and renamed into place, so a launcher never sees
/// half of one.
pub fn create(dir: &Path) -> Result<()> {
    let parent = dir
        .parent()
        .ok_or_else(|| std::io::Error::other("no parent"))?;
    std::fs::create_dir_all(parent)?;
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let unique = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
    let fresh = parent.join(format!(".{name}.new-{unique}"));
    let result = build(&fresh).and_then(|()| {
        if std::fs::symlink_metadata(dir).is_ok() {
            let old = parent.join(format!(".{name}.old-{unique}"));
            std::fs::rename(dir, &old)?;
            let _ = std::fs::remove_dir_all(&old);
        }
        std::fs::rename(&fresh, dir)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&fresh);
    }
    result
}

fn build(root: &Path) -> Result<()> {
    let mut dirs = std::fs::DirBuilder::new();
    dirs.mode(0o755);
    dirs.create(root)?;
    // Whatever the umask: read-only to everyone but gantry.
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755))?;
    for sub in ["etc", "dev", "dev/shm"] {
        dirs.create(root.join(sub))?;
        std::fs::set_permissions(root.join(sub), std::fs::Permissions::from_mode(0o755))?;
    }
    for host in system_entries() {
        mirror(&host, &root.join(host.strip_prefix("/").unwrap_or(&host)))?;
    }
    for name in DEVICES {
        let host = Path::new("/dev").join(name);
        if std::fs::metadata(&host).is_ok() {
            empty_file(&root.join("dev").join(name))?;
        }
    }
    for (name, target) in DEVICE_LINKS {
        std::os::unix::fs::symlink(target, root.join("dev").join(name))?;
    }
    Ok(())
}

/// A mountpoint at `at` of the same kind as `host` (the same symlink for a symlink; nothing
/// for an entry this machine does not have).
fn mirror(host: &Path, at: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(host) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        other => other?,
    };
    if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(host)?, at)
    } else if meta.is_dir() {
        std::fs::DirBuilder::new().mode(0o755).create(at)?;
        std::fs::set_permissions(at, std::fs::Permissions::from_mode(0o755))
    } else {
        empty_file(at)
    }
}

fn empty_file(at: &Path) -> Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(at)?;
    std::fs::set_permissions(at, std::fs::Permissions::from_mode(0o644))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_skeleton_mirrors_the_kinds_of_the_system_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("skeleton");
        create(&dir).unwrap();
        for host in system_entries() {
            let at = dir.join(host.strip_prefix("/").unwrap());
            match std::fs::symlink_metadata(&host) {
                Err(_) => assert!(std::fs::symlink_metadata(&at).is_err(), "{at:?}"),
                Ok(meta) => {
                    let made = std::fs::symlink_metadata(&at).unwrap();
                    assert_eq!(made.file_type().is_symlink(), meta.file_type().is_symlink());
                    assert_eq!(made.is_dir(), meta.is_dir(), "{at:?}");
                    if meta.file_type().is_symlink() {
                        assert_eq!(
                            std::fs::read_link(&at).unwrap(),
                            std::fs::read_link(&host).unwrap()
                        );
                    } else if !meta.is_dir() {
                        assert_eq!(made.len(), 0, "a mountpoint holds nothing of the host");
                    }
                }
            }
        }
        assert!(dir.join("dev/null").is_file());
        assert!(dir.join("dev/shm").is_dir());
        assert!(std::fs::symlink_metadata(dir.join("dev/tty")).is_err());
        assert_eq!(
            std::fs::read_link(dir.join("dev/fd")).unwrap(),
            Path::new("/proc/self/fd")
        );
        let mode = std::fs::metadata(dir.join("etc"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);

        // Made again over the old one (a restart), with nothing left beside it.
        std::fs::write(dir.join("stale"), b"x").unwrap();
        create(&dir).unwrap();
        assert!(!dir.join("stale").exists());
        let beside: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(beside.len(), 1);
    }

    #[test]
    fn system_entries_are_recognised_exactly() {
        assert!(is_system_entry(Path::new("/usr")));
        assert!(is_system_entry(Path::new("/etc/hosts")));
        assert!(!is_system_entry(Path::new("/etc/shadow")));
        assert!(!is_system_entry(Path::new("/etc/ssl/certs")));
        assert!(!is_system_entry(Path::new("/usr/lib")));
        assert_eq!(
            system_entries().count(),
            SYSTEM_DIRS.len() + ETC_ENTRIES.len()
        );
    }
}
