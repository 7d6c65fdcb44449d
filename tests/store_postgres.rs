//! The PostgreSQL store where it differs most from SQLite, driven through its traits on the
//! tests' cluster (`tests/postgres/cluster.sh`), a fresh database per test: quotas judged in
//! one locked step, typed errors, leases and take-overs, node roles, running slots over all
//! nodes, and the stored-output figures retention keeps.

mod common;

use gantry::contract::{EventBody, OutputLine, OutputStream, StateChange, plain_request};
use gantry::store::{
    EventRecord, OutputQuota, Postgres, Store, StoreError, TaskRecord, TaskState, WorkspaceRecord,
};
use std::sync::Arc;
use std::time::Duration;

async fn store() -> Arc<dyn Store> {
    let url = common::postgres::fresh_database();
    Arc::new(Postgres::connect(&url, 4).await.unwrap())
}

async fn workspace(store: &dyn Store, id: &str, tenant: &str) {
    store
        .create_workspace(&WorkspaceRecord {
            id: id.into(),
            tenant: tenant.into(),
            name: id.into(),
            created_at: 1,
            path: None,
        })
        .await
        .unwrap();
}

fn task(id: &str, tenant: &str, ws: &str, state: TaskState, node: &str) -> TaskRecord {
    TaskRecord {
        id: id.into(),
        tenant: tenant.into(),
        workspace_id: ws.into(),
        backend: "exec".into(),
        request: plain_request("p"),
        state,
        created_at: 2,
        started_at: None,
        finished_at: None,
        exit_code: None,
        error: None,
        summary: None,
        last_seq: 0,
        output_lines: 0,
        node: Some(node.into()),
    }
}

fn line(seq: u64) -> EventRecord {
    EventRecord {
        seq,
        body: EventBody::Output(OutputLine {
            stream: OutputStream::Stdout,
            text: format!("l{seq}"),
            partial: false,
        }),
        at: 3,
    }
}

