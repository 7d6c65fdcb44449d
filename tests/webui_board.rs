//! The Web UI API's board from outside: projects and their tasks through the real binary —
//! filters, search, history, bulk changes, soft deletes, clones — scoped to the caller's tenant
//! and permissions, with bad input refused in the document's envelope and nothing half-written.

mod common;

use common::webui::*;
use serde_json::{Value, json};

/// Ann (alice, admin) logged in on a fresh gantry.
async fn started() -> (common::Setup, common::Gantry, String) {
    let setup = setup();
    add_user(&setup, "alice", "ann", true);
    let g = serve(&setup);
    let ann = token(&g, "ann").await;
    (setup, g, ann)
}

async fn project(g: &common::Gantry, bearer: &str, name: &str) -> Value {
    ok(g, "POST", "/api/projects/", bearer, json!({ "name": name })).await
}

async fn task(g: &common::Gantry, bearer: &str, body: Value) -> Value {
    ok(g, "POST", "/api/tasks/", bearer, body).await
}

fn titles(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{page}"))
        .iter()
        .map(|t| t["title"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_project_and_its_tasks_keep_every_change() {
    let (setup, g, ann) = started().await;
    let p = ok(
        &g,
        "POST",
        "/api/projects/",
        &ann,
        json!({
            "name": "E-commerce Platform",
            "description": "Full-stack e-commerce platform with React and FastAPI",
            "settings": { "theme": "dark", "backend": "claude" },
            "resource_limits": { "max_tasks": 5, "max_concurrent_tasks": 2, "storage_limit": "1GB" },
        }),
    )
    .await;
    let pid = p["id"].as_str().unwrap().to_string();
    assert_eq!(p["status"], "active");
    assert_eq!(p["settings"]["theme"], "dark");
    assert_eq!(p["resource_limits"]["storage_limit"], "1GB");
    assert_eq!(p["statistics"]["total_tasks"], 0);

    // Three tasks; the third waits for the first.
    let auth = task(
        &g,
        &ann,
        json!({
            "title": "Implement user authentication",
            "description": "Add JWT-based authentication to the API",
            "project_id": pid,
            "priority": 3,
            "estimated_duration": "02:30:00",
            "tags": ["authentication", "security"],
            "metadata": { "component": "backend" },
        }),
    )
    .await;
    assert_eq!(auth["status"], "pending");
    assert_eq!(auth["estimated_duration"], "02:30:00");
    assert_eq!(auth["progress_percentage"], 0);
    let auth_id = auth["id"].as_str().unwrap().to_string();
    task(
        &g,
        &ann,
        json!({ "title": "Dark theme", "project_id": pid, "priority": 1, "tags": ["ui"] }),
    )
    .await;
    let tests = task(
        &g,
        &ann,
        json!({
            "title": "Authentication tests", "project_id": pid, "priority": 2,
            "tags": ["security", "tests"], "dependencies": [auth_id],
        }),
    )
    .await;
    let tests_id = tests["id"].as_str().unwrap().to_string();
    assert_eq!(tests["dependencies"][0]["depends_on_task_id"], auth_id);
    assert_eq!(tests["dependencies"][0]["task"]["status"], "pending");

    // Filters: minimum priority, tags (all of them), sort and order; pages with links.
    let page = ok(
        &g,
        "GET",
        "/api/tasks/?priority=2&sort=priority&order=desc",
        &ann,
        Value::Null,
    )
    .await;
    assert_eq!(
        titles(&page),
        ["Implement user authentication", "Authentication tests"]
    );
    let page = ok(
        &g,
        "GET",
        "/api/tasks/?tags=security,tests",
        &ann,
        Value::Null,
    )
    .await;
    assert_eq!(titles(&page), ["Authentication tests"]);
    let page = ok(
        &g,
        "GET",
        &format!("/api/projects/{pid}/tasks?sort=title&order=asc&page=2&page_size=1"),
        &ann,
        Value::Null,
    )
    .await;
    assert_eq!(titles(&page), ["Dark theme"]);
    assert_eq!(
        (
            &page["total"],
            &page["pages"],
            &page["has_next"],
            &page["has_previous"]
        ),
        (&json!(3), &json!(3), &json!(true), &json!(true))
    );
    let links = &page["pagination"]["links"];
    assert!(
        links["next"]
            .as_str()
            .unwrap()
            .ends_with("sort=title&order=asc&page=3&page_size=1"),
        "{links}"
    );

    // Changes, by hand and in bulk; each in the history with who made it.
    let changed = ok(
        &g,
        "PUT",
        &format!("/api/tasks/{auth_id}"),
        &ann,
        json!({ "status": "completed", "priority": 4, "assigned_to": null }),
    )
    .await;
    assert_eq!(changed["status"], "completed");
    assert_eq!(changed["progress_percentage"], 100);
    assert!(changed["completed_at"].is_string());
    let bulk = ok(
        &g,
        "POST",
        "/api/tasks/bulk",
        &ann,
        json!({
            "operation": "add_tags",
            "task_ids": [auth_id, tests_id, "no-such-task"],
            "data": { "tags": ["sprint-1"] },
        }),
    )
    .await;
    assert_eq!(bulk["affected_count"], 2, "{bulk}");
    assert_eq!(bulk["failed"], json!(["no-such-task"]));
    assert_eq!(bulk["errors"][0]["code"], "TASK_NOT_FOUND");
    let history = ok(
        &g,
        "GET",
        &format!("/api/tasks/{auth_id}/history"),
        &ann,
        Value::Null,
    )
    .await;
    let actions: Vec<&str> = history["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "created",
            "status_changed",
            "priority_changed",
            "progress_changed",
            "tags_changed"
        ],
        "{history}"
    );
    let status_change = &history["history"][1];
    assert_eq!(status_change["user_name"], "ann");
    assert_eq!(status_change["details"]["old_value"], "pending");
    assert_eq!(status_change["details"]["new_value"], "completed");
    assert_eq!(
        history["history"][0]["details"]["initial_data"]["title"],
        "Implement user authentication"
    );
    let got = ok(
        &g,
        "GET",
        &format!("/api/tasks/{tests_id}"),
        &ann,
        Value::Null,
    )
    .await;
    assert_eq!(got["dependencies"][0]["task"]["status"], "completed");
    assert_eq!(got["tags"], json!(["security", "tests", "sprint-1"]));
    assert_eq!(got["history"].as_array().unwrap().len(), 2);

    // The project counts them, shows its recent activity, and holds at most max_tasks.
    let p = ok(
        &g,
        "GET",
        &format!("/api/projects/{pid}"),
        &ann,
        Value::Null,
    )
    .await;
    assert_eq!(p["statistics"]["total_tasks"], 3);
    assert_eq!(p["statistics"]["completed_tasks"], 1);
    assert_eq!(p["statistics"]["pending_tasks"], 2);
    assert_eq!(p["recent_activity"][0]["action"], "task_tags_changed");
    assert!(
        p["recent_activity"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["action"] == "task_completed"),
        "{p}"
    );
    task(&g, &ann, json!({ "title": "four", "project_id": pid })).await;
    task(&g, &ann, json!({ "title": "five", "project_id": pid })).await;
    let (status, error) = refused(
        &g,
        "POST",
        "/api/tasks/",
        Some(&ann),
        json!({ "title": "six", "project_id": pid }),
    )
    .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (409, Some("PROJECT_LIMIT_EXCEEDED"))
    );

    // Clone: the workspace's files and, when asked, the tasks.
    let ws = setup
        .data()
        .join("workspaces/alice")
        .join(p["workspace_id"].as_str().unwrap());
    std::fs::create_dir_all(ws.join("src")).unwrap();
    std::fs::write(ws.join("src/main.py"), "print('hi')\n").unwrap();
    let copy = ok(
        &g,
        "POST",
        &format!("/api/projects/{pid}/clone"),
        &ann,
        json!({ "name": "Copy", "include_tasks": true, "include_settings": false }),
    )
    .await;
    assert_eq!(copy["statistics"]["total_tasks"], 5);
    assert_eq!(copy["statistics"]["pending_tasks"], 5);
    assert_eq!(copy["settings"], json!({}));
    let copied = setup
        .data()
        .join("workspaces/alice")
        .join(copy["workspace_id"].as_str().unwrap())
        .join("src/main.py");
    assert_eq!(std::fs::read_to_string(copied).unwrap(), "print('hi')\n");

    // Soft deletes: gone from every read, the history kept.
    let deleted = ok(
        &g,
        "DELETE",
        &format!("/api/tasks/{tests_id}"),
        &ann,
        Value::Null,
    )
    .await;
    assert!(deleted["deleted_at"].is_string());
    let (status, error) = refused(
        &g,
        "GET",
        &format!("/api/tasks/{tests_id}"),
        Some(&ann),
        Value::Null,
    )
    .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (404, Some("TASK_NOT_FOUND"))
    );
    ok(
        &g,
        "DELETE",
        &format!("/api/projects/{pid}"),
        &ann,
        Value::Null,
    )
    .await;
    let (status, error) = refused(
        &g,
        "GET",
        &format!("/api/projects/{pid}"),
        Some(&ann),
        Value::Null,
    )
    .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (404, Some("PROJECT_NOT_FOUND"))
    );
    let listed = ok(&g, "GET", "/api/projects/", &ann, Value::Null).await;
    assert_eq!(listed["total"], 1, "only the copy is left: {listed}");

    // The profile counts what ann made, from the store; preferences are kept as given.
    let profile = ok(&g, "GET", "/api/users/profile", &ann, Value::Null).await;
    assert_eq!(profile["username"], "ann");
    assert_eq!(profile["role"], "admin");
    assert_eq!(profile["statistics"]["projects_created"], 2);
    assert_eq!(profile["statistics"]["tasks_created"], 10, "{profile}");
    assert!(profile["last_login"].is_string());
    let prefs = json!({ "theme": "light", "notifications": { "email": false } });
    let stored = ok(&g, "PUT", "/api/users/preferences", &ann, prefs.clone()).await;
    assert_eq!(stored["preferences"], prefs);
    let profile = ok(&g, "GET", "/api/users/profile", &ann, Value::Null).await;
    assert_eq!(profile["preferences"], prefs);
}

