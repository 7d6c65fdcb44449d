//! A launcher started ahead of demand ("warm"): what it is told once a task comes.
//!
//! Most of a sandboxed spawn is the same for every task: starting the launcher, cloning the
//! init into its namespaces and, above all, moving it into its cgroups (on cgroup v1 each
//! such move waits for an RCU grace period, several milliseconds). A warm launcher
//! (`gantry-sandbox __sandbox-warm [--layers L] [--cgroup DIR]... --sync FD`) does all that
//! before any task exists, says so with one [`READY`] byte on its sync socket, and then
//! waits there for a [`Job`]: the same arguments a cold launch gets on its command line, plus
//! the environment, the working directory and whether the task has a standard input. Until
//! then it holds nothing of any tenant: no path, no id mapping, no environment.
//!
//! A job is a length-prefixed frame of length-prefixed byte strings (never text parsed
//! twice): [`Job::encode`] on gantry's side, [`Job::decode`] on the launcher's.

use super::{Layers, Restriction, namespaces, parse_launch};
use std::ffi::{CString, OsStr, OsString};
use std::io::{Error, ErrorKind, Read, Result};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The first argument that makes the launcher a warm one.
pub const WARM_ARG: &str = "__sandbox-warm";

/// The byte a warm launcher writes on its sync socket once it is ready for a job.
pub const READY: u8 = b'R';

/// The largest job frame accepted: Linux's own limit on a program's arguments and
/// environment together is far below it.
pub const MAX_JOB_BYTES: usize = 16 << 20;

/// What a warm launcher runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The launch arguments, exactly as a cold launch takes them after [`super::LAUNCHER_ARG`]
    /// (`--read`, `--write`, the limits, `--`, the program and its arguments), without
    /// `--cgroup`: the warm launcher's cgroups are its own.
    pub args: Vec<OsString>,
    /// The program's whole environment (`KEY=value`).
    pub env: Vec<OsString>,
    /// Its working directory.
    pub cwd: PathBuf,
    /// Whether the launcher's standard input is the task's; else the program reads
    /// `/dev/null`.
    pub stdin: bool,
}

impl Job {
    /// The frame gantry writes to the warm launcher's sync socket.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = vec![u8::from(self.stdin)];
        let mut strings = |list: &[&OsStr]| {
            body.extend((list.len() as u32).to_le_bytes());
            for s in list {
                body.extend((s.len() as u32).to_le_bytes());
                body.extend(s.as_bytes());
            }
        };
        strings(
            &self
                .args
                .iter()
                .map(OsString::as_os_str)
                .collect::<Vec<_>>(),
        );
        strings(&self.env.iter().map(OsString::as_os_str).collect::<Vec<_>>());
        strings(&[self.cwd.as_os_str()]);
        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend(body);
        frame
    }

    /// Read one frame from `from`: `Ok(None)` when it ends before a frame starts (gantry let
    /// the warm launcher go).
    pub fn read_frame(from: &mut impl Read) -> Result<Option<Vec<u8>>> {
        let mut len = [0u8; 4];
        match from.read(&mut len[..1])? {
            0 => return Ok(None),
            _ => from.read_exact(&mut len[1..])?,
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_JOB_BYTES {
            return Err(invalid(format!(
                "a job of {len} bytes (at most {MAX_JOB_BYTES})"
            )));
        }
        let mut body = vec![0; len];
        from.read_exact(&mut body)?;
        Ok(Some(body))
    }

    /// Parse a frame's body (what [`Job::read_frame`] returns).
    pub fn decode(body: &[u8]) -> Result<Job> {
        let mut at = body;
        let (&stdin, rest) = at.split_first().ok_or_else(|| invalid("an empty job"))?;
        at = rest;
        fn take<'a>(at: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
            if at.len() < n {
                return Err(invalid("a job cut short"));
            }
            let (head, rest) = at.split_at(n);
            *at = rest;
            Ok(head)
        }
        fn number(at: &mut &[u8]) -> Result<usize> {
            let bytes = take(at, 4)?;
            Ok(u32::from_le_bytes(bytes.try_into().expect("four bytes")) as usize)
        }
        fn strings(at: &mut &[u8]) -> Result<Vec<OsString>> {
            let count = number(at)?;
            // Each string takes at least its four length bytes: a count beyond that is a lie.
            if count > at.len() / 4 {
                return Err(invalid("a job cut short"));
            }
            (0..count)
                .map(|_| {
                    let len = number(at)?;
                    Ok(OsString::from_vec(take(at, len)?.to_vec()))
                })
                .collect()
        }
        let args = strings(&mut at)?;
        let env = strings(&mut at)?;
        let mut cwd = strings(&mut at)?;
        if !at.is_empty() {
            return Err(invalid("bytes after the job"));
        }
        if stdin > 1 {
            return Err(invalid("a job's stdin flag is 0 or 1"));
        }
        let cwd = match (cwd.pop(), cwd.is_empty()) {
            (Some(cwd), true) if Path::new(&cwd).is_absolute() => PathBuf::from(cwd),
            _ => return Err(invalid("a job needs one absolute working directory")),
        };
        if env.iter().any(|kv| !kv.as_bytes().contains(&b'=')) {
            return Err(invalid("an environment entry without ="));
        }
        Ok(Job {
            args,
            env,
            cwd,
            stdin: stdin == 1,
        })
    }

    /// The environment as the C strings `execve` takes.
    pub fn env_c(&self) -> Result<Vec<CString>> {
        self.env
            .iter()
            .map(|kv| {
                CString::new(kv.as_bytes()).map_err(|_| invalid("a NUL byte in the environment"))
            })
            .collect()
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidData, message.into())
}

