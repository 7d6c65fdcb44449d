//! The Web UI API's users and access tokens, seen from outside: users made with the real
//! `gantry users` command, the real binary serving `/api/auth` and `/api/users`.

mod common;

use common::webui::*;
use serde_json::{Value, json};
use std::process::Stdio;

fn usernames(body: &Value) -> Vec<String> {
    body["data"]["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_cli_user_logs_in_refreshes_and_logs_out_for_real() {
    let setup = setup();
    add_user(&setup, "alice", "ann", true);
    let (ok, listed, _) = users_cli(&setup, &["list"], "");
    assert!(
        ok && listed.contains("ann") && listed.contains("alice"),
        "{listed}"
    );
    let g = serve(&setup);

    let body = json!({ "username": "ann", "password": PASSWORD });
    let (status, headers, body) = call(
        &g,
        "POST",
        "/api/auth/login",
        None,
        body,
        &[("x-request-id", "req-login-1")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    assert_eq!(data["token_type"], "bearer");
    assert_eq!(data["expires_in"], 3600);
    assert_eq!(data["user"]["username"], "ann");
    assert!(data["user"]["id"].is_string());
    assert!(body["error"].is_null());
    assert_eq!(body["meta"]["request_id"], "req-login-1");
    assert_eq!(headers["x-request-id"], "req-login-1");
    let first = data["access_token"].as_str().unwrap().to_string();
    assert_eq!(first.split('.').count(), 3, "a JWT");

    // The token works; a request without an id gets one, the same in header and body.
    let (status, headers, body) =
        call(&g, "GET", "/api/users", Some(&first), Value::Null, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(usernames(&body), ["ann"]);
    assert_eq!(
        headers["x-request-id"].to_str().unwrap(),
        body["meta"]["request_id"].as_str().unwrap()
    );

    // A token is no API key: a plugin that did not opt in to user_auth refuses it.
    let (status, _, body) = call(&g, "GET", "/health", Some(&first), Value::Null, &[]).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "unauthorized", "{body}");

    // Refresh: a new token; the old one is revoked.
    let (status, _, body) = call(
        &g,
        "POST",
        "/api/auth/refresh",
        Some(&first),
        Value::Null,
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["expires_in"], 3600);
    let second = body["data"]["access_token"].as_str().unwrap().to_string();
    assert_ne!(first, second);
    let (status, _, body) = call(&g, "GET", "/api/users", Some(&first), Value::Null, &[]).await;
    assert_eq!(status, 401, "{body}");
    assert_envelope(&body, "AUTH_TOKEN_INVALID");
    let (status, _, _) = call(&g, "GET", "/api/users", Some(&second), Value::Null, &[]).await;
    assert_eq!(status, 200);

    // Logout revokes the token it was sent with.
    let (status, _, body) = call(
        &g,
        "POST",
        "/api/auth/logout",
        Some(&second),
        Value::Null,
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, headers, body) =
        call(&g, "GET", "/api/users", Some(&second), Value::Null, &[]).await;
    assert_eq!(status, 401, "{body}");
    assert_envelope(&body, "AUTH_TOKEN_INVALID");
    assert_eq!(headers["www-authenticate"], "Bearer");

    // And the revocation survives a restart.
    drop(g);
    let g = serve(&setup);
    let (status, _, _) = call(&g, "GET", "/api/users", Some(&second), Value::Null, &[]).await;
    assert_eq!(status, 401);
    assert!(
        !g.stderr().contains(PASSWORD) && !g.stderr().contains(&second),
        "passwords and tokens are never logged"
    );

    // The node's API document describes these routes.
    let (status, doc) = g.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    for path in [
        "/api/auth/login",
        "/api/auth/refresh",
        "/api/auth/logout",
        "/api/users",
        "/api/users/{user_id}/disable",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is not described");
    }
}

/// base64url without padding, as JWTs use.
fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A token of `header` and `claims`, HS256-signed with `secret`.
fn forge(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let signature = ring::hmac::sign(&key, signing_input.as_bytes());
    format!("{signing_input}.{}", b64(signature.as_ref()))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn expired_forged_and_unsigned_tokens_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let setup = setup();
    add_user(&setup, "alice", "ann", true);
    let g = serve(&setup);
    let real = token(&g, "ann").await;

    // The key was generated at first start, private to gantry.
    let key_file = setup.data().join("jwt-signing-keys");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let line = std::fs::read_to_string(&key_file)
        .unwrap()
        .lines()
        .find(|l| !l.starts_with('#') && !l.is_empty())
        .unwrap()
        .to_string();
    let (kid, secret) = line.split_once(':').unwrap();
    let secret = hex::decode(secret).unwrap();

    // The real token's own claims, to change one thing at a time.
    let claims_part = real.split('.').nth(1).unwrap();
    let claims: Value = {
        let padded = claims_part.replace('-', "+").replace('_', "/");
        let decoded = decode_b64(&padded);
        serde_json::from_slice(&decoded).unwrap()
    };
    let header = json!({ "alg": "HS256", "typ": "JWT", "kid": kid });
    let mut expired = claims.clone();
    expired["iat"] = json!(now() - 7200);
    expired["exp"] = json!(now() - 3600);
    let mut other_jti = claims.clone();
    other_jti["jti"] = json!("forged-jti");

    // A well-signed copy works: the forging is right.
    let copy = forge(&header, &other_jti, &secret);
    let (status, _, body) = call(&g, "GET", "/api/users", Some(&copy), Value::Null, &[]).await;
    assert_eq!(status, 200, "{body}");

    let cases = [
        ("expired", forge(&header, &expired, &secret)),
        (
            "bad signature",
            forge(&header, &other_jti, b"another secret of 32 bytes......"),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(json!({ "alg": "none", "typ": "JWT", "kid": kid })
                    .to_string()
                    .as_bytes()),
                b64(other_jti.to_string().as_bytes())
            ),
        ),
        (
            "unknown kid",
            forge(
                &json!({ "alg": "HS256", "typ": "JWT", "kid": "not-a-key" }),
                &other_jti,
                &secret,
            ),
        ),
        (
            "HS512",
            forge(
                &json!({ "alg": "HS512", "typ": "JWT", "kid": kid }),
                &other_jti,
                &secret,
            ),
        ),
        ("garbage", "not.a.token".to_string()),
    ];
    for (what, token) in cases {
        let (status, headers, body) =
            call(&g, "GET", "/api/users", Some(&token), Value::Null, &[]).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_envelope(&body, "AUTH_TOKEN_INVALID");
        assert_eq!(
            headers["x-request-id"].to_str().unwrap(),
            body["meta"]["request_id"].as_str().unwrap(),
            "{what}"
        );
    }
    let (status, _, body) = call(&g, "GET", "/api/users", None, Value::Null, &[]).await;
    assert_eq!(status, 401, "{body}");
    assert_envelope(&body, "AUTH_TOKEN_MISSING");
    let (status, _, body) = call(
        &g,
        "POST",
        "/api/auth/refresh",
        None,
        Value::Null,
        &[("x-request-id", "req-missing")],
    )
    .await;
    assert_eq!(status, 401);
    assert_envelope(&body, "AUTH_TOKEN_MISSING");
    assert_eq!(body["meta"]["request_id"], "req-missing");
}

/// Standard base64 (with `+` and `/`), padded or not.
fn decode_b64(text: &str) -> Vec<u8> {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|c| *c != b'=') {
        acc = (acc << 6) | ABC.iter().position(|a| *a == c).unwrap() as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[tokio::test]
async fn disabled_users_can_neither_log_in_nor_use_their_tokens() {
    let setup = setup();
    add_user(&setup, "alice", "ann", true);
    add_user(&setup, "alice", "cat", false);
    add_user(&setup, "alice", "dan", false);
    let g = serve(&setup);
    let cats = token(&g, "cat").await;
    let (ok, out, err) = users_cli(&setup, &["disable", "cat"], "");
    assert!(ok, "{out} {err}");
    let (status, _, body) = call(
        &g,
        "POST",
        "/api/auth/refresh",
        Some(&cats),
        Value::Null,
        &[],
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert_envelope(&body, "AUTH_ACCOUNT_DISABLED");
    let (status, _, body) = login(&g, "cat", PASSWORD).await;
    assert_eq!(status, 401, "{body}");
    assert_envelope(&body, "AUTH_ACCOUNT_DISABLED");

    // An admin disables over HTTP too.
    let anns = token(&g, "ann").await;
    let dans = token(&g, "dan").await;
    let (_, _, listed) = call(&g, "GET", "/api/users", Some(&anns), Value::Null, &[]).await;
    let dan = listed["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "dan")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/api/users/{dan}/disable");
    let (status, _, body) = call(&g, "POST", &path, Some(&anns), Value::Null, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["is_active"], false);
    let (status, _, body) = call(
        &g,
        "POST",
        "/api/auth/logout",
        Some(&dans),
        Value::Null,
        &[],
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert_envelope(&body, "AUTH_ACCOUNT_DISABLED");

    // A changed password ends the tokens issued before it.
    let (ok, out, err) = users_cli(&setup, &["passwd", "ann"], "a brand new password\n");
    assert!(ok, "{out} {err}");
    let (status, _, body) = call(&g, "GET", "/api/users", Some(&anns), Value::Null, &[]).await;
    assert_eq!(status, 401, "{body}");
    assert_envelope(&body, "AUTH_TOKEN_INVALID");
    let (status, _, _) = login(&g, "ann", "a brand new password").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn repeated_wrong_passwords_back_off() {
    let setup = setup();
    add_user(&setup, "alice", "ann", false);
    let g = serve(&setup);
    for _ in 0..6 {
        let (status, _, body) = login(&g, "ann", "wrong password").await;
        assert_eq!(status, 401, "{body}");
        assert_envelope(&body, "AUTH_INVALID_CREDENTIALS");
    }
    // Now even the right password waits.
    let (status, headers, body) = login(&g, "ann", PASSWORD).await;
    assert_eq!(status, 429, "{body}");
    assert_envelope(&body, "RATE_LIMIT_EXCEEDED");
    let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=300).contains(&wait), "{wait}");
    assert_eq!(body["error"]["details"]["retry_after"], wait, "{body}");
    assert!(
        body["error"]["details"]["reset_at"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert!(!g.stderr().contains("wrong password"));
}

#[tokio::test]
async fn many_names_failing_from_one_address_back_off_that_address() {
    let setup = setup();
    add_user(&setup, "alice", "ann", false);
    let g = serve(&setup);
    // Each name fails once only: the address's count is what grows.
    for i in 0..21 {
        let (status, _, body) = login(&g, &format!("nobody{i}"), "wrong password").await;
        assert_eq!(status, 401, "{i}: {body}");
        assert_envelope(&body, "AUTH_INVALID_CREDENTIALS");
    }
    let (status, headers, body) = login(&g, "ann", PASSWORD).await;
    assert_eq!(status, 429, "{body}");
    assert_envelope(&body, "RATE_LIMIT_EXCEEDED");
    assert!(headers.contains_key("retry-after"));
}

#[tokio::test]
async fn permissions_and_tenants_bound_what_a_caller_sees() {
    let setup = setup();
    add_user(&setup, "alice", "ann", true);
    add_user(&setup, "alice", "cat", false);
    add_user(&setup, "bob", "bea", true);
    let g = serve(&setup);

    // Without admin: 403.
    let cats = token(&g, "cat").await;
    let (status, _, body) = call(&g, "GET", "/api/users", Some(&cats), Value::Null, &[]).await;
    assert_eq!(status, 403, "{body}");
    assert_envelope(&body, "AUTH_INSUFFICIENT_PERMISSIONS");
    let new = json!({ "username": "eve", "password": PASSWORD });
    let (status, _, body) = call(&g, "POST", "/api/users", Some(&cats), new.clone(), &[]).await;
    assert_eq!(status, 403, "{body}");

    // An API key is its tenant's service user, with every permission.
    let (status, _, body) = call(&g, "GET", "/api/users", Some(ALICE), Value::Null, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(usernames(&body), ["ann", "cat"]);
    let (status, _, body) = call(
        &g,
        "GET",
        "/api/users",
        None,
        Value::Null,
        &[("x-api-key", ALICE)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = call(
        &g,
        "GET",
        "/api/users",
        Some("not-a-key-0123456789"),
        Value::Null,
        &[],
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert_envelope(&body, "AUTH_TOKEN_INVALID");

    // Bob's admin sees bob's users only, and cannot touch alice's.
    let beas = token(&g, "bea").await;
    let (status, _, body) = call(&g, "GET", "/api/users", Some(&beas), Value::Null, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(usernames(&body), ["bea"]);
    let (_, _, alices) = call(&g, "GET", "/api/users", Some(ALICE), Value::Null, &[]).await;
    let cat_id = alices["data"]["items"][1]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/api/users/{cat_id}/disable");
    for bobs in [beas.as_str(), BOB] {
        let (status, _, body) = call(&g, "POST", &path, Some(bobs), Value::Null, &[]).await;
        assert_eq!(status, 404, "{body}");
        assert_envelope(&body, "RESOURCE_NOT_FOUND");
    }
    let (status, _, _) = call(&g, "GET", "/api/users", Some(&cats), Value::Null, &[]).await;
    assert_eq!(status, 403, "cat is still enabled");

    // Alice's admin adds a user, who can log in at once.
    let anns = token(&g, "ann").await;
    let (status, _, body) = call(&g, "POST", "/api/users", Some(&anns), new, &[]).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["data"]["permissions"],
        json!(["read", "write", "execute"])
    );
    token(&g, "eve").await;
    let (_, _, body) = call(&g, "GET", "/api/users", Some(&beas), Value::Null, &[]).await;
    assert_eq!(usernames(&body), ["bea"], "still bob's alone");
}

#[tokio::test]
async fn bad_input_is_a_422_and_writes_nothing() {
    let setup = setup();
    add_user(&setup, "alice", "ann", true);
    let g = serve(&setup);
    let anns = token(&g, "ann").await;
    let cases = [
        (json!({ "username": 5, "password": PASSWORD }), "username"),
        (json!({ "password": PASSWORD }), "username"),
        (json!({ "username": "eve" }), "password"),
        (json!({ "username": "eve", "password": ["x"] }), "password"),
        (
            json!({ "username": "eve", "password": "short" }),
            "password",
        ),
        (json!({ "username": "e", "password": PASSWORD }), "username"),
        (
            json!({ "username": "eve", "password": PASSWORD, "email": 7 }),
            "email",
        ),
        (
            json!({ "username": "eve", "password": PASSWORD, "email": "nope" }),
            "email",
        ),
        (
            json!({ "username": "eve", "password": PASSWORD, "permissions": ["root"] }),
            "permissions",
        ),
        (
            json!({ "username": "eve", "password": PASSWORD, "permissions": "admin" }),
            "permissions",
        ),
        (json!([1, 2]), "body"),
    ];
    for (body, field) in cases {
        let (status, _, answer) =
            call(&g, "POST", "/api/users", Some(&anns), body.clone(), &[]).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_envelope(&answer, "VALIDATION_ERROR");
        assert_eq!(
            answer["error"]["details"]["field"], field,
            "{body}: {answer}"
        );
        assert!(answer["error"]["details"]["issue"].is_string());
    }
    let response = g
        .request(
            "POST",
            "/api/users",
            &[("authorization", &format!("Bearer {anns}"))],
            "{not json".to_string(),
        )
        .await;
    assert_eq!(response.status(), 422);
    for body in [
        json!({ "username": 1, "password": "x" }),
        json!({ "password": "x" }),
    ] {
        let (status, _, answer) = call(&g, "POST", "/api/auth/login", None, body, &[]).await;
        assert_eq!(status, 422, "{answer}");
        assert_envelope(&answer, "VALIDATION_ERROR");
        assert_eq!(answer["error"]["details"]["field"], "username");
    }
    for query in ["page_size=0", "page_size=101", "page_size=-1", "page=x"] {
        let path = format!("/api/users?{query}");
        let (status, _, answer) = call(&g, "GET", &path, Some(&anns), Value::Null, &[]).await;
        assert_eq!(status, 422, "{query}: {answer}");
    }
    // Taken names: 409, whatever their case.
    let taken = json!({ "username": "ANN", "password": PASSWORD });
    let (status, _, answer) = call(&g, "POST", "/api/users", Some(&anns), taken, &[]).await;
    assert_eq!(status, 409, "{answer}");
    assert_envelope(&answer, "RESOURCE_ALREADY_EXISTS");
    let (_, _, listed) = call(&g, "GET", "/api/users", Some(&anns), Value::Null, &[]).await;
    assert_eq!(usernames(&listed), ["ann"], "nothing was written");
    // The CLI refuses a short password too, and adds nothing.
    let (ok, _, err) = users_cli(
        &setup,
        &["add", "--tenant", "alice", "--username", "fay"],
        "short\n",
    );
    assert!(!ok && err.contains("password"), "{err}");
    let (_, listed, _) = users_cli(&setup, &["list"], "");
    assert!(!listed.contains("fay"), "{listed}");
}

#[tokio::test]
async fn a_configured_key_file_signs_rotates_and_must_be_private() {
    use std::os::unix::fs::PermissionsExt;
    let setup = setup();
    add_user(&setup, "alice", "ann", true);
    // Two keys: `new` signs, `old` still verifies.
    let keys = setup.dir.path().join("keys");
    let old_secret = [0x11u8; 32];
    let text = format!(
        "new:{}\nold:{}\n",
        hex::encode([0x22u8; 32]),
        hex::encode(old_secret)
    );
    std::fs::write(&keys, text).unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = format!(
        "[users]\ntoken_ttl_secs = 120\nsigning_key_file = {:?}\n",
        keys.display().to_string()
    );
    let g = setup.start_configured(&config, &format!("alice:{ALICE}"));
    let (status, _, body) = login(&g, "ann", PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["expires_in"], 120);
    let token = body["data"]["access_token"].as_str().unwrap().to_string();
    let header: Value = serde_json::from_slice(&decode_b64(
        &token
            .split('.')
            .next()
            .unwrap()
            .replace('-', "+")
            .replace('_', "/"),
    ))
    .unwrap();
    assert_eq!(header["kid"], "new");
    assert_eq!(header["alg"], "HS256");
    // A token of the older key is still honoured.
    let claims: Value = serde_json::from_slice(&decode_b64(
        &token
            .split('.')
            .nth(1)
            .unwrap()
            .replace('-', "+")
            .replace('_', "/"),
    ))
    .unwrap();
    let by_old = forge(
        &json!({ "alg": "HS256", "typ": "JWT", "kid": "old" }),
        &claims,
        &old_secret,
    );
    let (status, _, body) = call(&g, "GET", "/api/users", Some(&by_old), Value::Null, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        !setup.data().join("jwt-signing-keys").exists(),
        "no key is generated when the config names one"
    );
    drop(g);

    // A key file others may read stops the start.
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).unwrap();
    let file = setup.dir.path().join("gantry.toml");
    let out = setup
        .command()
        .arg("--config")
        .arg(&file)
        .env("GANTRY_API_KEYS", format!("alice:{ALICE}"))
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("chmod 600"), "{stderr}");
}

#[tokio::test]
async fn the_hosts_rate_limit_answers_in_the_documents_envelope() {
    let setup = setup();
    let config = "[http]\nrate_limit_per_minute = 2\n";
    let g = setup.start_configured(config, &format!("alice:{ALICE}"));
    let mut last = (0, hyper::HeaderMap::new(), Value::Null);
    for _ in 0..3 {
        last = call(&g, "GET", "/api/users", Some(ALICE), Value::Null, &[]).await;
    }
    let (status, headers, body) = last;
    assert_eq!(status, 429, "{body}");
    assert_envelope(&body, "RATE_LIMIT_EXCEEDED");
    assert_eq!(body["error"]["details"]["limit"], 2, "{body}");
    assert_eq!(body["error"]["details"]["window"], 60, "{body}");
    assert!(
        body["error"]["details"]["reset_at"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert!(headers.contains_key("retry-after"));
    assert_eq!(
        headers["x-request-id"].to_str().unwrap(),
        body["meta"]["request_id"].as_str().unwrap()
    );
}

/// `/v1` and `/api/v1` take a user's token too (the web UI's playground and workspaces use
/// them), but their plugins cannot tell users apart and act for the whole tenant: a user gets
/// in only with the write and execute permissions, as good as the tenant's key there.
#[tokio::test]
async fn a_users_token_on_the_tenant_wide_apis_needs_write_and_execute() {
    let mut manifests = vec![
        (
            "webui-api",
            include_str!("../plugins/webui-api.toml").to_string(),
        ),
        ("system", include_str!("../plugins/system.toml").to_string()),
        (
            "core-api",
            include_str!("../plugins/core-api.toml").to_string(),
        ),
        (
            "clinvk-api",
            include_str!("../plugins/clinvk-api.toml").to_string(),
        ),
    ];
    manifests.push((
        "echo",
        "kind = \"backend\"\ncomponent = \"bundled:exec\"\nbinary = \"echo\"\nimports = [\"gantry:plugin/config\"]\n".into(),
    ));
    let setup = common::Setup::new(&manifests);
    add_user(&setup, "alice", "wes", false);
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
    assert!(ok, "users add: {out} {err}");
    let g = serve(&setup);
    let wes = token(&g, "wes").await;
    let rita = token(&g, "rita").await;

    for path in ["/v1/backends", "/api/v1/backends"] {
        let (status, _, body) = call(&g, "GET", path, Some(&wes), Value::Null, &[]).await;
        assert_eq!(status, 200, "{path} with a writer's token: {body}");
        let (status, _, body) = call(&g, "GET", path, Some(&rita), Value::Null, &[]).await;
        assert_eq!(status, 403, "{path} with a reader's token: {body}");
        let text = body.to_string();
        assert!(text.contains("write and execute"), "{path}: {text}");
        let (status, _, body) = call(&g, "GET", path, Some(ALICE), Value::Null, &[]).await;
        assert_eq!(status, 200, "{path} with the tenant's key: {body}");
    }
    // The reader cannot start anything there either.
    let prompt = json!({ "backend": "echo", "prompt": "hi" });
    let (status, _, body) = call(&g, "POST", "/api/v1/prompt", Some(&rita), prompt, &[]).await;
    assert_eq!(status, 403, "{body}");
    // The reader's token still works where users are told apart.
    let (status, _, body) = call(&g, "GET", "/api/projects", Some(&rita), Value::Null, &[]).await;
    assert_eq!(status, 200, "{body}");
}
