//! Retention: a background pass, every `storage.retention_interval_ms`, that deletes each
//! tenant's finished tasks (rows and logs) once they are older than its age limit, and its
//! oldest finished tasks while it stores more output than its size budget; then the store gives
//! the space back (the write-ahead log truncated, free pages released). Pending and running
//! tasks are never deleted: the store's queries leave them out.
//!
//! Whole tasks go, never part of a log: a task is either there with its whole log, ending in
//! its final state, or gone (404) — no log that reads as if the task printed nothing, no
//! `output_lines` that its log no longer holds.

use crate::config::StorageConfig;
use crate::store::{Store, StoreResult, now_ms};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A task that finished less than this long ago is left to a later pass: its final state
/// change is stored a moment before it is logged, and the task goes only once both are in.
const SETTLE_MS: i64 = 1000;

/// The background pass, run until dropped.
#[derive(Debug)]
pub(crate) struct Retention {
    _stop: watch::Sender<()>,
}

impl Retention {
    /// Run retention over `store` as `config` says; `None` when its interval is 0 (off).
    pub(crate) fn start(store: Arc<dyn Store>, config: StorageConfig) -> Option<Retention> {
        if config.retention_interval_ms == 0 {
            return None;
        }
        let (stop, mut stopped) = watch::channel(());
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(Duration::from_millis(config.retention_interval_ms));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => return,
                }
                match pass(store.as_ref(), &config, now_ms()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(tasks = n, "retention deleted finished tasks"),
                    Err(e) => tracing::warn!("retention failed: {e:#}"),
                }
                if let Err(e) = store.reclaim_space().await {
                    tracing::warn!("giving the store's free space back failed: {e:#}");
                }
            }
        });
        Some(Retention { _stop: stop })
    }
}

/// One pass at `now` (ms since the epoch): how many tasks it deleted.
pub(crate) async fn pass(store: &dyn Store, config: &StorageConfig, now: i64) -> StoreResult<u64> {
    let settled = now.saturating_sub(SETTLE_MS);
    let mut deleted = 0;
    for (tenant, stored) in store.stored_output_by_tenant().await? {
        let policy = config.for_tenant(&tenant);
        if policy.retention_max_age_secs > 0 {
            let age_ms = i64::try_from(policy.retention_max_age_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX);
            let before = now.saturating_sub(age_ms).min(settled);
            deleted += store.delete_finished_before(&tenant, before).await?;
        }
        if policy.retention_max_bytes > 0 && stored.bytes > policy.retention_max_bytes {
            deleted += store
                .trim_finished_to(&tenant, policy.retention_max_bytes, settled)
                .await?;
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TenantStorageOverride;
    use crate::contract::{EventBody, OutputLine, OutputStream};
    use crate::store::{
        EventRecord, RetentionStore, Sqlite, TaskRecord, TaskState, TaskStore, WorkspaceRecord,
        WorkspaceStore,
    };

    async fn task(db: &Sqlite, id: &str, tenant: &str, state: TaskState, finished: Option<i64>) {
        if db.get_workspace(tenant, tenant).await.unwrap().is_none() {
            db.create_workspace(&WorkspaceRecord {
                id: tenant.into(),
                tenant: tenant.into(),
                name: tenant.into(),
                created_at: 0,
                path: None,
            })
            .await
            .unwrap();
        }
        db.insert_task(&TaskRecord {
            id: id.into(),
            tenant: tenant.into(),
            workspace_id: tenant.into(),
            backend: "sh".into(),
            request: crate::contract::plain_request("p"),
            state,
            created_at: 0,
            started_at: Some(0),
            finished_at: finished,
            exit_code: None,
            error: None,
            summary: None,
            last_seq: 0,
            output_lines: 0,
            node: None,
        })
        .await
        .unwrap();
        let events: Vec<_> = (1..=10)
            .map(|seq| EventRecord {
                seq,
                body: EventBody::Output(OutputLine {
                    stream: OutputStream::Stdout,
                    text: "x".repeat(100),
                    partial: false,
                }),
                at: 0,
            })
            .collect();
        db.append_events(id, &events, None).await.unwrap();
    }

    fn config(age_secs: u64, max_bytes: u64) -> StorageConfig {
        StorageConfig {
            retention_max_age_secs: age_secs,
            retention_max_bytes: max_bytes,
            ..StorageConfig::default()
        }
    }

    #[tokio::test]
    async fn old_finished_tasks_go_and_running_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(&dir.path().join("g.db")).unwrap();
        let day = 86_400_000;
        let now = 10 * day;
        task(&db, "old", "alice", TaskState::Done, Some(now - 3 * day)).await;
        task(&db, "new", "alice", TaskState::Failed, Some(now - day / 2)).await;
        task(&db, "run", "alice", TaskState::Running, None).await;
        task(&db, "bob-old", "bob", TaskState::Done, Some(now - 3 * day)).await;
        let mut cfg = config(2 * 86_400, 0);
        // bob keeps his tasks forever.
        cfg.tenants.insert(
            "bob".into(),
            TenantStorageOverride {
                retention_max_age_secs: Some(0),
                ..Default::default()
            },
        );
        assert_eq!(pass(&db, &cfg, now).await.unwrap(), 1);
        assert!(db.get_task("alice", "old").await.unwrap().is_none());
        assert!(db.read_events("old", 1, 100).await.unwrap().is_empty());
        for id in ["new", "run"] {
            assert!(db.get_task("alice", id).await.unwrap().is_some(), "{id}");
        }
        assert!(db.get_task("bob", "bob-old").await.unwrap().is_some());
        // Nothing more to do.
        assert_eq!(pass(&db, &cfg, now).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn over_its_budget_a_tenant_loses_its_oldest_finished_tasks_first() {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(&dir.path().join("g.db")).unwrap();
        let now = 1_000_000;
        task(&db, "a", "alice", TaskState::Done, Some(now - 5000)).await;
        task(&db, "b", "alice", TaskState::Done, Some(now - 4000)).await;
        task(&db, "c", "alice", TaskState::Done, Some(now - 3000)).await;
        task(&db, "run", "alice", TaskState::Running, None).await;
        // Just finished: left to a later pass.
        task(&db, "fresh", "alice", TaskState::Done, Some(now - 10)).await;
        let per_task = db.stored_output("alice").await.unwrap().bytes / 5;
        // Room for two tasks and a half: the three oldest finished go, oldest first, and
        // then only running and just-finished tasks are left.
        let cfg = config(0, per_task * 5 / 2);
        assert_eq!(pass(&db, &cfg, now).await.unwrap(), 3);
        for (id, kept) in [
            ("a", false),
            ("b", false),
            ("c", false),
            ("run", true),
            ("fresh", true),
        ] {
            assert_eq!(
                db.get_task("alice", id).await.unwrap().is_some(),
                kept,
                "{id}"
            );
        }
        assert_eq!(db.stored_output("alice").await.unwrap().bytes, per_task * 2);
        // A roomier budget stops at the first task that brings it under.
        task(&db, "d", "alice", TaskState::Done, Some(now - 2000)).await;
        task(&db, "e", "alice", TaskState::Done, Some(now - 1500)).await;
        let cfg = config(0, per_task * 3);
        assert_eq!(pass(&db, &cfg, now).await.unwrap(), 1);
        assert!(db.get_task("alice", "d").await.unwrap().is_none());
        assert!(db.get_task("alice", "e").await.unwrap().is_some());
    }
}
