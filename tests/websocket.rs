//! WebSocket connections served by a component, seen from outside: the real binary on
//! loopback, the purpose-built `test-socket` component, a real WebSocket client.

mod common;

use common::webui::{ALICE, BOB, add_user, call, token};
use common::{Gantry, Setup, test_component};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The test component at `/sock/...` (public for the upgrade: it authenticates in a message)
/// and, with a fresh instance for every call, at `/fresh/...`; the Web UI API for making
/// projects.
fn setup() -> Setup {
    Setup::new(&[
        (
            "test-socket",
            format!(
                "kind = \"handler\"\ncomponent = {:?}\nroutes = [{{ path = \"/sock/...\", public = true, websocket = true }}, {{ path = \"/fresh/...\", public = true, websocket = true, socket_instance = \"per-call\" }}]\nimports = [\"gantry:plugin/websocket\", \"gantry:plugin/identity\"]\n[limits]\ncpu_ms = 200\ntimeout_ms = 2000\n",
                test_component("test-socket").display().to_string()
            ),
        ),
        (
            "webui-api",
            include_str!("../plugins/webui-api.toml").to_string(),
        ),
    ])
}

fn serve(setup: &Setup) -> Gantry {
    setup.start_configured(
        "[websocket]\nauth_timeout_ms = 400\nmax_connections_per_user = 3\nmax_message_bytes = 4096\nsend_queue = 4\nslow_consumer_ms = 300\n",
        &format!("alice:{ALICE}, bob:{BOB}"),
    )
}

async fn connect(g: &Gantry, path: &str) -> Client {
    let (ws, response) = tokio_tungstenite::connect_async(format!("ws://{}{path}", g.addr))
        .await
        .expect("connecting");
    assert_eq!(response.status(), 101);
    ws
}

async fn say(ws: &mut Client, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
}

/// Say `text` and hear the answer.
async fn ask(ws: &mut Client, text: &str) -> String {
    say(ws, text).await;
    hear(ws).await
}

/// The next text message, within 10 s.
async fn hear(ws: &mut Client) -> String {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s");
        match next {
            Some(Ok(Message::Text(t))) => return t.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Read until the connection closes; its close code and reason.
async fn closed(ws: &mut Client) -> (u16, String) {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a close within 10 s");
        match next {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (u16::from(frame.code), frame.reason.to_string());
            }
            Some(Ok(Message::Close(None))) | None => return (1005, String::new()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("the connection failed instead of closing: {e}"),
        }
    }
}

async fn authed(g: &Gantry, key: &str) -> Client {
    authed_at(g, "/sock/a", key).await
}

async fn authed_at(g: &Gantry, path: &str, key: &str) -> Client {
    let mut ws = connect(g, path).await;
    say(&mut ws, &format!("auth {key}")).await;
    let user = hear(&mut ws).await;
    assert!(user.starts_with("user service:"), "{user}");
    ws
}

#[tokio::test]
async fn one_instance_serves_a_connection_for_its_life() {
    let setup = setup();
    let g = serve(&setup);
    let mut ws = authed(&g, ALICE).await;
    say(&mut ws, "echo hello").await;
    assert_eq!(hear(&mut ws).await, "hello");
    // The instance's memory is the connection's: auth, echo and this make three.
    say(&mut ws, "count").await;
    assert_eq!(hear(&mut ws).await, "3");
    say(&mut ws, "timer 20").await;
    assert_eq!(hear(&mut ws).await, "timer");
    // A WebSocket ping is answered by the host.
    ws.send(Message::Ping(b"p".to_vec().into())).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Pong(p))) => {
                assert_eq!(&p[..], b"p");
                break;
            }
            Some(Ok(_)) => continue,
            other => panic!("expected a pong, got {other:?}"),
        }
    }
    say(&mut ws, "close 4000").await;
    assert_eq!(closed(&mut ws).await.0, 4000);
}

