//! A task is a hostile tenant: the real gantry binary, two tenants, and a backend that runs
//! whatever shell script a tenant sends (`/bin/sh -c PROMPT`). Each test tries, as an attacker
//! would, to read, signal, reach or exhaust what is not the task's own.

mod common;

use common::{Client, Gantry, Setup};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ALICE: &str = "alice-key-0123456789abcdef";
const BOB: &str = "bob-key-0123456789abcdef0";
/// A model key that must reach the model server and nothing else.
const MODEL_KEY: &str = "sk-model-key-that-must-never-leak-4242";

/// The hostile backend: `sh -c PROMPT`, its key variable `TEST_MODEL_KEY`.
fn shell_manifest(model_upstream: Option<&str>) -> String {
    let upstream = model_upstream
        .map(|u| format!("model_upstream = {u:?}\n"))
        .unwrap_or_default();
    format!(
        "kind = \"backend\"\ncomponent = \"bundled:exec\"\nbinary = \"/bin/sh\"\n\
         imports = [\"gantry:plugin/config\"]\nenv = [\"TEST_MODEL_KEY\"]\n{upstream}\
         [settings]\nargs = [\"-c\", \"{{prompt}}\"]\n"
    )
}

struct Node {
    setup: Setup,
    g: Gantry,
}

impl Node {
    fn start(config: &str, model_upstream: Option<&str>) -> Node {
        let read = |f: &str| {
            std::fs::read_to_string(common::agents::root().join("plugins").join(f)).unwrap()
        };
        let setup = Setup::new(&[
            ("system", read("system.toml")),
            ("core-api", read("core-api.toml")),
            ("sh", shell_manifest(model_upstream)),
        ]);
        let config_path = setup.dir.path().join("gantry.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut cmd = setup.command();
        cmd.arg("--config")
            .arg(&config_path)
            .env("GANTRY_API_KEYS", format!("alice:{ALICE},bob:{BOB}"))
            .env("TEST_MODEL_KEY", MODEL_KEY);
        let g = Gantry::spawn(cmd);
        Node { setup, g }
    }

    fn client<'a>(&'a self, key: &'a str) -> Client<'a> {
        Client { g: &self.g, key }
    }

    fn data(&self) -> PathBuf {
        self.setup.data().canonicalize().unwrap()
    }
}

/// Start `script` for the tenant of `key` in a new workspace; the task's id and workspace.
async fn start(c: &Client<'_>, script: &str, timeout_ms: u64) -> (String, String) {
    let (status, ws) = c.call("POST", "/v1/workspaces", json!({"name": "w"})).await;
    assert_eq!(status, 201, "{ws}");
    let ws = ws["id"].as_str().unwrap().to_string();
    let (status, task) = c
        .call(
            "POST",
            "/v1/tasks",
            json!({"workspace_id": ws, "backend": "sh", "prompt": script, "timeout_ms": timeout_ms}),
        )
        .await;
    assert_eq!(status, 201, "{task}");
    (task["id"].as_str().unwrap().to_string(), ws)
}

/// Wait for the task's end: its record and its output lines (stdout and stderr).
async fn finish(c: &Client<'_>, task: &str) -> (Value, String) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, record) = c
            .call("GET", &format!("/v1/tasks/{task}"), Value::Null)
            .await;
        let state = record["state"].as_str().unwrap_or_default().to_string();
        if !["pending", "running"].contains(&state.as_str()) {
            let (_, log) = c
                .call(
                    "GET",
                    &format!("/v1/tasks/{task}/events?format=ndjson&follow=false"),
                    Value::Null,
                )
                .await;
            let text = log.as_str().unwrap_or_default();
            let lines: Vec<String> = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|e| e["kind"] == "stdout" || e["kind"] == "stderr")
                .map(|e| e["data"]["line"].as_str().unwrap_or_default().to_string())
                .collect();
            return (record, lines.join("\n"));
        }
        assert!(
            Instant::now() < deadline,
            "task {task} did not end: {record}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run(c: &Client<'_>, script: &str) -> (Value, String) {
    let (task, _) = start(c, script, 60_000).await;
    finish(c, &task).await
}

/// Host processes whose command line (arguments joined by spaces) satisfies `matches`.
fn processes(matches: impl Fn(&str) -> bool) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| matches(String::from_utf8_lossy(&c).replace('\0', " ").trim_end()))
        })
        .collect()
}

/// The `sleep MARKER…` processes.
fn sleeps(marker: &str) -> Vec<u32> {
    processes(|c| c.starts_with("sleep ") && c[6..].starts_with(marker))
}

