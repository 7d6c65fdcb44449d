//! A cgroup per task: limits that bind whatever the task's uid, in the kernel's own
//! accounting. RLIMIT_NPROC counts a uid's processes everywhere; a `pids` cgroup counts the
//! task's alone, and a `memory` cgroup kills a hog inside the task instead of anything else.
//!
//! Two hierarchies: cgroup v2 with its controllers enabled at the root (`pids.max`,
//! `memory.max`, `cpu.weight`), or the v1 `pids`, `memory` and `cpu` controllers mounted
//! under `/sys/fs/cgroup/<controller>` (what machines without a v2 delegation have). gantry
//! makes `<parent>/<task id>` in each and the launcher moves the task's init into them before
//! anything of the task runs.

pub use crate::config::CgroupLimits;
use std::io::{Error, ErrorKind, Result};
use std::path::{Path, PathBuf};

/// Where task cgroups are made on this machine.
#[derive(Debug, Clone)]
pub struct Cgroups {
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    /// `<root>/<parent>` with pids, memory and cpu enabled below it.
    V2 { parent: PathBuf },
    /// `/sys/fs/cgroup/<controller>/<parent>` for each controller found.
    V1 {
        pids: PathBuf,
        memory: PathBuf,
        cpu: Option<PathBuf>,
    },
}

const ROOT: &str = "/sys/fs/cgroup";

impl Cgroups {
    /// Find a hierarchy where gantry may make task cgroups under `parent` (a plain name),
    /// or say why there is none.
    pub fn detect(parent: &str) -> std::result::Result<Cgroups, String> {
        Self::detect_at(Path::new(ROOT), parent)
    }

    fn detect_at(root: &Path, parent: &str) -> std::result::Result<Cgroups, String> {
        let controllers =
            std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
        if has("pids") && has("memory") {
            let dir = root.join(parent);
            let enable = |at: &Path| {
                std::fs::write(at.join("cgroup.subtree_control"), "+pids +memory +cpu")
                    .or_else(|_| std::fs::write(at.join("cgroup.subtree_control"), "+pids +memory"))
            };
            return std::fs::create_dir_all(&dir)
                .and_then(|()| enable(root))
                .and_then(|()| enable(&dir))
                .and_then(|()| can_make_children(&dir))
                .map(|()| Cgroups {
                    kind: Kind::V2 { parent: dir },
                })
                .map_err(|e| {
                    format!(
                        "cgroup v2: cannot delegate pids and memory under {}: {e}",
                        root.display()
                    )
                });
        }
        let v1 = |controller: &str| -> std::result::Result<PathBuf, String> {
            let mount = root.join(controller);
            if !mount.join("cgroup.procs").exists() {
                return Err(format!(
                    "no cgroup v2 controllers and no v1 `{controller}` hierarchy"
                ));
            }
            let dir = mount.join(parent);
            std::fs::create_dir_all(&dir)
                .and_then(|()| can_make_children(&dir))
                .map_err(|e| {
                    format!(
                        "cgroup v1 {controller}: cannot make cgroups in {}: {e}",
                        dir.display()
                    )
                })?;
            Ok(dir)
        };
        Ok(Cgroups {
            kind: Kind::V1 {
                pids: v1("pids")?,
                memory: v1("memory")?,
                cpu: v1("cpu").ok(),
            },
        })
    }

    /// What this is, for the start-up log and `/health`.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            Kind::V2 { .. } => "cgroup v2",
            Kind::V1 { cpu: Some(_), .. } => "cgroup v1 (pids, memory, cpu)",
            Kind::V1 { cpu: None, .. } => "cgroup v1 (pids, memory)",
        }
    }

    /// Make task `id`'s cgroup with `limits`.
    pub fn create(&self, id: &str, limits: &CgroupLimits) -> Result<TaskCgroup> {
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "a task id is one plain name",
            ));
        }
        let mut made = TaskCgroup {
            dirs: Vec::new(),
            oom_events: PathBuf::new(),
        };
        // On an error `made` is dropped, removing what was made so far.
        let mut make = |parent: &Path, files: &[(&str, String)]| -> Result<PathBuf> {
            let dir = parent.join(id);
            std::fs::create_dir(&dir)?;
            made.dirs.push(dir.clone());
            for (file, value) in files {
                let path = dir.join(file);
                // memsw exists only with swap accounting on.
                if file.contains("memsw") && !path.exists() {
                    continue;
                }
                std::fs::write(&path, value)
                    .map_err(|e| Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            }
            Ok(dir)
        };
        match &self.kind {
            Kind::V2 { parent } => {
                let dir = make(
                    parent,
                    &[
                        ("pids.max", limits.pids_max.to_string()),
                        ("memory.max", limits.memory_max_bytes.to_string()),
                        ("memory.swap.max", "0".into()),
                        ("cpu.weight", limits.cpu_weight.clamp(1, 10_000).to_string()),
                    ],
                )?;
                made.oom_events = dir.join("memory.events");
            }
            Kind::V1 { pids, memory, cpu } => {
                make(pids, &[("pids.max", limits.pids_max.to_string())])?;
                let bytes = limits.memory_max_bytes.to_string();
                let dir = make(
                    memory,
                    &[
                        ("memory.limit_in_bytes", bytes.clone()),
                        ("memory.memsw.limit_in_bytes", bytes),
                    ],
                )?;
                made.oom_events = dir.join("memory.oom_control");
                if let Some(cpu) = cpu {
                    // v1 shares: 1024 is the default, as weight 100 is on v2.
                    let shares = limits.cpu_weight.clamp(1, 10_000) * 1024 / 100;
                    make(cpu, &[("cpu.shares", shares.max(2).to_string())])?;
                }
            }
        }
        Ok(made)
    }
}

