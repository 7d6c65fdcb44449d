//! The host side of the `gantry:plugin` interfaces, one file per capability.
//!
//! Each capability implements its interface on a view of the call state that holds only what
//! it needs (the shape of wasmtime-wasi-http's `WasiHttpView`): [`PluginView`] for `log` and
//! `config`, the caller's tenant for `identity`, the core services and the tenant for
//! `workspaces`, `tasks`, `backends` and `sessions`. A view is plain data, so each capability is
//! tested without an engine. Every view that reaches data is scoped to the caller's tenant.

mod backends;
mod commands;
mod config;
mod host_info;
mod identity;
mod log;
mod metrics;
mod projects;
mod responses;
mod sessions;
mod tasks;
mod users;
mod webhooks;
mod websocket;
mod work_sessions;
mod workspaces;

use super::call::CallState;
use super::capacity::Capacity;
use super::registry::PluginContext;
use crate::backends::Availability;
use crate::events::EventBus;
use crate::metrics::Metrics;
use crate::projects::Projects;
use crate::sessions::Sessions;
use crate::tasks::queue::BoardQueues;
use crate::tasks::{Adapters, Supervisor};
use crate::tenants::TenantId;
use crate::users::{Principal, Users};
use crate::work_sessions::WorkSessions;
use crate::workspaces::Workspaces;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;
use wasmtime::component::{HasData, Linker};
use wasmtime_wasi_http::WasiHttpCtx;

/// Host bindings of `world handler`; WASI types come from wasmtime-wasi(-http), the shared
/// types from [`crate::contract`].
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "gantry:plugin/handler",
        require_store_data_send: true,
        // What reaches the store (async) is async; `log`, `config`, `identity` and
        // `metrics` answer from memory. A bad resource handle is a trap.
        imports: {
            "gantry:plugin/tasks.subscribe": async | trappable,
            "gantry:plugin/tasks.[method]subscription.next": async | trappable,
            "gantry:plugin/tasks.[drop]subscription": async | trappable,
            "gantry:plugin/responses": async | trappable,
            "gantry:plugin/tasks": async,
            "gantry:plugin/workspaces": async,
            "gantry:plugin/sessions": async,
            "gantry:plugin/backends": async,
            "gantry:plugin/host-info": async,
            "gantry:plugin/users": async,
            "gantry:plugin/projects": async,
            "gantry:plugin/websocket": async,
            "gantry:plugin/commands": async,
            "gantry:plugin/work-sessions": async,
            "gantry:plugin/webhooks": async,
        },
        with: {
            "gantry:plugin/types": crate::contract::types,
            "gantry:plugin/tasks.subscription": super::tasks::LogReader,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "wasi:random": wasmtime_wasi::p2::bindings::random,
            "wasi:cli": wasmtime_wasi::p2::bindings::cli,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        },
    });
}

/// Host bindings of `world log-shaping`: the `log-shaper` export a handler may have besides
/// `wasi:http/incoming-handler`; its types are [`bindings`]'.
pub(crate) mod log_shaping_bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "gantry:plugin/log-shaping",
        require_store_data_send: true,
        exports: { default: async },
        with: {
            "gantry:plugin/types": crate::contract::types,
            "gantry:plugin/tasks": super::bindings::gantry::plugin::tasks,
        },
    });
}

/// Host bindings of `world websocket-serving`: the `websocket-handler` export of a handler
/// that serves WebSocket connections; its types are [`bindings`]'.
pub(crate) mod websocket_bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "gantry:plugin/websocket-serving",
        require_store_data_send: true,
        exports: { default: async },
        with: {
            "gantry:plugin/identity": super::bindings::gantry::plugin::identity,
            "gantry:plugin/websocket": super::bindings::gantry::plugin::websocket,
        },
    });
}

pub(crate) use responses::LogHandoff;
pub(crate) use tasks::{next_batch, task as wit_task};
pub use websocket::truncate_reason;
pub(crate) use websocket::wit_event;
pub use websocket::{OverConnections, SocketAuth, SocketHost, Topic};

