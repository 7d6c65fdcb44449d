//! The real agent CLIs and the fake model server they talk to, for black-box tests.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

/// The project's root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The bin directory of the installed CLIs (installed once per test binary).
pub fn cli_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = Command::new("bash")
            .arg(root().join("tests/agent-clis/install.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("running tests/agent-clis/install.sh");
        assert!(out.status.success(), "installing the agent CLIs failed");
        let stdout = String::from_utf8(out.stdout).unwrap();
        PathBuf::from(stdout.lines().last().expect("the bin directory").trim())
    })
}

/// The fake model server on a free port; killed on drop.
pub struct FakeModel {
    child: Child,
    pub url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl FakeModel {
    pub fn start() -> FakeModel {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("requests.jsonl");
        let mut child = Command::new("python3")
            .arg(root().join("tests/fake-model/server.py"))
            .args(["--port", "0", "--slow-interval", "0.5"])
            .arg("--log")
            .arg(&log)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the fake model server");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let url = first
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("fake model server said {first:?}"))
            .to_string();
        FakeModel {
            child,
            url,
            log,
            _dir: dir,
        }
    }

    /// Every request it received so far.
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which CLI, and the variable its key is read from.
#[derive(Clone, Copy, Debug)]
pub struct Cli {
    pub name: &'static str,
    pub key_env: &'static str,
}

pub const CLAUDE: Cli = Cli {
    name: "claude",
    key_env: "ANTHROPIC_API_KEY",
};
pub const CODEX: Cli = Cli {
    name: "codex",
    key_env: "OPENAI_API_KEY",
};
pub const GEMINI: Cli = Cli {
    name: "gemini",
    key_env: "GEMINI_API_KEY",
};

/// The manifest of `cli`'s bundled adapter, driving the installed CLI against `fake`.
pub fn backend_manifest(cli: Cli, fake: &FakeModel) -> String {
    format!(
        "kind = \"backend\"\ncomponent = \"bundled:{name}\"\nbinary = {binary:?}\nimports = [\"gantry:plugin/config\"]\nenv = [{key:?}]\n[settings]\nbase_url = {url:?}\napi_key_env = {key:?}\n",
        name = cli.name,
        binary = cli_bin().join(cli.name).display().to_string(),
        key = cli.key_env,
        url = fake.url,
    )
}

/// The text of every request body the fake server received, as JSON text.
pub fn bodies(fake: &FakeModel) -> Vec<String> {
    fake.requests()
        .iter()
        .map(|r| r["body"].to_string())
        .collect()
}

/// Processes whose working directory is `dir`.
pub fn processes_in(dir: &Path) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|c| c == dir))
        .collect()
}
