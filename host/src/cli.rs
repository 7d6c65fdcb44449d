//! The command line: `gantry serve`, `gantry users …`, `gantry migrate` and the plugin
//! authors' `gantry plugin check|new|test|record`.

use crate::config::{Config, Overrides, TelemetryConfig};
use crate::manifest::{ComponentSource, PluginKind};
use crate::runtime::registry::{self, Linkers};
use crate::runtime::world::{self, Access};
use crate::runtime::{self, Plugins};
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    name = "gantry",
    version,
    about = "A gateway for coding-agent CLIs, hosting WebAssembly plugins."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the plugins of the plugin directory over HTTP.
    Serve(ServeArgs),
    /// Plugin author tools.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Users of the /api surface, in the data directory of the config (as `serve` sees it).
    Users(UsersArgs),
    /// Bring the store's schema up to this gantry's (`serve` does too, at start): for a
    /// PostgreSQL store shared by several nodes, run it once before upgrading them.
    Migrate(MigrateArgs),
}

#[derive(clap::Args, Debug)]
struct MigrateArgs {
    /// Data directory (as for `serve`; where a SQLite store is).
    #[arg(long, env = "GANTRY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// A TOML config file over the embedded defaults (as for `serve`); `GANTRY_STORE` names a
    /// PostgreSQL store.
    #[arg(long, env = "GANTRY_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct UsersArgs {
    /// Data directory (as for `serve`).
    #[arg(long, env = "GANTRY_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// A TOML config file over the embedded defaults (as for `serve`).
    #[arg(long, env = "GANTRY_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: UsersCommand,
}

#[derive(Subcommand, Debug)]
enum UsersCommand {
    /// Add a user; its password is read from standard input (one line) when that is not a
    /// terminal, else prompted for without echo.
    Add {
        /// The tenant the user acts as.
        #[arg(long)]
        tenant: String,
        /// Its login name, unique on the node.
        #[arg(long)]
        username: String,
        /// Its email.
        #[arg(long)]
        email: Option<String>,
        /// May manage its tenant's users (besides read, write and execute).
        #[arg(long)]
        admin: bool,
        /// Its permissions instead of read, write and execute (repeat, or comma-separate).
        #[arg(long = "permission", value_delimiter = ',', conflicts_with = "admin")]
        permissions: Vec<String>,
    },
    /// List every user on the node.
    List,
    /// Disable a user: it can no longer log in, and its tokens are refused.
    Disable {
        /// The user's name.
        username: String,
    },
    /// Set a user's password (read as for `add`); its tokens issued before are refused.
    Passwd {
        /// The user's name.
        username: String,
    },
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address to bind (port 0 picks a free port).
    #[arg(long, env = "GANTRY_ADDR")]
    addr: Option<String>,
    /// Data directory (compiled-component cache, state).
    #[arg(long, env = "GANTRY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Plugin directory: one manifest (*.toml) per plugin.
    #[arg(long, env = "GANTRY_PLUGINS")]
    plugins: Option<PathBuf>,
    /// A TOML config file over the embedded defaults.
    #[arg(long, env = "GANTRY_CONFIG")]
    config: Option<PathBuf>,
    /// Reload the plugin directory whenever a manifest or a component it names changes (as
    /// SIGHUP always does): a version that fails its checks is refused and the one serving
    /// keeps serving.
    #[arg(long)]
    watch: bool,
}

