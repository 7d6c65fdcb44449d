//! Workspaces, tasks and tenants through the core API, seen from outside: the real binary on
//! loopback, real processes, real SQLite.

mod common;

use common::{Client, CoreSteps, Gantry, Setup};
use serde_json::{Value, json};
use std::time::Duration;

const ALICE: &str = "alice-key-0123456789abcdef";
const BOB: &str = "bob-key-0123456789abcdef";

fn setup() -> Setup {
    let read = |f: &str| {
        std::fs::read_to_string(format!("{}/../plugins/{f}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    };
    Setup::new(&[
        ("system", read("system.toml")),
        ("core-api", read("core-api.toml")),
        (
            "sh",
            "kind = \"backend\"\ncomponent = \"bundled:exec\"\nbinary = \"/bin/sh\"\nimports = [\"gantry:plugin/config\"]\n[settings]\nargs = [\"-c\", \"{prompt}\"]\n".into(),
        ),
    ])
}

fn start_with_keys(setup: &Setup) -> Gantry {
    let mut cmd = setup.command();
    cmd.env("GANTRY_API_KEYS", format!("alice:{ALICE},bob:{BOB}"));
    Gantry::spawn(cmd)
}

/// The (seq, kind, data) of each SSE event in `text`.
fn sse(text: &str) -> Vec<(u64, String, Value)> {
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
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

#[tokio::test]
async fn a_task_runs_in_its_workspace_and_its_log_streams_and_resumes() {
    let setup = setup();
    let g = start_with_keys(&setup);
    let alice = Client { g: &g, key: ALICE };
    let ws = alice.workspace("demo").await;
    let task = alice
        .task(&ws, "echo hello; echo made > out.txt; echo oops >&2")
        .await;
    let (status, text) = alice.raw(&format!("/v1/tasks/{task}/events"), &[]).await;
    assert_eq!(status, 200);
    let events = sse(&text);
    let seqs: Vec<u64> = events.iter().map(|e| e.0).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert!(
        events
            .iter()
            .any(|(_, k, d)| k == "stdout" && d["line"] == "hello")
    );
    assert!(
        events
            .iter()
            .any(|(_, k, d)| k == "stderr" && d["line"] == "oops")
    );
    assert!(
        events
            .iter()
            .any(|(_, k, d)| k == "agent" && d["type"] == "message" && d["text"] == "hello")
    );
    let (_, kind, last) = events.last().unwrap();
    assert_eq!((kind.as_str(), &last["state"]), ("state", &json!("done")));
    // Reconnecting with Last-Event-ID gives exactly the rest.
    let (_, rest) = alice
        .raw(
            &format!("/v1/tasks/{task}/events"),
            &[("last-event-id", "3")],
        )
        .await;
    assert_eq!(sse(&rest).first().unwrap().0, 4);
    assert_eq!(sse(&rest).len(), events.len() - 3);
    // A cursor that is not a seq is refused, not read as the start (nor wrapped to 0).
    for (path, header) in [
        (
            format!("/v1/tasks/{task}/events"),
            Some("18446744073709551615"),
        ),
        (format!("/v1/tasks/{task}/events"), Some("three")),
        (format!("/v1/tasks/{task}/events?from_seq=-1"), None),
        (
            format!("/v1/tasks/{task}/events?format=ndjson&from_seq=x"),
            None,
        ),
    ] {
        let headers: Vec<_> = header.iter().map(|h| ("last-event-id", *h)).collect();
        let (status, body) = alice.raw(&path, &headers).await;
        assert_eq!(status, 400, "{path} {header:?}: {body}");
        assert!(body.contains("bad_cursor"), "{body}");
    }
    // NDJSON too.
    let (_, nd) = alice
        .raw(
            &format!("/v1/tasks/{task}/events?format=ndjson&from_seq=2"),
            &[],
        )
        .await;
    let first: Value = serde_json::from_str(nd.lines().next().unwrap()).unwrap();
    assert_eq!(first["seq"], 2);

    let (_, t) = alice
        .call("GET", &format!("/v1/tasks/{task}"), Value::Null)
        .await;
    assert_eq!(t["state"], "done");
    assert_eq!(t["exit_code"], 0);
    assert!(t["started_at"].as_i64().unwrap() >= t["created_at"].as_i64().unwrap());
    let (_, files) = alice
        .call("GET", &format!("/v1/workspaces/{ws}/files"), Value::Null)
        .await;
    assert_eq!(files["files"][0]["path"], "out.txt");
    let (status, content) = alice
        .raw(&format!("/v1/workspaces/{ws}/files/out.txt"), &[])
        .await;
    assert_eq!((status, content.as_str()), (200, "made\n"));
    let (_, health) = alice.call("GET", "/health", Value::Null).await;
    assert_eq!(health["sandbox"], "full");
}

#[tokio::test]
async fn escaping_paths_are_refused() {
    let setup = setup();
    let g = start_with_keys(&setup);
    let alice = Client { g: &g, key: ALICE };
    let ws = alice.workspace("paths").await;
    let task = alice
        .task(
            &ws,
            "echo secret > ../../escape-probe; ln -s /etc/passwd link; echo ok > ok.txt",
        )
        .await;
    alice
        .wait_state(&task, |s| s != "pending" && s != "running")
        .await;
    for (path, code) in [
        ("..%2F..%2Fgantry.db", "bad_path"),
        ("%2Fetc%2Fpasswd", "bad_path"),
        ("link", "bad_path"),
        ("a%00b", "bad_path"),
        ("missing", "not_found"),
    ] {
        let (status, body) = alice
            .call(
                "GET",
                &format!("/v1/workspaces/{ws}/files/{path}"),
                Value::Null,
            )
            .await;
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
        assert_eq!(status, if code == "bad_path" { 400 } else { 404 }, "{path}");
    }
    assert!(!setup.data().join("workspaces/escape-probe").exists());
    let (status, _) = alice
        .raw(&format!("/v1/workspaces/{ws}/files/ok.txt"), &[])
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn another_tenant_gets_404_for_everything_of_alices() {
    let setup = setup();
    let g = start_with_keys(&setup);
    let alice = Client { g: &g, key: ALICE };
    let bob = Client { g: &g, key: BOB };
    let ws = alice.workspace("private").await;
    let task = alice.task(&ws, "echo hi > f.txt; sleep 30").await;
    alice.wait_state(&task, |s| s == "running").await;
    for (method, path) in [
        ("GET", format!("/v1/workspaces/{ws}")),
        ("DELETE", format!("/v1/workspaces/{ws}")),
        ("GET", format!("/v1/workspaces/{ws}/files")),
        ("GET", format!("/v1/workspaces/{ws}/files/f.txt")),
        ("GET", format!("/v1/tasks/{task}")),
        ("POST", format!("/v1/tasks/{task}/cancel")),
        ("GET", format!("/v1/tasks/{task}/events")),
    ] {
        let (status, body) = bob.call(method, &path, Value::Null).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
    }
    let (status, body) = bob
        .call(
            "POST",
            "/v1/tasks",
            json!({ "workspace_id": ws, "backend": "sh", "prompt": "true" }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (_, list) = bob.call("GET", "/v1/workspaces", Value::Null).await;
    assert_eq!(list["workspaces"], json!([]));
    let (_, list) = bob.call("GET", "/v1/tasks", Value::Null).await;
    assert_eq!(list["tasks"], json!([]));
    // Alice's task ran on, untouched; a delete while it runs is a conflict.
    let (status, body) = alice
        .call("DELETE", &format!("/v1/workspaces/{ws}"), Value::Null)
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("workspace_busy"))
    );
    let (_, t) = alice
        .call("POST", &format!("/v1/tasks/{task}/cancel"), Value::Null)
        .await;
    assert_eq!(t["id"], task.as_str());
    let t = alice.wait_state(&task, |s| s == "cancelled").await;
    assert_eq!(t["state"], "cancelled");
    let (status, _) = alice
        .call("DELETE", &format!("/v1/workspaces/{ws}"), Value::Null)
        .await;
    assert_eq!(status, 204);
    let (status, _) = alice
        .call("GET", &format!("/v1/workspaces/{ws}"), Value::Null)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn bad_requests_are_refused_with_reasons() {
    let setup = setup();
    let g = start_with_keys(&setup);
    let alice = Client { g: &g, key: ALICE };
    let ws = alice.workspace("w").await;
    for (body, status, code) in [
        (
            json!({ "backend": "sh", "prompt": "true" }),
            400,
            "bad_request",
        ),
        (
            json!({ "workspace_id": ws, "backend": "nope", "prompt": "true" }),
            400,
            "bad_request",
        ),
        (
            json!({ "workspace_id": ws, "backend": "sh", "prompt": "true", "approval_mode": "maybe" }),
            400,
            "bad_request",
        ),
        (
            json!({ "workspace_id": ws, "backend": "sh", "prompt": "touch x", "extra_flags": ["--yolo"] }),
            422,
            "refused",
        ),
    ] {
        let (got, answer) = alice.call("POST", "/v1/tasks", body.clone()).await;
        assert_eq!(
            (got, &answer["error"]["code"]),
            (status, &json!(code)),
            "{body}: {answer}"
        );
    }
    let (status, answer) = alice
        .call("POST", "/v1/workspaces", json!({ "title": "x" }))
        .await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (400, &json!("bad_request"))
    );
    let (status, _) = g
        .call(
            "POST",
            "/v1/workspaces",
            &[("x-api-key", ALICE)],
            "{not json",
        )
        .await;
    assert_eq!(status, 400);
    // A path of the API with a method it does not take is 405 with the methods it does; a
    // path that is not the API's is 404.
    for (method, path, allow) in [
        ("POST", "/v1/backends".to_string(), "GET"),
        ("PUT", "/v1/workspaces".to_string(), "GET, POST"),
        ("POST", format!("/v1/workspaces/{ws}"), "GET, DELETE"),
        ("DELETE", "/v1/tasks/t1".to_string(), "GET"),
        ("GET", "/v1/tasks/t1/cancel".to_string(), "POST"),
    ] {
        let (status, headers, answer) = alice.call_full(method, &path, Value::Null).await;
        assert_eq!(status, 405, "{method} {path}: {answer}");
        assert_eq!(answer["error"]["code"], "method_not_allowed");
        assert_eq!(headers["allow"], allow, "{method} {path}");
    }
    let (status, answer) = alice
        .call("GET", &format!("/v1/workspaces/{ws}/bogus"), Value::Null)
        .await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (404, &json!("not_found"))
    );
    // Nothing was started by any of them.
    let (_, list) = alice.call("GET", "/v1/tasks", Value::Null).await;
    assert_eq!(list["tasks"], json!([]));
}

#[tokio::test]
async fn a_killed_server_restarts_with_everything_and_the_task_interrupted() {
    let setup = setup();
    let mut g = start_with_keys(&setup);
    let (ws, task, before, pgid) = {
        let alice = Client { g: &g, key: ALICE };
        let ws = alice.workspace("survivor").await;
        let task = alice
            .task(&ws, "echo pgid $$; echo one; echo two; sleep 1000")
            .await;
        let mut before = String::new();
        for _ in 0..400 {
            let (_, t) = alice
                .call("GET", &format!("/v1/tasks/{task}"), Value::Null)
                .await;
            if t["last_seq"].as_u64().unwrap() >= 8 {
                before = alice
                    .raw(
                        &format!("/v1/tasks/{task}/events?format=ndjson&from_seq=1&follow=false"),
                        &[],
                    )
                    .await
                    .1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let pgid: i32 = before
            .lines()
            .find_map(|l| {
                serde_json::from_str::<Value>(l).ok()?["data"]["line"]
                    .as_str()?
                    .strip_prefix("pgid ")
                    .map(str::to_string)
            })
            .unwrap()
            .parse()
            .unwrap();
        (ws, task, before, pgid)
    };
    g.signal("KILL");
    g.wait_exit(Duration::from_secs(10)).unwrap();
    // The orphaned child is not the server's any more; end it so it does not linger. Only
    // if the group's leader is still that task's shell: a recycled pid is someone else's.
    let leader = std::fs::read(format!("/proc/{pgid}/cmdline")).unwrap_or_default();
    if String::from_utf8_lossy(&leader).contains("sleep 1000") {
        common::signal_group(pgid, libc::SIGKILL);
    }

    let g = start_with_keys(&setup);
    let alice = Client { g: &g, key: ALICE };
    let (_, t) = alice
        .call("GET", &format!("/v1/tasks/{task}"), Value::Null)
        .await;
    assert_eq!(t["state"], "interrupted", "{t}");
    let (status, _) = alice
        .call("GET", &format!("/v1/workspaces/{ws}"), Value::Null)
        .await;
    assert_eq!(status, 200);
    let (_, after) = alice
        .raw(
            &format!("/v1/tasks/{task}/events?format=ndjson&from_seq=1&follow=false"),
            &[],
        )
        .await;
    // The log is exactly what was persisted before the kill, then how the task ended.
    let (kept, end) = after.split_at(before.len());
    assert_eq!(kept, before, "the log up to the kill is intact");
    let end: Value = serde_json::from_str(end.trim()).unwrap();
    assert_eq!(end["kind"], "state", "{end}");
    assert_eq!(end["data"]["state"], "interrupted", "{end}");
    assert!(after.contains("\"line\":\"two\""));
    // A follower of the log learns the end too, and is not left waiting.
    let (status, followed) = alice.raw(&format!("/v1/tasks/{task}/events"), &[]).await;
    assert_eq!(status, 200);
    let (_, kind, data) = sse(&followed).pop().unwrap();
    assert_eq!(
        (kind.as_str(), &data["state"]),
        ("state", &json!("interrupted"))
    );
}
