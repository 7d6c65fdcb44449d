//! Calling backend adapters: build a command spec, then parse one run's output batch by batch
//! in an instance that lives as long as the run. This is how the runtime fills the
//! supervisor's [`Adapters`] trait.

use super::call::AdapterState;
use super::handler::CallFailure;
use super::registry::{Plugin, PluginInstance, backend_bindings};
use super::{Plugins, Slot};
use crate::backends::BackendPlugin;
use crate::contract::{
    AgentEvent, CommandSpec, OutputLine, PromptRequest, RequestError, RunSummary,
};
use crate::tasks::{AdapterFailure, AdapterRun, Adapters};
use crate::tenants::TenantId;
use std::sync::Arc;
use wasmtime::Store;
use wasmtime::component::ResourceAny;

impl From<CallFailure> for AdapterFailure {
    fn from(f: CallFailure) -> Self {
        AdapterFailure {
            code: f.code(),
            message: f.message(),
        }
    }
}

/// One live adapter instance with its slot, released on drop.
struct Instance {
    store: Store<AdapterState>,
    backend: backend_bindings::Backend,
    _slot: Slot,
}

impl Plugins {
    fn backend_pre(
        &self,
        name: &str,
    ) -> Option<(&Plugin, &backend_bindings::BackendPre<AdapterState>)> {
        let plugin = self.plugin(name)?;
        match &plugin.instance {
            PluginInstance::Backend { pre, .. } => Some((plugin, pre)),
            PluginInstance::Handler { .. } => None,
        }
    }

    async fn instantiate(&self, name: &str, tenant: &TenantId) -> Result<Instance, CallFailure> {
        let (plugin, pre) = self
            .backend_pre(name)
            .ok_or_else(|| CallFailure::Trap(format!("no backend named {name:?}")))?;
        // Adapters have their own pool and wait for a slot: the runs they serve are what
        // handler calls wait on.
        let permit = self
            .capacity()
            .adapter()
            .await
            .map_err(|_| CallFailure::OverCapacity)?;
        let (mut store, slot) = self.new_store(plugin, tenant, (), permit);
        let backend = pre
            .instantiate_async(&mut store)
            .await
            .map_err(CallFailure::from_error)?;
        Ok(Instance {
            store,
            backend,
            _slot: slot,
        })
    }
}

#[async_trait::async_trait]
impl Adapters for Plugins {
    fn backend(&self, name: &str) -> Option<Arc<BackendPlugin>> {
        self.backends.iter().find(|b| b.name == name).cloned()
    }

    async fn build_command(
        &self,
        backend: &str,
        tenant: &TenantId,
        request: &PromptRequest,
        overrides: Vec<(String, String)>,
    ) -> Result<Result<CommandSpec, RequestError>, AdapterFailure> {
        let mut i = self.instantiate(backend, tenant).await?;
        i.store.data_mut().setting_overrides = overrides;
        let built = i
            .backend
            .gantry_plugin_adapter()
            .call_build_command(&mut i.store, request)
            .await
            .map_err(CallFailure::from_error)?;
        Ok(built)
    }

    async fn start_run(
        &self,
        backend: &str,
        tenant: &TenantId,
        request: &PromptRequest,
    ) -> Result<Box<dyn AdapterRun>, AdapterFailure> {
        let mut instance = self.instantiate(backend, tenant).await?;
        let run = instance
            .backend
            .gantry_plugin_adapter()
            .run()
            .call_constructor(&mut instance.store, request)
            .await
            .map_err(CallFailure::from_error)?;
        Ok(Box::new(ComponentRun { instance, run }))
    }
}

/// The adapter's view of one run in progress: its instance holds the run's parsing state.
struct ComponentRun {
    instance: Instance,
    run: ResourceAny,
}

#[async_trait::async_trait]
impl AdapterRun for ComponentRun {
    async fn parse_lines(
        &mut self,
        lines: &[OutputLine],
    ) -> Result<Vec<Vec<AgentEvent>>, AdapterFailure> {
        let i = &mut self.instance;
        // Each call has the plugin's full CPU budget.
        i.store.data_mut().start_call();
        let mut events = i
            .backend
            .gantry_plugin_adapter()
            .run()
            .call_parse_lines(&mut i.store, self.run, lines)
            .await
            .map_err(CallFailure::from_error)?;
        // One list per line: an adapter that answers otherwise is broken, and its events
        // cannot be placed after their lines.
        if events.len() != lines.len() {
            return Err(AdapterFailure {
                code: "plugin_error",
                message: format!(
                    "parse-lines answered {} lists for {} lines",
                    events.len(),
                    lines.len()
                ),
            });
        }
        events.shrink_to_fit();
        Ok(events)
    }

    async fn finish(
        mut self: Box<Self>,
        exit_code: Option<i32>,
    ) -> Result<RunSummary, AdapterFailure> {
        let i = &mut self.instance;
        i.store.data_mut().start_call();
        let summary = i
            .backend
            .gantry_plugin_adapter()
            .run()
            .call_finish(&mut i.store, self.run, exit_code)
            .await
            .map_err(CallFailure::from_error)?;
        Ok(summary)
    }
}
