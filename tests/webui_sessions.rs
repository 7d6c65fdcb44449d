//! The Web UI API's working sessions from outside (`/api/sessions`), through the real binary:
//! made, listed with filters, changed, deleted, their history of settings changes and task
//! executions, restores to an earlier point (settings, and tasks' statuses), kept across a
//! restart, expired, invisible to other users and tenants, with bad input refused in the
//! document's envelope and nothing changed.

mod common;

use common::webui::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// A successful `GET`'s `data`.
async fn get(g: &common::Gantry, bearer: &str, path: &str) -> Value {
    ok(g, "GET", path, bearer, Value::Null).await
}

/// A session's history.
async fn history_of(g: &common::Gantry, bearer: &str, sid: &str) -> Value {
    get(g, bearer, &format!("/api/sessions/{sid}/history")).await
}

/// A gantry whose board tasks run the stand-in agent `tests/fixtures/board/board-agent`
/// (backend `board`), with `config` added to its config file.
fn start(setup: &common::Setup, config: &str) -> common::Gantry {
    setup.start_configured(
        &format!("[http]\nuser_rate_limit_per_minute = 6000\n{config}"),
        &format!("alice:{ALICE}, bob:{BOB}"),
    )
}

async fn task(g: &common::Gantry, bearer: &str, project: &str, title: &str) -> String {
    let t = ok(
        g,
        "POST",
        "/api/tasks/",
        bearer,
        json!({ "title": title, "project_id": project }),
    )
    .await;
    t["id"].as_str().unwrap().to_string()
}

/// `GET path` once `done` says so, polling with a deadline.
async fn until(
    g: &common::Gantry,
    bearer: &str,
    path: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = get(g, bearer, path).await;
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{path} never got there: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn history_types(h: &Value) -> Vec<String> {
    h["history"]
        .as_array()
        .unwrap_or_else(|| panic!("{h}"))
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

/// An answer's ISO 8601 timestamp (`2025-07-30T14:00:00.123000Z`) as ms since the epoch.
fn ms(timestamp: &Value) -> i64 {
    let text = timestamp.as_str().unwrap_or_else(|| panic!("{timestamp}"));
    let (date, time) = text.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|p| p.parse().unwrap()).collect();
    let (hms, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(|p| p.parse().unwrap()).collect();
    let millis: i64 = format!("{:0<3}", &fraction[..fraction.len().min(3)])
        .parse()
        .unwrap();
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1])
    } else {
        (d[0], d[1])
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d[2] - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    ((days * 24 + t[0]) * 60 + t[1]) * 60_000 + t[2] * 1000 + millis
}