#[derive(Subcommand, Debug)]
enum PluginCommand {
    /// Say whether a component fits the handler or backend world; list its imports and exports.
    Check {
        /// A `.wasm` component, or `bundled:NAME` for one built into gantry.
        component: String,
    },
    /// Make a new plugin project in DIR/NAME: the component's source, its manifest in
    /// `plugin/`, a test, and the SDK and WIT it builds with.
    New {
        /// What the plugin is.
        #[arg(value_enum)]
        kind: NewKind,
        /// Its name: lowercase letters, digits, '-' and '_', starting with a letter.
        name: String,
        /// The directory the project is made in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The language of the project.
        #[arg(long, value_enum, default_value = "rust")]
        lang: crate::authoring::scaffold::Lang,
    },
    /// Test a plugin with no server and no network: replay a backend's recorded CLI runs
    /// (`tests/*.transcript`) through its component, or send a handler's requests
    /// (`tests/*.requests`) to it on a node assembled in memory, and compare what it makes of
    /// each with `tests/*.expected`: exit 1 with a diff on a mismatch.
    Test {
        /// A project directory (its manifest in `plugin/`, its tests in `tests/`) or a
        /// manifest file.
        #[arg(default_value = ".")]
        path: PathBuf,
        /// The directory of the tests (default: the project's `tests/`).
        #[arg(long)]
        tests: Option<PathBuf>,
        /// Write what the component makes of each test as its expected file.
        #[arg(long)]
        update: bool,
    },
    /// Run a CLI once (argv, no shell) and print its output as a transcript for `plugin test`.
    Record {
        /// The prompt the transcript says the CLI was given (its request), for the replay's
        /// `build-command`.
        #[arg(long, default_value = crate::authoring::transcript::DEFAULT_PROMPT)]
        prompt: String,
        /// Write the transcript here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

/// The kinds of plugin `plugin new` makes.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum NewKind {
    /// A backend adapter: a CLI's argv and output lines.
    Backend,
    /// A handler: HTTP routes.
    Handler,
}

/// Run the command line; the exit code says how it went.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args).map(|()| ExitCode::SUCCESS),
        Command::Migrate(args) => migrate(args).map(|()| ExitCode::SUCCESS),
        Command::Plugin(PluginCommand::Check { component }) => check(&component),
        Command::Plugin(PluginCommand::New {
            kind,
            name,
            dir,
            lang,
        }) => plugin_new(kind, &name, &dir, lang).map(|()| ExitCode::SUCCESS),
        Command::Plugin(PluginCommand::Test {
            path,
            tests,
            update,
        }) => plugin_test(&path, tests.as_deref(), update),
        Command::Plugin(PluginCommand::Record {
            prompt,
            output,
            command,
        }) => plugin_record(&prompt, output.as_deref(), &command).map(|()| ExitCode::SUCCESS),
        Command::Users(args) => users(args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", registry::one_line(&e));
            // 1 is `plugin check`'s "fits no world"; anything that could not run is 2.
            ExitCode::from(2)
        }
    }
}

/// The log on stderr, filtered by `filter` (or `RUST_LOG`); and, when `telemetry` names an
/// endpoint, the same spans exported over OTLP/HTTP, sent from `runtime`. With no endpoint no
/// exporter is built. The returned guard flushes the exporter when dropped.
fn init_logging(
    filter: &str,
    telemetry: &TelemetryConfig,
    runtime: &tokio::runtime::Handle,
) -> Result<Telemetry> {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let traces_url = telemetry.traces_url();
    let provider = match &traces_url {
        Some(url) => Some(otlp_provider(url, &telemetry.service_name, runtime)?),
        None => None,
    };
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("gantry")));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init();
    if let Some(url) = traces_url {
        crate::http::SPANS_EXPORTED.store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(endpoint = %url, service = %telemetry.service_name, "exporting spans over OTLP/HTTP");
    }
    Ok(Telemetry(provider))
}

/// How long one export may take, and how long exit waits for the last spans to go.
const OTLP_TIMEOUT: Duration = Duration::from_secs(5);

/// A tracer provider that batches spans to `url` as OTLP protobuf.
fn otlp_provider(
    url: &str,
    service_name: &str,
    runtime: &tokio::runtime::Handle,
) -> Result<opentelemetry_sdk::trace::SdkTracerProvider> {
    use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
    let _entered = runtime.enter();
    let client = OnRuntime {
        runtime: runtime.clone(),
        client: Arc::new(
            opentelemetry_http::hyper::HyperClient::with_default_connector(OTLP_TIMEOUT, None),
        ),
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(OTLP_TIMEOUT)
        .with_http_client(client)
        .build()
        .context("building the OTLP span exporter")?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name.to_string())
        .build();
    Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// The exporter's HTTP client: hyper, run on gantry's runtime. The SDK's batch processor
/// exports from a thread of its own, outside any runtime, and hyper needs one.
#[derive(Debug)]
struct OnRuntime {
    runtime: tokio::runtime::Handle,
    client: Arc<opentelemetry_http::hyper::HyperClient>,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OnRuntime {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<bytes::Bytes>,
    ) -> Result<opentelemetry_http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let client = self.client.clone();
        self.runtime
            .spawn(async move { client.send_bytes(request).await })
            .await?
    }
}

