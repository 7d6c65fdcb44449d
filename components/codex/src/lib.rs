//! The `codex` backend: runs Codex (`codex exec --json --skip-git-repo-check PROMPT`, or
//! `codex exec resume … SESSION PROMPT`) and maps its stream to unified agent events. The
//! command line is built in [`command`], the stream parsed in [`parse`]; this file only wires
//! them to the WIT exports. See `docs/backends.md` for the mapping and the settings.
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
use gantry_guest::backend::exports::gantry::plugin::adapter::{Guest, GuestRun};
use gantry_guest::backend::gantry::plugin::config;
use gantry_guest::backend::gantry::plugin::types::{
    AgentEvent, BackendInfo, CommandSpec, OutputStream, PromptRequest, RequestError, RunSummary,
};
use std::cell::RefCell;

const BINARY: &str = "codex";

struct Codex;

impl Guest for Codex {
    type Run = Run;

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
        let settings = command::Settings {
            common: AgentSettings::load(BINARY)?,
            external_sandbox: bool_setting(
                "external_sandbox",
                config::get("external_sandbox").as_deref(),
            )?,
        };
        command::build(&request, &settings)
    }
}

struct Run {
    parser: RefCell<parse::Parser>,
}

impl GuestRun for Run {
    fn new(request: PromptRequest) -> Self {
        // Codex does not print the model it runs with: report the one asked for.
        let model = request
            .model
            .or_else(|| config::get("model").filter(|m| !m.trim().is_empty()));
        Run {
            parser: RefCell::new(parse::Parser::new(model)),
        }
    }

    fn parse_line(&self, stream: OutputStream, line: String) -> Vec<AgentEvent> {
        self.parser.borrow_mut().parse_line(stream, &line)
    }

    fn finish(&self, exit_code: Option<i32>) -> RunSummary {
        self.parser.borrow().finish(exit_code)
    }
}

gantry_guest::backend::export_backend!(Codex);
