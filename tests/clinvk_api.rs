//! The clinvk API (`/api/v1`, `/health`, `/metrics`, `/openapi.json`), end to end: the real
//! gantry binary, the real claude, codex and gemini CLIs, and the fake model server.

mod common;

use common::agents::{
    CLAUDE, CODEX, FakeModel, GEMINI, backend_manifest, bodies, processes_in, root,
};
use common::{Client, Gantry, Setup};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ALICE: &str = "key-alice-0123456789";
const BOB: &str = "key-bob-0123456789";

fn plugin(file: &str) -> String {
    std::fs::read_to_string(root().join("plugins").join(file)).unwrap()
}

/// A node with the clinvk, core and system handlers, the three agent backends, two tenants
/// (Alice an operator), and `config` as its config file.
fn node(fake: &FakeModel, config: &str) -> Setup {
    let setup = Setup::new(&[
        ("system", plugin("system.toml")),
        ("clinvk-api", plugin("clinvk-api.toml")),
        ("core-api", plugin("core-api.toml")),
        ("claude", backend_manifest(CLAUDE, fake)),
        ("codex", backend_manifest(CODEX, fake)),
        ("gemini", backend_manifest(GEMINI, fake)),
    ]);
    // Alice reads the node's metrics.
    let config = format!("operators = [\"alice\"]\n{config}");
    std::fs::write(setup.dir.path().join("gantry.toml"), config).unwrap();
    setup
}

fn serve(setup: &Setup) -> Gantry {
    let mut cmd = setup.command();
    cmd.arg("--config")
        .arg(setup.dir.path().join("gantry.toml"))
        .env("GANTRY_API_KEYS", format!("alice:{ALICE},bob:{BOB}"));
    for cli in [CLAUDE, CODEX, GEMINI] {
        cmd.env(cli.key_env, "test-key-not-secret");
    }
    Gantry::spawn(cmd)
}

/// One tenant's view of the API.
/// The clinvk API's steps, as a tenant takes them.
trait ClinvkSteps {
    async fn prompt(&self, body: Value) -> Value;
    async fn all_tasks_ended(&self) -> bool;
}

impl ClinvkSteps for Client<'_> {
    async fn prompt(&self, body: Value) -> Value {
        let (status, v) = self.call("POST", "/api/v1/prompt", body).await;
        assert_eq!(status, 200, "{v}");
        v
    }

    /// Every task of this tenant has ended.
    async fn all_tasks_ended(&self) -> bool {
        let (_, tasks) = self.call("GET", "/v1/tasks", Value::Null).await;
        tasks["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| !matches!(t["state"].as_str(), Some("pending" | "running")))
    }
}

/// A JSON request with `headers`; the response head with its body still streaming.
async fn send(
    g: &Gantry,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: String,
) -> hyper::Response<hyper::body::Incoming> {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    g.request(method, path, &all, body).await
}

/// The flat envelope of the document: `{"error": code, "message"}`.
fn assert_flat_bytes(body: &[u8], code: &str) {
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)));
    assert_flat(&v, code);
}

