//! The plugins serving now, which a reload replaces (`gantry serve --watch`, SIGHUP).
//!
//! A reload is atomic: the next [`Plugins`] is loaded and checked whole beside the current one,
//! then swapped in with one pointer store. Whoever took the current set before the swap — a
//! request, a stream, a task's run — holds an `Arc` to it and finishes on it; whoever comes
//! after gets the new one. The old set is freed when its last holder lets go.

use super::Plugins;
use crate::backends::BackendPlugin;
use crate::contract::{CommandSpec, PromptRequest, RequestError};
use crate::tasks::{AdapterFailure, AdapterRun, Adapters};
use crate::tenants::TenantId;
use arc_swap::ArcSwap;
use std::sync::Arc;

/// The current version of the loaded plugins.
#[derive(Debug)]
pub struct LivePlugins {
    current: ArcSwap<Plugins>,
}

impl LivePlugins {
    /// Serve `plugins` until a reload replaces them.
    pub fn new(plugins: Arc<Plugins>) -> LivePlugins {
        LivePlugins {
            current: ArcSwap::new(plugins),
        }
    }

    /// The plugins serving now; held, they stay loaded whatever a reload does meanwhile.
    pub fn current(&self) -> Arc<Plugins> {
        self.current.load_full()
    }

    /// Serve `next` from now on; the version it replaces.
    pub fn replace(&self, next: Arc<Plugins>) -> Arc<Plugins> {
        next.announce();
        self.current.swap(next)
    }
}

/// The supervisor's adapters are the current plugins' backends: a task's command is built,
/// and its run parsed, by the version current when it asked (a run keeps its instance, and so
/// its version, to the end).
#[async_trait::async_trait]
impl Adapters for LivePlugins {
    fn backend(&self, name: &str) -> Option<Arc<BackendPlugin>> {
        self.current().backend(name)
    }

    async fn build_command(
        &self,
        backend: &str,
        tenant: &TenantId,
        request: &PromptRequest,
        overrides: Vec<(String, String)>,
    ) -> Result<Result<CommandSpec, RequestError>, AdapterFailure> {
        self.current()
            .build_command(backend, tenant, request, overrides)
            .await
    }

    async fn start_run(
        &self,
        backend: &str,
        tenant: &TenantId,
        request: &PromptRequest,
    ) -> Result<Box<dyn AdapterRun>, AdapterFailure> {
        self.current().start_run(backend, tenant, request).await
    }
}
