//! gantry: a gateway that runs coding-agent CLIs for many tenants, serving its APIs and
//! driving its backends through WebAssembly components.
//!
//! The binary is a thin shell over this library. Modules, from the top layer down (a module
//! imports only from layers below it; `docs/architecture.md` draws it):
//! - [`cli`] — the command line;
//! - [`http`] — the server, router, authentication, limits and error answers;
//! - [`runtime`] — the component host: engine, plugin registry, per-call isolation, the host
//!   side of the `gantry:plugin` interfaces;
//! - [`tasks`] — the process supervisor and each task's event log; beside it [`commands`] —
//!   the Web UI API's command lines, run in the tasks' sandbox — and [`webhooks`] — signed
//!   webhooks, their outbox and delivery worker;
//! - [`workspaces`], [`sessions`], [`users`], [`projects`], [`backends`] — per-tenant
//!   directories (through cap-std), resumable conversations, users with passwords and access
//!   tokens, the Web UI API's projects and their tasks, which backends can run here;
//! - [`work_sessions`] — the Web UI API's working sessions on projects (beside `projects`);
//! - [`store`] — persistence (SQLite by default);
//! - [`config`], [`manifest`], [`contract`], [`tenants`], [`metrics`] — settings, plugin
//!   manifests, the WIT's shared types, tenants and their keys, the node's counters.

#![warn(missing_docs)]

pub mod authoring;
pub mod backends;
pub mod cli;
pub mod commands;
pub mod config;
pub mod contract;
pub mod events;
pub mod http;
pub mod manifest;
pub mod metrics;
pub mod node;
pub mod projects;
pub mod reload;
pub mod runtime;
pub mod sessions;
pub mod spawn;
pub mod store;
pub mod tasks;
pub mod tenants;
pub mod users;
pub mod webhooks;
pub mod work_sessions;
pub mod workspaces;

/// gantry's version, as reported by `/health` and `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
