//! Reloading the plugin directory while serving: on SIGHUP, and with `gantry serve --watch`
//! whenever a manifest or a component it names changes.
//!
//! A reload reads every manifest and loads every component beside the plugins serving now
//! (over the same engine, instance slots and compiled-component cache, so an unchanged
//! component is not compiled again), checks their routes, and only then swaps the new version
//! in for handlers ([`Serving`]), the supervisor's adapters ([`LivePlugins`]) and the
//! backends' availability. A version that fails any check is refused with its error in the
//! log, and the one serving keeps serving. Requests, streams and runs in flight finish on the
//! version they started on.
//!
//! `--watch` polls (every [`WATCH_EVERY`]) rather than asking the kernel for file events: it
//! works the same on a shared or network volume, where inotify sees no other node's writes,
//! and a plugin directory is a handful of files. A change is acted on once two polls in a row
//! agree, so that a component still being written (`cargo build` writes it in pieces) is not
//! loaded half-way.

use crate::backends::Availability;
use crate::config::Config;
use crate::http::Serving;
use crate::manifest::{ComponentSource, Manifest};
use crate::runtime::{LivePlugins, Runtime, Services, registry};
use anyhow::Result;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How often `--watch` looks at the plugin directory.
pub const WATCH_EVERY: Duration = Duration::from_millis(100);

/// What a reload swaps, and what it reads the plugin directory with.
#[derive(Debug)]
pub struct Reloader {
    config: Config,
    live: Arc<LivePlugins>,
    serving: Arc<Serving>,
    services: Services,
    backends: Availability,
}

impl Reloader {
    /// Reload `config`'s plugin directory into `live` and `serving`, whose handlers reach
    /// `services`.
    pub fn new(
        config: Config,
        live: Arc<LivePlugins>,
        serving: Arc<Serving>,
        services: Services,
    ) -> Reloader {
        let backends = services.backends.clone();
        Reloader {
            config,
            live,
            serving,
            services,
            backends,
        }
    }

    /// Load the plugin directory as it is now and serve it; on any error the plugins serving
    /// now keep serving, and the error says which plugin and why.
    pub async fn reload(&self) -> Result<usize> {
        let started = Instant::now();
        let manifests = crate::runtime::plugin_manifests(&self.config)?;
        let next = Arc::new(self.live.current().reload(manifests).await?);
        let runtime = Arc::new(Runtime::new(next.clone(), self.services.clone()));
        // The routes are checked before anything is swapped.
        self.serving.replace(runtime)?;
        self.live.replace(next.clone());
        self.backends.replace(next.backends());
        let loaded = next.plugins().len();
        tracing::info!(
            plugins = loaded,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "plugins reloaded"
        );
        Ok(loaded)
    }

    /// Reload, logging the outcome.
    async fn reload_logged(&self, why: &str) {
        tracing::info!("reloading the plugins: {why}");
        if let Err(e) = self.reload().await {
            tracing::error!(
                "reload refused, the plugins loaded before keep serving: {}",
                registry::one_line(&e)
            );
        }
    }

    /// Reload on every SIGHUP, and with `watch` whenever the plugin directory changes, for as
    /// long as the process serves.
    pub async fn run(self, watch: bool) {
        let mut hangups =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!("no reload on SIGHUP: {e}");
                    None
                }
            };
        let mut seen = watch.then(|| self.fingerprint());
        let mut tick = tokio::time::interval(WATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A change seen at the last poll, acted on once the next poll sees the same.
        let mut pending: Option<Fingerprint> = None;
        loop {
            tokio::select! {
                Some(()) = async { match hangups.as_mut() { Some(h) => h.recv().await, None => None } } => {
                    self.reload_logged("SIGHUP").await;
                    if let Some(seen) = seen.as_mut() {
                        *seen = self.fingerprint();
                    }
                }
                _ = tick.tick(), if seen.is_some() => {
                    let now = self.fingerprint();
                    if Some(&now) == seen.as_ref() {
                        pending = None;
                        continue;
                    }
                    if pending.as_ref() != Some(&now) {
                        pending = Some(now);
                        continue;
                    }
                    pending = None;
                    seen = Some(now);
                    self.reload_logged("the plugin directory changed").await;
                }
                else => return,
            }
        }
    }

    /// What the plugin directory holds now: each manifest and each component file it names,
    /// with their sizes and modification times.
    fn fingerprint(&self) -> Fingerprint {
        let dir = &self.config.plugins;
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                    .collect()
            })
            .unwrap_or_default();
        let rt = &self.config.runtime;
        let components: Vec<PathBuf> = files
            .iter()
            .filter_map(|m| Manifest::load(m, &rt.plugin_defaults, rt.max_memory_mb).ok())
            .filter_map(|m| match m.component {
                ComponentSource::File(path) => Some(path),
                ComponentSource::Bundled(_) => None,
            })
            .collect();
        files.extend(components);
        files.sort();
        files
            .into_iter()
            .map(|path| {
                let meta = std::fs::metadata(&path).ok();
                let stamp = meta.map(|m| (m.len(), m.modified().ok()));
                (path, stamp)
            })
            .collect()
    }
}

/// Files and their (size, modification time), or `None` when missing.
type Fingerprint = Vec<(PathBuf, Option<(u64, Option<SystemTime>)>)>;
