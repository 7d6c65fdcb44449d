//! A command line run for the Web UI API (`/api/commands`): `sh -c LINE` started through the
//! same spawn path as every task's step ([`process::spawn_sandboxed`]) — its namespaces,
//! Landlock, cgroup and rlimits, and an egress proxy with the node's and the tenant's
//! allowlists (no backend's, no model key) — in a directory inside one of the tenant's
//! workspaces, with a fresh home and temp directory that go when it ends.
//!
//! Commands do not take the tenant's task slots: a shell command is short and interactive,
//! and a tenant's queue of agent runs should not hold up `ls`, nor a `sleep` hold up a run.
//! The caller (`crate::commands`) caps how many run at once per user and per tenant instead.

use super::process::{Launch, Spawned, TaskProxy, signal_group, spawn_sandboxed};
use super::{Supervisor, TaskError, lines};
use crate::contract::OutputStream;
use crate::tenants::TenantId;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// A command line to run in a tenant's workspace.
#[derive(Debug, Clone)]
pub struct CommandLaunch {
    /// The command's id (its sandbox's name).
    pub id: String,
    /// The workspace it runs in.
    pub workspace_id: String,
    /// Its working directory, relative to the workspace (checked again here); the
    /// workspace's own when empty.
    pub subdir: String,
    /// The line `sh -c` runs.
    pub line: String,
    /// Variables set on top of the clean environment (already checked by the caller).
    pub env: Vec<(String, String)>,
}

/// How a command's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandEnd {
    /// It exited by itself with this code (or `None`: killed by a signal).
    Exited(Option<i32>),
    /// It was cancelled.
    Cancelled,
    /// It ran past its timeout.
    TimedOut,
}

/// A command's process, started: read its [`lines`](Self::lines), then [`finish`](Self::finish).
#[derive(Debug)]
pub struct RunningCommand {
    spawned: Spawned,
    /// The host's proxy for it, while no network namespace holds its own.
    _proxy: TaskProxy,
    /// Its home and temp directory, removed when it ends.
    scratch: std::path::PathBuf,
    grace: Duration,
}

impl std::fmt::Debug for Spawned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spawned").field("pgid", &self.pgid).finish()
    }
}

impl Supervisor {
    /// Start `sh -c LINE` for `tenant` in its sandbox. `Ok(Err(why))` when it could not start
    /// (the reason is the caller's to show), an error for a bad workspace or directory, or a
    /// failure of gantry's own.
    pub async fn spawn_command(
        &self,
        tenant: &TenantId,
        launch: CommandLaunch,
    ) -> Result<Result<RunningCommand, String>, TaskError> {
        let inner = &self.inner;
        let (_, root) = inner.workspaces.dir(tenant, &launch.workspace_id).await?;
        let cwd = inner
            .workspaces
            .subdir(tenant, &launch.workspace_id, &launch.subdir)
            .await?;
        let Some(program) = crate::backends::resolve("sh") else {
            return Ok(Err(format!(
                "sh is not on PATH ({})",
                crate::backends::CHILD_PATH
            )));
        };
        let program = super::sandbox::paths::launch_path(&program);
        // Its own home and temp directory, under the supervisor's temp root (the command id
        // is a UUID the caller made): nothing it writes there outlives it.
        let scratch = inner.tmp_root.join(format!("command-{}", launch.id));
        let home = scratch.join("home");
        let tmp = scratch.join("tmp");
        let made = std::fs::create_dir_all(&home).and_then(|()| std::fs::create_dir_all(&tmp));
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(&scratch);
            return Err(TaskError::Internal(e.into()));
        }
        let mut proxy = TaskProxy::for_command(inner, tenant, &launch.id)
            .map_err(|e| TaskError::Refused(format!("{e:#}")))?;
        let spawned = spawn_sandboxed(
            inner,
            Launch {
                id: &launch.id,
                tenant,
                name: "sh",
                program,
                args: vec!["-c".into(), launch.line],
                env: launch.env,
                stdin: None,
                read_only: &[],
                root: &root,
                cwd: &cwd,
                home: &home,
                tmp: &tmp,
            },
            &mut proxy,
        )
        .await;
        match spawned {
            Ok(Ok(spawned)) => Ok(Ok(RunningCommand {
                spawned,
                _proxy: proxy,
                scratch,
                grace: Duration::from_millis(inner.limits.kill_grace_ms),
            })),
            Ok(Err(why)) => {
                let _ = std::fs::remove_dir_all(&scratch);
                Ok(Err(why))
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&scratch);
                Err(TaskError::Internal(e))
            }
        }
    }
}

impl RunningCommand {
    /// The process id of its launcher (the leader of its process group), as the host sees it.
    pub fn pid(&self) -> Option<u32> {
        self.spawned.child.id()
    }

    /// Run it to its end, handing each batch of output lines to `output` as it comes (which
    /// may take its time: reading waits, and the child blocks on a full pipe, so memory stays
    /// bounded). A cancel sent on `cancel`, or `timeout` passing, sends TERM to its process
    /// group and KILL after the grace period.
    pub async fn finish<F, Fut>(
        mut self,
        mut cancel: watch::Receiver<bool>,
        timeout: Duration,
        mut output: F,
    ) -> std::io::Result<CommandEnd>
    where
        F: FnMut(Vec<(OutputStream, lines::Line)>) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let pgid = self.spawned.pgid;
        let deadline = tokio::time::Instant::now() + timeout;
        let lines: &mut mpsc::Receiver<_> = &mut self.spawned.lines;
        let child = &mut self.spawned.child;
        let mut stop = None;
        let mut kill_at: Option<tokio::time::Instant> = None;
        let mut status = None;
        let mut open = true;
        let mut batch = Vec::new();
        while status.is_none() || open {
            tokio::select! {
                n = lines.recv_many(&mut batch, 256), if open => {
                    if n == 0 {
                        open = false;
                    } else {
                        output(std::mem::take(&mut batch)).await;
                    }
                }
                exit = child.wait(), if status.is_none() => {
                    status = Some(exit?);
                    signal_group(pgid, libc::SIGKILL);
                }
                () = super::run::cancelled(&mut cancel), if stop.is_none() && status.is_none() => {
                    stop = Some(CommandEnd::Cancelled);
                    signal_group(pgid, libc::SIGTERM);
                    kill_at = Some(tokio::time::Instant::now() + self.grace);
                }
                () = tokio::time::sleep_until(deadline), if stop.is_none() && status.is_none() => {
                    stop = Some(CommandEnd::TimedOut);
                    signal_group(pgid, libc::SIGTERM);
                    kill_at = Some(tokio::time::Instant::now() + self.grace);
                }
                () = super::run::sleep_until(kill_at), if status.is_none() => {
                    signal_group(pgid, libc::SIGKILL);
                    kill_at = None;
                }
            }
        }
        let code = status.and_then(|s| s.code());
        Ok(stop.unwrap_or(CommandEnd::Exited(code)))
    }
}

impl Drop for RunningCommand {
    fn drop(&mut self) {
        // Whatever is left in its group goes with it, and its home and temp directory at once
        // (small, and whoever sees the command ended must not find them); its cgroup off the
        // caller's path (removing one may wait for the kernel).
        signal_group(self.spawned.pgid, libc::SIGKILL);
        let _ = std::fs::remove_dir_all(&self.scratch);
        if let Some(sandbox) = self.spawned.sandbox.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => {
                    handle.spawn_blocking(move || drop(sandbox));
                }
                Err(_) => drop(sandbox),
            }
        }
    }
}
