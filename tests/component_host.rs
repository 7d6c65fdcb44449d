//! The component host, seen from outside: the real binary on loopback, real components.

mod common;

use common::{Gantry, Setup, assert_error, test_component, test_handler_manifest};
use http_body_util::BodyExt;
use std::time::Duration;

fn system() -> (&'static str, String) {
    (
        "system",
        "kind = \"handler\"\ncomponent = \"bundled:system\"\nroutes = [{ path = \"/health\", public = true }]\nimports = [\"gantry:plugin/host-info\", \"gantry:plugin/backends\", \"gantry:plugin/metrics\", \"gantry:plugin/identity\"]\n".to_string(),
    )
}

/// The test handler at `/t/...` with modest limits, and `/s/...` streaming without a
/// wall-clock limit.
fn test_handler() -> (&'static str, String) {
    (
        "test-handler",
        test_handler_manifest(
            r#"
routes = ["/t/...", { path = "/s/...", timeout_ms = 0 }, { path = "/short/...", timeout_ms = 300 }]
imports = ["gantry:plugin/config", "gantry:plugin/log", "gantry:plugin/identity"]
[limits]
memory_mb = 16
cpu_ms = 300
timeout_ms = 1000
[settings]
greeting = "hello"
retries = 3
"#,
        ),
    )
}

fn standard() -> Setup {
    Setup::new(&[system(), test_handler()])
}

/// Serving: `ok`, or `degraded` where a bundled backend's CLI is not installed here.
async fn assert_healthy(g: &Gantry) {
    let (status, body) = g.get_json("/health").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        matches!(body["status"].as_str(), Some("ok" | "degraded")),
        "{body}"
    );
}

#[tokio::test]
async fn health_reports_version_uptime_and_plugins() {
    let setup = standard();
    let g = setup.start();
    let (status, body) = g.get_json("/health").await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["uptime_seconds"].as_f64().unwrap() >= 0.0);
    let plugins = body["plugins"].as_array().unwrap();
    let names: Vec<_> = plugins
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["system", "test-handler"]);
    assert_eq!(plugins[0]["kind"], "handler");
    assert_eq!(plugins[0]["routes"], serde_json::json!(["/health"]));
}

#[tokio::test]
async fn a_plain_wasi_http_component_is_mounted_and_served() {
    let hello = (
        "hello",
        format!(
            "kind = \"handler\"\ncomponent = {:?}\nroutes = [\"/hello/...\"]\n",
            test_component("wasi-hello").display().to_string()
        ),
    );
    let setup = Setup::new(&[system(), hello]);
    let g = setup.start();
    let (status, _, body) = g.get("/hello/world?x=1").await;
    assert_eq!(status, 200);
    assert_eq!(body, "hello from /hello/world?x=1\n");
    assert_healthy(&g).await;
}

#[tokio::test]
async fn unrouted_and_dotted_paths_get_json_errors() {
    let setup = standard();
    let g = setup.start();
    let (status, body) = g.get_json("/nowhere").await;
    assert_eq!(status, 404);
    assert_error(&body, "no_route", None);
    let (status, body) = g.get_json("/t/../health").await;
    assert_eq!(status, 403);
    assert_error(&body, "bad_path", None);
    // Prefix routes: the longest match serves; the handler sees the whole path.
    let response = g.send("POST", "/t/echo", "ping").await;
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["method"], "POST");
    assert_eq!(body["path"], "/t/echo");
    assert_eq!(body["body"], "ping");
}

#[tokio::test]
async fn trap_is_500_and_the_server_keeps_serving() {
    let setup = standard();
    let g = setup.start();
    for _ in 0..3 {
        let (status, body) = g.get_json("/t/trap").await;
        assert_eq!(status, 500);
        assert_error(&body, "plugin_trap", Some("test-handler"));
    }
    assert_healthy(&g).await;
    // The panic message reached the log, tagged with the plugin.
    assert!(
        g.wait_for_log("test-handler asked to trap", Duration::from_secs(5)),
        "{}",
        g.stderr()
    );
}

