//! Host benchmarks, each printed as a ratio against a baseline measured in the same run:
//!
//! - plugin load from the compiled-component cache (warm start) against compiling (cold start);
//! - a request served by a fresh component instance (`GET /health` through the `system`
//!   plugin) against the same JSON answered by plain hyper, over the same client;
//! - one isolated call without HTTP: reserve a slot, instantiate the `exec` backend from its
//!   pre-instantiated component in a fresh store, call `build-command`, drop it all.
//!
//! Run with `cargo bench --bench host`. Loops are bounded in count; nothing is asserted.

mod common;

use bytes::Bytes;
use common::table::{Ratio, Table};
use gantry::config::{Config, Overrides};
use gantry::runtime::Plugins;
use gantry::tasks::Adapters;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 4;
const REQUESTS_PER_CONNECTION: usize = 500;
const ISOLATED_CALLS: usize = 5000;

fn config(dir: &std::path::Path) -> Config {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::write(
        plugins.join("exec.toml"),
        "kind = \"backend\"\ncomponent = \"bundled:exec\"\nbinary = \"echo\"\nimports = [\"gantry:plugin/config\"]\n",
    )
    .unwrap();
    std::fs::write(
        plugins.join("system.toml"),
        "kind = \"handler\"\ncomponent = \"bundled:system\"\nroutes = [\"/health\"]\nimports = [\"gantry:plugin/host-info\", \"gantry:plugin/backends\", \"gantry:plugin/metrics\", \"gantry:plugin/identity\"]\n",
    )
    .unwrap();
    let test_handler = std::path::Path::new(env!("GANTRY_COMPONENT_DIR")).join("test_handler.wasm");
    std::fs::write(
        plugins.join("test-handler.toml"),
        format!(
            "kind = \"handler\"\ncomponent = {:?}\nroutes = [\"/t/...\"]\nimports = [\"gantry:plugin\"]\n",
            test_handler.display().to_string()
        ),
    )
    .unwrap();
    let overrides = Overrides {
        addr: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.join("data")),
        plugins: Some(plugins),
        ..Overrides::default()
    };
    Config::from_layers(
        // No task runs here: no sandbox probe and no launcher kept ready (either would start
        // this binary as its launcher).
        Some("[runtime]\nmax_instances = 64\n[sandbox]\nnamespaces = false\nwarm_launchers = 0\n"),
        &overrides,
    )
    .unwrap()
}

async fn load_time(config: &Config) -> (Duration, Plugins) {
    let start = Instant::now();
    let rt = Plugins::start(config).await.unwrap();
    (start.elapsed(), rt)
}

