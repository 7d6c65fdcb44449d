//! The process supervisor with real processes and real SQLite, driving `/bin/sh` fixtures.
//! The supervisor reaches adapters through `tasks::Adapters`; here a plain Rust adapter fills
//! it (no wasm engine), so these tests are about supervision alone. The component adapters are
//! tested in `backend_adapter.rs` and, end to end, by the black-box suites.

use gantry::backends::BackendPlugin;
use gantry::contract::{
    AgentEvent, BackendInfo, CommandSpec, EventBody, OutputLine, OutputStream, PromptRequest,
    RequestError, RunSummary, plain_request,
};
use gantry::store::{EventRecord, Sqlite, Store, TaskState, WorkspaceRecord};
use gantry::tasks::{
    AdapterFailure, AdapterRun, Adapters, StartTask, Supervisor, TaskError, TaskLimits,
};
use gantry::tenants::TenantId;
use gantry::workspaces::Workspaces;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// `sh -c PROMPT`, refusing every extra flag; its summary's final text is the last stdout
/// line. `removed` takes the backend away, as a reload that drops its plugin does.
#[derive(Debug)]
struct Shell {
    backend: Arc<BackendPlugin>,
    removed: AtomicBool,
}

impl Shell {
    fn new() -> Shell {
        Shell {
            backend: Arc::new(BackendPlugin {
                name: "sh".into(),
                info: BackendInfo {
                    name: "sh".into(),
                    binary: "/bin/sh".into(),
                    version_args: vec!["--version".into()],
                    supports_resume: false,
                    supports_system_prompt: false,
                    supports_model: false,
                    supports_max_turns: false,
                },
                binary: "/bin/sh".into(),
                passed_env: vec![],
                model_upstream: None,
                read_only: vec![],
                egress: vec![],
            }),
            removed: AtomicBool::new(false),
        }
    }
}

#[async_trait::async_trait]
impl Adapters for Shell {
    fn backend(&self, name: &str) -> Option<Arc<BackendPlugin>> {
        (name == "sh" && !self.removed.load(Ordering::SeqCst)).then(|| self.backend.clone())
    }

    async fn build_command(
        &self,
        _backend: &str,
        _tenant: &TenantId,
        request: &PromptRequest,
        _overrides: Vec<(String, String)>,
    ) -> Result<Result<CommandSpec, RequestError>, AdapterFailure> {
        if let Some(flag) = request.extra_flags.first() {
            return Ok(Err(RequestError::FlagNotAllowed(flag.clone())));
        }
        Ok(Ok(CommandSpec {
            args: vec!["-c".into(), request.prompt.clone()],
            env: vec![],
            stdin: None,
            files: vec![],
        }))
    }

    async fn start_run(
        &self,
        _backend: &str,
        _tenant: &TenantId,
        _request: &PromptRequest,
    ) -> Result<Box<dyn AdapterRun>, AdapterFailure> {
        Ok(Box::new(ShellRun::default()))
    }
}

#[derive(Default)]
struct ShellRun {
    last: Option<String>,
}

#[async_trait::async_trait]
impl AdapterRun for ShellRun {
    async fn parse_lines(
        &mut self,
        lines: &[OutputLine],
    ) -> Result<Vec<Vec<AgentEvent>>, AdapterFailure> {
        for line in lines {
            if line.stream == OutputStream::Stdout {
                self.last = Some(line.text.clone());
            }
        }
        Ok(vec![vec![]; lines.len()])
    }

    async fn finish(self: Box<Self>, exit_code: Option<i32>) -> Result<RunSummary, AdapterFailure> {
        Ok(RunSummary {
            success: exit_code == Some(0),
            session_id: None,
            final_text: self.last,
            usage: None,
            error: None,
        })
    }
}

/// The text of a stdout event.
fn stdout(e: &EventRecord) -> Option<&str> {
    match &e.body {
        EventBody::Output(line) if line.stream == OutputStream::Stdout => Some(&line.text),
        _ => None,
    }
}

struct Harness {
    sup: Supervisor,
    shell: Arc<Shell>,
    workspaces: Arc<Workspaces>,
    store: Arc<dyn Store>,
    dir: tempfile::TempDir,
}

fn request(script: &str) -> PromptRequest {
    plain_request(script)
}

