//! A task's log: the writer that persists each entry before announcing it, and the readers
//! (subscriptions) that follow it from any `seq` — from the running task's in-memory tail while
//! they keep up, from the store otherwise.

use super::tail;
use crate::contract::EventBody;
use crate::store::{EventRecord, LogNotifier, LogProgress, Store, now_ms};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Events a subscription takes from the tail or the store at once.
const READ_BATCH: usize = 1000;

/// A reader of one task's log: from the running task's in-memory tail while it keeps up,
/// from the store otherwise.
#[derive(Debug)]
pub struct Subscription {
    store: Arc<dyn Store>,
    task_id: String,
    next_seq: u64,
    progress: Option<watch::Receiver<LogProgress>>,
    tail: Option<Arc<Mutex<tail::Tail>>>,
    buffer: VecDeque<EventRecord>,
}

impl Subscription {
    /// A reader of task `task_id`'s log from `from_seq` (1 is the start); `progress` and
    /// `tail` while the task is live here.
    pub(super) fn new(
        store: Arc<dyn Store>,
        task_id: String,
        from_seq: u64,
        progress: Option<watch::Receiver<LogProgress>>,
        tail: Option<Arc<Mutex<tail::Tail>>>,
    ) -> Subscription {
        Subscription {
            store,
            task_id,
            next_seq: from_seq.max(1),
            progress,
            tail,
            buffer: VecDeque::new(),
        }
    }

    /// Fill the buffer with what is logged from `next_seq` on; whether anything came.
    async fn fill(&mut self) -> anyhow::Result<bool> {
        if let Some(tail) = &self.tail {
            match tail.lock().unwrap().read(self.next_seq, READ_BATCH) {
                tail::Read::Events(events) => {
                    self.buffer.extend(events);
                    return Ok(true);
                }
                // Everything persisted is pushed to the tail before it is announced.
                tail::Read::UpToDate => return Ok(false),
                tail::Read::Behind => {}
            }
        }
        let batch = self
            .store
            .read_events(&self.task_id, self.next_seq, READ_BATCH)
            .await?;
        let got = !batch.is_empty();
        self.buffer.extend(batch);
        Ok(got)
    }

    /// The task whose log this reads.
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// The next event if one is already logged, without waiting.
    pub async fn next_ready(&mut self) -> anyhow::Result<Option<EventRecord>> {
        if self.buffer.is_empty() {
            self.fill().await?;
        }
        Ok(self
            .buffer
            .pop_front()
            .inspect(|e| self.next_seq = e.seq + 1))
    }

    /// The next event, waiting for it if the task still runs; `None` after the last one.
    pub async fn next(&mut self) -> anyhow::Result<Option<EventRecord>> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.next_seq = event.seq + 1;
                return Ok(Some(event));
            }
            if self.fill().await? {
                continue;
            }
            let Some(progress) = &mut self.progress else {
                return Ok(None);
            };
            let seen = *progress.borrow_and_update();
            if seen.ended {
                // One more read picks up what was appended before the end was announced.
                self.progress = None;
                continue;
            }
            if seen.last_seq >= self.next_seq {
                continue;
            }
            if progress.changed().await.is_err() {
                self.progress = None;
            }
        }
    }
}

/// Appends to one task's log and announces each append.
pub(super) struct TaskLog {
    pub(super) store: Arc<dyn Store>,
    pub(super) notifier: Arc<dyn LogNotifier>,
    pub(super) task_id: String,
    pub(super) next_seq: u64,
    pub(super) tail: Arc<Mutex<tail::Tail>>,
}

impl TaskLog {
    /// Persist `entries` as the next events of the log, then announce them.
    pub(super) async fn append(&mut self, entries: Vec<EventBody>) -> anyhow::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let at = now_ms();
        let records: Vec<EventRecord> = entries
            .into_iter()
            .map(|body| {
                let seq = self.next_seq;
                self.next_seq += 1;
                EventRecord { seq, body, at }
            })
            .collect();
        self.store.append_events(&self.task_id, &records).await?;
        self.tail.lock().unwrap().push(&records);
        let progress = LogProgress {
            last_seq: self.next_seq - 1,
            ended: false,
        };
        self.notifier.announce(&self.task_id, progress);
        Ok(())
    }

    /// Announce that nothing more will be appended.
    pub(super) fn end(&self) {
        let progress = LogProgress {
            last_seq: self.next_seq - 1,
            ended: true,
        };
        self.notifier.announce(&self.task_id, progress);
    }
}
