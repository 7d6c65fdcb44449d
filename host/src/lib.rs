//! gantry: a gateway that runs coding-agent CLIs for many tenants, serving its APIs and
//! driving its backends through WebAssembly components.
//!
//! The binary is a thin shell over this library:
//! - [`config`] — layered settings (embedded defaults, file, environment, flags);
//! - [`runtime`] — the component host: engine, plugin registry, per-call isolation, the host
//!   side of the `gantry:plugin` interfaces;
//! - [`http`] — the server, router and error answers;
//! - [`store`] — persistence (SQLite by default);
//! - [`sessions`] — resumable conversations with a backend, per tenant;
//! - [`metrics`] — the node's counters, in the Prometheus text format;
//! - [`tasks`] — the process supervisor and each task's event log;
//! - [`backends`] — which backends can run here (their binaries, probed);
//! - [`tenants`] — tenants and their API keys;
//! - [`workspaces`] — per-tenant workspace directories, reached through cap-std;
//! - [`cli`] — the command line.

#![warn(missing_docs)]

pub mod backends;
pub mod cli;
pub mod config;
pub mod http;
pub mod metrics;
pub mod runtime;
pub mod sessions;
pub mod store;
pub mod tasks;
pub mod tenants;
pub mod workspaces;

/// gantry's version, as reported by `/health` and `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