/// Median per-request latency over `CONNECTIONS` keep-alive connections, and requests/s.
async fn drive(addr: SocketAddr, path: &'static str) -> (Duration, f64) {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut latencies = Vec::with_capacity(REQUESTS_PER_CONNECTION);
            for _ in 0..REQUESTS_PER_CONNECTION {
                let t = Instant::now();
                let request = hyper::Request::get(path)
                    .header("host", "bench")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let response = sender.send_request(request).await.unwrap();
                assert_eq!(response.status(), 200);
                response.into_body().collect().await.unwrap();
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    all.sort();
    let rate = all.len() as f64 / elapsed.as_secs_f64();
    (all[all.len() / 2], rate)
}

async fn fetch(addr: SocketAddr, path: &str) -> Bytes {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header("host", "bench")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    response.into_body().collect().await.unwrap().to_bytes()
}

async fn baseline_server(body: Bytes) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let body = body.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    let body = body.clone();
                    async move {
                        let mut r = hyper::Response::new(Full::new(body));
                        r.headers_mut()
                            .insert("content-type", "application/json".parse().unwrap());
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn main() {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());

        let mut table = Table::new("host");
        let (cold, _) = load_time(&config).await;
        let mut warm = Vec::new();
        let mut runtime = None;
        for _ in 0..5 {
            let (t, rt) = load_time(&config).await;
            warm.push(t);
            runtime = Some(rt);
        }
        warm.sort();
        let warm = warm[warm.len() / 2];
        println!("plugin load, 3 plugins: cold (compile) {:.1} ms, warm (cache) {:.2} ms, warm/cold = {:.4}",
            cold.as_secs_f64() * 1e3, warm.as_secs_f64() * 1e3, warm.as_secs_f64() / cold.as_secs_f64());

        let plugins = runtime.unwrap();

        // Instantiate + call + drop, in process.
        let tenant = gantry::tenants::TenantId::new("bench").unwrap();
        let request = gantry::contract::plain_request("hello");
        let mut calls = Vec::with_capacity(ISOLATED_CALLS);
        for _ in 0..ISOLATED_CALLS {
            let t = Instant::now();
            plugins
                .build_command("exec", &tenant, &request, Vec::new())
                .await
                .unwrap()
                .unwrap();
            calls.push(t.elapsed());
        }
        calls.sort();
        let (median, p99) = (calls[calls.len() / 2], calls[calls.len() * 99 / 100]);
        println!(
            "isolated call (slot, fresh store, instantiate, build-command, drop), {ISOLATED_CALLS} calls: median {:.1} us, p99 {:.1} us (target: <= 15 us)",
            median.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6,
        );
        table.push(Ratio::at_most(
            "isolated call, median, against the 15 µs target".into(),
            format!("{:.1} µs (p99 {:.1} µs)", median.as_secs_f64() * 1e6, p99.as_secs_f64() * 1e6),
            "15 µs".into(),
            median.as_secs_f64() / 15e-6,
            1.0,
        ));
        let (listener, addr) = gantry::http::bind(config.addr).await.unwrap();
        let node = gantry::node::assemble(
            &config,
            plugins,
            &gantry::node::Probe { port: addr.port(), secret_files: vec![], tenants: 1 },
        )
        .await
        .unwrap();
        let serving = Arc::new(gantry::http::Serving::new(node.runtime).unwrap());
        tokio::spawn(gantry::http::serve(listener, serving, Default::default(), std::future::pending(), Duration::ZERO));

        // Warm up both, then measure.
        drive(addr, "/health").await;
        let (gantry_median, gantry_rate) = drive(addr, "/health").await;
        let sample = fetch(addr, "/health").await;
        let base = baseline_server(sample).await;
        drive(base, "/health").await;
        let (base_median, base_rate) = drive(base, "/health").await;
        println!(
            "GET /health, {CONNECTIONS}x{REQUESTS_PER_CONNECTION} requests: gantry median {:.0} us ({gantry_rate:.0} req/s), plain hyper median {:.0} us ({base_rate:.0} req/s); latency ratio {:.2}x, throughput ratio {:.2}",
            gantry_median.as_secs_f64() * 1e6,
            base_median.as_secs_f64() * 1e6,
            gantry_median.as_secs_f64() / base_median.as_secs_f64(),
            gantry_rate / base_rate,
        );
        // Four connections at once, client and servers in one runtime: a harder reading than
        // the target's, at one connection (the http bench). In the table so that both show.
        table.push(Ratio::measured(
            format!("GET /health p50 latency, {CONNECTIONS} connections in one runtime, vs plain hyper"),
            format!("{:.0} µs", gantry_median.as_secs_f64() * 1e6),
            format!("{:.0} µs", base_median.as_secs_f64() * 1e6),
            gantry_median.as_secs_f64() / base_median.as_secs_f64(),
        ));
        table.push(Ratio::at_most(
            "plugin load, 3 plugins, warm cache vs compiling".into(),
            format!("{:.2} ms", warm.as_secs_f64() * 1e3),
            format!("{:.0} ms", cold.as_secs_f64() * 1e3),
            warm.as_secs_f64() / cold.as_secs_f64(),
            0.05,
        ));
        table.print();
    });
}
