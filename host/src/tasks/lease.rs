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