#[tokio::test]
async fn search_speaks_the_documents_syntax() {
    let (_setup, g, ann) = started().await;
    let p = project(&g, &ann, "site").await;
    let pid = p["id"].as_str().unwrap();
    for (title, description, tags) in [
        (
            "Implement user authentication",
            "JWT for the API",
            json!(["security"]),
        ),
        (
            "Authentication tests",
            "cover the login flow",
            json!(["tests"]),
        ),
        (
            "Dark theme",
            "user authentication screens too",
            json!(["ui"]),
        ),
        ("Legacy auth cleanup", "remove old sessions", json!([])),
    ] {
        task(
            &g,
            &ann,
            json!({ "title": title, "description": description, "project_id": pid, "tags": tags }),
        )
        .await;
    }
    let search = |q: &str| {
        let q = q.to_string();
        let g = &g;
        let ann = &ann;
        async move {
            let path = format!(
                "/api/tasks/?sort=title&order=asc&search={}",
                q.replace('%', "%25")
                    .replace(' ', "%20")
                    .replace('"', "%22")
                    .replace(':', "%3A")
                    .replace('*', "%2A")
            );
            titles(&ok(g, "GET", &path, ann, Value::Null).await)
        }
    };
    assert_eq!(
        search("authentication").await,
        [
            "Authentication tests",
            "Dark theme",
            "Implement user authentication"
        ]
    );
    assert_eq!(
        search("\"user authentication\"").await,
        ["Dark theme", "Implement user authentication"]
    );
    assert_eq!(
        search("title:authentication").await,
        ["Authentication tests", "Implement user authentication"]
    );
    assert_eq!(
        search("auth* AND NOT legacy").await,
        [
            "Authentication tests",
            "Dark theme",
            "Implement user authentication"
        ]
    );
    assert_eq!(
        search("tags:ui OR tags:tests").await,
        ["Authentication tests", "Dark theme"]
    );
    assert_eq!(search("auth*").await.len(), 4);
    for malformed in [
        "\"unclosed",
        "auth AND",
        "(auth",
        "owner:me",
        "NOT auth",
        "*",
    ] {
        let path = format!(
            "/api/tasks/?search={}",
            malformed
                .replace(' ', "%20")
                .replace('"', "%22")
                .replace('(', "%28")
                .replace(':', "%3A")
                .replace('*', "%2A")
        );
        let (status, error) = refused(&g, "GET", &path, Some(&ann), Value::Null).await;
        assert_eq!(status, 422, "{malformed}");
        assert_eq!(error["code"], "VALIDATION_ERROR");
        assert_eq!(error["details"]["field"], "search", "{malformed}: {error}");
    }
    // Projects are searched by name and description the same way.
    project(&g, &ann, "Marketing site").await;
    let found = ok(
        &g,
        "GET",
        "/api/projects/?search=name%3Amarket%2A",
        &ann,
        Value::Null,
    )
    .await;
    assert_eq!(found["total"], 1, "{found}");
}

