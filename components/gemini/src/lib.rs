//! The `gemini` backend: runs Gemini CLI (`gemini --output-format stream-json
//! --prompt=PROMPT`) and maps its stream to unified agent events. The command line and the
//! CLI's settings file are built in [`command`], the stream parsed in [`parse`]; this file only
//! wires them to the WIT exports (the `run` resource is the SDK's [`AgentRun`]). See
//! `docs/backends.md` for the mapping and the settings.
//!
//! ```toml
//! kind = "backend"
//! component = "bundled:gemini"
//! binary = "gemini"
//! imports = ["gantry:plugin/config"]
//! env = ["GEMINI_API_KEY"]
//! ```

mod command;
mod parse;

use gantry_guest::adapter::AgentSettings;
use gantry_guest::backend::exports::gantry::plugin::adapter::Guest;
use gantry_guest::config;
use gantry_guest::lines::AgentRun;
use gantry_guest::types::{BackendInfo, CommandSpec, PromptRequest, RequestError};

const BINARY: &str = "gemini";

struct Gemini;

impl Guest for Gemini {
    type Run = AgentRun<parse::Parser>;

    fn describe() -> BackendInfo {
        BackendInfo {
            name: "gemini".into(),
            binary: config::get("binary").unwrap_or_else(|| BINARY.into()),
            version_args: vec!["--version".into()],
            supports_resume: true,
            supports_system_prompt: false,
            supports_model: true,
            supports_max_turns: false,
        }
    }

    fn build_command(request: PromptRequest) -> Result<CommandSpec, RequestError> {
        command::build(&request, &AgentSettings::load(BINARY)?)
    }
}

gantry_guest::backend::export_backend!(Gemini);