/// The core services a handler reaches through its host interfaces.
#[derive(Debug, Clone)]
pub struct Services {
    /// Workspace directories.
    pub workspaces: Arc<Workspaces>,
    /// The process supervisor.
    pub tasks: Supervisor,
    /// Which backends can run.
    pub backends: Availability,
    /// The backend adapters (for `preview`).
    pub adapters: Arc<dyn Adapters>,
    /// Resumable conversations.
    pub sessions: Sessions,
    /// Users, their passwords and tokens.
    pub users: Users,
    /// Projects and their tasks.
    pub projects: Projects,
    /// The queues that run the projects' tasks.
    pub queues: BoardQueues,
    /// Each tenant's events.
    pub events: EventBus,
    /// The node's counters.
    pub metrics: Arc<Metrics>,
    /// The Web UI API's command lines.
    pub commands: crate::commands::Commands,
    /// The Web UI API's working sessions.
    pub work_sessions: WorkSessions,
    /// Signed webhooks and their outbox.
    pub webhooks: crate::webhooks::Webhooks,
}

/// Node-wide facts for `host-info` and the metrics' gauges.
#[derive(Debug)]
pub struct NodeState {
    started: Instant,
    active: AtomicU32,
    /// The plugins loaded now (a reload replaces them).
    plugins: std::sync::RwLock<Vec<bindings::gantry::plugin::host_info::PluginInfo>>,
    max_instances: u32,
}

impl NodeState {
    pub(crate) fn new(max_instances: u32) -> Self {
        NodeState {
            started: Instant::now(),
            active: AtomicU32::new(0),
            plugins: Default::default(),
            max_instances,
        }
    }

    pub(crate) fn set_plugins(
        &self,
        plugins: Vec<bindings::gantry::plugin::host_info::PluginInfo>,
    ) {
        *self.plugins.write().unwrap_or_else(|p| p.into_inner()) = plugins;
    }

    /// The plugins loaded now.
    pub(crate) fn plugins(&self) -> Vec<bindings::gantry::plugin::host_info::PluginInfo> {
        self.plugins
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Component instances alive now.
    pub fn active_instances(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// Count one instance as alive until the guard drops.
    pub(crate) fn instance_guard(self: &Arc<Self>) -> ActiveInstance {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveInstance(self.clone())
    }

    /// The metrics in the Prometheus text format, with the gauges read now.
    pub fn render_metrics(&self, services: &Services) -> String {
        services.metrics.render(crate::metrics::Gauges {
            active_runs: services.tasks.active() as u64,
            active_instances: u64::from(self.active_instances()),
            max_instances: u64::from(self.max_instances),
        })
    }
}

/// One live instance, counted in [`NodeState::active_instances`].
#[derive(Debug)]
pub(crate) struct ActiveInstance(Arc<NodeState>);

impl Drop for ActiveInstance {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a handler's call state adds: the HTTP context, the services, and what the call
/// started that ends with it.
pub struct HandlerHost {
    pub(crate) http: WasiHttpCtx,
    services: Services,
    node: Arc<NodeState>,
    capacity: Arc<Capacity>,
    bound: BoundCall,
    /// The log the call handed to the host to answer with (`responses.stream-log`).
    handoff: Option<LogHandoff>,
    /// The calling user, on a `user_auth` route.
    user: Option<Principal>,
    /// The client's address.
    client: Option<std::net::IpAddr>,
    /// The WebSocket connection this store serves, if it serves one.
    pub(crate) socket: Option<SocketHost>,
}

impl HandlerHost {
    pub(crate) fn new(
        services: Services,
        node: Arc<NodeState>,
        capacity: Arc<Capacity>,
        caller: &super::Caller,
    ) -> Self {
        HandlerHost {
            http: WasiHttpCtx::new(),
            bound: BoundCall::new(services.clone(), caller.tenant.clone()),
            services,
            node,
            capacity,
            handoff: None,
            user: caller.user.clone(),
            client: caller.client,
            socket: None,
        }
    }

    /// The same, serving the WebSocket connection `socket`.
    pub(crate) fn with_socket(mut self, socket: SocketHost) -> Self {
        self.socket = Some(socket);
        self
    }

    /// The calling user (on a connection, once it authenticated).
    pub(crate) fn user(&self) -> Option<&Principal> {
        self.user.as_ref()
    }

    /// The log the call handed over, with what the call bound to itself: both now live as
    /// long as the answer.
    pub(crate) fn take_handoff(&mut self) -> Option<(LogHandoff, BoundCall)> {
        let handoff = self.handoff.take()?;
        let fresh = BoundCall::new(self.services.clone(), self.bound.tenant.clone());
        Some((handoff, std::mem::replace(&mut self.bound, fresh)))
    }
}

/// A handler's call state.
pub type HandlerState = CallState<HandlerHost>;

/// Tasks and workspaces that live only as long as the call that made them: when the call
/// ends (it returned, trapped, timed out, or its client went away) its `bound-to-call` tasks
/// are cancelled and, once they have ended, its `create-for-call` workspaces removed.
#[derive(Debug)]
pub(crate) struct BoundCall {
    services: Services,
    tenant: TenantId,
    tasks: Vec<String>,
    workspaces: Vec<String>,
}

impl BoundCall {
    fn new(services: Services, tenant: TenantId) -> Self {
        BoundCall {
            services,
            tenant,
            tasks: Vec::new(),
            workspaces: Vec::new(),
        }
    }
}

impl BoundCall {
    /// Act for `tenant` from now on (a connection that authenticated); nothing is bound yet.
    fn retarget(&mut self, tenant: TenantId) {
        debug_assert!(self.tasks.is_empty() && self.workspaces.is_empty());
        self.tenant = tenant;
    }
}

impl Drop for BoundCall {
    fn drop(&mut self) {
        if self.tasks.is_empty() && self.workspaces.is_empty() {
            return;
        }
        let tasks = std::mem::take(&mut self.tasks);
        let workspaces = std::mem::take(&mut self.workspaces);
        let services = self.services.clone();
        let tenant = self.tenant.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            // Cancelling a finished task is a no-op.
            for id in &tasks {
                let _ = services.tasks.cancel(&tenant, id).await;
            }
            for id in &tasks {
                let _ = services.tasks.wait(&tenant, id).await;
            }
            for id in workspaces {
                let busy = |ws: &str| services.tasks.workspace_busy(ws);
                if let Err(e) = services.workspaces.delete(&tenant, &id, busy).await {
                    tracing::debug!(workspace = %id, "a call's scratch workspace stays: {e}");
                }
            }
        });
    }
}

/// The plugin's own view: its name and settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PluginView<'a> {
    pub(crate) plugin: &'a PluginContext,
    pub(crate) overrides: &'a [(String, String)],
}

