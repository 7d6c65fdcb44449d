//! The Web UI API's commands from outside: command lines run through the real binary in the
//! tasks' sandbox — output stored and shown while they run, cancel (-15), timeout, no write
//! outside the workspace, a clean environment, the static checks, and each user's and
//! tenant's commands kept apart.

mod common;

use common::webui::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// A variable gantry is started with, which no command may see.
const SECRET_VAR: &str = "GANTRY_TEST_SECRET_VALUE";
const SECRET: &str = "s3cr3t-0f-gantry-itself";

/// A gantry with users ann (alice, admin), rita (alice, read only) and bobby (bob, admin).
async fn started() -> (common::Setup, common::Gantry, String) {
    let setup = setup();
    add_user(&setup, "alice", "ann", true);
    add_user(&setup, "bob", "bobby", true);
    let (ok, out, err) = users_cli(
        &setup,
        &[
            "add",
            "--tenant",
            "alice",
            "--username",
            "rita",
            "--permission",
            "read",
        ],
        &format!("{PASSWORD}\n"),
    );
    assert!(ok, "{out} {err}");
    let mut cmd = setup.command();
    cmd.env("GANTRY_API_KEYS", format!("alice:{ALICE}, bob:{BOB}"))
        .env(SECRET_VAR, SECRET);
    let g = common::Gantry::spawn(cmd);
    let ann = token(&g, "ann").await;
    (setup, g, ann)
}

async fn refused(
    g: &common::Gantry,
    method: &str,
    path: &str,
    bearer: &str,
    body: Value,
) -> (u16, String) {
    let (status, _, answer) = call(g, method, path, Some(bearer), body, &[]).await;
    assert!(
        (400..500).contains(&status),
        "{method} {path}: {status} {answer}"
    );
    let code = answer["error"]["code"].as_str().unwrap_or("?").to_string();
    assert_envelope(&answer, &code);
    (status, code)
}

async fn execute(g: &common::Gantry, bearer: &str, body: Value) -> String {
    let (status, _, answer) =
        call(g, "POST", "/api/commands/execute", Some(bearer), body, &[]).await;
    assert_eq!(status, 202, "{answer}");
    let data = &answer["data"];
    assert_eq!(data["status"], "running", "{answer}");
    assert!(data["pid"].is_u64(), "{answer}");
    assert!(data["started_at"].is_string(), "{answer}");
    data["command_id"].as_str().unwrap().to_string()
}

