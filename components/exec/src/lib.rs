//! The `exec` backend: the binary is the manifest's `binary`; its arguments come from the
//! `args` setting, a list in which `{prompt}`, `{model}` and `{system_prompt}` are replaced
//! (each placeholder fills its argument, so a prompt is always one argument, never parsed by a
//! shell), and an argument that is exactly `{args}` becomes the request's positional
//! arguments, one argv entry each. Extra flags are appended only when the manifest's
//! `allowed_flags` setting lists each one. Each stdout line becomes a message event; stderr
//! lines are kept as raw events.
//!
//! ```toml
//! kind = "backend"
//! component = "bundled:exec"
//! binary = "echo"
//! imports = ["gantry:plugin/config"]
//! [settings]
//! args = ["{prompt}"]
//! ```

use gantry_guest::backend::exports::gantry::plugin::adapter::{Guest, GuestRun};
use gantry_guest::backend::gantry::plugin::config;
use gantry_guest::backend::gantry::plugin::types::{
    AgentEvent, BackendInfo, CommandSpec, OutputStream, PromptRequest, RequestError, RunSummary,
};
use std::cell::RefCell;

struct Exec;

/// The argv template from the `args` setting (a JSON list), `["{prompt}"]` by default.
fn template() -> Result<Vec<String>, RequestError> {
    match config::get("args") {
        None => Ok(vec!["{prompt}".into()]),
        Some(text) => serde_json::from_str(&text).map_err(|e| {
            RequestError::Invalid(format!(
                "the exec backend's `args` setting is not a list of strings: {e}"
            ))
        }),
    }
}

fn fill(arg: &str, request: &PromptRequest) -> String {
    arg.replace("{prompt}", &request.prompt)
        .replace("{model}", request.model.as_deref().unwrap_or(""))
        .replace(
            "{system_prompt}",
            request.system_prompt.as_deref().unwrap_or(""),
        )
}

impl Guest for Exec {
    type Run = Run;

    fn describe() -> BackendInfo {
        BackendInfo {
            name: "exec".into(),
            binary: config::get("binary").unwrap_or_default(),
            version_args: vec!["--version".into()],
            supports_resume: false,
            supports_system_prompt: true,
            supports_model: true,
            supports_max_turns: false,
        }
    }

    fn build_command(request: PromptRequest) -> Result<CommandSpec, RequestError> {
        if request.resume_session.is_some() {
            return Err(RequestError::Unsupported(
                "the exec backend has no sessions to resume".into(),
            ));
        }
        // Extra flags are appended only when the operator allows each one.
        let allowed = gantry_guest::adapter::operator_allowed_flags();
        if let Some(flag) = request.extra_flags.iter().find(|f| !allowed.contains(f)) {
            return Err(RequestError::FlagNotAllowed(flag.clone()));
        }
        let template = template()?;
        if !request.args.is_empty() && !template.iter().any(|a| a == "{args}") {
            return Err(RequestError::Unsupported(
                "this backend's argv template takes no positional arguments".into(),
            ));
        }
        let mut args = Vec::with_capacity(template.len() + request.args.len());
        for arg in &template {
            if arg == "{args}" {
                args.extend(request.args.iter().cloned());
            } else {
                args.push(fill(arg, &request));
            }
        }
        args.extend(request.extra_flags.iter().cloned());
        Ok(CommandSpec {
            args,
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
        let success = exit_code == Some(0);
        RunSummary {
            success,
            session_id: None,
            final_text: self.last.borrow().clone(),
            usage: None,
            error: (!success).then(|| match exit_code {
                Some(code) => format!("exited with status {code}"),
                None => "ended by a signal".into(),
            }),
        }
    }
}

gantry_guest::backend::export_backend!(Exec);