/// The core services, for the caller's tenant.
pub(crate) struct ServicesView<'a> {
    pub(crate) services: &'a Services,
    pub(crate) tenant: &'a TenantId,
}

/// Tasks and workspaces for the caller's tenant, with the call's bound set and resource
/// table.
pub(crate) struct CallView<'a> {
    pub(crate) services: &'a Services,
    pub(crate) tenant: &'a TenantId,
    pub(crate) capacity: &'a Capacity,
    /// The backends the calling plugin may start tasks on; `None` means any.
    pub(crate) backends: Option<&'a [String]>,
    pub(crate) bound: &'a mut BoundCall,
    pub(crate) table: &'a mut wasmtime::component::ResourceTable,
}

/// Who is calling: the tenant, and the user on a `user_auth` route.
pub(crate) struct IdentityView<'a> {
    pub(crate) tenant: &'a TenantId,
    pub(crate) user: Option<&'a Principal>,
}

/// The users service, for the caller: its tenant, its user (whose permissions the host
/// checks) and its address (for the login backoff).
pub(crate) struct UsersView<'a> {
    pub(crate) users: &'a Users,
    pub(crate) tenant: &'a TenantId,
    pub(crate) user: Option<&'a Principal>,
    pub(crate) client: Option<std::net::IpAddr>,
}

/// The board, for the calling user (whose tenant and permissions the host applies).
pub(crate) struct ProjectsView<'a> {
    pub(crate) projects: &'a Projects,
    pub(crate) queues: &'a BoardQueues,
    pub(crate) user: Option<&'a Principal>,
}

/// The calling WebSocket connection: its state, and what authenticating changes (the tenant
/// and user every later host call acts for).
pub(crate) struct WebSocketView<'a> {
    pub(crate) services: &'a Services,
    pub(crate) tenant: &'a mut TenantId,
    pub(crate) user: &'a mut Option<Principal>,
    pub(crate) bound: &'a mut BoundCall,
    pub(crate) socket: &'a mut Option<SocketHost>,
}

/// The Web UI API's commands, for the calling user (whose tenant and permissions the host
/// applies).
pub(crate) struct CommandsView<'a> {
    pub(crate) commands: &'a crate::commands::Commands,
    pub(crate) user: Option<&'a Principal>,
}

