//! A backend adapter for the host's tests: drives `echo`, and maps each output line to a
//! message event.

use gantry_guest::backend::exports::gantry::plugin::adapter::{Guest, GuestRun};
use gantry_guest::backend::gantry::plugin::types::{
    AgentEvent, BackendInfo, CommandSpec, OutputStream, PromptRequest, RequestError, RunSummary,
};
use std::cell::RefCell;

struct TestBackend;

impl Guest for TestBackend {
    type Run = Run;

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

struct Run {
    last: RefCell<Option<String>>,
}

impl GuestRun for Run {
    fn new(_request: PromptRequest) -> Self {
        Run {
            last: RefCell::new(None),
        }
    }

    fn parse_line(&self, stream: OutputStream, line: String) -> Vec<AgentEvent> {
        match stream {
            OutputStream::Stdout => {
                *self.last.borrow_mut() = Some(line.clone());
                vec![AgentEvent::Message(line)]
            }
            OutputStream::Stderr => vec![AgentEvent::Raw(line)],
        }
    }

    fn finish(&self, exit_code: Option<i32>) -> RunSummary {
        let final_text = self.last.borrow().clone();
        RunSummary {
            success: exit_code == Some(0),
            session_id: None,
            final_text,
            usage: None,
            error: None,
        }
    }
}

gantry_guest::backend::export_backend!(TestBackend);