fn assert_flat(v: &Value, code: &str) {
    assert_eq!(v["error"], code, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
}

fn output(v: &Value) -> &str {
    v["output"]
        .as_str()
        .unwrap_or_else(|| panic!("no output in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_streams_sessions_and_batches_with_the_real_clis() {
    let fake = FakeModel::start();
    let setup = node(&fake, "");
    let mut g = serve(&setup);
    let alice = Client { g: &g, key: ALICE };

    // Backends: all three installed CLIs answer.
    let (status, backends) = alice.call("GET", "/api/v1/backends", Value::Null).await;
    assert_eq!(status, 200);
    let names: Vec<_> = backends["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap(),
                b["available"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [("claude", true), ("codex", true), ("gemini", true)],
        "{backends}"
    );

    // A JSON prompt: the documented body.
    let first = alice
        .prompt(json!({ "backend": "claude", "prompt": "say hello to clinvk", "output_format": "json", "metadata": { "project": "demo" } }))
        .await;
    assert_eq!(first["backend"], "claude");
    assert_eq!(first["exit_code"], 0, "{first}");
    assert!(
        output(&first).contains("fake reply 1 to: say hello to clinvk"),
        "{first}"
    );
    assert!(
        first["token_usage"]["input_tokens"].as_u64().unwrap() > 0,
        "{first}"
    );
    assert!(first["duration_ms"].as_u64().is_some());
    let session = first["session_id"]
        .as_str()
        .expect("a session id")
        .to_string();

    // Resuming it reaches the model with the earlier turn.
    let before = bodies(&fake).len();
    let second = alice
        .prompt(json!({ "backend": "claude", "prompt": "and once more", "session_id": session }))
        .await;
    assert_eq!(second["session_id"], session.as_str());
    assert!(
        output(&second).contains("fake reply 2 to: and once more"),
        "{second}"
    );
    assert!(
        bodies(&fake)[before..]
            .iter()
            .any(|b| b.contains("say hello to clinvk") && b.contains("and once more"))
    );
    let (_, s) = alice
        .call("GET", &format!("/api/v1/sessions/{session}"), Value::Null)
        .await;
    assert_eq!(s["turn_count"], 2, "{s}");
    assert_eq!(s["status"], "active");
    assert_eq!(s["metadata"]["project"], "demo");
    assert_eq!(s["initial_prompt"], "say hello to clinvk");
    assert!(s["token_usage"]["output_tokens"].as_u64().unwrap() > 0);
    assert!(s["created_at"].as_str().unwrap().ends_with('Z'));

    // Text format: the output alone.
    let (status, headers, text) = alice.call_full("POST", "/api/v1/prompt", json!({ "backend": "gemini", "prompt": "plain text please", "output_format": "text", "ephemeral": true })).await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(
        headers["x-exit-code"], "0",
        "the exit code has no field in text"
    );
    assert!(
        text.as_str()
            .unwrap()
            .contains("fake reply 1 to: plain text please"),
        "{text}"
    );

    // stream-json: unified events, ending with one `done` that carries the result (that they
    // arrive while the agent still runs is shown by the disconnect test).
    let auth = format!("Bearer {ALICE}");
    let response = send(
        &g,
        "POST",
        "/api/v1/prompt",
        &[("authorization", &auth)],
        json!({ "backend": "codex", "prompt": "stream it", "output_format": "stream-json" })
            .to_string(),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let mut body = response.into_body();
    let mut text = String::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            text.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events[0]["type"], "init", "{text}");
    assert!(
        events
            .iter()
            .all(|e| e["backend"] == "codex" && e["session_id"].is_string()),
        "{text}"
    );
    assert!(events.iter().any(|e| e["type"] == "message"), "{text}");
    let done = events.last().unwrap();
    assert_eq!(done["type"], "done", "{text}");
    assert_eq!(done["content"]["exit_code"], 0, "{text}");
    assert!(
        done["content"]["output"]
            .as_str()
            .unwrap()
            .contains("fake reply 1 to: stream it")
    );

    // Parallel with fail_fast: the failure cancels the slow ones.
    let started = Instant::now();
    let (status, par) = alice
        .call(
            "POST",
            "/api/v1/parallel",
            json!({
                "tasks": [
                    { "backend": "codex", "prompt": "SLOW one" },
                    { "backend": "claude", "prompt": "FAIL_500 two" },
                    { "backend": "gemini", "prompt": "SLOW three" },
                ],
                "max_parallel": 3,
                "fail_fast": true,
            }),
        )
        .await;
    assert_eq!(status, 200, "{par}");
    assert_eq!(par["total_tasks"], 3);
    assert_eq!(par["failed"], 1, "{par}");
    assert_eq!(par["results"][1]["backend"], "claude");
    assert_ne!(par["results"][1]["exit_code"], 0);
    assert_eq!(par["results"][0]["cancelled"], true, "{par}");
    assert_eq!(par["results"][2]["cancelled"], true, "{par}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the slow tasks were cut short"
    );
    assert!(alice.all_tasks_ended().await);

    // Parallel without failures: all complete.
    let (_, par) = alice
        .call("POST", "/api/v1/parallel", json!({ "tasks": [
            { "backend": "claude", "prompt": "p one" }, { "backend": "codex", "prompt": "p two" } ], "max_parallel": 1 }))
        .await;
    assert_eq!(
        (par["completed"].as_u64(), par["failed"].as_u64()),
        (Some(2), Some(0)),
        "{par}"
    );
    assert!(output(&par["results"][1]).contains("fake reply 1 to: p two"));

    // A chain: {{previous}} is the last step's output.
    let (status, chain) = alice
        .call(
            "POST",
            "/api/v1/chain",
            json!({ "steps": [
            { "name": "analyze", "backend": "claude", "prompt": "first step" },
            { "name": "improve", "backend": "codex", "prompt": "improve: {{previous}}" } ],
            "pass_working_dir": true }),
        )
        .await;
    assert_eq!(status, 200, "{chain}");
    assert_eq!(
        (
            chain["total_steps"].as_u64(),
            chain["completed_steps"].as_u64(),
            chain["failed_step"].as_u64()
        ),
        (Some(2), Some(2), Some(0)),
        "{chain}"
    );
    assert_eq!(chain["results"][1]["step"], 2);
    assert_eq!(chain["results"][1]["name"], "improve");
    assert!(
        output(&chain["results"][1]).contains("improve: fake reply 1 to: first st"),
        "{chain}"
    );

    // stop_on_failure stops at the failing step.
    let (_, chain) = alice
        .call(
            "POST",
            "/api/v1/chain",
            json!({ "steps": [
            { "backend": "claude", "prompt": "FAIL_500 at once" },
            { "backend": "codex", "prompt": "never {{previous}}" } ], "stop_on_failure": true }),
        )
        .await;
    assert_eq!(
        (chain["total_steps"].as_u64(), chain["failed_step"].as_u64()),
        (Some(1), Some(1)),
        "{chain}"
    );

    // Compare across all three.
    let (status, cmp) = alice
        .call(
            "POST",
            "/api/v1/compare",
            json!({ "prompt": "compare me", "backends": ["claude", "codex", "gemini"] }),
        )
        .await;
    assert_eq!(status, 200, "{cmp}");
    assert_eq!(cmp["backends"], json!(["claude", "codex", "gemini"]));
    for (i, name) in ["claude", "codex", "gemini"].iter().enumerate() {
        let r = &cmp["results"][i];
        assert_eq!(r["backend"], *name);
        assert_eq!(r["exit_code"], 0, "{cmp}");
        assert!(output(r).contains("fake reply 1 to: compare me"), "{cmp}");
    }
    let (_, cmp) = alice
        .call(
            "POST",
            "/api/v1/compare",
            json!({ "prompt": "one by one", "backends": ["gemini", "claude"], "sequential": true }),
        )
        .await;
    assert_eq!(cmp["results"][0]["backend"], "gemini", "{cmp}");
    assert_eq!(cmp["results"][1]["exit_code"], 0, "{cmp}");

    // Sessions: more of them, then filters and pages.
    alice
        .prompt(json!({ "backend": "codex", "prompt": "codex session" }))
        .await;
    alice
        .prompt(json!({ "backend": "claude", "prompt": "FAIL_500 broken session" }))
        .await;
    let (_, all) = alice.call("GET", "/api/v1/sessions", Value::Null).await;
    // Two claude sessions, the streamed codex one and this one; ephemeral runs keep none.
    assert_eq!(all["total"], 4, "{all}");
    assert_eq!(all["limit"], 100);
    let (_, claude) = alice
        .call("GET", "/api/v1/sessions?backend=claude", Value::Null)
        .await;
    assert_eq!(claude["total"], 2, "{claude}");
    let (_, errors) = alice
        .call("GET", "/api/v1/sessions?status=error", Value::Null)
        .await;
    assert_eq!(errors["total"], 1, "{errors}");
    assert_eq!(
        errors["sessions"][0]["initial_prompt"],
        "FAIL_500 broken session"
    );
    let (_, page) = alice
        .call("GET", "/api/v1/sessions?limit=1&offset=1", Value::Null)
        .await;
    assert_eq!(
        (
            page["total"].as_u64(),
            page["sessions"].as_array().unwrap().len()
        ),
        (Some(4), 1),
        "{page}"
    );
    assert_eq!(page["sessions"][0]["id"], all["sessions"][1]["id"]);
    // Another tenant sees none of them, and cannot resume one.
    let bob = Client { g: &g, key: BOB };
    let (_, theirs) = bob.call("GET", "/api/v1/sessions", Value::Null).await;
    assert_eq!(theirs["total"], 0);
    let (status, v) = bob
        .call(
            "POST",
            "/api/v1/prompt",
            json!({ "backend": "claude", "prompt": "x", "session_id": session }),
        )
        .await;
    assert_eq!(status, 404, "{v}");
    assert_flat(&v, "not_found");
    let (status, _) = bob
        .call(
            "DELETE",
            &format!("/api/v1/sessions/{session}"),
            Value::Null,
        )
        .await;
    assert_eq!(status, 404);

    // Delete one.
    let doomed = errors["sessions"][0]["id"].as_str().unwrap().to_string();
    let (status, _) = alice
        .call("DELETE", &format!("/api/v1/sessions/{doomed}"), Value::Null)
        .await;
    assert_eq!(status, 204);
    let (status, v) = alice
        .call("GET", &format!("/api/v1/sessions/{doomed}"), Value::Null)
        .await;
    assert_eq!(status, 404);
    assert_flat(&v, "not_found");

    // Sessions persist across a restart, and resume there.
    g.terminate();
    g.wait_exit(Duration::from_secs(30)).expect("gantry stops");
    let g = serve(&setup);
    let alice = Client { g: &g, key: ALICE };
    let (_, all) = alice.call("GET", "/api/v1/sessions", Value::Null).await;
    assert_eq!(all["total"], 3, "{all}");
    let third = alice
        .prompt(
            json!({ "backend": "claude", "prompt": "after the restart", "session_id": session }),
        )
        .await;
    assert!(
        output(&third).contains("fake reply 3 to: after the restart"),
        "{third}"
    );

    // Health and metrics see it all.
    let (status, health) = alice.call("GET", "/health", Value::Null).await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(
        health["session_store"],
        json!({ "available": true, "session_count": 3 })
    );
    assert!(health["uptime"].as_str().unwrap().ends_with('s'));
    assert!(health["uptime_millis"].as_u64().is_some());
    assert_eq!(health["backends"].as_array().unwrap().len(), 3);
    let (status, metrics) = alice.call("GET", "/metrics", Value::Null).await;
    assert_eq!(status, 200);
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains(
            "gantry_http_requests_total{route=\"/api/v1/...\",method=\"POST\",status=\"200\"}"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("gantry_runs_total{backend=\"claude\",outcome=\"done\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("gantry_http_request_duration_seconds_bucket{route=\"/api/v1/...\",method=\"POST\",le=\"+Inf\"}"));
    assert!(metrics.contains("gantry_active_runs 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_a_stream_cancels_its_run() {
    let fake = FakeModel::start();
    let setup = node(&fake, "");
    let g = serve(&setup);
    let alice = Client { g: &g, key: ALICE };
    let auth = format!("Bearer {ALICE}");
    let response = send(&g, "POST", "/api/v1/prompt", &[("authorization", &auth)], json!({ "backend": "claude", "prompt": "SLOW and long", "output_format": "stream-json", "ephemeral": true }).to_string()).await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    // Wait for the model to be mid-answer.
    let asked = Instant::now();
    while !bodies(&fake).iter().any(|b| b.contains("SLOW and long")) {
        assert!(
            asked.elapsed() < Duration::from_secs(60),
            "the CLI never asked the model"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    let (_, tasks) = alice.call("GET", "/v1/tasks", Value::Null).await;
    let task = tasks["tasks"][0].clone();
    assert_eq!(task["state"], "running", "{tasks}");
    let workspace = setup
        .data()
        .join("workspaces/alice")
        .join(task["workspace_id"].as_str().unwrap())
        .canonicalize()
        .unwrap();
    assert!(!processes_in(&workspace).is_empty());
    drop(body);
    let id = task["id"].as_str().unwrap();
    let left = Instant::now();
    let deadline = left + Duration::from_secs(30);
    loop {
        // Cancelled, or already removed with its ephemeral workspace.
        let (status, t) = alice
            .call("GET", &format!("/v1/tasks/{id}"), Value::Null)
            .await;
        if status == 404 || t["state"] == "cancelled" {
            break;
        }
        assert!(Instant::now() < deadline, "the run was not cancelled: {t}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, metrics) = alice.call("GET", "/metrics", Value::Null).await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("gantry_runs_total{backend=\"claude\",outcome=\"cancelled\"} 1"),
        "{metrics}"
    );
    assert!(
        left.elapsed() < Duration::from_secs(20),
        "cancelling took {:?}",
        left.elapsed()
    );
    // Nothing is left running, and the ephemeral workspace is gone.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !processes_in(&workspace).is_empty() || workspace.exists() {
        assert!(
            Instant::now() < deadline,
            "processes or workspace left: {:?}",
            processes_in(&workspace)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A kept session left mid-stream still counts its turn and knows the CLI's session, so
    // it can be resumed: the call ends with the client, so both are written as the run goes.
    let response = send(&g, "POST", "/api/v1/prompt", &[("authorization", &auth)], json!({ "backend": "claude", "prompt": "SLOW again", "output_format": "stream-json", "metadata": {"ticket": "T-9"} }).to_string()).await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut seen = String::new();
    while !seen.contains("\"type\":\"init\"") {
        let frame = tokio::time::timeout(Duration::from_secs(60), body.frame())
            .await
            .expect("an init event within a minute")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(frame.data_ref().unwrap()));
    }
    drop(body);
    let init: Value = serde_json::from_str(
        seen.lines()
            .find(|l| l.contains("\"type\":\"init\""))
            .unwrap(),
    )
    .unwrap();
    let session = init["session_id"].as_str().unwrap();
    let (status, s) = alice
        .call("GET", &format!("/api/v1/sessions/{session}"), Value::Null)
        .await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["turn_count"], 1, "{s}");
    assert_eq!(s["metadata"]["ticket"], "T-9", "{s}");
    assert_eq!(
        s["backend_session_id"], init["content"]["backend_session_id"],
        "{s} {init}"
    );
    assert!(s["backend_session_id"].is_string(), "{s} {init}");
}

/// The status of `GET /health` without a key, sent from the loopback address `from`.
async fn health_from(g: &Gantry, from: &str) -> String {
    let request = b"GET /health HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n";
    let reply = raw_from(g, from, request).await;
    reply.split(' ').nth(1).unwrap_or("").to_string()
}

/// Raw HTTP/1.1 over TCP, for bodies hyper's client would not send as asked.
async fn raw(g: &Gantry, request: &[u8]) -> String {
    raw_from(g, "127.0.0.1", request).await
}

/// [`raw`], from the loopback address `from` (all of 127.0.0.0/8 is this host's).
async fn raw_from(g: &Gantry, from: &str, request: &[u8]) -> String {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(std::net::SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    let mut stream = socket.connect(g.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_4xx_and_runs_nothing() {
    let fake = FakeModel::start();
    // Directories outside gantry's workspaces: one the operator allows Alice, with a blocked
    // part inside it.
    let outside = tempfile::tempdir().unwrap();
    let allowed = outside.path().canonicalize().unwrap().join("projects");
    let blocked = allowed.join("private");
    std::fs::create_dir_all(allowed.join("app")).unwrap();
    std::fs::create_dir_all(&blocked).unwrap();
    let config = format!(
        "[http]\nmax_request_body_bytes = 4096\n[workdirs]\nallowed = {{ alice = [{:?}] }}\nblocked = [{:?}]\n",
        allowed.display().to_string(),
        blocked.display().to_string()
    );
    let setup = node(&fake, &config);
    let g = serve(&setup);
    let alice = Client { g: &g, key: ALICE };
    let bob = Client { g: &g, key: BOB };
    // Bob's workspace, which Alice must not be able to name as a workdir.
    let (_, bobs) = bob
        .call("POST", "/v1/workspaces", json!({ "name": "bob's" }))
        .await;
    let bobs_dir = setup
        .data()
        .join("workspaces/bob")
        .join(bobs["id"].as_str().unwrap())
        .canonicalize()
        .unwrap();
    let (_, mine) = alice
        .call("POST", "/v1/workspaces", json!({ "name": "mine" }))
        .await;
    let my_dir = setup
        .data()
        .join("workspaces/alice")
        .join(mine["id"].as_str().unwrap())
        .canonicalize()
        .unwrap();
    std::fs::create_dir(my_dir.join("sub")).unwrap();

    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!({ "backend": "nope", "prompt": "p" }),
            400,
            "unknown_backend",
        ),
        (json!({ "backend": "claude" }), 400, "bad_request"),
        (
            json!({ "backend": "claude", "prompt": "" }),
            400,
            "bad_request",
        ),
        (json!({ "prompt": "p" }), 400, "bad_request"),
        (
            json!({ "backend": "claude", "prompt": "p", "approval_mode": "yolo" }),
            400,
            "bad_request",
        ),
        (
            json!({ "backend": "claude", "prompt": "p", "sandbox_mode": "none" }),
            400,
            "bad_request",
        ),
        (
            json!({ "backend": "claude", "prompt": "p", "output_format": "xml" }),
            400,
            "bad_request",
        ),
        (
            json!({ "backend": "claude", "prompt": "p", "max_turns": "ten" }),
            400,
            "bad_request",
        ),
        (
            json!({ "backend": "claude", "prompt": "p", "workdir": "/etc" }),
            403,
            "workdir_not_allowed",
        ),
        (
            json!({ "backend": "claude", "prompt": "p", "workdir": bobs_dir.display().to_string() }),
            403,
            "workdir_not_allowed",
        ),
        (
            json!({ "backend": "claude", "prompt": "p", "workdir": format!("{}/../../bob", my_dir.display()) }),
            403,
            "workdir_not_allowed",
        ),
        (
            json!({ "backend": "claude", "prompt": "p", "workdir": "relative/path" }),
            400,
            "bad_request",
        ),
        (
            json!({ "backend": "claude", "prompt": "p", "workspace_id": bobs["id"] }),
            404,
            "not_found",
        ),
        (
            json!({ "backend": "claude", "prompt": "p", "session_id": "nope" }),
            404,
            "not_found",
        ),
        (
            json!({ "backend": "claude", "prompt": "p", "extra": ["--dangerously-skip-permissions"] }),
            400,
            "refused",
        ),
        (
            json!({ "backend": "claude", "prompt": "p", "ephemeral": true, "session_id": "x" }),
            400,
            "bad_request",
        ),
        (
            json!({ "backend": "claude", "prompt": "p", "metadata": "not an object" }),
            400,
            "bad_request",
        ),
    ];
    for (body, status, code) in cases {
        let (got, v) = alice.call("POST", "/api/v1/prompt", body.clone()).await;
        assert_eq!(got, status, "{body} -> {v}");
        assert_flat(&v, code);
    }
    // The operator allowed that directory to Alice, not to Bob.
    let (got, v) = bob
        .call("POST", "/api/v1/prompt", json!({ "backend": "claude", "prompt": "p", "workdir": allowed.join("app").display().to_string() }))
        .await;
    assert_eq!(got, 403, "{v}");
    assert_flat(&v, "workdir_not_allowed");
    let batch_cases: Vec<(&str, Value, &str)> = vec![
        ("/api/v1/parallel", json!({ "tasks": [] }), "bad_request"),
        ("/api/v1/parallel", json!({}), "bad_request"),
        (
            "/api/v1/parallel",
            json!({ "tasks": [{ "backend": "claude", "prompt": "p" }, { "backend": "claude" }] }),
            "bad_request",
        ),
        (
            "/api/v1/parallel",
            json!({ "tasks": [{ "backend": "nope", "prompt": "p" }] }),
            "unknown_backend",
        ),
        (
            "/api/v1/parallel",
            json!({ "tasks": [{ "backend": "claude", "prompt": "p" }], "max_parallel": 0 }),
            "bad_request",
        ),
        ("/api/v1/chain", json!({ "steps": "x" }), "bad_request"),
        (
            "/api/v1/compare",
            json!({ "prompt": "p", "backends": [] }),
            "bad_request",
        ),
        (
            "/api/v1/compare",
            json!({ "prompt": "p", "backends": ["claude", "claude"] }),
            "bad_request",
        ),
        (
            "/api/v1/compare",
            json!({ "backends": ["claude"] }),
            "bad_request",
        ),
        (
            "/api/v1/compare",
            json!({ "prompt": "p", "backends": ["claude", "nope"] }),
            "unknown_backend",
        ),
    ];
    for (path, body, code) in batch_cases {
        let (got, v) = alice.call("POST", path, body.clone()).await;
        assert_eq!(got, 400, "{path} {body} -> {v}");
        assert_flat(&v, code);
    }
    for (query, code) in [
        ("limit=0", "bad_request"),
        ("limit=x", "bad_request"),
        ("offset=-1", "bad_request"),
        ("status=bogus", "bad_request"),
    ] {
        let (got, v) = alice
            .call("GET", &format!("/api/v1/sessions?{query}"), Value::Null)
            .await;
        assert_eq!(got, 400, "{query}: {v}");
        assert_flat(&v, code);
    }
    let (got, headers, v) = alice.call_full("GET", "/api/v1/prompt", Value::Null).await;
    assert_eq!(got, 405);
    assert_eq!(headers["allow"], "POST");
    assert_flat(&v, "method_not_allowed");
    let (got, v) = alice.call("GET", "/api/v1/nothing-here", Value::Null).await;
    assert_eq!(got, 404);
    assert_flat(&v, "not_found");
    // Not JSON.
    let auth = format!("Bearer {ALICE}");
    let response = send(
        &g,
        "POST",
        "/api/v1/prompt",
        &[("authorization", &auth)],
        "{not json".into(),
    )
    .await;
    assert_eq!(response.status(), 400);
    let v: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_flat(&v, "invalid_json");

    // Keys: missing, wrong; both in the document's shape.
    let (status, body) = g.call("POST", "/api/v1/prompt", &[], "{}").await;
    assert_eq!(status, 401);
    assert_flat_bytes(&body, "unauthorized");
    let (status, body) = g
        .call("GET", "/api/v1/backends", &[("x-api-key", "wrong-key")], "")
        .await;
    assert_eq!(status, 401);
    assert_flat_bytes(&body, "unauthorized");

    // Oversized bodies: with a length, and chunked without one.
    let big = format!(
        "{{\"backend\":\"claude\",\"prompt\":\"{}\"}}",
        "x".repeat(8000)
    );
    let (status, body) = g
        .call("POST", "/api/v1/prompt", &[("authorization", &auth)], &big)
        .await;
    assert_eq!(status, 413);
    assert_flat_bytes(&body, "payload_too_large");
    let mut chunked = format!(
        "POST /api/v1/prompt HTTP/1.1\r\nhost: x\r\nauthorization: {auth}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    for piece in big.as_bytes().chunks(1000) {
        chunked.push_str(&format!(
            "{:x}\r\n{}\r\n",
            piece.len(),
            std::str::from_utf8(piece).unwrap()
        ));
    }
    chunked.push_str("0\r\n\r\n");
    let answer = raw(&g, chunked.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("\"error\":\"payload_too_large\""),
        "{answer}"
    );
    // A small chunked body still works (and is refused only for what it says).
    let small = "{\"backend\":\"nope\",\"prompt\":\"p\"}";
    let answer = raw(&g, format!("POST /api/v1/prompt HTTP/1.1\r\nhost: x\r\nauthorization: {auth}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{small}\r\n0\r\n\r\n", small.len()).as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("unknown_backend"), "{answer}");
    // A malformed chunk size is a bad request, not an oversized one.
    let answer = raw(&g, format!("POST /api/v1/prompt HTTP/1.1\r\nhost: x\r\nauthorization: {auth}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\nzz\r\n{small}\r\n0\r\n\r\n").as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("\"error\":\"bad_body\""), "{answer}");

    // A dry run shows the command and runs nothing.
    let dry = alice
        .prompt(json!({ "backend": "claude", "prompt": "only show me", "dry_run": true, "model": "m-1", "workdir": my_dir.join("sub").display().to_string() }))
        .await;
    assert_eq!(dry["dry_run"], true);
    let argv: Vec<&str> = dry["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(argv[0].ends_with("claude"), "{dry}");
    assert!(
        argv.contains(&"only show me") && argv.contains(&"--model=m-1"),
        "{dry}"
    );
    assert_eq!(dry["workspace_id"], mine["id"]);

    // Nothing ran, nothing reached the model, no session was kept.
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
    let (_, tasks) = alice.call("GET", "/v1/tasks", Value::Null).await;
    assert_eq!(tasks["tasks"], json!([]), "{tasks}");
    let (_, sessions) = alice.call("GET", "/api/v1/sessions", Value::Null).await;
    assert_eq!(sessions["total"], 0);
    let (_, workspaces) = alice.call("GET", "/v1/workspaces", Value::Null).await;
    assert_eq!(
        workspaces["workspaces"].as_array().unwrap().len(),
        1,
        "no workspace was left behind: {workspaces}"
    );

    // A workdir inside one's own workspace runs there.
    let ran = alice
        .prompt(json!({ "backend": "gemini", "prompt": "in the sub dir", "workdir": my_dir.join("sub").display().to_string(), "ephemeral": true }))
        .await;
    assert_eq!(ran["exit_code"], 0, "{ran}");
    assert_eq!(ran["workspace_id"], mine["id"]);
    assert!(
        Path::new(&my_dir).join("sub").exists(),
        "a named workspace outlives an ephemeral run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_with_their_headers() {
    let fake = FakeModel::start();
    let setup = node(
        &fake,
        "[http]\nrate_limit_per_minute = 3\nrate_limit_tenants = { bob = 0 }\n",
    );
    let g = serve(&setup);
    let alice = Client { g: &g, key: ALICE };
    for remaining in ["2", "1", "0"] {
        let (status, headers, _) = alice
            .call_full("GET", "/api/v1/backends", Value::Null)
            .await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-ratelimit-limit"], "3");
        assert_eq!(headers["x-ratelimit-remaining"], remaining);
        assert!(headers.contains_key("x-ratelimit-reset"));
    }
    let (status, headers, v) = alice
        .call_full(
            "POST",
            "/api/v1/prompt",
            json!({ "backend": "claude", "prompt": "over the limit" }),
        )
        .await;
    assert_eq!(status, 429, "{v}");
    assert_flat(&v, "rate_limited");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    assert_eq!(headers["x-ratelimit-remaining"], "0");
    // Another tenant has its own budget (here: none at all).
    let bob = Client { g: &g, key: BOB };
    for _ in 0..5 {
        let (status, headers, _) = bob.call_full("GET", "/api/v1/backends", Value::Null).await;
        assert_eq!(status, 200);
        assert!(!headers.contains_key("x-ratelimit-limit"));
    }
    assert!(fake.requests().is_empty(), "the refused prompt never ran");
    // Callers without a key are limited per address: one that uses up its budget on the
    // public /health leaves another's (a load balancer's probes, say) untouched.
    for _ in 0..3 {
        assert_eq!(health_from(&g, "127.0.0.1").await, "200");
    }
    assert_eq!(health_from(&g, "127.0.0.1").await, "429");
    assert_eq!(health_from(&g, "127.0.0.2").await, "200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_degrades_when_a_backend_cannot_run_and_the_api_is_described() {
    let fake = FakeModel::start();
    let setup = Setup::new(&[
        ("system", plugin("system.toml")),
        ("clinvk-api", plugin("clinvk-api.toml")),
        ("claude", backend_manifest(CLAUDE, &fake)),
        ("codex", "kind = \"backend\"\ncomponent = \"bundled:codex\"\nbinary = \"/nowhere/codex\"\nimports = [\"gantry:plugin/config\"]\n".into()),
    ]);
    let g = setup.start();
    let (status, health) = g.get_json("/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(
        health["backends"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["name"] == "codex" && b["available"] == false)
    );
    // A prompt to it is refused, not run.
    let (status, body) = g
        .call(
            "POST",
            "/api/v1/prompt",
            &[],
            &json!({ "backend": "codex", "prompt": "p" }).to_string(),
        )
        .await;
    assert_eq!(status, 503);
    assert_flat_bytes(&body, "backend_unavailable");
    // A dry run needs no binary: it shows what would run.
    let (status, body) = g
        .call(
            "POST",
            "/api/v1/prompt",
            &[],
            &json!({ "backend": "codex", "prompt": "p", "dry_run": true }).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let dry: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(dry["command"][0], "/nowhere/codex", "{dry}");

    // Another process holding the store's lock: runs could not be recorded, so the node is
    // unhealthy (503) until it lets go. On SQLite the database's write lock, on PostgreSQL an
    // exclusive lock on the sessions table.
    // A probe's answer serves the probes of the next half second, so the change shows
    // within that.
    let holder = StoreLockHolder::take(&setup).await;
    let (status, health) = health_until(&g, 503).await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["status"], "unhealthy", "{health}");
    assert_eq!(health["session_store"]["available"], false, "{health}");
    holder.release().await;
    let (status, health) = health_until(&g, 200).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["session_store"]["available"], true, "{health}");

    let (status, doc) = g.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/api/v1/prompt",
        "/api/v1/parallel",
        "/api/v1/chain",
        "/api/v1/compare",
        "/api/v1/backends",
        "/api/v1/sessions",
        "/api/v1/sessions/{id}",
        "/health",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is not described");
    }
}

/// Without a stream too: a client that gives up before the JSON answer cancels the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_before_the_answer_cancels_its_run() {
    let setup = Setup::new(&[
        ("system", plugin("system.toml")),
        ("clinvk-api", plugin("clinvk-api.toml")),
        ("sleep", "kind = \"backend\"\ncomponent = \"bundled:exec\"\nbinary = \"sleep\"\nimports = [\"gantry:plugin/config\"]\n[settings]\nargs = [\"{prompt}\"]\n".into()),
    ]);
    let g = setup.start();
    let body = r#"{"backend":"sleep","prompt":"300","ephemeral":true}"#;
    let mut stream = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    let request = format!(
        "POST /api/v1/prompt HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let metric = |text: &str, line: &str| text.lines().any(|l| l == line);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, _, m) = g.get("/metrics").await;
        if metric(&String::from_utf8_lossy(&m), "gantry_active_runs 1") {
            break;
        }
        assert!(Instant::now() < deadline, "the run never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, _, m) = g.get("/metrics").await;
        let m = String::from_utf8_lossy(&m).into_owned();
        if metric(
            &m,
            "gantry_runs_total{backend=\"sleep\",outcome=\"cancelled\"} 1",
        ) && metric(&m, "gantry_active_runs 0")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the run outlived its client:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A lock on the setup's store held by another process, as a stuck writer would.
enum StoreLockHolder {
    Sqlite(rusqlite::Connection),
    Postgres(tokio_postgres::Client),
}

impl StoreLockHolder {
    async fn take(setup: &Setup) -> StoreLockHolder {
        match &setup.store {
            None => {
                let db = rusqlite::Connection::open(setup.data().join("gantry.db")).unwrap();
                db.execute_batch("BEGIN IMMEDIATE").unwrap();
                StoreLockHolder::Sqlite(db)
            }
            Some(url) => {
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(connection);
                client
                    .batch_execute("BEGIN; LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
                    .await
                    .unwrap();
                StoreLockHolder::Postgres(client)
            }
        }
    }

    async fn release(self) {
        match self {
            StoreLockHolder::Sqlite(db) => db.execute_batch("ROLLBACK").unwrap(),
            StoreLockHolder::Postgres(client) => client.batch_execute("ROLLBACK").await.unwrap(),
        }
    }
}

/// `GET /health` until it answers `status`, for at most five seconds (each probe of the
/// store answers the next half second's): the last answer.
async fn health_until(g: &Gantry, status: u16) -> (hyper::StatusCode, Value) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (got, health) = g.get_json("/health").await;
        if got == status || Instant::now() > deadline {
            return (got, health);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
