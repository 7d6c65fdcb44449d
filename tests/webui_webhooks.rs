//! Signed webhooks from outside: the real binary, a receiver on loopback (hyper) that checks
//! every signature over the raw body, events made through the REST API, and gantry killed
//! with -9 while deliveries are pending. Another tenant can neither see nor redeliver a
//! webhook, and bad input (a private or metadata URL, an unknown event, …) is a 422 that
//! stores nothing.

mod common;

use bytes::Bytes;
use common::webui::*;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha2::Sha256;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Small retry timings, and loopback allowed (only 127.0.0.1, nothing else private).
fn config(max_attempts: u32) -> String {
    format!(
        "[webhooks]\ntimeout_ms = 2000\nmax_attempts = {max_attempts}\nbackoff_base_ms = 50\n\
         backoff_cap_ms = 200\nallowed_private_hosts = [\"127.0.0.1\"]\n"
    )
}

fn keys() -> String {
    format!("alice:{ALICE}, bob:{BOB}")
}

const SECRET: &str = "receiver-secret-0123456789";

/// What the receiver got: delivery id, event type and raw body, each with a good signature.
#[derive(Clone, Debug)]
struct Got {
    id: String,
    event: String,
    body: Bytes,
}

/// A loopback receiver that answers 500 to the first `failures` requests and 200 after.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Got>>>,
    failures: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start(failures: usize) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/hooks/gantry?via=test",
            listener.local_addr().unwrap()
        );
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let failures = Arc::new(AtomicUsize::new(failures));
        let (got2, failures2) = (got.clone(), failures.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (got, failures) = (got2.clone(), failures2.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (got, failures) = (got.clone(), failures.clone());
                        async move {
                            Ok::<_, std::convert::Infallible>(receive(req, &got, &failures).await)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { url, got, failures }
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// Wait until it has received `n` requests (10 s at most).
    async fn until_got(&self, n: usize) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got = self.got();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "received {} of {n}: {got:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// What a receiver does: check the signature over the exact bytes, then answer.
async fn receive(
    req: hyper::Request<hyper::body::Incoming>,
    got: &Mutex<Vec<Got>>,
    failures: &AtomicUsize,
) -> hyper::Response<Full<Bytes>> {
    use hmac::Mac;
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (signature, id, event) = (
        header("x-signature-256"),
        header("x-delivery-id"),
        header("x-event-type"),
    );
    assert_eq!(req.method(), "POST");
    assert_eq!(req.uri().path(), "/hooks/gantry");
    assert_eq!(req.uri().query(), Some("via=test"));
    assert_eq!(header("content-type"), "application/json");
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(signature, expected, "a bad signature over {body:?}");
    got.lock().unwrap().push(Got { id, event, body });
    let fail = failures
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    hyper::Response::builder()
        .status(if fail { 500 } else { 200 })
        .body(Full::new(Bytes::new()))
        .unwrap()
}

async fn refused(
    g: &common::Gantry,
    method: &str,
    path: &str,
    key: &str,
    body: Value,
) -> (u16, Value) {
    let (status, _, answer) = call(g, method, path, Some(key), body, &[]).await;
    assert!(status >= 400, "{method} {path}: {status} {answer}");
    (status, answer)
}

/// A webhook of alice's to `url` for `events`.
async fn register(g: &common::Gantry, url: &str, events: &[&str]) -> Value {
    let body = json!({ "url": url, "events": events, "secret": SECRET });
    ok(g, "POST", "/api/webhooks", ALICE, body).await
}

/// Poll a webhook's deliveries until `done` holds (15 s at most).
async fn deliveries_until(g: &common::Gantry, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let page = ok(
            g,
            "GET",
            &format!("/api/webhooks/{id}/deliveries"),
            ALICE,
            Value::Null,
        )
        .await;
        if done(&page) {
            return page;
        }
        assert!(
            Instant::now() < deadline,
            "deliveries never got there: {page}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn webhooks_are_kept_per_tenant_and_bad_input_stores_nothing() {
    let setup = setup();
    let g = setup.start_configured(&config(3), &keys());

    // Private, metadata and otherwise unreachable URLs: 422 naming `url`, nothing stored.
    for url in [
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://[::1]:9/",
        "ftp://example.com/",
        "http://user:pw@127.0.0.1:9/",
        "not a url",
    ] {
        let body = json!({ "url": url, "events": ["task.created"] });
        let (status, answer) = refused(&g, "POST", "/api/webhooks", ALICE, body).await;
        assert_eq!(status, 422, "{url}: {answer}");
        assert_envelope(&answer, "VALIDATION_ERROR");
        assert_eq!(
            answer["error"]["details"]["field"], "url",
            "{url}: {answer}"
        );
    }
    let url = "http://127.0.0.1:9/hook";
    for (body, field) in [
        (json!({ "url": url, "events": ["task.exploded"] }), "events"),
        (json!({ "url": url, "events": [] }), "events"),
        (json!({ "url": url }), "events"),
        (json!({ "url": url, "events": "task.created" }), "events"),
        (json!({ "events": ["task.created"] }), "url"),
        (
            json!({ "url": url, "events": ["task.created"], "secret": "short" }),
            "secret",
        ),
        (
            json!({ "url": url, "events": ["task.created"], "active": "yes" }),
            "active",
        ),
        (
            json!({ "url": url, "events": ["task.created"], "colour": "red" }),
            "colour",
        ),
        (json!([1, 2]), "body"),
    ] {
        let (status, answer) = refused(&g, "POST", "/api/webhooks", ALICE, body.clone()).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(
            answer["error"]["details"]["field"], field,
            "{body}: {answer}"
        );
    }
    let list = ok(&g, "GET", "/api/webhooks", ALICE, Value::Null).await;
    assert_eq!(list["total"], 0, "{list}");

    // Created: the generated secret shown once, never again.
    let body = json!({ "url": url, "events": ["task.created", "project.created", "task.created"] });
    let made = ok(&g, "POST", "/api/webhooks", ALICE, body).await;
    let id = made["id"].as_str().unwrap().to_string();
    let secret = made["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_") && secret.len() > 40, "{made}");
    assert_eq!(made["events"], json!(["task.created", "project.created"]));
    assert_eq!(
        (made["active"].clone(), made["has_secret"].clone()),
        (json!(true), json!(true))
    );
    let path = format!("/api/webhooks/{id}");
    let got = ok(&g, "GET", &path, ALICE, Value::Null).await;
    assert!(got.get("secret").is_none(), "{got}");
    assert!(!got.to_string().contains(secret));
    let list = ok(&g, "GET", "/api/webhooks", ALICE, Value::Null).await;
    assert_eq!(list["items"][0]["id"], id.as_str());
    assert!(!list.to_string().contains(secret));

    // A bad change changes nothing; a good one changes what it names.
    let bad = json!({ "active": false, "url": "http://10.0.0.1/" });
    let (status, answer) = refused(&g, "PUT", &path, ALICE, bad).await;
    assert_eq!(
        (status, answer["error"]["details"]["field"].clone()),
        (422, json!("url"))
    );
    assert_eq!(ok(&g, "GET", &path, ALICE, Value::Null).await, got);
    let changed = ok(
        &g,
        "PUT",
        &path,
        ALICE,
        json!({ "active": false, "events": ["task.failed"] }),
    )
    .await;
    assert_eq!(
        (changed["active"].clone(), changed["events"].clone()),
        (json!(false), json!(["task.failed"]))
    );
    assert_eq!(changed["url"], got["url"]);

    // Bob sees none of it and can touch none of it: unknown ids, as if it were not there.
    let bob_list = ok(&g, "GET", "/api/webhooks", BOB, Value::Null).await;
    assert_eq!(bob_list["total"], 0);
    for (method, p, body) in [
        ("GET", path.clone(), Value::Null),
        ("PUT", path.clone(), json!({ "active": true })),
        ("DELETE", path.clone(), Value::Null),
        ("GET", format!("{path}/deliveries"), Value::Null),
        (
            "POST",
            format!("{path}/deliveries/x/redeliver"),
            Value::Null,
        ),
    ] {
        let (status, answer) = refused(&g, method, &p, BOB, body).await;
        assert_eq!(status, 404, "{method} {p}: {answer}");
        assert_envelope(&answer, "WEBHOOK_NOT_FOUND");
    }
    assert_eq!(
        ok(&g, "GET", &path, ALICE, Value::Null).await["active"],
        false
    );

    // Paging bounds, an unknown delivery, a wrong method.
    let (status, _) = refused(
        &g,
        "GET",
        &format!("{path}/deliveries?page_size=0"),
        ALICE,
        Value::Null,
    )
    .await;
    assert_eq!(status, 422);
    let (status, answer) = refused(
        &g,
        "POST",
        &format!("{path}/deliveries/nope/redeliver"),
        ALICE,
        Value::Null,
    )
    .await;
    assert_eq!(status, 404);
    assert_envelope(&answer, "DELIVERY_NOT_FOUND");
    let (status, _) = refused(&g, "PATCH", &path, ALICE, json!({})).await;
    assert_eq!(status, 405);

    ok(&g, "DELETE", &path, ALICE, Value::Null).await;
    let (status, _) = refused(&g, "GET", &path, ALICE, Value::Null).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_receiver_that_fails_twice_gets_the_same_delivery_a_third_time() {
    let receiver = Receiver::start(2).await;
    let setup = setup();
    let g = setup.start_configured(&config(5), &keys());
    let hook = register(&g, &receiver.url, &["project.created"]).await;
    let hook_id = hook["id"].as_str().unwrap();
    let project = ok(
        &g,
        "POST",
        "/api/projects",
        ALICE,
        json!({ "name": "hooked" }),
    )
    .await;
    // Bob's events are not alice's webhook's.
    ok(
        &g,
        "POST",
        "/api/projects",
        BOB,
        json!({ "name": "not hooked" }),
    )
    .await;

    let got = receiver.until_got(3).await;
    assert!(
        got.iter()
            .all(|g| g.id == got[0].id && g.body == got[0].body),
        "{got:?}"
    );
    assert_eq!(got[0].event, "project.created");
    let payload: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(payload["event"], "project.created");
    assert_eq!(payload["webhook_id"], hook_id);
    assert_eq!(payload["delivery_id"], got[0].id.as_str());
    assert!(
        payload["timestamp"].as_str().unwrap().ends_with('Z'),
        "{payload}"
    );
    assert_eq!(payload["data"]["project_id"], project["id"], "{payload}");

    let page = deliveries_until(&g, hook_id, |p| p["items"][0]["status"] == "delivered").await;
    assert_eq!(page["total"], 1, "{page}");
    let d = &page["items"][0];
    assert_eq!(
        (
            d["id"].as_str(),
            d["attempts"].as_u64(),
            d["last_status"].as_u64()
        ),
        (Some(got[0].id.as_str()), Some(3), Some(200))
    );
    assert_eq!(d["payload"], payload);

    // Redelivered on request: the same id and bytes once more.
    let path = format!("/api/webhooks/{hook_id}/deliveries/{}/redeliver", got[0].id);
    let (status, _, answer) = call(&g, "POST", &path, Some(ALICE), Value::Null, &[]).await;
    assert_eq!(status, 202, "{answer}");
    let again = receiver.until_got(4).await;
    assert_eq!((&again[3].id, &again[3].body), (&got[0].id, &got[0].body));
    assert_eq!(receiver.got().len(), 4, "bob's project made no delivery");
}

#[tokio::test]
async fn deliveries_pending_when_gantry_is_killed_are_sent_after_a_restart() {
    // Fails until told otherwise; many attempts so the delivery stays pending.
    let receiver = Receiver::start(usize::MAX).await;
    let setup = setup();
    let mut g = setup.start_configured(&config(1000), &keys());
    let hook = register(&g, &receiver.url, &["project.created"]).await;
    let hook_id = hook["id"].as_str().unwrap().to_string();
    ok(
        &g,
        "POST",
        "/api/projects",
        ALICE,
        json!({ "name": "before the crash" }),
    )
    .await;
    let first = receiver.until_got(1).await[0].clone();
    let page = deliveries_until(&g, &hook_id, |p| {
        p["items"][0]["attempts"].as_u64() >= Some(1)
    })
    .await;
    assert_eq!(page["items"][0]["status"], "pending", "{page}");

    g.signal("KILL");
    g.wait_exit(Duration::from_secs(10))
        .expect("gantry exits on SIGKILL");
    receiver.failures.store(0, Ordering::SeqCst);
    let seen = receiver.got().len();

    let g = setup.start_configured(&config(1000), &keys());
    let got = receiver.until_got(seen + 1).await;
    assert_eq!((&got[seen].id, &got[seen].body), (&first.id, &first.body));
    let page = deliveries_until(&g, &hook_id, |p| p["items"][0]["status"] == "delivered").await;
    assert_eq!(page["total"], 1, "no delivery was made twice: {page}");
}

/// Several nodes on one PostgreSQL store (whatever store the suite runs on): one of them sends
/// the webhooks. When it dies with a delivery pending, another takes the sending over once the
/// dead node's lease has run out, and the receiver gets the same delivery (id and bytes).
#[tokio::test]
async fn a_delivery_pending_on_a_dead_node_is_sent_by_another_node() {
    let receiver = Receiver::start(usize::MAX).await;
    let mut setup = setup();
    if setup.store.is_none() {
        setup.store = Some(common::postgres::fresh_database());
    }
    let file = setup.dir.path().join("nodes.toml");
    std::fs::write(
        &file,
        format!("{}\n[tasks]\nnode_lease_ms = 1500\n", config(1000)),
    )
    .unwrap();
    let node = |id: &str| {
        let mut cmd = setup.command();
        cmd.arg("--config")
            .arg(&file)
            .env("GANTRY_NODE_ID", id)
            .env("GANTRY_API_KEYS", keys());
        common::Gantry::spawn(cmd)
    };
    let mut a = node("node-a");
    assert!(
        a.wait_for_log("this node sends the webhooks", Duration::from_secs(10)),
        "{}",
        a.stderr()
    );
    let b = node("node-b");
    let hook = register(&b, &receiver.url, &["project.created"]).await;
    let hook_id = hook["id"].as_str().unwrap().to_string();
    // The event happens on B; A, the sender, turns it into a delivery and tries it.
    ok(
        &b,
        "POST",
        "/api/projects",
        ALICE,
        json!({ "name": "made on b" }),
    )
    .await;
    let first = receiver.until_got(1).await[0].clone();
    assert_eq!(first.event, "project.created");
    assert!(!b.stderr().contains("this node sends the webhooks"));

    a.signal("KILL");
    a.wait_exit(Duration::from_secs(10))
        .expect("gantry exits on SIGKILL");
    receiver.failures.store(0, Ordering::SeqCst);
    let seen = receiver.got().len();
    let got = receiver.until_got(seen + 1).await;
    assert_eq!((&got[seen].id, &got[seen].body), (&first.id, &first.body));
    assert!(b.stderr().contains("this node sends the webhooks"));
    let page = deliveries_until(&b, &hook_id, |p| p["items"][0]["status"] == "delivered").await;
    assert_eq!(page["total"], 1, "no delivery was made twice: {page}");
}
