//! The Web UI API from outside: a gantry serving it with two tenants' keys, users made with
//! the real `gantry users` command, and requests in the document's shapes.

use super::{Gantry, Setup};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::io::Write;
use std::process::{Command, Stdio};

pub const ALICE: &str = "alice-key-0123456789abcdef";
pub const BOB: &str = "bob-key-0123456789abcdef";
pub const PASSWORD: &str = "correct horse battery";

pub fn setup() -> Setup {
    Setup::new(&[
        (
            "webui-api",
            include_str!("../../plugins/webui-api.toml").to_string(),
        ),
        (
            "system",
            include_str!("../../plugins/system.toml").to_string(),
        ),
    ])
}

/// A setup whose board tasks run the stand-in agent `tests/fixtures/board/board-agent`
/// (backend `board`).
pub fn board_setup() -> Setup {
    let agent = super::agents::root().join("tests/fixtures/board/board-agent");
    Setup::new(&[
        (
            "webui-api",
            include_str!("../../plugins/webui-api.toml").to_string(),
        ),
        (
            "system",
            include_str!("../../plugins/system.toml").to_string(),
        ),
        (
            "board",
            format!(
                "kind = \"backend\"\ncomponent = \"bundled:exec\"\nbinary = {:?}\nimports = [\"gantry:plugin/config\"]\n[settings]\nargs = [\"{{prompt}}\"]\n",
                agent.display().to_string()
            ),
        ),
    ])
}

pub fn serve(setup: &Setup) -> Gantry {
    let mut cmd = setup.command();
    cmd.env("GANTRY_API_KEYS", format!("alice:{ALICE}, bob:{BOB}"));
    Gantry::spawn(cmd)
}

/// `gantry users ARGS…` on the setup's data directory, with `stdin` as its standard input;
/// whether it succeeded, and its stdout and stderr.
pub fn users_cli(setup: &Setup, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut cmd = Command::new(super::gantry_bin());
    setup.with_store(&mut cmd);
    let mut child = cmd
        .arg("users")
        .args(args)
        .arg("--data-dir")
        .arg(setup.data())
        .env_remove("GANTRY_DATA_DIR")
        .env_remove("GANTRY_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running gantry users");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Add a user with the CLI, the password on stdin.
pub fn add_user(setup: &Setup, tenant: &str, username: &str, admin: bool) {
    let mut args = vec!["add", "--tenant", tenant, "--username", username];
    if admin {
        args.push("--admin");
    }
    let (ok, out, err) = users_cli(setup, &args, &format!("{PASSWORD}\n"));
    assert!(ok, "users add: {out} {err}");
}

/// A request with an optional bearer credential and extra headers: status, headers, JSON.
pub async fn call(
    g: &Gantry,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Value,
    extra: &[(&str, &str)],
) -> (u16, hyper::HeaderMap, Value) {
    let auth = bearer.map(|b| format!("Bearer {b}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("authorization", auth));
    }
    headers.extend_from_slice(extra);
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let response = g.request(method, path, &headers, body).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, headers, value)
}

pub async fn login(g: &Gantry, username: &str, password: &str) -> (u16, hyper::HeaderMap, Value) {
    let body = json!({ "username": username, "password": password });
    call(g, "POST", "/api/auth/login", None, body, &[]).await
}

pub async fn token(g: &Gantry, username: &str) -> String {
    let (status, _, body) = login(g, username, PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    body["data"]["access_token"].as_str().unwrap().to_string()
}

/// The document's error envelope with `code`, and its meta.
pub fn assert_envelope(body: &Value, code: &str) {
    assert!(body["data"].is_null(), "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(body["error"]["details"].is_object(), "{body}");
    assert!(body["meta"]["timestamp"].is_string(), "{body}");
    assert!(body["meta"]["request_id"].is_string(), "{body}");
    assert_eq!(body["meta"]["version"], "1.0.0", "{body}");
}

/// A successful call's `data`, with the request id every answer carries.
pub async fn ok(g: &Gantry, method: &str, path: &str, bearer: &str, body: Value) -> Value {
    let (status, headers, answer) = call(g, method, path, Some(bearer), body, &[]).await;
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {answer}"
    );
    assert!(answer["error"].is_null(), "{answer}");
    assert!(headers.contains_key("x-request-id"), "{method} {path}");
    answer["data"].clone()
}

/// A call refused for its input (4xx): its status and `error`, in the document's envelope.
pub async fn refused(
    g: &Gantry,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let (status, _, answer) = call(g, method, path, bearer, body, &[]).await;
    assert!(
        (400..500).contains(&status),
        "{method} {path}: {status} {answer}"
    );
    assert_envelope(&answer, answer["error"]["code"].as_str().unwrap_or("?"));
    (status, answer["error"].clone())
}

/// A project whose tasks run on the stand-in agent (backend `board`); its id.
pub async fn board_project(g: &Gantry, bearer: &str, name: &str) -> String {
    let p = ok(
        g,
        "POST",
        "/api/projects/",
        bearer,
        json!({ "name": name, "settings": { "backend": "board" } }),
    )
    .await;
    p["id"].as_str().unwrap().to_string()
}

/// A working session of the caller's on `project`, with `settings`.
pub async fn work_session(g: &Gantry, bearer: &str, project: &str, settings: Value) -> Value {
    ok(
        g,
        "POST",
        "/api/sessions/",
        bearer,
        json!({ "project_id": project, "settings": settings }),
    )
    .await
}
