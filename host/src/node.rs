//! A node's parts wired together: its store, the services the host interfaces reach (the
//! supervisor and its sandbox among them), the plugins, and the runtime over them. `gantry
//! serve` serves one over HTTP; `gantry plugin test` calls a handler of one with no socket.

use crate::config::Config;
use crate::runtime::{LivePlugins, Plugins, Runtime, Services};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What the task sandbox's probe at start needs to know.
#[derive(Debug, Clone)]
pub struct Probe {
    /// A loopback port of gantry's that no task may reach (the probe tries).
    pub port: u16,
    /// Files of gantry's that no task may read: the config, the API keys.
    pub secret_files: Vec<PathBuf>,
    /// How many tenants the node serves: with more than one, weak isolation is refused
    /// unless the config accepts it.
    pub tenants: usize,
}

/// One node, ready to call: the plugins serving now, the services, and the runtime.
#[derive(Debug)]
pub struct Node {
    /// The plugins serving now, which a reload replaces.
    pub live: Arc<LivePlugins>,
    /// The services the host interfaces reach.
    pub services: Services,
    /// The runtime over the plugins loaded at start.
    pub runtime: Arc<Runtime>,
}

/// Open `config`'s store and wire a node over it and `plugins`.
pub async fn assemble(config: &Config, plugins: Plugins, probe: &Probe) -> Result<Node> {
    let plugins = Arc::new(plugins);
    // What a reload swaps: the supervisor reaches the backends serving now through it.
    let live = Arc::new(crate::runtime::LivePlugins::new(plugins.clone()));
    let (store, gauges) = open_store(config).await?;
    let metrics = Arc::new(crate::metrics::Metrics::default());
    // The machine's CPU use is measured from here on (`host-info.node-load`).
    crate::metrics::prime_machine_load();
    metrics.watch_store(gauges);
    let workspaces = Arc::new(
        crate::workspaces::Workspaces::open(&config.data_dir, store.clone())?
            .with_workdirs(&config.workdirs),
    );
    let sessions = crate::sessions::Sessions::new(store.clone());
    let signing_keys = crate::users::tokens::SigningKeys::load_or_create(
        &config.users.signing_key_path(&config.data_dir),
    )?;
    let users = crate::users::Users::new(
        store.clone(),
        signing_keys,
        Duration::from_secs(config.users.token_ttl_secs),
    );
    let launcher = crate::tasks::sandbox::launcher_for(
        &std::env::current_exe().context("finding gantry's own binary")?,
    );
    tracing::info!(launcher = %launcher.display(), "task processes start through");
    let isolation = crate::tasks::isolation::Isolation::detect(
        &config.sandbox,
        launcher,
        &config.data_dir,
        &probe.secret_files,
        probe.port,
    )
    .await;
    if isolation.is_full() {
        tracing::info!(level = isolation.level(), "task isolation");
    } else {
        tracing::warn!(level = isolation.level(), "task isolation");
        if probe.tenants > 1 {
            if config.isolation != crate::tasks::isolation::IsolationMode::Weak {
                anyhow::bail!(
                    "refusing to serve {} tenants with task isolation {}; fix what is \
                     missing, or set isolation = \"weak\" in the config to accept it",
                    probe.tenants,
                    isolation.level()
                );
            }
            tracing::warn!("serving several tenants with weak isolation (isolation = \"weak\")");
        }
    }
    let adapters: Arc<dyn crate::tasks::Adapters> = live.clone();
    let events = crate::events::EventBus::open(store.clone()).await?;
    events.keep_for(&config.events, std::time::Duration::from_secs(60));
    let projects =
        crate::projects::Projects::new(store.clone(), workspaces.clone(), events.clone());
    let tasks = crate::tasks::Supervisor::for_node(
        adapters.clone(),
        store.clone(),
        workspaces.clone(),
        &config.data_dir,
        config.tasks.clone(),
        Some(config.node_id.as_str()).filter(|id| !id.is_empty()),
    )
    .await?
    .with_isolation(isolation)
    .with_egress(config.egress.clone())
    .with_storage(config.storage.clone())
    .with_metrics(metrics.clone());
    let commands = crate::commands::Commands::new(
        store.clone(),
        tasks.clone(),
        projects.clone(),
        workspaces.clone(),
        config.commands.clone(),
        events.clone(),
    )
    .await?;
    let store_for_sessions = store.clone();
    // Pending deliveries (a previous run's too) are sent from here on.
    let webhooks = crate::webhooks::Webhooks::new(store.clone(), &config.webhooks);
    // One node of a shared store sends them (another takes over when it dies).
    webhooks.start_as(
        config.webhooks.clone(),
        Some(Arc::new(events.clone())),
        crate::webhooks::NodeRole::new(
            store.clone(),
            "webhooks",
            tasks.node_id(),
            Duration::from_millis(config.tasks.node_lease_ms.max(300)),
        ),
    );
    let queues = crate::tasks::queue::BoardQueues::start(
        store,
        tasks.clone(),
        config.tasks.max_queued_per_tenant,
        events.clone(),
    )
    .await?;
    let backends = crate::backends::Availability::new(plugins.backends(), &config.data_dir)?;
    {
        // Probe in the background: a slow binary must not hold up serving.
        let backends = backends.clone();
        tokio::spawn(async move {
            backends.first_round().await;
        });
    }
    let work_sessions = crate::work_sessions::WorkSessions::new(
        store_for_sessions,
        projects.clone(),
        Duration::from_secs(config.users.session_ttl_secs),
    );
    commands.keep_history_in(work_sessions.clone());
    let services = crate::runtime::Services {
        commands,
        work_sessions,
        projects,
        queues,
        events,
        workspaces,
        tasks,
        backends,
        adapters,
        sessions,
        users,
        metrics,
        webhooks,
    };
    let runtime = Arc::new(Runtime::new(plugins, services.clone()));
    Ok(Node {
        live,
        services,
        runtime,
    })
}

/// The store the config names, and its gauges for `/metrics`: SQLite in the data directory, or
/// a PostgreSQL database (migrated to this gantry's schema first).
pub async fn open_store(
    config: &Config,
) -> Result<(
    Arc<dyn crate::store::Store>,
    Arc<dyn crate::metrics::StoreGauges>,
)> {
    match &config.store {
        crate::config::StoreLocation::Sqlite => {
            let sqlite = Arc::new(crate::store::Sqlite::open(
                &config.data_dir.join("gantry.db"),
            )?);
            Ok((sqlite.clone(), sqlite))
        }
        crate::config::StoreLocation::Postgres(url) => {
            let pg =
                Arc::new(crate::store::Postgres::connect(url, config.store_max_connections).await?);
            tracing::info!(store = %pg.target(), "rows are kept in PostgreSQL");
            Ok((pg.clone(), pg))
        }
    }
}