/// The span exporter, if any: flushed and shut down on drop, which must come before the
/// runtime it sends on is dropped.
struct Telemetry(Option<opentelemetry_sdk::trace::SdkTracerProvider>);

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take()
            && let Err(e) = provider.shutdown_with_timeout(OTLP_TIMEOUT)
        {
            tracing::warn!("flushing spans to the OTLP endpoint at exit: {e}");
        }
    }
}

/// `gantry migrate`: bring the configured store's schema up to this gantry's, and say so.
fn migrate(args: MigrateArgs) -> Result<()> {
    let overrides = Overrides {
        data_dir: args.data_dir,
        ..Overrides::default()
    }
    .with_store_env();
    let config = Config::load(args.config.as_deref(), &overrides)?;
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    tokio.block_on(async {
        match &config.store {
            crate::config::StoreLocation::Sqlite => {
                std::fs::create_dir_all(&config.data_dir).with_context(|| {
                    format!("creating data directory {}", config.data_dir.display())
                })?;
                let path = config.data_dir.join("gantry.db");
                crate::store::Sqlite::open(&path)?;
                println!("sqlite {}: schema up to date", path.display());
            }
            crate::config::StoreLocation::Postgres(url) => {
                let pg = crate::store::Postgres::connect_only(url, 2).await?;
                let done = pg.migrate().await?;
                if done.from == done.to {
                    println!(
                        "postgres {}: schema version {}, up to date",
                        pg.target(),
                        done.to
                    );
                } else {
                    println!(
                        "postgres {}: schema version {} -> {}",
                        pg.target(),
                        done.from,
                        done.to
                    );
                }
            }
        }
        Ok(())
    })
}

fn serve(args: ServeArgs) -> Result<()> {
    let overrides = Overrides {
        addr: args.addr,
        data_dir: args.data_dir,
        plugins: args.plugins,
        // Secrets only from the environment: a flag would show in every process listing.
        api_keys: std::env::var("GANTRY_API_KEYS").ok(),
        ..Overrides::default()
    }
    .with_store_env();
    let config = Config::load(args.config.as_deref(), &overrides)?
        .with_otlp_env(std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok().as_deref())?;
    let args_config = args.config.clone();
    // Before logging: the span exporter, when there is one, sends on this runtime.
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // Declared after `tokio`, so dropped (flushing spans) while the runtime still runs.
    let _telemetry = init_logging(&config.log, &config.telemetry, tokio.handle())?;
    let keys = config.api_keys()?;
    keys.check_exposure(config.addr)?;
    if keys.is_empty() {
        tracing::info!("no API keys configured: serving tenant `local` on loopback only");
    }
    let mut operators = std::collections::HashSet::new();
    for name in &config.operators {
        let tenant = crate::tenants::TenantId::new(name)?;
        if !keys.is_empty() && !keys.has_tenant(&tenant) {
            tracing::warn!(operator = %tenant, "an operator tenant has no API key");
        }
        operators.insert(tenant);
    }
    // No task (nor anything else of gantry's uid) may read this process's memory or
    // environment through /proc or ptrace.
    // SAFETY: prctl with constant arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    tokio.block_on(async {
        let started = std::time::Instant::now();
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
        let plugins = Plugins::start(&config).await?;
        let loaded = plugins.plugins().len();
        // Bound before the isolation probe, which proves that a task cannot reach it.
        let (listener, local) = crate::http::bind(config.addr).await?;
        let probe = crate::node::Probe {
            port: local.port(),
            secret_files: args_config
                .iter()
                .chain(config.api_keys_file.iter())
                .cloned()
                .collect(),
            tenants: keys.tenant_count(),
        };
        let crate::node::Node {
            live,
            services,
            runtime,
        } = crate::node::assemble(&config, plugins, &probe).await?;
        let serving = Arc::new(crate::http::Serving::new(runtime)?);
        let reloader =
            crate::reload::Reloader::new(config.clone(), live, serving.clone(), services);
        tokio::spawn(reloader.run(args.watch));
        tracing::info!(
            plugins = loaded,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "plugins loaded"
        );
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "gantry listening on http://{local}")?;
            out.flush()?;
        }
        let gate = Arc::new(crate::http::Gate {
            keys,
            limits: crate::http::limits::RateLimiter::new(config.http.clone()),
            failed_auth: Default::default(),
            operators,
            connections: config.http.connections,
            websocket: config.websocket.clone(),
            sockets: Default::default(),
        });
        crate::http::serve(
            listener,
            serving,
            gate,
            shutdown_signal(),
            config.shutdown_grace(),
        )
        .await
    })
}