/// Wait up to 10 s for `count` sleeps marked `marker`: the script says "started" as soon as it
/// has forked its children, and a child may not have exec'd `sleep` yet.
fn sleeps_running(marker: &str, count: usize) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let running = sleeps(marker);
        if running.len() >= count || Instant::now() > deadline {
            return running;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a command line has a number starting with `marker` as a word of its own (`sleep
/// 71024`, or a launcher's argument holding the script): not inside a longer word, as in the
/// hex name of a warm launcher's cgroup (`warm-…fab571022482…`), which a launcher that
/// belongs to no task may carry.
fn mentions(cmdline: &str, marker: &str) -> bool {
    cmdline
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|word| word.starts_with(marker) && word.bytes().all(|b| b.is_ascii_digit()))
}

/// Wait up to `limit` for no process (the task's shell, its launcher, its children) to
/// mention `marker`.
fn none_left(marker: &str, limit: Duration) -> Vec<u32> {
    let deadline = Instant::now() + limit;
    loop {
        let left = processes(|c| mentions(c, marker));
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Each of `pids` as `/proc` shows it (its stat line: state, parent, group; its command
/// line), for a failure's message.
fn described(pids: &[u32]) -> String {
    pids.iter()
        .map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            format!("\n{} | {cmdline}", stat.trim())
        })
        .collect()
}

#[test]
fn a_marker_is_found_as_a_word_not_inside_an_id() {
    assert!(mentions("sleep 71024", "7102"));
    assert!(mentions(
        "sh -c setsid sleep 71021 & (sleep 71022 &) ; echo",
        "7102"
    ));
    assert!(!mentions("sleep 71034", "7102"));
    // A warm launcher's cgroup that happened to hold the digits (seen in a failing run).
    assert!(!mentions(
        "gantry-sandbox __sandbox-warm --cgroup /sys/fs/cgroup/pids/gantry/warm-b9937533ef7c45fab571022482453f7a",
        "7102"
    ));
}

const FULL: &str = "isolation = \"full\"\n";

#[tokio::test]
async fn isolation_is_full_and_said_in_health() {
    let node = Node::start(FULL, None);
    // A caller with a key: without one, /health is the status alone.
    let (status, health) = Client {
        g: &node.g,
        key: ALICE,
    }
    .call("GET", "/health", Value::Null)
    .await;
    assert_eq!(status, 200);
    assert_eq!(health["sandbox"], "full", "{health}");
    assert!(
        node.g.stderr().contains("task isolation"),
        "{}",
        node.g.stderr()
    );
}

#[tokio::test]
async fn a_task_cannot_read_signal_or_reach_what_is_not_its_own() {
    let node = Node::start(FULL, None);
    let alice = node.client(ALICE);
    let bob = node.client(BOB);
    let data = node.data().display().to_string();
    // Alice has a workspace with a file, a home and a task running.
    let (_, out) = run(&alice, "echo alice-secret > notes.txt; pwd").await;
    let alice_ws = out.lines().last().unwrap().to_string();
    assert!(Path::new(&alice_ws).join("notes.txt").exists(), "{out}");
    let (alice_task, _) = start(&alice, "sleep 30; echo alice-survived", 60_000).await;
    let gantry = node.g.child.id();
    let port = node.g.addr.port();
    let script = format!(
        r#"
echo "uid=$(id -u) gid=$(id -g) groups=$(id -G)"
cat /proc/{gantry}/environ && echo BREACH gantry environ
cat /proc/1/environ | tr '\0' '\n' | grep -q GANTRY_API_KEYS && echo BREACH environ of pid 1
ls -A {data} | grep -v -x -e homes -e tmp -e workspaces && echo BREACH data dir
cat {data}/gantry.db > /dev/null && echo BREACH database
ls {alice_ws} && echo BREACH alice workspace
cat {alice_ws}/notes.txt && echo BREACH alice file
ls {data}/homes/alice && echo BREACH alice home
ls {data}/tmp | grep -v "^$(basename "$TMPDIR")$" && echo BREACH other temp dirs
ls /etc/ | grep -qx shadow && echo BREACH all of etc
ps_count=$(ls /proc | grep -c '^[0-9]')
echo "visible processes: $ps_count"
[ "$ps_count" -gt 10 ] && echo BREACH sees other processes
kill -0 {gantry} && echo BREACH can signal gantry
kill -STOP {gantry} && echo BREACH stopped gantry
kill -TERM -1
hostname evil && echo BREACH hostname
[ "$(hostname)" = evil ] && echo BREACH hostname changed
bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}' && echo BREACH reached gantry api
bash -c 'exec 3<>/dev/tcp/1.1.1.1/80' && echo BREACH reached the internet
touch /usr/bin/evil && echo BREACH wrote system dir
touch /evil && echo BREACH wrote root
env | grep -i -e gantry_api -e "{ALICE}" && echo BREACH keys in env
[ "$(ls /proc/self/fd | wc -l)" -gt 4 ] && echo BREACH inherited descriptors $(ls -l /proc/self/fd)
ip addr add 10.9.9.9/32 dev lo 2>/dev/null && echo BREACH changed its network
unshare -U true && echo BREACH nested user namespace
[ -e /dev/tty ] && echo BREACH a terminal device
echo finished
"#
    );
    let (record, out) = run(&bob, &script).await;
    assert!(out.contains("finished"), "{record}\n{out}");
    assert!(!out.contains("BREACH"), "{out}");
    assert!(!out.contains("uid=0"), "the task runs as root: {out}");
    assert!(!out.contains("alice-secret"), "{out}");
    // gantry is alive and serving, and Alice's task was not touched.
    let (status, _) = node.g.get_json("/health").await;
    assert_eq!(status, 200);
    let (_, record) = alice
        .call("GET", &format!("/v1/tasks/{alice_task}"), Value::Null)
        .await;
    assert_eq!(record["state"], "running", "{record}");
    alice
        .call(
            "POST",
            &format!("/v1/tasks/{alice_task}/cancel"),
            Value::Null,
        )
        .await;
}

#[tokio::test]
async fn the_task_may_still_do_its_work() {
    let node = Node::start(FULL, None);
    let alice = node.client(ALICE);
    let (record, out) = run(
        &alice,
        "set -e; mkdir -p src; echo hi > src/a.txt; cat src/a.txt; echo tmp > \"$TMPDIR/t\"; \
         cat \"$TMPDIR/t\"; echo home > \"$HOME/h\"; cat \"$HOME/h\"; echo scratch > /tmp/s; \
         ls /usr/bin/env >/dev/null; echo ok",
    )
    .await;
    assert_eq!(record["state"], "done", "{record}\n{out}");
    assert!(out.contains("hi\ntmp\nhome\nok"), "{out}");
    // The files are the workspace's, seen through the API.
    let ws = record["workspace_id"].as_str().unwrap();
    let (status, files) = alice
        .call("GET", &format!("/v1/workspaces/{ws}/files"), Value::Null)
        .await;
    assert_eq!(status, 200);
    assert!(files.to_string().contains("src/a.txt"), "{files}");
}

/// Children that leave the task's session or daemonise: `setsid`, a double fork, `nohup`.
fn escaping_script(marker: &str) -> String {
    format!(
        "setsid sleep {marker}1 & (sleep {marker}2 &) ; nohup sleep {marker}3 >/dev/null 2>&1 & \
         echo started; sleep {marker}4"
    )
}

async fn wait_started(c: &Client<'_>, task: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, log) = c
            .call(
                "GET",
                &format!("/v1/tasks/{task}/events?format=ndjson&follow=false"),
                Value::Null,
            )
            .await;
        if log.as_str().unwrap_or_default().contains("started") {
            return;
        }
        assert!(Instant::now() < deadline, "the task never started: {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn escaped_children_die_with_a_cancel_a_timeout_and_the_end() {
    let node = Node::start(FULL, None);
    let alice = node.client(ALICE);

    // Cancel.
    let (task, _) = start(&alice, &escaping_script("7101"), 600_000).await;
    wait_started(&alice, &task).await;
    assert_eq!(
        sleeps_running("7101", 4).len(),
        4,
        "the children are running"
    );
    let asked = Instant::now();
    alice
        .call("POST", &format!("/v1/tasks/{task}/cancel"), Value::Null)
        .await;
    let (record, _) = finish(&alice, &task).await;
    assert_eq!(record["state"], "cancelled");
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "cancel took {:?}",
        asked.elapsed()
    );
    let left = none_left("7101", Duration::from_secs(5));
    assert_eq!(left, Vec::<u32>::new(), "{}", described(&left));

    // Timeout.
    let (task, _) = start(&alice, &escaping_script("7102"), 1500).await;
    let (record, _) = finish(&alice, &task).await;
    assert_eq!(record["state"], "timed_out");
    let ran = record["finished_at"].as_u64().unwrap() - record["started_at"].as_u64().unwrap();
    assert!(ran < 15_000, "a 1.5 s timeout ended after {ran} ms");
    let left = none_left("7102", Duration::from_secs(5));
    assert_eq!(left, Vec::<u32>::new(), "{}", described(&left));

    // The task's own end: its program exits, what it started goes with it.
    let (record, _) = run(
        &alice,
        "setsid sleep 71031 & (sleep 71032 &); nohup sleep 71033 >/dev/null 2>&1 & echo bye",
    )
    .await;
    assert_eq!(record["state"], "done", "{record}");
    let left = none_left("7103", Duration::from_secs(5));
    assert_eq!(left, Vec::<u32>::new(), "{}", described(&left));
}

#[tokio::test]
async fn escaped_children_die_with_gantry() {
    for (how, marker) in [("TERM", "7201"), ("KILL", "7202")] {
        let mut node = Node::start(FULL, None);
        let alice = node.client(ALICE);
        let (task, _) = start(&alice, &escaping_script(marker), 600_000).await;
        wait_started(&alice, &task).await;
        assert_eq!(sleeps_running(marker, 4).len(), 4);
        node.g.signal(how);
        node.g
            .wait_exit(Duration::from_secs(40))
            .expect("gantry exits");
        let left = none_left(marker, Duration::from_secs(10));
        let seen = described(&left);
        // Never leave them to the rest of the suite.
        for pid in &left {
            // SAFETY: kill(2) on a positive pid found above.
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
        assert_eq!(left, Vec::<u32>::new(), "after gantry's {how}: {seen}");
    }
}

#[tokio::test]
async fn a_fork_bomb_is_capped_and_a_memory_hog_is_killed() {
    let config = format!("{FULL}[sandbox]\npids_max = 64\nmemory_max_bytes = 67108864\n");
    let node = Node::start(&config, None);
    let alice = node.client(ALICE);
    let bob = node.client(BOB);

    // The bomb runs for its timeout; meanwhile gantry and the other tenant are served.
    let (bomb, _) = start(&alice, "b() { b | b & }; b; sleep 7301", 4000).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, _) = node.g.get_json("/health").await;
    assert_eq!(status, 200);
    let (record, out) = run(&bob, "echo bob-is-fine").await;
    assert_eq!(record["state"], "done", "{out}");
    let (record, _) = finish(&alice, &bomb).await;
    // Timed out, or failed when the bomb left the script no process to run `sleep` with.
    assert!(
        ["timed_out", "failed"].contains(&record["state"].as_str().unwrap()),
        "{record}"
    );
    let left = none_left("7301", Duration::from_secs(5));
    assert_eq!(left, Vec::<u32>::new(), "{}", described(&left));

    // 64 MiB is the limit; the shell keeps a 300 MB command substitution in memory.
    let (record, out) = run(
        &alice,
        "x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo survived",
    )
    .await;
    assert_eq!(record["state"], "failed", "{record}\n{out}");
    assert!(
        !out.contains("survived") || record["error"].as_str().is_some(),
        "{out}"
    );
    assert!(
        record["error"]
            .as_str()
            .unwrap_or_default()
            .contains("out of memory"),
        "{record}"
    );
}

/// A loopback HTTP server that answers every request with what it received; the requests
/// it saw are kept.
struct Origin {
    port: u16,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Origin {
    /// Echoes each request back.
    fn start() -> Origin {
        Origin::start_with(true)
    }

    /// Answers `ok`, echoing nothing (a model server: what it got must not show in output).
    fn quiet() -> Origin {
        Origin::start_with(false)
    }

    fn start_with(echo: bool) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 65536];
                    let mut got = Vec::new();
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&got).into_owned();
                    log.lock().unwrap().push(text.clone());
                    let body = if echo {
                        format!("origin saw:\n{text}")
                    } else {
                        "ok".to_string()
                    };
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        Origin { port, seen }
    }

    fn seen(&self) -> String {
        self.seen.lock().unwrap().join("\n---\n")
    }
}

