//! What a task may read: the system's program and library directories, the few files of
//! `/etc` that programs need, and the backend's own install tree wherever the operator put it
//! (an npm package directory, a script and its interpreter). Nothing else of the host: not
//! gantry's data directory, binary or configuration, not other tenants' anything.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Program and library directories, read-only for every task. (On a merged-/usr system the
/// top-level ones are symlinks, recreated as such.)
pub const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];

/// Entries of `/etc` that programs read to run (users, name service, TLS roots, the dynamic
/// loader, time zone); the rest of `/etc` (where an operator keeps keys and configuration)
/// stays out.
pub const ETC_ENTRIES: &[&str] = &[
    "alternatives",
    "bash.bashrc",
    "ca-certificates",
    "ca-certificates.conf",
    "debian_version",
    "gai.conf",
    "group",
    "host.conf",
    "hosts",
    "inputrc",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "mime.types",
    "nsswitch.conf",
    "os-release",
    "passwd",
    "pki",
    "profile",
    "protocols",
    "resolv.conf",
    "services",
    "ssl",
    "terminfo",
    "timezone",
];

/// Whether `path` is inside one of the system directories every task reads anyway.
fn in_system_dirs(path: &Path) -> bool {
    SYSTEM_DIRS.iter().any(|d| path.starts_with(d))
}

/// The directory a program's files live in: for anything inside a `node_modules` tree, the
/// directory holding that tree (the npm prefix, with the package and its dependencies); else
/// the program's own directory.
fn tree_of(program: &Path) -> Option<PathBuf> {
    let mut prefix = PathBuf::new();
    for component in program.components() {
        if component == Component::Normal("node_modules".as_ref()) {
            return Some(prefix);
        }
        prefix.push(component);
    }
    program.parent().map(Path::to_path_buf)
}

/// The interpreter a script names on its `#!` line, looked up on `search_path` when it goes
/// through `env`.
fn interpreter(program: &Path, search_path: &str) -> Option<PathBuf> {
    let mut head = [0u8; 256];
    let n = std::fs::File::open(program).ok()?.read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = line.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_whitespace();
    let first = PathBuf::from(words.next()?);
    if first.file_name()? != "env" {
        return Some(first);
    }
    // `#!/usr/bin/env [-S] [-flags] name args…`
    let name = words.find(|w| !w.starts_with('-'))?;
    search_path
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

/// `program` as the task can name it: its directory resolved (a path through `..` or a
/// symlinked directory may not exist in the task's root), its file name kept (an npm bin
/// link stays a link, which its package may rely on).
pub fn launch_path(program: &Path) -> PathBuf {
    match (
        program.parent().and_then(|p| p.canonicalize().ok()),
        program.file_name(),
    ) {
        (Some(dir), Some(name)) => dir.join(name),
        _ => program.to_path_buf(),
    }
}

/// What running `program` needs to read beyond the system directories: its install tree,
/// and its interpreter's when that is outside them too. Paths are canonical.
pub fn install_trees(program: &Path, search_path: &str) -> Vec<PathBuf> {
    let mut trees = Vec::new();
    let mut add = |p: Option<PathBuf>| {
        if let Some(p) = p.and_then(|p| p.canonicalize().ok())
            && !in_system_dirs(&p)
            && p != Path::new("/")
            && !trees.contains(&p)
        {
            trees.push(p);
        }
    };
    // Both where it was named (a bin directory of symlinks) and where it really is.
    add(tree_of(program));
    let real = program.canonicalize().ok();
    if let Some(real) = &real {
        add(tree_of(real));
    }
    if let Some(interp) = real.as_deref().and_then(|r| interpreter(r, search_path)) {
        let real_interp = interp.canonicalize().unwrap_or(interp);
        // `/opt/node/bin/node` needs `/opt/node` (its lib directory).
        add(real_interp
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf));
    }
    trees
}

