//! Loading plugins: read each manifest, compile (or load from the cache) its component, check
//! it against its world and its grants, and pre-instantiate it.

use super::cache::ComponentCache;
use super::call::AdapterState;
use super::host::HandlerState;
use super::host::log_shaping_bindings::LogShapingPre;
use super::host::websocket_bindings::WebsocketServingPre;
use super::world;
use crate::config::PluginLimits;
use crate::manifest::{ComponentSource, Manifest, PluginKind};
use anyhow::{Context, Result, anyhow, bail};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

/// Host bindings of `world backend`; documented in `wit/`.
#[allow(missing_docs)]
pub(crate) mod backend_bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "gantry:plugin/backend",
        exports: { default: async },
        with: {
            "gantry:plugin/types": crate::contract::types,
            "gantry:plugin/config": crate::runtime::host::bindings::gantry::plugin::config,
        },
    });
}

use crate::backends::BackendPlugin;
use crate::contract::BackendInfo;

/// First-party components and manifests compiled into the binary.
pub mod bundled {
    include!(concat!(env!("OUT_DIR"), "/bundled.rs"));

    /// The bytes of a bundled component.
    pub fn component(name: &str) -> Option<&'static [u8]> {
        COMPONENTS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, bytes)| *bytes)
    }
}

/// What every call of one plugin shares.
#[derive(Debug)]
pub struct PluginContext {
    /// The plugin's name.
    pub name: Arc<str>,
    /// Its per-call limits.
    pub limits: PluginLimits,
    /// Its settings, for `gantry:plugin/config`.
    pub settings: BTreeMap<String, String>,
    /// Whether it was granted `wasi:sockets`.
    pub network: bool,
    /// The backends a handler may start tasks on; `None` means any.
    pub backends: Option<Vec<String>>,
}

/// A loaded plugin, ready to instantiate.
pub struct Plugin {
    /// Its validated manifest.
    pub manifest: Manifest,
    /// Shared per-call context.
    pub context: Arc<PluginContext>,
    pub(crate) instance: PluginInstance,
}

impl Plugin {
    /// What the layers below the runtime know of it, if it is a backend.
    pub fn backend_plugin(&self) -> Option<BackendPlugin> {
        let PluginInstance::Backend { info, .. } = &self.instance else {
            return None;
        };
        let m = &self.manifest;
        Some(BackendPlugin {
            name: m.name.clone(),
            info: info.clone(),
            binary: m.binary.clone().unwrap_or_default(),
            passed_env: m.env.clone(),
            model_upstream: m
                .settings
                .get("base_url")
                .or(m.model_upstream.as_ref())
                .cloned(),
            read_only: m.read_only.clone(),
            egress: m.egress.clone(),
        })
    }
}

impl PluginContext {
    /// A context with `settings` and default limits, for tests of host capabilities.
    #[cfg(test)]
    pub(crate) fn for_tests<'a>(
        name: &str,
        settings: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> PluginContext {
        PluginContext {
            name: Arc::from(name),
            limits: PluginLimits {
                memory_mb: 64,
                cpu_ms: 1000,
                timeout_ms: 0,
            },
            settings: settings
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            network: false,
            backends: None,
        }
    }
}

impl std::fmt::Debug for Linkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Linkers").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.manifest.name)
            .field("kind", &self.manifest.kind)
            .finish_non_exhaustive()
    }
}

pub(crate) enum PluginInstance {
    Handler {
        proxy: ProxyPre<HandlerState>,
        /// Its `log-shaper` export, when it has one (`world log-handler`).
        shaper: Option<LogShapingPre<HandlerState>>,
        /// Its `websocket-handler` export, when it has one (`world websocket-serving`):
        /// required by a manifest with a `websocket = true` route.
        socket: Option<WebsocketServingPre<HandlerState>>,
    },
    Backend {
        pre: backend_bindings::BackendPre<AdapterState>,
        info: BackendInfo,
    },
}

/// The linkers of both worlds, built once.
pub struct Linkers {
    handler: Linker<HandlerState>,
    backend: Linker<AdapterState>,
}

impl Linkers {
    /// Link everything gantry provides to each world.
    pub fn new(engine: &Engine) -> Result<Linkers> {
        let mut handler = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut handler)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut handler)?;
        super::host::add_to_handler_linker(&mut handler)?;
        let mut backend = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut backend)?;
        super::host::add_to_adapter_linker(&mut backend)?;
        Ok(Linkers { handler, backend })
    }

    /// Whether `component` links against `kind`'s world, types included.
    pub fn link_check(&self, kind: PluginKind, component: &Component) -> Result<()> {
        match kind {
            PluginKind::Handler => {
                drop(ProxyPre::new(self.handler.instantiate_pre(component)?)?);
            }
            PluginKind::Backend => {
                let pre = self.backend.instantiate_pre(component)?;
                drop(backend_bindings::BackendPre::new(pre)?);
            }
        }
        Ok(())
    }
}

/// Read the manifests of a plugin directory, sorted by file name.
pub fn read_manifests(
    dir: &Path,
    defaults: &PluginLimits,
    max_memory_mb: u64,
) -> Result<Vec<Manifest>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("reading plugin directory {}", dir.display()))?;
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            paths.push(path);
        }
    }
    paths.sort();
    paths
        .iter()
        .map(|p| Manifest::load(p, defaults, max_memory_mb))
        .collect()
}

