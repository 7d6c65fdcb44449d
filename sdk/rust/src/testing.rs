//! For adapters' native tests (`cargo test`): feed a captured transcript to a parser, through
//! the same `parse-lines` the host calls, and look at the events.
//!
//! ```ignore
//! let (mut p, events) = testing::run(Parser::default(), TURN, TURN_STDERR);
//! assert_eq!(testing::messages(&events), ["hello"]);
//! assert!(p.finish(Some(0)).success);
//! ```

use crate::lines::{LineParser, parse_lines};
use crate::types::{AgentEvent, OutputLine, OutputStream, Usage};

/// The events of each line of `text` (split as `str::lines` does) on `stream`, in one batch.
pub fn feed<P: LineParser>(parser: &mut P, stream: OutputStream, text: &str) -> Vec<AgentEvent> {
    let lines: Vec<OutputLine> = text
        .lines()
        .map(|line| OutputLine {
            stream,
            text: line.to_string(),
            partial: false,
        })
        .collect();
    let events = parse_lines(parser, &lines);
    assert_eq!(events.len(), lines.len(), "one list of events per line");
    events.into_iter().flatten().collect()
}

/// The events of one stdout line.
pub fn stdout<P: LineParser>(parser: &mut P, line: &str) -> Vec<AgentEvent> {
    one(parser, OutputStream::Stdout, line)
}

/// The events of one stderr line.
pub fn stderr<P: LineParser>(parser: &mut P, line: &str) -> Vec<AgentEvent> {
    one(parser, OutputStream::Stderr, line)
}

fn one<P: LineParser>(parser: &mut P, stream: OutputStream, line: &str) -> Vec<AgentEvent> {
    let line = OutputLine {
        stream,
        text: line.to_string(),
        partial: false,
    };
    parse_lines(parser, &[line])
        .pop()
        .expect("one list for one line")
}

/// Feed `parser` a run's stdout, then its stderr; the parser (to finish) and every event.
pub fn run<P: LineParser>(mut parser: P, stdout: &str, stderr: &str) -> (P, Vec<AgentEvent>) {
    let mut events = feed(&mut parser, OutputStream::Stdout, stdout);
    events.extend(feed(&mut parser, OutputStream::Stderr, stderr));
    (parser, events)
}

/// A usage record: input, output, cached and reasoning tokens.
pub fn usage(input: u64, output: u64, cached: u64, reasoning: u64) -> Usage {
    Usage {
        input_tokens: input,
        output_tokens: output,
        cached_tokens: cached,
        reasoning_tokens: reasoning,
    }
}

/// The sum of the `usage` events; `None` when there is none.
pub fn total_usage(events: &[AgentEvent]) -> Option<Usage> {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Usage(u) => Some(*u),
            _ => None,
        })
        .reduce(|a, b| {
            usage(
                a.input_tokens + b.input_tokens,
                a.output_tokens + b.output_tokens,
                a.cached_tokens + b.cached_tokens,
                a.reasoning_tokens + b.reasoning_tokens,
            )
        })
}

/// The texts of the `message` events.
pub fn messages(events: &[AgentEvent]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Message(m) => Some(m.as_str()),
            _ => None,
        })
        .collect()
}

/// The messages of the `error` events.
pub fn errors(events: &[AgentEvent]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Error(m) => Some(m.as_str()),
            _ => None,
        })
        .collect()
}

/// Whether any event is `raw`.
pub fn has_raw(events: &[AgentEvent]) -> bool {
    events.iter().any(|e| matches!(e, AgentEvent::Raw(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::Outcome;
    use crate::lines::JsonLines;
    use serde_json::Value;

    /// A CLI whose JSON lines `{"say": TEXT}` are messages, and `{"skip": …}` dropped.
    #[derive(Default)]
    struct Echo {
        outcome: Outcome,
    }

    impl JsonLines for Echo {
        const STDERR_NOISE: &'static [&'static str] = &["notice:"];

        fn outcome(&mut self) -> &mut Outcome {
            &mut self.outcome
        }

        fn event(&mut self, v: &Value) -> Option<Vec<AgentEvent>> {
            if v.get("skip").is_some() {
                return Some(vec![]);
            }
            let text = crate::json::string_at(v, "say")?;
            self.outcome.final_text = Some(text.clone());
            Some(vec![self.outcome.done(), AgentEvent::Message(text)])
        }
    }

    #[test]
    fn json_lines_parsers() {
        let (mut p, events) = run(
            Echo::default(),
            "{\"say\":\"hi\"}\n{\"skip\":1}\nnot json\n{\"other\":1}",
            "notice: always printed\n\nError: bad\n",
        );
        assert_eq!(messages(&events), ["hi"]);
        assert_eq!(
            events[2..],
            [
                AgentEvent::Raw("not json".into()),
                AgentEvent::Raw("{\"other\":1}".into()),
                AgentEvent::Raw("Error: bad".into()),
            ]
        );
        assert!(p.outcome.unreadable);
        assert!(p.finish(Some(0)).success);
        assert_eq!(
            p.finish(Some(1)).error.as_deref(),
            Some("exited with status 1: Error: bad")
        );
        assert!(stdout(&mut p, "{\"skip\":2}").is_empty());
        assert!(stderr(&mut p, "notice: again").is_empty());
        assert!(errors(&events).is_empty() && has_raw(&events));
    }

    #[test]
    fn usage_sums() {
        let events = [
            AgentEvent::Usage(usage(1, 2, 3, 4)),
            AgentEvent::Message("m".into()),
            AgentEvent::Usage(usage(10, 20, 30, 40)),
        ];
        assert_eq!(total_usage(&events), Some(usage(11, 22, 33, 44)));
        assert_eq!(total_usage(&events[1..2]), None);
    }
}
