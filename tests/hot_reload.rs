//! Reloading the plugin directory while serving (`gantry serve --watch`, SIGHUP): the new
//! version serves within a second with no failed request under a steady load, requests in
//! flight finish on the version they started on, and a broken version is refused while the
//! one serving keeps serving.

mod common;

use common::{Gantry, Setup, test_component};
use http_body_util::BodyExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MANIFEST: &str = "kind = \"handler\"\ncomponent = \"app.wasm\"\nroutes = [\"/t/...\"]\nimports = [\"gantry:plugin\"]\n";

/// Which component answered: the test handler (`A`) or the plain hello component (`B`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    A,
    B,
}

/// The clients of the steady load.
const CLIENTS: usize = 6;

/// One request of the load: which client sent it, when it was answered, and how.
type Answer = (usize, Instant, Result<Version, String>);

/// Put `component`'s bytes at `to` in one step, as a deploy would (a rename).
fn install(component: &str, to: &Path) {
    let tmp = to.with_extension("partial");
    std::fs::copy(test_component(component), &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

/// The node's own routes, for /health's list of plugins.
const SYSTEM: &str = "kind = \"handler\"\ncomponent = \"bundled:system\"\nroutes = [{ path = \"/health\", public = true }]\nimports = [\"gantry:plugin/host-info\", \"gantry:plugin/backends\", \"gantry:plugin/metrics\", \"gantry:plugin/identity\"]\n";

fn setup() -> Setup {
    let setup = Setup::new(&[
        ("app", MANIFEST.to_string()),
        ("system", SYSTEM.to_string()),
    ]);
    install("test-handler", &setup.plugins().join("app.wasm"));
    setup
}

/// GET /t/whoami: which version answered, or what went wrong.
async fn which(g: &Gantry) -> Result<Version, String> {
    let (status, body) = g.call("GET", "/t/whoami", &[], "").await;
    let body = String::from_utf8_lossy(&body).into_owned();
    match status.as_u16() {
        200 if body.starts_with("hello from /t/whoami") => Ok(Version::B),
        200 if body.contains("\"tenant\"") => Ok(Version::A),
        _ => Err(format!("{status}: {body}")),
    }
}

/// Wait for `needle` in the log, up to `limit`, without holding up the runtime.
async fn log_shows(g: &Gantry, needle: &str, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if g.stderr().contains(needle) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_reload_under_load_fails_no_request_and_refuses_a_broken_component() {
    let setup = setup();
    let mut cmd = setup.command();
    cmd.arg("--watch");
    let g = Arc::new(Gantry::spawn(cmd));
    assert_eq!(which(&g).await, Ok(Version::A));

    // A steady load: six clients, each a request every few milliseconds.
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|worker| {
            let (g, stop, seen) = (g.clone(), stop.clone(), seen.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let answer = which(&g).await;
                    seen.lock().unwrap().push((worker, Instant::now(), answer));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    // A stream started on the old version, still running through the reload.
    let stream = g.send("GET", "/t/stream?lines=25&interval_ms=40", "").await;
    assert_eq!(stream.status(), 200);
    // Counted, not timed: the load has run for a while before each step.
    let answered = |seen: &Arc<Mutex<Vec<Answer>>>| seen.lock().unwrap().len();
    let at_least = |n: usize| {
        let seen = seen.clone();
        async move {
            while answered(&seen) < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let load_started = Instant::now();
    at_least(100).await;

    let swapped = Instant::now();
    install("wasi-hello", &setup.plugins().join("app.wasm"));
    let first_b = loop {
        let found = seen
            .lock()
            .unwrap()
            .iter()
            .find(|(_, at, v)| *at > swapped && *v == Ok(Version::B))
            .map(|(_, at, _)| *at);
        if let Some(at) = found {
            break at;
        }
        assert!(
            swapped.elapsed() < Duration::from_secs(20),
            "the new version never served:\n{}",
            g.stderr()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let after_swap = answered(&seen);
    at_least(after_swap + 100).await;
    let took = first_b - swapped;
    println!(
        "the new version served {} ms after it was installed",
        took.as_millis()
    );
    assert!(took < Duration::from_secs(1), "{took:?}");

    // The stream finished whole on the version it started on.
    let body = stream.into_body().collect().await.unwrap().to_bytes();
    let expected: String = (0..25).map(|i| format!("line {i}\n")).collect();
    assert_eq!(String::from_utf8_lossy(&body), expected);

    // A broken component (written in place, not renamed) is refused; B keeps serving.
    std::fs::write(setup.plugins().join("app.wasm"), b"\0asm but not really").unwrap();
    assert!(
        log_shows(&g, "reload refused", Duration::from_secs(20)).await,
        "{}",
        g.stderr()
    );
    let refused_at = Instant::now();
    let so_far = answered(&seen);
    at_least(so_far + 100).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }

    let seen = seen.lock().unwrap();
    println!(
        "{} requests in {} ms",
        seen.len(),
        load_started.elapsed().as_millis()
    );
    let failed: Vec<_> = seen.iter().filter(|(_, _, v)| v.is_err()).collect();
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    // Each client saw A, then B, never A again: one atomic swap.
    for worker in 0..CLIENTS {
        let versions: Vec<Version> = seen
            .iter()
            .filter(|(w, _, _)| *w == worker)
            .map(|(_, _, v)| v.clone().unwrap())
            .collect();
        let switch = versions
            .iter()
            .position(|v| *v == Version::B)
            .unwrap_or(versions.len());
        assert!(
            versions[switch..].iter().all(|v| *v == Version::B),
            "worker {worker} went back: {versions:?}"
        );
    }
    assert!(
        seen.iter()
            .filter(|(_, at, _)| *at > refused_at)
            .all(|(_, _, v)| *v == Ok(Version::B))
    );
    let log = g.stderr();
    assert!(log.contains("app"), "the refusal names the plugin: {log}");
}

#[tokio::test]
async fn sighup_reloads_new_routes_and_a_conflicting_manifest_is_refused() {
    let setup = setup();
    let g = setup.start();
    assert_eq!(which(&g).await, Ok(Version::A));

    // Without --watch, a changed directory is not read until SIGHUP.
    install("wasi-hello", &setup.plugins().join("app.wasm"));
    std::fs::write(
        setup.plugins().join("other.toml"),
        format!(
            "kind = \"handler\"\ncomponent = {:?}\nroutes = [\"/w/...\"]\n",
            test_component("wasi-hello").display().to_string()
        ),
    )
    .unwrap();
    assert_eq!(which(&g).await, Ok(Version::A));
    let (status, _) = g.call("GET", "/w/x", &[], "").await;
    assert_eq!(status, 404);

    g.signal("HUP");
    assert!(
        log_shows(&g, "plugins reloaded", Duration::from_secs(20)).await,
        "{}",
        g.stderr()
    );
    assert_eq!(which(&g).await, Ok(Version::B));
    let (status, body) = g.call("GET", "/w/x", &[], "").await;
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8_lossy(&body), "hello from /w/x\n");
    let (_, health) = g.get_json("/health").await;
    let names: Vec<&str> = health["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["app", "other", "system"], "{health}");

    // A manifest whose route another plugin serves: refused, and both keep serving.
    std::fs::write(
        setup.plugins().join("thief.toml"),
        format!(
            "kind = \"handler\"\ncomponent = {:?}\nroutes = [\"/w/...\"]\n",
            test_component("wasi-hello").display().to_string()
        ),
    )
    .unwrap();
    g.signal("HUP");
    assert!(
        log_shows(&g, "reload refused", Duration::from_secs(20)).await,
        "{}",
        g.stderr()
    );
    assert!(g.stderr().contains("thief"), "{}", g.stderr());
    assert_eq!(which(&g).await, Ok(Version::B));
    let (status, _) = g.call("GET", "/w/x", &[], "").await;
    assert_eq!(status, 200);
}