async fn harness_in(dir: tempfile::TempDir, limits: TaskLimits) -> Harness {
    let store: Arc<dyn Store> = Arc::new(Sqlite::open(&dir.path().join("gantry.db")).unwrap());
    let workspaces = Arc::new(Workspaces::open(dir.path(), store.clone()).unwrap());
    let shell = Arc::new(Shell::new());
    let sup = Supervisor::new(
        shell.clone(),
        store.clone(),
        workspaces.clone(),
        dir.path(),
        limits,
    )
    .await
    .unwrap();
    Harness {
        sup,
        shell,
        workspaces,
        store,
        dir,
    }
}

async fn harness(limits: TaskLimits) -> Harness {
    harness_in(tempfile::tempdir().unwrap(), limits).await
}

fn alice() -> TenantId {
    TenantId::new("alice").unwrap()
}

impl Harness {
    async fn start(
        &self,
        tenant: &TenantId,
        ws: &str,
        script: &str,
        timeout: Option<Duration>,
    ) -> String {
        self.sup
            .start(
                tenant,
                StartTask {
                    workspace_id: ws.into(),
                    backend: "sh".into(),
                    setup: vec![],
                    request: request(script),
                    timeout,
                    subdir: None,
                },
            )
            .await
            .unwrap()
            .id
    }

    /// Wait for a stdout line containing `needle`; the line.
    async fn wait_line(&self, tenant: &TenantId, task: &str, needle: &str) -> String {
        let mut sub = self.sup.subscribe(tenant, task, 1).await.unwrap();
        while let Some(e) = sub.next().await.unwrap() {
            if let Some(line) = stdout(&e).filter(|l| l.contains(needle)) {
                return line.to_string();
            }
        }
        panic!("task ended without printing {needle:?}");
    }
}

/// Read `limit` events (or all) from a subscription that starts at `from`: the stdout lines and
/// the last seq read.
async fn stdout_lines(
    sub: &mut gantry::tasks::Subscription,
    from: u64,
    limit: Option<usize>,
) -> (Vec<String>, u64) {
    let mut lines = Vec::new();
    let mut last = from - 1;
    let mut seen = 0;
    while let Some(e) = sub.next().await.unwrap() {
        assert_eq!(e.seq, last + 1, "events arrive in order, without gaps");
        last = e.seq;
        if let Some(line) = stdout(&e) {
            lines.push(line.to_string());
        }
        seen += 1;
        if limit.is_some_and(|l| seen >= l) {
            break;
        }
    }
    (lines, last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_gets_every_line_once_in_order() {
    let h = harness(TaskLimits::default()).await;
    let ws = h.workspaces.create(&alice(), "lines").await.unwrap();
    let task = h.start(&alice(), &ws.id, "seq 1 100000", None).await;
    let expected: Vec<String> = (1..=100_000).map(|i| i.to_string()).collect();

    let from_start = {
        let mut sub = h.sup.subscribe(&alice(), &task, 1).await.unwrap();
        tokio::spawn(async move { stdout_lines(&mut sub, 1, None).await.0 })
    };
    // One joins once the task is well under way.
    let midway = {
        let mut probe = h.sup.subscribe(&alice(), &task, 1).await.unwrap();
        stdout_lines(&mut probe, 1, Some(20_000)).await;
        let mut sub = h.sup.subscribe(&alice(), &task, 1).await.unwrap();
        tokio::spawn(async move { stdout_lines(&mut sub, 1, None).await.0 })
    };
    // One reads a while, goes away, and comes back from the next seq.
    let mut first = h.sup.subscribe(&alice(), &task, 1).await.unwrap();
    let (mut reconnected, last) = stdout_lines(&mut first, 1, Some(30_001)).await;
    drop(first);
    let mut again = h.sup.subscribe(&alice(), &task, last + 1).await.unwrap();
    reconnected.extend(stdout_lines(&mut again, last + 1, None).await.0);

    assert_eq!(from_start.await.unwrap(), expected);
    assert_eq!(midway.await.unwrap(), expected);
    assert_eq!(reconnected, expected);
    let done = h.sup.wait(&alice(), &task).await.unwrap();
    assert_eq!(done.state, TaskState::Done, "{done:?}");
    assert_eq!(done.exit_code, Some(0));
    let summary = done.summary.unwrap().run.unwrap();
    assert_eq!(summary.final_text.as_deref(), Some("100000"));
}

fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie has exited; only its parent has yet to reap it.
        Ok(stat) => stat.split(' ').nth(2).is_none_or(|s| s != "Z"),
        Err(_) => false,
    }
}

