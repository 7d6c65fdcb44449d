//! The CLK API surface, seen from outside: the real binary on loopback, the `clk-api` handler
//! and the `exec` backend running the CLK-like fixture program `tests/fixtures/clk/clk`.

mod common;

use common::{Gantry, Setup};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/clk")
        .join(path)
}

fn plugin(file: &str) -> String {
    std::fs::read_to_string(format!("{}/../plugins/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The bundled CLK manifests, with the backend pointed at the fixture program and `extra`
/// appended to the handler's settings.
fn setup_with(extra_settings: &str) -> Setup {
    let backend = plugin("clk.toml").replace(
        "binary = \"clk\"",
        &format!("binary = {:?}", fixture("clk").display().to_string()),
    );
    Setup::new(&[
        ("system", plugin("system.toml")),
        (
            "clk-api",
            format!("{}{extra_settings}\n", plugin("clk-api.toml")),
        ),
        ("clk", backend),
    ])
}

fn setup() -> Setup {
    setup_with("")
}

struct Api<'a>(&'a Gantry);

impl Api<'_> {
    async fn call(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let (status, bytes) = self.0.call(method, path, &[], body).await;
        let value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            panic!(
                "{method} {path}: not JSON: {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        (status.as_u16(), value)
    }

    async fn workspace(&self, name: &str) -> String {
        let (status, body) = self
            .call(
                "POST",
                "/api/workspaces",
                &json!({ "name": name }).to_string(),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["ok"], true);
        body["workspace_id"].as_str().unwrap().to_string()
    }

    async fn research(&self, request: Value) -> String {
        let (status, body) = self
            .call("POST", "/api/research", &request.to_string())
            .await;
        assert_eq!(status, 202, "{body}");
        body["task_id"].as_str().unwrap().to_string()
    }

    /// The whole SSE stream of a task (it ends with the task), with extra request headers.
    async fn stream(&self, task: &str, headers: &[(&str, &str)]) -> Stream {
        let (status, bytes) = self
            .0
            .call("GET", &format!("/api/research/{task}/stream"), headers, "")
            .await;
        assert_eq!(status, 200);
        Stream::parse(std::str::from_utf8(&bytes).unwrap())
    }

    async fn wait(&self, task: &str, done: impl Fn(&str) -> bool) -> Value {
        for _ in 0..800 {
            let (_, t) = self.call("GET", &format!("/api/research/{task}"), "").await;
            if done(t["status"].as_str().unwrap()) {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("task {task} never reached the state");
    }

    async fn finished(&self, task: &str) -> Value {
        self.wait(task, |s| !matches!(s, "pending" | "running"))
            .await
    }
}

/// A parsed SSE stream: the output lines (id, seq, line) and the terminal event.
#[derive(Debug)]
struct Stream {
    lines: Vec<(u64, u64, String)>,
    end: Value,
}

impl Stream {
    fn parse(text: &str) -> Stream {
        let mut lines = Vec::new();
        let mut end = Value::Null;
        for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
            assert!(end.is_null(), "nothing follows the terminal event: {block}");
            let id = block
                .lines()
                .find_map(|l| l.strip_prefix("id: "))
                .map(|v| v.parse::<u64>().unwrap());
            let data: Value = serde_json::from_str(
                block
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .unwrap(),
            )
            .unwrap();
            match id {
                Some(id) => lines.push((
                    id,
                    data["seq"].as_u64().unwrap(),
                    data["line"].as_str().unwrap().to_string(),
                )),
                None => end = data,
            }
        }
        Stream { lines, end }
    }

    fn text(&self) -> Vec<&str> {
        self.lines.iter().map(|(_, _, l)| l.as_str()).collect()
    }
}

#[tokio::test]
async fn the_documents_complete_workflow_example_runs_unchanged() {
    let script = std::fs::read_to_string(fixture("workflow-example.sh")).unwrap();
    // The script is the document's own, byte for byte, where the document is at hand.
    let seed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/seeds/clk-rest-api.md");
    if let Ok(doc) = std::fs::read_to_string(&seed) {
        assert!(
            doc.contains(&script),
            "the fixture differs from the document"
        );
    }
    let setup = setup();
    let g = setup.start();
    let script = script.replacen(
        "BASE=http://localhost:8001",
        &format!("BASE=http://{}", g.addr),
        1,
    );
    let out = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Auto-init, the idea, its status, its artifact, then the engineering run.
    for expected in [
        "data: {\"line\":\"CLK initialized.\",\"seq\":0}",
        "Captured idea: A local-first journaling app",
        "\"status\": \"done\"",
        "\"line_count\": 3",
        "\"path\": \".clk/state/idea.json\"",
        "{\"idea\": \"A local-first journaling app\"}",
        "\"line\":\"workflow: engineering\"",
        "data: {\"exit_code\":0,\"status\":\"done\"}",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}

#[tokio::test]
async fn health_capabilities_and_workflows() {
    let setup = setup();
    let g = setup.start();
    let api = Api(&g);
    let (status, body) = api.call("GET", "/api/healthz", "").await;
    assert_eq!(status, 200);
    assert_eq!(body["ok"], true);
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["uptime_s"].as_f64().unwrap() >= 0.0);
    let (_, body) = api.call("GET", "/api/capabilities", "").await;
    assert_eq!(
        body,
        json!({ "ok": true, "modes": ["init", "idea", "plan", "run", "loop", "status"] })
    );
    let (_, body) = api.call("GET", "/api/workflows", "").await;
    let names: Vec<_> = body["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["name"].as_str().unwrap(), w["path"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            ("engineering", "engineering.yaml"),
            ("discovery", "discovery.yaml")
        ]
    );

    // An operator's template set that does not load is the documented 500.
    let setup = setup_with("workflows = \"[{\\\"name\\\": 1}]\"");
    let g = setup.start();
    let (status, body) = Api(&g).call("GET", "/api/workflows", "").await;
    assert_eq!(status, 500);
    assert_eq!(
        body,
        json!({ "ok": false, "error": { "code": "template_load_failed", "message": "Failed to load workflow templates." } })
    );
}

#[tokio::test]
async fn init_runs_once_and_workflow_is_injected_in_both_forms() {
    let setup = setup();
    let g = setup.start();
    let api = Api(&g);
    let ws = api.workspace("w").await;
    let first = api
        .research(json!({ "command": "idea", "args": ["one"], "workspace_id": ws }))
        .await;
    let stream = api.stream(&first, &[]).await;
    assert_eq!(stream.text()[0], "CLK initialized.");
    assert_eq!(stream.text()[2], "Captured idea: one");
    assert_eq!(stream.end, json!({ "status": "done", "exit_code": 0 }));
    // The workspace is initialised now: no second init.
    let second = api
        .research(json!({ "command": "idea", "args": ["two"], "workspace_id": ws }))
        .await;
    assert_eq!(
        api.stream(&second, &[]).await.text(),
        ["Captured idea: two"]
    );
    // `init` itself is never preceded by another.
    let fresh = api.workspace("fresh").await;
    let init = api
        .research(json!({ "command": "init", "workspace_id": fresh }))
        .await;
    assert_eq!(api.stream(&init, &[]).await.text().len(), 2);

    let workflow_of = |args: Value| json!({ "command": "run", "workflow": "engineering", "args": args, "workspace_id": ws });
    for (args, expected) in [
        (json!([]), "workflow: engineering"),
        (json!(["--workflow", "discovery"]), "workflow: discovery"),
        (json!(["--workflow=discovery"]), "workflow: discovery"),
    ] {
        let task = api.research(workflow_of(args.clone())).await;
        let stream = api.stream(&task, &[]).await;
        assert_eq!(stream.text()[0], expected, "{args}");
        assert_eq!(stream.end["status"], "done", "{args}: {stream:?}");
    }
    // Only `run` gets the flag.
    let plan = api
        .research(json!({ "command": "plan", "workflow": "engineering", "workspace_id": ws }))
        .await;
    assert_eq!(
        api.stream(&plan, &[]).await.text(),
        ["Plan written to .clk/state/plan.md"]
    );
}

#[tokio::test]
async fn streams_replay_from_zero_resume_after_last_event_id_and_carry_every_line() {
    let setup = setup();
    let g = setup.start();
    let api = Api(&g);
    let ws = api.workspace("big").await;
    let task = api
        .research(json!({ "command": "run", "args": ["--lines", "50000"], "workspace_id": ws }))
        .await;
    // One client follows from the start while the task runs.
    let live = api.stream(&task, &[]).await;
    let expected: Vec<String> = std::iter::once("CLK initialized.".to_string())
        .chain(std::iter::once(String::new())) // project_root line, checked below
        .chain(std::iter::once("workflow: default".to_string()))
        .chain((1..=50_000).map(|i| format!("step {i}")))
        .chain(std::iter::once("run complete".to_string()))
        .collect();
    assert_eq!(live.lines.len(), expected.len());
    for (i, (id, seq, line)) in live.lines.iter().enumerate() {
        assert_eq!((*id, *seq), (i as u64, i as u64));
        if i != 1 {
            assert_eq!(line, &expected[i]);
        }
    }
    assert!(live.lines[1].2.starts_with("  project_root: "));
    assert_eq!(live.end, json!({ "status": "done", "exit_code": 0 }));

    // A client joining after the end gets everything from seq 0.
    let late = api.stream(&task, &[]).await;
    assert_eq!(late.lines, live.lines);
    // A client reconnecting after N gets N+1 onward.
    let resumed = api.stream(&task, &[("last-event-id", "40000")]).await;
    assert_eq!(resumed.lines[0].1, 40_001);
    assert_eq!(resumed.lines, live.lines[40_001..]);
    assert_eq!(resumed.end, live.end);
    let (_, t) = api.call("GET", &format!("/api/research/{task}"), "").await;
    assert_eq!(t["line_count"], live.lines.len());
}

#[tokio::test]
async fn task_status_has_every_documented_field() {
    let setup = setup();
    let g = setup.start();
    let api = Api(&g);
    let ws = api.workspace("w").await;
    let task = api
        .research(json!({ "command": "run", "args": ["--lines", "3", "--interval", "0.3"], "workspace_id": ws }))
        .await;
    let running = api.wait(&task, |s| s == "running").await;
    assert!(running["started_at"].is_string());
    assert!(running["finished_at"].is_null());
    assert!(running["exit_code"].is_null());
    let done = api.finished(&task).await;
    assert_eq!(done["ok"], true);
    assert_eq!(done["task_id"], task);
    assert_eq!(done["workspace_id"], ws);
    assert_eq!(done["command"], "run");
    assert_eq!(done["status"], "done");
    assert_eq!(done["exit_code"], 0);
    assert_eq!(
        done["line_count"], 7,
        "init (2), workflow, 3 steps, complete"
    );
    for field in ["created_at", "started_at", "finished_at"] {
        let at = done[field].as_str().unwrap();
        assert!(
            at.len() == 27 && at.ends_with('Z') && at.as_bytes()[10] == b'T',
            "{field}: {at}"
        );
    }
    assert!(done["created_at"].as_str() <= done["started_at"].as_str());
    assert!(done["started_at"].as_str() <= done["finished_at"].as_str());

    let failing = api
        .research(
            json!({ "command": "run", "args": ["--lines", "1", "--fail"], "workspace_id": ws }),
        )
        .await;
    let failed = api.finished(&failing).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["exit_code"], 3);
    let stream = api.stream(&failing, &[]).await;
    assert!(
        stream.text().contains(&"run failed"),
        "stderr is in the stream"
    );
    assert_eq!(stream.end, json!({ "status": "failed", "exit_code": 3 }));
}

#[tokio::test]
async fn busy_workspaces_refuse_deletion_and_cancel_ends_the_task() {
    let setup = setup();
    let g = setup.start();
    let api = Api(&g);
    let ws = api.workspace("busy").await;
    let task = api
        .research(json!({ "command": "loop", "workspace_id": ws }))
        .await;
    api.wait(&task, |s| s == "running").await;
    let (status, body) = api
        .call("DELETE", &format!("/api/workspaces/{ws}"), "")
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["ok"], false);
    assert_eq!(body["error"]["code"], "workspace_busy");
    let (_, list) = api.call("GET", "/api/workspaces", "").await;
    assert_eq!(
        list["workspaces"][0]["id"], ws,
        "the workspace is still there"
    );

    let (status, body) = api
        .call("POST", &format!("/api/research/{task}/cancel"), "")
        .await;
    assert_eq!((status, body), (200, json!({ "ok": true })));
    let t = api.finished(&task).await;
    assert_eq!(t["status"], "cancelled");
    // Cancelling a finished task changes nothing.
    let (status, _) = api
        .call("POST", &format!("/api/research/{task}/cancel"), "")
        .await;
    assert_eq!(status, 200);
    let (_, again) = api.call("GET", &format!("/api/research/{task}"), "").await;
    assert_eq!(again["status"], "cancelled");
    assert_eq!(again["finished_at"], t["finished_at"]);

    let (status, body) = api
        .call("DELETE", &format!("/api/workspaces/{ws}"), "")
        .await;
    assert_eq!((status, body), (200, json!({ "ok": true })));
    let (_, list) = api.call("GET", "/api/workspaces", "").await;
    assert_eq!(list["workspaces"], json!([]));
    let (status, body) = api.call("GET", &format!("/api/research/{task}"), "").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "task_not_found");
}

