//! Several gantry nodes on one PostgreSQL store and one shared data directory, on loopback:
//! the real binary twice, a real cluster (`tests/postgres/cluster.sh`), real processes.

mod common;

use common::{Client, CoreSteps, Gantry, Setup};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::time::Duration;

const ALICE: &str = "alice-key-0123456789abcdef";

/// The core API and a `sh` backend, on a fresh PostgreSQL database whatever the suite's store.
fn setup() -> Setup {
    let read = |f: &str| {
        std::fs::read_to_string(format!("{}/../plugins/{f}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    };
    let mut setup = Setup::new(&[
        ("system", read("system.toml")),
        ("core-api", read("core-api.toml")),
        (
            "sh",
            "kind = \"backend\"\ncomponent = \"bundled:exec\"\nbinary = \"/bin/sh\"\nimports = [\"gantry:plugin/config\"]\n[settings]\nargs = [\"-c\", \"{prompt}\"]\n".into(),
        ),
    ]);
    if setup.store.is_none() {
        setup.store = Some(common::postgres::fresh_database());
    }
    setup
}

/// Node `id` of the setup: its store and data directory, a short lease (so a dead node's
/// tasks are taken over within seconds).
fn node(setup: &Setup, id: &str) -> Gantry {
    node_with(setup, id, "")
}

/// [`node`] with more of the `[tasks]` section (and any sections after it).
fn node_with(setup: &Setup, id: &str, tasks: &str) -> Gantry {
    let file = setup.dir.path().join(format!("{id}.toml"));
    std::fs::write(&file, format!("[tasks]\nnode_lease_ms = 1500\n{tasks}\n")).unwrap();
    let mut cmd = setup.command();
    cmd.arg("--config")
        .arg(&file)
        .env("GANTRY_NODE_ID", id)
        .env("GANTRY_API_KEYS", format!("alice:{ALICE}"));
    Gantry::spawn(cmd)
}

/// The `(seq, kind, data)` of each SSE event in `text`.
fn sse(text: &str) -> Vec<(u64, String, Value)> {
    text.split("\n\n")
        .filter(|block| block.lines().any(|l| l.starts_with("id: ")))
        .map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                    .unwrap()
                    .to_string()
            };
            (
                field("id").parse().unwrap(),
                field("event"),
                serde_json::from_str(&field("data")).unwrap(),
            )
        })
        .collect()
}

/// Read `stream`'s body into `text` until it holds `needle`.
async fn read_until(
    stream: &mut hyper::Response<hyper::body::Incoming>,
    text: &mut String,
    needle: &str,
) {
    while !text.contains(needle) {
        let frame = tokio::time::timeout(Duration::from_secs(20), stream.body_mut().frame())
            .await
            .expect("the stream from the other node stalled")
            .expect("the stream ended early")
            .unwrap();
        if let Some(data) = frame.data_ref() {
            text.push_str(&String::from_utf8_lossy(data));
        }
    }
}

