//! Task supervisor benchmarks, each printed against a baseline measured in the same run:
//!
//! - output throughput: lines/s from one child through the persisted log to 1 and to 100
//!   subscribers, against the same child read directly from its pipe;
//! - delivery delay: median time from a child writing a line to a subscriber receiving it;
//! - spawn-to-exit of a trivial task through gantry (adapter, store, sandbox, log) against
//!   the same spawn done directly with `tokio::process`; through the dedicated
//!   `gantry-sandbox` launcher with Landlock and rlimits only, and through the `gantry` binary
//!   as its own launcher;
//! - the cost of each wall of the task sandbox: spawn-to-exit with the user, PID, mount and
//!   network namespaces added one by one (the network one with its proxy listener handed to
//!   gantry), then a cgroup per task, as `gantry serve` runs tasks with full isolation;
//! - the full sandbox's spawn again, each spawn (and each direct one) after 20 ms of rest:
//!   the spawn's own path, without the work the task before left on the two CPUs.
//!
//! Run with `cargo bench --bench tasks`. Loops are bounded in count; nothing is asserted. With
//! `BENCH_PROFILE_LINES=1` it runs only the one-subscriber line pipeline, five times, for a
//! profiler; with `BENCH_PROFILE_SPAWN=1`, only trivial tasks one after another, with the
//! median time to each phase the supervisor marks (`BENCH_PROFILE_SPAWN=full`: in the full
//! sandbox, launchers ready ahead). `BENCH_SPAWN_SPACED=1` runs only the rested spawns,
//! three times.

mod common;

use common::table::{Ratio, Table};
use gantry::config::{Config, Overrides};
use gantry::contract::{PromptRequest, plain_request};
use gantry::manifest::Manifest;
use gantry::runtime::{ComponentCache, Plugins, engine};
use gantry::store::{Sqlite, Store};
use gantry::tasks::isolation::{Isolation, SandboxConfig};
use gantry::tasks::sandbox::Layers;
use gantry::tasks::{StartTask, Supervisor, TaskLimits};
use gantry::tenants::TenantId;
use gantry::workspaces::Workspaces;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncBufReadExt;

const LINES: u64 = 200_000;
const SPAWNS: usize = 200;

fn request(script: &str) -> PromptRequest {
    plain_request(script)
}

async fn supervisor(dir: &Path, launcher: &str) -> (Supervisor, String) {
    let (sup, ws) = supervisor_without_launcher(dir).await;
    (sup.with_launcher(launcher.into()), ws)
}

async fn supervisor_without_launcher(dir: &Path) -> (Supervisor, String) {
    let defaults = Config::from_layers(None, &Overrides::default()).unwrap();
    let manifest = Manifest::parse(
        "kind = \"backend\"\ncomponent = \"bundled:exec\"\nbinary = \"/bin/sh\"\nimports = [\"gantry:plugin/config\"]\n[settings]\nargs = [\"-c\", \"{prompt}\"]\n",
        "sh",
        Path::new("."),
        &defaults.runtime.plugin_defaults,
        defaults.runtime.max_memory_mb,
    )
    .unwrap();
    let engine = engine(&defaults.runtime).unwrap();
    let cache = ComponentCache::open(&dir.join("cache"), &engine).unwrap();
    let runtime = Arc::new(
        Plugins::load(engine, &cache, vec![manifest], 256)
            .await
            .unwrap(),
    );
    let store: Arc<dyn Store> = Arc::new(Sqlite::open(&dir.join("gantry.db")).unwrap());
    let workspaces = Arc::new(Workspaces::open(dir, store.clone()).unwrap());
    let ws = workspaces.create(&tenant(), "bench").await.unwrap().id;
    let limits = TaskLimits {
        max_running: 64,
        max_running_per_tenant: 64,
        ..TaskLimits::default()
    };
    let sup = Supervisor::new(runtime, store, workspaces, dir, limits)
        .await
        .unwrap();
    (sup, ws)
}

fn tenant() -> TenantId {
    TenantId::new("bench").unwrap()
}

async fn start(sup: &Supervisor, ws: &str, script: &str) -> String {
    sup.start(
        &tenant(),
        StartTask {
            workspace_id: ws.into(),
            backend: "sh".into(),
            setup: vec![],
            request: request(script),
            timeout: None,
            subdir: None,
        },
    )
    .await
    .unwrap()
    .id
}

