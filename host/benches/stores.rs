//! The two stores side by side in one run (`cargo bench --bench stores`): task submissions
//! per second and event lines per second through PostgreSQL against SQLite, and how long a
//! follower on another node takes to see a line (PostgreSQL's `LISTEN`/`NOTIFY` between two
//! stores, as two nodes hold them) against a follower on the writing node.
//!
//! PostgreSQL is the throwaway cluster of the tests (`tests/postgres/cluster.sh`, on
//! 127.0.0.1:25433 or the next free port, `fsync` off as in the tests), a fresh database per
//! run.

mod common;

use common::table::{Ratio, Table};
use gantry::contract::{EventBody, OutputLine, OutputStream, plain_request};
use gantry::store::{
    EventRecord, Postgres, Sqlite, Store, TaskRecord, TaskState, WorkspaceRecord, now_ms,
};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SUBMISSIONS: usize = 2000;
const CONCURRENT: usize = 8;
const LINES: u64 = 100_000;
const BATCH: u64 = 256;
const FOLLOWED: usize = 300;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// A fresh database on the tests' cluster (started if it is not running).
fn postgres_url() -> String {
    let out = std::process::Command::new("bash")
        .arg(root().join("tests/postgres/cluster.sh"))
        .arg("start")
        .arg(root().join("target/postgres"))
        .arg("25433")
        .output()
        .expect("tests/postgres/cluster.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let base = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string();
    let name = format!("bench_{}", uuid::Uuid::new_v4().simple());
    let created = std::process::Command::new("psql")
        .arg(&base)
        .args(["-q", "-c"])
        .arg(format!("CREATE DATABASE {name}"))
        .status()
        .unwrap();
    assert!(created.success());
    format!("{}/{name}", base.rsplit_once('/').unwrap().0)
}

fn task(id: &str, ws: &str) -> TaskRecord {
    TaskRecord {
        id: id.into(),
        tenant: "bench".into(),
        workspace_id: ws.into(),
        backend: "exec".into(),
        request: plain_request("p"),
        state: TaskState::Pending,
        created_at: now_ms(),
        started_at: None,
        finished_at: None,
        exit_code: None,
        error: None,
        summary: None,
        last_seq: 0,
        output_lines: 0,
        node: Some("bench".into()),
    }
}

fn line(seq: u64) -> EventRecord {
    EventRecord {
        seq,
        body: EventBody::Output(OutputLine {
            stream: OutputStream::Stdout,
            text: format!("line {seq} of a task that prints as fast as it can"),
            partial: false,
        }),
        at: now_ms(),
    }
}

async fn workspace(store: &dyn Store, id: &str) {
    store
        .create_workspace(&WorkspaceRecord {
            id: id.into(),
            tenant: "bench".into(),
            name: id.into(),
            created_at: now_ms(),
            path: None,
        })
        .await
        .unwrap();
}

/// Tasks submitted per second: each a task row and its first log entry, `CONCURRENT` at once.
async fn submissions(store: Arc<dyn Store>) -> f64 {
    workspace(store.as_ref(), "subs").await;
    let started = Instant::now();
    let workers: Vec<_> = (0..CONCURRENT)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in (w..SUBMISSIONS).step_by(CONCURRENT) {
                    let id = format!("sub-{i}");
                    store.insert_task(&task(&id, "subs")).await.unwrap();
                    store.append_events(&id, &[line(1)], None).await.unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    SUBMISSIONS as f64 / started.elapsed().as_secs_f64()
}

/// Lines logged per second by one task, in batches as the supervisor appends them.
async fn lines(store: Arc<dyn Store>) -> f64 {
    workspace(store.as_ref(), "lines").await;
    store.insert_task(&task("loud", "lines")).await.unwrap();
    let started = Instant::now();
    let mut seq = 1;
    while seq <= LINES {
        let batch: Vec<EventRecord> = (seq..seq + BATCH).map(line).collect();
        store.append_events("loud", &batch, None).await.unwrap();
        seq += BATCH;
    }
    (seq - 1) as f64 / started.elapsed().as_secs_f64()
}

/// From an append to a follower holding the line: `writer` appends and announces; `reader`
/// (the writer itself, or another node's store) is woken by its notifier and reads it.
async fn follow_latency(writer: Arc<dyn Store>, reader: Arc<dyn Store>, id: &str) -> Vec<f64> {
    workspace(writer.as_ref(), id).await;
    writer.insert_task(&task(id, id)).await.unwrap();
    let announce = writer.log_notifier();
    announce.open(id);
    let hear = if Arc::ptr_eq(&writer, &reader) {
        announce.clone()
    } else {
        reader.log_notifier()
    };
    let mut progress = hear.follow(id).unwrap();
    let mut took = Vec::with_capacity(FOLLOWED);
    for seq in 1..=FOLLOWED as u64 {
        let sent = Instant::now();
        writer.append_events(id, &[line(seq)], None).await.unwrap();
        announce.announce(
            id,
            gantry::store::LogProgress {
                last_seq: seq,
                ended: false,
            },
        );
        tokio::time::timeout(
            Duration::from_secs(5),
            progress.wait_for(|p| p.last_seq >= seq),
        )
        .await
        .expect("the follower was never woken")
        .unwrap();
        let got = reader.read_events(id, seq, 16).await.unwrap();
        assert_eq!(got.first().map(|e| e.seq), Some(seq));
        took.push(sent.elapsed().as_secs_f64() * 1000.0);
        // Lines a few ms apart, as a chatty agent prints them.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    took.sort_by(f64::total_cmp);
    took
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let sqlite: Arc<dyn Store> = Arc::new(Sqlite::open(&dir.path().join("g.db")).unwrap());
        let url = postgres_url();
        let pg: Arc<dyn Store> = Arc::new(Postgres::connect(&url, 16).await.unwrap());
        let pg_other: Arc<dyn Store> = Arc::new(Postgres::connect(&url, 4).await.unwrap());

        println!("stores: PostgreSQL against SQLite, one run (2-core machine)");
        let (s_subs, p_subs) = (submissions(sqlite.clone()).await, submissions(pg.clone()).await);
        println!(
            "  task submissions/s ({CONCURRENT} at once): sqlite {s_subs:.0}, postgres {p_subs:.0} ({:.2}x)",
            p_subs / s_subs
        );
        let (s_lines, p_lines) = (lines(sqlite.clone()).await, lines(pg.clone()).await);
        println!(
            "  event lines/s (batches of {BATCH}): sqlite {s_lines:.0}, postgres {p_lines:.0} ({:.2}x)",
            p_lines / s_lines
        );
        let here = follow_latency(sqlite.clone(), sqlite.clone(), "here").await;
        let across = follow_latency(pg.clone(), pg_other.clone(), "across").await;
        println!(
            "  follower latency, append to read ({FOLLOWED} lines): same node (sqlite) p50 {:.2} ms p99 {:.2} ms; \
             another node (postgres) p50 {:.2} ms p99 {:.2} ms ({:.1}x at p50)",
            pct(&here, 0.5),
            pct(&here, 0.99),
            pct(&across, 0.5),
            pct(&across, 0.99),
            pct(&across, 0.5) / pct(&here, 0.5)
        );
        let mut table = Table::new("stores");
        table.push(Ratio::measured(
            format!("task submissions, {CONCURRENT} at once, PostgreSQL vs SQLite"),
            format!("{p_subs:.0}/s"),
            format!("{s_subs:.0}/s"),
            p_subs / s_subs,
        ));
        table.push(Ratio::measured(
            format!("output lines in batches of {BATCH}, PostgreSQL vs SQLite"),
            format!("{p_lines:.0}/s"),
            format!("{s_lines:.0}/s"),
            p_lines / s_lines,
        ));
        table.push(Ratio::measured(
            "a follower seeing a line, p50: another node (PostgreSQL) vs the same (SQLite)".into(),
            format!("{:.2} ms", pct(&across, 0.5)),
            format!("{:.2} ms", pct(&here, 0.5)),
            pct(&across, 0.5) / pct(&here, 0.5),
        ));
        table.print();
    });
}