/// How long a task cgroup must have been empty-handed (made this long ago, no process in
/// it) before [`Cgroups::sweep_abandoned`] takes it for abandoned: a launcher joins its cgroup
/// within milliseconds of gantry making it, and leaves it only when it ends.
pub const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

impl Cgroups {
    /// Remove the task cgroups under the parent that a gantry killed before it could (SIGKILL,
    /// a crash, the end of a test) left behind: those made at least `older_than` ago with no
    /// process in them. Another gantry's are safe: a cgroup in use has processes, and the
    /// kernel refuses to remove one that has. Returns how many were removed.
    pub fn sweep_abandoned(&self, older_than: std::time::Duration) -> usize {
        let parents: Vec<&PathBuf> = match &self.kind {
            Kind::V2 { parent } => vec![parent],
            Kind::V1 { pids, memory, cpu } => [Some(pids), Some(memory), cpu.as_ref()]
                .into_iter()
                .flatten()
                .collect(),
        };
        let mut removed = 0;
        for parent in parents {
            let Ok(entries) = std::fs::read_dir(parent) else {
                continue;
            };
            for entry in entries.flatten() {
                let dir = entry.path();
                let ours = entry.file_name().to_str().is_some_and(is_task_cgroup_name);
                let old = entry
                    .metadata()
                    .ok()
                    .filter(std::fs::Metadata::is_dir)
                    .and_then(|m| m.modified().ok())
                    .and_then(|at| at.elapsed().ok())
                    .is_some_and(|age| age >= older_than);
                let empty = std::fs::read_to_string(dir.join("cgroup.procs"))
                    .map(|p| p.trim().is_empty())
                    .unwrap_or(true);
                if ours && old && empty && std::fs::remove_dir(&dir).is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }
}

/// Whether `name` is one gantry gives a cgroup: `<task id>-<run>` (a task id is a UUID) or
/// `warm-<32 hex digits>` (a launcher kept ready).
fn is_task_cgroup_name(name: &str) -> bool {
    let hex = |s: &str| s.chars().all(|c| c.is_ascii_hexdigit());
    if let Some(id) = name.strip_prefix("warm-") {
        return id.len() == 32 && hex(id);
    }
    let Some((task, run)) = name.rsplit_once('-') else {
        return false;
    };
    let uuid = task.len() == 36
        && task.split('-').map(str::len).eq([8, 4, 4, 4, 12])
        && task.split('-').all(hex);
    uuid && !run.is_empty() && run.chars().all(|c| c.is_ascii_digit())
}

/// Whether this process may make cgroups in `dir` (it may exist, made by another user).
fn can_make_children(dir: &Path) -> Result<()> {
    // Unique: one left behind by a killed process must not fail a later one with its pid.
    let probe = dir.join(format!(".probe-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&probe)?;
    std::fs::remove_dir(&probe)
}

/// One task's cgroup directories; removed on drop (the task's processes are gone by then).
#[derive(Debug)]
pub struct TaskCgroup {
    dirs: Vec<PathBuf>,
    oom_events: PathBuf,
}

impl TaskCgroup {
    /// The directories the task's init joins.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Leave the directories to the launcher whose init is in them, which removes them when
    /// it ends (a warm launcher let go without a task).
    pub fn leave_to_launcher(mut self) {
        self.dirs.clear();
    }

    /// How many processes of the task the kernel killed for exceeding its memory.
    pub fn oom_kills(&self) -> u64 {
        let text = std::fs::read_to_string(&self.oom_events).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for TaskCgroup {
    fn drop(&mut self) {
        for dir in self.dirs.iter().rev() {
            // A cgroup empties a moment after its last process is reaped: retry with a
            // growing pause (about a second in all).
            for attempt in 0..10u32 {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == ErrorKind::NotFound => break,
                    Err(e) if attempt == 9 => {
                        tracing::warn!(dir = %dir.display(), "cannot remove a task's cgroup: {e}");
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(1 << attempt)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_without_cgroups_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let why = Cgroups::detect_at(dir.path(), "gantry").unwrap_err();
        assert!(why.contains("pids"), "{why}");
    }

    #[test]
    fn v1_limits_are_written_and_the_directories_removed() {
        // A directory laid out as v1 mounts are (the files exist; no kernel behind them).
        let root = tempfile::tempdir().unwrap();
        for c in ["pids", "memory"] {
            std::fs::create_dir_all(root.path().join(c)).unwrap();
            std::fs::write(root.path().join(c).join("cgroup.procs"), "").unwrap();
        }
        let cgroups = Cgroups::detect_at(root.path(), "gantry").unwrap();
        assert_eq!(cgroups.describe(), "cgroup v1 (pids, memory)");
        // A plain directory has no control files; create them as the kernel would.
        let pids = root.path().join("pids/gantry/t1");
        let memory = root.path().join("memory/gantry/t1");
        let limits = CgroupLimits {
            pids_max: 64,
            memory_max_bytes: 1 << 20,
            cpu_weight: 100,
        };
        {
            let task = cgroups.create("t1", &limits).unwrap();
            assert_eq!(task.dirs(), [pids.clone(), memory.clone()]);
            assert_eq!(
                std::fs::read_to_string(pids.join("pids.max")).unwrap(),
                "64"
            );
            assert_eq!(
                std::fs::read_to_string(memory.join("memory.limit_in_bytes")).unwrap(),
                "1048576"
            );
            std::fs::write(
                memory.join("memory.oom_control"),
                "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
            )
            .unwrap();
            assert_eq!(task.oom_kills(), 2);
            // Plain directories with files in them cannot be removed as cgroups can; empty
            // them so that the drop's rmdir works as it does on the kernel's files.
            for d in [&pids, &memory] {
                for f in std::fs::read_dir(d).unwrap() {
                    std::fs::remove_file(f.unwrap().path()).unwrap();
                }
            }
        }
        assert!(!pids.exists() && !memory.exists(), "removed on drop");
        assert!(cgroups.create("../x", &limits).is_err());
    }

    #[test]
    fn abandoned_cgroups_are_swept_and_those_in_use_or_new_are_not() {
        let root = tempfile::tempdir().unwrap();
        for c in ["pids", "memory"] {
            std::fs::create_dir_all(root.path().join(c)).unwrap();
            std::fs::write(root.path().join(c).join("cgroup.procs"), "").unwrap();
        }
        let cgroups = Cgroups::detect_at(root.path(), "gantry").unwrap();
        // Left behind by a killed gantry: no process (here, no files at all).
        let task = "0414432f-ac49-4177-90fa-a7d11f54ee21";
        let left = [
            root.path().join(format!("pids/gantry/{task}-0")),
            root.path()
                .join(format!("memory/gantry/warm-{}", "a0".repeat(16))),
        ];
        // In use: a process in it.
        let busy = root.path().join(format!("pids/gantry/{task}-1"));
        // Not a name gantry gives: someone else's, whatever its state.
        let foreign = root.path().join("pids/gantry/system.slice");
        for d in left.iter().chain([&busy, &foreign]) {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(busy.join("cgroup.procs"), "4242\n").unwrap();
        // Too new to tell from one whose launcher is about to join it.
        assert_eq!(cgroups.sweep_abandoned(ABANDONED_AFTER), 0);
        assert!(left.iter().all(|d| d.exists()));
        assert_eq!(cgroups.sweep_abandoned(std::time::Duration::ZERO), 2);
        assert!(left.iter().all(|d| !d.exists()));
        assert!(busy.exists(), "a cgroup with a process stays");
        assert!(foreign.exists(), "a cgroup gantry did not name stays");
    }

    #[test]
    fn only_the_names_gantry_gives_are_its_own() {
        assert!(is_task_cgroup_name(
            "0414432f-ac49-4177-90fa-a7d11f54ee21-12"
        ));
        assert!(is_task_cgroup_name(&format!("warm-{}", "f".repeat(32))));
        for other in [
            "system.slice",
            "warm-xyz",
            "0414432f-ac49-4177-90fa-a7d11f54ee21",
            "0414432f-ac49-4177-90fa-a7d11f54ee21-",
            "0414432f-ac49-4177-90fa-a7d11f54ee2z-1",
            ".probe-1",
        ] {
            assert!(!is_task_cgroup_name(other), "{other}");
        }
    }
}
