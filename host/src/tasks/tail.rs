//! The newest events of a running task, kept in memory so that live subscribers read them
//! without going back to the store. Bounded by bytes, not count: a task printing long lines
//! keeps fewer of them. A subscriber that falls behind the tail reads the store instead.

use crate::store::EventRecord;
use std::collections::VecDeque;
use std::sync::Arc;

/// How many bytes of events (roughly) a task keeps in memory for its live subscribers.
pub const TAIL_BYTES: usize = 1 << 20;

/// A rough size of an event in memory: its text plus bookkeeping.
fn weight(e: &EventRecord) -> usize {
    use crate::contract::{AgentEvent, EventBody};
    let text = match &e.body {
        EventBody::Output(line) => line.text.len(),
        EventBody::Agent(AgentEvent::Message(t) | AgentEvent::Error(t) | AgentEvent::Raw(t)) => {
            t.len()
        }
        EventBody::Agent(AgentEvent::ToolUse(t)) => t.id.len() + t.name.len() + t.input.len(),
        EventBody::Agent(AgentEvent::ToolResult(t)) => t.id.len() + t.output.len(),
        EventBody::Agent(AgentEvent::Done(d)) => d.final_text.as_ref().map_or(0, String::len) + 64,
        EventBody::Agent(_) => 64,
        EventBody::State(s) => s.error.as_ref().map_or(0, String::len) + 32,
    };
    text + 96
}

/// What a subscriber at a given `seq` can get from the tail.
#[derive(Debug, PartialEq)]
pub enum Read {
    /// Events from the asked-for `seq` on, shared with the tail and every other reader: a
    /// read under the task's lock copies pointers, not text.
    Events(Vec<Arc<EventRecord>>),
    /// Nothing after that `seq` was appended yet.
    UpToDate,
    /// The `seq` is older than the tail holds: read the store.
    Behind,
}

/// The tail of one task's log.
#[derive(Debug)]
pub struct Tail {
    events: VecDeque<Arc<EventRecord>>,
    /// The `seq` the next appended event will have.
    next_seq: u64,
    bytes: usize,
    budget: usize,
}

impl Tail {
    /// An empty tail whose first event will be `next_seq`, holding about `budget` bytes.
    pub fn new(next_seq: u64, budget: usize) -> Tail {
        Tail {
            events: VecDeque::new(),
            next_seq,
            bytes: 0,
            budget,
        }
    }

    /// Add events that were just persisted, in order, dropping the oldest over budget.
    pub fn push(&mut self, records: Vec<EventRecord>) {
        for e in records {
            debug_assert_eq!(e.seq, self.next_seq, "the tail takes events in order");
            self.bytes += weight(&e);
            self.next_seq = e.seq + 1;
            self.events.push_back(Arc::new(e));
        }
        while self.bytes > self.budget && self.events.len() > 1 {
            let old = self.events.pop_front().expect("not empty");
            self.bytes -= weight(&old);
        }
    }

    /// Up to `max` events from `seq` on.
    pub fn read(&self, seq: u64, max: usize) -> Read {
        if seq >= self.next_seq {
            return Read::UpToDate;
        }
        let first = self.next_seq - self.events.len() as u64;
        if seq < first {
            return Read::Behind;
        }
        let skip = (seq - first) as usize;
        Read::Events(self.events.iter().skip(skip).take(max).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{EventBody, OutputLine, OutputStream};

    fn line(seq: u64, text: &str) -> EventRecord {
        EventRecord {
            seq,
            body: EventBody::Output(OutputLine {
                stream: OutputStream::Stdout,
                text: text.into(),
                partial: false,
            }),
            at: 0,
        }
    }

    fn seqs(read: Read) -> Vec<u64> {
        match read {
            Read::Events(events) => events.iter().map(|e| e.seq).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn serves_what_it_holds_and_sends_older_readers_to_the_store() {
        let mut tail = Tail::new(1, 10 * (96 + 4));
        assert_eq!(tail.read(1, 10), Read::UpToDate);
        let batch: Vec<_> = (1..=25).map(|s| line(s, "abcd")).collect();
        tail.push(batch);
        // Ten events fit: 16..=25.
        assert_eq!(tail.read(15, 10), Read::Behind);
        assert_eq!(seqs(tail.read(16, 3)), [16, 17, 18]);
        assert_eq!(seqs(tail.read(24, 10)), [24, 25]);
        assert_eq!(tail.read(26, 10), Read::UpToDate);
    }

    #[test]
    fn long_lines_leave_room_for_fewer_events_but_the_newest_stays() {
        let mut tail = Tail::new(1, 1000);
        tail.push(vec![line(1, "short")]);
        tail.push(vec![line(2, &"x".repeat(5000))]);
        assert_eq!(tail.read(1, 10), Read::Behind);
        assert_eq!(seqs(tail.read(2, 10)), [2]);
    }
}
