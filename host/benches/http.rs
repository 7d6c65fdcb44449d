//! HTTP through a component, against two baselines measured in the same run:
//!
//! - **bare hyper** answering the same bytes with no component;
//! - **the way `wasmtime serve` serves it**: the same component behind a `ProxyPre`, a fresh
//!   store per request with a default WASI context and `WasiHttpCtx` (the wasmtime-wasi-http
//!   documentation's server, which is what `wasmtime serve` does), on a default `Engine`.
//!
//! The component is the plain `wasi:http/proxy` hello world (`tests/components/wasi-hello`),
//! which gantry mounts as a handler like any plugin. Each server runs on its own two-worker
//! runtime, and one client thread drives 1, 8 and 64 keep-alive connections against each in
//! turn. Also measured: `GET /health` through the `system` component (which asks the store)
//! against plain hyper answering the same JSON.
//!
//! Run with `cargo bench --bench http`. Loops are bounded in count; nothing is asserted. With
//! `BENCH_PROFILE=/hello/` (or `/health`) it serves gantry alone and drives one connection (or
//! `BENCH_CONNECTIONS`) in five rounds, for a profiler to attach to; `BENCH_PROFILE_SERVER=hyper`
//! drives bare hyper answering the same bytes instead, so that both can be counted alike
//! (`perf stat`: CPU time and context switches per request).

mod common;

use bytes::Bytes;
use common::table::{Ratio, Table};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Requests per measured load, over all its connections.
const REQUESTS: usize = 20_000;
const CONNECTIONS: [usize; 3] = [1, 8, 64];

fn hello_component() -> std::path::PathBuf {
    std::path::Path::new(env!("GANTRY_COMPONENT_DIR")).join("wasi_hello.wasm")
}

/// A two-worker runtime for one server, as `gantry serve` has on this machine.
fn server_runtime(name: &str) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .unwrap()
}

// --- the baselines -------------------------------------------------------------------------

/// Accept connections on a fresh loopback port, each served by `serve` in a task of its own.
async fn listen<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            tokio::spawn(serve(stream));
        }
    });
    addr
}

/// Plain hyper answering every request with `body`.
async fn hyper_server(body: Bytes, content_type: &'static str) -> SocketAddr {
    listen(move |stream| {
        let body = body.clone();
        async move {
            let service = service_fn(move |_req| {
                let body = body.clone();
                async move {
                    let mut r = hyper::Response::new(Full::new(body));
                    r.headers_mut()
                        .insert("content-type", content_type.parse().unwrap());
                    Ok::<_, Infallible>(r)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    })
    .await
}

struct ServeState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
}

impl WasiView for ServeState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for ServeState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: Default::default(),
        }
    }
}

/// The component served as `wasmtime serve` serves it: `ProxyPre`, a fresh store per request.
async fn wasmtime_serve_style(component: &std::path::Path) -> SocketAddr {
    let engine = Engine::default();
    let component = Component::from_file(&engine, component).unwrap();
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).unwrap();
    let pre = ProxyPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
    listen(move |stream| {
        let pre = pre.clone();
        async move {
            let service = service_fn(move |req| {
                let pre = pre.clone();
                async move { serve_one(pre, req).await }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    })
    .await
}

async fn serve_one(
    pre: ProxyPre<ServeState>,
    req: hyper::Request<hyper::body::Incoming>,
) -> wasmtime::Result<hyper::Response<HyperOutgoingBody>> {
    let mut store = Store::new(
        pre.engine(),
        ServeState {
            wasi: WasiCtx::builder().build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
        },
    );
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let req = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, req)?;
    let out = store.data_mut().http().new_response_outparam(sender)?;
    let task = tokio::spawn(async move {
        let proxy = pre.instantiate_async(&mut store).await?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(store, req, out)
            .await
    });
    match receiver.await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(match task.await {
            Ok(Ok(())) => wasmtime::format_err!("the guest set no response"),
            Ok(Err(e)) => e,
            Err(e) => e.into(),
        }),
    }
}

