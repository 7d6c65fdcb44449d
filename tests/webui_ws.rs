//! `/ws/{session_id}`, the Web UI API document's WebSocket protocol, from outside: the real
//! binary, users made with `gantry users`, a board task run by a stand-in agent, a real
//! WebSocket client.

mod common;

use common::webui::{
    ALICE, add_user, board_project, board_setup, call, serve, token, work_session,
};
use common::{Gantry, Setup};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(g: &Gantry, session: &str) -> Client {
    let (ws, response) = tokio_tungstenite::connect_async(format!("ws://{}/ws/{session}", g.addr))
        .await
        .expect("connecting");
    assert_eq!(response.status(), 101);
    ws
}

async fn send(ws: &mut Client, message: Value) {
    ws.send(Message::text(message.to_string())).await.unwrap();
}

/// The next JSON message, within `limit`; none when the connection closed first.
async fn next_within(ws: &mut Client, limit: Duration) -> Option<Value> {
    next_or_why(ws, limit).await.ok()
}

/// The next JSON message within `limit`, or what came instead (a close and its code, an
/// error, nothing).
async fn next_or_why(ws: &mut Client, limit: Duration) -> Result<Value, String> {
    loop {
        match tokio::time::timeout(limit, ws.next()).await {
            Err(_) => return Err(format!("nothing within {limit:?}")),
            Ok(Some(Ok(Message::Text(t)))) => return Ok(serde_json::from_str(&t).unwrap()),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(other) => return Err(format!("{other:?}")),
        }
    }
}

async fn next(ws: &mut Client) -> Value {
    match next_or_why(ws, Duration::from_secs(20)).await {
        Ok(message) => message,
        Err(why) => panic!("a message within 20 s; instead: {why}"),
    }
}

/// Messages until one of `kind`; that one and those before it.
async fn until(ws: &mut Client, kind: &str) -> (Value, Vec<Value>) {
    let mut before = Vec::new();
    loop {
        let m = next(ws).await;
        if m["type"] == kind {
            return (m, before);
        }
        before.push(m);
    }
}

async fn close_code(ws: &mut Client, limit: Duration) -> u16 {
    loop {
        match tokio::time::timeout(limit, ws.next())
            .await
            .expect("a close in time")
        {
            Some(Ok(Message::Close(Some(f)))) => return u16::from(f.code),
            Some(Ok(Message::Close(None))) | None => return 1005,
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("the connection failed instead of closing: {e}"),
        }
    }
}

async fn signed_in(g: &Gantry, session: &str, token: &str) -> Client {
    let mut ws = connect(g, session).await;
    send(&mut ws, json!({"type": "authenticate", "token": token})).await;
    let m = next(&mut ws).await;
    assert_eq!(m["type"], "authenticated", "{m}");
    ws
}

/// A project of `token`'s user (its tasks run the stand-in agent) and a working session on it.
async fn project_and_session(g: &Gantry, token: &str) -> (String, String) {
    let project = board_project(g, token, "live").await;
    let session = work_session(g, token, &project, json!({})).await;
    (project, session["session_id"].as_str().unwrap().to_string())
}

fn users(setup: &Setup) {
    add_user(setup, "alice", "ada", false);
    add_user(setup, "bob", "bert", false);
}