/// Wait until the node's live component instances, from the Web UI API's detailed health
/// (itself one), are `n`: a call's instance ends a moment after the message it sent arrives.
async fn until_active_instances(g: &Gantry, n: u64) {
    let mut active = 0;
    for _ in 0..100 {
        let (status, _, body) = call(
            g,
            "GET",
            "/api/health/detailed",
            Some(ALICE),
            json!(null),
            &[],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        active = body["data"]["checks"]["component_instances"]["active"]
            .as_u64()
            .unwrap();
        if active == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{active} live instances, not {n}");
}

#[tokio::test]
async fn a_per_call_connection_keeps_its_state_with_the_host_and_no_instance_between_calls() {
    let setup = setup();
    let g = serve(&setup);
    let mut ws = authed_at(&g, "/fresh/a", ALICE).await;
    // Each message meets a fresh instance: its memory starts over.
    assert_eq!(ask(&mut ws, "count").await, "1");
    assert_eq!(ask(&mut ws, "count").await, "1");
    // What the component keeps with the host stays from call to call.
    assert_eq!(ask(&mut ws, "kept").await, "");
    assert_eq!(ask(&mut ws, "keep the state").await, "kept");
    assert_eq!(ask(&mut ws, "kept").await, "the state");
    // More than a connection may keep is refused, and the earlier state stays.
    assert_eq!(
        ask(&mut ws, "keep-bytes 16385").await,
        "error KeepError::TooLarge(16384)"
    );
    assert_eq!(ask(&mut ws, "kept").await, "the state");
    assert_eq!(ask(&mut ws, "keep-bytes 16384").await, "kept");
    assert_eq!(ask(&mut ws, "keep the state again").await, "kept");
    // The host's part stays too: who authenticated, what is followed, the timer.
    assert_eq!(ask(&mut ws, "follow").await, "following 0");
    assert_eq!(ask(&mut ws, "sub kind project.created").await, "subscribed");
    assert_eq!(ask(&mut ws, "timer 20").await, "timer");
    // An idle connection holds no instance: only the health call itself is live.
    until_active_instances(&g, 1).await;
    let (status, _, body) = call(
        &g,
        "POST",
        "/api/projects/",
        Some(ALICE),
        json!({"name": "p1"}),
        &[],
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(hear(&mut ws).await, "event 1 project.created");
    assert_eq!(ask(&mut ws, "kept").await, "the state again");
    // A connection to the per-connection route holds its instance while idle.
    let mut resident = authed(&g, ALICE).await;
    assert_eq!(ask(&mut resident, "count").await, "2");
    until_active_instances(&g, 2).await;
    // A trap in a fresh instance ends that connection, as it would a resident one.
    say(&mut ws, "trap").await;
    assert_eq!(closed(&mut ws).await.0, 1011);
    assert_eq!(ask(&mut resident, "echo still here").await, "still here");
}

#[tokio::test]
async fn per_call_connections_share_few_instances_and_wait_for_one() {
    let setup = setup();
    let g = setup.start_configured(
        "[websocket]\nmax_instances = 1\nmax_connections = 8\n",
        &format!("alice:{ALICE}, bob:{BOB}"),
    );
    // Three connections served per call, one instance slot: each call takes it in turn.
    let mut fresh = Vec::new();
    for _ in 0..3 {
        fresh.push(authed_at(&g, "/fresh/a", ALICE).await);
    }
    for ws in &mut fresh {
        say(ws, "echo served").await;
        assert_eq!(hear(ws).await, "served");
    }
    // The last answer went out while its call still held the slot: wait for the call's end
    // (the one instance left is the health call's own).
    until_active_instances(&g, 1).await;
    // A connection served per connection holds the slot for its life; a second cannot open.
    let mut resident = authed(&g, ALICE).await;
    let (status, body) = upgrade_refused(&g, "/sock/b").await;
    assert_eq!(status, 503, "{body}");
    // A per-call connection's message waits for the slot, and is served once it is free.
    say(&mut fresh[0], "echo waited").await;
    let early = tokio::time::timeout(Duration::from_millis(300), fresh[0].next()).await;
    assert!(early.is_err(), "answered without a slot: {early:?}");
    resident.close(None).await.unwrap();
    let _ = closed(&mut resident).await;
    assert_eq!(hear(&mut fresh[0]).await, "waited");
    // As above: the slot is free once the call's instance is gone.
    until_active_instances(&g, 1).await;
    // One that finds no slot within the route's limit (2 s here) is closed as the node being
    // busy (1013, try again later), not as the component failing.
    let _resident = authed(&g, ALICE).await;
    say(&mut fresh[1], "echo never").await;
    let (code, reason) = closed(&mut fresh[1]).await;
    assert_eq!(code, 1013, "{reason}");
    assert!(reason.contains("busy"), "{reason}");
}

/// A plugin built against `gantry:plugin@0.3.0`, before `keep` was added in 0.3.1, still
/// loads and serves: an additive change keeps earlier plugins working.
#[tokio::test]
async fn a_socket_plugin_built_for_the_contracts_previous_patch_still_serves() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/plugin-0.3.0/test_socket.wasm");
    let setup = Setup::new(&[(
        "old-socket",
        format!(
            "kind = \"handler\"\ncomponent = {:?}\nroutes = [{{ path = \"/old/...\", public = true, websocket = true }}]\nimports = [\"gantry:plugin/websocket\", \"gantry:plugin/identity\"]\n",
            fixture.display().to_string()
        ),
    )]);
    let g = setup.start_configured("", &format!("alice:{ALICE}"));
    let mut ws = authed_at(&g, "/old/a", ALICE).await;
    say(&mut ws, "echo from 0.3.0").await;
    assert_eq!(hear(&mut ws).await, "from 0.3.0");
    say(&mut ws, "count").await;
    assert_eq!(hear(&mut ws).await, "3");
}

#[tokio::test]
async fn upgrades_are_refused_with_a_reason_before_anything_opens() {
    let setup = setup();
    let g = serve(&setup);
    // A token in the URL ends up in logs: refused before the upgrade.
    let err = tokio_tungstenite::connect_async(format!("ws://{}/sock/a?token={ALICE}", g.addr))
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(response) => {
            assert_eq!(response.status(), 400);
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                .into_owned();
            assert!(body.contains("token_in_url"), "{body}");
        }
        other => panic!("expected an HTTP refusal, got {other}"),
    }
    // A plain request on a WebSocket route is told to upgrade.
    let (status, body) = g.call("GET", "/sock/a", &[], "").await;
    assert_eq!(status, 426, "{body:?}");
    // The component may refuse in on-open, with its own code.
    let mut ws = connect(&g, "/sock/refuse").await;
    assert_eq!(closed(&mut ws).await.0, 4403);
    // A key is never written to the log.
    assert!(!g.stderr().contains(ALICE));
}

#[tokio::test]
async fn unauthenticated_connections_close_with_4401_and_bad_tokens_are_told() {
    let setup = setup();
    let g = serve(&setup);
    let mut ws = connect(&g, "/sock/a").await;
    say(&mut ws, "auth not-a-key").await;
    let refused = hear(&mut ws).await;
    assert!(refused.contains("BadToken"), "{refused}");
    // Nothing else is allowed before authenticating.
    say(&mut ws, "follow").await;
    assert!(hear(&mut ws).await.contains("NotAuthenticated"));
    let (code, reason) = closed(&mut ws).await;
    assert_eq!(code, 4401, "{reason}");
    assert!(reason.contains("authenticate"), "{reason}");
}

#[tokio::test]
async fn each_user_has_a_cap_and_the_next_is_closed_with_a_policy_code() {
    let setup = setup();
    let g = serve(&setup);
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(authed(&g, ALICE).await);
    }
    let mut fourth = connect(&g, "/sock/a").await;
    say(&mut fourth, &format!("auth {ALICE}")).await;
    assert!(hear(&mut fourth).await.contains("TooManyConnections(3)"));
    let (code, reason) = closed(&mut fourth).await;
    assert_eq!(code, 1008, "{reason}");
    // Another tenant's users have their own.
    let _bob = authed(&g, BOB).await;
    // Closing one makes room.
    let mut first = open.remove(0);
    first.close(None).await.unwrap();
    let _ = closed(&mut first).await;
    authenticates_again(&g, ALICE).await;
}