/// Lines/s from one child to `subscribers` readers of its log, all reading every event.
async fn fan_out(sup: &Supervisor, ws: &str, subscribers: usize) -> f64 {
    let began = Instant::now();
    let task = start(sup, ws, &format!("seq 1 {LINES}")).await;
    let mut readers = Vec::new();
    for _ in 0..subscribers {
        let mut sub = sup.subscribe(&tenant(), &task, 1).await.unwrap();
        readers.push(tokio::spawn(async move {
            let mut lines = 0u64;
            while let Some(e) = sub.next().await.unwrap() {
                lines += u64::from(e.is_output());
            }
            lines
        }));
    }
    for r in readers {
        assert_eq!(r.await.unwrap(), LINES);
    }
    LINES as f64 / began.elapsed().as_secs_f64()
}

/// Lines/s of the same child read straight from its pipe.
async fn direct_lines() -> f64 {
    let began = Instant::now();
    let mut child = tokio::process::Command::new("/bin/sh")
        .args(["-c", &format!("seq 1 {LINES}")])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut n = 0u64;
    while lines.next_line().await.unwrap().is_some() {
        n += 1;
    }
    child.wait().await.unwrap();
    assert_eq!(n, LINES);
    LINES as f64 / began.elapsed().as_secs_f64()
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Delay between a child printing a line (its clock) and a subscriber reading it: p50, p99.
async fn delivery_delay(sup: &Supervisor, ws: &str) -> (Duration, Duration) {
    let script = "for i in $(seq 1 200); do date +%s%N; sleep 0.005; done";
    let task = start(sup, ws, script).await;
    let mut sub = sup.subscribe(&tenant(), &task, 1).await.unwrap();
    let mut delays = Vec::new();
    while let Some(e) = sub.next().await.unwrap() {
        let gantry::contract::EventBody::Output(line) = &e.body else {
            continue;
        };
        let written: u128 = line.text.parse().unwrap();
        delays.push(Duration::from_nanos(
            (now_ns().saturating_sub(written)) as u64,
        ));
    }
    common::percentiles(delays)
}

/// How long the machine rests before each spawn of [`spaced`].
const REST: Duration = Duration::from_millis(20);

/// A direct spawn of the trivial task, as the spawn ratios' baseline does it.
async fn direct_spawn() -> Duration {
    let t = Instant::now();
    tokio::process::Command::new("/bin/sh")
        .args(["-c", "true"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .output()
        .await
        .unwrap();
    t.elapsed()
}

/// Spawn to exit of a trivial task in the full sandbox (launchers ready ahead) and of the
/// same program spawned directly, taking turns, each after [`REST`] of nothing: medians
/// (sandboxed, direct). Back to back, a task's spawn shares the two CPUs with the work the
/// one before left behind (its launcher's replacement starting, its namespaces and cgroup
/// torn down); here that work is done before the next spawn starts, so this is the spawn's
/// own path.
async fn spaced(dir: &Path) -> (Duration, Duration) {
    let (sup, ws) = full_sandbox(dir).await;
    let (mut through, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..SPAWNS {
        tokio::time::sleep(REST).await;
        let t = Instant::now();
        let task = start(&sup, &ws, "true").await;
        sup.wait(&tenant(), &task).await.unwrap();
        through.push(t.elapsed());
        tokio::time::sleep(REST).await;
        direct.push(direct_spawn().await);
    }
    (median(through), median(direct))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(async {
        // Processes start as `gantry serve` starts them: through the dedicated launcher.
        let dir = tempfile::tempdir().unwrap();
        let (sup, ws) = supervisor(dir.path(), env!("CARGO_BIN_EXE_gantry-sandbox")).await;
        let own_dir = tempfile::tempdir().unwrap();
        let (own_sup, own_ws) = supervisor(own_dir.path(), env!("CARGO_BIN_EXE_gantry")).await;

        if std::env::var_os("BENCH_PROFILE_LINES").is_some() {
            for _ in 0..5 {
                println!("1 subscriber: {:.0} lines/s", fan_out(&sup, &ws, 1).await);
            }
            return;
        }
        if std::env::var_os("BENCH_SPAWN_SPACED").is_some() {
            let full_dir = tempfile::tempdir().unwrap();
            for _ in 0..3 {
                let (through, direct) = spaced(full_dir.path()).await;
                println!(
                    "spawn to exit, full isolation, {} ms apart: {:.0} us, direct {:.0} us, ratio {:.2}x",
                    REST.as_millis(),
                    through.as_secs_f64() * 1e6,
                    direct.as_secs_f64() * 1e6,
                    through.as_secs_f64() / direct.as_secs_f64()
                );
            }
            return;
        }
        if let Some(mode) = std::env::var_os("BENCH_PROFILE_SPAWN") {
            // Trivial tasks one after another (Landlock and rlimits, launchers ready ahead;
            // `BENCH_PROFILE_SPAWN=full`: in the full sandbox), with where the time goes: the
            // median time from `start` to each phase the supervisor marks, and to `wait`'s
            // return.
            let full_dir = tempfile::tempdir().unwrap();
            let full = match mode.to_str() {
                Some("full") => Some(full_sandbox(full_dir.path()).await),
                _ => None,
            };
            let (sup, ws) = match &full {
                Some((sup, ws)) => (sup, ws),
                None => (&sup, &ws),
            };
            // The supervisor's tasks run on the runtime's workers: a global subscriber.
            let phases = Phases::default();
            phases.record();
            for _ in 0..5 {
                phases.0.lock().unwrap().clear();
                for _ in 0..SPAWNS * 2 {
                    let task = start(sup, ws, "true").await;
                    sup.wait(&tenant(), &task).await.unwrap();
                    phases.mark(&task, "waited");
                }
                phases.print();
            }
            return;
        }
        let direct = direct_lines().await;
        let one = fan_out(&sup, &ws, 1).await;
        let hundred = fan_out(&sup, &ws, 100).await;
        println!(
            "output, {LINES} lines: direct pipe {direct:.0} lines/s; through the log to 1 subscriber {one:.0} lines/s ({:.2}x of direct), to 100 subscribers {hundred:.0} lines/s ({:.2}x of direct)",
            one / direct,
            hundred / direct
        );

        let mut table = Table::new("tasks");
        table.push(Ratio::at_least(
            "one task's lines to 1 subscriber, against 300k lines/s".into(),
            format!("{one:.0} lines/s"),
            format!("300000 (the pipe alone: {direct:.0})"),
            one / 300_000.0,
            1.0,
        ));
        table.push(Ratio::at_least(
            "one task's lines to each of 100 subscribers, against 100k lines/s".into(),
            format!("{hundred:.0} lines/s"),
            "100000".into(),
            hundred / 100_000.0,
            1.0,
        ));

        let (delay, delay_p99) = delivery_delay(&sup, &ws).await;
        println!(
            "delivery: median {:.0} us, p99 {:.0} us from a child writing a line to a subscriber reading it",
            delay.as_secs_f64() * 1e6,
            delay_p99.as_secs_f64() * 1e6
        );
        table.push(Ratio::at_most(
            "a child's line to a subscriber, p99, against 2 ms".into(),
            common::us(delay_p99),
            "2000 µs".into(),
            delay_p99.as_secs_f64() / 2e-3,
            1.0,
        ));

        // Warm every path once, then time trivial runs one after another.
        for (sup, ws) in [(&sup, &ws), (&own_sup, &own_ws)] {
            let task = start(sup, ws, "true").await;
            sup.wait(&tenant(), &task).await.unwrap();
        }
        let mut through = Vec::new();
        let mut through_own = Vec::new();
        let mut direct = Vec::new();
        let mut forked = Vec::new();
        for _ in 0..SPAWNS {
            let t = Instant::now();
            let task = start(&sup, &ws, "true").await;
            sup.wait(&tenant(), &task).await.unwrap();
            through.push(t.elapsed());
            let t = Instant::now();
            let task = start(&own_sup, &own_ws, "true").await;
            own_sup.wait(&tenant(), &task).await.unwrap();
            through_own.push(t.elapsed());
            direct.push(direct_spawn().await);
            // The same with a no-op `pre_exec` hook, which (like the sandbox's) rules out
            // `posix_spawn`: what a fork of this whole process costs.
            let t = Instant::now();
            let mut cmd = tokio::process::Command::new("/bin/sh");
            cmd.args(["-c", "true"])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            // SAFETY: the hook does nothing.
            unsafe {
                cmd.pre_exec(|| Ok(()));
            }
            cmd.output().await.unwrap();
            forked.push(t.elapsed());
        }
        let forked = median(forked);
        println!(
            "spawn to exit, direct with a no-op pre_exec (fork instead of posix_spawn): {:.0} us",
            forked.as_secs_f64() * 1e6
        );
        let (through, through_own, direct) =
            (median(through), median(through_own), median(direct));
        println!(
            "spawn to exit, trivial task, median of {SPAWNS}: through gantry {:.0} us, direct tokio::process {:.0} us, ratio {:.2}x",
            through.as_secs_f64() * 1e6,
            direct.as_secs_f64() * 1e6,
            through.as_secs_f64() / direct.as_secs_f64()
        );
        println!(
            "spawn to exit, the same with the gantry binary as its own launcher: {:.0} us, ratio {:.2}x",
            through_own.as_secs_f64() * 1e6,
            through_own.as_secs_f64() / direct.as_secs_f64()
        );
        table.push(Ratio::at_most(
            "trivial task, Landlock and rlimits, spawn to exit vs direct".into(),
            common::us(through),
            common::us(direct),
            through.as_secs_f64() / direct.as_secs_f64(),
            1.5,
        ));
        if let Some((cold, warm)) = layers(direct).await {
            table.push(Ratio::at_most(
                "trivial task, full isolation, spawn to exit vs direct".into(),
                common::us(warm),
                common::us(direct),
                warm.as_secs_f64() / direct.as_secs_f64(),
                1.5,
            ));
            table.push(Ratio::measured(
                "the same, its launcher started for it (warm_launchers = 0)".into(),
                common::us(cold),
                common::us(direct),
                cold.as_secs_f64() / direct.as_secs_f64(),
            ));
            let full_dir = tempfile::tempdir().unwrap();
            let (through, direct) = spaced(full_dir.path()).await;
            table.push(Ratio::at_most(
                format!(
                    "trivial task, full isolation, spawns {} ms apart vs direct alike",
                    REST.as_millis()
                ),
                common::us(through),
                common::us(direct),
                through.as_secs_f64() / direct.as_secs_f64(),
                1.5,
            ));
        }
        table.print();
    });
}

/// The phases tasks reached, as the supervisor marks them (target
/// [`gantry::tasks::PHASE_TARGET`]), with when: (task, phase, when).
#[derive(Default, Clone)]
struct Phases(Arc<std::sync::Mutex<Vec<(String, String, Instant)>>>);

impl Phases {
    /// Record the supervisor's marks from every thread, from now on.
    fn record(&self) {
        use tracing_subscriber::layer::SubscriberExt;
        let only = tracing_subscriber::filter::Targets::new()
            .with_target(gantry::tasks::PHASE_TARGET, tracing::Level::TRACE);
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::Layer::with_filter(self.clone(), only));
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    }

    fn mark(&self, task: &str, phase: &str) {
        let now = Instant::now();
        let mut marks = self.0.lock().unwrap();
        marks.push((task.to_string(), phase.to_string(), now));
    }

    /// The median time from each task's `start` to each phase, in the order phases came.
    fn print(&self) {
        let marks = self.0.lock().unwrap();
        let mut order: Vec<&str> = Vec::new();
        let mut starts = std::collections::HashMap::new();
        let mut times: std::collections::HashMap<&str, Vec<Duration>> = Default::default();
        for (task, phase, at) in marks.iter() {
            if phase == "start" {
                starts.insert(task.as_str(), *at);
            }
            let Some(start) = starts.get(task.as_str()) else {
                continue;
            };
            if !order.contains(&phase.as_str()) {
                order.push(phase);
            }
            times.entry(phase).or_default().push(*at - *start);
        }
        let mut line = String::from("phases (median us from start):");
        let mut before = Duration::ZERO;
        for phase in order {
            let m = median(times.remove(phase).unwrap_or_default());
            line.push_str(&format!(
                " {phase} {:.0} (+{:.0})",
                m.as_secs_f64() * 1e6,
                m.saturating_sub(before).as_secs_f64() * 1e6
            ));
            before = m;
        }
        println!("{line}");
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Phases {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        #[derive(Default)]
        struct Fields(String, String);
        impl tracing::field::Visit for Fields {
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                match field.name() {
                    "task" => self.0 = value.to_string(),
                    "phase" => self.1 = value.to_string(),
                    _ => {}
                }
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        self.mark(&fields.0, &fields.1);
    }
}

/// A supervisor running tasks in the full sandbox, launchers ready ahead (as `gantry serve`
/// runs them).
async fn full_sandbox(dir: &Path) -> (Supervisor, String) {
    let (sup, ws) = supervisor_without_launcher(dir).await;
    let config = SandboxConfig {
        warm_launchers: 2,
        ..SandboxConfig::default()
    };
    let isolation = Isolation::layered(
        &config,
        env!("CARGO_BIN_EXE_gantry-sandbox").into(),
        dir,
        Layers::ALL,
        true,
    )
    .expect("the full sandbox on this machine");
    (sup.with_isolation(isolation), ws)
}

/// Spawn-to-exit with the sandbox's walls added one at a time, against `direct`, each launcher
/// started for its task; then Landlock only and the full sandbox again with launchers started
/// ahead of demand (`[sandbox] warm_launchers`, as `gantry serve` runs them). The layers take
/// turns, one trivial task each per round, so that drift on a busy machine falls on all of
/// them alike. The full sandbox's medians (launcher started for the task, started ahead), when
/// this machine has it.
async fn layers(direct: Duration) -> Option<(Duration, Duration)> {
    let user = Layers {
        user: true,
        ..Layers::default()
    };
    let pid = Layers { pid: true, ..user };
    let mount = Layers { mount: true, ..pid };
    const COLD: &str = "(full isolation)";
    const WARM: &str = "(full isolation, launcher ready ahead)";
    let steps: [(&str, Layers, bool, usize); 8] = [
        ("Landlock and rlimits", Layers::default(), false, 0),
        ("+ user, IPC, UTS namespaces", user, false, 0),
        ("+ PID namespace", pid, false, 0),
        ("+ mount namespace (minimal root)", mount, false, 0),
        ("+ network namespace and proxy", Layers::ALL, false, 0),
        ("+ cgroup (full isolation)", Layers::ALL, true, 0),
        (
            "Landlock and rlimits, launcher ready ahead",
            Layers::default(),
            false,
            2,
        ),
        (
            "all walls (full isolation, launcher ready ahead)",
            Layers::ALL,
            true,
            2,
        ),
    ];
    let mut runs = Vec::new();
    let mut dirs = Vec::new();
    for (name, layers, cgroups, warm) in steps {
        let dir = tempfile::tempdir().unwrap();
        let (sup, ws) = supervisor_without_launcher(dir.path()).await;
        let config = SandboxConfig {
            warm_launchers: warm,
            ..SandboxConfig::default()
        };
        let Some(isolation) = Isolation::layered(
            &config,
            env!("CARGO_BIN_EXE_gantry-sandbox").into(),
            dir.path(),
            layers,
            cgroups,
        ) else {
            println!("sandbox layer {name}: not available on this machine");
            continue;
        };
        let sup = sup.with_isolation(isolation);
        let task = start(&sup, &ws, "true").await;
        let first = sup.wait(&tenant(), &task).await.unwrap();
        if first.state.as_str() != "done" {
            println!(
                "sandbox layer {name}: a trivial task ended {:?} ({:?})",
                first.state, first.error
            );
            continue;
        }
        runs.push((name, warm, sup, ws, Vec::new()));
        dirs.push(dir);
    }
    for _ in 0..SPAWNS {
        for (_, _, sup, ws, times) in &mut runs {
            let t = Instant::now();
            let task = start(sup, ws, "true").await;
            sup.wait(&tenant(), &task).await.unwrap();
            times.push(t.elapsed());
        }
    }
    let mut previous: Option<Duration> = None;
    let (mut cold, mut warm) = (None, None);
    for (name, ahead, _, _, times) in runs {
        let m = median(times);
        let added = match previous {
            Some(p) if ahead == 0 => format!(
                ", this layer {:+.0} us",
                (m.as_secs_f64() - p.as_secs_f64()) * 1e6
            ),
            _ => String::new(),
        };
        println!(
            "sandbox layer {name}: spawn to exit {:.0} us, {:.2}x direct{added}",
            m.as_secs_f64() * 1e6,
            m.as_secs_f64() / direct.as_secs_f64()
        );
        previous = Some(m);
        if name.ends_with(COLD) {
            cold = Some(m);
        }
        if name.ends_with(WARM) {
            warm = Some(m);
        }
    }
    cold.zip(warm)
}
