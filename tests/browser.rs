//! The web UI in a real browser: the real binary on loopback serving the `ui` component beside
//! the APIs it speaks, `playwright-core` driving Debian's chromium headless, `axe-core` checking
//! accessibility. The suite itself is `tests/browser/suite.mjs`; this test makes what it needs
//! (users, backends, a fake agent that streams a captured Claude Code turn slowly), runs it, and
//! fails with its report. Screenshots are kept in `target/browser-artifacts/`.

mod common;

use common::agents::root;
use common::webui::{ALICE, PASSWORD, add_user};
use common::{Gantry, Setup};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `tests/browser/install.sh`: chromium, and the suite's npm packages; their node_modules.
fn install() -> PathBuf {
    let out = Command::new("bash")
        .arg(root().join("tests/browser/install.sh"))
        .output()
        .expect("running tests/browser/install.sh");
    assert!(
        out.status.success(),
        "tests/browser/install.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("install.sh prints its directory")
            .trim(),
    )
}

/// A stand-in `claude`: replays the captured turn `tests/fixtures/claude/tool.jsonl` a line
/// every 0.4 s (so output shows before the run ends) after writing a file in its workspace; a
/// prompt starting with "slow" first idles for a minute (for cancelling). Self-contained: the
/// task's sandbox sees no test fixtures.
fn fake_claude(dir: &Path) -> PathBuf {
    let turn = std::fs::read_to_string(root().join("tests/fixtures/claude/tool.jsonl")).unwrap();
    let mut script = String::from(
        "#!/bin/sh\n# The prompt is the last argument.\nfor last; do :; done\n\
         case \"$last\" in slow*) i=0; while [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done;; esac\n\
         mkdir -p src\nprintf 'fn main() {\\n    println!(\"hello\");\\n}\\n' > src/main.rs\n",
    );
    for line in turn.lines().filter(|l| !l.trim().is_empty()) {
        script.push_str("sleep 0.4\ncat <<'GANTRY_LINE'\n");
        script.push_str(line);
        script.push_str("\nGANTRY_LINE\n");
    }
    let path = dir.join("fake-claude");
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(script.as_bytes()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The bundled manifests the UI speaks to, a fake `claude`, an `echo` backend for the
/// playground's second column, and a backend whose CLI is missing (shown as down).
fn setup() -> Setup {
    let bundled = |name: &str| {
        (
            name.to_string(),
            std::fs::read_to_string(root().join("plugins").join(format!("{name}.toml"))).unwrap(),
        )
    };
    let bin = tempfile::tempdir().unwrap().keep();
    let claude = fake_claude(&bin);
    let manifests: Vec<(String, String)> = vec![
        bundled("ui"),
        bundled("system"),
        bundled("webui-api"),
        bundled("core-api"),
        bundled("clinvk-api"),
        (
            "claude".into(),
            format!(
                "kind = \"backend\"\ncomponent = \"bundled:claude\"\nbinary = {:?}\nimports = [\"gantry:plugin/config\"]\n",
                claude.display().to_string()
            ),
        ),
        (
            "echo".into(),
            "kind = \"backend\"\ncomponent = \"bundled:exec\"\nbinary = \"echo\"\nimports = [\"gantry:plugin/config\"]\n[settings]\nargs = [\"{prompt}\"]\n".into(),
        ),
        (
            "down".into(),
            "kind = \"backend\"\ncomponent = \"bundled:exec\"\nbinary = \"/nonexistent/agent-cli\"\nimports = [\"gantry:plugin/config\"]\n".into(),
        ),
    ];
    let refs: Vec<(&str, String)> = manifests
        .iter()
        .map(|(n, t)| (n.as_str(), t.clone()))
        .collect();
    Setup::new(&refs)
}

#[test]
fn the_web_ui_works_in_a_real_browser() {
    let modules = install();
    let setup = setup();
    add_user(&setup, "alice", "ada", true);
    let g: Gantry = setup.start_configured(
        // The suite polls and reconnects more than a person would.
        "[http]\nuser_rate_limit_per_minute = 6000\n",
        &format!("alice:{ALICE}"),
    );
    let artifacts = root().join("target/browser-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let out = Command::new("node")
        .arg(root().join("tests/browser/suite.mjs"))
        .env("GANTRY_URL", format!("http://{}", g.addr))
        .env("GANTRY_USER", "ada")
        .env("GANTRY_PASSWORD", PASSWORD)
        .env("GANTRY_API_KEY", ALICE)
        .env("GANTRY_BROWSER_MODULES", &modules)
        .env("GANTRY_ARTIFACTS", &artifacts)
        .env("GANTRY_KEY_FILE", setup.data().join("jwt-signing-keys"))
        .output()
        .expect("running node tests/browser/suite.mjs");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{report}");
    assert!(out.status.success(), "the browser suite failed:\n{report}");
}

/// The `ui` plugin over plain HTTP, no browser: each view's URL is the app, files carry an
/// ETag and are revalidated with 304, every answer has the strict CSP, the page loads nothing
/// from elsewhere, and nothing but the built-in files is served.
#[tokio::test]
async fn the_ui_is_served_offline_with_etags_and_a_strict_csp() {
    let setup = Setup::new(&[(
        "ui",
        std::fs::read_to_string(root().join("plugins/ui.toml")).unwrap(),
    )]);
    let g = setup.start();
    let csp_of = |headers: &hyper::HeaderMap| {
        headers
            .get("content-security-policy")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };

    let (status, headers, index) = g.get("/").await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = csp_of(&headers);
    assert!(
        csp.contains("default-src 'self'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert_eq!(headers["x-frame-options"], "DENY");
    let index = String::from_utf8(index.to_vec()).unwrap();
    assert!(
        !index.contains("http://") && !index.contains("https://") && !index.contains("//cdn"),
        "the page names another origin:\n{index}"
    );

    // Every view's URL is the same app, drawn in the browser.
    for view in [
        "/ui/",
        "/ui/projects",
        "/ui/projects/p-1/tasks/t-2",
        "/ui/sign-in",
    ] {
        let (status, _, body) = g.get(view).await;
        assert_eq!(status, 200, "{view}");
        assert_eq!(body, index.as_bytes(), "{view}");
    }

    // A file is revalidated: the same ETag gets 304 and no body.
    let (status, headers, script) = g.get("/ui/assets/app.js").await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .contains("javascript")
    );
    assert!(!script.is_empty());
    let etag = headers["etag"].to_str().unwrap().to_string();
    let (status, body) = g
        .call("GET", "/ui/assets/app.js", &[("if-none-match", &etag)], "")
        .await;
    assert_eq!(status, 304);
    assert!(body.is_empty());
    let (status, body) = g
        .call(
            "GET",
            "/ui/assets/app.js",
            &[("if-none-match", "\"stale\"")],
            "",
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, script);

    // /docs is the explorer page.
    let (status, headers, body) = g.get("/docs").await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(String::from_utf8_lossy(&body).contains("docs.js"));

    // Nothing else: an unknown name is 404 (with the CSP); a path with dot segments is
    // refused by the host before the plugin runs.
    let (status, headers, _) = g.get("/ui/assets/nope.js").await;
    assert_eq!(status, 404);
    assert!(csp_of(&headers).contains("default-src 'self'"));
    for path in ["/ui/assets/../../Cargo.toml", "/ui/assets/%2e%2e/build.rs"] {
        let (status, _, body) = g.get(path).await;
        assert!(
            status == 403 || status == 404,
            "{path}: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    let response = g.send("POST", "/", "").await;
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET, HEAD");
}