#[tokio::test]
async fn tenants_and_permissions_bound_the_board() {
    let (_setup, g, ann) = started().await;
    let p = project(&g, &ann, "site").await;
    let pid = p["id"].as_str().unwrap().to_string();
    let t = task(&g, &ann, json!({ "title": "secret", "project_id": pid })).await;
    let tid = t["id"].as_str().unwrap().to_string();

    // Bob's key: alice's ids are unknown ids, on every route.
    for (method, path) in [
        ("GET", format!("/api/projects/{pid}")),
        ("PUT", format!("/api/projects/{pid}")),
        ("DELETE", format!("/api/projects/{pid}")),
        ("GET", format!("/api/projects/{pid}/tasks")),
        ("GET", format!("/api/tasks/{tid}")),
        ("PUT", format!("/api/tasks/{tid}")),
        ("DELETE", format!("/api/tasks/{tid}")),
        ("GET", format!("/api/tasks/{tid}/history")),
    ] {
        let body = if method == "PUT" {
            json!({ "name": "mine", "title": "mine" })
        } else {
            Value::Null
        };
        let (status, _, answer) = call(&g, method, &path, Some(BOB), body, &[]).await;
        assert!(
            status == 404 || (method == "PUT" && status == 422),
            "{method} {path}: {status} {answer}"
        );
    }
    let listed = ok(&g, "GET", "/api/tasks/", BOB, Value::Null).await;
    assert_eq!(listed["total"], 0);
    let (status, error) = refused(
        &g,
        "POST",
        "/api/tasks/",
        Some(BOB),
        json!({ "title": "in yours", "project_id": pid }),
    )
    .await;
    assert_eq!(
        (status, error["details"]["field"].as_str()),
        (422, Some("project_id"))
    );
    let bulk = ok(
        &g,
        "POST",
        "/api/tasks/bulk",
        BOB,
        json!({ "operation": "delete", "task_ids": [tid] }),
    )
    .await;
    assert_eq!(bulk["affected_count"], 0);
    assert!(
        ok(&g, "GET", &format!("/api/tasks/{tid}"), &ann, Value::Null).await["id"] == tid.as_str()
    );

    // A reader reads and changes nothing.
    ok(
        &g,
        "POST",
        "/api/users",
        &ann,
        json!({ "username": "rita", "password": PASSWORD, "permissions": ["read"] }),
    )
    .await;
    let rita = token(&g, "rita").await;
    ok(&g, "GET", &format!("/api/tasks/{tid}"), &rita, Value::Null).await;
    for (method, path, body) in [
        ("POST", "/api/projects/".to_string(), json!({ "name": "x" })),
        (
            "POST",
            "/api/tasks/".to_string(),
            json!({ "title": "x", "project_id": pid }),
        ),
        ("PUT", format!("/api/tasks/{tid}"), json!({ "priority": 9 })),
        ("DELETE", format!("/api/projects/{pid}"), Value::Null),
    ] {
        let (status, error) = refused(&g, method, &path, Some(&rita), body).await;
        assert_eq!(
            (status, error["code"].as_str()),
            (403, Some("AUTH_INSUFFICIENT_PERMISSIONS")),
            "{method} {path}"
        );
    }
    assert_eq!(
        ok(
            &g,
            "GET",
            &format!("/api/tasks/{tid}/history"),
            &ann,
            Value::Null
        )
        .await["history"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "nothing changed"
    );

    // Health is public and says little; system information needs credentials.
    let (status, _, health) = call(&g, "GET", "/api/health/", None, Value::Null, &[]).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["data"]["status"], "healthy");
    assert!(health["data"]["uptime"].is_u64());
    let (status, _) = refused(&g, "GET", "/api/system/info", None, Value::Null).await;
    assert_eq!(status, 401);
    let info = ok(&g, "GET", "/api/system/info", &rita, Value::Null).await;
    assert_eq!(info["limits"]["max_page_size"], 100);
    // The detailed report: the store timed now, the last minute's requests from the metrics.
    let (status, _) = refused(&g, "GET", "/api/health/detailed", None, Value::Null).await;
    assert_eq!(status, 401);
    let detailed = ok(&g, "GET", "/api/health/detailed", &rita, Value::Null).await;
    assert_eq!(
        detailed["checks"]["database"]["status"], "healthy",
        "{detailed}"
    );
    assert!(
        detailed["checks"]["database"]["response_time"]
            .as_f64()
            .unwrap()
            >= 0.0
    );
    let per_minute = detailed["metrics"]["requests_per_minute"].as_u64().unwrap();
    assert!(per_minute >= 20, "{detailed}");
    let client_errors = detailed["metrics"]["client_error_rate"].as_f64().unwrap();
    assert!(client_errors > 0.0 && client_errors < 1.0, "{detailed}");
    assert_eq!(detailed["metrics"]["error_rate"], 0.0, "{detailed}");
}

