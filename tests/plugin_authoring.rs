//! Plugin authors' path from an empty directory, outside gantry's tree: `gantry plugin new`
//! makes a project, its one documented command builds it, `gantry plugin test` replays a
//! backend's transcripts (and fails with a readable diff when the events differ),
//! `gantry plugin record` captures a real run, and a new handler — in Rust, and in JavaScript
//! through componentize-js from npm — is served by `gantry serve`.

mod common;

use common::{Gantry, gantry_bin};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Run `gantry ARGS` in `dir`.
fn gantry(dir: &Path, args: &[&str]) -> Output {
    Command::new(gantry_bin())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running gantry")
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `gantry plugin new KIND NAME` in a fresh directory outside the tree, built with the
/// command its README documents. Projects share one target directory (a symlink in each),
/// so that the SDK's dependencies are compiled once per test run, not once per project.
fn new_project(kind: &str, name: &str) -> (tempfile::TempDir, PathBuf) {
    let parent = tempfile::tempdir().unwrap();
    let out = gantry(parent.path(), &["plugin", "new", kind, name]);
    assert!(out.status.success(), "{}", text(&out));
    let project = parent.path().join(name);
    let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
    let build = "cargo build --release --target wasm32-wasip2";
    assert!(readme.contains(build), "{readme}");
    let shared = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-projects");
    std::fs::create_dir_all(&shared).unwrap();
    std::os::unix::fs::symlink(&shared, project.join("target")).unwrap();
    let mut words = build.split(' ');
    let out = Command::new(words.next().unwrap())
        .args(words)
        .current_dir(&project)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("running cargo");
    assert!(out.status.success(), "building {name}: {}", text(&out));
    (parent, project)
}

#[test]
fn a_new_backend_builds_and_its_transcripts_replay_with_a_readable_diff_on_a_mismatch() {
    let (_parent, project) = new_project("backend", "my-cli");
    let lib = std::fs::read_to_string(project.join("src/lib.rs")).unwrap();
    assert!(lib.lines().count() <= 60, "{lib}");

    // The template's own test passes from the project's directory.
    let out = gantry(&project, &["plugin", "test"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 of 1 transcript files as expected"),
        "{}",
        text(&out)
    );

    // A transcript whose events differ from its expected file: exit 1 and a unified diff.
    let tests = project.join("tests");
    std::fs::write(
        tests.join("changed.transcript"),
        "{\"request\": {\"prompt\": \"say hello\"}}\n{\"stdout\": \"say goodbye\"}\n{\"exit\": 0}\n",
    )
    .unwrap();
    std::fs::copy(tests.join("hello.expected"), tests.join("changed.expected")).unwrap();
    let out = gantry(&project, &["plugin", "test"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("FAIL "), "{stdout}");
    assert!(stdout.contains("changed.expected\n+++ actual"), "{stdout}");
    assert!(
        stdout.contains("-{\"text\":\"say hello\",\"type\":\"message\"}"),
        "{stdout}"
    );
    assert!(
        stdout.contains("+{\"text\":\"say goodbye\",\"type\":\"message\"}"),
        "{stdout}"
    );
    assert!(
        stdout.contains("1 of 2 transcript files as expected"),
        "{stdout}"
    );
    // Nothing was written over: the expected file is the author's.
    assert_eq!(
        std::fs::read(tests.join("changed.expected")).unwrap(),
        std::fs::read(tests.join("hello.expected")).unwrap()
    );
    std::fs::remove_file(tests.join("changed.transcript")).unwrap();
    std::fs::remove_file(tests.join("changed.expected")).unwrap();

    // A real run recorded, its expected file written by --update, then replayed as expected.
    let out = gantry(
        &project,
        &[
            "plugin",
            "record",
            "--prompt",
            "fail",
            "-o",
            "tests/failing.transcript",
            "--",
            "sh",
            "-c",
            "echo partial answer; echo 'Error: the model is down' >&2; exit 7",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let recorded = std::fs::read_to_string(tests.join("failing.transcript")).unwrap();
    assert_eq!(
        recorded,
        "{\"request\":{\"prompt\":\"fail\"}}\n{\"stdout\":\"partial answer\"}\n\
         {\"stderr\":\"Error: the model is down\"}\n{\"exit\":7}\n"
    );
    // A transcript with no expected file fails, and shows what the component made of it.
    let out = gantry(&project, &["plugin", "test"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("failing.expected (`gantry plugin test --update` writes it)"),
        "{stdout}"
    );
    assert!(stdout.contains("\"text\":\"partial answer\""), "{stdout}");
    let out = gantry(&project, &["plugin", "test", "--update"]);
    assert!(out.status.success(), "{}", text(&out));
    let expected = std::fs::read_to_string(tests.join("failing.expected")).unwrap();
    assert!(
        expected.contains(
            "\"error\":\"exited with status 7: Error: the model is down\",\"final_text\":\"partial answer\""
        ),
        "{expected}"
    );
    assert!(expected.contains("\"success\":false"), "{expected}");
    let out = gantry(&project, &["plugin", "test", "."]);
    assert!(out.status.success(), "{}", text(&out));

    // Bad input: a broken transcript is named with its line; nothing else is touched.
    std::fs::write(
        tests.join("broken.transcript"),
        "{\"stdout\": \"a\"}\n{\"stdin\": \"b\"}\n",
    )
    .unwrap();
    let out = gantry(&project, &["plugin", "test"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.transcript"), "{stderr}");
    assert!(stderr.contains("line 2: unknown key `stdin`"), "{stderr}");
    assert!(!tests.join("broken.expected").exists());
}

/// Serve the manifests of `project`'s `plugin/` directory alone.
fn serve_project(project: &Path) -> (tempfile::TempDir, Gantry) {
    let data = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(gantry_bin());
    cmd.args(["serve", "--addr", "127.0.0.1:0", "--plugins"])
        .arg(project.join("plugin"))
        .arg("--data-dir")
        .arg(data.path())
        .env_remove("GANTRY_CONFIG")
        .env_remove("GANTRY_API_KEYS")
        .env_remove("GANTRY_STORE");
    (data, Gantry::spawn(cmd))
}

#[tokio::test]
async fn a_new_javascript_handler_builds_with_npm_and_is_served() {
    let parent = tempfile::tempdir().unwrap();
    let out = gantry(
        parent.path(),
        &["plugin", "new", "handler", "greet-js", "--lang", "js"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let project = parent.path().join("greet-js");
    let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
    let build = "npm ci && npm run build";
    assert!(readme.contains(build), "{readme}");
    // The README's command line, as a reader would paste it.
    let out = Command::new("sh")
        .args(["-c", build])
        .current_dir(&project)
        .output()
        .expect("running npm (Node.js 20 or later)");
    assert!(out.status.success(), "building greet-js: {}", text(&out));
    let component = project.join("dist/greet-js.wasm");
    let out = gantry(&project, &["plugin", "check", component.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("world handler: fits, with imports = [\"gantry:plugin/identity\"]"),
        "{}",
        text(&out)
    );

    let out = gantry(&project, &["plugin", "test"]);
    assert!(out.status.success(), "{}", text(&out));

    let (_data, g) = serve_project(&project);
    let (status, body) = g.get_json("/greet-js/hello?name=you").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        serde_json::json!({"hello": "you", "tenant": "local", "lang": "javascript"})
    );
    let (status, body) = g.call("POST", "/greet-js/hello", &[], "").await;
    assert_eq!(status, 405, "{}", String::from_utf8_lossy(&body));
    // A Rust backend has no JavaScript template: the refusal says what to do instead.
    let out = gantry(
        parent.path(),
        &["plugin", "new", "backend", "b", "--lang", "js"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--lang rust"));
    assert!(!parent.path().join("b").exists());
}

#[tokio::test]
async fn a_new_handler_builds_fits_its_world_and_is_served() {
    let (_parent, project) = new_project("handler", "greet");
    let component = project.join("target/wasm32-wasip2/release/greet.wasm");
    let out = gantry(&project, &["plugin", "check", component.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("world handler: fits"),
        "{}",
        text(&out)
    );

    // Its requests, sent with no server: the template's pass, a changed answer is a diff.
    let out = gantry(&project, &["plugin", "test"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 of 1 requests files as expected"),
        "{}",
        text(&out)
    );
    let tests = project.join("tests");
    std::fs::write(
        tests.join("who.requests"),
        "{\"path\": \"/greet/hello?name=bob\", \"tenant\": \"bob\"}\n{\"path\": \"/elsewhere\"}\n",
    )
    .unwrap();
    std::fs::write(
        tests.join("who.expected"),
        "{\"body\":{\"hello\":\"bob\",\"tenant\":\"alice\"},\"content_type\":\"application/json\",\"request\":\"GET /greet/hello?name=bob\",\"status\":200}\n\
         {\"error\":\"no plugin serves this path\",\"request\":\"GET /elsewhere\"}\n",
    )
    .unwrap();
    let out = gantry(&project, &["plugin", "test"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("-{\"body\":{\"hello\":\"bob\",\"tenant\":\"alice\"}"),
        "{stdout}"
    );
    assert!(
        stdout.contains("+{\"body\":{\"hello\":\"bob\",\"tenant\":\"bob\"}"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("-{\"error\""),
        "only the changed answer differs: {stdout}"
    );
    // A bad requests file is named with its line.
    std::fs::write(tests.join("who.requests"), "{\"method\": \"GET\"}\n").unwrap();
    let out = gantry(&project, &["plugin", "test"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 1: a request needs a `path`"),
        "{}",
        text(&out)
    );

    let (_data, g) = serve_project(&project);
    let (status, body) = g.get_json("/greet/hello?name=you").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, serde_json::json!({"hello": "you", "tenant": "local"}));
    let (status, body) = g.get_json("/greet/nothing").await;
    assert_eq!(status, 404, "{body}");
}

#[test]
fn plugin_new_refuses_a_bad_name_and_an_existing_directory() {
    let parent = tempfile::tempdir().unwrap();
    let out = gantry(parent.path(), &["plugin", "new", "backend", "Bad Name"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot name a plugin"));
    std::fs::create_dir(parent.path().join("mine")).unwrap();
    let out = gantry(parent.path(), &["plugin", "new", "handler", "mine"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    assert_eq!(
        std::fs::read_dir(parent.path().join("mine"))
            .unwrap()
            .count(),
        0
    );
}

/// A handler's tests drive its tasks with a scripted backend: the backend's real adapter, in
/// the real sandbox, parsing output that a transcript scripts; answers that change from run
/// to run are redacted.
#[test]
fn a_handlers_tests_run_tasks_on_a_scripted_backend() {
    let project = tempfile::tempdir().unwrap();
    let dir = project.path();
    for sub in ["plugin", "tests/backends"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(
        dir.join("plugin/clinvk.toml"),
        "kind = \"handler\"\ncomponent = \"bundled:clinvk-api\"\n\
         routes = [{ path = \"/api/v1/...\", timeout_ms = 0 }]\n\
         imports = [\"gantry:plugin/workspaces\", \"gantry:plugin/tasks\", \"gantry:plugin/backends\", \"gantry:plugin/sessions\", \"gantry:plugin/config\"]\n",
    )
    .unwrap();
    // A backend whose program is not installed anywhere: the test scripts its runs.
    std::fs::write(
        dir.join("plugin/my-agent.toml"),
        "kind = \"backend\"\ncomponent = \"bundled:exec\"\nbinary = \"my-agent-cli\"\n\
         imports = [\"gantry:plugin/config\"]\n[settings]\nargs = [\"{prompt}\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("tests/backends/my-agent.transcript"),
        "{\"stdout\": \"thinking it's 6 * 7\"}\n{\"stderr\": \"a warning\"}\n{\"stdout\": \"the answer is 42\"}\n{\"exit\": 0}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("tests/prompt.requests"),
        "{\"method\": \"POST\", \"path\": \"/api/v1/prompt\", \"body\": {\"backend\": \"my-agent\", \"prompt\": \"what is the answer?\"}, \
         \"redact\": [\"/body/duration_ms\", \"/body/workspace_id\", \"/body/session_id\"]}\n",
    )
    .unwrap();

    let out = gantry(dir, &["plugin", "test", "--update"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("backend my-agent replays"),
        "{}",
        text(&out)
    );
    let expected = std::fs::read_to_string(dir.join("tests/prompt.expected")).unwrap();
    let answer: serde_json::Value = serde_json::from_str(expected.trim()).unwrap();
    assert_eq!(answer["status"], 200, "{expected}");
    assert_eq!(answer["body"]["output"], "the answer is 42", "{expected}");
    assert_eq!(answer["body"]["exit_code"], 0, "{expected}");
    assert_eq!(answer["body"]["duration_ms"], "[redacted]", "{expected}");
    // Run again: the same answer, whatever the run's id and duration.
    let out = gantry(dir, &["plugin", "test"]);
    assert!(out.status.success(), "{}", text(&out));
    // A different script is a different answer: the diff shows it.
    std::fs::write(
        dir.join("tests/backends/my-agent.transcript"),
        "{\"stdout\": \"the answer is 41\"}\n{\"exit\": 0}\n",
    )
    .unwrap();
    let out = gantry(dir, &["plugin", "test"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("the answer is 41"), "{stdout}");
}