#[tokio::test]
async fn busy_loop_hits_the_cpu_deadline_with_504() {
    let setup = standard();
    let g = setup.start();
    let (status, body) = g.get_json("/t/loop").await;
    assert_eq!(status, 504);
    assert_error(&body, "plugin_deadline", Some("test-handler"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("300 ms of CPU"),
        "{body}"
    );
    assert_healthy(&g).await;
}

#[tokio::test]
async fn memory_bomb_hits_the_memory_cap_with_500() {
    let setup = standard();
    let g = setup.start();
    let (status, body) = g.get_json("/t/oom").await;
    assert_eq!(status, 500);
    assert_error(&body, "plugin_memory_limit", Some("test-handler"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("16 MiB"),
        "{body}"
    );
    assert_healthy(&g).await;
}

#[tokio::test]
async fn waiting_is_not_cpu_time_but_the_wall_clock_limit_holds() {
    let setup = standard();
    let g = setup.start();
    // 600 ms asleep is twice the CPU budget, and fine: sleeping uses no CPU.
    let (status, body) = g.get_json("/t/sleep?ms=600").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["slept_ms"], 600);
    // The /short/... route allows 300 ms of wall-clock time.
    let (status, body) = g.get_json("/short/sleep?ms=5000").await;
    assert_eq!(status, 504);
    assert_error(&body, "plugin_timeout", Some("test-handler"));
    assert_healthy(&g).await;
}

#[tokio::test]
async fn over_capacity_is_503_with_retry_after() {
    let setup = standard();
    let config = setup.dir.path().join("gantry.toml");
    std::fs::write(&config, "[runtime]\nmax_instances = 2\n").unwrap();
    let mut cmd = setup.command();
    cmd.arg("--config").arg(&config);
    let g = Gantry::spawn(cmd);
    let slow = || g.get_json("/s/sleep?ms=2000");
    let both = async { tokio::join!(slow(), slow()) };
    let probe = async {
        // Once both slots are taken (both sleeps have begun), a third request is refused.
        while g.stderr().matches("sleep of 2000 ms begins").count() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (status, headers, body) = g.get("/health").await;
        assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
        (headers, body)
    };
    let ((a, b), (headers, body)) = tokio::join!(both, probe);
    assert_eq!(a.0, 200);
    assert_eq!(b.0, 200);
    assert_eq!(headers.get("retry-after").unwrap(), "1");
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_error(&body, "over_capacity", Some("system"));
    // Once the slots are free, it serves again.
    assert_healthy(&g).await;
}

#[tokio::test]
async fn concurrent_requests_each_get_their_own_instance() {
    let setup = standard();
    let g = setup.start();
    let requests = (0..40).map(|i| {
        let g = &g;
        async move {
            let response = g.send("POST", "/t/echo", &format!("req-{i}")).await;
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["body"], format!("req-{i}"));
        }
    });
    futures::future::join_all(requests).await;
}

#[tokio::test]
async fn streams_arrive_as_written_and_outlive_the_plugin_timeout() {
    let setup = standard();
    let g = setup.start();
    // 20 lines, 100 ms apart: two seconds, twice the plugin's 1 s wall-clock limit, on a route
    // that has none.
    let response = g
        .send("GET", "/s/stream?lines=20&interval_ms=100", "")
        .await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    let first = String::from_utf8_lossy(&first).into_owned();
    assert!(first.starts_with("line 0\n"), "{first:?}");
    assert!(
        !first.contains("line 19"),
        "the body was buffered, not streamed: {first:?}"
    );
    let rest = body.collect().await.unwrap().to_bytes();
    let all = first + &String::from_utf8_lossy(&rest);
    let expected: String = (0..20).map(|i| format!("line {i}\n")).collect();
    assert_eq!(all, expected);
    // The same stream on the time-limited route is cut off.
    let response = g
        .send("GET", "/t/stream?lines=20&interval_ms=100", "")
        .await;
    assert_eq!(response.status(), 200);
    let cut = response.into_body().collect().await;
    assert!(
        cut.is_err(),
        "a stream past its wall-clock limit must end incomplete"
    );
    assert!(g.wait_for_log("plugin_timeout", Duration::from_secs(5)));
}