#[tokio::test]
async fn bad_input_is_refused_in_the_envelope_and_writes_nothing() {
    let (_setup, g, ann) = started().await;
    let p = project(&g, &ann, "site").await;
    let pid = p["id"].as_str().unwrap().to_string();
    let t = task(&g, &ann, json!({ "title": "one", "project_id": pid })).await;
    let tid = t["id"].as_str().unwrap().to_string();

    let bodies: Vec<(&str, String, Value, &str)> = vec![
        (
            "POST",
            "/api/tasks/".into(),
            json!({ "project_id": pid }),
            "title",
        ),
        (
            "POST",
            "/api/tasks/".into(),
            json!({ "title": 7, "project_id": pid }),
            "title",
        ),
        (
            "POST",
            "/api/tasks/".into(),
            json!({ "title": "x" }),
            "project_id",
        ),
        (
            "POST",
            "/api/tasks/".into(),
            json!({ "title": "x", "project_id": pid, "priority": "high" }),
            "priority",
        ),
        (
            "POST",
            "/api/tasks/".into(),
            json!({ "title": "x", "project_id": pid, "priority": 101 }),
            "priority",
        ),
        (
            "POST",
            "/api/tasks/".into(),
            json!({ "title": "x", "project_id": pid, "tags": "a,b" }),
            "tags",
        ),
        (
            "POST",
            "/api/tasks/".into(),
            json!({ "title": "x", "project_id": pid, "metadata": [1] }),
            "metadata",
        ),
        (
            "POST",
            "/api/tasks/".into(),
            json!({ "title": "x", "project_id": pid, "estimated_duration": "2h" }),
            "estimated_duration",
        ),
        (
            "POST",
            "/api/tasks/".into(),
            json!({ "title": "x", "project_id": pid, "colour": "red" }),
            "colour",
        ),
        (
            "POST",
            "/api/tasks/".into(),
            json!({ "title": "x".repeat(501), "project_id": pid }),
            "title",
        ),
        ("POST", "/api/tasks/".into(), json!([1, 2]), "body"),
        (
            "PUT",
            format!("/api/tasks/{tid}"),
            json!({ "status": "done" }),
            "status",
        ),
        (
            "PUT",
            format!("/api/tasks/{tid}"),
            json!({ "status": "running" }),
            "status",
        ),
        (
            "PUT",
            format!("/api/tasks/{tid}"),
            json!({ "progress_percentage": -1 }),
            "progress_percentage",
        ),
        (
            "PUT",
            format!("/api/tasks/{tid}"),
            json!({ "title": "ok", "priority": 1000 }),
            "priority",
        ),
        (
            "POST",
            "/api/tasks/bulk".into(),
            json!({ "operation": "explode", "task_ids": [tid] }),
            "operation",
        ),
        (
            "POST",
            "/api/tasks/bulk".into(),
            json!({ "operation": "set_priority", "task_ids": [tid] }),
            "data.priority",
        ),
        (
            "POST",
            "/api/tasks/bulk".into(),
            json!({ "operation": "delete", "task_ids": [] }),
            "task_ids",
        ),
        (
            "POST",
            "/api/projects/".into(),
            json!({ "name": "" }),
            "name",
        ),
        (
            "POST",
            "/api/projects/".into(),
            json!({ "name": "x", "resource_limits": { "max_tasks": 0 } }),
            "resource_limits.max_tasks",
        ),
        (
            "POST",
            "/api/projects/".into(),
            json!({ "name": "x", "resource_limits": { "storage_limit": "lots" } }),
            "resource_limits.storage_limit",
        ),
        (
            "PUT",
            format!("/api/projects/{pid}"),
            json!({ "status": "deleted" }),
            "status",
        ),
        (
            "POST",
            format!("/api/projects/{pid}/clone"),
            json!({ "include_tasks": "yes", "name": "c" }),
            "include_tasks",
        ),
        (
            "PUT",
            "/api/users/preferences".into(),
            json!("dark"),
            "body",
        ),
        (
            "POST",
            format!("/api/tasks/{tid}/execute"),
            json!({ "priority": "urgent" }),
            "priority",
        ),
        (
            "POST",
            format!("/api/tasks/{tid}/execute"),
            json!({ "options": { "retry_attempts": 11 } }),
            "options.retry_attempts",
        ),
        (
            "POST",
            format!("/api/tasks/{tid}/execute"),
            json!({ "options": { "timeout": "1h" } }),
            "options.timeout",
        ),
        (
            "POST",
            format!("/api/tasks/{tid}/execute"),
            json!({ "options": { "colour": 1 } }),
            "options.colour",
        ),
        (
            "POST",
            format!("/api/tasks/{tid}/retry"),
            Value::Null,
            "status",
        ),
        (
            "POST",
            format!("/api/tasks/{tid}/cancel"),
            json!({ "reason": 5 }),
            "reason",
        ),
        (
            "POST",
            "/api/queues/pause".into(),
            json!({ "queue_name": "urgent" }),
            "queue_name",
        ),
        (
            "DELETE",
            "/api/queues/clear".into(),
            json!({ "confirm": "yes" }),
            "confirm",
        ),
        (
            "POST",
            "/api/queues/priority".into(),
            json!({ "task_ids": [tid], "priority": "top" }),
            "priority",
        ),
    ];
    for (method, path, body, field) in bodies {
        let (status, error) = refused(&g, method, &path, Some(&ann), body.clone()).await;
        assert_eq!(status, 422, "{method} {path} {body}: {error}");
        assert_eq!(error["code"], "VALIDATION_ERROR", "{body}");
        assert_eq!(
            error["details"]["field"], field,
            "{method} {path} {body}: {error}"
        );
    }
    for query in [
        "page_size=0",
        "page_size=101",
        "page_size=-1",
        "page=0",
        "page=x",
        "status=pending,nope",
        "sort=colour",
        "order=sideways",
        "priority=high",
        "created_after=yesterday",
    ] {
        let (status, error) = refused(
            &g,
            "GET",
            &format!("/api/tasks/?{query}"),
            Some(&ann),
            Value::Null,
        )
        .await;
        assert_eq!(
            (status, error["code"].as_str()),
            (422, Some("VALIDATION_ERROR")),
            "{query}"
        );
    }
    for path in [
        "/api/queues/metrics?period=2h".to_string(),
        format!("/api/projects/{pid}/analytics?period=2w"),
    ] {
        let (status, error) = refused(&g, "GET", &path, Some(&ann), Value::Null).await;
        assert_eq!(
            (status, error["details"]["field"].as_str()),
            (422, Some("period")),
            "{path}"
        );
    }
    // Oversize: refused before any of it is read as JSON.
    let huge = json!({ "title": "x", "project_id": pid, "description": "y".repeat(70_000) });
    let (status, _) = refused(&g, "POST", "/api/tasks/", Some(&ann), huge).await;
    assert_eq!(status, 413);
    // Nothing above wrote anything: one task, its one history entry, one project.
    let listed = ok(&g, "GET", "/api/tasks/", &ann, Value::Null).await;
    assert_eq!(listed["total"], 1);
    let history = ok(
        &g,
        "GET",
        &format!("/api/tasks/{tid}/history"),
        &ann,
        Value::Null,
    )
    .await;
    assert_eq!(history["history"].as_array().unwrap().len(), 1, "{history}");
    let projects = ok(&g, "GET", "/api/projects/", &ann, Value::Null).await;
    assert_eq!(projects["total"], 1);
    // Unknown routes and methods are answered in the envelope too.
    let (status, _) = refused(
        &g,
        "PATCH",
        &format!("/api/tasks/{tid}"),
        Some(&ann),
        Value::Null,
    )
    .await;
    assert_eq!(status, 405);
    let (status, _) = refused(&g, "GET", "/api/tasks/x/y/z", Some(&ann), Value::Null).await;
    assert_eq!(status, 404);
}