#[tokio::test]
async fn artifacts_list_and_download_and_every_traversal_is_403() {
    let setup = setup();
    let g = setup.start();
    let api = Api(&g);
    let ws = api.workspace("files").await;
    let task = api
        .research(json!({ "command": "idea", "args": ["secretless"], "workspace_id": ws }))
        .await;
    api.finished(&task).await;
    let (_, list) = api
        .call("GET", &format!("/api/research/{task}/artifacts"), "")
        .await;
    assert_eq!(list["ok"], true);
    assert_eq!(list["task_id"], task);
    let artifact = &list["artifacts"][0];
    assert_eq!(artifact["path"], ".clk/state/idea.json");
    assert_eq!(artifact["size"], "{\"idea\": \"secretless\"}\n".len());
    assert!(artifact["modified"].as_str().unwrap().ends_with('Z'));
    let response = g
        .send(
            "GET",
            &format!("/api/research/{task}/artifacts/.clk/state/idea.json"),
            "",
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "the MIME type follows the extension"
    );

    // A secret beside the workspaces, and a link to it from inside one.
    let secret = "TOP-SECRET-CONTENT";
    std::fs::write(setup.data().join("secret.txt"), secret).unwrap();
    let ws_dir = setup.data().join("workspaces/local").join(&ws);
    std::os::unix::fs::symlink(setup.data().join("secret.txt"), ws_dir.join("link.txt")).unwrap();
    std::os::unix::fs::symlink("../../..", ws_dir.join("up")).unwrap();
    for path in [
        "../../../secret.txt",
        "..%2f..%2f..%2fsecret.txt",
        "%2e%2e/%2e%2e/%2e%2e/secret.txt",
        "%2E%2E%2F%2E%2E%2F%2E%2E%2Fsecret.txt",
        "/etc/passwd",
        "%2Fetc%2Fpasswd",
        "link.txt",
        "up/secret.txt",
        "a%00b",
        "..%5c..%5csecret.txt",
        "./.clk/state/idea.json",
    ] {
        let (status, bytes) = g
            .call(
                "GET",
                &format!("/api/research/{task}/artifacts/{path}"),
                &[],
                "",
            )
            .await;
        let text = String::from_utf8_lossy(&bytes);
        assert_eq!(status, 403, "{path}: {text}");
        assert!(
            !text.contains(secret) && !text.contains("root:"),
            "{path}: {text}"
        );
    }
    let (status, body) = api
        .call(
            "GET",
            &format!("/api/research/{task}/artifacts/missing.txt"),
            "",
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "artifact_not_found");
}

