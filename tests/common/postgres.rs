//! PostgreSQL for the black-box tests: one throwaway cluster on loopback per machine, started
//! by `tests/postgres/cluster.sh` (which installs Debian's postgresql if it is missing) under
//! `target/postgres`, and a fresh database per test setup. No Docker.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The port of the tests' cluster (loopback only): below the kernel's ephemeral ports (32768
/// and up by default), so that no connection's own end can hold it when the cluster starts.
const PORT: u16 = 25433;

/// Whether the suite runs on PostgreSQL: `GANTRY_TEST_STORE=postgres`.
pub fn selected() -> bool {
    std::env::var("GANTRY_TEST_STORE").is_ok_and(|s| s == "postgres")
}

fn cluster_dir() -> PathBuf {
    super::agents::root().join("target/postgres")
}

/// The URL of the tests' cluster's `gantry` database, starting the cluster if it is not
/// running.
pub fn cluster() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let out = Command::new("bash")
            .arg(super::agents::root().join("tests/postgres/cluster.sh"))
            .arg("start")
            .arg(cluster_dir())
            .arg(PORT.to_string())
            .output()
            .expect("running tests/postgres/cluster.sh");
        assert!(
            out.status.success(),
            "tests/postgres/cluster.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .expect("cluster.sh prints the URL")
            .trim()
            .to_string()
    })
}

/// A new, empty database on the tests' cluster: its URL.
pub fn fresh_database() -> String {
    let base = cluster();
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let out = Command::new("psql")
        .arg(base)
        .args(["-q", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg(format!("CREATE DATABASE {name}"))
        .output()
        .expect("running psql");
    assert!(
        out.status.success(),
        "creating database {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (server, _) = base.rsplit_once('/').expect("a URL with a database");
    format!("{server}/{name}")
}