/// Working sessions, for the calling user (whose tenant and permissions the host applies).
pub(crate) struct WorkSessionsView<'a> {
    pub(crate) sessions: &'a WorkSessions,
    pub(crate) user: Option<&'a Principal>,
}

/// Webhooks, for the calling user (whose tenant and permissions the host applies).
pub(crate) struct WebhooksView<'a> {
    pub(crate) webhooks: &'a crate::webhooks::Webhooks,
    pub(crate) user: Option<&'a Principal>,
}

/// The node's facts.
pub(crate) struct NodeView<'a> {
    pub(crate) node: &'a NodeState,
    pub(crate) services: &'a Services,
}

struct HasPlugin;
impl HasData for HasPlugin {
    type Data<'a> = PluginView<'a>;
}
struct HasServices;
impl HasData for HasServices {
    type Data<'a> = ServicesView<'a>;
}
struct HasCall;
impl HasData for HasCall {
    type Data<'a> = CallView<'a>;
}
struct HasNode;
impl HasData for HasNode {
    type Data<'a> = NodeView<'a>;
}
struct HasResponses;
impl HasData for HasResponses {
    type Data<'a> = responses::ResponsesView<'a>;
}
struct HasIdentity;
impl HasData for HasIdentity {
    type Data<'a> = IdentityView<'a>;
}
struct HasUsers;
impl HasData for HasUsers {
    type Data<'a> = UsersView<'a>;
}
struct HasProjects;
impl HasData for HasProjects {
    type Data<'a> = ProjectsView<'a>;
}
struct HasWebSocket;
impl HasData for HasWebSocket {
    type Data<'a> = WebSocketView<'a>;
}
struct HasCommands;
impl HasData for HasCommands {
    type Data<'a> = CommandsView<'a>;
}
struct HasWorkSessions;
impl HasData for HasWorkSessions {
    type Data<'a> = WorkSessionsView<'a>;
}
struct HasWebhooks;
impl HasData for HasWebhooks {
    type Data<'a> = WebhooksView<'a>;
}

impl HandlerState {
    fn services_view(&mut self) -> ServicesView<'_> {
        ServicesView {
            services: &self.host.services,
            tenant: &self.tenant,
        }
    }

    fn call_view(&mut self) -> CallView<'_> {
        CallView {
            services: &self.host.services,
            tenant: &self.tenant,
            capacity: &self.host.capacity,
            backends: self.plugin.backends.as_deref(),
            bound: &mut self.host.bound,
            table: &mut self.table,
        }
    }

    fn responses_view(&mut self) -> responses::ResponsesView<'_> {
        responses::ResponsesView {
            services: &self.host.services,
            tenant: &self.tenant,
            handoff: &mut self.host.handoff,
            table: &mut self.table,
        }
    }

    fn identity_view(&mut self) -> IdentityView<'_> {
        IdentityView {
            tenant: &self.tenant,
            user: self.host.user.as_ref(),
        }
    }

    fn users_view(&mut self) -> UsersView<'_> {
        UsersView {
            users: &self.host.services.users,
            tenant: &self.tenant,
            user: self.host.user.as_ref(),
            client: self.host.client,
        }
    }

    fn projects_view(&mut self) -> ProjectsView<'_> {
        ProjectsView {
            projects: &self.host.services.projects,
            queues: &self.host.services.queues,
            user: self.host.user.as_ref(),
        }
    }

    fn websocket_view(&mut self) -> WebSocketView<'_> {
        WebSocketView {
            services: &self.host.services,
            tenant: &mut self.tenant,
            user: &mut self.host.user,
            bound: &mut self.host.bound,
            socket: &mut self.host.socket,
        }
    }

    fn commands_view(&mut self) -> CommandsView<'_> {
        CommandsView {
            commands: &self.host.services.commands,
            user: self.host.user.as_ref(),
        }
    }

    fn work_sessions_view(&mut self) -> WorkSessionsView<'_> {
        WorkSessionsView {
            sessions: &self.host.services.work_sessions,
            user: self.host.user.as_ref(),
        }
    }

    fn webhooks_view(&mut self) -> WebhooksView<'_> {
        WebhooksView {
            webhooks: &self.host.services.webhooks,
            user: self.host.user.as_ref(),
        }
    }

    fn node_view(&mut self) -> NodeView<'_> {
        NodeView {
            node: &self.host.node,
            services: &self.host.services,
        }
    }
}

