//! The `gemini` backend: runs Gemini CLI (`gemini --output-format stream-json
//! --prompt=PROMPT`) and maps its stream to unified agent events. The command line and the
//! CLI's settings file are built in [`command`], the stream parsed in [`parse`]; this file only
//! wires them to the WIT exports. See `docs/backends.md` for the mapping and the settings.
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
use gantry_guest::backend::exports::gantry::plugin::adapter::{Guest, GuestRun};
use gantry_guest::backend::gantry::plugin::config;
use gantry_guest::backend::gantry::plugin::types::{
    AgentEvent, BackendInfo, CommandSpec, OutputStream, PromptRequest, RequestError, RunSummary,
};
use std::cell::RefCell;

const BINARY: &str = "gemini";

struct Gemini;

impl Guest for Gemini {
    type Run = Run;

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

struct Run {
    parser: RefCell<parse::Parser>,
}

impl GuestRun for Run {
    fn new(_request: PromptRequest) -> Self {
        Run {
            parser: RefCell::default(),
        }
    }

    fn parse_line(&self, stream: OutputStream, line: String) -> Vec<AgentEvent> {
        self.parser.borrow_mut().parse_line(stream, &line)
    }

    fn finish(&self, exit_code: Option<i32>) -> RunSummary {
        self.parser.borrow().finish(exit_code)
    }
}

gantry_guest::backend::export_backend!(Gemini);
