//! The rows of the Web UI API's commands: each command line a user ran, its output line by
//! line, and the workspace each user's commands run in when no project is named.
//! `crate::commands` owns their rules; this is what the store keeps and how it is asked.

use super::StoreResult;

/// Where a command is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandStatus {
    /// Its process runs.
    Running,
    /// It exited with status 0.
    Completed,
    /// It exited with another status, was killed, or could not start.
    Failed,
    /// It was cancelled (exit code -15).
    Cancelled,
    /// It ran past its timeout and was ended.
    TimedOut,
    /// It was running when its node's gantry stopped.
    Interrupted,
}

impl CommandStatus {
    /// Every value.
    pub const ALL: &'static [CommandStatus] = &[
        CommandStatus::Running,
        CommandStatus::Completed,
        CommandStatus::Failed,
        CommandStatus::Cancelled,
        CommandStatus::TimedOut,
        CommandStatus::Interrupted,
    ];

    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandStatus::Running => "running",
            CommandStatus::Completed => "completed",
            CommandStatus::Failed => "failed",
            CommandStatus::Cancelled => "cancelled",
            CommandStatus::TimedOut => "timeout",
            CommandStatus::Interrupted => "interrupted",
        }
    }

    /// The value named `name`.
    pub fn parse(name: &str) -> Option<CommandStatus> {
        CommandStatus::ALL
            .iter()
            .copied()
            .find(|s| s.as_str() == name)
    }
}

/// One command as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRecord {
    /// A UUID.
    pub id: String,
    /// Its tenant.
    pub tenant: String,
    /// The user who ran it.
    pub user_id: String,
    /// The command line, as given.
    pub command: String,
    /// The project whose workspace it ran in; none for the user's own workspace.
    pub project_id: Option<String>,
    /// The session it ran in (the Web UI API's sessions), if the caller named one.
    pub session_id: Option<String>,
    /// The workspace it ran in.
    pub workspace_id: String,
    /// Its working directory, relative to the workspace (empty: the workspace's own).
    pub working_directory: String,
    /// Where it is in its life.
    pub status: CommandStatus,
    /// The host's pid of its process group's leader while it ran.
    pub pid: Option<u32>,
    /// Its exit code (-15 when cancelled or timed out).
    pub exit_code: Option<i32>,
    /// Milliseconds since the Unix epoch.
    pub started_at: i64,
    /// When it ended.
    pub completed_at: Option<i64>,
    /// Why it failed to start, or how it was ended.
    pub error: Option<String>,
    /// The node running it (a dead node's running commands become interrupted).
    pub node: String,
    /// Bytes of output stored.
    pub output_bytes: u64,
    /// Output past the cap was dropped (one marker line says so).
    pub truncated: bool,
}

/// One line a command printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutputRecord {
    /// 1, 2, 3… per command.
    pub seq: u64,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The line with its newline (none on a last line without one, or a piece of a long
    /// line).
    pub content: String,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
}

/// What the store keeps of commands. Every read takes the tenant and the user: another
/// user's or tenant's command behaves like an unknown id.
#[async_trait::async_trait]
pub trait CommandStore: Send + Sync {
    /// Store a new (running) command.
    async fn insert_command(&self, command: &CommandRecord) -> StoreResult<()>;
    /// Store its end: status, exit code, completion time, error.
    async fn finish_command(&self, command: &CommandRecord) -> StoreResult<()>;
    /// Append output lines (their seqs already given), counting `bytes` more stored and
    /// marking it truncated when `truncated`, in one transaction.
    async fn append_command_output(
        &self,
        tenant: &str,
        id: &str,
        lines: &[CommandOutputRecord],
        bytes: u64,
        truncated: bool,
    ) -> StoreResult<()>;
    /// One of a user's commands.
    async fn get_command(
        &self,
        tenant: &str,
        user_id: &str,
        id: &str,
    ) -> StoreResult<Option<CommandRecord>>;
    /// A command's output lines, oldest first, at most `limit` after `after_seq`.
    async fn command_output(
        &self,
        tenant: &str,
        id: &str,
        after_seq: u64,
        limit: usize,
    ) -> StoreResult<Vec<CommandOutputRecord>>;
    /// A user's commands, newest first: a page, and how many there are in all.
    async fn list_commands(
        &self,
        tenant: &str,
        user_id: &str,
        running_only: bool,
        limit: usize,
        offset: usize,
    ) -> StoreResult<(Vec<CommandRecord>, u64)>;
    /// The distinct command lines a user ran most often, most often first (for suggestions).
    async fn frequent_commands(
        &self,
        tenant: &str,
        user_id: &str,
        limit: usize,
    ) -> StoreResult<Vec<(String, u64)>>;
    /// Mark the running commands of `node` interrupted (at its start: they died with it).
    async fn interrupt_commands_of(&self, node: &str, now: i64) -> StoreResult<u64>;
    /// The workspace a user's commands run in when they name no project.
    async fn command_workspace(&self, tenant: &str, user_id: &str) -> StoreResult<Option<String>>;
    /// Remember it (in place of `replacing`, a workspace found gone); the first one stored
    /// wins, and is returned.
    async fn set_command_workspace(
        &self,
        tenant: &str,
        user_id: &str,
        workspace_id: &str,
        replacing: Option<&str>,
    ) -> StoreResult<String>;
}