#[tokio::test]
async fn egress_goes_only_where_the_allowlist_says() {
    let allowed = Origin::start();
    let other = Origin::start();
    let config = format!("{FULL}[egress]\nallow = [\"127.0.0.1:{}\"]\n", allowed.port);
    let node = Node::start(&config, None);
    let alice = node.client(ALICE);
    let script = format!(
        "curl -sS --noproxy '' -x \"$HTTP_PROXY\" http://127.0.0.1:{a}/through-proxy; echo; \
         curl -sS -o /dev/null -w 'unlisted %{{http_code}}\\n' --noproxy '' -x \"$HTTP_PROXY\" http://127.0.0.1:{o}/unlisted; \
         curl -sS -o /dev/null -w 'public %{{http_code}}\\n' --noproxy '' -x \"$HTTP_PROXY\" http://example.com/; \
         curl -sS --max-time 3 http://127.0.0.1:{a}/direct && echo BREACH direct; \
         curl -sS --max-time 3 http://127.0.0.1:{o}/direct && echo BREACH direct other; \
         echo finished",
        a = allowed.port,
        o = other.port
    );
    let (record, out) = run(&alice, &script).await;
    assert!(out.contains("finished"), "{record}\n{out}");
    assert!(
        out.contains("GET /through-proxy"),
        "the allowed origin answered: {out}"
    );
    assert!(out.contains("unlisted 403"), "{out}");
    assert!(out.contains("public 403"), "{out}");
    assert!(!out.contains("BREACH"), "{out}");
    assert!(allowed.seen().contains("/through-proxy"));
    assert!(!allowed.seen().contains("/direct"));
    assert_eq!(other.seen(), "", "the unlisted origin saw nothing");
    // Every connection is logged with its tenant and task.
    let task = record["id"].as_str().unwrap();
    assert!(
        node.g
            .stderr()
            .lines()
            .any(|l| l.contains("egress") && l.contains("alice") && l.contains(task)),
        "{}",
        node.g.stderr()
    );
}