/// A gantry whose tasks run the stand-in agent `tests/fixtures/board/board-agent` (backend
/// `board`), one task per tenant at a time, with Ann (alice, admin) logged in.
async fn running() -> (common::Setup, common::Gantry, String) {
    let setup = board_setup();
    add_user(&setup, "alice", "ann", true);
    let g = start_board(&setup);
    let ann = token(&g, "ann").await;
    (setup, g, ann)
}

fn start_board(setup: &common::Setup) -> common::Gantry {
    setup.start_configured(
        // Polling tasks until they end takes more than the default 200 requests a minute.
        "[tasks]\nmax_running_per_tenant = 1\n[http]\nuser_rate_limit_per_minute = 6000\n",
        &format!("alice:{ALICE}, bob:{BOB}"),
    )
}

async fn new_task(g: &common::Gantry, bearer: &str, project: &str, title: &str) -> String {
    let t = task(g, bearer, json!({ "title": title, "project_id": project })).await;
    t["id"].as_str().unwrap().to_string()
}

/// The task once `done` says so, polling; panics after 60 s.
async fn until(g: &common::Gantry, bearer: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let t = ok(g, "GET", &format!("/api/tasks/{id}"), bearer, Value::Null).await;
        if done(&t) {
            return t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "task {id} never got there: {t}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn each_user_has_a_request_budget_told_on_every_answer() {
    let setup = setup();
    add_user(&setup, "alice", "ann", false);
    let g = setup.start_configured(
        "[http]\nuser_rate_limit_per_minute = 3\npublic_rate_limit_per_minute = 2\n",
        &format!("alice:{ALICE}, bob:{BOB}"),
    );
    // Logging in is a public call: the address's budget (2), not the user's.
    let ann = token(&g, "ann").await;
    for remaining in [2, 1, 0] {
        let (status, headers, body) =
            call(&g, "GET", "/api/projects/", Some(&ann), Value::Null, &[]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(headers["x-ratelimit-limit"], "3");
        assert_eq!(
            headers["x-ratelimit-remaining"],
            remaining.to_string().as_str()
        );
        assert_eq!(headers["x-ratelimit-window"], "60");
        assert!(headers.contains_key("x-ratelimit-reset"));
    }
    let (status, headers, body) =
        call(&g, "GET", "/api/projects/", Some(&ann), Value::Null, &[]).await;
    assert_eq!(status, 429, "{body}");
    assert_envelope(&body, "RATE_LIMIT_EXCEEDED");
    assert_eq!(body["error"]["details"]["limit"], 3);
    assert_eq!(body["error"]["details"]["window"], 60);
    assert!(body["error"]["details"]["reset_at"].is_string());
    assert!(headers.contains_key("retry-after"));
    // Another user of the same tenant is not held back by Ann, nor is another tenant.
    let (status, _, body) = call(&g, "GET", "/api/projects/", Some(ALICE), Value::Null, &[]).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = call(&g, "GET", "/api/projects/", Some(BOB), Value::Null, &[]).await;
    assert_eq!(status, 200, "{body}");
    // Public calls of one address share a budget: the login used one of two.
    let (status, headers, _) = call(&g, "GET", "/api/health/", None, Value::Null, &[]).await;
    assert_eq!(
        (status, &headers["x-ratelimit-remaining"]),
        (200, &"0".parse().unwrap())
    );
    let (status, _, body) = call(&g, "GET", "/api/health/", None, Value::Null, &[]).await;
    assert_eq!(status, 429, "{body}");
    // Other surfaces are not the Web UI API's: no user budget there.
    let (status, headers, _) = call(&g, "GET", "/health", None, Value::Null, &[]).await;
    assert_eq!(status, 200);
    assert!(!headers.contains_key("x-ratelimit-limit"));
}

fn status_is(status: &'static str) -> impl Fn(&Value) -> bool {
    move |t: &Value| t["status"] == status
}

fn actions(history: &Value) -> Vec<String> {
    history["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let new = &h["details"]["new_value"];
            match new.as_str() {
                Some(v) if h["action"] == "status_changed" => format!("->{v}"),
                _ => h["action"].as_str().unwrap().to_string(),
            }
        })
        .collect()
}

#[tokio::test]
async fn queues_start_higher_first_and_failed_runs_retry() {
    let (_setup, g, ann) = running().await;
    let pid = board_project(&g, &ann, "queued").await;
    // Paused, the queues take work and start none of it.
    ok(&g, "POST", "/api/queues/pause", &ann, json!({})).await;
    let low = new_task(&g, &ann, &pid, "low one").await;
    let normal = new_task(&g, &ann, &pid, "normal one").await;
    let high = new_task(&g, &ann, &pid, "high one").await;
    for (id, priority, position) in [(&low, "low", 1), (&normal, "normal", 1), (&high, "high", 1)] {
        let queued = ok(
            &g,
            "POST",
            &format!("/api/tasks/{id}/execute"),
            &ann,
            json!({ "priority": priority }),
        )
        .await;
        assert_eq!(queued["status"], "queued", "{queued}");
        assert_eq!(queued["queue_position"], position, "{queued}");
    }
    let status = ok(&g, "GET", "/api/queues/status", &ann, Value::Null).await;
    for queue in ["high_priority", "normal_priority", "low_priority"] {
        assert_eq!(status["queues"][queue]["size"], 1, "{status}");
        assert_eq!(status["queues"][queue]["paused"], true, "{status}");
    }
    assert_eq!(status["workers"]["total"], 1);
    let (status, error) = refused(
        &g,
        "POST",
        &format!("/api/tasks/{low}/execute"),
        Some(&ann),
        json!({}),
    )
    .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (409, Some("TASK_ALREADY_RUNNING"))
    );
    // Over a dispatcher tick later, still nothing has started.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let waiting = ok(&g, "GET", "/api/tasks/?status=queued", &ann, Value::Null).await;
    assert_eq!(waiting["total"], 3, "{waiting}");

    // Resumed: high, then normal, then low, one at a time.
    ok(&g, "POST", "/api/queues/resume", &ann, json!({})).await;
    let mut started = Vec::new();
    for id in [&high, &normal, &low] {
        let t = until(&g, &ann, id, status_is("completed")).await;
        assert_eq!(t["progress_percentage"], 100, "{t}");
        assert!(t["actual_duration"].is_string(), "{t}");
        started.push(t["started_at"].as_str().unwrap().to_string());
    }
    let history = ok(
        &g,
        "GET",
        &format!("/api/tasks/{low}/history"),
        &ann,
        Value::Null,
    )
    .await;
    assert_eq!(
        actions(&history),
        [
            "created",
            "->queued",
            "executed",
            "->running",
            "->completed"
        ],
        "{history}"
    );
    assert!(
        started[0] <= started[1] && started[1] <= started[2],
        "{started:?}"
    );

    // A failing run without retries fails; `retry` queues it again and it completes.
    let flaky = new_task(&g, &ann, &pid, "fail-once please").await;
    ok(
        &g,
        "POST",
        &format!("/api/tasks/{flaky}/execute"),
        &ann,
        json!({}),
    )
    .await;
    let failed = until(&g, &ann, &flaky, status_is("failed")).await;
    assert_eq!(failed["retry_attempt"], 0, "{failed}");
    let retried = ok(
        &g,
        "POST",
        &format!("/api/tasks/{flaky}/retry"),
        &ann,
        Value::Null,
    )
    .await;
    assert_eq!(
        (&retried["status"], &retried["retry_attempt"]),
        (&json!("queued"), &json!(1))
    );
    until(&g, &ann, &flaky, status_is("completed")).await;
    // With retry_attempts, a failed run is queued again by itself.
    let other = board_project(&g, &ann, "retried").await;
    let auto = new_task(&g, &ann, &other, "fail-once again").await;
    ok(
        &g,
        "POST",
        &format!("/api/tasks/{auto}/execute"),
        &ann,
        json!({ "priority": "high", "options": { "retry_attempts": 2, "timeout": 60 } }),
    )
    .await;
    let done = until(&g, &ann, &auto, status_is("completed")).await;
    assert_eq!(done["retry_attempt"], 1, "{done}");
    let history = ok(
        &g,
        "GET",
        &format!("/api/tasks/{auto}/history"),
        &ann,
        Value::Null,
    )
    .await;
    assert_eq!(
        actions(&history),
        [
            "created",
            "->queued",
            "executed",
            "->running",
            "->failed",
            "retried",
            "->queued",
            "->running",
            "->completed"
        ],
        "{history}"
    );
    // The figures count them, from the store.
    let status = ok(&g, "GET", "/api/queues/status", &ann, Value::Null).await;
    let completed_today: u64 = ["high_priority", "normal_priority", "low_priority"]
        .iter()
        .map(|q| status["queues"][q]["completed_today"].as_u64().unwrap())
        .sum();
    assert_eq!(completed_today, 5, "{status}");
    let metrics = ok(
        &g,
        "GET",
        "/api/queues/metrics?period=1h",
        &ann,
        Value::Null,
    )
    .await;
    assert_eq!(metrics["completed"], 5, "{metrics}");
    assert!(metrics["success_rate"].as_f64().unwrap() < 1.0, "{metrics}");
    // The project's analytics count its four tasks, all made and completed today, by Ann.
    let a = ok(
        &g,
        "GET",
        &format!("/api/projects/{pid}/analytics?period=7d"),
        &ann,
        Value::Null,
    )
    .await;
    assert_eq!(a["summary"]["total_tasks"], 4, "{a}");
    assert_eq!(a["summary"]["completed_tasks"], 4, "{a}");
    assert_eq!(
        a["task_trends"]["created_per_day"]
            .as_array()
            .unwrap()
            .len(),
        7
    );
    // Summed: around midnight (UTC) the days may split them.
    let sum = |key: &str| -> u64 {
        a["task_trends"][key]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_u64().unwrap())
            .sum()
    };
    assert_eq!(
        (sum("created_per_day"), sum("completed_per_day")),
        (4, 4),
        "{a}"
    );
    assert_eq!(a["performance_metrics"]["completion_rate"], 1.0, "{a}");
    assert!(
        a["performance_metrics"]["median_task_duration"].is_string(),
        "{a}"
    );
    assert_eq!(a["team_performance"][0]["user_name"], "ann", "{a}");
    assert_eq!(a["team_performance"][0]["tasks_completed"], 4, "{a}");
    assert!(a["summary"]["productivity_score"].is_null());
}