async fn wait_gone(pid: i32) -> bool {
    for _ in 0..200 {
        if !process_alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_ends_the_whole_process_group() {
    let h = harness(TaskLimits::default()).await;
    let ws = h.workspaces.create(&alice(), "w").await.unwrap();
    let task = h
        .start(
            &alice(),
            &ws.id,
            "sleep 1000 & echo grandchild $!; sleep 1000",
            None,
        )
        .await;
    let line = h.wait_line(&alice(), &task, "grandchild").await;
    let pid: i32 = line.trim_start_matches("grandchild ").parse().unwrap();
    assert!(process_alive(pid));
    h.sup.cancel(&alice(), &task).await.unwrap();
    let done = h.sup.wait(&alice(), &task).await.unwrap();
    assert_eq!(done.state, TaskState::Cancelled);
    assert!(
        wait_gone(pid).await,
        "the grandchild {pid} outlived the cancel"
    );
    // Cancelling again, or a finished task, changes nothing.
    assert_eq!(
        h.sup.cancel(&alice(), &task).await.unwrap().state,
        TaskState::Cancelled
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_ignoring_term_is_killed_after_the_grace_period() {
    let limits = TaskLimits {
        kill_grace_ms: 300,
        ..TaskLimits::default()
    };
    let h = harness(limits).await;
    let ws = h.workspaces.create(&alice(), "w").await.unwrap();
    let task = h
        .start(
            &alice(),
            &ws.id,
            "trap '' TERM; echo ready $$; while :; do sleep 0.05; done",
            None,
        )
        .await;
    let line = h.wait_line(&alice(), &task, "ready").await;
    let pid: i32 = line.trim_start_matches("ready ").parse().unwrap();
    h.sup.cancel(&alice(), &task).await.unwrap();
    let done = h.sup.wait(&alice(), &task).await.unwrap();
    assert_eq!(done.state, TaskState::Cancelled);
    assert_eq!(done.exit_code, None, "it was killed by a signal");
    assert!(wait_gone(pid).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_yields_timed_out() {
    let h = harness(TaskLimits::default()).await;
    let ws = h.workspaces.create(&alice(), "w").await.unwrap();
    let task = h
        .start(
            &alice(),
            &ws.id,
            "echo started; sleep 30",
            Some(Duration::from_millis(300)),
        )
        .await;
    let done = h.sup.wait(&alice(), &task).await.unwrap();
    assert_eq!(done.state, TaskState::TimedOut);
    assert!(done.error.unwrap().contains("timed out after 300 ms"));
    let events = h.store.read_events(&task, 1, 100).await.unwrap();
    assert!(events.iter().any(|e| stdout(e) == Some("started")));
    assert!(matches!(
        &events.last().unwrap().body,
        EventBody::State(s) if s.state == TaskState::TimedOut
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_never_runs_more_than_its_limit_and_every_task_finishes() {
    let limits = TaskLimits {
        max_running_per_tenant: 4,
        ..TaskLimits::default()
    };
    let h = harness(limits).await;
    let ws = h.workspaces.create(&alice(), "w").await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..50 {
        ids.push(h.start(&alice(), &ws.id, "sleep 0.1", None).await);
    }
    let mut spans = Vec::new();
    for id in &ids {
        let t = h.sup.wait(&alice(), id).await.unwrap();
        assert_eq!(t.state, TaskState::Done, "{t:?}");
        spans.push((t.started_at.unwrap(), t.finished_at.unwrap()));
    }
    // The most tasks whose running spans overlap at any one moment.
    let mut edges: Vec<(i64, i32)> = spans.iter().flat_map(|&(s, f)| [(s, 1), (f, -1)]).collect();
    edges.sort();
    let (mut now, mut most) = (0, 0);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    assert!(most <= 4, "{most} tasks ran at once");
    assert!(most >= 2, "tasks should run side by side");
}

/// The states a task's log went through, in order.
async fn logged_states(h: &Harness, task: &str) -> Vec<TaskState> {
    let mut sub = h.sup.subscribe(&alice(), task, 1).await.unwrap();
    let mut states = Vec::new();
    while let Some(e) = sub.next().await.unwrap() {
        if let EventBody::State(change) = &e.body {
            states.push(change.state);
        }
    }
    states
}

/// A tenant allowed one running task, and a task of its holding that slot until [`let_go`]
/// (at most 30 s): the harness, the workspace and the task.
async fn one_slot_held() -> (Harness, WorkspaceRecord, String) {
    let limits = TaskLimits {
        max_running_per_tenant: 1,
        ..TaskLimits::default()
    };
    let h = harness(limits).await;
    let ws = h.workspaces.create(&alice(), "w").await.unwrap();
    let first = h
        .start(
            &alice(),
            &ws.id,
            "echo started; for i in $(seq 3000); do [ -e go ] && break; sleep 0.01; done",
            None,
        )
        .await;
    h.wait_line(&alice(), &first, "started").await;
    (h, ws, first)
}

/// End the task of [`one_slot_held`].
async fn let_go(h: &Harness, ws: &WorkspaceRecord) {
    let (_, root) = h.workspaces.dir(&alice(), &ws.id).await.unwrap();
    std::fs::write(root.join("go"), "").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_logs_pending_then_running_whether_or_not_it_waited_for_a_slot() {
    // The first finds its slot free (its two states go in one append); the second waits for
    // it, pending, while the first holds it.
    let (h, ws, first) = one_slot_held().await;
    let second = h.start(&alice(), &ws.id, "true", None).await;
    let mut sub = h.sup.subscribe(&alice(), &second, 1).await.unwrap();
    let Some(e) = sub.next().await.unwrap() else {
        panic!("the waiting task's log is empty");
    };
    assert!(
        matches!(&e.body, EventBody::State(c) if c.state == TaskState::Pending),
        "{e:?}"
    );
    assert_eq!(
        h.sup.get(&alice(), &second).await.unwrap().state,
        TaskState::Pending,
        "it waits while the first runs"
    );
    let_go(&h, &ws).await;
    let expected = [TaskState::Pending, TaskState::Running, TaskState::Done];
    for task in [&first, &second] {
        assert_eq!(
            h.sup.wait(&alice(), task).await.unwrap().state,
            TaskState::Done
        );
        assert_eq!(logged_states(&h, task).await, expected, "{task}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_backend_went_while_it_waited_fails_and_logs_why() {
    let (h, ws, first) = one_slot_held().await;
    let second = h.start(&alice(), &ws.id, "echo never", None).await;
    // The second waits for the slot; meanwhile its backend is taken away.
    h.shell.removed.store(true, Ordering::SeqCst);
    let_go(&h, &ws).await;
    assert_eq!(
        h.sup.wait(&alice(), &first).await.unwrap().state,
        TaskState::Done
    );
    let ended = h.sup.wait(&alice(), &second).await.unwrap();
    assert_eq!(ended.state, TaskState::Failed, "{ended:?}");
    let error = ended.error.unwrap_or_default();
    assert!(
        error.contains("backend sh is no longer configured"),
        "{error}"
    );
    // Its log says so too (a follower sees how it ended), and nothing ran.
    let events = h.store.read_events(&second, 1, 100).await.unwrap();
    assert!(events.iter().all(|e| stdout(e).is_none()), "{events:?}");
    match &events.last().unwrap().body {
        EventBody::State(end) => {
            assert_eq!(end.state, TaskState::Failed);
            assert_eq!(end.error.as_deref(), Some(error.as_str()));
        }
        other => panic!("the log ends with {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_cannot_see_or_touch_a_task() {
    let h = harness(TaskLimits::default()).await;
    let ws = h.workspaces.create(&alice(), "w").await.unwrap();
    let task = h.start(&alice(), &ws.id, "sleep 5", None).await;
    let bob = TenantId::new("bob").unwrap();
    assert!(matches!(
        h.sup.get(&bob, &task).await,
        Err(TaskError::NotFound)
    ));
    assert!(matches!(
        h.sup.cancel(&bob, &task).await,
        Err(TaskError::NotFound)
    ));
    assert!(matches!(
        h.sup.subscribe(&bob, &task, 1).await,
        Err(TaskError::NotFound)
    ));
    assert!(h.sup.list(&bob, None).await.unwrap().is_empty());
    // Bob cannot start a task in Alice's workspace either.
    let err = h
        .sup
        .start(
            &bob,
            StartTask {
                workspace_id: ws.id.clone(),
                backend: "sh".into(),
                setup: vec![],
                request: request("true"),
                timeout: None,
                subdir: None,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, TaskError::Workspace(_)), "{err:?}");
    assert!(h.sup.workspace_busy(&ws.id));
    h.sup.cancel(&alice(), &task).await.unwrap();
    assert_eq!(
        h.sup.wait(&alice(), &task).await.unwrap().state,
        TaskState::Cancelled
    );
    assert!(!h.sup.workspace_busy(&ws.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_writes_inside_its_workspace_only() {
    let h = harness(TaskLimits::default()).await;
    assert!(h.sup.sandboxed(), "this machine's kernel has Landlock");
    let ws = h.workspaces.create(&alice(), "w").await.unwrap();
    let outside = h.dir.path().join("outside.txt");
    let script = format!(
        "echo in > inside.txt && echo ok-inside; echo out > {} || echo refused-outside; echo tmp > $TMPDIR/t && echo ok-tmp",
        outside.display()
    );
    let task = h.start(&alice(), &ws.id, &script, None).await;
    h.sup.wait(&alice(), &task).await.unwrap();
    let lines: Vec<String> = h
        .store
        .read_events(&task, 1, 100)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| stdout(&e).map(str::to_string))
        .collect();
    assert_eq!(lines, ["ok-inside", "refused-outside", "ok-tmp"]);
    assert!(!outside.exists());
    assert_eq!(
        h.workspaces
            .read_file(&alice(), &ws.id, "inside.txt", 100)
            .await
            .unwrap(),
        b"in\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_flag_spawns_nothing() {
    let h = harness(TaskLimits::default()).await;
    let ws = h.workspaces.create(&alice(), "w").await.unwrap();
    let mut req = request("touch spawned");
    req.extra_flags = vec!["--yolo".into()];
    let err = h
        .sup
        .start(
            &alice(),
            StartTask {
                workspace_id: ws.id.clone(),
                backend: "sh".into(),
                setup: vec![],
                request: req,
                timeout: None,
                subdir: None,
            },
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("flag --yolo is not allowed"),
        "{err}"
    );
    assert!(h.sup.list(&alice(), None).await.unwrap().is_empty());
    assert!(
        h.workspaces
            .list_files(&alice(), &ws.id)
            .await
            .unwrap()
            .is_empty()
    );
}

#[test]
fn tasks_left_running_are_interrupted_on_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let first = tokio::runtime::Runtime::new().unwrap();
    let (dir, ws, task, before) = first.block_on(async {
        let h = harness_in(dir, TaskLimits::default()).await;
        let ws = h.workspaces.create(&alice(), "w").await.unwrap();
        let task = h
            .start(&alice(), &ws.id, "echo one; echo two; sleep 1000", None)
            .await;
        h.wait_line(&alice(), &task, "two").await;
        let before = h.store.read_events(&task, 1, 100).await.unwrap();
        (h.dir, ws.id, task, before)
    });
    // The process goes away mid-run: nothing of it finishes the task.
    drop(first);
    let second = tokio::runtime::Runtime::new().unwrap();
    second.block_on(async {
        let h = harness_in(dir, TaskLimits::default()).await;
        let t = h.sup.get(&alice(), &task).await.unwrap();
        assert_eq!(t.state, TaskState::Interrupted);
        // The log is what was logged before, then the final state.
        let after = h.store.read_events(&task, 1, 100).await.unwrap();
        assert_eq!(after[..before.len()], before[..]);
        assert_eq!(after.len(), before.len() + 1);
        let EventBody::State(end) = &after[before.len()].body else {
            panic!("{:?}", after.last());
        };
        assert_eq!(end.state, TaskState::Interrupted);
        assert!(h.workspaces.get(&alice(), &ws).await.is_ok());
        // A subscriber of an interrupted task gets what was logged, then the end.
        let mut sub = h.sup.subscribe(&alice(), &task, 1).await.unwrap();
        let (lines, _) = stdout_lines(&mut sub, 1, None).await;
        assert_eq!(lines, ["one", "two"]);
    });
}

/// A task may run in a directory inside its workspace, and in no directory outside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_runs_in_a_subdirectory_of_its_workspace_only() {
    let h = harness(TaskLimits::default()).await;
    let ws = h.workspaces.create(&alice(), "nested").await.unwrap();
    let (dir, root) = h.workspaces.dir(&alice(), &ws.id).await.unwrap();
    dir.create_dir_all("src/app").unwrap();
    std::os::unix::fs::symlink("/tmp", root.join("out")).unwrap();
    let start = |subdir: &str| StartTask {
        workspace_id: ws.id.clone(),
        backend: "sh".into(),
        setup: vec![],
        request: request("pwd; touch ../made-by-task"),
        timeout: None,
        subdir: Some(subdir.into()),
    };
    let task = h.sup.start(&alice(), start("src/app")).await.unwrap();
    let line = h.wait_line(&alice(), &task.id, "/").await;
    assert_eq!(Path::new(&line), root.join("src/app"));
    let done = h.sup.wait(&alice(), &task.id).await.unwrap();
    assert_eq!(done.state, TaskState::Done);
    // It may write anywhere in its workspace, not only below its directory.
    assert!(root.join("src/made-by-task").exists());
    for bad in ["../x", "/etc", "missing", "out"] {
        let err = h.sup.start(&alice(), start(bad)).await.unwrap_err();
        assert!(matches!(err, TaskError::Workspace(_)), "{bad}: {err}");
    }
    assert_eq!(
        h.sup.list(&alice(), Some(&ws.id)).await.unwrap().len(),
        1,
        "nothing else started"
    );
}

/// Started through the dedicated `gantry-sandbox` launcher (as `gantry serve` does when it is
/// installed beside it), through the `gantry` binary itself, or forked with a `pre_exec` hook
/// (the library on its own): the same sandbox every way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launched_and_forked_tasks_get_the_same_sandbox() {
    let gantry = std::path::Path::new(env!("CARGO_BIN_EXE_gantry"));
    let dedicated = gantry::tasks::sandbox::launcher_for(gantry);
    assert_eq!(
        dedicated,
        std::path::Path::new(env!("CARGO_BIN_EXE_gantry-sandbox")),
        "gantry finds the launcher built beside it"
    );
    for launcher in [Some(dedicated), Some(gantry.to_path_buf()), None] {
        let Harness {
            sup,
            shell,
            workspaces,
            store,
            dir,
        } = harness(TaskLimits::default()).await;
        let sup = match &launcher {
            Some(path) => sup.with_launcher(path.clone()),
            None => sup,
        };
        let h = Harness {
            sup,
            shell,
            workspaces: workspaces.clone(),
            store,
            dir,
        };
        let ws = workspaces.create(&alice(), "sandboxed").await.unwrap();
        let outside = h.dir.path().join("escape");
        let script = format!(
            "echo in > in.txt; (echo out > {outside:?}) 2>/dev/null || echo refused; echo nofile $(ulimit -n); echo pgid $(ps -o pgid= $$ | tr -d ' ') pid $$",
            outside = outside.display().to_string()
        );
        let task = h.start(&alice(), &ws.id, &script, None).await;
        let done = h.sup.wait(&alice(), &task).await.unwrap();
        assert_eq!(
            done.state,
            TaskState::Done,
            "launcher {launcher:?}: {done:?}"
        );
        let mut sub = h.sup.subscribe(&alice(), &task, 1).await.unwrap();
        let (lines, _) = stdout_lines(&mut sub, 1, None).await;
        assert!(h.sup.sandboxed(), "this machine's kernel has Landlock");
        assert!(
            lines.contains(&"refused".to_string()),
            "launcher {launcher:?}: {lines:?}"
        );
        assert!(
            !outside.exists(),
            "launcher {launcher:?}: a write outside the workspace landed"
        );
        assert!(
            lines.contains(&"nofile 4096".to_string()),
            "launcher {launcher:?}: {lines:?}"
        );
        // The process leads its own group (so cancel reaches all it starts).
        let ids = lines.iter().find(|l| l.starts_with("pgid ")).unwrap();
        let parts: Vec<&str> = ids.split(' ').collect();
        assert_eq!(parts[1], parts[3], "launcher {launcher:?}: {ids}");
        let (_, root) = workspaces.dir(&alice(), &ws.id).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("in.txt")).unwrap(),
            "in\n"
        );
    }
}

/// The dedicated launcher on its own: it becomes the program (its output and status are the
/// program's), and anything it cannot do is exit 127 with the reason.
#[test]
fn the_launcher_binary_becomes_its_program_or_says_why_not() {
    let launcher = env!("CARGO_BIN_EXE_gantry-sandbox");
    let run = |args: &[&str]| {
        std::process::Command::new(launcher)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&[
        "__sandbox-exec",
        "--nofile",
        "64",
        "--",
        "/bin/sh",
        "-c",
        "ulimit -n; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "64\n");
    for (args, reason) in [
        (
            &["__sandbox-exec", "--", "/nowhere/at/all"][..],
            "cannot run /nowhere/at/all",
        ),
        (&["__sandbox-exec", "--bogus"][..], "unknown argument"),
        (
            &["__sandbox-exec", "--nproc", "many", "--", "/bin/true"][..],
            "--nproc needs a number",
        ),
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(127), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
}