/// A handler that lets its response go unanswered, at once or while it goes on, and one that
/// answers with an error code: each a 500 that says which, and no instance left behind.
#[tokio::test]
async fn an_unanswered_or_refused_request_is_a_500_that_says_which() {
    let setup = standard();
    let g = setup.start();
    for path in ["/t/silent", "/t/silent?ms=300"] {
        let started = std::time::Instant::now();
        let (status, body) = g.get_json(path).await;
        assert_eq!(status, 500, "{path}: {body}");
        assert_error(&body, "plugin_no_response", Some("test-handler"));
        if path.ends_with("300") {
            // The answer waits for the call's end, which says why there was none.
            assert!(started.elapsed() >= Duration::from_millis(300), "{path}");
        }
    }
    let (status, body) = g.get_json("/t/refuse").await;
    assert_eq!(status, 500, "{body}");
    assert_error(&body, "plugin_error", Some("test-handler"));
    assert!(
        body.to_string().contains("refused on request"),
        "the guest's error code is in the message: {body}"
    );
    // Only the health call itself holds an instance.
    only_the_health_call_is_live(&g).await;
}

/// Wait (up to 5 s) until the health call asking is the only live instance.
async fn only_the_health_call_is_live(g: &Gantry) {
    let mut active = serde_json::Value::Null;
    for _ in 0..100 {
        let (_, health) = g.get_json("/health").await;
        active = health["active_instances"].clone();
        if active == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(active, 1, "an instance outlived its call");
}

#[tokio::test]
async fn a_client_that_goes_away_ends_the_call() {
    let setup = standard();
    let g = setup.start();
    let response = g
        .send("GET", "/s/stream?lines=100000&interval_ms=10", "")
        .await;
    let mut body = response.into_body();
    body.frame().await.unwrap().unwrap();
    let (_, during) = g.get_json("/health").await;
    assert_eq!(during["active_instances"], 2, "{during}");
    drop(body);
    // The streaming instance is gone soon after; only the health call itself remains.
    only_the_health_call_is_live(&g).await;
}

#[tokio::test]
async fn config_and_log_host_interfaces() {
    let setup = standard();
    let g = setup.start();
    let (status, body) = g.get_json("/t/config?key=greeting").await;
    assert_eq!(status, 200);
    assert_eq!(body["value"], "hello");
    assert_eq!(
        body["entries"],
        serde_json::json!([["greeting", "hello"], ["retries", "3"]])
    );
    let (_, body) = g.get_json("/t/config?key=missing").await;
    assert_eq!(body["value"], serde_json::Value::Null);
    let (status, _) = g.get_json("/t/log?message=marker-7d1f").await;
    assert_eq!(status, 200);
    assert!(g.wait_for_log("marker-7d1f", Duration::from_secs(5)));
    let line = g
        .stderr()
        .lines()
        .find(|l| l.contains("marker-7d1f"))
        .unwrap()
        .to_string();
    assert!(line.contains("test-handler"), "{line}");
}

#[tokio::test]
async fn second_start_loads_compiled_components_from_the_cache() {
    let setup = standard();
    let mut g = setup.start();
    assert_healthy(&g).await;
    let first = g.stderr();
    assert_eq!(
        first.matches("compiled-component cache miss").count(),
        2,
        "{first}"
    );
    g.terminate();
    assert!(g.wait_exit(Duration::from_secs(10)).unwrap().success());
    let g = setup.start();
    assert_healthy(&g).await;
    let second = g.stderr();
    assert_eq!(
        second.matches("compiled-component cache hit").count(),
        2,
        "{second}"
    );
    assert!(!second.contains("cache miss"), "{second}");
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits() {
    let setup = standard();
    let mut g = setup.start();
    let addr = g.addr;
    let slow = g.get_json("/s/sleep?ms=1500");
    let stop = async {
        // Wait until the slow request is in flight (it and this probe are live), then stop.
        for _ in 0..100 {
            let (_, health) = g.get_json("/health").await;
            if health["active_instances"] == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        g.terminate();
    };
    let ((status, body), ()) = tokio::join!(slow, stop);
    assert_eq!(status, 200, "{body}");
    let exit = g
        .wait_exit(Duration::from_secs(10))
        .expect("gantry exits after draining");
    assert!(exit.success(), "{exit}");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    assert!(
        g.stderr().contains("all connections drained"),
        "{}",
        g.stderr()
    );
}

#[tokio::test]
async fn sigint_stops_the_server_too() {
    let setup = standard();
    let mut g = setup.start();
    assert_healthy(&g).await;
    g.signal("INT");
    // The log says whether shutdown waited on a connection (a rare flake seen once in CI).
    let exit = g
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("gantry did not exit on SIGINT; its log:\n{}", g.stderr()));
    assert!(exit.success(), "{exit}");
    assert!(g.stderr().contains("SIGINT received"), "{}", g.stderr());
}

#[tokio::test]
async fn flags_beat_environment_beats_config_file() {
    let setup = standard();
    let config = setup.dir.path().join("gantry.toml");
    // The file's address is unusable; the environment's must win over it.
    std::fs::write(
        &config,
        "addr = \"192.0.2.1:1\"\nplugins = \"/nonexistent\"\n",
    )
    .unwrap();
    let mut cmd = std::process::Command::new(common::gantry_bin());
    cmd.arg("serve")
        .env("GANTRY_CONFIG", &config)
        .env("GANTRY_ADDR", "127.0.0.1:0")
        .env("GANTRY_DATA_DIR", setup.data())
        .env("GANTRY_PLUGINS", "/also-nonexistent")
        .arg("--plugins")
        .arg(setup.plugins());
    let g = Gantry::spawn(cmd);
    assert!(g.addr.ip().is_loopback());
    assert_healthy(&g).await;
}

#[test]
fn without_a_plugin_directory_the_bundled_plugins_serve() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(common::gantry_bin());
    cmd.current_dir(dir.path())
        .args(["serve", "--addr", "127.0.0.1:0"])
        .env_remove("GANTRY_PLUGINS")
        .env_remove("GANTRY_DATA_DIR")
        .env_remove("GANTRY_CONFIG");
    let g = Gantry::spawn(cmd);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(assert_healthy(&g));
    // The default data directory is relative to the working directory.
    assert!(dir.path().join("data/cache").is_dir());
}

/// Start a server that must refuse to start; its stderr has one `error:` line.
fn startup_error(manifests: &[(&str, String)]) -> String {
    let setup = Setup::new(manifests);
    let (status, stderr) = setup.start_failure();
    assert!(!status.success(), "gantry started anyway: {stderr}");
    let errors: Vec<_> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    errors[0].to_string()
}

#[test]
fn an_ungranted_import_stops_startup_naming_plugin_and_import() {
    let manifest =
        test_handler_manifest("routes = [\"/t/...\"]\nimports = [\"gantry:plugin/log\"]");
    let line = startup_error(&[("test-handler", manifest)]);
    assert!(line.contains("plugin test-handler"), "{line}");
    assert!(line.contains("gantry:plugin/config@0.3.1"), "{line}");
    assert!(line.contains("does not grant"), "{line}");
}

#[test]
fn a_component_built_for_an_older_contract_is_refused_naming_the_version() {
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/plugin-0.2");
    let backend = format!(
        "kind = \"backend\"\ncomponent = {:?}\nbinary = \"echo\"\nimports = [\"gantry:plugin/config\"]\n",
        fixtures.join("test_backend.wasm").display().to_string()
    );
    let line = startup_error(&[("old-backend", backend)]);
    assert!(line.contains("plugin old-backend"), "{line}");
    assert!(line.contains("built for gantry:plugin@0.2.0"), "{line}");
    assert!(line.contains("gantry:plugin@0.3.1"), "{line}");
    let handler = format!(
        "kind = \"handler\"\ncomponent = {:?}\nroutes = [\"/old/...\"]\nimports = [\"gantry:plugin/config\", \"gantry:plugin/log\", \"gantry:plugin/identity\"]\n",
        fixtures.join("test_handler.wasm").display().to_string()
    );
    let line = startup_error(&[("old-handler", handler)]);
    assert!(line.contains("built for gantry:plugin@0.2.0"), "{line}");
}

#[test]
fn a_component_of_the_wrong_world_stops_startup() {
    let manifest = format!(
        "kind = \"backend\"\ncomponent = {:?}\nbinary = \"echo\"\n",
        test_component("test-handler").display().to_string()
    );
    let line = startup_error(&[("misfit", manifest)]);
    assert!(line.contains("plugin misfit"), "{line}");
    assert!(
        line.contains("does not export gantry:plugin/adapter"),
        "{line}"
    );
}

#[test]
fn two_plugins_claiming_a_route_stop_startup() {
    let other = (
        "other",
        test_handler_manifest("routes = [\"/health\"]\nimports = [\"gantry:plugin\"]"),
    );
    let line = startup_error(&[system(), other]);
    assert!(
        line.contains("route /health is claimed by both plugin other and plugin system"),
        "{line}"
    );
}

#[test]
fn broken_manifests_and_components_stop_startup() {
    let line = startup_error(&[(
        "bad",
        "kind = \"handler\"\ncomponent = \"x.wasm\"\nroutes = [\"nope\"]\n".into(),
    )]);
    assert!(
        line.contains("bad.toml") && line.contains("must start with '/'"),
        "{line}"
    );
    let setup = Setup::new(&[(
        "junk",
        "kind = \"handler\"\ncomponent = \"junk.wasm\"\nroutes = [\"/j\"]\n".into(),
    )]);
    std::fs::write(setup.plugins().join("junk.wasm"), b"\0asm not really").unwrap();
    let (status, stderr) = setup.start_failure();
    assert!(!status.success());
    assert!(stderr.contains("compiling component"), "{stderr}");
    let line = startup_error(&[(
        "gone",
        "kind = \"handler\"\ncomponent = \"missing.wasm\"\nroutes = [\"/g\"]\n".into(),
    )]);
    assert!(line.contains("missing.wasm"), "{line}");
}

#[test]
fn backend_plugins_load_and_their_binary_is_checked() {
    let backend = |binary: &str| {
        format!(
            "kind = \"backend\"\ncomponent = {:?}\nbinary = {binary:?}\nimports = [\"gantry:plugin/config\"]\n",
            test_component("test-backend").display().to_string()
        )
    };
    let setup = Setup::new(&[system(), ("echo-backend", backend("/bin/echo"))]);
    let g = setup.start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_, body) = rt.block_on(g.get_json("/health"));
    assert_eq!(body["plugins"][0]["name"], "echo-backend");
    assert_eq!(body["plugins"][0]["kind"], "backend");
    let line = startup_error(&[("echo-backend", backend("cat"))]);
    assert!(
        line.contains("drives binary \"echo\", but its manifest declares \"cat\""),
        "{line}"
    );
}