#[tokio::test]
async fn a_session_keeps_its_history_restores_and_survives_a_restart() {
    let setup = board_setup();
    add_user(&setup, "alice", "ann", true);
    let mut g = start(&setup, "");
    let ann = token(&g, "ann").await;
    let shop = board_project(&g, &ann, "E-commerce Platform").await;
    let docs = board_project(&g, &ann, "Docs").await;
    // Made before the session: pending at its start.
    let quick = task(&g, &ann, &shop, "quick build").await;

    let s = work_session(
        &g,
        &ann,
        &shop,
        json!({ "theme": "dark", "auto_save": true, "notifications": true }),
    )
    .await;
    let sid = s["session_id"].as_str().unwrap().to_string();
    assert_eq!(s["project_id"], shop.as_str());
    assert_eq!(s["project_name"], "E-commerce Platform");
    assert_eq!(s["status"], "active");
    assert!(s["user_id"].is_string());
    assert_eq!(s["created_at"], s["last_accessed"]);
    // The default TTL: two hours.
    assert_eq!(ms(&s["expires_at"]) - ms(&s["created_at"]), 2 * 3600 * 1000);
    assert_eq!(s["settings"]["theme"], "dark");
    let other = work_session(&g, &ann, &docs, json!({})).await;
    let other_id = other["session_id"].as_str().unwrap().to_string();

    // Lists, with the filters.
    let all = get(&g, &ann, "/api/sessions/").await;
    assert_eq!(all["total"], 2, "{all}");
    assert_eq!(
        all["sessions"][0]["session_id"],
        other_id.as_str(),
        "newest first"
    );
    assert!(all["sessions"][0].get("settings").is_none());
    let on_shop = get(&g, &ann, &format!("/api/sessions/?project_id={shop}")).await;
    assert_eq!(on_shop["total"], 1);
    assert_eq!(on_shop["sessions"][0]["session_id"], sid.as_str());
    assert_eq!(
        on_shop["sessions"][0]["project_name"],
        "E-commerce Platform"
    );
    let active = get(&g, &ann, "/api/sessions/?status=active").await;
    assert_eq!(active["total"], 2);
    let expired = get(&g, &ann, "/api/sessions/?status=expired").await;
    assert_eq!(expired["total"], 0);
    let paged = get(&g, &ann, "/api/sessions/?page=2&page_size=1").await;
    assert_eq!(paged["total"], 2);
    assert_eq!(paged["sessions"][0]["session_id"], sid.as_str());

    let history = history_of(&g, &ann, &sid).await;
    assert_eq!(history_types(&history), ["created"]);
    let start_point = history["history"][0]["timestamp"].clone();
    assert_eq!(ms(&start_point), ms(&s["created_at"]));

    // Update merges: the settings not named stay.
    let changed = ok(
        &g,
        "PUT",
        &format!("/api/sessions/{sid}"),
        &ann,
        json!({ "settings": { "theme": "light", "auto_save": false } }),
    )
    .await;
    assert_eq!(
        changed["settings"],
        json!({ "theme": "light", "auto_save": false, "notifications": true })
    );
    // A task executed in the session, run to its end.
    let queued = ok(
        &g,
        "POST",
        &format!("/api/tasks/{quick}/execute"),
        &ann,
        json!({ "session_id": sid }),
    )
    .await;
    assert_eq!(queued["session_id"], sid.as_str(), "{queued}");
    until(&g, &ann, &format!("/api/tasks/{quick}"), |t| {
        t["status"] == "completed"
    })
    .await;

    let history = history_of(&g, &ann, &sid).await;
    assert_eq!(
        history_types(&history),
        ["created", "settings_changed", "task_executed"]
    );
    assert_eq!(history["total"], 3);
    let entries = history["history"].as_array().unwrap();
    assert_eq!(
        entries[1]["details"]["settings"],
        json!({ "theme": "light", "auto_save": false, "notifications": true })
    );
    assert_eq!(entries[2]["details"]["task_id"], quick.as_str());
    assert_eq!(entries[2]["details"]["title"], "quick build");
    assert_eq!(entries[2]["details"]["status"], "queued");
    let times: Vec<i64> = entries.iter().map(|e| ms(&e["timestamp"])).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    // Back to the session's start: its first settings, and the task pending again.
    let restored = ok(
        &g,
        "POST",
        &format!("/api/sessions/{sid}/restore"),
        &ann,
        json!({ "restore_point": start_point, "include_tasks": true, "include_settings": true }),
    )
    .await;
    assert_eq!(
        restored["settings"],
        json!({ "theme": "dark", "auto_save": true, "notifications": true }),
        "{restored}"
    );
    assert_eq!(restored["restored"]["restore_point"], start_point);
    let outcome = &restored["restored"]["tasks"][0];
    assert_eq!(outcome["task_id"], quick.as_str(), "{restored}");
    assert_eq!(outcome["outcome"], "restored");
    assert_eq!(outcome["from_status"], "completed");
    assert_eq!(outcome["status"], "pending");
    let t = get(&g, &ann, &format!("/api/tasks/{quick}")).await;
    assert_eq!(t["status"], "pending");
    // The task's own history says so.
    let th = get(&g, &ann, &format!("/api/tasks/{quick}/history")).await;
    assert!(
        th.to_string()
            .contains(&format!("restored by session {sid}")),
        "{th}"
    );
    let history = history_of(&g, &ann, &sid).await;
    assert_eq!(
        history_types(&history),
        ["created", "settings_changed", "task_executed", "restored"]
    );

    // Settings only, to the point after the change: the task stays as it is.
    let after_change = history["history"][1]["timestamp"].clone();
    let restored = ok(
        &g,
        "POST",
        &format!("/api/sessions/{sid}/restore"),
        &ann,
        json!({ "restore_point": after_change }),
    )
    .await;
    assert_eq!(restored["settings"]["theme"], "light");
    assert_eq!(restored["restored"]["tasks"], json!([]));

    // Deleted: gone from every read.
    ok(
        &g,
        "DELETE",
        &format!("/api/sessions/{other_id}"),
        &ann,
        Value::Null,
    )
    .await;
    let (status, e) = refused(
        &g,
        "GET",
        &format!("/api/sessions/{other_id}"),
        Some(&ann),
        Value::Null,
    )
    .await;
    assert_eq!(
        (status, e["code"].as_str()),
        (404, Some("RESOURCE_NOT_FOUND"))
    );
    let (status, _) = refused(
        &g,
        "DELETE",
        &format!("/api/sessions/{other_id}"),
        Some(&ann),
        Value::Null,
    )
    .await;
    assert_eq!(status, 404);

    // A restart keeps them.
    g.terminate();
    assert!(g.wait_exit(Duration::from_secs(30)).is_some());
    let g = start(&setup, "");
    let ann = token(&g, "ann").await;
    let again = get(&g, &ann, &format!("/api/sessions/{sid}")).await;
    assert_eq!(again["settings"]["theme"], "light");
    assert_eq!(again["status"], "active");
    assert_eq!(again["created_at"], s["created_at"]);
    let history = history_of(&g, &ann, &sid).await;
    assert_eq!(history["total"], 5);
    let all = get(&g, &ann, "/api/sessions/").await;
    assert_eq!(all["total"], 1);
    let (status, _) = refused(
        &g,
        "GET",
        &format!("/api/sessions/{other_id}"),
        Some(&ann),
        Value::Null,
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn another_users_or_tenants_session_is_not_found() {
    let setup = board_setup();
    add_user(&setup, "alice", "ann", false);
    add_user(&setup, "alice", "bea", false);
    add_user(&setup, "alice", "ada", true);
    add_user(&setup, "bob", "boris", true);
    let g = start(&setup, "");
    let ann = token(&g, "ann").await;
    let bea = token(&g, "bea").await;
    let ada = token(&g, "ada").await;
    let bo = token(&g, "boris").await;
    let shop = board_project(&g, &ann, "Shop").await;
    let t = task(&g, &ann, &shop, "quick").await;
    let s = work_session(&g, &ann, &shop, json!({ "theme": "dark" })).await;
    let sid = s["session_id"].as_str().unwrap().to_string();

    let restore = json!({ "restore_point": s["created_at"] });
    for bearer in [&bea, &bo, &BOB.to_string()] {
        for (method, path, body) in [
            ("GET", format!("/api/sessions/{sid}"), Value::Null),
            (
                "PUT",
                format!("/api/sessions/{sid}"),
                json!({ "settings": { "theme": "light" } }),
            ),
            ("GET", format!("/api/sessions/{sid}/history"), Value::Null),
            (
                "POST",
                format!("/api/sessions/{sid}/restore"),
                restore.clone(),
            ),
            ("DELETE", format!("/api/sessions/{sid}"), Value::Null),
        ] {
            let (status, e) = refused(&g, method, &path, Some(bearer), body).await;
            assert_eq!(status, 404, "{method} {path}: {e}");
            assert_eq!(e["code"], "RESOURCE_NOT_FOUND");
        }
        let mine = get(&g, bearer, "/api/sessions/").await;
        assert_eq!(mine["total"], 0);
    }
    // Executing with someone else's session executes nothing.
    let (status, e) = refused(
        &g,
        "POST",
        &format!("/api/tasks/{t}/execute"),
        Some(&bea),
        json!({ "session_id": sid }),
    )
    .await;
    assert_eq!(status, 404, "{e}");
    assert_eq!(e["details"]["field"], "session_id", "{e}");
    let task = get(&g, &ann, &format!("/api/tasks/{t}")).await;
    assert_eq!(task["status"], "pending");
    // Another tenant's project cannot carry a session.
    let (status, e) = refused(
        &g,
        "POST",
        "/api/sessions/",
        Some(&bo),
        json!({ "project_id": shop }),
    )
    .await;
    assert_eq!(
        (status, e["code"].as_str()),
        (404, Some("PROJECT_NOT_FOUND"))
    );

    // Nothing of it changed; the tenant's admin and its API key see it.
    for bearer in [&ada, &ALICE.to_string()] {
        let seen = get(&g, bearer, &format!("/api/sessions/{sid}")).await;
        assert_eq!(seen["settings"], json!({ "theme": "dark" }));
    }
    let history = history_of(&g, &ann, &sid).await;
    assert_eq!(history_types(&history), ["created"]);
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let setup = board_setup();
    add_user(&setup, "alice", "ann", true);
    let g = start(&setup, "");
    let ann = token(&g, "ann").await;
    let shop = board_project(&g, &ann, "Shop").await;
    let t = task(&g, &ann, &shop, "quick").await;

    for (body, code, field) in [
        (
            json!({ "project_id": "no-such-project" }),
            "PROJECT_NOT_FOUND",
            None,
        ),
        (json!({}), "VALIDATION_ERROR", Some("project_id")),
        (
            json!({ "project_id": 7 }),
            "VALIDATION_ERROR",
            Some("project_id"),
        ),
        (
            json!({ "project_id": shop, "settings": "dark" }),
            "VALIDATION_ERROR",
            Some("settings"),
        ),
        (
            json!({ "project_id": shop, "settings": [1, 2] }),
            "VALIDATION_ERROR",
            Some("settings"),
        ),
        (
            json!({ "project_id": shop, "colour": "red" }),
            "VALIDATION_ERROR",
            Some("colour"),
        ),
        (json!("a string"), "VALIDATION_ERROR", Some("body")),
    ] {
        let (_, e) = refused(&g, "POST", "/api/sessions/", Some(&ann), body.clone()).await;
        assert_eq!(e["code"], code, "{body}: {e}");
        if let Some(field) = field {
            assert_eq!(e["details"]["field"], field, "{body}: {e}");
        }
    }
    let none = get(&g, &ann, "/api/sessions/").await;
    assert_eq!(none["total"], 0, "nothing was made");

    let s = work_session(&g, &ann, &shop, json!({ "theme": "dark" })).await;
    let sid = s["session_id"].as_str().unwrap().to_string();
    let future = "2999-01-01T00:00:00Z";
    let before = "2001-01-01T00:00:00Z";
    for (method, path, body, field) in [
        (
            "PUT",
            format!("/api/sessions/{sid}"),
            json!({ "settings": "light" }),
            "settings",
        ),
        (
            "PUT",
            format!("/api/sessions/{sid}"),
            json!({ "settings": [1] }),
            "settings",
        ),
        ("PUT", format!("/api/sessions/{sid}"), json!({}), "settings"),
        (
            "PUT",
            format!("/api/sessions/{sid}"),
            json!({ "settings": {}, "theme": "x" }),
            "theme",
        ),
        (
            "POST",
            format!("/api/sessions/{sid}/restore"),
            json!({ "restore_point": before, "include_settings": true }),
            "restore_point",
        ),
        (
            "POST",
            format!("/api/sessions/{sid}/restore"),
            json!({ "restore_point": future }),
            "restore_point",
        ),
        (
            "POST",
            format!("/api/sessions/{sid}/restore"),
            json!({ "restore_point": "yesterday" }),
            "restore_point",
        ),
        (
            "POST",
            format!("/api/sessions/{sid}/restore"),
            json!({}),
            "restore_point",
        ),
        (
            "POST",
            format!("/api/sessions/{sid}/restore"),
            json!({ "restore_point": s["created_at"], "include_tasks": "yes" }),
            "include_tasks",
        ),
        (
            "POST",
            format!("/api/tasks/{t}/execute"),
            json!({ "session_id": 12 }),
            "session_id",
        ),
    ] {
        let (status, e) = refused(&g, method, &path, Some(&ann), body.clone()).await;
        assert_eq!(status, 422, "{method} {path} {body}: {e}");
        assert_eq!(e["code"], "VALIDATION_ERROR");
        assert_eq!(e["details"]["field"], field, "{method} {path} {body}: {e}");
    }
    let (status, e) = refused(
        &g,
        "GET",
        "/api/sessions/?status=deleted",
        Some(&ann),
        Value::Null,
    )
    .await;
    assert_eq!(
        (status, e["details"]["field"].as_str()),
        (422, Some("status"))
    );
    let (status, e) = refused(
        &g,
        "POST",
        &format!("/api/tasks/{t}/execute"),
        Some(&ann),
        json!({ "session_id": "no-such-session" }),
    )
    .await;
    assert_eq!(
        (status, e["details"]["field"].as_str()),
        (404, Some("session_id"))
    );
    let (status, _) = refused(
        &g,
        "PATCH",
        &format!("/api/sessions/{sid}"),
        Some(&ann),
        json!({}),
    )
    .await;
    assert_eq!(status, 405);
    let (status, _) = refused(
        &g,
        "GET",
        &format!("/api/sessions/{sid}/x"),
        Some(&ann),
        Value::Null,
    )
    .await;
    assert_eq!(status, 404);

    // Nothing changed: the settings, the history, the task.
    let same = get(&g, &ann, &format!("/api/sessions/{sid}")).await;
    assert_eq!(same["settings"], json!({ "theme": "dark" }));
    let history = history_of(&g, &ann, &sid).await;
    assert_eq!(history_types(&history), ["created"]);
    let task = get(&g, &ann, &format!("/api/tasks/{t}")).await;
    assert_eq!(task["status"], "pending");
    // clinvk's sessions are another surface's, untouched by these routes.
    let (status, _, _) = call(&g, "GET", "/api/v1/sessions", Some(ALICE), Value::Null, &[]).await;
    assert_ne!(status, 200, "clinvk is not loaded in this setup");
}

#[tokio::test]
async fn an_expired_session_can_be_read_and_deleted_not_used() {
    let setup = board_setup();
    add_user(&setup, "alice", "ann", true);
    let g = start(&setup, "[users]\nsession_ttl_secs = 1\n");
    let ann = token(&g, "ann").await;
    let shop = board_project(&g, &ann, "Shop").await;
    let t = task(&g, &ann, &shop, "quick").await;
    let s = work_session(&g, &ann, &shop, json!({ "theme": "dark" })).await;
    let sid = s["session_id"].as_str().unwrap().to_string();
    assert_eq!(ms(&s["expires_at"]) - ms(&s["created_at"]), 1000);

    let expired = until(&g, &ann, &format!("/api/sessions/{sid}"), |s| {
        s["status"] == "expired"
    })
    .await;
    assert_eq!(expired["settings"]["theme"], "dark");
    let listed = get(&g, &ann, "/api/sessions/?status=expired").await;
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["sessions"][0]["status"], "expired");
    let listed = get(&g, &ann, "/api/sessions/?status=active").await;
    assert_eq!(listed["total"], 0);

    for (method, path, body) in [
        (
            "PUT",
            format!("/api/sessions/{sid}"),
            json!({ "settings": { "theme": "light" } }),
        ),
        (
            "POST",
            format!("/api/sessions/{sid}/restore"),
            json!({ "restore_point": s["created_at"] }),
        ),
        (
            "POST",
            format!("/api/tasks/{t}/execute"),
            json!({ "session_id": sid }),
        ),
    ] {
        let (status, e) = refused(&g, method, &path, Some(&ann), body).await;
        assert_eq!(
            (status, e["code"].as_str()),
            (409, Some("SESSION_EXPIRED")),
            "{path}"
        );
    }
    let task = get(&g, &ann, &format!("/api/tasks/{t}")).await;
    assert_eq!(task["status"], "pending", "nothing was executed");
    let history = history_of(&g, &ann, &sid).await;
    assert_eq!(history_types(&history), ["created"]);
    ok(
        &g,
        "DELETE",
        &format!("/api/sessions/{sid}"),
        &ann,
        Value::Null,
    )
    .await;
    let listed = get(&g, &ann, "/api/sessions/").await;
    assert_eq!(listed["total"], 0);
}