/// The warm launcher's own arguments (after [`WARM_ARG`]).
#[derive(Debug, PartialEq, Eq)]
struct Warm {
    layers: Layers,
    cgroups: Vec<PathBuf>,
    sync: RawFd,
    /// The skeleton of a root of its own (see [`super::skeleton`]), to bind ahead of demand.
    skeleton: Option<PathBuf>,
}

fn parse_warm(args: Vec<OsString>) -> std::result::Result<Warm, String> {
    let mut layers = Layers::default();
    let mut cgroups = Vec::new();
    let mut sync = None;
    let mut skeleton = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| {
            args.next()
                .and_then(|v| v.into_string().ok())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match arg.to_str() {
            Some("--layers") => layers = Layers::parse(&value("--layers")?)?,
            Some("--cgroup") => {
                let dir = PathBuf::from(value("--cgroup")?);
                if !dir.is_absolute() {
                    return Err("--cgroup needs an absolute path".into());
                }
                cgroups.push(dir);
            }
            Some("--skeleton") => {
                let dir = PathBuf::from(value("--skeleton")?);
                if !dir.is_absolute() {
                    return Err("--skeleton needs an absolute path".into());
                }
                skeleton = Some(dir);
            }
            Some("--sync") => {
                sync = Some(
                    value("--sync")?
                        .parse()
                        .map_err(|_| "--sync needs a number")?,
                );
            }
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    let sync = sync
        .filter(|fd| *fd > 2)
        .ok_or("--sync FD (above 2) is needed")?;
    if skeleton.is_some() && !layers.mount {
        return Err("--skeleton is for a root of its own (the mount layer)".into());
    }
    Ok(Warm {
        layers,
        cgroups,
        sync,
        skeleton,
    })
}

/// The warm launcher (`gantry-sandbox __sandbox-warm …`, the arguments after it): get ready,
/// wait for a job, run it. Returns only on failure (exit 127, the reason on stderr), or with
/// 0 when gantry let it go without a job.
pub fn launch_warm(args: Vec<OsString>) -> ExitCode {
    let message = match parse_warm(args) {
        Err(message) => message,
        Ok(warm) if warm.layers.any() => {
            namespaces::run_warm(warm.layers, warm.cgroups, warm.sync, warm.skeleton)
        }
        Ok(warm) if !warm.cgroups.is_empty() => {
            "a warm launcher without namespaces has no init to put in cgroups".into()
        }
        Ok(warm) => match without_namespaces(warm.sync) {
            Ok(None) => return ExitCode::SUCCESS,
            Ok(Some(never)) => match never {},
            Err(e) => e.to_string(),
        },
    };
    eprintln!("gantry sandbox: {message}");
    ExitCode::from(127)
}

/// Landlock and rlimits only: this process becomes the program.
fn without_namespaces(sync: RawFd) -> Result<Option<std::convert::Infallible>> {
    // SAFETY: gantry handed this descriptor over for this process alone; it is closed at the
    // exec below.
    let mut socket = unsafe { std::os::unix::net::UnixStream::from_raw_fd(sync) };
    crate::spawn::set_inheritable(std::os::fd::AsFd::as_fd(&socket), false)?;
    std::io::Write::write_all(&mut socket, &[READY])?;
    let Some(frame) = Job::read_frame(&mut socket)? else {
        return Ok(None);
    };
    let job = Job::decode(&frame)?;
    let (spec, program, rest) = parse_launch(job.args.clone()).map_err(invalid)?;
    if spec.layers.any() || !spec.cgroups.is_empty() {
        return Err(invalid(
            "a job with namespaces or cgroups for a launcher without them",
        ));
    }
    let env = job.env_c()?;
    std::env::set_current_dir(&job.cwd)?;
    if !job.stdin {
        null_stdin()?;
    }
    let read: Vec<&Path> = spec.read.iter().map(PathBuf::as_path).collect();
    let write: Vec<&Path> = spec.write.iter().map(PathBuf::as_path).collect();
    let restriction = Restriction::new(&read, &write, spec.rlimits)
        .map_err(|e| Error::other(format!("{e:#}")))?;
    restriction.apply_in_child()?;
    let program_c = CString::new(program.as_os_str().as_bytes())
        .map_err(|_| invalid("a NUL byte in the program"))?;
    let mut argv = vec![program_c.clone()];
    for a in &rest {
        argv.push(CString::new(a.as_bytes()).map_err(|_| invalid("a NUL byte in an argument"))?);
    }
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut env_p: Vec<*const libc::c_char> = env.iter().map(|a| a.as_ptr()).collect();
    env_p.push(std::ptr::null());
    // A Rust program starts with SIGPIPE ignored, which an exec would keep.
    // SAFETY: restoring a default action.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    // SAFETY: execve with NUL-terminated arrays of valid C strings.
    unsafe { libc::execve(program_c.as_ptr(), argv_p.as_ptr(), env_p.as_ptr()) };
    let error = Error::last_os_error();
    Err(Error::new(
        error.kind(),
        format!("cannot run {}: {error}", program.display()),
    ))
}

/// Make `/dev/null` this process's standard input.
pub(super) fn null_stdin() -> Result<()> {
    let null = std::fs::File::open("/dev/null")?;
    // SAFETY: dup2 onto descriptor 0 of this process.
    if unsafe { libc::dup2(null.as_raw_fd(), 0) } < 0 {
        return Err(Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job {
            args: ["--read", "/usr", "--", "/bin/echo", "a b", "ü"]
                .map(OsString::from)
                .to_vec(),
            env: ["PATH=/usr/bin", "EMPTY="].map(OsString::from).to_vec(),
            cwd: "/w/x".into(),
            stdin: true,
        }
    }

    #[test]
    fn a_job_round_trips_through_its_frame() {
        let frame = job().encode();
        let body = Job::read_frame(&mut frame.as_slice()).unwrap().unwrap();
        assert_eq!(Job::decode(&body).unwrap(), job());
        // Bytes that are not UTF-8 are kept as they are.
        let odd = Job {
            args: vec![OsString::from_vec(vec![0xff, b'x'])],
            ..job()
        };
        let body = Job::read_frame(&mut odd.encode().as_slice())
            .unwrap()
            .unwrap();
        assert_eq!(Job::decode(&body).unwrap(), odd);
    }

    #[test]
    fn a_closed_socket_is_no_job_and_a_cut_frame_an_error() {
        assert!(Job::read_frame(&mut &[][..]).unwrap().is_none());
        let frame = job().encode();
        for cut in [2, 4, 9, frame.len() - 1] {
            assert!(Job::read_frame(&mut &frame[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn a_malformed_job_is_refused() {
        let body = |job: &Job| job.encode()[4..].to_vec();
        let good = body(&job());
        assert!(Job::decode(&[]).is_err());
        assert!(Job::decode(&good[..good.len() - 1]).is_err(), "short");
        let mut long = good.clone();
        long.push(0);
        assert!(Job::decode(&long).is_err(), "trailing bytes");
        let mut flag = good.clone();
        flag[0] = 2;
        assert!(Job::decode(&flag).is_err(), "stdin flag");
        // A count far beyond what the bytes can hold.
        let mut count = good.clone();
        count[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Job::decode(&count).is_err(), "count");
        let relative = Job {
            cwd: "w".into(),
            ..job()
        };
        assert!(Job::decode(&body(&relative)).is_err(), "relative cwd");
        let no_equals = Job {
            env: vec!["PATH".into()],
            ..job()
        };
        assert!(Job::decode(&body(&no_equals)).is_err(), "env without =");
        let too_big = (MAX_JOB_BYTES as u32 + 1).to_le_bytes();
        assert!(Job::read_frame(&mut &too_big[..]).is_err(), "too big");
        let nul = Job {
            env: vec!["A=b\0c".into()],
            ..job()
        };
        let decoded = Job::decode(&body(&nul)).unwrap();
        assert!(decoded.env_c().is_err(), "NUL in the environment");
    }

    #[test]
    fn the_warm_launcher_refuses_what_it_does_not_understand() {
        let os = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            parse_warm(os(&[
                "--layers", "user,pid", "--cgroup", "/c", "--sync", "5"
            ]))
            .unwrap(),
            Warm {
                layers: Layers::parse("user,pid").unwrap(),
                cgroups: vec!["/c".into()],
                sync: 5,
                skeleton: None,
            }
        );
        let with_skeleton = parse_warm(os(&[
            "--layers",
            "user,pid,mount",
            "--skeleton",
            "/s",
            "--sync",
            "5",
        ]))
        .unwrap();
        assert_eq!(with_skeleton.skeleton.as_deref(), Some(Path::new("/s")));
        assert!(
            parse_warm(os(&[
                "--layers",
                "user,pid",
                "--skeleton",
                "/s",
                "--sync",
                "5"
            ]))
            .is_err(),
            "a skeleton without a root of its own"
        );
        assert!(
            parse_warm(os(&[
                "--layers",
                "user,pid,mount",
                "--skeleton",
                "s",
                "--sync",
                "5"
            ]))
            .is_err(),
            "a relative skeleton"
        );
        assert!(parse_warm(os(&[])).is_err(), "no sync socket");
        assert!(
            parse_warm(os(&["--sync", "1"])).is_err(),
            "stdout is no sync socket"
        );
        assert!(parse_warm(os(&["--sync", "x"])).is_err());
        assert!(parse_warm(os(&["--sync", "5", "--cgroup", "c"])).is_err());
        assert!(parse_warm(os(&["--sync", "5", "--bogus"])).is_err());
        assert!(parse_warm(os(&["--sync", "5", "--layers", "mount"])).is_err());
    }
}
