//! The outbox end to end without the HTTP front: a real SQLite store, a feed of events in
//! memory, and a receiver on loopback that checks every signature.

use super::*;
use crate::store::{DeliveryStatus, Sqlite};
use crate::tenants::TenantId;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Events in memory, in the shape of the bus.
#[derive(Debug)]
struct Feed {
    events: Mutex<Vec<FeedEvent>>,
    published: tokio::sync::watch::Sender<i64>,
}

impl Feed {
    fn new() -> Arc<Feed> {
        Arc::new(Feed {
            events: Mutex::new(Vec::new()),
            published: tokio::sync::watch::channel(0).0,
        })
    }

    fn publish(&self, tenant: &str, kind: &'static str, at_ms: i64) -> i64 {
        let mut events = self.events.lock().unwrap();
        let id = events.len() as i64 + 1;
        events.push(FeedEvent {
            id,
            tenant: tenant.into(),
            kind,
            at_ms,
            data: serde_json::json!({ "task_id": format!("t{id}") }),
        });
        self.published.send_replace(id);
        id
    }
}

#[async_trait::async_trait]
impl EventFeed for Feed {
    async fn since(
        &self,
        after_id: i64,
        limit: usize,
    ) -> crate::store::StoreResult<Vec<FeedEvent>> {
        let events = self.events.lock().unwrap();
        Ok(events
            .iter()
            .filter(|e| e.id > after_id)
            .take(limit)
            .cloned()
            .collect())
    }

    fn watch(&self) -> tokio::sync::watch::Receiver<i64> {
        self.published.subscribe()
    }
}

fn principal(tenant: &str) -> Principal {
    Principal::service(&TenantId::new(tenant).unwrap())
}

fn config() -> WebhooksConfig {
    WebhooksConfig {
        timeout_ms: 2000,
        max_attempts: 3,
        backoff_base_ms: 10,
        backoff_cap_ms: 40,
        allowed_private_hosts: vec!["127.0.0.1".into()],
        ..WebhooksConfig::default()
    }
}

fn store(dir: &tempfile::TempDir) -> Arc<Sqlite> {
    Arc::new(Sqlite::open(&dir.path().join("gantry.db")).unwrap())
}

async fn hook(service: &Webhooks, tenant: &str, url: &str, events: &[&str]) -> Created {
    service
        .create(
            &principal(tenant),
            NewWebhook {
                url: url.into(),
                events: events.iter().map(|e| e.to_string()).collect(),
                secret: Some("a-secret-of-16-chars".into()),
                active: true,
            },
        )
        .await
        .unwrap()
}

/// What the receiver saw: (delivery id, event type, body), with a good signature each.
type Seen = Arc<Mutex<Vec<(String, String, Bytes)>>>;

/// A receiver on loopback that answers 500 to the first `failures` requests, then 200.
async fn receiver(secret: &'static str, failures: usize) -> (String, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let seen = seen2.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let header = |n: &str| {
                            req.headers()
                                .get(n)
                                .map(|v| v.to_str().unwrap().to_string())
                                .unwrap_or_default()
                        };
                        let (sig, id, kind) = (
                            header("x-signature-256"),
                            header("x-delivery-id"),
                            header("x-event-type"),
                        );
                        assert_eq!(header("content-type"), "application/json");
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        assert_eq!(sig, deliver::signature(secret, &body), "bad signature");
                        let n = {
                            let mut seen = seen.lock().unwrap();
                            seen.push((id, kind, body));
                            seen.len()
                        };
                        let status = if n <= failures { 500 } else { 200 };
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, seen)
}

/// Poll until `done` holds, for at most 10 s.
async fn until<F: AsyncFnMut() -> bool>(what: &str, mut done: F) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn events_become_deliveries_once_for_matching_webhooks_of_their_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let db = store(&dir);
    let service = Webhooks::new(db.clone(), &config());
    let feed = Feed::new();
    let wake = Notify::new();
    let a = hook(&service, "alice", "http://127.0.0.1:9/a", &["task.created"]).await;
    hook(&service, "bob", "http://127.0.0.1:9/b", &["task.created"]).await;
    let now = now_ms();
    feed.publish("alice", "task.created", now + 1);
    feed.publish("alice", "project.created", now + 2);
    feed.publish("carol", "task.created", now + 3);
    // Before the webhook existed: not for it.
    feed.publish("alice", "task.created", a.webhook.created_at - 1);
    assert_eq!(
        outbox::consume_once(feed.as_ref(), db.as_ref(), &wake)
            .await
            .unwrap(),
        4
    );
    assert_eq!(db.webhook_cursor().await.unwrap(), 4);
    // Nothing new: nothing doubled.
    assert_eq!(
        outbox::consume_once(feed.as_ref(), db.as_ref(), &wake)
            .await
            .unwrap(),
        0
    );
    let page = service
        .deliveries(&principal("alice"), &a.webhook.id, 0, 100)
        .await
        .unwrap();
    assert_eq!(page.total, 1);
    let d = &page.items[0];
    assert_eq!(
        (d.event.as_str(), d.status),
        ("task.created", DeliveryStatus::Pending)
    );
    let body: serde_json::Value = serde_json::from_slice(&d.body).unwrap();
    assert_eq!(body["event"], "task.created");
    assert_eq!(body["webhook_id"], a.webhook.id.as_str());
    assert_eq!(body["delivery_id"], d.id.as_str());
    assert_eq!(body["data"]["task_id"], "t1");
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));

    // Another tenant sees none of it.
    let other = service
        .deliveries(&principal("bob"), &a.webhook.id, 0, 10)
        .await;
    assert!(matches!(other, Err(WebhookError::NotFound)));
}

