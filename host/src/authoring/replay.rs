//! `gantry plugin test` for a backend: a [`Transcript`] replayed through the component, as
//! the supervisor would drive it (`build-command`, then the run's `parse-lines` in batches and
//! `finish`), with no process, no server and no network. The outcome is rendered as text, one
//! JSON value a line, and compared with an expected file; a mismatch is a unified diff.

use super::transcript::Transcript;
use crate::contract::{AgentEvent, CommandSpec, RequestError, RunSummary, TaskSummary};
use crate::runtime::Plugins;
use crate::store::codec;
use crate::tasks::Adapters;
use crate::tenants::TenantId;
use anyhow::{Result, anyhow};
use serde_json::{Value, json};

/// Lines handed to `parse-lines` at once, as a busy run's batches are.
const BATCH: usize = 64;

/// What a backend made of a transcript.
#[derive(Debug)]
pub struct Replayed {
    /// The command it built for the transcript's request, or its refusal.
    pub command: Result<CommandSpec, RequestError>,
    /// The unified events of every line, in order.
    pub events: Vec<AgentEvent>,
    /// The run's summary.
    pub summary: RunSummary,
}

/// Replay `transcript` through backend `backend` of `plugins`, as tenant `local`.
pub async fn replay(plugins: &Plugins, backend: &str, transcript: &Transcript) -> Result<Replayed> {
    let tenant = TenantId::new("local")?;
    let request = &transcript.request;
    let failed = |what: &str, f: crate::tasks::AdapterFailure| {
        anyhow!("the component failed in {what}: {}", f.message)
    };
    let command = plugins
        .build_command(backend, &tenant, request, vec![])
        .await
        .map_err(|f| failed("build-command", f))?;
    let mut run = plugins
        .start_run(backend, &tenant, request)
        .await
        .map_err(|f| failed("the run's constructor", f))?;
    let mut events = Vec::new();
    for batch in transcript.lines.chunks(BATCH) {
        let parsed = run
            .parse_lines(batch)
            .await
            .map_err(|f| failed("parse-lines", f))?;
        if parsed.len() != batch.len() {
            anyhow::bail!(
                "parse-lines returned {} lists of events for {} lines: it must return one per line",
                parsed.len(),
                batch.len()
            );
        }
        events.extend(parsed.into_iter().flatten());
    }
    let summary = run
        .finish(transcript.exit_code)
        .await
        .map_err(|f| failed("finish", f))?;
    Ok(Replayed {
        command,
        events,
        summary,
    })
}

impl Replayed {
    /// The text an expected file holds: the command (or refusal), each event, then the
    /// summary, one JSON value a line in `/v1`'s shapes.
    pub fn render(&self) -> String {
        let mut lines: Vec<Value> = Vec::with_capacity(self.events.len() + 2);
        lines.push(match &self.command {
            Ok(c) => json!({ "command": {
                "args": c.args,
                "env": c.env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
                "stdin": c.stdin,
                "files": c.files.iter().map(|(path, _)| path).collect::<Vec<_>>(),
            }}),
            Err(e) => json!({ "refused": crate::contract::refusal_message(e) }),
        });
        lines.extend(self.events.iter().map(codec::agent_event_json));
        let summary = codec::summary_json(&TaskSummary {
            run: Some(self.summary.clone()),
            model_usage: None,
        });
        lines.push(json!({ "summary": summary }));
        let mut out = String::new();
        for line in lines {
            out.push_str(&line.to_string());
            out.push('\n');
        }
        out
    }
}

/// A unified diff from `expected` to `actual`, or `None` when they are the same (line ends
/// aside, so that a file saved with CRLF still matches).
pub fn diff(expected: &str, actual: &str, expected_name: &str) -> Option<String> {
    let normalize = |s: &str| -> String { s.lines().map(|l| format!("{l}\n")).collect() };
    let (expected, actual) = (normalize(expected), normalize(actual));
    if expected == actual {
        return None;
    }
    let diff = similar::TextDiff::from_lines(&expected, &actual);
    Some(
        diff.unified_diff()
            .context_radius(3)
            .header(expected_name, "actual")
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mismatch_is_a_unified_diff_naming_both_sides() {
        let expected = "{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n";
        let actual = "{\"a\":1}\n{\"b\":20}\n{\"c\":3}\n";
        let d = diff(expected, actual, "tests/t.expected").unwrap();
        assert!(d.contains("--- tests/t.expected"), "{d}");
        assert!(d.contains("+++ actual"), "{d}");
        assert!(d.contains("-{\"b\":2}\n+{\"b\":20}"), "{d}");
        assert_eq!(diff(expected, &expected.replace('\n', "\r\n"), "x"), None);
    }
}
