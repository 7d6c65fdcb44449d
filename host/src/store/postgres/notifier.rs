//! [`LogNotifier`] across nodes: "task X's log has grown" and "cancel task X" travel between
//! the nodes of one PostgreSQL store by `NOTIFY` on two channels, heard on one dedicated
//! `LISTEN` connection per node.
//!
//! Notifications are a wake-up, never the data: a follower reads the log from the store. A
//! notification can be lost (the listening connection drops and is made again), so followers
//! of another node's task are also woken by a poll of the tasks table every
//! [`POLL_EVERY`]; a task that ended before anyone followed it is seen ended at the first poll.

use crate::store::{LocalNotifier, LogNotifier, LogProgress};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The channel of log progress: payload `task_id last_seq ended(0|1)`.
const LOG_CHANNEL: &str = "gantry_log";
/// The channel of cancel requests: payload `task_id`.
const CANCEL_CHANNEL: &str = "gantry_cancel";
/// How often followers of other nodes' tasks are woken from the store, whatever was heard.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// How long after a task's stored end a follower stops waiting for its log's last entry.
const END_GRACE: Duration = Duration::from_secs(5);
/// How long the listener waits before connecting again after its connection failed.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// What goes out: sent by one background task, in order, on a pooled connection.
enum Outgoing {
    Log(String, LogProgress),
    Cancel(String),
}

/// The notifier of a node on a PostgreSQL store.
#[derive(Debug)]
pub struct PgNotifier {
    /// Logs written on this node.
    local: LocalNotifier,
    /// Followers of logs written elsewhere, by task.
    remote: Mutex<HashMap<String, watch::Sender<LogProgress>>>,
    outgoing: mpsc::UnboundedSender<Outgoing>,
    /// Cancel requests heard for tasks, until the supervisor takes them.
    cancels: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
}

impl PgNotifier {
    /// Start the node's notifier on `pool` (sending) and a connection of its own to `config`
    /// (listening). Its background tasks end when it is dropped.
    pub(super) fn start(
        pool: deadpool_postgres::Pool,
        config: tokio_postgres::Config,
    ) -> Arc<PgNotifier> {
        let (outgoing, out_rx) = mpsc::unbounded_channel();
        let (cancel_tx, cancel_rx) = mpsc::unbounded_channel();
        let notifier = Arc::new(PgNotifier {
            local: LocalNotifier::default(),
            remote: Mutex::new(HashMap::new()),
            outgoing,
            cancels: Mutex::new(Some(cancel_rx)),
        });
        tokio::spawn(send(pool.clone(), out_rx));
        tokio::spawn(listen(config, Arc::downgrade(&notifier), cancel_tx));
        tokio::spawn(poll(pool, Arc::downgrade(&notifier)));
        notifier
    }