/// Poll a command's status until `done` says so (at most 30 s).
async fn status_until(
    g: &common::Gantry,
    bearer: &str,
    id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = ok(
            g,
            "GET",
            &format!("/api/commands/{id}/status"),
            bearer,
            Value::Null,
        )
        .await;
        if done(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "never reached: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ended(g: &common::Gantry, bearer: &str, id: &str) -> Value {
    status_until(g, bearer, id, |s| s["status"] != "running").await
}

fn contents(status: &Value) -> Vec<String> {
    status["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["content"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn output_is_shown_while_it_runs_and_cancel_timeout_and_exit_codes_are_reported() {
    let (_setup, g, ann) = started().await;
    let id = execute(
        &g,
        &ann,
        json!({ "command": "echo a; sleep 30", "stream_output": true }),
    )
    .await;
    let running = status_until(&g, &ann, &id, |s| {
        !s["output"].as_array().unwrap().is_empty()
    })
    .await;
    assert_eq!(running["status"], "running", "{running}");
    assert!(running["exit_code"].is_null());
    assert_eq!(running["command"], "echo a; sleep 30");
    let line = &running["output"][0];
    assert_eq!(
        (line["stream"].as_str(), line["content"].as_str()),
        (Some("stdout"), Some("a\n"))
    );
    assert!(line["timestamp"].is_string());
    let list = ok(&g, "GET", "/api/commands/running", &ann, Value::Null).await;
    assert_eq!(list["total_running"], 1, "{list}");
    assert_eq!(list["commands"][0]["command_id"], id.as_str());

    let cancelled = ok(
        &g,
        "POST",
        &format!("/api/commands/{id}/cancel"),
        &ann,
        Value::Null,
    )
    .await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["exit_code"], -15);
    assert!(cancelled["cancelled_at"].is_string());
    let after = ok(
        &g,
        "GET",
        &format!("/api/commands/{id}/status"),
        &ann,
        Value::Null,
    )
    .await;
    assert_eq!(
        (after["status"].as_str(), after["exit_code"].as_i64()),
        (Some("cancelled"), Some(-15))
    );
    assert_eq!(contents(&after), ["a\n"]);
    let list = ok(&g, "GET", "/api/commands/running", &ann, Value::Null).await;
    assert_eq!(list["total_running"], 0, "{list}");

    let slow = execute(&g, &ann, json!({ "command": "sleep 30", "timeout": 1 })).await;
    let timed_out = ended(&g, &ann, &slow).await;
    assert_eq!(timed_out["status"], "timeout", "{timed_out}");
    assert_eq!(timed_out["exit_code"], -15);
    assert!(timed_out["error"].as_str().unwrap().contains("timed out"));

    let failing = execute(
        &g,
        &ann,
        json!({ "command": "echo out; echo err >&2; exit 3" }),
    )
    .await;
    let failed = ended(&g, &ann, &failing).await;
    assert_eq!(
        (failed["status"].as_str(), failed["exit_code"].as_i64()),
        (Some("failed"), Some(3)),
        "{failed}"
    );
    let mut streams: Vec<(String, String)> = failed["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["stream"].as_str().unwrap().into(),
                l["content"].as_str().unwrap().into(),
            )
        })
        .collect();
    streams.sort();
    assert_eq!(
        streams,
        [
            ("stderr".into(), "err\n".into()),
            ("stdout".into(), "out\n".to_string())
        ]
    );

    let history = ok(
        &g,
        "GET",
        "/api/commands/history?limit=2&offset=0",
        &ann,
        Value::Null,
    )
    .await;
    assert_eq!(history["total"], 3, "{history}");
    assert_eq!(
        (history["limit"].as_u64(), history["offset"].as_u64()),
        (Some(2), Some(0))
    );
    assert_eq!(history["commands"][0]["command_id"], failing.as_str());
    let rest = ok(
        &g,
        "GET",
        "/api/commands/history?limit=2&offset=2",
        &ann,
        Value::Null,
    )
    .await;
    assert_eq!(rest["commands"][0]["command_id"], id.as_str(), "{rest}");
    assert_eq!(
        refused(
            &g,
            "GET",
            "/api/commands/history?limit=0",
            &ann,
            Value::Null
        )
        .await
        .0,
        422
    );
}