#[tokio::test]
async fn a_full_queue_refuses_more_and_writes_nothing() {
    let setup = board_setup();
    add_user(&setup, "alice", "ann", true);
    let g = setup.start_configured(
        "[tasks]\nmax_queued_per_tenant = 2\n",
        &format!("alice:{ALICE}, bob:{BOB}"),
    );
    let ann = token(&g, "ann").await;
    let pid = board_project(&g, &ann, "full").await;
    ok(&g, "POST", "/api/queues/pause", &ann, json!({})).await;
    for title in ["one", "two"] {
        let id = new_task(&g, &ann, &pid, title).await;
        ok(
            &g,
            "POST",
            &format!("/api/tasks/{id}/execute"),
            &ann,
            json!({}),
        )
        .await;
    }
    let third = new_task(&g, &ann, &pid, "three").await;
    let (status, headers, body) = call(
        &g,
        "POST",
        &format!("/api/tasks/{third}/execute"),
        Some(&ann),
        json!({}),
        &[],
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_envelope(&body, "QUEUE_FULL");
    assert_eq!(body["error"]["details"]["max_queued"], 2);
    assert!(headers.contains_key("retry-after"));
    let t = ok(&g, "GET", &format!("/api/tasks/{third}"), &ann, Value::Null).await;
    assert_eq!(t["status"], "pending", "nothing was written: {t}");
    // Another tenant's queue is its own.
    let theirs = board_project(&g, BOB, "bob's").await;
    let id = new_task(&g, BOB, &theirs, "bob's one").await;
    ok(
        &g,
        "POST",
        &format!("/api/tasks/{id}/execute"),
        BOB,
        json!({}),
    )
    .await;
}

#[tokio::test]
async fn dependencies_hold_a_task_until_they_complete_and_cancel_stops_a_run() {
    let (_setup, g, ann) = running().await;
    let pid = board_project(&g, &ann, "deps").await;
    let first = new_task(&g, &ann, &pid, "first").await;
    let second = task(
        &g,
        &ann,
        json!({ "title": "second", "project_id": pid, "dependencies": [first] }),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let queued = ok(
        &g,
        "POST",
        &format!("/api/tasks/{second}/execute"),
        &ann,
        json!({}),
    )
    .await;
    assert_eq!(
        queued["blocked_by"]["code"], "TASK_DEPENDENCY_NOT_MET",
        "{queued}"
    );
    assert_eq!(queued["waiting_on"], json!([first]));
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let still = ok(
        &g,
        "GET",
        &format!("/api/tasks/{second}"),
        &ann,
        Value::Null,
    )
    .await;
    assert_eq!(still["status"], "queued", "{still}");
    ok(
        &g,
        "POST",
        &format!("/api/tasks/{first}/execute"),
        &ann,
        json!({}),
    )
    .await;
    let a = until(&g, &ann, &first, status_is("completed")).await;
    let b = until(&g, &ann, &second, status_is("completed")).await;
    assert!(
        a["completed_at"].as_str() <= b["started_at"].as_str(),
        "{a} {b}"
    );

    // Cancel a running task: its process stops, the reason is in its history.
    let slow = new_task(&g, &ann, &pid, "slow work").await;
    ok(
        &g,
        "POST",
        &format!("/api/tasks/{slow}/execute"),
        &ann,
        json!({}),
    )
    .await;
    until(&g, &ann, &slow, status_is("running")).await;
    let cancelled = ok(
        &g,
        "POST",
        &format!("/api/tasks/{slow}/cancel"),
        &ann,
        json!({ "reason": "Requirements changed" }),
    )
    .await;
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["reason"], "Requirements changed");
    let history = ok(
        &g,
        "GET",
        &format!("/api/tasks/{slow}/history"),
        &ann,
        Value::Null,
    )
    .await;
    let last = history["history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["action"], "cancelled", "{history}");
    assert_eq!(last["details"]["reason"], "Requirements changed");
    // The queue goes on: a task after it runs (one at a time, so the run really ended).
    let after = new_task(&g, &ann, &pid, "after").await;
    ok(
        &g,
        "POST",
        &format!("/api/tasks/{after}/execute"),
        &ann,
        json!({}),
    )
    .await;
    until(&g, &ann, &after, status_is("completed")).await;
    let t = ok(&g, "GET", &format!("/api/tasks/{slow}"), &ann, Value::Null).await;
    assert_eq!(
        t["status"], "cancelled",
        "a late end of the run does not undo the cancel"
    );
    // Cancelling what is not queued or running is refused; clearing needs confirm.
    let (status, _) = refused(
        &g,
        "POST",
        &format!("/api/tasks/{after}/cancel"),
        Some(&ann),
        json!({}),
    )
    .await;
    assert_eq!(status, 409);
    let (status, error) = refused(&g, "DELETE", "/api/queues/clear", Some(&ann), json!({})).await;
    assert_eq!(
        (status, error["details"]["field"].as_str()),
        (422, Some("confirm"))
    );
    // Bob's key cannot run, cancel or move alice's tasks.
    for (path, body) in [
        (format!("/api/tasks/{after}/execute"), json!({})),
        (format!("/api/tasks/{after}/retry"), Value::Null),
        (format!("/api/tasks/{after}/cancel"), json!({})),
    ] {
        let (status, _, answer) = call(&g, "POST", &path, Some(BOB), body, &[]).await;
        assert_eq!(status, 404, "{path}: {answer}");
    }
}

#[tokio::test]
async fn queues_survive_a_restart_and_interrupted_runs_are_retried() {
    let setup = board_setup();
    add_user(&setup, "alice", "ann", true);
    let mut g = start_board(&setup);
    let ann = token(&g, "ann").await;
    let pid = board_project(&g, &ann, "restart").await;
    let slow = new_task(&g, &ann, &pid, "slow then restart").await;
    let waiting = new_task(&g, &ann, &pid, "waiting behind it").await;
    let lone = new_task(&g, &ann, &pid, "slow without retries").await;
    ok(
        &g,
        "POST",
        &format!("/api/tasks/{slow}/execute"),
        &ann,
        json!({ "priority": "high", "options": { "retry_attempts": 1 } }),
    )
    .await;
    until(&g, &ann, &slow, status_is("running")).await;
    ok(
        &g,
        "POST",
        &format!("/api/tasks/{waiting}/execute"),
        &ann,
        json!({}),
    )
    .await;
    ok(
        &g,
        "POST",
        &format!("/api/tasks/{lone}/execute"),
        &ann,
        json!({ "priority": "low" }),
    )
    .await;
    // gantry dies mid-run.
    g.signal("KILL");
    g.wait_exit(std::time::Duration::from_secs(10))
        .expect("gantry stops on KILL");
    drop(g);

    let g = start_board(&setup);
    let ann = token(&g, "ann").await;
    // The running one was interrupted and, having a retry left, is queued again (and runs);
    // the queued ones stayed queued and run too.
    let history = ok(
        &g,
        "GET",
        &format!("/api/tasks/{slow}/history"),
        &ann,
        Value::Null,
    )
    .await;
    let seen = actions(&history);
    assert!(
        seen.starts_with(&[
            "created".to_string(),
            "->queued".into(),
            "executed".into(),
            "->running".into(),
            "->interrupted".into(),
            "retried".into(),
            "->queued".into(),
        ]),
        "{history}"
    );
    let waited = until(&g, &ann, &waiting, |t| t["status"] != "queued").await;
    assert!(["running", "completed"].contains(&waited["status"].as_str().unwrap()));
    let t = ok(&g, "GET", &format!("/api/tasks/{slow}"), &ann, Value::Null).await;
    assert_eq!(t["retry_attempt"], 1, "{t}");
    until(&g, &ann, &waiting, status_is("completed")).await;
    // Cancel what is left so that the test ends quickly.
    ok(
        &g,
        "DELETE",
        "/api/queues/clear",
        &ann,
        json!({ "confirm": true }),
    )
    .await;
    for id in [&slow, &lone] {
        let t = ok(&g, "GET", &format!("/api/tasks/{id}"), &ann, Value::Null).await;
        if t["status"] == "running" {
            ok(
                &g,
                "POST",
                &format!("/api/tasks/{id}/cancel"),
                &ann,
                json!({}),
            )
            .await;
        }
    }
}

#[tokio::test]
async fn the_documents_curl_examples_run_a_real_agent() {
    use common::agents::{CLAUDE, FakeModel, backend_manifest, bodies, root};
    let fake = FakeModel::start();
    let setup = common::Setup::new(&[
        (
            "webui-api",
            include_str!("../plugins/webui-api.toml").to_string(),
        ),
        ("system", include_str!("../plugins/system.toml").to_string()),
        ("claude", backend_manifest(CLAUDE, &fake)),
    ]);
    add_user(&setup, "alice", "ann", false);
    let g = serve(&setup);
    let base = format!("http://{}", g.addr);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .arg(root().join("tests/webui/curl-examples.sh"))
            .args([base.as_str(), "ann", PASSWORD, "claude"])
            .output()
            .expect("running tests/webui/curl-examples.sh")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}{}\ngantry log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        g.stderr()
    );
    // The agent asked the model about the task: its title was the prompt.
    assert!(
        bodies(&fake)
            .iter()
            .any(|b| b.contains("Implement user authentication")),
        "the model never saw the task"
    );
}

