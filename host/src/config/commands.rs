//! `[commands]`: the Web UI API's command lines (`/api/commands`).

use serde::Deserialize;

/// How long and how many command lines run, and how much of their output is kept.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommandsConfig {
    /// The timeout of a command that names none, in seconds.
    pub default_timeout_secs: u64,
    /// The longest timeout a command may ask for, in seconds (longer asks are a 422).
    pub max_timeout_secs: u64,
    /// Commands one user may have running at once (more are a 429).
    pub max_running_per_user: u32,
    /// Commands one tenant may have running at once (more are a 429).
    pub max_running_per_tenant: u32,
    /// Bytes of one command's output kept; past it one marker line says the rest was
    /// dropped (the process still runs to its end).
    pub max_output_bytes: u64,
}

impl Default for CommandsConfig {
    fn default() -> Self {
        CommandsConfig {
            default_timeout_secs: 30,
            max_timeout_secs: 600,
            max_running_per_user: 4,
            max_running_per_tenant: 16,
            max_output_bytes: 1024 * 1024,
        }
    }
}

impl CommandsConfig {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.default_timeout_secs == 0 || self.default_timeout_secs > self.max_timeout_secs {
            return Err(
                "commands.default_timeout_secs must be at least 1 and at most commands.max_timeout_secs"
                    .into(),
            );
        }
        if self.max_running_per_user == 0 || self.max_running_per_tenant == 0 {
            return Err(
                "commands.max_running_per_user and max_running_per_tenant must be at least 1"
                    .into(),
            );
        }
        Ok(())
    }
}