#[tokio::test]
async fn a_state_and_its_log_entry_commit_together_or_not_at_all() {
    let db = store().await;
    workspace(db.as_ref(), "w", "alice").await;
    let mut t = task("t", "alice", "w", TaskState::Pending, "a");
    db.insert_task(&t).await.unwrap();
    t.state = TaskState::Running;
    t.started_at = Some(5);
    let appended = db
        .update_task_and_append(&t, &[line(1), line(2)])
        .await
        .unwrap();
    assert_eq!(appended.stored, 2);
    let stored = db.get_task("alice", "t").await.unwrap().unwrap();
    assert_eq!(stored.state, TaskState::Running);
    assert_eq!((stored.started_at, stored.last_seq), (Some(5), 2));
    // A seq already logged: a conflict, and neither the row nor the log changes.
    t.state = TaskState::Done;
    let again = db.update_task_and_append(&t, &[line(2)]).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    let stored = db.get_task("alice", "t").await.unwrap().unwrap();
    assert_eq!((stored.state, stored.last_seq), (TaskState::Running, 2));
    assert_eq!(db.read_events("t", 1, 10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_quota_stores_the_prefix_that_fits_and_errors_are_typed() {
    let db = store().await;
    workspace(db.as_ref(), "w", "alice").await;
    db.insert_task(&task("t", "alice", "w", TaskState::Running, "a"))
        .await
        .unwrap();
    let quota = OutputQuota {
        max_events: 5,
        max_bytes: 0,
    };
    let batch: Vec<EventRecord> = (1..=8).map(line).collect();
    let appended = db.append_events("t", &batch, Some(quota)).await.unwrap();
    assert_eq!(appended.stored, 5);
    assert_eq!(appended.tenant.events, 5);
    let read = db.read_events("t", 1, 100).await.unwrap();
    assert_eq!(
        read.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    let stored = db.get_task("alice", "t").await.unwrap().unwrap();
    assert_eq!((stored.last_seq, stored.output_lines), (5, 5));
    // Full: nothing more is stored, and that is not an error.
    let more = db
        .append_events("t", &[line(6)], Some(quota))
        .await
        .unwrap();
    assert_eq!(more.stored, 0);
    // A sequence number already logged: a conflict, and nothing of the batch is kept.
    let again = db.append_events("t", &[line(6), line(5)], None).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert_eq!(db.read_events("t", 6, 10).await.unwrap().len(), 0);
    // Another tenant's task is not found through its tenant; an unknown task is not found.
    assert!(db.get_task("bob", "t").await.unwrap().is_none());
    let unknown = db.append_events("nope", &[line(1)], None).await;
    assert!(matches!(unknown, Err(StoreError::NotFound)), "{unknown:?}");
    // Deleting a finished task takes its output off the tenant's figures.
    let mut done = stored.clone();
    done.state = TaskState::Done;
    done.finished_at = Some(10);
    db.update_task(&done).await.unwrap();
    assert_eq!(db.stored_output("alice").await.unwrap().events, 5);
    assert_eq!(db.delete_finished_before("alice", 11).await.unwrap(), 1);
    assert_eq!(db.stored_output("alice").await.unwrap().events, 0);
}

#[tokio::test]
async fn a_nodes_tasks_are_taken_over_only_after_its_lease_ran_out() {
    let db = store().await;
    workspace(db.as_ref(), "w", "alice").await;
    db.claim_lease("a", 1_000, 1_000).await.unwrap();
    db.claim_lease("b", 1_000, 10_000).await.unwrap();
    db.insert_task(&task("ta", "alice", "w", TaskState::Running, "a"))
        .await
        .unwrap();
    db.insert_task(&task("tb", "alice", "w", TaskState::Running, "b"))
        .await
        .unwrap();
    db.append_events("ta", &[line(1)], None).await.unwrap();
    // While a's lease holds, nothing is taken.
    assert!(db.take_over_expired(1_500).await.unwrap().is_empty());
    let live: Vec<String> = db
        .live_nodes(1_500)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(live, ["a", "b"]);
    // Once it ran out, a's task (only) is interrupted, its log ending with that state.
    assert_eq!(db.take_over_expired(2_500).await.unwrap(), ["ta"]);
    assert!(
        db.take_over_expired(2_500).await.unwrap().is_empty(),
        "twice"
    );
    let ta = db.get_task("alice", "ta").await.unwrap().unwrap();
    assert_eq!(ta.state, TaskState::Interrupted);
    let log = db.read_events("ta", 1, 10).await.unwrap();
    assert_eq!(log.len(), 2);
    assert!(matches!(
        &log[1].body,
        EventBody::State(s) if s.state == TaskState::Interrupted
    ));
    let tb = db.get_task("alice", "tb").await.unwrap().unwrap();
    assert_eq!(tb.state, TaskState::Running);
    assert_eq!(
        db.live_nodes(2_500)
            .await
            .unwrap()
            .into_iter()
            .map(|n| n.id)
            .collect::<Vec<_>>(),
        ["b"]
    );
}

#[tokio::test]
async fn a_role_has_one_holder_until_its_lease_runs_out() {
    let db = store().await;
    assert!(db.claim_role("webhooks", "a", 0, 1_000).await.unwrap());
    assert!(!db.claim_role("webhooks", "b", 500, 1_000).await.unwrap());
    assert!(
        db.claim_role("webhooks", "a", 900, 1_000).await.unwrap(),
        "renewed"
    );
    assert!(!db.claim_role("webhooks", "b", 1_500, 1_000).await.unwrap());
    assert!(
        db.claim_role("webhooks", "b", 2_000, 1_000).await.unwrap(),
        "taken over"
    );
    assert!(!db.claim_role("webhooks", "a", 2_100, 1_000).await.unwrap());
    assert!(db.claim_role("other", "a", 2_100, 1_000).await.unwrap());
}

#[tokio::test]
async fn running_slots_count_every_nodes_tasks() {
    let db = store().await;
    workspace(db.as_ref(), "w", "alice").await;
    workspace(db.as_ref(), "v", "bob").await;
    for (id, tenant, ws, node) in [
        ("a1", "alice", "w", "a"),
        ("a2", "alice", "w", "b"),
        ("b1", "bob", "v", "b"),
    ] {
        db.insert_task(&task(id, tenant, ws, TaskState::Pending, node))
            .await
            .unwrap();
    }
    // One of alice's at a time, two over all tenants.
    assert!(db.claim_run_slot("alice", "a1", 2, 1, 5).await.unwrap());
    assert!(!db.claim_run_slot("alice", "a2", 2, 1, 5).await.unwrap());
    assert!(db.claim_run_slot("bob", "b1", 2, 1, 5).await.unwrap());
    let a1 = db.get_task("alice", "a1").await.unwrap().unwrap();
    assert_eq!((a1.state, a1.started_at), (TaskState::Running, Some(5)));
    // When alice's first ends, her second may run once there is room over all tenants too.
    let mut done = a1.clone();
    done.state = TaskState::Done;
    db.update_task(&done).await.unwrap();
    assert!(db.claim_run_slot("alice", "a2", 2, 1, 6).await.unwrap());
    // A task no longer pending is not claimed again.
    assert!(!db.claim_run_slot("alice", "a1", 10, 10, 7).await.unwrap());
}

/// A follower on another node is told a task ended only once its log holds its end: the row
/// says "cancelled" a round trip before the state change is appended, and a follower told
/// "ended" in between would stop one entry short.
#[tokio::test]
async fn a_remote_follower_is_told_of_the_end_once_the_log_holds_it() {
    let db = store().await;
    workspace(db.as_ref(), "w", "alice").await;
    let mut t = task("t", "alice", "w", TaskState::Running, "a");
    db.insert_task(&t).await.unwrap();
    db.append_events("t", &[line(1), line(2)], None)
        .await
        .unwrap();
    // Followed from a notifier that does not write the log: it learns by polling the store.
    let notifier = db.log_notifier();
    let mut progress = notifier.follow("t").unwrap();
    let until = |rx: &mut tokio::sync::watch::Receiver<gantry::store::LogProgress>,
                 what: fn(&gantry::store::LogProgress) -> bool| {
        let mut rx = rx.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(10), rx.wait_for(what))
                .await
                .expect("the follower was not told in time")
                .map(|p| *p)
                .unwrap()
        }
    };
    assert!(!until(&mut progress, |p| p.last_seq == 2).await.ended);

    t.state = TaskState::Cancelled;
    t.finished_at = Some(gantry::store::now_ms());
    db.update_task(&t).await.unwrap();
    // Two polls later it still waits for the log's last entry.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!progress.borrow().ended, "{:?}", *progress.borrow());

    let end = EventRecord {
        seq: 3,
        body: EventBody::State(StateChange {
            state: TaskState::Cancelled,
            reason: None,
            exit_code: None,
            error: None,
        }),
        at: 4,
    };
    db.append_events("t", &[end], None).await.unwrap();
    let seen = until(&mut progress, |p| p.ended).await;
    assert_eq!(seen.last_seq, 3);

    // A task whose node died between the two writes is ended all the same, once its end is
    // old enough.
    let mut u = task("u", "alice", "w", TaskState::Failed, "a");
    u.finished_at = Some(1);
    db.insert_task(&u).await.unwrap();
    let mut progress = notifier.follow("u").unwrap();
    assert!(until(&mut progress, |p| p.ended).await.ended);
}

/// A workspace another node's task is working in is not deleted from this one: the store
/// refuses in the same statement, whichever node asks.
#[tokio::test]
async fn a_workspace_with_a_live_task_on_any_node_is_not_deleted() {
    let db = store().await;
    workspace(db.as_ref(), "w", "alice").await;
    let mut t = task("t", "alice", "w", TaskState::Running, "node-a");
    db.insert_task(&t).await.unwrap();
    db.append_events("t", &[line(1)], None).await.unwrap();
    let refused = db.delete_workspace("alice", "w").await.unwrap_err();
    assert!(matches!(refused, StoreError::Conflict(_)), "{refused:?}");
    // Nothing was lost: the workspace, its task and its log are all there.
    assert!(db.get_workspace("alice", "w").await.unwrap().is_some());
    assert_eq!(db.read_events("t", 1, 10).await.unwrap().len(), 1);
    // Another tenant's id is unknown, busy or not.
    assert!(!db.delete_workspace("bob", "w").await.unwrap());
    t.state = TaskState::Done;
    db.update_task(&t).await.unwrap();
    assert!(db.delete_workspace("alice", "w").await.unwrap());
    assert!(db.get_task("alice", "t").await.unwrap().is_none());
}