#[tokio::test]
async fn the_model_key_reaches_the_model_and_nothing_else() {
    let model = Origin::quiet();
    let upstream = format!("http://127.0.0.1:{}", model.port);
    let node = Node::start(FULL, Some(&upstream));
    let alice = node.client(ALICE);
    let script = "env; echo \"argv: $0 $*\"; \
        curl -sS -H \"x-api-key: $TEST_MODEL_KEY\" http://127.0.0.1:3128/v1/messages; echo; \
        curl -sS -o /dev/null -w 'wrong token %{http_code}\\n' -H 'x-api-key: guess' http://127.0.0.1:3128/v1/messages; \
        grep -rs sk-model-key \"$HOME\" \"$TMPDIR\" /tmp /etc \"$PWD\" /proc/self/environ; \
        curl -sS -o /dev/null -w 'egress to the model host %{http_code}\\n' --noproxy '' \
          -x \"$HTTP_PROXY\" http://127.0.0.1:$MODEL_PORT/through-egress; \
        echo finished";
    let script = script.replace("$MODEL_PORT", &model.port.to_string());
    let (record, out) = run(&alice, &script).await;
    assert!(out.contains("finished"), "{record}\n{out}");
    // The model API's host is on the task's allowlist by default, without the key.
    assert!(out.contains("egress to the model host 200"), "{out}");
    assert!(model.seen().contains("GET /through-egress"));
    assert!(
        out.contains("TEST_MODEL_KEY=gantry-task-"),
        "the task holds a token: {out}"
    );
    assert!(out.contains("wrong token 401"), "{out}");
    let seen = model.seen();
    assert!(
        seen.to_lowercase()
            .contains(&format!("x-api-key: {MODEL_KEY}").to_lowercase()),
        "the model server got the key gantry added: {seen}"
    );
    assert!(
        !seen.contains("gantry-task-"),
        "the token never leaves gantry: {seen}"
    );
    assert_eq!(
        seen.matches("GET /v1/messages").count(),
        1,
        "the wrong token got nowhere"
    );
    // Not in the task's environment, files or output, nor in its record, gantry's log or
    // the database.
    assert!(!out.contains(MODEL_KEY), "{out}");
    assert!(!record.to_string().contains(MODEL_KEY));
    assert!(
        !node.g.stderr().contains(MODEL_KEY),
        "the key in gantry's log"
    );
    let db_dir = node.data();
    for entry in std::fs::read_dir(&db_dir).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("gantry.db")
        {
            let bytes = std::fs::read(&path).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains(MODEL_KEY), "the key in {}", path.display());
        }
    }
}

