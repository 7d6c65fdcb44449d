//! This node's identity and its lease in the store: the node's tasks are its own while the
//! lease holds, and another node takes them over (as interrupted) only once it has expired.

use crate::store::{Store, now_ms};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The id of the node whose data directory is `data_dir`: made once, kept in `node-id`, so
/// that a restarted node knows which unfinished tasks were its own.
pub(crate) fn node_id(data_dir: &Path) -> anyhow::Result<String> {
    let file = data_dir.join("node-id");
    match std::fs::read_to_string(&file) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        _ => {
            let id = uuid::Uuid::new_v4().to_string();
            std::fs::write(&file, &id)?;
            Ok(id)
        }
    }
}

/// The node's lease, renewed every third of its length until dropped. Each renewal also takes
/// over the nodes whose lease has expired.
#[derive(Debug)]
pub(crate) struct Lease {
    _stop: watch::Sender<()>,
}

impl Lease {
    /// Claim `node`'s lease now and keep renewing it in the background.
    pub(crate) async fn claim(
        store: Arc<dyn Store>,
        node: String,
        lease: Duration,
    ) -> anyhow::Result<Lease> {
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        store.claim_lease(&node, now_ms(), lease_ms).await?;
        let (stop, mut stopped) = watch::channel(());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(lease / 3);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => return,
                }
                if let Err(e) = store.claim_lease(&node, now_ms(), lease_ms).await {
                    tracing::error!(node = %node, "renewing the node's lease failed: {e:#}");
                }
                match store.take_over_expired(now_ms()).await {
                    Ok(ids) if !ids.is_empty() => tracing::warn!(
                        count = ids.len(),
                        "tasks of a node whose lease expired are now interrupted"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::error!("taking over expired nodes failed: {e:#}"),
                }
            }
        });
        Ok(Lease { _stop: stop })
    }
}

/// The ids of the live nodes, as last read from the store: `/health` lists them on every
/// probe, and probes within `fresh_for` of a read share it instead of each querying the store.
/// A node that joined (or whose lease lapsed) shows so within that long.
#[derive(Debug)]
pub(crate) struct LiveNodes {
    fresh_for: Duration,
    last: tokio::sync::Mutex<Option<(std::time::Instant, Vec<String>)>>,
}

/// How old the live nodes a node lists may be.
pub(crate) const LIVE_NODES_FRESH_FOR: Duration = Duration::from_millis(500);

impl LiveNodes {
    pub(crate) fn new(fresh_for: Duration) -> LiveNodes {
        LiveNodes {
            fresh_for,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// The last answer while it is fresh, else `read`'s (kept only when it succeeds). Probes
    /// that come while a read is under way wait for it and share it.
    pub(crate) async fn get<E>(
        &self,
        read: impl Future<Output = Result<Vec<String>, E>>,
    ) -> Result<Vec<String>, E> {
        let mut last = self.last.lock().await;
        if let Some((at, ids)) = &*last
            && at.elapsed() < self.fresh_for
        {
            return Ok(ids.clone());
        }
        let ids = read.await?;
        *last = Some((std::time::Instant::now(), ids.clone()));
        Ok(ids)
    }
}

#[cfg(test)]
mod live_nodes_tests {
    use super::*;

    fn read(ids: &[&str]) -> impl Future<Output = Result<Vec<String>, ()>> + use<> {
        let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        async move { Ok(ids) }
    }

    #[tokio::test]
    async fn a_fresh_answer_is_shared_and_a_stale_or_failed_one_is_not() {
        let shared = LiveNodes::new(Duration::from_secs(3600));
        assert_eq!(shared.get(read(&["a"])).await.unwrap(), ["a"]);
        // Within the window the store is not asked: b's join is not seen yet.
        assert_eq!(shared.get(read(&["a", "b"])).await.unwrap(), ["a"]);
        // Past it, every probe reads again.
        let stale = LiveNodes::new(Duration::ZERO);
        assert_eq!(stale.get(read(&["a"])).await.unwrap(), ["a"]);
        assert_eq!(stale.get(read(&["a", "b"])).await.unwrap(), ["a", "b"]);
        // A failed read is the caller's error and keeps nothing.
        let failing = LiveNodes::new(Duration::from_secs(3600));
        assert!(
            failing
                .get(async { Err::<Vec<String>, _>(()) })
                .await
                .is_err()
        );
        assert_eq!(failing.get(read(&["b"])).await.unwrap(), ["b"]);
    }
}