/// Once a connection closed, its place comes back (the host counts the close when its task
/// ends, just after the close frame): a connection authenticating with `token` is admitted
/// within 50 tries, 20 ms apart.
async fn authenticates_again(g: &Gantry, token: &str) -> Client {
    for _ in 0..50 {
        let mut ws = connect(g, "/sock/a").await;
        if ask(&mut ws, &format!("auth {token}"))
            .await
            .starts_with("user ")
        {
            return ws;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("a closed connection's place did not come back");
}

#[tokio::test]
async fn a_tenants_users_share_a_cap_so_no_tenant_holds_the_nodes_connections() {
    let setup = setup();
    add_user(&setup, "alice", "carol", false);
    let g = setup.start_configured(
        "[websocket]\nmax_connections_per_user = 3\nmax_connections_per_tenant = 4\n",
        &format!("alice:{ALICE}, bob:{BOB}"),
    );
    let carol = token(&g, "carol").await;
    let mut keys = Vec::new();
    for _ in 0..3 {
        keys.push(authed(&g, ALICE).await);
    }
    // carol is under her own cap of 3; her tenant reaches its 4 with her first.
    let mut first = connect(&g, "/sock/a").await;
    assert!(
        ask(&mut first, &format!("auth {carol}"))
            .await
            .starts_with("user ")
    );
    let mut second = connect(&g, "/sock/a").await;
    let refused = ask(&mut second, &format!("auth {carol}")).await;
    assert!(refused.contains("TooManyConnections(4)"), "{refused}");
    let (code, reason) = closed(&mut second).await;
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("4 open connections per tenant"), "{reason}");
    // Another tenant is not held back by it.
    let _bob = authed(&g, BOB).await;
    // The tenant's connections still work, and a closed one makes room for carol.
    assert_eq!(ask(&mut first, "echo still").await, "still");
    let mut key = keys.remove(0);
    key.close(None).await.unwrap();
    let _ = closed(&mut key).await;
    authenticates_again(&g, &carol).await;
}

/// An upgrade's HTTP refusal: status and body.
async fn upgrade_refused(g: &Gantry, path: &str) -> (u16, String) {
    match tokio_tungstenite::connect_async(format!("ws://{}{path}", g.addr)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => (
            response.status().as_u16(),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected an HTTP refusal, got a connection"),
    }
}

/// Connect, retrying for a moment while a connection just refused is still counted.
async fn connect_when_counted_out(g: &Gantry, path: &str) -> Client {
    for _ in 0..100 {
        match tokio_tungstenite::connect_async(format!("ws://{}{path}", g.addr)).await {
            Ok((ws, _)) => return ws,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    panic!("the connection was never admitted")
}

#[tokio::test]
async fn connections_not_yet_authenticated_are_capped_per_address_and_sockets_count_as_connections()
{
    let setup = setup();
    let g = setup.start_configured(
        "[http]\nmax_connections_per_address = 4\n[websocket]\nmax_unauthenticated_per_address = 2\nmax_connections_per_user = 10\n",
        &format!("alice:{ALICE}"),
    );
    // Two that never authenticate hold their address's share; the third is refused before an
    // instance is taken for it.
    let mut first = connect(&g, "/sock/a").await;
    let mut second = connect(&g, "/sock/a").await;
    let (status, body) = upgrade_refused(&g, "/sock/a").await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("too_many_unauthenticated"), "{body}");
    // Authenticating gives the place back.
    say(&mut first, &format!("auth {ALICE}")).await;
    assert!(hear(&mut first).await.starts_with("user "));
    say(&mut second, &format!("auth {ALICE}")).await;
    assert!(hear(&mut second).await.starts_with("user "));
    let mut third = connect_when_counted_out(&g, "/sock/a").await;
    say(&mut third, &format!("auth {ALICE}")).await;
    assert!(hear(&mut third).await.starts_with("user "));
    let mut fourth = connect_when_counted_out(&g, "/sock/a").await;
    say(&mut fourth, &format!("auth {ALICE}")).await;
    assert!(hear(&mut fourth).await.starts_with("user "));
    // Four open sockets are the address's four connections: a fifth is refused, although
    // none of the four has an HTTP exchange in flight.
    let (status, body) = g.call("GET", "/health", &[], "").await;
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("too_many_connections"));
    // Closing one makes room.
    fourth.close(None).await.unwrap();
    let _ = closed(&mut fourth).await;
    drop(fourth);
    let mut served = false;
    for _ in 0..100 {
        // Served (this setup answers 401 without a key), not refused with 503.
        if g.call("GET", "/health", &[], "").await.0 != 503 {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "a closed socket's connection slot came back");
    // The others were never disturbed.
    say(&mut first, "echo still here").await;
    assert_eq!(hear(&mut first).await, "still here");
}

#[tokio::test]
async fn a_failing_component_ends_its_connection_only() {
    let setup = setup();
    let g = serve(&setup);
    let mut other = authed(&g, BOB).await;
    for (command, what) in [("trap", "plugin_trap"), ("spin", "plugin_deadline")] {
        let mut ws = authed(&g, ALICE).await;
        say(&mut ws, command).await;
        let (code, reason) = closed(&mut ws).await;
        assert_eq!(code, 1011, "{reason}");
        assert!(reason.contains(what), "{reason}");
    }
    // Too big a message closes with 1009.
    let mut ws = authed(&g, ALICE).await;
    say(&mut ws, &format!("echo {}", "x".repeat(5000))).await;
    assert_eq!(closed(&mut ws).await.0, 1009);
    // The node and the other connection serve on.
    say(&mut other, "echo still here").await;
    assert_eq!(hear(&mut other).await, "still here");
    let fresh = authed(&g, ALICE).await;
    drop(fresh);
}

#[tokio::test]
async fn a_consumer_too_slow_is_closed_with_a_reason_not_handed_a_gap() {
    let setup = setup();
    let g = serve(&setup);
    let mut ws = authed(&g, ALICE).await;
    // Far more than the socket buffers and the queue of 4 hold, while the client reads
    // nothing for longer than slow_consumer_ms.
    say(&mut ws, "burst 20000").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut received = 0u32;
    let (code, reason) = loop {
        match tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Text(t))) => {
                // What arrives arrives in order, without a hole.
                assert!(t.starts_with(&format!("burst {received} ")), "{received}");
                received += 1;
            }
            Some(Ok(Message::Close(Some(f)))) => break (u16::from(f.code), f.reason.to_string()),
            Some(Ok(_)) => continue,
            other => panic!("expected messages then a close: {other:?}"),
        }
    };
    assert_eq!(code, 4408, "{reason}");
    assert!(reason.contains("resume"), "{reason}");
    assert!(received < 20000);
}