    fn remote(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<LogProgress>>> {
        self.remote.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Progress heard (or polled) of a task written elsewhere.
    fn heard(&self, task_id: &str, progress: LogProgress) {
        let mut remote = self.remote();
        if let Some(tx) = remote.get(task_id) {
            // Progress only moves forward: a late notification never undoes a newer poll.
            tx.send_if_modified(|seen| {
                let newer = progress.last_seq > seen.last_seq || (progress.ended && !seen.ended);
                if newer {
                    seen.last_seq = seen.last_seq.max(progress.last_seq);
                    seen.ended |= progress.ended;
                }
                newer
            });
            if progress.ended {
                remote.remove(task_id);
            }
        }
    }
}

impl LogNotifier for PgNotifier {
    fn announce(&self, task_id: &str, progress: LogProgress) {
        self.local.announce(task_id, progress);
        let _ = self
            .outgoing
            .send(Outgoing::Log(task_id.to_string(), progress));
    }

    fn follow(&self, task_id: &str) -> Option<watch::Receiver<LogProgress>> {
        if let Some(rx) = self.local.follow(task_id) {
            return Some(rx);
        }
        let mut remote = self.remote();
        // Forget followers that went away, so the map holds only tasks someone follows.
        remote.retain(|_, tx| tx.receiver_count() > 0);
        let tx = remote
            .entry(task_id.to_string())
            .or_insert_with(|| watch::channel(LogProgress::default()).0);
        Some(tx.subscribe())
    }

    fn open(&self, task_id: &str) {
        self.local.open(task_id);
    }

    fn request_cancel(&self, task_id: &str) {
        let _ = self.outgoing.send(Outgoing::Cancel(task_id.to_string()));
    }

    fn cancel_requests(&self) -> Option<mpsc::UnboundedReceiver<String>> {
        self.cancels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

/// Send what the node announces, in order; a failed send is logged and dropped (followers'
/// polls cover it).
async fn send(pool: deadpool_postgres::Pool, mut out: mpsc::UnboundedReceiver<Outgoing>) {
    while let Some(first) = out.recv().await {
        // What queued meanwhile goes in the same round trip.
        let mut batch = vec![first];
        while let Ok(more) = out.try_recv() {
            batch.push(more);
        }
        let (channels, payloads): (Vec<&str>, Vec<String>) = batch
            .iter()
            .map(|o| match o {
                Outgoing::Log(id, p) => (
                    LOG_CHANNEL,
                    format!("{id} {} {}", p.last_seq, u8::from(p.ended)),
                ),
                Outgoing::Cancel(id) => (CANCEL_CHANNEL, id.clone()),
            })
            .unzip();
        let sent = async {
            let client = pool.get().await?;
            client
                .execute(
                    "SELECT pg_notify(c, p) FROM unnest($1::TEXT[], $2::TEXT[]) AS n(c, p)",
                    &[&channels, &payloads],
                )
                .await?;
            Ok::<_, crate::store::StoreError>(())
        };
        if let Err(e) = sent.await {
            tracing::warn!("notifying other nodes: {e}");
        }
    }
}

/// Hear both channels on a connection of the notifier's own, connecting again when it drops.
async fn listen(
    config: tokio_postgres::Config,
    notifier: Weak<PgNotifier>,
    cancels: mpsc::UnboundedSender<String>,
) {
    loop {
        if notifier.strong_count() == 0 {
            return;
        }
        match config.connect(tokio_postgres::NoTls).await {
            Ok((client, mut connection)) => {
                let (tx, mut messages) = mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    let mut stream =
                        futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = stream.next().await {
                        match message {
                            Ok(m) => {
                                if tx.send(m).is_err() {
                                    return;
                                }
                            }
                            Err(e) => {
                                tracing::warn!("the store's notification connection failed: {e}");
                                return;
                            }
                        }
                    }
                });
                let listening = client
                    .batch_execute(&format!("LISTEN {LOG_CHANNEL}; LISTEN {CANCEL_CHANNEL}"))
                    .await;
                if let Err(e) = listening {
                    tracing::warn!("listening for other nodes' notifications: {e}");
                } else {
                    while let Some(message) = messages.recv().await {
                        let tokio_postgres::AsyncMessage::Notification(n) = message else {
                            continue;
                        };
                        let Some(notifier) = notifier.upgrade() else {
                            return;
                        };
                        match n.channel() {
                            LOG_CHANNEL => {
                                if let Some((id, progress)) = parse_progress(n.payload()) {
                                    notifier.heard(id, progress);
                                }
                            }
                            CANCEL_CHANNEL => {
                                let _ = cancels.send(n.payload().to_string());
                            }
                            _ => {}
                        }
                    }
                }
                driver.abort();
                drop(client);
            }
            Err(e) => tracing::warn!("connecting to hear other nodes' notifications: {e}"),
        }
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

/// `task_id last_seq ended` of a log notification.
fn parse_progress(payload: &str) -> Option<(&str, LogProgress)> {
    let mut parts = payload.split(' ');
    let id = parts.next().filter(|id| !id.is_empty())?;
    let last_seq = parts.next()?.parse().ok()?;
    let ended = match parts.next()? {
        "0" => false,
        "1" => true,
        _ => return None,
    };
    parts
        .next()
        .is_none()
        .then_some((id, LogProgress { last_seq, ended }))
}

/// Wake followers of other nodes' tasks from the tasks table, whatever was heard.
async fn poll(pool: deadpool_postgres::Pool, notifier: Weak<PgNotifier>) {
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(n) = notifier.upgrade() else {
            return;
        };
        let followed: Vec<String> = {
            let mut remote = n.remote();
            remote.retain(|_, tx| tx.receiver_count() > 0);
            remote.keys().cloned().collect()
        };
        if followed.is_empty() {
            continue;
        }
        let read = async {
            let client = pool.get().await?;
            // A task's end is stored in its row before its log's last entry (its state
            // change) is appended: it counts as ended once that entry is there too, or once
            // the end is older than [`END_GRACE`] (its node died between the two writes).
            // Ended too early, a follower would stop one entry short of the end.
            let settled = crate::store::now_ms() - END_GRACE.as_millis() as i64;
            let rows = client
                .query(
                    "SELECT t.id, t.last_seq, t.state NOT IN ('pending', 'running') AND (
                         t.finished_at < $2 OR EXISTS (
                             SELECT 1 FROM events e
                             WHERE e.task_id = t.id AND e.seq = t.last_seq AND e.kind = 'state'
                               AND e.data::jsonb ->> 'state' = t.state))
                     FROM tasks t WHERE t.id = ANY($1)",
                    &[&followed, &settled],
                )
                .await?;
            Ok::<_, crate::store::StoreError>(rows)
        };
        match read.await {
            Ok(rows) => {
                for row in rows {
                    let id: String = row.get(0);
                    let last_seq: i64 = row.get(1);
                    n.heard(
                        &id,
                        LogProgress {
                            last_seq: last_seq.max(0) as u64,
                            ended: row.get(2),
                        },
                    );
                }
            }
            Err(e) => tracing::debug!("polling followed tasks: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_payloads_parse_strictly() {
        assert_eq!(
            parse_progress("t-1 42 0"),
            Some((
                "t-1",
                LogProgress {
                    last_seq: 42,
                    ended: false
                }
            ))
        );
        assert_eq!(parse_progress("t-1 7 1").map(|(_, p)| p.ended), Some(true));
        for bad in ["", "t-1", "t-1 x 0", "t-1 1 2", "t-1 1 0 extra", " 1 0"] {
            assert_eq!(parse_progress(bad), None, "{bad:?}");
        }
    }
}
