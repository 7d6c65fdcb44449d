//! Write gantry plugins in Rust (the `gantry:plugin@0.3.1` contract).
//!
//! A handler component implements [`handler::Guest`] (the standard
//! `wasi:http/incoming-handler`) and registers it with [`export_handler!`]; a backend adapter
//! implements [`backend::exports::gantry::plugin::adapter::Guest`] and registers it with
//! [`export_backend!`]. The [`http`] module has the small helpers every handler needs: reading a
//! request, answering with JSON, and streaming a body with backpressure; [`json`] has the JSON
//! forms the APIs print of the contract's values. For adapters, [`adapter`] reads settings and
//! checks requests, [`lines`] turns a parser of output lines into the `run` resource, and
//! [`testing`] feeds captured transcripts to a parser in native tests.
//!
//! The shared `gantry:plugin/types` are bound once, in [`types`], and used by both worlds.

#![allow(missing_debug_implementations)]

/// Bindings for `world backend`: the adapter interface, the plugin's settings, and the shared
/// [`types`].
pub mod backend {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "gantry:plugin/backend",
        // Lets adapters compare events, commands and errors in their tests. Only the types
        // interface and `config` are generated here (no resources but the exported `run`,
        // which derives nothing), so every type can take them.
        additional_derives: [PartialEq, Eq],
        pub_export_macro: true,
        export_macro_name: "export_backend",
        default_bindings_module: "gantry_guest::backend",
    });
}

/// Bindings for `world handler`: the `wasi:http/proxy` world plus gantry's host interfaces.
/// `gantry:plugin/types` and `gantry:plugin/config` are those of [`backend`], not bound again.
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "gantry:plugin/handler",
        with: {
            "gantry:plugin/types@0.3.1": crate::backend::gantry::plugin::types,
            "gantry:plugin/config@0.3.1": crate::backend::gantry::plugin::config,
        },
        generate_all,
        pub_export_macro: true,
        export_macro_name: "export_handler",
        default_bindings_module: "gantry_guest::bindings",
    });
}

/// Bindings for `world log-shaping`: the `log-shaper` export of a handler that answers with
/// logs the host writes ([`responses::stream_log`]). Its types are [`bindings`]' own; register
/// the shaper with `log_shaping::export_log_shaper!` beside `bindings::export_handler!`.
pub mod log_shaping {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "gantry:plugin/log-shaping",
        with: {
            "gantry:plugin/types@0.3.1": crate::backend::gantry::plugin::types,
            "gantry:plugin/tasks@0.3.1": crate::bindings::gantry::plugin::tasks,
        },
        pub_export_macro: true,
        export_macro_name: "export_log_shaper",
        default_bindings_module: "gantry_guest::log_shaping",
    });
}

/// Bindings for `world websocket-serving`: the `websocket-handler` export of a handler that
/// serves WebSocket connections (a manifest route with `websocket = true`). Register it with
/// `websocket_serving::export_websocket_handler!` beside `bindings::export_handler!`.
pub mod websocket_serving {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "gantry:plugin/websocket-serving",
        with: {
            "gantry:plugin/identity@0.3.1": crate::bindings::gantry::plugin::identity,
            "gantry:plugin/websocket@0.3.1": crate::bindings::gantry::plugin::websocket,
        },
        pub_export_macro: true,
        export_macro_name: "export_websocket_handler",
        default_bindings_module: "gantry_guest::websocket_serving",
    });
}

/// A WebSocket connection: the calling connection's host functions (needs the
/// `gantry:plugin/websocket` grant) and the export that serves it ([`websocket::Guest`]).
pub mod websocket {
    pub use crate::bindings::gantry::plugin::websocket::*;
    pub use crate::websocket_serving::exports::gantry::plugin::websocket_handler::{
        Connection, Guest, Message,
    };
}

/// Answers the host writes for a handler (needs the `gantry:plugin/responses` grant): a task's
/// log, shaped batch by batch by the handler's [`log_shaper::Guest`] export, and a workspace
/// file streamed from disk with `Range` and `ETag`.
pub mod responses {
    pub use crate::bindings::gantry::plugin::responses::*;
}

/// The export of a handler that answers with [`responses::stream_log`].
pub mod log_shaper {
    pub use crate::log_shaping::exports::gantry::plugin::log_shaper::{Guest, Shaped};
}

/// The types both worlds share (`gantry:plugin/types`), with `PartialEq` and `Eq`.
pub use backend::gantry::plugin::types;

pub mod adapter;
mod enums;
pub mod http;
pub mod json;
pub mod lines;
pub mod log;
pub mod testing;
pub mod time;

/// The handler trait: implement `handle` for your component.
pub mod handler {
    pub use crate::bindings::exports::wasi::http::incoming_handler::Guest;
    pub use crate::bindings::wasi::http::types::{IncomingRequest, ResponseOutparam};
}

/// The plugin's settings from its manifest (needs the `gantry:plugin/config` grant).
pub mod config {
    pub use crate::backend::gantry::plugin::config::{entries, get};
}

/// The caller's tenant, and on a `user_auth` route its user (needs the
/// `gantry:plugin/identity` grant).
pub mod identity {
    pub use crate::bindings::gantry::plugin::identity::{Permission, UserInfo, tenant, user};
}

/// Logging in, and the caller's tenant's users (needs the `gantry:plugin/users` grant; the
/// host checks the caller's `admin` permission for managing users).
pub mod users {
    pub use crate::bindings::gantry::plugin::users::*;
}

/// The caller's tenant's projects and their tasks, as the calling user (needs the
/// `gantry:plugin/projects` grant on a `user_auth` route; the host checks the user's `read` and
/// `write` permissions).
pub mod projects {
    pub use crate::bindings::gantry::plugin::projects::*;
}

/// The calling user's command lines, run in the tasks' sandbox (needs the
/// `gantry:plugin/commands` grant on a `user_auth` route; the host checks the user's `execute`
/// permission, and `read` for suggestions and validation).
pub mod commands {
    pub use crate::bindings::gantry::plugin::commands::*;
}

/// The calling user's working sessions on projects (needs the `gantry:plugin/work-sessions`
/// grant on a `user_auth` route; the host checks the user's `read` and `write` permissions).
pub mod work_sessions {
    pub use crate::bindings::gantry::plugin::work_sessions::*;
}

/// The caller's tenant's signed webhooks and their deliveries (needs the
/// `gantry:plugin/webhooks` grant on a `user_auth` route; the host checks the user's `read` and
/// `write` permissions).
pub mod webhooks {
    pub use crate::bindings::gantry::plugin::webhooks::*;
}

/// What this gantry node runs (needs the `gantry:plugin/host-info` grant).
pub mod host_info {
    pub use crate::bindings::gantry::plugin::host_info::*;
}
