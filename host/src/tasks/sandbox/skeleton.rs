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

/// The skeleton for this machine in `parent`, made if it is not there yet; its path.
///
/// Its name holds a hash of what it mirrors (each entry's kind, each symlink's target), so it
/// is never replaced while launchers may have their mounts on it: unlinking a mountpoint
/// would take those mounts away from them. A machine whose entries changed kind gets a
/// skeleton of another name; the old one (a few empty files) stays. It is built beside its
/// place and renamed into it, so no launcher sees half of one.
pub fn create(parent: &Path) -> Result<PathBuf> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    for host in system_entries().chain(DEVICES.iter().map(|d| Path::new("/dev").join(d))) {
        host.hash(&mut hasher);
        match std::fs::symlink_metadata(&host) {
            Err(_) => 0u8.hash(&mut hasher),
            Ok(meta) if meta.file_type().is_symlink() => {
                1u8.hash(&mut hasher);
                std::fs::read_link(&host)?.hash(&mut hasher);
            }
            Ok(meta) if meta.is_dir() => 2u8.hash(&mut hasher),
            Ok(_) => 3u8.hash(&mut hasher),
        }
    }
    let dir = parent.join(format!("sandbox-skeleton-{:016x}", hasher.finish()));
    if dir.is_dir() {
        return Ok(dir);
    }
    std::fs::create_dir_all(parent)?;
    let fresh = parent.join(format!(
        ".sandbox-skeleton.new-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let result = build(&fresh).and_then(|()| std::fs::rename(&fresh, &dir));
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&fresh);
        // Another start made it meanwhile (a rename onto a directory that is not empty
        // fails).
        if dir.is_dir() {
            return Ok(dir);
        }
    }
    result.map(|()| dir)
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
        let dir = create(tmp.path()).unwrap();
        assert!(dir.starts_with(tmp.path()));
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

        // Asked again (another node in this process, a restart), the same one, left as it
        // is (launchers may have their mounts on it), and nothing made beside it.
        let marker = dir.join("dev/marker");
        std::fs::write(&marker, b"").unwrap();
        assert_eq!(create(tmp.path()).unwrap(), dir);
        assert!(marker.exists());
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
