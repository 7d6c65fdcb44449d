//! From a parser of output lines to the adapter's `run` resource.
//!
//! An adapter writes a [`LineParser`] (or, for an agent CLI that prints one JSON object a
//! line, a [`JsonLines`], which is a `LineParser` by itself) and names [`AgentRun`] as its
//! `Guest::Run`: `parse-lines`, `finish` and the constructor are implemented here once.
//!
//! ```ignore
//! impl Guest for MyCli {
//!     type Run = gantry_guest::lines::AgentRun<parse::Parser>;
//!     // describe, build_command ...
//! }
//! ```

use crate::adapter::Outcome;
use crate::backend::exports::gantry::plugin::adapter::GuestRun;
use crate::types::{AgentEvent, OutputLine, OutputStream, PromptRequest, RunSummary};
use serde_json::Value;
use std::cell::RefCell;

/// The parsing state of one run: fed each output line, summed up at exit.
pub trait LineParser: 'static {
    /// The state for a run of `request`.
    fn start(request: &PromptRequest) -> Self;
    /// Unified events for one output line (a piece of a line longer than the host's limit
    /// comes as a line of its own).
    fn parse_line(&mut self, stream: OutputStream, line: &str) -> Vec<AgentEvent>;
    /// Sum up the run once the process has exited.
    fn finish(&mut self, exit_code: Option<i32>) -> RunSummary;
}

/// A parser of an agent CLI that prints one JSON object a line on stdout. What it does not
/// write is done here, the same for every such CLI:
///
/// - stderr: empty lines and lines starting with one of [`JsonLines::STDERR_NOISE`] are
///   dropped; every other line is a `raw` event and noted (see [`Outcome::note_stderr`]);
/// - stdout: a line that is not JSON is a `raw` event and marks the outcome `unreadable` (it
///   may be a piece of a split line); a JSON line goes to [`JsonLines::event`], and is a `raw`
///   event when that does not understand it;
/// - the summary is the outcome's (see [`Outcome::summary`]).
pub trait JsonLines: Default + 'static {
    /// Prefixes of stderr lines the CLI prints on every run, of no interest.
    const STDERR_NOISE: &'static [&'static str] = &[];

    /// The parser for a run of `request` (the default one, unless the run's request matters).
    fn start(_request: &PromptRequest) -> Self {
        Self::default()
    }

    /// What the output said so far about how the run goes.
    fn outcome(&mut self) -> &mut Outcome;

    /// The events of a JSON line of stdout; `None` when it is not understood (it becomes a
    /// `raw` event). `Some` of an empty list drops the line.
    fn event(&mut self, line: &Value) -> Option<Vec<AgentEvent>>;
}

impl<P: JsonLines> LineParser for P {
    fn start(request: &PromptRequest) -> Self {
        <P as JsonLines>::start(request)
    }

    fn parse_line(&mut self, stream: OutputStream, line: &str) -> Vec<AgentEvent> {
        if stream == OutputStream::Stderr {
            let noise =
                line.trim().is_empty() || P::STDERR_NOISE.iter().any(|n| line.starts_with(n));
            if noise {
                return vec![];
            }
            self.outcome().note_stderr(line);
            return vec![AgentEvent::Raw(line.to_string())];
        }
        let events = match serde_json::from_str::<Value>(line) {
            Ok(value) => self.event(&value),
            Err(_) => {
                self.outcome().unreadable = true;
                None
            }
        };
        events.unwrap_or_else(|| vec![AgentEvent::Raw(line.to_string())])
    }

    fn finish(&mut self, exit_code: Option<i32>) -> RunSummary {
        self.outcome().summary(exit_code)
    }
}

/// `parse-lines`: the events of each line, in order, one list per line.
pub fn parse_lines<P: LineParser>(parser: &mut P, lines: &[OutputLine]) -> Vec<Vec<AgentEvent>> {
    lines
        .iter()
        .map(|line| parser.parse_line(line.stream, &line.text))
        .collect()
}

/// The `run` resource of an adapter whose runs `P` parses.
pub struct AgentRun<P>(RefCell<P>);

impl<P: LineParser> GuestRun for AgentRun<P> {
    fn new(request: PromptRequest) -> Self {
        AgentRun(RefCell::new(P::start(&request)))
    }

    fn parse_lines(&self, lines: Vec<OutputLine>) -> Vec<Vec<AgentEvent>> {
        parse_lines(&mut *self.0.borrow_mut(), &lines)
    }

    fn finish(&self, exit_code: Option<i32>) -> RunSummary {
        self.0.borrow_mut().finish(exit_code)
    }
}
