//! Write gantry plugins in Rust.
//!
//! A handler component implements [`handler::Guest`] (the standard
//! `wasi:http/incoming-handler`) and registers it with [`export_handler!`]; a backend adapter
//! implements [`backend::exports::gantry::plugin::adapter::Guest`] and registers it with
//! [`export_backend!`]. The [`http`] module has the small helpers every handler needs: reading a
//! request, answering with JSON, and streaming a body with backpressure.

#![allow(missing_debug_implementations)]

/// Bindings for `world handler`: the `wasi:http/proxy` world plus gantry's host interfaces.
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "gantry:plugin/handler",
        generate_all,
        pub_export_macro: true,
        export_macro_name: "export_handler",
        default_bindings_module: "gantry_guest::bindings",
    });
}

/// Bindings for `world backend`: the adapter interface, and the plugin's settings.
pub mod backend {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "gantry:plugin/backend",
        // Lets adapters compare events, commands and errors in their tests.
        additional_derives: [PartialEq, Eq],
        pub_export_macro: true,
        export_macro_name: "export_backend",
        default_bindings_module: "gantry_guest::backend",
    });
}

pub mod adapter;
pub mod http;
pub mod log;
pub mod time;

/// The handler trait: implement `handle` for your component.
pub mod handler {
    pub use crate::bindings::exports::wasi::http::incoming_handler::Guest;
    pub use crate::bindings::wasi::http::types::{IncomingRequest, ResponseOutparam};
}

/// The plugin's settings from its manifest (needs the `gantry:plugin/config` grant).
pub mod config {
    pub use crate::bindings::gantry::plugin::config::{entries, get};
}

/// The caller's tenant (needs the `gantry:plugin/identity` grant).
pub mod identity {
    pub use crate::bindings::gantry::plugin::identity::tenant;
}

/// What this gantry node runs (needs the `gantry:plugin/host-info` grant).
pub mod host_info {
    pub use crate::bindings::gantry::plugin::host_info::*;
}
