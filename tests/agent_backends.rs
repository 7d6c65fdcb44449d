//! The claude, codex and gemini backends, end to end: the real gantry binary, the real agent
//! CLIs (installed from npm at pinned versions by `tests/agent-clis/install.sh`, outside the
//! tree) and the fake model server `tests/fake-model/server.py`, through the task path.

mod common;

use common::agents::{
    CLAUDE, CODEX, Cli, FakeModel, GEMINI, backend_manifest, bodies, processes_in, root,
};
use common::{Gantry, Setup};
use serde_json::{Value, json};
use std::time::Duration;

fn start(cli: Cli, fake: &FakeModel) -> (Setup, Gantry) {
    let read = |f: &str| std::fs::read_to_string(root().join("plugins").join(f)).unwrap();
    // Approval `always` (for the file-writing tool call) needs the operator's consent.
    let backend = backend_manifest(cli, fake) + "allow_bypass = true\n";
    let setup = Setup::new(&[
        ("system", read("system.toml")),
        ("core-api", read("core-api.toml")),
        (cli.name, backend),
    ]);
    let mut cmd = setup.command();
    cmd.env(cli.key_env, "test-key-not-secret");
    let g = Gantry::spawn(cmd);
    (setup, g)
}

struct Api<'a>(&'a Gantry);

impl Api<'_> {
    async fn call(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let (status, bytes) = self.0.call(method, path, &[], &body).await;
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status.as_u16(), value)
    }

    async fn workspace(&self) -> String {
        let (status, ws) = self
            .call("POST", "/v1/workspaces", json!({ "name": "agent" }))
            .await;
        assert_eq!(status, 201, "{ws}");
        ws["id"].as_str().unwrap().to_string()
    }

    async fn task(&self, body: Value) -> (u16, Value) {
        self.call("POST", "/v1/tasks", body).await
    }

    async fn wait(&self, task: &str, done: impl Fn(&str) -> bool) -> Value {
        for _ in 0..2400 {
            let (_, t) = self
                .call("GET", &format!("/v1/tasks/{task}"), Value::Null)
                .await;
            if done(t["state"].as_str().unwrap()) {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("task {task} never reached the state");
    }

    async fn finished(&self, task: &str) -> Value {
        self.wait(task, |s| !matches!(s, "pending" | "running"))
            .await
    }

    /// The agent events of a finished task.
    async fn agent_events(&self, task: &str) -> Vec<Value> {
        let (_, bytes) = self
            .0
            .call(
                "GET",
                &format!("/v1/tasks/{task}/events?format=ndjson"),
                &[],
                "",
            )
            .await;
        String::from_utf8(bytes.to_vec())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|e| e["kind"] == "agent")
            .map(|e| e["data"].clone())
            .collect()
    }

    /// Run a prompt to its end: the task and its agent events.
    async fn run(&self, ws: &str, backend: &str, extra: Value) -> (Value, Vec<Value>) {
        let mut body = json!({ "workspace_id": ws, "backend": backend, "timeout_ms": 120000 });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, task) = self.task(body).await;
        assert_eq!(status, 201, "{task}");
        let id = task["id"].as_str().unwrap();
        let task = self.finished(id).await;
        let events = self.agent_events(id).await;
        (task, events)
    }
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

