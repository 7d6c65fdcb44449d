//! The `claude` backend: runs Claude Code (`claude -p PROMPT --output-format stream-json
//! --verbose`) and maps its stream to unified agent events. The command line is built in
//! [`command`], the stream parsed in [`parse`]; this file only wires them to the WIT exports
//! (the `run` resource is the SDK's [`AgentRun`]). See `docs/backends.md` for the mapping and
//! the settings.
//!
//! ```toml
//! kind = "backend"
//! component = "bundled:claude"
//! binary = "claude"
//! imports = ["gantry:plugin/config"]
//! env = ["ANTHROPIC_API_KEY"]
//! ```

mod command;
mod parse;

use gantry_guest::adapter::AgentSettings;
use gantry_guest::backend::exports::gantry::plugin::adapter::Guest;
use gantry_guest::config;
use gantry_guest::lines::AgentRun;
use gantry_guest::types::{BackendInfo, CommandSpec, PromptRequest, RequestError};

const BINARY: &str = "claude";

struct Claude;

impl Guest for Claude {
    type Run = AgentRun<parse::Parser>;

    fn describe() -> BackendInfo {
        BackendInfo {
            name: "claude".into(),
            binary: config::get("binary").unwrap_or_else(|| BINARY.into()),
            version_args: vec!["--version".into()],
            supports_resume: true,
            supports_system_prompt: true,
            supports_model: true,
            supports_max_turns: true,
        }
    }

    fn build_command(request: PromptRequest) -> Result<CommandSpec, RequestError> {
        command::build(&request, &AgentSettings::load(BINARY)?)
    }
}

gantry_guest::backend::export_backend!(Claude);