#[tokio::test]
async fn events_reach_the_tenants_followers_only_and_resume_from_where_they_were() {
    let setup = setup();
    let g = serve(&setup);
    let mut alice = authed(&g, ALICE).await;
    say(&mut alice, "follow").await;
    assert_eq!(hear(&mut alice).await, "following 0");
    say(&mut alice, "sub kind project.created").await;
    assert_eq!(hear(&mut alice).await, "subscribed");
    let mut bob = authed(&g, BOB).await;
    say(&mut bob, "follow").await;
    assert_eq!(hear(&mut bob).await, "following 0");
    say(&mut bob, "sub kind project.created").await;
    assert_eq!(hear(&mut bob).await, "subscribed");
    // Alice's project is her event.
    let (status, _, body) = call(
        &g,
        "POST",
        "/api/projects/",
        Some(ALICE),
        json!({"name": "p1"}),
        &[],
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let project = body["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(hear(&mut alice).await, "event 1 project.created");
    // Bob's project reaches Bob alone; Alice's next message is her own echo.
    call(
        &g,
        "POST",
        "/api/projects/",
        Some(BOB),
        json!({"name": "b1"}),
        &[],
    )
    .await;
    assert_eq!(hear(&mut bob).await, "event 1 project.created");
    say(&mut alice, "echo nothing of bob's").await;
    assert_eq!(hear(&mut alice).await, "nothing of bob's");
    // Subscribing to another tenant's project is as to no project.
    say(&mut bob, &format!("sub project {project}")).await;
    assert!(hear(&mut bob).await.contains("NotFound"));
    // A task in Alice's project: its events follow the project's topic.
    say(&mut alice, &format!("sub project {project}")).await;
    assert_eq!(hear(&mut alice).await, "subscribed");
    let (status, _, body) = call(
        &g,
        "POST",
        "/api/tasks/",
        Some(ALICE),
        json!({"title": "t1", "project_id": project}),
        &[],
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(hear(&mut alice).await, "event 2 task.created");
    // A client that comes back with the last event it saw gets what it missed, in order.
    drop(alice);
    call(
        &g,
        "POST",
        "/api/projects/",
        Some(ALICE),
        json!({"name": "p2"}),
        &[],
    )
    .await;
    let mut back = authed(&g, ALICE).await;
    say(&mut back, "sub kind project.created").await;
    assert_eq!(hear(&mut back).await, "subscribed");
    say(&mut back, "follow 0").await;
    assert_eq!(hear(&mut back).await, "following 0");
    assert_eq!(hear(&mut back).await, "event 1 project.created");
    assert_eq!(hear(&mut back).await, "event 3 project.created");
    // Following from beyond the newest is following from the newest.
    say(&mut back, "follow 99").await;
    assert_eq!(hear(&mut back).await, "following 3");
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_closed_with_1001() {
    use tokio::io::AsyncReadExt;
    let setup = setup();
    let g = setup.start_configured(
        "[websocket]\nping_interval_ms = 150\n",
        &format!("alice:{ALICE}"),
    );
    let ws = authed(&g, ALICE).await;
    // From here the client reads nothing and answers no ping: the raw socket, read only after
    // the server has given up on it.
    let mut tcp = match ws.into_inner() {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => tcp,
        _ => unreachable!("a plain connection"),
    };
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut bytes))
        .await
        .expect("the server closes the connection within 10 s")
        .unwrap();
    // Unmasked server frames: pings (0x89), then a close (0x88) with code 1001 (0x03E9).
    assert!(bytes.windows(2).any(|w| w == [0x89, 0x00]), "{bytes:?}");
    let close = bytes
        .windows(4)
        .position(|w| w[0] == 0x88 && w[2] == 0x03 && w[3] == 0xE9);
    assert!(close.is_some(), "a close with 1001 in {bytes:?}");
}