// --- gantry ----------------------------------------------------------------------------------

/// gantry serving the hello component on `/hello/...` and the `system` plugin's `/health`,
/// over a node assembled as `gantry serve` assembles it.
async fn gantry_server(dir: &std::path::Path) -> SocketAddr {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::write(
        plugins.join("hello.toml"),
        format!(
            "kind = \"handler\"\ncomponent = {:?}\nroutes = [\"/hello/...\"]\n",
            hello_component().display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(
        plugins.join("system.toml"),
        "kind = \"handler\"\ncomponent = \"bundled:system\"\nroutes = [\"/health\"]\nimports = [\"gantry:plugin/host-info\", \"gantry:plugin/backends\", \"gantry:plugin/metrics\", \"gantry:plugin/identity\"]\n",
    )
    .unwrap();
    let overrides = gantry::config::Overrides {
        addr: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.join("data")),
        plugins: Some(plugins),
        ..Default::default()
    };
    let config = gantry::config::Config::from_layers(
        // No task runs here: no sandbox probe and no launcher kept ready (either would start
        // this binary as its launcher).
        Some("[sandbox]\nnamespaces = false\nwarm_launchers = 0\n"),
        &overrides,
    )
    .unwrap();
    std::fs::create_dir_all(&config.data_dir).unwrap();
    let loaded = gantry::runtime::Plugins::start(&config).await.unwrap();
    let (listener, addr) = gantry::http::bind(config.addr).await.unwrap();
    let node = gantry::node::assemble(
        &config,
        loaded,
        &gantry::node::Probe {
            port: addr.port(),
            secret_files: vec![],
            tenants: 1,
        },
    )
    .await
    .unwrap();
    let serving = Arc::new(gantry::http::Serving::new(node.runtime).unwrap());
    tokio::spawn(gantry::http::serve(
        listener,
        serving,
        Default::default(),
        std::future::pending(),
        Duration::ZERO,
    ));
    addr
}

// --- the client --------------------------------------------------------------------------------

/// One load's figures.
#[derive(Debug, Clone, Copy)]
struct Load {
    rate: f64,
    p50: Duration,
    p99: Duration,
}

/// `REQUESTS` GETs of `path` over `connections` keep-alive connections, from a client
/// runtime of its own thread (so that it does not share the server's workers).
fn drive(addr: SocketAddr, path: &'static str, connections: usize, requests: usize) -> Load {
    std::thread::spawn(move || {
        let client = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        client.block_on(async move {
            let per = requests / connections;
            let start = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..connections {
                tasks.push(tokio::spawn(async move {
                    let mut sender = common::connect(addr).await;
                    let mut latencies = Vec::with_capacity(per);
                    for _ in 0..per {
                        let t = Instant::now();
                        sender.ready().await.unwrap();
                        let request = hyper::Request::get(path)
                            .header("host", "bench")
                            .body(Full::new(Bytes::new()))
                            .unwrap();
                        let response = sender.send_request(request).await.unwrap();
                        assert_eq!(response.status(), 200, "{path}");
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
            let rate = all.len() as f64 / start.elapsed().as_secs_f64();
            let (p50, p99) = common::percentiles(all);
            Load { rate, p50, p99 }
        })
    })
    .join()
    .unwrap()
}

fn fetch(addr: SocketAddr, path: &'static str) -> Bytes {
    std::thread::spawn(move || {
        let client = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        client.block_on(async move {
            let mut sender = common::connect(addr).await;
            let request = hyper::Request::get(path)
                .header("host", "bench")
                .body(Full::new(Bytes::new()))
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            response.into_body().collect().await.unwrap().to_bytes()
        })
    })
    .join()
    .unwrap()
}

fn show(name: &str, connections: usize, load: Load) {
    println!(
        "  {name:<22} {connections:>2} connections: {:>7.0} requests/s, p50 {}, p99 {}",
        load.rate,
        common::us(load.p50),
        common::us(load.p99)
    );
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let gantry_rt = server_runtime("gantry");
    let hyper_rt = server_runtime("hyper");
    let serve_rt = server_runtime("wasmtime-serve");
    let gantry = gantry_rt.block_on(gantry_server(dir.path()));
    let hello = fetch(gantry, "/hello/");
    assert_eq!(&hello[..], b"hello from /hello/\n");
    if let Ok(path) = std::env::var("BENCH_PROFILE") {
        let path: &'static str = path.leak();
        let connections = std::env::var("BENCH_CONNECTIONS")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(1);
        let (name, target) = match std::env::var("BENCH_PROFILE_SERVER").as_deref() {
            Ok("hyper") => {
                let body = fetch(gantry, path);
                let kind = if path.starts_with("/hello") {
                    "text/plain"
                } else {
                    "application/json"
                };
                ("bare hyper", hyper_rt.block_on(hyper_server(body, kind)))
            }
            _ => ("gantry", gantry),
        };
        for _ in 0..5 {
            let load = drive(target, path, connections, 20_000);
            show(name, connections, load);
        }
        return;
    }
    let hyper = hyper_rt.block_on(hyper_server(hello, "text/plain"));
    let serve = serve_rt.block_on(wasmtime_serve_style(&hello_component()));

    println!("GET /hello/ through the wasi:http hello component ({REQUESTS} requests a load):");
    let mut table = Table::new("http");
    for connections in CONNECTIONS {
        // Warm each (connections, instance slots, caches), then measure.
        let mut loads = Vec::new();
        for (name, addr) in [
            ("gantry", gantry),
            ("wasmtime serve (style)", serve),
            ("bare hyper", hyper),
        ] {
            drive(addr, "/hello/", connections, REQUESTS / 10);
            let load = drive(addr, "/hello/", connections, REQUESTS);
            show(name, connections, load);
            loads.push(load);
        }
        let (g, s, h) = (loads[0], loads[1], loads[2]);
        let over = match connections {
            1 => "1 connection".to_string(),
            n => format!("{n} connections"),
        };
        if connections > 1 {
            table.push(Ratio::at_least(
                format!("hello component, {over}, vs bare hyper"),
                format!("{:.0} req/s", g.rate),
                format!("{:.0} req/s", h.rate),
                g.rate / h.rate,
                0.5,
            ));
        }
        table.push(Ratio::at_least(
            format!("hello component, {over}, vs wasmtime serve"),
            format!("{:.0} req/s", g.rate),
            format!("{:.0} req/s", s.rate),
            g.rate / s.rate,
            1.5,
        ));
        if connections == 1 {
            table.push(Ratio::at_most(
                "hello component p99, 1 connection (target 1 ms)".into(),
                common::us(g.p99),
                "1000 µs".into(),
                g.p99.as_secs_f64() / 1e-3,
                1.0,
            ));
        }
    }

    let health = fetch(gantry, "/health");
    let plain = hyper_rt.block_on(hyper_server(health, "application/json"));
    println!("GET /health through the system component (no key: the status alone):");
    drive(gantry, "/health", 1, REQUESTS / 10);
    let g = drive(gantry, "/health", 1, REQUESTS / 2);
    show("gantry", 1, g);
    drive(plain, "/health", 1, REQUESTS / 10);
    let h = drive(plain, "/health", 1, REQUESTS / 2);
    show("bare hyper", 1, h);
    table.push(Ratio::at_most(
        "GET /health p50 latency, 1 connection, vs bare hyper".into(),
        common::us(g.p50),
        common::us(h.p50),
        g.p50.as_secs_f64() / h.p50.as_secs_f64(),
        2.0,
    ));
    table.print();
    drop(gantry_rt);
}