/// `gantry users …`: on the store of the config's data directory. The signing keys are not
/// read: these commands issue no token.
fn users(args: UsersArgs) -> Result<()> {
    use crate::users::{NewUser, Permission, Users};
    let overrides = Overrides {
        data_dir: args.data_dir,
        ..Overrides::default()
    }
    .with_store_env();
    let config = Config::load(args.config.as_deref(), &overrides)?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    tokio.block_on(async {
        let (store, _) = crate::node::open_store(&config).await?;
        let users = Users::new(
            store,
            crate::users::tokens::SigningKeys::ephemeral()?,
            Duration::from_secs(config.users.token_ttl_secs),
        );
        let mut out = std::io::stdout().lock();
        match args.command {
            UsersCommand::Add {
                tenant,
                username,
                email,
                admin,
                permissions,
            } => {
                let tenant = crate::tenants::TenantId::new(&tenant)?;
                let permissions = if admin {
                    Permission::ALL.to_vec()
                } else if permissions.is_empty() {
                    Permission::default_set()
                } else {
                    permissions
                        .iter()
                        .map(|p| {
                            Permission::parse(p.trim()).with_context(|| {
                                format!("unknown permission {p:?}: read, write, execute or admin")
                            })
                        })
                        .collect::<Result<_>>()?
                };
                let password = read_password(&format!("password for {username}: "))?;
                let user = users
                    .create(NewUser {
                        tenant,
                        username,
                        email,
                        password,
                        permissions,
                    })
                    .await?;
                writeln!(
                    out,
                    "added user {} ({}) to tenant {}",
                    user.username, user.id, user.tenant
                )?;
            }
            UsersCommand::List => {
                writeln!(
                    out,
                    "{:<24} {:<16} {:<28} {:<8} ID",
                    "USERNAME", "TENANT", "PERMISSIONS", "STATE"
                )?;
                for user in users.list_all().await? {
                    let permissions: Vec<&str> =
                        user.permissions.iter().map(|p| p.as_str()).collect();
                    let state = if user.disabled { "disabled" } else { "enabled" };
                    writeln!(
                        out,
                        "{:<24} {:<16} {:<28} {:<8} {}",
                        user.username,
                        user.tenant.as_str(),
                        permissions.join(","),
                        state,
                        user.id
                    )?;
                }
            }
            UsersCommand::Disable { username } => {
                let user = users.by_name(&username).await?;
                users.disable(&user.tenant, &user.id).await?;
                writeln!(out, "disabled user {}", user.username)?;
            }
            UsersCommand::Passwd { username } => {
                let user = users.by_name(&username).await?;
                let password = read_password(&format!("new password for {}: ", user.username))?;
                users
                    .set_password(&user.tenant, &user.id, &password)
                    .await?;
                writeln!(
                    out,
                    "set the password of {}; its tokens issued before are refused",
                    user.username
                )?;
            }
        }
        Ok(())
    })
}

