//! A backend adapter for the host's tests: drives `echo`, and maps each output line to a
//! message event.

use gantry_guest::backend::exports::gantry::plugin::adapter::Guest;
use gantry_guest::lines::{AgentRun, LineParser};
use gantry_guest::types::{
    AgentEvent, BackendInfo, CommandSpec, OutputStream, PromptRequest, RequestError, RunSummary,
};

struct TestBackend;

impl Guest for TestBackend {
    type Run = AgentRun<Lines>;

    fn describe() -> BackendInfo {
        BackendInfo {
            name: "test-backend".into(),
            binary: "echo".into(),
            version_args: vec!["--version".into()],
            supports_resume: false,
            supports_system_prompt: false,
            supports_model: false,
            supports_max_turns: false,
        }
    }

    fn build_command(request: PromptRequest) -> Result<CommandSpec, RequestError> {
        let allowed = gantry_guest::adapter::operator_allowed_flags();
        if let Some(flag) = request.extra_flags.iter().find(|f| !allowed.contains(f)) {
            return Err(RequestError::FlagNotAllowed(flag.clone()));
        }
        Ok(CommandSpec {
            args: vec![request.prompt],
            env: vec![],
            stdin: None,
            files: vec![],
        })
    }
}

/// A run's output: the last stdout line is the final text.
#[derive(Debug, Default)]
struct Lines {
    last: Option<String>,
}

impl LineParser for Lines {
    fn start(_request: &PromptRequest) -> Self {
        Lines::default()
    }

    fn parse_line(&mut self, stream: OutputStream, line: &str) -> Vec<AgentEvent> {
        match stream {
            OutputStream::Stdout => {
                self.last = Some(line.to_string());
                vec![AgentEvent::Message(line.to_string())]
            }
            OutputStream::Stderr => vec![AgentEvent::Raw(line.to_string())],
        }
    }

    fn finish(&mut self, exit_code: Option<i32>) -> RunSummary {
        RunSummary {
            success: exit_code == Some(0),
            session_id: None,
            final_text: self.last.clone(),
            usage: None,
            error: None,
        }
    }
}

gantry_guest::backend::export_backend!(TestBackend);