#[tokio::test]
async fn bad_input_gets_the_envelope_and_creates_nothing() {
    let setup = setup();
    let g = setup.start();
    let api = Api(&g);
    let unknown = "00000000-0000-4000-8000-000000000000";
    for (body, status, code) in [
        (
            json!({ "command": "explode" }).to_string(),
            400,
            "invalid_command",
        ),
        (json!({ "args": ["x"] }).to_string(), 422, "invalid_request"),
        (json!({ "command": 5 }).to_string(), 422, "invalid_request"),
        (
            json!({ "command": "idea", "args": "x" }).to_string(),
            422,
            "invalid_request",
        ),
        (
            json!({ "command": "idea", "args": [1] }).to_string(),
            422,
            "invalid_request",
        ),
        (
            json!({ "command": "idea", "workspace_id": 7 }).to_string(),
            422,
            "invalid_request",
        ),
        (
            json!({ "command": "run", "workflow": "nope" }).to_string(),
            400,
            "workflow_not_found",
        ),
        (
            json!({ "command": "idea", "workspace_id": unknown }).to_string(),
            404,
            "workspace_not_found",
        ),
        ("{not json".to_string(), 400, "invalid_json"),
        ("[1, 2]".to_string(), 422, "invalid_request"),
    ] {
        let (got, reply) = api.call("POST", "/api/research", &body).await;
        assert_eq!(got, status, "{body}: {reply}");
        assert_eq!(reply["ok"], false, "{body}");
        assert_eq!(reply["error"]["code"], code, "{body}: {reply}");
        assert!(reply["error"]["message"].as_str().unwrap().len() > 5);
    }
    for (method, path, body, status, code) in [
        ("POST", "/api/workspaces", "{}", 422, "invalid_request"),
        (
            "POST",
            "/api/workspaces",
            "{\"name\": 3}",
            422,
            "invalid_request",
        ),
        ("POST", "/api/workspaces", "nope", 400, "invalid_json"),
        (
            "DELETE",
            &format!("/api/workspaces/{unknown}") as &str,
            "",
            404,
            "workspace_not_found",
        ),
        (
            "GET",
            &format!("/api/research/{unknown}"),
            "",
            404,
            "task_not_found",
        ),
        (
            "GET",
            &format!("/api/research/{unknown}/stream"),
            "",
            404,
            "task_not_found",
        ),
        (
            "GET",
            &format!("/api/research/{unknown}/artifacts"),
            "",
            404,
            "task_not_found",
        ),
        (
            "POST",
            &format!("/api/research/{unknown}/cancel"),
            "",
            404,
            "task_not_found",
        ),
        ("PUT", "/api/research", "", 405, "method_not_allowed"),
    ] {
        let (got, reply) = api.call(method, path, body).await;
        assert_eq!(got, status, "{method} {path}: {reply}");
        assert_eq!(reply["error"]["code"], code, "{method} {path}: {reply}");
    }
    // Nothing was made along the way: no workspace, no task.
    let (_, list) = api.call("GET", "/api/workspaces", "").await;
    assert_eq!(list, json!({ "ok": true, "workspaces": [] }));
}