#[tokio::test]
async fn one_tenants_backlog_does_not_hide_anothers_tasks() {
    let (_setup, g, ann) = running().await;
    // Alice runs one slow task (her only slot) with 300 more waiting behind it.
    let pid = board_project(&g, &ann, "backlog").await;
    let slow = new_task(&g, &ann, &pid, "slow work").await;
    ok(
        &g,
        "POST",
        &format!("/api/tasks/{slow}/execute"),
        &ann,
        json!({ "priority": "high" }),
    )
    .await;
    until(&g, &ann, &slow, status_is("running")).await;
    for i in 0..300 {
        let id = new_task(&g, &ann, &pid, &format!("waiting {i}")).await;
        ok(
            &g,
            "POST",
            &format!("/api/tasks/{id}/execute"),
            &ann,
            json!({ "priority": "high" }),
        )
        .await;
    }
    // Bob's one low task, queued after all of them, still starts: it is his slot, not hers.
    let theirs = board_project(&g, BOB, "bob's").await;
    let id = new_task(&g, BOB, &theirs, "bob's task").await;
    ok(
        &g,
        "POST",
        &format!("/api/tasks/{id}/execute"),
        BOB,
        json!({ "priority": "low" }),
    )
    .await;
    until(&g, BOB, &id, status_is("completed")).await;
    ok(
        &g,
        "DELETE",
        "/api/queues/clear",
        &ann,
        json!({ "confirm": true }),
    )
    .await;
    ok(
        &g,
        "POST",
        &format!("/api/tasks/{slow}/cancel"),
        &ann,
        json!({}),
    )
    .await;
}

