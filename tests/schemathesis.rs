//! schemathesis (pinned, from PyPI; installed by `tests/schemathesis/run.sh`) fuzzes every
//! surface gantry serves (`/v1`, CLK, clinvk, the Web UI API's users and tokens, and the
//! node's own routes) against its own `/openapi.json`: no 5xx, and no answer the document
//! does not allow. At least 10,000 requests, counted by gantry itself.

mod common;

use common::{Client, Setup};
use std::path::PathBuf;

const OPS: &str = "ops-key-0123456789abcdef";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn plugin(file: &str) -> String {
    std::fs::read_to_string(root().join("plugins").join(file)).unwrap()
}

/// Requests answered, summed over every route, method and status of `/metrics`.
fn requests_answered(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("gantry_http_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let clk = plugin("clk.toml").replace(
        "binary = \"clk\"",
        &format!(
            "binary = {:?}",
            root().join("tests/fixtures/clk/clk").display().to_string()
        ),
    );
    let setup = Setup::new(&[
        ("system", plugin("system.toml")),
        ("clinvk-api", plugin("clinvk-api.toml")),
        ("core-api", plugin("core-api.toml")),
        ("clk-api", plugin("clk-api.toml")),
        ("webui-api", plugin("webui-api.toml")),
        ("clk", clk),
        // A trivial CLI, so that generated prompts naming it really run.
        ("echo", "kind = \"backend\"\ncomponent = \"bundled:exec\"\nbinary = \"echo\"\nimports = [\"gantry:plugin/config\"]\n[settings]\nargs = [\"{prompt}\"]\n".into()),
    ]);
    // The fuzzing tenant is an operator, so that /metrics is fuzzed (and read) too. Generated
    // runs end within seconds (the document's own example starts CLK's endless `loop`), so
    // that a case following a task's stream is never left waiting on the fuzzer's timeout.
    let settings = "operators = [\"ops\"]\n[tasks]\ndefault_timeout_ms = 2000\nmax_running_per_tenant = 16\n[http]\nuser_rate_limit_per_minute = 0\npublic_rate_limit_per_minute = 0\n";
    let g = setup.start_configured(settings, &format!("ops:{OPS}"));
    let base = format!("http://{}", g.addr);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .arg(root().join("tests/schemathesis/run.sh"))
            .args([base.as_str(), OPS])
            // Every surface but the fan-outs of clinvk (parallel, chain, compare), which run
            // several prompts per case.
            .env(
                "SCHEMATHESIS_INCLUDE",
                r"^/(v1/.*|api/(healthz|health.*|system/info|capabilities|workflows|workspaces.*|research.*|auth/.*|users.*|projects.*|tasks.*|queues/.*|sessions.*)|api/v1/(backends|sessions|prompt).*|health|metrics|openapi\.json)$",
            )
            .env("SCHEMATHESIS_MAX_EXAMPLES", "400")
            .output()
            .expect("running tests/schemathesis/run.sh")
    })
    .await
    .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis failed:\n{report}\ngantry log:\n{}",
        g.stderr()
    );
    assert!(report.contains("no failures"), "{report}");
    let ops = Client { g: &g, key: OPS };
    let (status, metrics) = ops.raw("/metrics", &[]).await;
    assert_eq!(status, 200, "{metrics}");
    let answered = requests_answered(&metrics);
    assert!(
        answered >= 10_000,
        "only {answered} requests were made:\n{report}"
    );
}