#[tokio::test]
async fn a_cursor_never_goes_back_and_a_refused_batch_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = store(&dir);
    let service = Webhooks::new(db.clone(), &config());
    let w = hook(&service, "alice", "http://127.0.0.1:9/a", &["task.created"]).await;
    let feed = Feed::new();
    feed.publish("alice", "task.created", now_ms() + 5);
    let events = feed.since(0, 10).await.unwrap();
    let stored = db.list_webhooks("alice").await.unwrap();
    let batch = outbox::deliveries_for(&events, &stored, now_ms());
    db.enqueue_deliveries(&batch, 7).await.unwrap();
    let again = outbox::deliveries_for(&events, &stored, now_ms());
    assert!(matches!(
        db.enqueue_deliveries(&again, 6).await,
        Err(crate::store::StoreError::Conflict(_))
    ));
    let page = service
        .deliveries(&principal("alice"), &w.webhook.id, 0, 10)
        .await
        .unwrap();
    assert_eq!(page.total, 1, "the refused batch left nothing");
    assert_eq!(db.webhook_cursor().await.unwrap(), 7);
}

#[tokio::test]
async fn failed_attempts_are_retried_with_the_same_id_and_bytes_until_a_2xx() {
    let dir = tempfile::tempdir().unwrap();
    let db = store(&dir);
    let service = Webhooks::new(db.clone(), &config());
    let (url, seen) = receiver("a-secret-of-16-chars", 2).await;
    let w = hook(&service, "alice", &url, &["task.created", "task.failed"]).await;
    let feed = Feed::new();
    service.start(config(), Some(feed.clone()));
    feed.publish("alice", "task.failed", now_ms() + 1);
    until("three attempts", async || seen.lock().unwrap().len() >= 3).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.0 == seen[0].0 && s.2 == seen[0].2));
    assert_eq!(seen[0].1, "task.failed");
    let who = principal("alice");
    until("the delivery recorded", async || {
        let page = service
            .deliveries(&who, &w.webhook.id, 0, 10)
            .await
            .unwrap();
        page.items[0].status == DeliveryStatus::Delivered
    })
    .await;
    let d = &service
        .deliveries(&who, &w.webhook.id, 0, 10)
        .await
        .unwrap()
        .items[0];
    assert_eq!(
        (d.id.as_str(), d.attempts, d.last_status),
        (seen[0].0.as_str(), 3, Some(200))
    );
    assert!(d.delivered_at.is_some() && d.next_attempt_at.is_none());
}

#[tokio::test]
async fn the_last_failed_attempt_marks_it_failed_and_redeliver_sends_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let db = store(&dir);
    let service = Webhooks::new(db.clone(), &config());
    // Fails three times (max_attempts), then would succeed.
    let (url, seen) = receiver("a-secret-of-16-chars", 3).await;
    let w = hook(&service, "alice", &url, &["project.created"]).await;
    let feed = Feed::new();
    service.start(config(), Some(feed.clone()));
    feed.publish("alice", "project.created", now_ms() + 1);
    let who = principal("alice");
    until("the delivery failed", async || {
        let page = service
            .deliveries(&who, &w.webhook.id, 0, 10)
            .await
            .unwrap();
        page.items
            .first()
            .is_some_and(|d| d.status == DeliveryStatus::Failed)
    })
    .await;
    let failed = service
        .deliveries(&who, &w.webhook.id, 0, 10)
        .await
        .unwrap()
        .items[0]
        .clone();
    assert_eq!((failed.attempts, failed.last_status), (3, Some(500)));
    assert_eq!(seen.lock().unwrap().len(), 3);

    // Another tenant cannot redeliver it; an unknown delivery is not found.
    assert!(matches!(
        service
            .redeliver(&principal("bob"), &w.webhook.id, &failed.id)
            .await,
        Err(WebhookError::NotFound)
    ));
    assert!(matches!(
        service.redeliver(&who, &w.webhook.id, "nope").await,
        Err(WebhookError::DeliveryNotFound)
    ));
    service
        .redeliver(&who, &w.webhook.id, &failed.id)
        .await
        .unwrap();
    until("the redelivery", async || {
        let page = service
            .deliveries(&who, &w.webhook.id, 0, 10)
            .await
            .unwrap();
        page.items[0].status == DeliveryStatus::Delivered
    })
    .await;
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 4);
    assert_eq!((&seen[3].0, &seen[3].2), (&seen[0].0, &seen[0].2));
}