#[tokio::test]
async fn several_tenants_need_full_isolation_or_an_explicit_weak() {
    // No namespaces: partial isolation. Refused for two tenants without isolation = "weak".
    let read =
        |f: &str| std::fs::read_to_string(common::agents::root().join("plugins").join(f)).unwrap();
    let setup = Setup::new(&[("system", read("system.toml"))]);
    let config_path = setup.dir.path().join("gantry.toml");
    std::fs::write(&config_path, "[sandbox]\nnamespaces = false\n").unwrap();
    let out = setup
        .command()
        .arg("--config")
        .arg(&config_path)
        .env("GANTRY_API_KEYS", format!("alice:{ALICE},bob:{BOB}"))
        .stdout(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("isolation = \"weak\""), "{stderr}");
    assert!(stderr.contains("partial"), "{stderr}");

    std::fs::write(
        &config_path,
        "isolation = \"weak\"\n[sandbox]\nnamespaces = false\n",
    )
    .unwrap();
    let mut cmd = setup.command();
    cmd.arg("--config")
        .arg(&config_path)
        .env("GANTRY_API_KEYS", format!("alice:{ALICE},bob:{BOB}"));
    let g = Gantry::spawn(cmd);
    let (_, health) = Client { g: &g, key: ALICE }
        .call("GET", "/health", Value::Null)
        .await;
    assert!(
        health["sandbox"]
            .as_str()
            .unwrap()
            .starts_with("partial: no namespaces"),
        "{health}"
    );
}

/// Whether every directory above `path` lets others through (so another user can run it).
fn reachable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.ancestors()
        .skip(1)
        .all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

fn chown_tree(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_tree(&entry.unwrap().path(), uid);
        }
    }
}

#[tokio::test]
async fn an_unprivileged_gantry_sandboxes_its_tasks_too() {
    // SAFETY: a plain getter.
    if unsafe { libc::geteuid() } != 0 || !reachable_by_others(Path::new(common::gantry_bin())) {
        eprintln!("skipped: starting gantry as another user needs root and a reachable binary");
        return;
    }
    const NOBODY: u32 = 65534;
    let read =
        |f: &str| std::fs::read_to_string(common::agents::root().join("plugins").join(f)).unwrap();
    let setup = Setup::new(&[
        ("system", read("system.toml")),
        ("core-api", read("core-api.toml")),
        ("sh", shell_manifest(None)),
    ]);
    std::fs::create_dir_all(setup.data()).unwrap();
    chown_tree(setup.dir.path(), NOBODY);
    let mut cmd = setup.command();
    std::os::unix::process::CommandExt::uid(&mut cmd, NOBODY);
    std::os::unix::process::CommandExt::gid(&mut cmd, NOBODY);
    cmd.env("HOME", setup.dir.path());
    let g = Gantry::spawn(cmd);
    let (_, health) = g.get_json("/health").await;
    let level = health["sandbox"].as_str().unwrap().to_string();
    // Namespaces need no privilege; cgroups do, unless delegated to this user.
    assert!(
        level == "full" || (level.starts_with("partial") && !level.contains("namespaces")),
        "{level}"
    );
    // One tenant (no keys), so gantry serves; its tasks run as its own uid, and still cannot
    // read its data or see it.
    let data = setup.data().canonicalize().unwrap().display().to_string();
    let gantry = g.child.id();
    let script = format!(
        "echo uid=$(id -u); ls -A {data} | grep -v -x -e homes -e tmp -e workspaces && echo BREACH data; \
         cat {data}/gantry.db >/dev/null && echo BREACH db; kill -0 {gantry} && echo BREACH signal; \
         cat /proc/{gantry}/environ && echo BREACH environ; echo finished"
    );
    let body = json!({"name": "w"}).to_string();
    let (status, ws) = g.call("POST", "/v1/workspaces", &[], &body).await;
    assert_eq!(status, 201);
    let ws: Value = serde_json::from_slice(&ws).unwrap();
    let body = json!({"workspace_id": ws["id"], "backend": "sh", "prompt": script}).to_string();
    let (status, task) = g.call("POST", "/v1/tasks", &[], &body).await;
    assert_eq!(status, 201);
    let task: Value = serde_json::from_slice(&task).unwrap();
    let id = task["id"].as_str().unwrap();
    let (_, log) = g
        .call(
            "GET",
            &format!("/v1/tasks/{id}/events?format=ndjson"),
            &[],
            "",
        )
        .await;
    let log = String::from_utf8_lossy(&log);
    assert!(log.contains("finished"), "{log}");
    assert!(!log.contains("BREACH"), "{log}");
    assert!(log.contains("uid=1000"), "{log}");
}

#[tokio::test]
async fn a_model_upstream_the_proxy_cannot_use_refuses_the_task() {
    // It passes the manifest's shape check, but carries credentials in its URL.
    let node = Node::start(FULL, Some("http://user@127.0.0.1:9"));
    let alice = node.client(ALICE);
    let (_, ws) = alice
        .call("POST", "/v1/workspaces", json!({"name": "w"}))
        .await;
    let (status, body) = alice
        .call(
            "POST",
            "/v1/tasks",
            json!({"workspace_id": ws["id"], "backend": "sh", "prompt": "echo never"}),
        )
        .await;
    assert!((400..500).contains(&status), "{status} {body}");
    assert!(body.to_string().contains("model upstream"), "{body}");
    let (_, tasks) = alice.call("GET", "/v1/tasks", Value::Null).await;
    assert_eq!(tasks["tasks"], json!([]), "nothing was started: {tasks}");
}

/// The launchers kept ready for `gantry_pid` (its `__sandbox-warm` children): each one's pid
/// and `--cgroup` directories.
fn warm_launchers(gantry_pid: u32) -> Vec<(u32, Vec<String>)> {
    processes(|c| c.contains(" __sandbox-warm "))
        .into_iter()
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // The parent is the fourth field, after the command in parentheses.
            let after = stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or("");
            after.split(' ').nth(1) == Some(&gantry_pid.to_string())
        })
        .map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<String> = String::from_utf8_lossy(&cmdline)
                .split('\0')
                .map(str::to_string)
                .collect();
            let dirs = args
                .windows(2)
                .filter(|w| w[0] == "--cgroup")
                .map(|w| w[1].clone())
                .collect();
            (pid, dirs)
        })
        .collect()
}

