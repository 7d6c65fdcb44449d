//! The supervisor's narrow view of backend adapters. The runtime implements [`Adapters`] over
//! its components; the supervisor knows nothing of engines or stores of wasm, so it can be
//! tested with a plain Rust adapter.

use crate::backends::BackendPlugin;
use crate::contract::{
    AgentEvent, CommandSpec, OutputLine, PromptRequest, RequestError, RunSummary,
};
use crate::tenants::TenantId;
use std::fmt;
use std::sync::Arc;

/// Why an adapter call produced no answer (it trapped, ran out of time or memory, or no
/// instance was free): a stable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterFailure {
    /// A stable code (`plugin_trap`, `over_capacity`, …).
    pub code: &'static str,
    /// What happened.
    pub message: String,
}

impl fmt::Display for AdapterFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The backend adapters this node can call.
#[async_trait::async_trait]
pub trait Adapters: Send + Sync + fmt::Debug + 'static {
    /// The backend plugin named `name`, if one is loaded.
    fn backend(&self, name: &str) -> Option<Arc<BackendPlugin>>;

    /// Turn a prompt request into the command to spawn, or the adapter's refusal; `overrides`
    /// stand in for the plugin's settings of the same names (a task's model proxy in place of
    /// `base_url`).
    async fn build_command(
        &self,
        backend: &str,
        tenant: &TenantId,
        request: &PromptRequest,
        overrides: Vec<(String, String)>,
    ) -> Result<Result<CommandSpec, RequestError>, AdapterFailure>;

    /// Start parsing one run's output: the run's state lives until [`AdapterRun::finish`].
    async fn start_run(
        &self,
        backend: &str,
        tenant: &TenantId,
        request: &PromptRequest,
    ) -> Result<Box<dyn AdapterRun>, AdapterFailure>;
}

/// The adapter's view of one run in progress.
#[async_trait::async_trait]
pub trait AdapterRun: Send {
    /// The unified events of a batch of output lines: one list per line, in order.
    async fn parse_lines(
        &mut self,
        lines: &[OutputLine],
    ) -> Result<Vec<Vec<AgentEvent>>, AdapterFailure>;

    /// Sum up the run after its process exited.
    async fn finish(self: Box<Self>, exit_code: Option<i32>) -> Result<RunSummary, AdapterFailure>;
}