fn plugin_check(arg: &str) -> (i32, String) {
    let out = std::process::Command::new(common::gantry_bin())
        .args(["plugin", "check", arg])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap(), text)
}

#[test]
fn plugin_check_says_which_world_a_component_fits() {
    let (code, out) = plugin_check(test_component("test-handler").to_str().unwrap());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("wasi:http/incoming-handler@0.2"), "{out}");
    let fits = out
        .lines()
        .find(|l| l.starts_with("world handler: fits, with imports = ["))
        .unwrap_or_else(|| panic!("{out}"));
    for grant in [
        "gantry:plugin/config",
        "gantry:plugin/log",
        "gantry:plugin/identity",
    ] {
        assert!(fits.contains(&format!("\"{grant}\"")), "{fits}");
    }
    assert!(
        out.contains("world backend: does not fit: does not export gantry:plugin/adapter"),
        "{out}"
    );

    let (code, out) = plugin_check(test_component("test-backend").to_str().unwrap());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("world backend: fits"), "{out}");
    assert!(out.contains("world handler: does not fit"), "{out}");

    let (code, out) = plugin_check("bundled:system");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("world handler: fits, with imports = [\"gantry:plugin/host-info\", \"gantry:plugin/identity\", \"gantry:plugin/backends\", \"gantry:plugin/metrics\"]"),
        "{out}"
    );

    for backend in ["exec", "claude", "codex", "gemini"] {
        let (code, out) = plugin_check(&format!("bundled:{backend}"));
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains("world backend: fits, with imports = [\"gantry:plugin/config\"]"),
            "{backend}: {out}"
        );
    }

    let junk = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(junk.path(), b"not wasm").unwrap();
    let (code, out) = plugin_check(junk.path().to_str().unwrap());
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("is not a WebAssembly component"), "{out}");
}
