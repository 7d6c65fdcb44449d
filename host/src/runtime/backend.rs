//! Calling backend adapters: build a command spec, then parse one run's output line by line
//! in an instance that lives as long as the run.

use super::call::CallState;
use super::handler::CallFailure;
use super::registry::{Plugin, PluginInstance, backend_bindings};
use super::{Runtime, Slot};
use crate::tenants::TenantId;
use wasmtime::Store;
use wasmtime::component::ResourceAny;

pub use backend_bindings::gantry::plugin::types::{
    AgentEvent, ApprovalMode, BackendInfo, CommandSpec, DoneInfo, InitInfo, OutputStream,
    PromptRequest, RequestError, RunSummary, SandboxMode, ToolResult, ToolUse, Usage,
};

/// A request with only its prompt set: every mode the CLI's default, no flags, no session.
pub fn plain_request(prompt: &str) -> PromptRequest {
    PromptRequest {
        prompt: prompt.into(),
        args: vec![],
        model: None,
        system_prompt: None,
        max_turns: None,
        approval_mode: ApprovalMode::Default,
        sandbox_mode: SandboxMode::Default,
        extra_flags: vec![],
        resume_session: None,
    }
}

/// A loaded backend plugin.
#[derive(Clone, Copy)]
pub struct BackendAdapter<'a> {
    runtime: &'a Runtime,
    plugin: &'a Plugin,
    pre: &'a backend_bindings::BackendPre<CallState>,
    info: &'a BackendInfo,
}

impl Runtime {
    /// The backend plugin named `name`, if one is loaded.
    pub fn backend(&self, name: &str) -> Option<BackendAdapter<'_>> {
        let plugin = self.plugin(name)?;
        match &plugin.instance {
            PluginInstance::Backend { pre, info } => Some(BackendAdapter {
                runtime: self,
                plugin,
                pre,
                info,
            }),
            PluginInstance::Handler(_) => None,
        }
    }
}

impl std::fmt::Debug for BackendAdapter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendAdapter")
            .field("plugin", &self.plugin.manifest.name)
            .finish_non_exhaustive()
    }
}

/// One live instance with its slot, released on drop.
struct Instance {
    store: Store<CallState>,
    backend: backend_bindings::Backend,
    _slot: Slot,
}

impl BackendAdapter<'_> {
    /// What the adapter says about its backend (read once, at load).
    pub fn info(&self) -> &BackendInfo {
        self.info
    }

    /// The variables of gantry's environment the manifest passes to this backend's processes.
    pub fn passed_env(&self) -> &[String] {
        &self.plugin.manifest.env
    }

    /// The backend's model API: the `base_url` setting, else the manifest's `model_upstream`.
    pub fn model_upstream(&self) -> Option<&str> {
        self.plugin
            .manifest
            .settings
            .get("base_url")
            .or(self.plugin.manifest.model_upstream.as_ref())
            .map(String::as_str)
    }

    /// Extra paths the manifest lets this backend's tasks read.
    pub fn read_only(&self) -> &[std::path::PathBuf] {
        &self.plugin.manifest.read_only
    }

    /// Hosts the manifest lets this backend's tasks reach.
    pub fn egress(&self) -> &[String] {
        &self.plugin.manifest.egress
    }

    /// The binary the manifest allows this backend to spawn.
    pub fn binary(&self) -> &str {
        self.plugin.manifest.binary.as_deref().unwrap_or_default()
    }

    async fn instantiate(&self, tenant: &TenantId) -> Result<Instance, CallFailure> {
        let (mut store, slot) = self.runtime.reserve(self.plugin, tenant)?;
        let backend = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(CallFailure::from_error)?;
        Ok(Instance {
            store,
            backend,
            _slot: slot,
        })
    }

    /// Turn a prompt request into the command to spawn, or the adapter's refusal.
    pub async fn build_command(
        &self,
        tenant: &TenantId,
        request: &PromptRequest,
    ) -> Result<Result<CommandSpec, RequestError>, CallFailure> {
        self.build_command_with(tenant, request, Vec::new()).await
    }

    /// [`build_command`](Self::build_command), with `overrides` in place of the plugin's own
    /// settings of the same names (a task's model proxy in place of `base_url`).
    pub async fn build_command_with(
        &self,
        tenant: &TenantId,
        request: &PromptRequest,
        overrides: Vec<(String, String)>,
    ) -> Result<Result<CommandSpec, RequestError>, CallFailure> {
        let mut i = self.instantiate(tenant).await?;
        i.store.data_mut().setting_overrides = overrides;
        i.backend
            .gantry_plugin_adapter()
            .call_build_command(&mut i.store, request)
            .await
            .map_err(CallFailure::from_error)
    }

    /// Start parsing a run: one instance holds the run's state until [`AdapterRun::finish`].
    pub async fn start_run(
        &self,
        tenant: &TenantId,
        request: &PromptRequest,
    ) -> Result<AdapterRun, CallFailure> {
        let mut instance = self.instantiate(tenant).await?;
        let run = instance
            .backend
            .gantry_plugin_adapter()
            .run()
            .call_constructor(&mut instance.store, request)
            .await
            .map_err(CallFailure::from_error)?;
        Ok(AdapterRun { instance, run })
    }
}

/// The adapter's view of one run in progress.
pub struct AdapterRun {
    instance: Instance,
    run: ResourceAny,
}

impl std::fmt::Debug for AdapterRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdapterRun").finish_non_exhaustive()
    }
}

impl AdapterRun {
    /// The unified events of one output line. Each call has the plugin's full CPU budget.
    pub async fn parse_line(
        &mut self,
        stream: OutputStream,
        line: &str,
    ) -> Result<Vec<AgentEvent>, CallFailure> {
        let i = &mut self.instance;
        i.store.data_mut().start_call();
        i.backend
            .gantry_plugin_adapter()
            .run()
            .call_parse_line(&mut i.store, self.run, stream, line)
            .await
            .map_err(CallFailure::from_error)
    }

    /// Sum up the run after the process exited; the instance is released.
    pub async fn finish(mut self, exit_code: Option<i32>) -> Result<RunSummary, CallFailure> {
        let i = &mut self.instance;
        i.store.data_mut().start_call();
        i.backend
            .gantry_plugin_adapter()
            .run()
            .call_finish(&mut i.store, self.run, exit_code)
            .await
            .map_err(CallFailure::from_error)
    }
}