use bindings::gantry::plugin as gp;

/// Link the gantry host interfaces of `world handler`; the grant check has already refused
/// any a plugin may not use.
pub(crate) fn add_to_handler_linker(linker: &mut Linker<HandlerState>) -> anyhow::Result<()> {
    crate::contract::types::add_to_linker::<_, HasPlugin>(linker, |s| s.plugin_view())?;
    gp::log::add_to_linker::<_, HasPlugin>(linker, |s| s.plugin_view())?;
    gp::config::add_to_linker::<_, HasPlugin>(linker, |s| s.plugin_view())?;
    gp::host_info::add_to_linker::<_, HasNode>(linker, |s| s.node_view())?;
    gp::metrics::add_to_linker::<_, HasNode>(linker, |s| s.node_view())?;
    gp::identity::add_to_linker::<_, HasIdentity>(linker, |s| s.identity_view())?;
    gp::users::add_to_linker::<_, HasUsers>(linker, |s| s.users_view())?;
    gp::projects::add_to_linker::<_, HasProjects>(linker, |s| s.projects_view())?;
    gp::workspaces::add_to_linker::<_, HasCall>(linker, |s| s.call_view())?;
    gp::tasks::add_to_linker::<_, HasCall>(linker, |s| s.call_view())?;
    gp::backends::add_to_linker::<_, HasServices>(linker, |s| s.services_view())?;
    gp::sessions::add_to_linker::<_, HasServices>(linker, |s| s.services_view())?;
    gp::responses::add_to_linker::<_, HasResponses>(linker, |s| s.responses_view())?;
    gp::websocket::add_to_linker::<_, HasWebSocket>(linker, |s| s.websocket_view())?;
    gp::commands::add_to_linker::<_, HasCommands>(linker, |s| s.commands_view())?;
    gp::work_sessions::add_to_linker::<_, HasWorkSessions>(linker, |s| s.work_sessions_view())?;
    gp::webhooks::add_to_linker::<_, HasWebhooks>(linker, |s| s.webhooks_view())?;
    Ok(())
}

