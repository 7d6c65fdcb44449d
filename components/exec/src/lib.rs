//! The `exec` backend: the binary is the manifest's `binary`; its arguments come from the
//! `args` setting, a list in which `{prompt}`, `{model}` and `{system_prompt}` are replaced
//! (each placeholder fills its argument, so a prompt is always one argument, never parsed by a
//! shell), and an argument that is exactly `{args}` becomes the request's positional
//! arguments, one argv entry each. Extra flags are appended only when the manifest's
//! `allowed_flags` setting lists each one. Each stdout line becomes a message event; stderr
//! lines are kept as raw events. When the `prompts` setting lists prompts, any other prompt
//! is refused: a backend that runs a fixed set of commands (CLK's) holds them whichever API
//! starts it.
//!
//! ```toml
//! kind = "backend"
//! component = "bundled:exec"
//! binary = "echo"
//! imports = ["gantry:plugin/config"]
//! [settings]
//! args = ["{prompt}"]
//! ```

use gantry_guest::backend::exports::gantry::plugin::adapter::Guest;
use gantry_guest::config;
use gantry_guest::lines::{AgentRun, LineParser};
use gantry_guest::types::{
    AgentEvent, BackendInfo, CommandSpec, OutputStream, PromptRequest, RequestError, RunSummary,
};

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

/// The `prompts` setting (a JSON list): the only prompts this backend takes, if set.
fn allowed_prompts() -> Result<Option<Vec<String>>, RequestError> {
    config::get("prompts")
        .map(|text| {
            serde_json::from_str(&text).map_err(|e| {
                RequestError::Invalid(format!(
                    "the exec backend's `prompts` setting is not a list of strings: {e}"
                ))
            })
        })
        .transpose()
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
    type Run = AgentRun<Lines>;

    fn describe() -> BackendInfo {
        BackendInfo {
            supports_system_prompt: true,
            supports_model: true,
            ..gantry_guest::adapter::basic_info("exec")
        }
    }

    fn build_command(request: PromptRequest) -> Result<CommandSpec, RequestError> {
        if request.resume_session.is_some() {
            return Err(RequestError::Unsupported(
                "the exec backend has no sessions to resume".into(),
            ));
        }
        // When the operator lists the prompts this backend takes (CLK's commands, say), no
        // other runs, whichever API asked.
        if let Some(prompts) = allowed_prompts()?
            && !prompts.contains(&request.prompt)
        {
            return Err(RequestError::Invalid(format!(
                "{:?} is not one of this backend's commands: {}",
                request.prompt,
                prompts.join(", ")
            )));
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
        let success = exit_code == Some(0);
        RunSummary {
            success,
            session_id: None,
            final_text: self.last.clone(),
            usage: None,
            error: (!success).then(|| match exit_code {
                Some(code) => format!("exited with status {code}"),
                None => "ended by a signal".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_guest::testing;

    #[test]
    fn stdout_lines_are_messages_and_the_last_is_the_answer() {
        let (mut p, events) = testing::run(Lines::default(), "a\nb\n", "oops\n");
        assert_eq!(
            events,
            [
                AgentEvent::Message("a".into()),
                AgentEvent::Message("b".into()),
                AgentEvent::Raw("oops".into()),
            ]
        );
        let s = p.finish(Some(0));
        assert!(s.success && s.error.is_none());
        assert_eq!(s.final_text.as_deref(), Some("b"));
        assert_eq!(
            p.finish(Some(3)).error.as_deref(),
            Some("exited with status 3")
        );
        assert_eq!(p.finish(None).error.as_deref(), Some("ended by a signal"));
    }
}

gantry_guest::backend::export_backend!(Exec);
