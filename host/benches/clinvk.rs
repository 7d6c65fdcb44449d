//! The clinvk surface, through the real `gantry` binary on loopback, printed against baselines
//! measured in the same run:
//!
//! - `GET /health` and `GET /api/v1/backends`: latency (p50, p99) over one keep-alive
//!   connection, and requests/s over several;
//! - `POST /api/v1/prompt` (ephemeral, JSON) with a trivial CLI (`echo`, through the `exec`
//!   adapter) against spawning that same CLI directly: the latency gantry adds per prompt.
//!
//! Run with `cargo bench --bench clinvk`. Loops are bounded in count; nothing is asserted.

mod common;

use common::table::{Ratio, Table};
use common::{Server, connect, exec_backend, percentiles, request, runtime, us};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Instant;

const SEQUENTIAL: usize = 400;
const CONNECTIONS: usize = 4;
const PER_CONNECTION: usize = 300;
const PROMPTS: usize = 400;

async fn endpoint(addr: SocketAddr, path: &'static str) {
    let mut sender = connect(addr).await;
    for _ in 0..20 {
        request(&mut sender, "GET", path, None, "").await;
    }
    let mut samples = Vec::with_capacity(SEQUENTIAL);
    for _ in 0..SEQUENTIAL {
        samples.push(request(&mut sender, "GET", path, None, "").await.0);
    }
    let (p50, p99) = percentiles(samples);
    let start = Instant::now();
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            tokio::spawn(async move {
                let mut sender = connect(addr).await;
                for _ in 0..PER_CONNECTION {
                    request(&mut sender, "GET", path, None, "").await;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let rate = (CONNECTIONS * PER_CONNECTION) as f64 / start.elapsed().as_secs_f64();
    println!(
        "GET {path:<18} p50 {:>8}  p99 {:>8}  {rate:>7.0} requests/s over {CONNECTIONS} connections",
        us(p50),
        us(p99)
    );
}

fn main() {
    let server = Server::start(
        &["system", "clinvk-api"],
        &[("fake", exec_backend("echo"))],
        "",
        None,
    );
    let addr = server.addr;
    let rt = runtime();
    rt.block_on(async {
        endpoint(addr, "/health").await;
        endpoint(addr, "/api/v1/backends").await;

        // The CLI alone: spawn, wait, read its line.
        let mut direct = Vec::with_capacity(PROMPTS);
        for _ in 0..PROMPTS + 10 {
            let start = Instant::now();
            let out = tokio::process::Command::new("echo")
                .arg("say hi")
                .stdin(Stdio::null())
                .output()
                .await
                .unwrap();
            assert!(out.status.success());
            direct.push(start.elapsed());
        }
        let (d50, d99) = percentiles(direct.split_off(10));

        let body =
            r#"{"backend":"fake","prompt":"say hi","ephemeral":true,"output_format":"json"}"#;
        let mut sender = connect(addr).await;
        for _ in 0..10 {
            request(&mut sender, "POST", "/api/v1/prompt", None, body).await;
        }
        let mut through = Vec::with_capacity(PROMPTS);
        let start = Instant::now();
        for _ in 0..PROMPTS {
            through.push(
                request(&mut sender, "POST", "/api/v1/prompt", None, body)
                    .await
                    .0,
            );
        }
        let rate = PROMPTS as f64 / start.elapsed().as_secs_f64();
        let (g50, g99) = percentiles(through);
        println!(
            "echo run directly       p50 {:>8}  p99 {:>8}",
            us(d50),
            us(d99)
        );
        println!(
            "POST /api/v1/prompt     p50 {:>8}  p99 {:>8}  {rate:>7.0} prompts/s on one connection",
            us(g50),
            us(g99)
        );
        println!(
            "added per prompt        p50 {:>8}  ({:.1}x the CLI alone)",
            us(g50.saturating_sub(d50)),
            g50.as_secs_f64() / d50.as_secs_f64()
        );
        let added = g50.saturating_sub(d50);
        let mut table = Table::new("clinvk");
        table.push(Ratio::at_most(
            "POST /api/v1/prompt, added per prompt (p50), against 1.5 ms".into(),
            common::ms(added),
            format!("1.50 ms (echo alone: {})", common::ms(d50)),
            added.as_secs_f64() / 1.5e-3,
            1.0,
        ));
        table.push(Ratio::at_most(
            "POST /api/v1/prompt, p99, against 5 ms".into(),
            common::ms(g99),
            "5.00 ms".into(),
            g99.as_secs_f64() / 5e-3,
            1.0,
        ));
        table.print();
    });
    drop(server);
}