/// Link what a backend adapter may import: its settings and the log.
pub(crate) fn add_to_adapter_linker(
    linker: &mut Linker<super::call::AdapterState>,
) -> anyhow::Result<()> {
    crate::contract::types::add_to_linker::<_, HasPlugin>(linker, |s| s.plugin_view())?;
    gp::log::add_to_linker::<_, HasPlugin>(linker, |s| s.plugin_view())?;
    gp::config::add_to_linker::<_, HasPlugin>(linker, |s| s.plugin_view())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The host interfaces on their views, without an engine: real services over a real store
    //! in a temporary directory.

    use super::bindings::gantry::plugin::{tasks as wit_tasks, workspaces as wit_ws};
    use super::*;
    use crate::backends::BackendPlugin;
    use crate::contract::{CommandSpec, PromptRequest, RequestError};
    use crate::tasks::{AdapterFailure, AdapterRun};
    use wasmtime::component::{Resource, ResourceTable};

    /// No backends at all: these tests run no task.
    #[derive(Debug)]
    struct NoBackends;

    #[async_trait::async_trait]
    impl Adapters for NoBackends {
        fn backend(&self, _name: &str) -> Option<Arc<BackendPlugin>> {
            None
        }

        async fn build_command(
            &self,
            backend: &str,
            _tenant: &TenantId,
            _request: &PromptRequest,
            _overrides: Vec<(String, String)>,
        ) -> Result<Result<CommandSpec, RequestError>, AdapterFailure> {
            Err(AdapterFailure {
                code: "plugin_trap",
                message: format!("no backend {backend}"),
            })
        }

        async fn start_run(
            &self,
            backend: &str,
            _tenant: &TenantId,
            _request: &PromptRequest,
        ) -> Result<Box<dyn AdapterRun>, AdapterFailure> {
            Err(AdapterFailure {
                code: "plugin_trap",
                message: format!("no backend {backend}"),
            })
        }
    }

    async fn services(dir: &std::path::Path) -> Services {
        let store: Arc<dyn crate::store::Store> =
            Arc::new(crate::store::Sqlite::open(&dir.join("gantry.db")).unwrap());
        let workspaces = Arc::new(Workspaces::open(dir, store.clone()).unwrap());
        let adapters: Arc<dyn Adapters> = Arc::new(NoBackends);
        let tasks = Supervisor::new(
            adapters.clone(),
            store.clone(),
            workspaces.clone(),
            dir,
            crate::config::TaskLimits::default(),
        )
        .await
        .unwrap();
        let events = EventBus::open(store.clone()).await.unwrap();
        let projects = Projects::new(store.clone(), workspaces.clone(), events.clone());
        let commands = crate::commands::Commands::new(
            store.clone(),
            tasks.clone(),
            projects.clone(),
            workspaces.clone(),
            crate::config::CommandsConfig::default(),
            events.clone(),
        )
        .await
        .unwrap();
        Services {
            commands,
            work_sessions: WorkSessions::new(
                store.clone(),
                projects.clone(),
                std::time::Duration::from_secs(3600),
            ),
            projects,
            queues: BoardQueues::start(store.clone(), tasks.clone(), 100, events.clone())
                .await
                .unwrap(),
            events,
            workspaces,
            tasks,
            backends: Availability::new(vec![], dir).unwrap(),
            adapters,
            sessions: Sessions::new(store.clone()),
            webhooks: crate::webhooks::Webhooks::new(
                store.clone(),
                &crate::config::WebhooksConfig::default(),
            ),
            users: Users::new(
                store,
                crate::users::tokens::SigningKeys::ephemeral().unwrap(),
                std::time::Duration::from_secs(60),
            ),
            metrics: Arc::default(),
        }
    }

    fn view<'a>(
        services: &'a Services,
        tenant: &'a TenantId,
        bound: &'a mut BoundCall,
        table: &'a mut ResourceTable,
    ) -> CallView<'a> {
        // One capacity for the test's views: log readers are counted in it.
        let capacity: &'static Capacity =
            Box::leak(Box::new(Capacity::new(crate::runtime::Shares::whole(8))));
        CallView {
            services,
            tenant,
            capacity,
            backends: None,
            bound,
            table,
        }
    }

    #[tokio::test]
    async fn workspaces_are_scoped_to_the_callers_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let services = services(dir.path()).await;
        let alice = TenantId::new("alice").unwrap();
        let bob = TenantId::new("bob").unwrap();
        let mut table = ResourceTable::new();
        let mut bound = BoundCall::new(services.clone(), alice.clone());
        let ws = {
            let mut v = view(&services, &alice, &mut bound, &mut table);
            wit_ws::Host::create(&mut v, "mine".into()).await.unwrap()
        };
        let mut bobs_bound = BoundCall::new(services.clone(), bob.clone());
        let mut v = view(&services, &bob, &mut bobs_bound, &mut table);
        let theirs = wit_ws::Host::get(&mut v, ws.id.clone()).await;
        assert!(matches!(theirs, Err(wit_ws::WorkspaceError::NotFound)));
        assert!(wit_ws::Host::list(&mut v).await.unwrap().is_empty());
        let mut v = view(&services, &alice, &mut bound, &mut table);
        // The path shown is a display path, never the host's layout.
        let shown = wit_ws::Host::display_path(&mut v, ws.id.clone())
            .await
            .unwrap();
        assert_eq!(shown, format!("/workspaces/{}", ws.id));
        let found = wit_ws::Host::locate(&mut v, shown).await.unwrap();
        assert_eq!((found.workspace_id, found.subdir), (ws.id, String::new()));
    }

    #[tokio::test]
    async fn a_bad_subscription_handle_is_a_trap_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let services = services(dir.path()).await;
        let alice = TenantId::new("alice").unwrap();
        let mut table = ResourceTable::new();
        let mut bound = BoundCall::new(services.clone(), alice.clone());
        let mut v = view(&services, &alice, &mut bound, &mut table);
        let forged: Resource<tasks::LogReader> = Resource::new_own(7);
        assert!(
            wit_tasks::HostSubscription::next(&mut v, forged, 10)
                .await
                .is_err(),
            "a handle the call does not hold traps"
        );
        // An unknown task is the guest's error to handle, not a trap.
        let unknown = wit_tasks::Host::subscribe(&mut v, "nope".into(), 1)
            .await
            .unwrap();
        assert!(matches!(unknown, Err(wit_tasks::TaskError::NotFound)));
    }
}