/// A password: one line of standard input when it is not a terminal (scripts), else typed at
/// a prompt without echo, twice. Refused when short; `users` checks it again.
fn read_password(prompt: &str) -> Result<String> {
    use std::io::IsTerminal;
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(prompt).context("reading the password")?;
        let again = rpassword::prompt_password("again: ").context("reading the password")?;
        if first != again {
            anyhow::bail!("the two passwords differ");
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        line.trim_end_matches(['\n', '\r']).to_string()
    };
    crate::users::check_password(&password).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(password)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

/// `gantry plugin check`: exit 0 when the component fits a world, 1 when it fits none.
fn check(component: &str) -> Result<ExitCode> {
    let source = match component.strip_prefix("bundled:") {
        Some(name) => ComponentSource::Bundled(name.to_string()),
        None => ComponentSource::File(PathBuf::from(component)),
    };
    let wasm = registry::component_bytes(&source)?;
    let defaults = Config::from_layers(None, &Overrides::default())?;
    let engine = runtime::engine(&defaults.runtime)?;
    let compiled = wasmtime::component::Component::new(&engine, &wasm)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("{component} is not a WebAssembly component gantry can load"))?;
    let (imports, exports) = registry::interface_names(&engine, &compiled);
    let linkers = Linkers::new(&engine)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "component: {component} ({} bytes)", wasm.len())?;
    writeln!(out, "exports:")?;
    for e in &exports {
        writeln!(out, "  {e}")?;
    }
    writeln!(out, "imports:")?;
    for i in &imports {
        let handler = world::access(PluginKind::Handler, i);
        let backend = world::access(PluginKind::Backend, i);
        let note = match (handler, backend) {
            (Access::Ambient, Access::Ambient) => "ambient".to_string(),
            (Access::Ambient, _) => "ambient for handlers; not given to backends".to_string(),
            (Access::Grantable, backend) => {
                let (iface, _) = world::split_version(i);
                let backends = match backend {
                    Access::Grantable => "backends too",
                    _ => "not given to backends",
                };
                format!("needs the grant \"{iface}\" ({backends})")
            }
            (Access::Unavailable, _) => "not provided by gantry".to_string(),
        };
        writeln!(out, "  {i:<44} {note}")?;
    }
    let mut fits_any = false;
    for kind in [PluginKind::Handler, PluginKind::Backend] {
        let grants: Vec<String> = imports
            .iter()
            .filter(|i| world::access(kind, i) == Access::Grantable)
            .map(|i| world::split_version(i).0.to_string())
            .collect();
        let verdict = world::check(
            kind,
            imports.iter().map(String::as_str),
            exports.iter().map(String::as_str),
            &grants,
        )
        .map_err(|m| m.to_string())
        .and_then(|()| {
            linkers
                .link_check(kind, &compiled)
                .map_err(|e| format!("fails to link: {}", registry::one_line(&e)))
        });
        fits_any |= verdict.is_ok();
        match verdict {
            Ok(()) if grants.is_empty() => writeln!(out, "world {}: fits", kind.as_str())?,
            Ok(()) => writeln!(
                out,
                "world {}: fits, with imports = {:?} in its manifest",
                kind.as_str(),
                grants
            )?,
            Err(why) => writeln!(out, "world {}: does not fit: {why}", kind.as_str())?,
        }
    }
    Ok(if fits_any {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `gantry plugin new`.
fn plugin_new(
    kind: NewKind,
    name: &str,
    parent: &std::path::Path,
    lang: crate::authoring::scaffold::Lang,
) -> Result<()> {
    use crate::authoring::scaffold;
    let kind = match kind {
        NewKind::Backend => PluginKind::Backend,
        NewKind::Handler => PluginKind::Handler,
    };
    let project = scaffold::new(kind, name, parent, lang)?;
    let dir = project.dir.display();
    println!("made {} plugin {name} in {dir}", kind.as_str());
    println!("  cd {dir} && {}", lang.build_command());
    match kind {
        PluginKind::Backend => println!("  gantry plugin test       # replays tests/*.transcript"),
        PluginKind::Handler => println!("  gantry plugin test       # sends tests/*.requests"),
    }
    Ok(())
}

/// `gantry plugin test`: exit 0 when every test gives what its expected file says, 1 when
/// one does not (with a diff), 2 when the tests could not run.
fn plugin_test(
    path: &std::path::Path,
    tests: Option<&std::path::Path>,
    update: bool,
) -> Result<ExitCode> {
    let passed = crate::authoring::suite::run(path, tests, update)?;
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `gantry plugin record`.
fn plugin_record(prompt: &str, output: Option<&std::path::Path>, argv: &[String]) -> Result<()> {
    let defaults = Config::from_layers(None, &Overrides::default())?;
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let transcript = tokio.block_on(crate::authoring::record::record(
        argv,
        crate::contract::plain_request(prompt),
        defaults.tasks.max_line_bytes,
    ))?;
    let text = transcript.render();
    match output {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => std::io::stdout().lock().write_all(text.as_bytes())?,
    }
    Ok(())
}
