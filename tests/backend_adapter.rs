//! Backend adapters through the runtime's API (the supervisor's `Adapters` trait), with the
//! purpose-built test backend.

use gantry::config::{Config, Overrides};
use gantry::contract::{
    AgentEvent, OutputLine, OutputStream, PromptRequest, RequestError, plain_request,
};
use gantry::manifest::Manifest;
use gantry::runtime::{ComponentCache, Plugins, engine};
use gantry::tasks::Adapters;
use gantry::tenants::TenantId;
use std::path::Path;

fn line(stream: OutputStream, text: &str) -> OutputLine {
    OutputLine {
        stream,
        text: text.into(),
        partial: false,
    }
}

fn tenant() -> TenantId {
    TenantId::new("alice").unwrap()
}

fn request(prompt: &str, extra_flags: &[&str]) -> PromptRequest {
    PromptRequest {
        extra_flags: extra_flags.iter().map(|s| s.to_string()).collect(),
        ..plain_request(prompt)
    }
}

async fn runtime(max_instances: u32) -> (Plugins, tempfile::TempDir) {
    let defaults = Config::from_layers(None, &Overrides::default()).unwrap();
    let wasm = Path::new(env!("GANTRY_COMPONENT_DIR")).join("test_backend.wasm");
    let text = format!(
        "kind = \"backend\"\ncomponent = {:?}\nbinary = \"echo\"\nimports = [\"gantry:plugin/config\"]\n[settings]\nallowed_flags = [\"--ok\"]\n",
        wasm.display().to_string()
    );
    let manifest = Manifest::parse(
        &text,
        "echo-backend",
        Path::new("."),
        &defaults.runtime.plugin_defaults,
        defaults.runtime.max_memory_mb,
    )
    .unwrap();
    let engine = engine(&defaults.runtime).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = ComponentCache::open(dir.path(), &engine).unwrap();
    let rt = Plugins::load(engine, &cache, vec![manifest], max_instances)
        .await
        .unwrap();
    (rt, dir)
}

#[tokio::test]
async fn build_command_parse_and_finish() {
    let (rt, _dir) = runtime(4).await;
    let backend = rt.backend("echo-backend").expect("loaded");
    assert_eq!(backend.info.binary, "echo");
    assert_eq!(backend.binary, "echo");

    let spec = rt
        .build_command(
            "echo-backend",
            &tenant(),
            &request("hi there", &["--ok"]),
            vec![],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(spec.args, ["hi there"]);

    let refused = rt
        .build_command(
            "echo-backend",
            &tenant(),
            &request("x", &["--dangerously-skip"]),
            vec![],
        )
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(refused, RequestError::FlagNotAllowed(f) if f == "--dangerously-skip"));

    let mut run = rt
        .start_run("echo-backend", &tenant(), &request("x", &[]))
        .await
        .unwrap();
    // One call for a batch: one list of events per line, in order.
    let events = run
        .parse_lines(&[
            line(OutputStream::Stdout, "first"),
            line(OutputStream::Stderr, "noise"),
        ])
        .await
        .unwrap();
    assert_eq!(events.len(), 2);
    assert!(matches!(&events[0][..], [AgentEvent::Message(m)] if m == "first"));
    assert!(matches!(&events[1][..], [AgentEvent::Raw(m)] if m == "noise"));
    run.parse_lines(&[line(OutputStream::Stdout, "last")])
        .await
        .unwrap();
    // The run's state lives across calls in one instance.
    let summary = run.finish(Some(0)).await.unwrap();
    assert!(summary.success);
    assert_eq!(summary.final_text.as_deref(), Some("last"));
    assert_eq!(rt.node().active_instances(), 0);
}

#[tokio::test]
async fn runs_hold_an_instance_slot_until_finished() {
    let (rt, _dir) = runtime(1).await;
    let rt = std::sync::Arc::new(rt);
    let run = rt
        .start_run("echo-backend", &tenant(), &request("x", &[]))
        .await
        .unwrap();
    assert_eq!(rt.node().active_instances(), 1);
    // Adapter calls wait for a slot rather than fail: the runs they serve are what handler
    // calls wait on.
    let waiting = tokio::spawn({
        let rt = rt.clone();
        async move {
            rt.build_command("echo-backend", &tenant(), &request("y", &[]), vec![])
                .await
        }
    });
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert!(
        !waiting.is_finished(),
        "the build did not wait for the slot"
    );
    run.finish(None).await.unwrap();
    assert!(waiting.await.unwrap().is_ok());
    assert!(rt.backend("nonexistent").is_none());
}