fn stdout_lines(events: &[(u64, String, Value)]) -> Vec<String> {
    events
        .iter()
        .filter(|(_, kind, _)| kind == "stdout")
        .map(|(_, _, d)| d["line"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn each_node_lists_the_live_nodes_of_its_store() {
    let setup = setup();
    let a = node(&setup, "node-a");
    let b = node(&setup, "node-b");
    for (g, me) in [(&a, "node-a"), (&b, "node-b")] {
        // A node reads the live nodes at most every half second: A may have read them
        // before B joined.
        let mut tries = 0;
        loop {
            let (status, health) = Client { g, key: ALICE }
                .call("GET", "/health", Value::Null)
                .await;
            assert_eq!(status, 200, "{health}");
            assert_eq!(health["store"]["kind"], "postgres", "{health}");
            assert_eq!(health["store"]["node_id"], me);
            let live: Vec<&str> = health["store"]["live_nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap())
                .collect();
            tries += 1;
            if live == ["node-a", "node-b"] {
                break;
            }
            assert!(live.contains(&me) && tries < 40, "{health}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn a_task_on_one_node_streams_whole_from_another_and_is_cancelled_from_there() {
    let setup = setup();
    let a = node(&setup, "node-a");
    let b = node(&setup, "node-b");
    let on_a = Client { g: &a, key: ALICE };
    let on_b = Client { g: &b, key: ALICE };
    let ws = on_a.workspace("shared").await;
    let task = on_a
        .task(
            &ws,
            "for i in $(seq 1 40); do echo line $i; sleep 0.02; done; echo > started; sleep 60",
        )
        .await;
    // B follows the run from its start while A runs it.
    let mut stream = b
        .request(
            "GET",
            &format!("/v1/tasks/{task}/events"),
            &[("authorization", &format!("Bearer {ALICE}"))],
            String::new(),
        )
        .await;
    assert_eq!(stream.status(), 200);
    let mut text = String::new();
    read_until(&mut stream, &mut text, "line 40").await;
    // The files A's task wrote are seen through B: one shared data directory.
    let listed = loop {
        let (_, files) = on_b
            .call("GET", &format!("/v1/workspaces/{ws}/files"), Value::Null)
            .await;
        if files.to_string().contains("started") {
            break files;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(listed.to_string().contains("started"), "{listed}");
    // B does not delete the workspace A's task is working in: the store refuses over every
    // node's tasks, and nothing is lost.
    let (status, refused) = on_b
        .call("DELETE", &format!("/v1/workspaces/{ws}"), Value::Null)
        .await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "workspace_busy", "{refused}");
    let (_, files) = on_b
        .call("GET", &format!("/v1/workspaces/{ws}/files"), Value::Null)
        .await;
    assert!(files.to_string().contains("started"), "{files}");

    // Cancelled through B: A stops the process, and B's stream ends with how it ended.
    let (status, _) = on_b
        .call("POST", &format!("/v1/tasks/{task}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200);
    let body = stream.into_body().collect().await.unwrap().to_bytes();
    text.push_str(&String::from_utf8_lossy(&body));
    let events = sse(&text);
    let seqs: Vec<u64> = events.iter().map(|e| e.0).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "a gap or a repeat"
    );
    let expected: Vec<String> = (1..=40).map(|i| format!("line {i}")).collect();
    assert_eq!(stdout_lines(&events), expected);
    let last = events.last().unwrap();
    assert_eq!(last.1, "state", "{last:?}");
    assert_eq!(last.2["state"], "cancelled", "{last:?}");
    let done = on_a.wait_state(&task, |s| s == "cancelled").await;
    assert_eq!(done["state"], "cancelled");
    // The same log as NDJSON through B, whole.
    let (status, ndjson) = on_b
        .raw(&format!("/v1/tasks/{task}/events?format=ndjson"), &[])
        .await;
    assert_eq!(status, 200);
    let lines: Vec<Value> = ndjson
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), events.len(), "{ndjson}");
}

#[tokio::test]
async fn a_dead_nodes_task_is_interrupted_by_another_once_its_lease_ran_out_with_its_log_whole() {
    let setup = setup();
    let a = node(&setup, "node-a");
    let b = node(&setup, "node-b");
    let on_a = Client { g: &a, key: ALICE };
    let on_b = Client { g: &b, key: ALICE };
    let ws = on_a.workspace("w").await;
    let task = on_a
        .task(&ws, "for i in $(seq 1 25); do echo line $i; done; sleep 60")
        .await;
    // Every line is logged (read through B) before A is killed.
    let mut logged = 0;
    for _ in 0..400 {
        let (_, text) = on_b
            .raw(&format!("/v1/tasks/{task}/events?follow=false"), &[])
            .await;
        logged = stdout_lines(&sse(&text)).len();
        if logged == 25 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(logged, 25, "the task never logged its lines");
    let (_, running) = on_b
        .call("GET", &format!("/v1/tasks/{task}"), Value::Null)
        .await;
    assert_eq!(running["state"], "running", "{running}");

    a.signal("KILL");
    // While A's lease holds (1.5 s from its last renewal) B leaves the task alone.
    let (_, soon) = on_b
        .call("GET", &format!("/v1/tasks/{task}"), Value::Null)
        .await;
    assert_eq!(soon["state"], "running", "{soon}");
    let ended = on_b.wait_state(&task, |s| s == "interrupted").await;
    assert_eq!(ended["state"], "interrupted");

    let (status, text) = on_b.raw(&format!("/v1/tasks/{task}/events"), &[]).await;
    assert_eq!(status, 200);
    let events = sse(&text);
    let expected: Vec<String> = (1..=25).map(|i| format!("line {i}")).collect();
    assert_eq!(stdout_lines(&events), expected, "lost lines");
    assert_eq!(events.last().unwrap().2["state"], "interrupted");
    // Its health no longer lists the dead node.
    let (_, health) = on_b.call("GET", "/health", Value::Null).await;
    assert_eq!(health["store"]["live_nodes"], json!(["node-b"]), "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenants_running_limit_holds_over_all_nodes() {
    let setup = setup();
    // Room for 50 submissions in flight at once on each node (each holds a handler instance).
    let limit = "max_running_per_tenant = 4\n[runtime]\nmax_instances_per_tenant = 64";
    let a = node_with(&setup, "node-a", limit);
    let b = node_with(&setup, "node-b", limit);
    let on_a = Client { g: &a, key: ALICE };
    let on_b = Client { g: &b, key: ALICE };
    let ws = on_a.workspace("busy").await;
    // 50 submissions at once, half to each node; each holds its slot for 0.3 s.
    let submitted = futures::future::join_all((0..50).map(|i| {
        let (client, ws) = (if i % 2 == 0 { &on_a } else { &on_b }, ws.clone());
        async move { client.task(&ws, "sleep 0.3").await }
    }))
    .await;
    for task in &submitted {
        let done = on_a
            .wait_state(task, |s| s != "pending" && s != "running")
            .await;
        assert_eq!(done["state"], "done", "{done}");
    }
    let (_, listed) = on_b
        .call("GET", &format!("/v1/tasks?workspace_id={ws}"), Value::Null)
        .await;
    // The most tasks running at one moment, from when each started and ended.
    let mut edges: Vec<(i64, i32)> = listed["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| {
            [
                (t["started_at"].as_i64().unwrap(), 1),
                (t["finished_at"].as_i64().unwrap(), -1),
            ]
        })
        .collect();
    assert_eq!(edges.len(), 100);
    // An end and a start at the same millisecond: the end first.
    edges.sort();
    let (mut running, mut most) = (0, 0);
    for (_, step) in edges {
        running += step;
        most = most.max(running);
    }
    assert!(
        most <= 4,
        "{most} of the tenant's tasks ran at once over two nodes"
    );
    assert_eq!(
        most, 4,
        "the nodes never used the tenant's 4 slots together"
    );
}

#[test]
fn gantry_migrate_applies_the_schema_once_and_says_so() {
    let url = common::postgres::fresh_database();
    let migrate = || {
        let out = std::process::Command::new(common::gantry_bin())
            .arg("migrate")
            .env("GANTRY_STORE", &url)
            .env_remove("GANTRY_CONFIG")
            .env("GANTRY_DATA_DIR", std::env::temp_dir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = migrate();
    assert!(first.contains("schema version 0 -> "), "{first}");
    assert!(
        !first.contains("change-me") && !first.contains("gantry:"),
        "{first}"
    );
    let again = migrate();
    assert!(again.contains("up to date"), "{again}");
    // A URL that is not PostgreSQL's is refused with the form it takes.
    let out = std::process::Command::new(common::gantry_bin())
        .arg("migrate")
        .env("GANTRY_STORE", "mysql://x")
        .env_remove("GANTRY_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("postgres://"));
}