/// The manifests bundled into the binary.
pub fn bundled_manifests(defaults: &PluginLimits, max_memory_mb: u64) -> Result<Vec<Manifest>> {
    bundled::MANIFESTS
        .iter()
        .map(|(file, text)| {
            let stem = file.trim_end_matches(".toml");
            Manifest::parse(text, stem, Path::new("."), defaults, max_memory_mb)
                .with_context(|| format!("in bundled manifest {file}"))
        })
        .collect()
}

/// The bytes of a manifest's component.
pub fn component_bytes(source: &ComponentSource) -> Result<Vec<u8>> {
    match source {
        ComponentSource::File(path) => {
            std::fs::read(path).with_context(|| format!("reading component {}", path.display()))
        }
        ComponentSource::Bundled(name) => {
            bundled::component(name).map(<[u8]>::to_vec).ok_or_else(|| {
                let known: Vec<_> = bundled::COMPONENTS.iter().map(|(n, _)| *n).collect();
                anyhow!(
                    "no bundled component named {name:?} (bundled: {})",
                    known.join(", ")
                )
            })
        }
    }
}

/// Names of a component's imports and exports.
pub fn interface_names(engine: &Engine, component: &Component) -> (Vec<String>, Vec<String>) {
    let ty = component.component_type();
    let imports = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
    let exports = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    (imports, exports)
}

/// Load one plugin. Errors name the plugin and say what is wrong in one line.
pub(crate) async fn load(
    engine: &Engine,
    linkers: &Linkers,
    cache: &ComponentCache,
    manifest: Manifest,
) -> Result<Plugin> {
    let name = manifest.name.clone();
    let wasm = component_bytes(&manifest.component)?;
    // Compiling takes seconds for a large component: off the async workers, so that a reload
    // while serving does not hold up the requests they run.
    let (component, outcome) = {
        let (engine, cache) = (engine.clone(), cache.clone());
        tokio::task::spawn_blocking(move || cache.load(&engine, &wasm))
            .await
            .context("compiling a component")??
    };
    tracing::info!(plugin = %name, cache = outcome.as_str(), "compiled-component cache {}", outcome.as_str());
    let (imports, exports) = interface_names(engine, &component);
    world::check(
        manifest.kind,
        imports.iter().map(String::as_str),
        exports.iter().map(String::as_str),
        &manifest.imports,
    )
    .map_err(|misfit| anyhow!("plugin {name} ({}) {misfit}", manifest.kind.as_str()))?;
    let mut settings = manifest.settings.clone();
    if let Some(binary) = &manifest.binary {
        // A backend reads the binary it drives from its settings unless they name one.
        settings
            .entry("binary".to_string())
            .or_insert_with(|| binary.clone());
    }
    let context = Arc::new(PluginContext {
        name: Arc::from(name.as_str()),
        limits: manifest.limits,
        settings,
        network: manifest
            .imports
            .iter()
            .any(|g| g == "wasi:sockets" || g.starts_with("wasi:sockets/")),
        backends: manifest.backends.clone(),
    });
    let misfit = |e: wasmtime::Error| {
        anyhow!(
            "plugin {name} does not fit world {}: {}",
            manifest.kind.as_str(),
            one_line(&anyhow::Error::from(e))
        )
    };
    let instance = match manifest.kind {
        PluginKind::Handler => {
            let pre = linkers
                .handler
                .instantiate_pre(&component)
                .map_err(misfit)?;
            // A handler that shapes logs exports `log-shaper`; one that does not simply cannot
            // answer with `responses.stream-log` (the call traps if it tries).
            let shaper = LogShapingPre::new(pre.clone()).ok();
            let socket = WebsocketServingPre::new(pre.clone()).ok();
            if let Some(route) = manifest.routes.iter().find(|r| r.websocket)
                && socket.is_none()
            {
                return Err(anyhow!(
                    "plugin {name}: route {:?} says `websocket = true` but the component does not export gantry:plugin/websocket-handler (build it for world websocket-serving too)",
                    route.pattern
                ));
            }
            PluginInstance::Handler {
                proxy: ProxyPre::new(pre).map_err(misfit)?,
                shaper,
                socket,
            }
        }
        PluginKind::Backend => {
            let pre = linkers
                .backend
                .instantiate_pre(&component)
                .map_err(misfit)?;
            let pre = backend_bindings::BackendPre::new(pre).map_err(misfit)?;
            let info = describe(engine, &pre, &context)
                .await
                .with_context(|| format!("plugin {name}: calling describe"))?;
            let declared = manifest.binary.as_deref().unwrap_or_default();
            let base = |p: &str| {
                Path::new(p)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or(p)
                    .to_string()
            };
            if base(declared) != base(&info.binary) {
                bail!(
                    "plugin {name} drives binary {:?}, but its manifest declares {declared:?}",
                    info.binary
                );
            }
            PluginInstance::Backend { pre, info }
        }
    };
    Ok(Plugin {
        manifest,
        context,
        instance,
    })
}

async fn describe(
    engine: &Engine,
    pre: &backend_bindings::BackendPre<AdapterState>,
    context: &Arc<PluginContext>,
) -> Result<BackendInfo> {
    let mut store =
        super::call::new_store(engine, context, &crate::tenants::TenantId::system(), ());
    let backend = pre.instantiate_async(&mut store).await?;
    let info = backend
        .gantry_plugin_adapter()
        .call_describe(&mut store)
        .await?;
    Ok(info)
}

/// An error chain on one line: startup errors are read in logs and terminals.
pub(crate) fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}