/// A turn, a resumed turn, a model error, a cancel and a refused flag, through the task path.
async fn exercise(cli: Cli) {
    let fake = FakeModel::start();
    let (setup, g) = start(cli, &fake);
    let api = Api(&g);
    // The CLIs run in the full sandbox: their own namespaces, the model proxy in between.
    let (_, health) = g.get_json("/health").await;
    assert_eq!(health["sandbox"], "full", "{health}");
    let ws = api.workspace().await;

    // 1. A prompt: init with a session id, the model's text, usage, done, exit 0.
    let (task, events) = api
        .run(&ws, cli.name, json!({ "prompt": "say hello to the tests" }))
        .await;
    assert_eq!(task["state"], "done", "{task}\n{events:#?}");
    assert_eq!(task["exit_code"], 0);
    let init = of_type(&events, "init");
    let session = init[0]["session_id"].as_str().expect("a session id");
    assert!(!session.is_empty());
    let text: String = of_type(&events, "message")
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert!(
        text.contains("fake reply 1 to: say hello to the tests"),
        "{text}"
    );
    let usage = of_type(&events, "usage");
    assert!(
        usage.last().unwrap()["input_tokens"].as_u64().unwrap() > 0,
        "{usage:?}"
    );
    let done = of_type(&events, "done");
    assert_eq!(done.len(), 1, "{events:#?}");
    assert_eq!(task["summary"]["success"], true);
    assert_eq!(task["summary"]["session_id"], session);
    assert!(
        task["summary"]["final_text"]
            .as_str()
            .unwrap()
            .contains("fake reply 1"),
        "{task}"
    );
    let key_seen = fake
        .requests()
        .iter()
        .any(|r| r.to_string().contains("test-key-not-secret"));
    assert!(
        key_seen,
        "the key reached the model server, added by gantry's model proxy"
    );
    let token_seen = fake
        .requests()
        .iter()
        .any(|r| r.to_string().contains("gantry-task-"));
    assert!(!token_seen, "the task's token never leaves gantry");
    assert!(
        !events
            .iter()
            .any(|e| e.to_string().contains("test-key-not-secret")),
        "the key is in no event"
    );
    assert!(
        task["summary"]["model_usage"]["requests"].as_u64() >= Some(1),
        "the model proxy counted the run's requests: {task}"
    );

    // The files gantry writes into the CLI's home belong to the task's uid (gantry as root).
    // SAFETY: a plain getter.
    if cli.name == "gemini" && unsafe { libc::geteuid() } == 0 {
        use std::os::unix::fs::MetadataExt;
        let settings = setup
            .data()
            .join("homes/local/gemini/.gemini/settings.json");
        let owner = std::fs::metadata(&settings).unwrap().uid();
        assert!(
            owner >= 2_100_000_000,
            "{} is owned by {owner}",
            settings.display()
        );
    }

    // 2. Resuming the session reaches the model with the earlier turn.
    let before = fake.requests().len();
    let (task, events) = api
        .run(
            &ws,
            cli.name,
            json!({ "prompt": "and once more", "resume_session": session }),
        )
        .await;
    assert_eq!(task["state"], "done", "{task}\n{events:#?}");
    let resumed = &bodies(&fake)[before..];
    assert!(
        resumed
            .iter()
            .any(|b| b.contains("say hello to the tests") && b.contains("and once more")),
        "the resumed request carries the earlier turn: {resumed:?}"
    );
    let text: String = of_type(&events, "message")
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert!(text.contains("fake reply 2 to: and once more"), "{text}");

    // 2b. A tool call of the agent's shell writes a file in the workspace, from inside the
    // sandbox; the model sees the tool's result. (Codex offers its tools only for a model it
    // knows.)
    let mut request = json!({ "prompt": "USE_TOOL WRITE_FILE now", "approval_mode": "always" });
    if cli.name == "codex" {
        request["model"] = "gpt-5-codex".into();
    }
    let (task, events) = api.run(&ws, cli.name, request).await;
    assert_eq!(task["state"], "done", "{task}\n{events:#?}");
    let (_, _, file) = g
        .get(&format!("/v1/workspaces/{ws}/files/tool-wrote.txt"))
        .await;
    assert_eq!(&file[..], b"hi\n", "the tool wrote its file: {events:#?}");
    assert!(
        !of_type(&events, "tool_use").is_empty() && !of_type(&events, "tool_result").is_empty(),
        "{events:#?}"
    );

    // 3. A model error: an error event, and the task failed.
    let (task, events) = api
        .run(&ws, cli.name, json!({ "prompt": "FAIL_500 this one" }))
        .await;
    assert_eq!(task["state"], "failed", "{task}\n{events:#?}");
    assert!(!of_type(&events, "error").is_empty(), "{events:#?}");
    assert_eq!(task["summary"]["success"], false);

    // 4. Cancelling a run stops the CLI and everything it started.
    let (status, task) = api
        .task(json!({ "workspace_id": ws, "backend": cli.name, "prompt": "SLOW answer please" }))
        .await;
    assert_eq!(status, 201, "{task}");
    let id = task["id"].as_str().unwrap();
    // Wait until the model is streaming its answer, so the CLI is mid-turn.
    let asked = bodies(&fake).len();
    for _ in 0..600 {
        if bodies(&fake)[asked..]
            .iter()
            .any(|b| b.contains("SLOW answer please"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let workspace_dir = setup
        .data()
        .join("workspaces/local")
        .join(&ws)
        .canonicalize()
        .unwrap();
    assert!(
        !processes_in(&workspace_dir).is_empty(),
        "the CLI runs in its workspace"
    );
    let (status, _) = api
        .call("POST", &format!("/v1/tasks/{id}/cancel"), Value::Null)
        .await;
    assert_eq!(status, 200);
    let task = api.finished(id).await;
    assert_eq!(task["state"], "cancelled", "{task}");
    let mut left = processes_in(&workspace_dir);
    for _ in 0..100 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = processes_in(&workspace_dir);
    }
    assert!(left.is_empty(), "processes left in the workspace: {left:?}");

    // 5. A flag outside the allowlist is refused before anything is spawned.
    let before = fake.requests().len();
    let (_, tasks_before) = api.call("GET", "/v1/tasks", Value::Null).await;
    let (status, body) = api
        .task(json!({
            "workspace_id": ws,
            "backend": cli.name,
            "prompt": "never sent",
            "extra_flags": ["--dangerously-skip-permissions"],
        }))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--dangerously-skip-permissions"),
        "{body}"
    );
    let (_, tasks_after) = api.call("GET", "/v1/tasks", Value::Null).await;
    assert_eq!(tasks_after, tasks_before, "no task was made");
    assert_eq!(fake.requests().len(), before, "nothing reached the model");

    // The backend reports itself available, with the CLI's version.
    let (_, backends) = api.call("GET", "/v1/backends", Value::Null).await;
    let me = &backends["backends"][0];
    assert_eq!(me["name"], cli.name);
    assert_eq!(me["available"], true, "{backends}");
    assert!(me["version"].as_str().is_some_and(|v| !v.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_through_gantry() {
    exercise(CLAUDE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_through_gantry() {
    exercise(CODEX).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_through_gantry() {
    exercise(GEMINI).await;
}

#[tokio::test]
async fn a_missing_binary_is_unavailable_and_says_why() {
    let fake = FakeModel::start();
    let setup = Setup::new(&[
        (
            "core-api",
            std::fs::read_to_string(root().join("plugins/core-api.toml")).unwrap(),
        ),
        (
            "claude",
            format!(
                "kind = \"backend\"\ncomponent = \"bundled:claude\"\nbinary = \"/nowhere/claude\"\nimports = [\"gantry:plugin/config\"]\n[settings]\nbase_url = {:?}\n",
                fake.url
            ),
        ),
    ]);
    let g = setup.start();
    let (_, backends) = Api(&g)
        .call("GET", "/v1/backends?refresh=true", Value::Null)
        .await;
    let me = &backends["backends"][0];
    assert_eq!(me["available"], false, "{backends}");
    assert!(
        me["reason"].as_str().unwrap().contains("/nowhere/claude"),
        "{backends}"
    );
}