#[tokio::test]
async fn a_command_writes_nowhere_outside_its_workspace() {
    let (setup, g, ann) = started().await;
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let tmp_target = format!("/tmp/gantry-outside-{unique}");
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let home_target = format!("{home}/gantry-escape-{unique}");
    let data_target = setup.data().join(format!("planted-{unique}"));
    let attempts = [
        format!("echo x > {tmp_target}"),
        format!("touch ../../escape-{unique}"),
        format!("touch ../escape-{unique}"),
        format!("echo x > {home_target}"),
        format!("echo x > {}", data_target.display()),
        format!("mkdir -p ~/.config && echo x > ~/.config/kept-{unique}"),
    ];
    for line in &attempts {
        let id = execute(&g, &ann, json!({ "command": line })).await;
        let end = ended(&g, &ann, &id).await;
        assert_ne!(end["status"], "running", "{line}: {end}");
    }
    // A write inside is fine and lands in the user's own workspace.
    let id = execute(
        &g,
        &ann,
        json!({ "command": "mkdir -p sub && echo inside > sub/inside.txt && pwd" }),
    )
    .await;
    let end = ended(&g, &ann, &id).await;
    assert_eq!(end["status"], "completed", "{end}");
    let workspaces = setup.data().join("workspaces").join("alice");
    let inside: Vec<_> = std::fs::read_dir(&workspaces)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("sub/inside.txt").exists())
        .collect();
    assert_eq!(inside.len(), 1, "the write inside the workspace is missing");
    // …and the working directory is resolved inside it.
    let id = execute(
        &g,
        &ann,
        json!({ "command": "cat inside.txt", "working_directory": "sub" }),
    )
    .await;
    assert_eq!(contents(&ended(&g, &ann, &id).await), ["inside\n"]);

    assert!(
        !std::path::Path::new(&tmp_target).exists(),
        "{tmp_target} was written"
    );
    assert!(
        !std::path::Path::new(&home_target).exists(),
        "{home_target} was written"
    );
    assert!(!data_target.exists(), "the data directory was written");
    for dir in [
        setup.data(),
        setup.data().join("workspaces"),
        workspaces.clone(),
    ] {
        let escaped = dir.join(format!("escape-{unique}"));
        assert!(!escaped.exists(), "{} was written", escaped.display());
    }
    // The command's own home went with it.
    let kept = walk(&setup.data())
        .into_iter()
        .find(|p| p.ends_with(format!("kept-{unique}")));
    assert!(kept.is_none(), "{kept:?} outlived its command");

    // Paths that leave the workspace are refused before anything runs.
    for dir in ["/tmp", "../", "sub/../../x", "missing"] {
        let body = json!({ "command": "pwd", "working_directory": dir });
        let (status, code) = refused(&g, "POST", "/api/commands/execute", &ann, body).await;
        assert_eq!((status, code.as_str()), (422, "VALIDATION_ERROR"), "{dir}");
    }
    let history = ok(&g, "GET", "/api/commands/history", &ann, Value::Null).await;
    assert_eq!(history["total"], attempts.len() + 2, "{history}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() && !path.is_symlink() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

#[tokio::test]
async fn the_environment_is_clean_and_loader_variables_are_refused() {
    let (_setup, g, ann) = started().await;
    let id = execute(
        &g,
        &ann,
        json!({ "command": "env", "environment": { "GREETING": "hi there" } }),
    )
    .await;
    let end = ended(&g, &ann, &id).await;
    assert_eq!(end["status"], "completed", "{end}");
    let lines = contents(&end);
    assert!(
        lines.contains(&"GREETING=hi there\n".to_string()),
        "{lines:?}"
    );
    for line in &lines {
        assert!(
            !line.contains(SECRET) && !line.starts_with("GANTRY_") && !line.starts_with("RUST_LOG"),
            "{line}"
        );
    }
    for (name, value) in [
        ("LD_PRELOAD", "/tmp/evil.so"),
        ("LD_LIBRARY_PATH", "/tmp"),
        ("BASH_ENV", "/tmp/x"),
        ("PATH", "/tmp"),
        ("1BAD", "x"),
    ] {
        let body = json!({ "command": "true", "environment": { name: value } });
        let (status, code) = refused(&g, "POST", "/api/commands/execute", &ann, body).await;
        assert_eq!((status, code.as_str()), (422, "VALIDATION_ERROR"), "{name}");
    }
    for body in [
        json!({ "command": "" }),
        json!({ "command": "true", "timeout": 0 }),
        json!({ "command": "true", "timeout": 100000 }),
        json!({ "command": "true", "colour": "red" }),
        json!({ "command": 5 }),
    ] {
        let (status, _) = refused(&g, "POST", "/api/commands/execute", &ann, body.clone()).await;
        assert_eq!(status, 422, "{body}");
    }
    // Nothing refused was stored.
    let history = ok(&g, "GET", "/api/commands/history", &ann, Value::Null).await;
    assert_eq!(history["total"], 1, "{history}");
}

#[tokio::test]
async fn validate_flags_risks_and_suggestions_rank_the_catalogue_and_history() {
    let (_setup, g, ann) = started().await;
    let check = |command: &str| json!({ "command": command, "check_safety": true });
    let v = ok(
        &g,
        "POST",
        "/api/commands/validate",
        &ann,
        check("rm -rf /"),
    )
    .await;
    assert_eq!(
        (v["valid"].as_bool(), v["safe"].as_bool()),
        (Some(true), Some(false)),
        "{v}"
    );
    assert!(
        !v["warnings"].as_array().unwrap().is_empty()
            && !v["suggestions"].as_array().unwrap().is_empty()
    );
    assert!(
        v["risks"]
            .as_array()
            .unwrap()
            .contains(&json!("destructive"))
    );
    let v = ok(
        &g,
        "POST",
        "/api/commands/validate",
        &ann,
        check(":(){ :|:& };:"),
    )
    .await;
    assert!(
        v["risks"].as_array().unwrap().contains(&json!("fork_bomb")),
        "{v}"
    );
    let v = ok(
        &g,
        "POST",
        "/api/commands/validate",
        &ann,
        check("echo 'open"),
    )
    .await;
    assert_eq!(v["valid"], false, "{v}");
    let v = ok(&g, "POST", "/api/commands/validate", &ann, check("ls -la")).await;
    assert_eq!(
        (v["valid"].as_bool(), v["safe"].as_bool()),
        (Some(true), Some(true)),
        "{v}"
    );

    let s = ok(
        &g,
        "GET",
        "/api/commands/suggestions?context=git&prefix=git%20",
        &ann,
        Value::Null,
    )
    .await;
    let first: Vec<&str> = s["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .take(3)
        .map(|x| x["command"].as_str().unwrap())
        .collect();
    assert_eq!(first, ["git status", "git add .", "git commit -m"], "{s}");
    let id = execute(&g, &ann, json!({ "command": "git log --graph" })).await;
    ended(&g, &ann, &id).await;
    let s = ok(
        &g,
        "GET",
        "/api/commands/suggestions?context=git&prefix=git%20l",
        &ann,
        Value::Null,
    )
    .await;
    assert_eq!(s["suggestions"][0]["command"], "git log --graph", "{s}");
    assert_eq!(s["suggestions"][0]["category"], "history");
}

#[tokio::test]
async fn another_tenant_sees_nothing_and_execute_needs_its_permission() {
    let (_setup, g, ann) = started().await;
    let id = execute(&g, &ann, json!({ "command": "sleep 30" })).await;
    let bo = token(&g, "bobby").await;
    for (method, path) in [
        ("GET", format!("/api/commands/{id}/status")),
        ("POST", format!("/api/commands/{id}/cancel")),
    ] {
        let (status, code) = refused(&g, method, &path, &bo, Value::Null).await;
        assert_eq!(
            (status, code.as_str()),
            (404, "RESOURCE_NOT_FOUND"),
            "{method} {path}"
        );
    }
    let list = ok(&g, "GET", "/api/commands/running", &bo, Value::Null).await;
    assert_eq!(list["total_running"], 0);
    let history = ok(&g, "GET", "/api/commands/history", &bo, Value::Null).await;
    assert_eq!(history["total"], 0);
    // Bob's cancel did nothing: it still runs.
    let still = ok(
        &g,
        "GET",
        &format!("/api/commands/{id}/status"),
        &ann,
        Value::Null,
    )
    .await;
    assert_eq!(still["status"], "running");

    let rita = token(&g, "rita").await;
    for (method, path, body) in [
        (
            "POST",
            "/api/commands/execute".to_string(),
            json!({ "command": "id" }),
        ),
        ("GET", "/api/commands/running".into(), Value::Null),
        ("GET", "/api/commands/history".into(), Value::Null),
        ("GET", format!("/api/commands/{id}/status"), Value::Null),
        ("POST", format!("/api/commands/{id}/cancel"), Value::Null),
    ] {
        let (status, code) = refused(&g, method, &path, &rita, body).await;
        assert_eq!(
            (status, code.as_str()),
            (403, "AUTH_INSUFFICIENT_PERMISSIONS"),
            "{path}"
        );
    }
    ok(
        &g,
        "POST",
        "/api/commands/validate",
        &rita,
        json!({ "command": "ls" }),
    )
    .await;
    ok(
        &g,
        "GET",
        "/api/commands/suggestions?prefix=ls",
        &rita,
        Value::Null,
    )
    .await;
    let (status, _) = refused(
        &g,
        "GET",
        "/api/commands/not-a-uuid/status",
        &ann,
        Value::Null,
    )
    .await;
    assert_eq!(status, 404);
    let cancelled = ok(
        &g,
        "POST",
        &format!("/api/commands/{id}/cancel"),
        &ann,
        Value::Null,
    )
    .await;
    assert_eq!(cancelled["exit_code"], -15);
}
