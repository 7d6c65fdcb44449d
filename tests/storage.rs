//! Storage quotas and retention, seen from outside: the real binary on loopback, real
//! processes, real SQLite. A tenant over its quota keeps what it stored and loses only further
//! output (with a marker) and new tasks; retention deletes old finished tasks in the
//! background and never a running one; the write-ahead log is cut back after a burst; and
//! `/metrics` shows the store's size as it is on disk.

mod common;

use common::{Client, Gantry, Setup};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const ALICE: &str = "alice-key-0123456789abcdef";
const BOB: &str = "bob-key-0123456789abcdef";

/// The core API and a `/bin/sh -c PROMPT` backend, served with `config` as the config file.
fn start(config: &str) -> (Setup, Gantry) {
    let read = |f: &str| {
        std::fs::read_to_string(format!("{}/../plugins/{f}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    };
    let setup = Setup::new(&[
        ("system", read("system.toml")),
        ("core-api", read("core-api.toml")),
        (
            "sh",
            "kind = \"backend\"\ncomponent = \"bundled:exec\"\nbinary = \"/bin/sh\"\nimports = [\"gantry:plugin/config\"]\n[settings]\nargs = [\"-c\", \"{prompt}\"]\n".into(),
        ),
    ]);
    let g = setup.start_configured(config, &format!("alice:{ALICE},bob:{BOB}"));
    (setup, g)
}

/// The core API's steps, as a tenant takes them.
trait Steps {
    async fn workspace(&self, name: &str) -> String;
    async fn start_task(&self, ws: &str, script: &str) -> (u16, Value);
    async fn task(&self, ws: &str, script: &str) -> String;
    async fn finished(&self, task: &str) -> Value;
    async fn log(&self, task: &str) -> Vec<(String, Value)>;
}

impl Steps for Client<'_> {
    async fn workspace(&self, name: &str) -> String {
        let (status, ws) = self
            .call("POST", "/v1/workspaces", json!({ "name": name }))
            .await;
        assert_eq!(status, 201, "{ws}");
        ws["id"].as_str().unwrap().to_string()
    }

    async fn start_task(&self, ws: &str, script: &str) -> (u16, Value) {
        self.call(
            "POST",
            "/v1/tasks",
            json!({ "workspace_id": ws, "backend": "sh", "prompt": script }),
        )
        .await
    }

    async fn task(&self, ws: &str, script: &str) -> String {
        let (status, task) = self.start_task(ws, script).await;
        assert_eq!(status, 201, "{task}");
        task["id"].as_str().unwrap().to_string()
    }

    async fn finished(&self, task: &str) -> Value {
        for _ in 0..1200 {
            let (_, t) = self
                .call("GET", &format!("/v1/tasks/{task}"), Value::Null)
                .await;
            if !matches!(t["state"].as_str(), Some("pending" | "running")) {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("task {task} never finished");
    }

    /// The whole log as (kind, data), from NDJSON.
    async fn log(&self, task: &str) -> Vec<(String, Value)> {
        let (status, text) = self
            .raw(&format!("/v1/tasks/{task}/events?format=ndjson"), &[])
            .await;
        assert_eq!(status, 200, "{text}");
        text.lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                (v["kind"].as_str().unwrap_or_default().to_string(), v)
            })
            .collect()
    }
}

/// The stdout lines of a log, in order.
fn stdout(log: &[(String, Value)]) -> Vec<String> {
    log.iter()
        .filter(|(k, _)| k == "stdout")
        .map(|(_, v)| v["data"]["line"].as_str().unwrap().to_string())
        .collect()
}

/// Poll `check` every 50 ms for up to `limit`; whether it held.
async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn a_tenant_over_its_quota_keeps_what_it_stored_and_loses_only_further_output() {
    // alice may store 60 log entries; bob has the (large) default. No retention here.
    let (_setup, g) = start(
        "[storage]\nretention_interval_ms = 0\ntenants = { alice = { max_output_events = 60 } }\n",
    );
    let alice = Client { g: &g, key: ALICE };
    let bob = Client { g: &g, key: BOB };
    let ws = alice.workspace("quota").await;
    // Within the quota: 3 state changes and 10 lines (each with its parsed agent event).
    let small = alice
        .task(&ws, "for i in $(seq 1 10); do echo a$i; done")
        .await;
    assert_eq!(alice.finished(&small).await["state"], "done");
    // This one passes it: its output is cut, with one marker, and it still ends as it did.
    let big = alice
        .task(&ws, "for i in $(seq 1 200); do echo b$i; done; exit 3")
        .await;
    let t = alice.finished(&big).await;
    assert_eq!(
        (&t["state"], &t["exit_code"]),
        (&json!("failed"), &json!(3))
    );
    let log = alice.log(&big).await;
    let lines = stdout(&log);
    assert!(!lines.is_empty() && lines.len() < 200, "{}", lines.len());
    let expected: Vec<String> = (1..=lines.len()).map(|i| format!("b{i}")).collect();
    assert_eq!(
        lines, expected,
        "what was stored is the start of the output"
    );
    let markers: Vec<&Value> = log
        .iter()
        .filter(|(k, v)| {
            k == "agent"
                && v["data"]["type"] == "error"
                && v["data"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("output truncated"))
        })
        .map(|(_, v)| v)
        .collect();
    assert_eq!(markers.len(), 1, "{log:?}");
    let (kind, last) = log.last().unwrap();
    assert_eq!(kind, "state");
    assert_eq!(
        (&last["data"]["state"], &last["data"]["exit_code"]),
        (&json!("failed"), &json!(3))
    );
    // The log's seqs have no gaps: the marker comes right after the last stored line's.
    let seqs: Vec<u64> = log
        .iter()
        .map(|(_, v)| v["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    // Nothing stored before is lost.
    let small_log = alice.log(&small).await;
    assert_eq!(
        stdout(&small_log),
        (1..=10).map(|i| format!("a{i}")).collect::<Vec<_>>()
    );
    // A new task is refused, with the reason.
    let (status, body) = alice.start_task(&ws, "echo more").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "refused", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("storage quota"),
        "{body}"
    );
    // Another tenant is not affected.
    let bws = bob.workspace("free").await;
    let bobs = bob
        .task(&bws, "for i in $(seq 1 200); do echo c$i; done")
        .await;
    assert_eq!(bob.finished(&bobs).await["state"], "done");
    assert_eq!(stdout(&bob.log(&bobs).await).len(), 200);
}

#[tokio::test]
async fn retention_deletes_old_and_over_budget_finished_tasks_in_the_background() {
    // alice keeps finished tasks one second; bob keeps them forever but within 40 kB.
    let (_setup, g) = start(
        "[storage]\nretention_interval_ms = 200\nretention_max_age_secs = 1\nretention_max_bytes = 0\n\
         tenants = { bob = { retention_max_age_secs = 0, retention_max_bytes = 40000 } }\n",
    );
    let alice = Client { g: &g, key: ALICE };
    let bob = Client { g: &g, key: BOB };
    let ws = alice.workspace("aging").await;
    let running = alice.task(&ws, "echo started; sleep 60").await;
    let old = alice.task(&ws, "echo old").await;
    alice.finished(&old).await;
    let gone = eventually(Duration::from_secs(15), async || {
        let (status, _) = alice
            .call("GET", &format!("/v1/tasks/{old}"), Value::Null)
            .await;
        status == 404
    })
    .await;
    assert!(gone, "the finished task was never deleted");
    let (status, _) = alice
        .raw(&format!("/v1/tasks/{old}/events?format=ndjson"), &[])
        .await;
    assert_eq!(status, 404);
    // A running task is never deleted, however old.
    let (status, t) = alice
        .call("GET", &format!("/v1/tasks/{running}"), Value::Null)
        .await;
    assert_eq!((status, &t["state"]), (200, &json!("running")));
    // bob's budget holds about one task of ~26 kB: the older ones go, oldest first.
    let bws = bob.workspace("budget").await;
    let script = "for i in $(seq 1 100); do printf '%0100d\\n' $i; done";
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let t = bob.task(&bws, script).await;
        assert_eq!(bob.finished(&t).await["state"], "done");
        tasks.push(t);
    }
    let trimmed = eventually(Duration::from_secs(15), async || {
        let mut kept = Vec::new();
        for t in &tasks {
            let (status, _) = bob
                .call("GET", &format!("/v1/tasks/{t}"), Value::Null)
                .await;
            kept.push(status == 200);
        }
        kept == [false, false, true]
    })
    .await;
    assert!(trimmed, "bob's oldest tasks were not deleted");
    assert_eq!(stdout(&bob.log(&tasks[2]).await).len(), 100);
    let (_, t) = alice
        .call("POST", &format!("/v1/tasks/{running}/cancel"), Value::Null)
        .await;
    assert_eq!(t["id"], running);
}

#[tokio::test]
async fn the_write_ahead_log_is_cut_back_after_a_burst_and_metrics_show_the_store() {
    // Alice is an operator here: /metrics is for operators only.
    let (setup, g) = start("operators = [\"alice\"]\n[storage]\nretention_interval_ms = 1500\n");
    let alice = Client { g: &g, key: ALICE };
    let wal = setup.data().join("gantry.db-wal");
    let db = setup.data().join("gantry.db");
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let ws = alice.workspace("burst").await;
    let burst = alice.task(&ws, "seq 1 100000").await;
    let mut high = 0;
    for _ in 0..2400 {
        high = high.max(size(&wal));
        let (_, t) = alice
            .call("GET", &format!("/v1/tasks/{burst}"), Value::Null)
            .await;
        if t["state"] != "pending" && t["state"] != "running" {
            assert_eq!(t["state"], "done");
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    high = high.max(size(&wal));
    assert!(
        high > 1 << 20,
        "the burst grew the log to only {high} bytes"
    );
    let cut = eventually(Duration::from_secs(15), async || size(&wal) == 0).await;
    assert!(cut, "the log stayed at {} bytes (high: {high})", size(&wal));
    // /metrics reads the store's own figures: the files as they are on disk, and what alice
    // stores (100000 lines, each with its agent event, and 3 state changes).
    let (status, text) = alice.raw("/metrics", &[]).await;
    assert_eq!(status, 200, "{text}");
    let sample = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    assert_eq!(sample("gantry_store_bytes{file=\"wal\"}"), 0);
    assert_eq!(sample("gantry_store_bytes{file=\"database\"}"), size(&db));
    assert_eq!(
        sample("gantry_stored_output_events{tenant=\"alice\"}"),
        200_003
    );
    assert!(sample("gantry_stored_output_bytes{tenant=\"alice\"}") > 200_000 * 20);
    assert!(!text.contains("tenant=\"bob\""), "bob stores nothing");
}