/// Wait up to 10 s for `count` launchers ready beside `node`.
fn warm_ready(node: &Node, count: usize) -> Vec<(u32, Vec<String>)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let warm = warm_launchers(node.g.child.id());
        if warm.len() == count {
            return warm;
        }
        assert!(
            Instant::now() < deadline,
            "{} warm launchers, not {count}",
            warm.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The children of `parent`: their pids and one-letter states (`Z`: exited, not reaped).
fn children(parent: u32) -> Vec<(u32, char)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let mut after = stat.rsplit_once(") ")?.1.split(' ');
            let state = after.next()?.chars().next()?;
            (after.next()? == parent.to_string()).then_some((pid, state))
        })
        .collect()
}

#[tokio::test]
async fn a_sandboxed_task_ends_with_its_programs_status_and_all_its_output() {
    let node = Node::start(FULL, None);
    let c = node.client(ALICE);
    // The status comes from the launcher's report, before its namespaces are torn down; the
    // output is whole all the same (it ends when the task's last process is gone).
    let (record, out) = run(
        &c,
        "i=0; while [ $i -lt 3000 ]; do i=$((i+1)); echo line$i; done; echo err >&2; exit 7",
    )
    .await;
    assert_eq!(record["state"], "failed", "{record}");
    assert_eq!(record["exit_code"], 7, "{record}");
    // Standard output in order; standard error, a pipe of its own, anywhere among it.
    let stdout: Vec<&str> = out.lines().filter(|l| *l != "err").collect();
    let expected: Vec<String> = (1..=3000).map(|i| format!("line{i}")).collect();
    assert_eq!(stdout, expected);
    assert_eq!(out.lines().filter(|l| *l == "err").count(), 1);
    let (record, out) = run(&c, "echo before; kill -KILL $$").await;
    assert_eq!(record["state"], "failed", "{record}");
    assert!(
        record["exit_code"].is_null(),
        "killed by a signal: {record}"
    );
    assert_eq!(out, "before");
    let (record, out) = run(&c, "(sleep 30; echo late) & echo main").await;
    assert_eq!(record["state"], "done", "{record}");
    assert_eq!(out, "main", "what the program left behind went with it");

    // Each task's launcher ended by itself and was reaped: none is left, not even exited.
    let gantry = node.g.child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let warm: Vec<u32> = warm_launchers(gantry).into_iter().map(|(p, _)| p).collect();
        let others: Vec<(u32, char)> = children(gantry)
            .into_iter()
            .filter(|(pid, state)| !warm.contains(pid) || *state == 'Z')
            .collect();
        if others.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "launchers left behind: {others:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a task sees of its sandbox, one fact per line, and its cgroups last (`cgroup=` and a
/// line of `/proc/self/cgroup`).
const SANDBOX_FACTS: &str = "echo uid=$(id -u) host=$(hostname) stdin=$(wc -c); \
     echo root=$(ls -d /bin /usr /tmp /home /root /data 2>/dev/null | tr '\\n' ,); \
     echo env=$(env | cut -d= -f1 | sort | tr '\\n' ,); \
     echo etc=$(ls -A /etc | tr '\\n' ,) dev=$(ls -A /dev | tr '\\n' ,); \
     echo written=$(for p in /etc/x /dev/x /usr/x /dev/shm/x /tmp/x; do \
       touch $p 2>/dev/null && printf %s, $p; done)$(echo >/dev/null && echo null); \
     echo etc-mount=$(awk '$5==\"/etc\"{print $4}' /proc/self/mountinfo); \
     sed 's/^/cgroup=/' /proc/self/cgroup";

#[tokio::test]
async fn a_warm_launcher_gives_a_task_the_same_sandbox_a_cold_one_does() {
    let warm = Node::start(FULL, None);
    let cold = Node::start(&format!("{FULL}[sandbox]\nwarm_launchers = 0\n"), None);
    let ready: Vec<Vec<String>> = warm_ready(&warm, 2).into_iter().map(|(_, d)| d).collect();
    assert!(
        ready.iter().all(|dirs| !dirs.is_empty()),
        "each warm launcher has its cgroup: {ready:?}"
    );
    assert!(warm_launchers(cold.g.child.id()).is_empty());

    let (record, warm_out) = run(&warm.client(ALICE), SANDBOX_FACTS).await;
    assert_eq!(record["state"], "done", "{record}\n{warm_out}");
    let (cold_record, cold_out) = run(&cold.client(ALICE), SANDBOX_FACTS).await;
    assert_eq!(cold_record["state"], "done", "{cold_record}\n{cold_out}");

    // The same walls either way: the task uid, its own hostname, /dev/null for input, the
    // same minimal root and the same environment names.
    let facts = |out: &str| {
        out.lines()
            .filter(|l| !l.starts_with("cgroup=") && !l.starts_with("etc-mount="))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(facts(&warm_out), facts(&cold_out));
    // Only the system entries and the harmless devices, read-only but for /dev/shm and /tmp.
    assert!(
        warm_out.contains(",hosts,")
            && warm_out.contains(",passwd,")
            && !warm_out.contains("shadow"),
        "{warm_out}"
    );
    assert!(
        warm_out.contains(" dev=fd,full,null,random,shm,stderr,stdin,stdout,urandom,zero,\n"),
        "{warm_out}"
    );
    assert!(
        warm_out.contains("\nwritten=/dev/shm/x,/tmp/x,null\n"),
        "{warm_out}"
    );
    // The warm launcher bound the system entries while it waited (onto the skeleton in the
    // data directory); the cold one bound them one by one into its own tmpfs.
    let etc_mount = |out: &str| {
        let line = out.lines().find(|l| l.starts_with("etc-mount="));
        line.unwrap_or_default()
            .trim_start_matches("etc-mount=")
            .to_string()
    };
    let warm_etc = etc_mount(&warm_out);
    assert!(
        warm_etc.contains("/sandbox-skeleton-") && warm_etc.ends_with("/etc"),
        "{warm_out}"
    );
    assert_eq!(etc_mount(&cold_out), "", "{cold_out}");
    assert!(
        warm_out.starts_with("uid=1000 host=gantry-task stdin=0\nroot=/bin,/tmp,/usr,\n"),
        "the task uid, its hostname, no input, and none of /home, /root or /data: {warm_out}"
    );
    // The warm task ran in a cgroup made before it existed; the cold one in its own.
    let cgroup = |out: &str| {
        let line = out.lines().find(|l| l.contains(":pids:"));
        line.unwrap_or_default().to_string()
    };
    let warm_cgroup = cgroup(&warm_out);
    let taken = ready
        .iter()
        .find(|dirs| {
            dirs.iter().any(|dir| {
                dir.starts_with("/sys/fs/cgroup/pids")
                    && warm_cgroup.ends_with(dir.trim_start_matches("/sys/fs/cgroup/pids"))
            })
        })
        .unwrap_or_else(|| panic!("{warm_cgroup} is not one of {ready:?}"));
    // ... and in every one of that launcher's cgroups, not only its pids one: the directory
    // each line of the task's `/proc/self/cgroup` names (`N:controller:/path`, or `0::/path`
    // on v2).
    let in_cgroups: Vec<String> = warm_out
        .lines()
        .filter_map(|l| l.strip_prefix("cgroup="))
        .filter_map(|l| {
            let mut fields = l.splitn(3, ':');
            let (_, controller, path) = (fields.next()?, fields.next()?, fields.next()?);
            Some(match controller {
                "" => format!("/sys/fs/cgroup{path}"),
                c => format!("/sys/fs/cgroup/{c}{path}"),
            })
        })
        .collect();
    for dir in taken {
        assert!(
            in_cgroups.contains(dir),
            "the task is not in {dir}: {in_cgroups:?}"
        );
    }
    let task = cold_record["id"].as_str().unwrap();
    assert!(cgroup(&cold_out).contains(task), "{cold_out}");

    // The one taken is replaced, and the task's cgroup is gone with it.
    let replaced = warm_ready(&warm, 2);
    assert!(
        replaced
            .iter()
            .flat_map(|(_, dirs)| dirs)
            .all(|dir| !warm_cgroup.ends_with(dir.trim_start_matches("/sys/fs/cgroup/pids"))),
        "{replaced:?}"
    );

    // A launcher whose init dies while it waits ends too, rather than wait to fail a task.
    let (monitor, _) = replaced[0].clone();
    let init = processes(|c| c.contains(" __sandbox-warm "))
        .into_iter()
        .find(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let after = stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or("");
            after.split(' ').nth(1) == Some(&monitor.to_string())
        })
        .expect("the waiting launcher's init");
    assert!(init > 1);
    // SAFETY: kill(2) on one process (a pid > 1), the launcher's init.
    unsafe { libc::kill(init as i32, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while warm_launchers(warm.g.child.id())
        .iter()
        .any(|(p, _)| *p == monitor)
    {
        assert!(Instant::now() < deadline, "a launcher outlived its init");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Launchers killed while they wait are no use: the next task starts its own, and the
    // pool fills again.
    let listed = warm_launchers(warm.g.child.id());
    for (pid, _) in replaced
        .iter()
        .filter(|(p, _)| listed.iter().any(|(l, _)| l == p))
    {
        assert!(*pid > 1);
        // SAFETY: kill(2) on one process (a pid > 1), gantry's child.
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while replaced.iter().any(|(pid, _)| {
        warm_launchers(warm.g.child.id())
            .iter()
            .any(|(p, _)| p == pid)
    }) {
        assert!(Instant::now() < deadline, "killed launchers still there");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (record, out) = run(&warm.client(ALICE), "echo still runs").await;
    assert_eq!(record["state"], "done", "{record}\n{out}");
    assert!(out.contains("still runs"), "{out}");
    let refilled = warm_ready(&warm, 2);

    // A gantry killed outright: its waiting launchers end and remove their cgroups.
    let waiting: Vec<String> = refilled.into_iter().flat_map(|(_, d)| d).collect();
    let pid = warm.g.child.id();
    drop(warm);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !warm_launchers(pid).is_empty() || waiting.iter().any(|d| Path::new(d).exists()) {
        assert!(
            Instant::now() < deadline,
            "launchers or their cgroups outlived gantry: {waiting:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A warm launcher driven directly, without gantry (Landlock and rlimits only, and once in
/// its namespaces): started with its sync socket, it says it is ready, then runs the job it
/// is sent, or ends quietly when the socket closes, or refuses a job it cannot run.
mod warm_launcher {
    use gantry::tasks::sandbox::warm::{Job, READY, WARM_ARG};
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command, Stdio};

    fn start() -> (Child, UnixStream) {
        start_with(&[])
    }

    /// A warm launcher started with `launch` before its socket (`--layers …`).
    fn start_with(launch: &[&str]) -> (Child, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let fd = theirs.as_raw_fd();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gantry-sandbox"));
        cmd.arg(WARM_ARG)
            .args(launch)
            .args(["--sync", &fd.to_string()])
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: fcntl on a descriptor this test holds, in the child before exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        drop(theirs);
        let mut ready = [0u8];
        (&ours).read_exact(&mut ready).unwrap();
        assert_eq!(ready[0], READY);
        (child, ours)
    }

    fn job(program: &str, args: &[&str], stdin: bool) -> Job {
        let mut launch: Vec<std::ffi::OsString> = ["--write", "/tmp", "--", program]
            .iter()
            .map(Into::into)
            .collect();
        launch.extend(args.iter().map(Into::into));
        Job {
            args: launch,
            env: vec!["PATH=/usr/bin:/bin".into(), "GREETING=hi".into()],
            cwd: "/tmp".into(),
            stdin,
        }
    }

    fn finish(mut child: Child) -> (i32, String, String) {
        let mut out = String::new();
        let mut err = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (child.wait().unwrap().code().unwrap_or(-1), out, err)
    }

    #[test]
    fn it_runs_its_job_with_the_input_environment_and_directory_sent() {
        let (mut child, socket) = start();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"from stdin\n")
            .unwrap();
        let script = "cat; echo \"$GREETING $(pwd)\"";
        (&socket)
            .write_all(&job("/bin/sh", &["-c", script], true).encode())
            .unwrap();
        let (code, out, err) = finish(child);
        assert_eq!((code, out.as_str()), (0, "from stdin\nhi /tmp\n"), "{err}");
    }

    #[test]
    fn without_input_the_program_reads_dev_null_not_the_pipe() {
        let (mut child, socket) = start();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"not for the program\n").unwrap();
        (&socket)
            .write_all(&job("/bin/sh", &["-c", "wc -c"], false).encode())
            .unwrap();
        let (code, out, err) = finish(child);
        assert_eq!((code, out.trim()), (0, "0"), "{err}");
    }

    #[test]
    fn a_closed_socket_ends_it_quietly_and_a_bad_job_is_refused() {
        let (child, socket) = start();
        drop(socket);
        let (code, out, err) = finish(child);
        assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""));

        let (child, socket) = start();
        (&socket).write_all(&[5, 0, 0, 0, 1, 2]).unwrap();
        drop(socket);
        let (code, _, err) = finish(child);
        assert_eq!(code, 127, "{err}");
        assert!(err.contains("gantry sandbox:"), "{err}");

        // Namespaces or cgroups in a job for a launcher made without them: refused, nothing run.
        let (child, socket) = start();
        let mut with_cgroup = job("/bin/sh", &["-c", "echo ran"], false);
        with_cgroup
            .args
            .splice(0..0, ["--cgroup", "/sys/fs/cgroup/pids"].map(Into::into));
        (&socket).write_all(&with_cgroup.encode()).unwrap();
        let (code, out, err) = finish(child);
        assert_eq!((code, out.as_str()), (127, ""), "{err}");
        assert!(err.contains("namespaces or cgroups"), "{err}");
    }

    /// A launcher already in its namespaces (as gantry keeps them ready, root here as in
    /// CI) refuses a job made for other namespaces, or one naming a cgroup of its own, and
    /// runs nothing.
    #[test]
    fn a_namespaced_launcher_refuses_a_job_for_other_walls() {
        let layers = ["--layers", "user,pid,mount,net"];
        // Its job names no namespaces: not what the launcher is.
        let (child, socket) = start_with(&layers);
        (&socket)
            .write_all(&job("/bin/sh", &["-c", "echo ran"], false).encode())
            .unwrap();
        let (code, out, err) = finish(child);
        assert_eq!((code, out.as_str()), (127, ""), "{err}");
        assert!(err.contains("a job for namespaces"), "{err}");
        // The same namespaces, but a cgroup of its own: the cgroup is the launcher's.
        let (child, socket) = start_with(&layers);
        let mut with_cgroup = job("/bin/sh", &["-c", "echo ran"], false);
        with_cgroup.args.splice(
            0..0,
            [
                "--layers",
                "user,pid,mount,net",
                "--cgroup",
                "/sys/fs/cgroup/pids",
            ]
            .map(Into::into),
        );
        (&socket).write_all(&with_cgroup.encode()).unwrap();
        let (code, out, err) = finish(child);
        assert_eq!((code, out.as_str()), (127, ""), "{err}");
        assert!(err.contains("no cgroup or socket"), "{err}");
    }

    /// In its namespaces, the launcher runs its job's program with the job's status, or says
    /// on the task's stderr why the program could not run (the start that shares the init's
    /// memory reports the child's error through it).
    #[test]
    fn a_namespaced_launcher_runs_its_program_or_says_why_it_could_not() {
        let layers = ["--layers", "user,pid,mount,net"];
        let in_namespaces = |program: &str, args: &[&str]| {
            let mut job = job(program, args, false);
            job.args.splice(
                0..0,
                [
                    "--layers",
                    "user,pid,mount,net",
                    "--uid",
                    "61234",
                    "--gid",
                    "61234",
                    "--read",
                    "/usr",
                    "--read",
                    "/bin",
                    "--read",
                    "/lib",
                    "--read",
                    "/lib64",
                ]
                .map(Into::into),
            );
            job
        };
        let (child, socket) = start_with(&layers);
        let script = "echo \"ran as $(id -u) in $(pwd)\"; exit 3";
        (&socket)
            .write_all(&in_namespaces("/bin/sh", &["-c", script]).encode())
            .unwrap();
        let (code, out, err) = finish(child);
        assert_eq!((code, out.as_str()), (3, "ran as 1000 in /tmp\n"), "{err}");

        let (child, socket) = start_with(&layers);
        (&socket)
            .write_all(&in_namespaces("/nowhere/at/all", &[]).encode())
            .unwrap();
        let (code, out, err) = finish(child);
        assert_eq!((code, out.as_str()), (127, ""), "{err}");
        assert!(
            err.contains("cannot run /nowhere/at/all: No such file or directory"),
            "{err}"
        );
    }
}