#[tokio::test]
async fn one_tenants_backlog_does_not_fill_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let db = store(&dir);
    let service = Webhooks::new(db.clone(), &config());
    hook(&service, "alice", "http://127.0.0.1:9/a", &["task.created"]).await;
    hook(&service, "bob", "http://127.0.0.1:9/b", &["task.created"]).await;
    let feed = Feed::new();
    let at = now_ms() + 1;
    for _ in 0..50 {
        feed.publish("alice", "task.created", at);
    }
    feed.publish("bob", "task.created", at + 1);
    let wake = Notify::new();
    outbox::consume_once(feed.as_ref(), db.as_ref(), &wake)
        .await
        .unwrap();
    let due = db.due_deliveries(now_ms() + 10, 4, 8, &[]).await.unwrap();
    let tenants: Vec<&str> = due.iter().map(|d| d.tenant.as_str()).collect();
    assert_eq!(tenants.iter().filter(|t| **t == "alice").count(), 4);
    assert_eq!(tenants.iter().filter(|t| **t == "bob").count(), 1);
    // In-flight ones are left out.
    let busy: Vec<String> = due.iter().map(|d| d.id.clone()).collect();
    let more = db.due_deliveries(now_ms() + 10, 4, 8, &busy).await.unwrap();
    assert!(more.iter().all(|d| !busy.contains(&d.id)));
    assert_eq!(more.len(), 4);
}

#[tokio::test]
async fn bad_input_is_refused_with_the_field_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let db = store(&dir);
    let service = Webhooks::new(db.clone(), &config());
    let who = principal("alice");
    let new = |url: &str, events: &[&str], secret: Option<&str>| NewWebhook {
        url: url.into(),
        events: events.iter().map(|e| e.to_string()).collect(),
        secret: secret.map(str::to_string),
        active: true,
    };
    for (input, field) in [
        (new("http://10.0.0.1/", &["task.created"], None), "url"),
        (
            new("http://169.254.169.254/", &["task.created"], None),
            "url",
        ),
        (new("gopher://example.com/", &["task.created"], None), "url"),
        (
            new("http://127.0.0.1:9/", &["task.exploded"], None),
            "events",
        ),
        (new("http://127.0.0.1:9/", &[], None), "events"),
        (
            new("http://127.0.0.1:9/", &["task.created"], Some("short")),
            "secret",
        ),
    ] {
        match service.create(&who, input).await {
            Err(WebhookError::Invalid { field: f, .. }) => assert_eq!(f, field),
            Err(e) => panic!("{field}: {e}"),
            Ok(_) => panic!("{field}: accepted"),
        }
    }
    assert!(service.list(&who).await.unwrap().is_empty());

    // A reader may look, not change.
    let mut reader = principal("alice");
    reader.permissions = vec![Permission::Read];
    assert!(matches!(
        service
            .create(&reader, new("http://127.0.0.1:9/", &["task.created"], None))
            .await,
        Err(WebhookError::Forbidden(_))
    ));

    // A generated secret is returned once; a bad change leaves the webhook as it was.
    let made = service
        .create(
            &who,
            new(
                "http://127.0.0.1:9/x",
                &["task.created", "task.created"],
                None,
            ),
        )
        .await
        .unwrap();
    assert!(made.secret.starts_with("whsec_") && made.secret.len() == 6 + 64);
    assert_eq!(made.webhook.events, ["task.created"]);
    let bad = WebhookChange {
        url: Some("http://10.0.0.1/".into()),
        active: Some(false),
        ..WebhookChange::default()
    };
    assert!(service.update(&who, &made.webhook.id, bad).await.is_err());
    assert_eq!(
        service.get(&who, &made.webhook.id).await.unwrap(),
        made.webhook
    );
    let stored = db
        .get_webhook("alice", &made.webhook.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.secret, made.secret);
    assert!(
        !format!("{stored:?}").contains(&made.secret),
        "Debug shows no secret"
    );
}
