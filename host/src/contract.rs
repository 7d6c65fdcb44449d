//! The contract's shared types: `gantry:plugin/types` from `wit/`, bound once for the whole
//! host. Both worlds' bindings in [`crate::runtime`] reuse these (bindgen's `with:`), so a
//! prompt request, an agent event or a task state is one Rust type from a handler's host call
//! through the supervisor to a backend adapter — no copies between two bindings.
//!
//! This module sits in the bottom layer with `config` and `manifest`: it is data, and every
//! layer above speaks it.

/// The bindings of a world that imports only the shared types.
#[allow(missing_docs)]
mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        inline: "
            package gantry:host-types;
            world shared { import gantry:plugin/types@0.3.1; }
        ",
        world: "gantry:host-types/shared",
        additional_derives: [PartialEq],
    });
}

pub use bindings::gantry::plugin::types;
pub use types::{
    AgentEvent, ApprovalMode, BackendInfo, CommandSpec, DoneInfo, EventBody, InitInfo, Level,
    ModelUsage, OutputLine, OutputStream, PluginKind, PromptRequest, RequestError, RunSummary,
    SandboxMode, SessionStatus, StateChange, TaskState, TaskSummary, ToolResult, ToolUse, Usage,
};

include!(concat!(env!("OUT_DIR"), "/contract.rs"));

/// The contract's package and version, as `wit/` declares it (`gantry:plugin@0.3.1`).
pub const PACKAGE: &str = env!("GANTRY_WIT_PACKAGE");

/// The contract's version (`0.3.1`): a component built for another major (or, before 1.0,
/// minor) version does not fit.
pub const VERSION: &str = env!("GANTRY_WIT_VERSION");

/// The version prefix a fitting component's `gantry:plugin` names carry (`0.3` before 1.0,
/// the major after).
pub fn compatible_prefix() -> &'static str {
    let mut parts = VERSION.splitn(3, '.');
    let major = parts.next().unwrap_or("0");
    let minor_end = if major == "0" {
        major.len() + 1 + parts.next().map_or(0, str::len)
    } else {
        major.len()
    };
    &VERSION[..minor_end]
}

/// A request with only its prompt set: every mode the CLI's default, no flags, no session.
pub fn plain_request(prompt: &str) -> PromptRequest {
    PromptRequest {
        prompt: prompt.into(),
        args: vec![],
        model: None,
        system_prompt: None,
        max_turns: None,
        approval_mode: ApprovalMode::Default,
        sandbox_mode: SandboxMode::Default,
        extra_flags: vec![],
        resume_session: None,
    }
}

/// Why an adapter refused a request, for the caller.
pub fn refusal_message(e: &RequestError) -> String {
    match e {
        RequestError::Invalid(m) => format!("invalid request: {m}"),
        RequestError::FlagNotAllowed(f) => format!("flag {f} is not allowed"),
        RequestError::Unsupported(m) => format!("unsupported: {m}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_comes_from_the_wit() {
        assert_eq!(PACKAGE, format!("gantry:plugin@{VERSION}"));
        assert!(VERSION.starts_with("0.3."), "{VERSION}");
        assert_eq!(compatible_prefix(), "0.3");
    }
}