/// Everything a task of `program` may read: the system, the install trees, and `extra` (the
/// manifest's and the operator's), minus any path that holds or lies inside a `forbidden`
/// one (gantry's data directory). Returns the paths and a warning for each one left out.
pub fn task_read_paths(
    program: &Path,
    search_path: &str,
    extra: &[PathBuf],
    forbidden: &[&Path],
) -> (Vec<PathBuf>, Vec<String>) {
    let mut paths: Vec<PathBuf> = SYSTEM_DIRS.iter().map(PathBuf::from).collect();
    paths.extend(ETC_ENTRIES.iter().map(|e| Path::new("/etc").join(e)));
    paths.extend(install_trees(program, search_path));
    paths.extend(
        extra
            .iter()
            .map(|p| p.canonicalize().unwrap_or_else(|_| p.clone())),
    );
    let mut warnings = Vec::new();
    // Never the root, a top-level directory or gantry's home (where a `#!/home/op/bin/node`
    // interpreter's prefix would lead): too much of the host.
    let home = std::env::var_os("HOME").map(PathBuf::from);
    paths.retain(|p| {
        let too_wide = !SYSTEM_DIRS.iter().any(|d| p == Path::new(d))
            && (p.components().count() < 3 || home.as_deref() == Some(p.as_path()));
        if too_wide {
            warnings.push(format!(
                "{} is not readable by tasks: too wide",
                p.display()
            ));
        }
        !too_wide
    });
    paths.retain(|p| {
        let clash = forbidden
            .iter()
            .find(|f| f.starts_with(p) || p.starts_with(f));
        if let Some(f) = clash {
            warnings.push(format!(
                "{} is not readable by tasks: it holds or lies inside {}",
                p.display(),
                f.display()
            ));
        }
        clash.is_none()
    });
    paths.dedup();
    (paths, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_npm_package_brings_its_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let pkg = root.join("node_modules/@scope/cli");
        std::fs::create_dir_all(&pkg).unwrap();
        std::fs::create_dir_all(root.join("node_modules/.bin")).unwrap();
        std::fs::write(pkg.join("cli.js"), "#!/usr/bin/env node\n").unwrap();
        std::os::unix::fs::symlink("../@scope/cli/cli.js", root.join("node_modules/.bin/cli"))
            .unwrap();
        let trees = install_trees(&root.join("node_modules/.bin/cli"), "/usr/bin:/bin");
        assert_eq!(
            trees,
            std::slice::from_ref(&root),
            "the npm prefix, once; node is a system binary"
        );
    }

    #[test]
    fn a_script_brings_its_directory_and_its_interpreter_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("tool")).unwrap();
        std::fs::create_dir_all(root.join("runtime/bin")).unwrap();
        std::fs::write(root.join("runtime/bin/interp"), "").unwrap();
        std::fs::write(
            root.join("tool/run"),
            format!("#!{} -x\necho\n", root.join("runtime/bin/interp").display()),
        )
        .unwrap();
        let trees = install_trees(&root.join("tool/run"), "");
        assert_eq!(trees, [root.join("tool"), root.join("runtime")]);
    }

    #[test]
    fn env_lookup_and_system_interpreters() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("bin/python9"), "").unwrap();
        std::fs::write(root.join("s"), "#!/usr/bin/env -S python9 -u\n").unwrap();
        let search = root.join("bin").display().to_string();
        assert_eq!(
            interpreter(&root.join("s"), &search),
            Some(root.join("bin/python9"))
        );
        std::fs::write(root.join("t"), "#!/bin/sh\n").unwrap();
        assert_eq!(
            interpreter(&root.join("t"), ""),
            Some(PathBuf::from("/bin/sh"))
        );
        std::fs::write(root.join("u"), "\x7fELF").unwrap();
        assert_eq!(interpreter(&root.join("u"), ""), None);
    }

    #[test]
    fn a_program_is_launched_by_a_path_the_task_can_follow() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(root.join("a/x")).unwrap();
        std::fs::write(root.join("a/b/prog"), "").unwrap();
        std::os::unix::fs::symlink("b/prog", root.join("a/link")).unwrap();
        assert_eq!(
            launch_path(&root.join("a/x/../b/prog")),
            root.join("a/b/prog")
        );
        assert_eq!(
            launch_path(&root.join("a/link")),
            root.join("a/link"),
            "a link stays"
        );
    }

    #[test]
    fn the_data_directory_is_never_readable() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let data = root.join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(root.join("prog"), "").unwrap();
        // The program's directory holds the data directory: left out, with a warning.
        let (paths, warnings) =
            task_read_paths(&root.join("prog"), "", &[data.join("x")], &[&data]);
        assert!(
            !paths
                .iter()
                .any(|p| data.starts_with(p) || p.starts_with(&data)),
            "{paths:?}"
        );
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(paths.contains(&PathBuf::from("/usr")));
        assert!(paths.contains(&PathBuf::from("/etc/passwd")));
        assert!(
            !paths.contains(&PathBuf::from("/etc")),
            "not the whole of /etc"
        );
    }
}