/// Two nodes on one PostgreSQL store (whatever store the suite runs on): a board task runs on
/// A; when A dies, B (once A's lease ran out) ends the run as interrupted and, the task having
/// a retry left, queues it again and runs it. While A lived, B left A's run alone.
#[tokio::test]
async fn a_dead_nodes_board_task_is_interrupted_and_retried_by_another_node() {
    let mut setup = board_setup();
    if setup.store.is_none() {
        setup.store = Some(common::postgres::fresh_database());
    }
    add_user(&setup, "alice", "ann", true);
    let file = setup.dir.path().join("nodes.toml");
    std::fs::write(
        &file,
        "[tasks]\nmax_running_per_tenant = 1\nnode_lease_ms = 1500\n[http]\nuser_rate_limit_per_minute = 6000\n",
    )
    .unwrap();
    let node = |id: &str| {
        let mut cmd = setup.command();
        cmd.arg("--config")
            .arg(&file)
            .env("GANTRY_NODE_ID", id)
            .env("GANTRY_API_KEYS", format!("alice:{ALICE}"));
        common::Gantry::spawn(cmd)
    };
    let mut a = node("node-a");
    let ann = token(&a, "ann").await;
    let pid = board_project(&a, &ann, "two nodes").await;
    let slow = new_task(&a, &ann, &pid, "slow on a").await;
    ok(
        &a,
        "POST",
        &format!("/api/tasks/{slow}/execute"),
        &ann,
        json!({ "options": { "retry_attempts": 1 } }),
    )
    .await;
    until(&a, &ann, &slow, status_is("running")).await;
    let b = node("node-b");
    // B's looks at the board leave a live node's run alone.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let t = ok(&b, "GET", &format!("/api/tasks/{slow}"), &ann, Value::Null).await;
    assert_eq!(t["status"], "running", "{t}");

    a.signal("KILL");
    a.wait_exit(std::time::Duration::from_secs(10))
        .expect("gantry stops on KILL");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let history = loop {
        let history = ok(
            &b,
            "GET",
            &format!("/api/tasks/{slow}/history"),
            &ann,
            Value::Null,
        )
        .await;
        if actions(&history)
            .iter()
            .filter(|a| *a == "->running")
            .count()
            == 2
        {
            break history;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "B never ran the task again: {history}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(
        actions(&history).starts_with(&[
            "created".to_string(),
            "->queued".into(),
            "executed".into(),
            "->running".into(),
            "->interrupted".into(),
            "retried".into(),
            "->queued".into(),
            "->running".into(),
        ]),
        "{history}"
    );
    ok(
        &b,
        "POST",
        &format!("/api/tasks/{slow}/cancel"),
        &ann,
        json!({}),
    )
    .await;
}
