//! The `codex` backend: runs Codex (`codex exec --json --skip-git-repo-check PROMPT`, or
//! `codex exec resume … SESSION PROMPT`) and maps its stream to unified agent events. The
//! command line is built in [`command`], the stream parsed in [`parse`]; this file only wires
//! them to the WIT exports (the `run` resource is the SDK's [`AgentRun`]). See
//! `docs/backends.md` for the mapping and the settings.
//!
//! ```toml
//! kind = "backend"
//! component = "bundled:codex"
//! binary = "codex"
//! imports = ["gantry:plugin/config"]
//! env = ["OPENAI_API_KEY"]
//! ```

mod command;
mod parse;

use gantry_guest::adapter::{AgentSettings, bool_setting};
use gantry_guest::backend::exports::gantry::plugin::adapter::Guest;
use gantry_guest::config;
use gantry_guest::lines::AgentRun;
use gantry_guest::types::{BackendInfo, CommandSpec, PromptRequest, RequestError};

const BINARY: &str = "codex";

struct Codex;

impl Guest for Codex {
    type Run = AgentRun<parse::Parser>;

    fn describe() -> BackendInfo {
        BackendInfo {
            name: "codex".into(),
            binary: config::get("binary").unwrap_or_else(|| BINARY.into()),
            version_args: vec!["--version".into()],
            supports_resume: true,
            // As developer instructions (`-c developer_instructions=…`).
            supports_system_prompt: true,
            supports_model: true,
            supports_max_turns: false,
        }
    }

    fn build_command(request: PromptRequest) -> Result<CommandSpec, RequestError> {
        let external_sandbox = config::get("external_sandbox");
        let settings = command::Settings {
            common: AgentSettings::load(BINARY)?,
            external_sandbox: bool_setting("external_sandbox", external_sandbox.as_deref())?,
        };
        command::build(&request, &settings)
    }
}

gantry_guest::backend::export_backend!(Codex);
