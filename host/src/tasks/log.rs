//! A task's log: the writer that persists each entry before announcing it, and the readers
//! (subscriptions) that follow it from any `seq` — from the running task's in-memory tail while
//! they keep up, from the store otherwise.

use super::tail;
use crate::contract::{AgentEvent, EventBody};
use crate::store::{
    Appended, EventRecord, LogNotifier, LogProgress, OutputQuota, Store, TaskRecord, now_ms,
};
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
    buffer: VecDeque<Arc<EventRecord>>,
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
        self.buffer.extend(batch.into_iter().map(Arc::new));
        Ok(got)
    }

    /// The task whose log this reads.
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// The next event if one is already logged, without waiting. Events are shared among the
    /// task's readers (`Arc::unwrap_or_clone` for one of one's own).
    pub async fn next_ready(&mut self) -> anyhow::Result<Option<Arc<EventRecord>>> {
        if self.buffer.is_empty() {
            self.fill().await?;
        }
        Ok(self
            .buffer
            .pop_front()
            .inspect(|e| self.next_seq = e.seq + 1))
    }

    /// The next event, waiting for it if the task still runs; `None` after the last one.
    pub async fn next(&mut self) -> anyhow::Result<Option<Arc<EventRecord>>> {
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
            // Waiting may last as long as the task: an idle follower holds no batch's room.
            self.buffer = VecDeque::new();
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
    /// The tenant's caps on stored output, applied to the task's output (its state changes
    /// are always stored, so that its log ends with how it ended).
    pub(super) quota: Option<OutputQuota>,
    /// The quota cut the task's output: nothing more of it is stored.
    pub(super) truncated: bool,
}

/// The start of the marker a log gets where the quota cut its output.
pub const TRUNCATED: &str = "output truncated";

impl TaskLog {
    /// Persist output `entries` (lines and the agent events parsed from them) as far as the
    /// tenant's quota allows, then announce them. Where the quota cuts them, the log gets one
    /// marker, and the rest of the task's output is dropped from then on: a log that stops at
    /// a marker, rather than one with holes wherever other tasks freed room meanwhile.
    pub(super) async fn append_output(&mut self, entries: Vec<EventBody>) -> anyhow::Result<()> {
        if self.truncated || entries.is_empty() {
            return Ok(());
        }
        let offered = entries.len();
        let appended = self.write(entries, self.quota, None, || {}).await?;
        if appended.stored < offered {
            self.truncated = true;
            let quota = self.quota.unwrap_or_default();
            let stored = appended.tenant;
            let marker = format!(
                "{TRUNCATED}: this tenant's stored task output is at its quota ({} of {} entries, \
                 {} of {} bytes; 0 is no cap), so the rest of this task's output is not stored",
                stored.events, quota.max_events, stored.bytes, quota.max_bytes
            );
            self.append(vec![EventBody::Agent(AgentEvent::Error(marker))])
                .await?;
        }
        Ok(())
    }

    /// Persist `entries` as the next events of the log, whatever the quota, then announce
    /// them.
    pub(super) async fn append(&mut self, entries: Vec<EventBody>) -> anyhow::Result<()> {
        self.write(entries, None, None, || {}).await.map(drop)
    }

    /// Store `task`'s row and persist `entries` in one commit (a change of state and its log
    /// entry), whatever the quota; call `stored` once they are, then announce them.
    pub(super) async fn append_with_row(
        &mut self,
        task: &TaskRecord,
        entries: Vec<EventBody>,
        stored: impl FnOnce(),
    ) -> anyhow::Result<()> {
        self.write(entries, None, Some(task), stored)
            .await
            .map(drop)
    }

    async fn write(
        &mut self,
        entries: Vec<EventBody>,
        quota: Option<OutputQuota>,
        row: Option<&TaskRecord>,
        stored: impl FnOnce(),
    ) -> anyhow::Result<Appended> {
        if entries.is_empty() {
            return Ok(Appended::default());
        }
        let at = now_ms();
        let mut records: Vec<EventRecord> = (self.next_seq..)
            .zip(entries)
            .map(|(seq, body)| EventRecord { seq, body, at })
            .collect();
        let appended = match row {
            Some(task) => self.store.update_task_and_append(task, &records).await?,
            None => {
                self.store
                    .append_events(&self.task_id, &records, quota)
                    .await?
            }
        };
        stored();
        records.truncate(appended.stored);
        if records.is_empty() {
            return Ok(appended);
        }
        self.next_seq += records.len() as u64;
        self.tail.lock().unwrap().push(records);
        let progress = LogProgress {
            last_seq: self.next_seq - 1,
            ended: false,
        };
        self.notifier.announce(&self.task_id, progress);
        Ok(appended)
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
