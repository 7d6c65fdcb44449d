//! The black-box suites again, on PostgreSQL: the test binaries cargo built for this run, run
//! a second time with `GANTRY_TEST_STORE=postgres`, so that every setup of theirs serves from
//! a fresh database on the tests' cluster (`tests/common/postgres.rs`) instead of SQLite. One
//! build serves both stores. Suites that read SQLite's files themselves (`storage`), drive the
//! supervisor without a server (`tasks`), or test no store (`isolation`, `schemathesis`,
//! `browser`, the agent CLIs) are left to the SQLite run.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The suites that run on both stores.
const SUITES: &[&str] = &[
    "core_api",
    "clk_api",
    "clinvk_api",
    "tenants",
    "answers",
    "serving",
    "websocket",
    "webui_auth",
    "webui_board",
    "webui_commands",
    "webui_sessions",
    "webui_webhooks",
    "webui_ws",
];

/// The newest test binary cargo built for `suite` beside this one (`NAME-HASH`).
fn binary(deps: &Path, suite: &str) -> Option<PathBuf> {
    let prefix = format!("{suite}-");
    std::fs::read_dir(deps)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix(&prefix)
                .is_some_and(|hash| hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()))
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .max()
        .map(|(_, path)| path)
}

#[test]
fn the_black_box_suites_pass_on_postgres() {
    // Started once here rather than raced for by the suites' first tests.
    common::postgres::cluster();
    let me = std::env::current_exe().unwrap();
    let deps = me.parent().unwrap();
    let mut failed = Vec::new();
    for suite in SUITES {
        let Some(bin) = binary(deps, suite) else {
            panic!(
                "no test binary for {suite} beside {}: build every suite first (cargo test --workspace does)",
                me.display()
            );
        };
        let out = Command::new(&bin)
            .env("GANTRY_TEST_STORE", "postgres")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("running a test binary");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let summary = stdout
            .lines()
            .rev()
            .find(|l| l.starts_with("test result"))
            .unwrap_or("no result line")
            .to_string();
        println!("{suite} on postgres: {summary}");
        if !out.status.success() {
            failed.push(format!(
                "{suite}:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "suites failed on PostgreSQL:\n{}",
        failed.join("\n\n")
    );
}