#[tokio::test]
async fn a_client_follows_its_project_and_runs_a_task_and_another_tenant_sees_none_of_it() {
    let setup = board_setup();
    users(&setup);
    let g = serve(&setup);
    let ada = token(&g, "ada").await;
    let bert = token(&g, "bert").await;
    let (project, session) = project_and_session(&g, &ada).await;
    let (_, bobs_session) = project_and_session(&g, &bert).await;
    let (status, _, body) = call(
        &g,
        "POST",
        "/api/tasks/",
        Some(&ada),
        json!({"title": "steps to take", "project_id": project}),
        &[],
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let task = body["data"]["id"].as_str().unwrap().to_string();

    let mut bob = signed_in(&g, &bobs_session, &bert).await;
    send(
        &mut bob,
        json!({"type": "subscribe", "channel": "queue_status"}),
    )
    .await;
    assert_eq!(
        until(&mut bob, "subscribed").await.0["data"]["channel"],
        "queue_status"
    );
    // Another tenant's project is no project.
    send(
        &mut bob,
        json!({"type": "subscribe", "channel": "project_updates", "project_id": project}),
    )
    .await;
    let (refused, _) = until(&mut bob, "error").await;
    assert_eq!(refused["data"]["code"], "PROJECT_NOT_FOUND", "{refused}");

    let mut ws = signed_in(&g, &session, &ada).await;
    send(
        &mut ws,
        json!({"type": "ping", "timestamp": 1690725600000u64}),
    )
    .await;
    let pong = next(&mut ws).await;
    assert_eq!(pong, json!({"type": "pong", "timestamp": 1690725600000u64}));
    send(
        &mut ws,
        json!({"type": "subscribe", "channel": "project_updates", "project_id": project}),
    )
    .await;
    let (subscribed, _) = until(&mut ws, "subscribed").await;
    assert_eq!(subscribed["data"]["project_id"], project.as_str());
    send(
        &mut ws,
        json!({"type": "execute_task", "task_id": task, "priority": "high"}),
    )
    .await;
    let (done, updates) = until(&mut ws, "task_completed").await;
    assert_eq!(done["data"]["task_id"], task.as_str());
    assert_eq!(done["data"]["status"], "completed", "{done}");
    assert_eq!(done["data"]["exit_code"], 0, "{done}");
    assert!(
        done["data"]["duration"]
            .as_str()
            .unwrap()
            .starts_with("00:00:0"),
        "{done}"
    );
    let progress: Vec<u64> = updates
        .iter()
        .filter(|m| m["type"] == "task_update" && m["data"]["status"] == "running")
        .map(|m| m["data"]["progress_percentage"].as_u64().unwrap())
        .collect();
    assert!(
        progress.windows(2).all(|w| w[0] <= w[1]),
        "rising: {progress:?}"
    );
    let mut steps = progress.clone();
    steps.dedup();
    assert!(steps.len() >= 3, "{progress:?}");
    // Each event's message carries its id, rising without a gap for this connection's view.
    let ids: Vec<u64> = updates
        .iter()
        .chain([&done])
        .filter_map(|m| m["event_id"].as_u64())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    // A command run with stream_output: its lines come over the connection, then its end.
    let (status, _, body) = call(
        &g,
        "POST",
        "/api/commands/execute",
        Some(&ada),
        json!({"command": "echo one; echo two >&2; echo three", "project_id": project, "session_id": session, "stream_output": true}),
        &[],
    )
    .await;
    assert!(status == 202 || status == 201, "{status} {body}");
    let command = body["data"]["command_id"].as_str().unwrap().to_string();
    let (end, lines) = until(&mut ws, "command_completed").await;
    assert_eq!(end["data"]["command_id"], command.as_str());
    assert_eq!(end["data"]["exit_code"], 0, "{end}");
    let output: Vec<(String, String)> = lines
        .iter()
        .filter(|m| m["type"] == "command_output")
        .map(|m| {
            assert_eq!(m["data"]["command_id"], command.as_str());
            (
                m["data"]["stream"].as_str().unwrap().to_string(),
                m["data"]["content"]
                    .as_str()
                    .unwrap()
                    .trim_end()
                    .to_string(),
            )
        })
        .collect();
    let mut stdout: Vec<&str> = output
        .iter()
        .filter(|o| o.0 == "stdout")
        .map(|o| o.1.as_str())
        .collect();
    stdout.sort_unstable();
    assert_eq!(stdout, ["one", "three"], "{output:?}");
    assert!(
        output.contains(&("stderr".into(), "two".into())),
        "{output:?}"
    );

    // Bob heard his own queues' snapshots at most: nothing about Ada's task.
    while let Some(m) = next_within(&mut bob, Duration::from_millis(1500)).await {
        assert!(!m.to_string().contains(&task), "{m}");
        assert!(!m.to_string().contains(&project), "{m}");
        assert!(!m.to_string().contains(&command), "{m}");
    }

    // Coming back with the last event seen replays what followed it.
    let first = ids[0];
    drop(ws);
    let mut back = connect(&g, &session).await;
    send(
        &mut back,
        json!({"type": "authenticate", "token": ada, "resume_from": first}),
    )
    .await;
    let (auth, _) = until(&mut back, "authenticated").await;
    assert_eq!(auth["data"]["event_id"], first);
    send(
        &mut back,
        json!({"type": "subscribe", "channel": "task_updates", "task_id": task}),
    )
    .await;
    let (replayed, _) = until(&mut back, "task_completed").await;
    assert_eq!(replayed["event_id"], done["event_id"]);

    // Real figures of the node and the tenant's queues.
    send(
        &mut back,
        json!({"type": "get_metrics", "metrics": ["performance"]}),
    )
    .await;
    let (perf, _) = until(&mut back, "performance_data").await;
    let data = &perf["data"];
    assert!(
        data["cpu_usage"]
            .as_f64()
            .is_some_and(|c| (0.0..=100.0).contains(&c)),
        "{perf}"
    );
    assert!(
        data["memory_usage"]
            .as_f64()
            .is_some_and(|m| m > 0.0 && m <= 100.0),
        "{perf}"
    );
    assert!(data["active_connections"].as_u64().unwrap() >= 2, "{perf}");
    assert_eq!(data["tasks_per_minute"], 1.0, "{perf}");
    // The detailed health report counts the same connections.
    let (status, _, detailed) = call(
        &g,
        "GET",
        "/api/health/detailed",
        Some(&ada),
        Value::Null,
        &[],
    )
    .await;
    assert_eq!(status, 200, "{detailed}");
    let sockets = &detailed["data"]["checks"]["websocket"];
    assert_eq!(sockets["status"], "healthy", "{detailed}");
    assert!(
        sockets["active_connections"].as_u64().unwrap() >= 2,
        "{detailed}"
    );
    assert_eq!(
        data["queue_sizes"],
        json!({"high": 0, "normal": 0, "low": 0}),
        "{perf}"
    );
    // The session kept the task executed over the connection and the command run in it.
    let (status, _, body) = call(
        &g,
        "GET",
        &format!("/api/sessions/{session}/history"),
        Some(&ada),
        Value::Null,
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let kinds: Vec<&str> = body["data"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["type"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"task_executed"), "{body}");
    assert!(kinds.contains(&"command_run"), "{body}");
    // A command naming a session that is not the user's runs nothing.
    let (status, _, body) = call(
        &g,
        "POST",
        "/api/commands/execute",
        Some(&ada),
        json!({"command": "echo never", "project_id": project, "session_id": bobs_session}),
        &[],
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["details"]["field"], "session_id", "{body}");
}

#[tokio::test]
async fn connections_must_authenticate_in_time_and_never_in_the_url() {
    let setup = board_setup();
    users(&setup);
    let g = serve(&setup);
    let ada = token(&g, "ada").await;
    let (_, session) = project_and_session(&g, &ada).await;
    // A token in the URL is refused before anything opens.
    let err = tokio_tungstenite::connect_async(format!("ws://{}/ws/{session}?token={ada}", g.addr))
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(r) => assert_eq!(r.status(), 400),
        other => panic!("expected 400, got {other}"),
    }
    assert!(!g.stderr().contains(&ada));
    // Any other first message closes the connection with 4401.
    let mut ws = connect(&g, &session).await;
    send(&mut ws, json!({"type": "ping"})).await;
    let m = next(&mut ws).await;
    assert_eq!(m["data"]["code"], "AUTH_TOKEN_MISSING", "{m}");
    assert_eq!(close_code(&mut ws, Duration::from_secs(5)).await, 4401);
    // A bad token too.
    let mut ws = connect(&g, &session).await;
    send(&mut ws, json!({"type": "authenticate", "token": "a.b.c"})).await;
    assert_eq!(next(&mut ws).await["data"]["code"], "AUTH_TOKEN_INVALID");
    assert_eq!(close_code(&mut ws, Duration::from_secs(5)).await, 4401);
    // A session that is not the user's closes with 4404.
    let mut ws = connect(&g, "not-a-session").await;
    send(&mut ws, json!({"type": "authenticate", "token": ada})).await;
    assert_eq!(next(&mut ws).await["data"]["code"], "SESSION_NOT_FOUND");
    assert_eq!(close_code(&mut ws, Duration::from_secs(5)).await, 4404);
    // Saying nothing for the default 10 s does too.
    let mut ws = connect(&g, &session).await;
    let started = std::time::Instant::now();
    assert_eq!(close_code(&mut ws, Duration::from_secs(15)).await, 4401);
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_fifty_first_connection_of_a_user_is_closed() {
    let setup = board_setup();
    users(&setup);
    let g = serve(&setup);
    let ada = token(&g, "ada").await;
    let (_, session) = project_and_session(&g, &ada).await;
    let mut open = Vec::new();
    for _ in 0..50 {
        open.push(signed_in(&g, &session, &ada).await);
    }
    let mut extra = connect(&g, &session).await;
    send(&mut extra, json!({"type": "authenticate", "token": ada})).await;
    let m = next(&mut extra).await;
    assert_eq!(m["data"]["code"], "WEBSOCKET_CONNECTION_FAILED", "{m}");
    assert_eq!(m["data"]["limit"], 50, "{m}");
    assert_eq!(close_code(&mut extra, Duration::from_secs(5)).await, 1008);
    // The tenant's API key is another caller, with its own 50.
    let _key = signed_in(&g, &session, ALICE).await;
    // The fifty stay served.
    let last = open.last_mut().unwrap();
    send(last, json!({"type": "ping", "timestamp": 1})).await;
    assert_eq!(next(last).await["type"], "pong");
}

#[tokio::test]
async fn a_resume_from_events_no_longer_kept_is_told_and_the_connection_follows_from_now() {
    let setup = board_setup();
    users(&setup);
    let config = "[events]\nretention_secs = 1\n";
    let keys = format!("alice:{ALICE}");
    let g = setup.start_configured(config, &keys);
    let ada = token(&g, "ada").await;
    let (project, session) = project_and_session(&g, &ada).await;
    drop(g);
    // Past the retention; the sweep at start forgets what the first run published.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let g = setup.start_configured(config, &keys);
    let mut ws = connect(&g, &session).await;
    send(
        &mut ws,
        json!({"type": "authenticate", "token": ada, "resume_from": 0}),
    )
    .await;
    let (authenticated, _) = until(&mut ws, "authenticated").await;
    assert_eq!(authenticated["data"]["event_id"], 0, "{authenticated}");
    send(
        &mut ws,
        json!({"type": "subscribe", "channel": "project_updates", "project_id": project}),
    )
    .await;
    // Told, with where the kept events start; never a silent hole.
    let mut told = None;
    let mut subscribed = false;
    while told.is_none() || !subscribed {
        let m = next(&mut ws).await;
        match m["type"].as_str() {
            Some("error") => told = Some(m),
            Some("subscribed") => subscribed = true,
            _ => panic!("unexpected before the subscription: {m}"),
        }
    }
    let told = told.unwrap();
    assert_eq!(told["data"]["code"], "RESUME_GAP", "{told}");
    assert!(
        told["data"]["oldest_event_id"].as_u64().unwrap() > 1,
        "{told}"
    );
    // And it follows from now: a change to the project reaches it.
    let (status, _, body) = call(
        &g,
        "PUT",
        &format!("/api/projects/{project}"),
        Some(&ada),
        json!({"description": "after the gap"}),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (update, _) = until(&mut ws, "project_update").await;
    assert_eq!(update["data"]["project_id"], project.as_str(), "{update}");
}

#[tokio::test]
async fn an_expired_session_is_told_and_closed_with_4404() {
    let setup = board_setup();
    users(&setup);
    let g = setup.start_configured("[users]\nsession_ttl_secs = 1\n", &format!("alice:{ALICE}"));
    let ada = token(&g, "ada").await;
    let (_, session) = project_and_session(&g, &ada).await;
    // Past its expires_at.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut ws = connect(&g, &session).await;
    send(&mut ws, json!({"type": "authenticate", "token": ada})).await;
    let m = next(&mut ws).await;
    assert_eq!(m["data"]["code"], "SESSION_EXPIRED", "{m}");
    assert_eq!(m["data"]["session_id"], session.as_str(), "{m}");
    assert_eq!(close_code(&mut ws, Duration::from_secs(5)).await, 4404);
}

/// Two nodes on one PostgreSQL store (whatever store the suite runs on): a client on node B
/// follows a project whose task is executed through node A, and hears all of it.
#[tokio::test]
async fn a_client_on_one_node_hears_what_happens_through_another() {
    let mut setup = board_setup();
    if setup.store.is_none() {
        setup.store = Some(common::postgres::fresh_database());
    }
    users(&setup);
    let node = |id: &str| {
        let mut cmd = setup.command();
        cmd.env("GANTRY_NODE_ID", id)
            .env("GANTRY_API_KEYS", format!("alice:{ALICE}"));
        Gantry::spawn(cmd)
    };
    let a = node("node-a");
    let b = node("node-b");
    let ada = token(&a, "ada").await;
    let project = board_project(&a, &ada, "across").await;
    let session = work_session(&b, &ada, &project, json!({})).await;
    let session = session["session_id"].as_str().unwrap().to_string();
    let (status, _, body) = call(
        &a,
        "POST",
        "/api/tasks/",
        Some(&ada),
        json!({"title": "steps to take", "project_id": project}),
        &[],
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let task = body["data"]["id"].as_str().unwrap().to_string();

    let mut ws = signed_in(&b, &session, &ada).await;
    send(
        &mut ws,
        json!({"type": "subscribe", "channel": "project_updates", "project_id": project}),
    )
    .await;
    until(&mut ws, "subscribed").await;
    let (status, _, body) = call(
        &a,
        "POST",
        &format!("/api/tasks/{task}/execute"),
        Some(&ada),
        json!({}),
        &[],
    )
    .await;
    assert!((200..300).contains(&status), "{status} {body}");
    let (done, updates) = until(&mut ws, "task_completed").await;
    assert_eq!(done["data"]["task_id"], task.as_str());
    assert_eq!(done["data"]["status"], "completed", "{done}");
    let ids: Vec<u64> = updates
        .iter()
        .chain([&done])
        .filter_map(|m| m["event_id"].as_u64())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    // A command runs on the node that was asked, A: its lines reach the connection on B.
    let (status, _, body) = call(
        &a,
        "POST",
        "/api/commands/execute",
        Some(&ada),
        json!({"command": "echo one; echo two", "project_id": project, "session_id": session, "stream_output": true}),
        &[],
    )
    .await;
    assert!(status == 202 || status == 201, "{status} {body}");
    let command = body["data"]["command_id"].as_str().unwrap().to_string();
    let (end, lines) = until(&mut ws, "command_completed").await;
    assert_eq!(end["data"]["command_id"], command.as_str());
    let stdout: Vec<String> = lines
        .iter()
        .filter(|m| m["type"] == "command_output")
        .map(|m| {
            m["data"]["content"]
                .as_str()
                .unwrap()
                .trim_end()
                .to_string()
        })
        .collect();
    assert_eq!(stdout, ["one", "two"], "{lines:?}");
}