#[tokio::test]
async fn an_ephemeral_workspace_is_made_when_none_is_named() {
    let setup = setup();
    let g = setup.start();
    let api = Api(&g);
    let (status, body) = api
        .call(
            "POST",
            "/api/research",
            &json!({ "command": "init" }).to_string(),
        )
        .await;
    assert_eq!(status, 202);
    let ws = body["workspace_id"].as_str().unwrap();
    let task = body["task_id"].as_str().unwrap();
    assert_eq!(api.finished(task).await["status"], "done");
    let (_, list) = api.call("GET", "/api/workspaces", "").await;
    assert_eq!(list["workspaces"][0]["id"], ws);
    assert_eq!(list["workspaces"][0]["path"], format!("/workspaces/{ws}"));
}

#[test]
fn workspaces_and_finished_tasks_survive_a_restart() {
    let setup = setup();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (ws, task, before) = {
        let g = setup.start();
        rt.block_on(async {
            let api = Api(&g);
            let ws = api.workspace("keeper").await;
            let task = api
                .research(json!({ "command": "idea", "args": ["kept"], "workspace_id": ws }))
                .await;
            let before = api.finished(&task).await;
            (ws, task, before)
        })
        // The server is stopped here.
    };
    let g = setup.start();
    rt.block_on(async {
        let api = Api(&g);
        let (_, list) = api.call("GET", "/api/workspaces", "").await;
        assert_eq!(list["workspaces"][0]["id"], ws);
        assert_eq!(list["workspaces"][0]["name"], "keeper");
        let (status, after) = api.call("GET", &format!("/api/research/{task}"), "").await;
        assert_eq!(status, 200);
        assert_eq!(after, before);
        let stream = api.stream(&task, &[]).await;
        assert_eq!(stream.text()[2], "Captured idea: kept");
        assert_eq!(stream.end["status"], "done");
        let (_, artifacts) = api
            .call("GET", &format!("/api/research/{task}/artifacts"), "")
            .await;
        assert_eq!(artifacts["artifacts"][0]["path"], ".clk/state/idea.json");
    });
}
