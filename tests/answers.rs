//! Fair and hardened serving, seen from outside: the real binary on loopback with two tenants.
//! One tenant's streams and waiting prompts cannot starve another's requests or `/health`; a
//! log of any size replays in full; files stream with safe headers, `Range` and `ETag`; a
//! surface starts only the backends its manifest names.

mod common;

use common::{Client, CoreSteps, Gantry, Setup, request_to};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::time::Duration;

const ALICE: &str = "alice-key-0123456789abcdef";
const BOB: &str = "bob-key-0123456789abcdef";

fn plugin(file: &str) -> String {
    std::fs::read_to_string(format!("{}/../plugins/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// A backend `name` running its prompt with `/bin/sh -c`, with extra settings.
fn sh_backend(settings: &str) -> String {
    format!(
        "kind = \"backend\"\ncomponent = \"bundled:exec\"\nbinary = \"/bin/sh\"\nimports = [\"gantry:plugin/config\"]\n[settings]\nargs = [\"-c\", \"{{prompt}}\"]\n{settings}\n"
    )
}

/// Serve `manifests` for alice and bob, with `config` over the defaults.
fn start(manifests: &[(&str, String)], config: &str) -> (Setup, Gantry) {
    let setup = Setup::new(manifests);
    let g = setup.start_configured(config, &format!("alice:{ALICE},bob:{BOB}"));
    (setup, g)
}

/// Open a GET on a connection of its own and return once its head has arrived; the body
/// stays open as long as the response is kept.
async fn open(g: &Gantry, key: &str, path: &str) -> hyper::Response<hyper::body::Incoming> {
    let auth = format!("Bearer {key}");
    g.request("GET", path, &[("authorization", &auth)], String::new())
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_holding_200_streams_and_its_share_of_prompts_starves_no_one() {
    // Eight instances for tenants, four per tenant: the 200 streams below would need 25 times
    // the node's instances if a stream held one.
    // All from one address: the per-address connection cap is raised above them.
    let config = "[runtime]\nmax_instances = 8\nmax_instances_per_tenant = 4\nmax_streams_per_tenant = 200\n\n[http]\nmax_connections_per_address = 1000\n";
    let (_setup, g) = start(
        &[
            ("system", plugin("system.toml")),
            ("core-api", plugin("core-api.toml")),
            ("clinvk-api", plugin("clinvk-api.toml")),
            ("sh", sh_backend("")),
            // For clinvk, whose backends must answer `--version`.
            (
                "sleep",
                "kind = \"backend\"\ncomponent = \"bundled:exec\"\nbinary = \"/bin/sleep\"\nimports = [\"gantry:plugin/config\"]\n".into(),
            ),
        ],
        config,
    );
    let alice = Client { g: &g, key: ALICE };
    let bob = Client { g: &g, key: BOB };
    let ws = alice.workspace("streams").await;
    let task = alice.task(&ws, "echo started; sleep 30").await;
    let path = format!("/v1/tasks/{task}/events");
    let mut streams = Vec::new();
    for _ in 0..200 {
        let response = open(&g, ALICE, &path).await;
        assert_eq!(response.status(), 200);
        streams.push(response);
    }
    // The 201st is over alice's share: 503 with Retry-After, in the API's envelope.
    let (status, headers, body) = alice.call_full("GET", &path, Value::Null).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(body["error"]["code"], "over_capacity", "{body}");
    // Every stream is live: the first one reads the first line.
    let first = streams[0].body_mut().frame().await.unwrap().unwrap();
    let first = String::from_utf8_lossy(first.data_ref().unwrap()).into_owned();
    assert!(first.contains("event: "), "{first}");

    // Alice's blocking prompts hold instances: four at most, then 503 in clinvk's envelope.
    let prompt = json!({ "backend": "sleep", "prompt": "20", "ephemeral": true }).to_string();
    let waiting: Vec<_> = (0..4)
        .map(|_| {
            let (addr, prompt) = (g.addr, prompt.clone());
            tokio::spawn(async move {
                let auth = format!("Bearer {ALICE}");
                let headers = [
                    ("authorization", auth.as_str()),
                    ("content-type", "application/json"),
                ];
                request_to(addr, "POST", "/api/v1/prompt", &headers, prompt).await
            })
        })
        .collect();
    // Until the four hold their instances, the fifth may still get one.
    let mut refused = None;
    for _ in 0..200 {
        let (status, headers, body) = alice
            .call_full(
                "POST",
                "/api/v1/prompt",
                serde_json::from_str(&prompt).unwrap(),
            )
            .await;
        if status == 503 {
            refused = Some((headers, body));
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (headers, body) = refused.expect("alice's fifth waiting prompt was never refused");
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(body["error"], "over_capacity", "{body}");

    // Bob and the load balancer are served all along.
    let (status, body) = bob.call("GET", "/v1/workspaces", Value::Null).await;
    assert_eq!(status, 200, "{body}");
    let bobs = bob.workspace("mine").await;
    let (status, body) = bob
        .call("GET", &format!("/v1/workspaces/{bobs}"), Value::Null)
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = g.get("/health").await;
    assert_eq!(status, 200);
    // So is alice, outside her streams.
    let (status, body) = alice
        .call("GET", &format!("/v1/tasks/{task}"), Value::Null)
        .await;
    assert_eq!(status, 200, "{body}");
    drop(streams);
    for w in waiting {
        w.abort();
    }
}

/// The `data` of each SSE event with an `id` in `text`, and the NDJSON lines' objects.
fn sse_data(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|block| block.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|data| serde_json::from_str(data).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mb_log_of_long_lines_replays_in_full_over_sse_and_ndjson() {
    let (_setup, g) = start(
        &[
            ("core-api", plugin("core-api.toml")),
            ("sh", sh_backend("")),
        ],
        "",
    );
    let alice = Client { g: &g, key: ALICE };
    let ws = alice.workspace("big").await;
    // 1700 lines of 30,000 bytes: 51 MB of output, each line also logged as an agent message.
    const LINES: usize = 1700;
    const WIDTH: usize = 30_000;
    let script = format!("yes \"$(printf '%0{WIDTH}d' 7)\" | head -n {LINES}");
    let task = alice.task(&ws, &script).await;
    let done = alice
        .wait_state(&task, |s| s != "running" && s != "pending")
        .await;
    assert_eq!(done["state"], "done", "{done}");
    let check = |lines: Vec<Value>, form: &str| {
        let output: Vec<_> = lines
            .iter()
            .filter(|e| e["data"]["text"].is_string() || e["text"].is_string())
            .collect();
        assert_eq!(output.len(), LINES, "{form}: output lines");
        for line in output {
            let text = line["data"]["text"]
                .as_str()
                .or(line["text"].as_str())
                .unwrap();
            assert_eq!(text.len(), WIDTH, "{form}");
            assert!(text.ends_with('7'), "{form}");
        }
    };
    let (status, sse) = alice.raw(&format!("/v1/tasks/{task}/events"), &[]).await;
    assert_eq!(status, 200);
    let events = sse_data(&sse);
    check(events.clone(), "SSE");
    // The log ends with the final state.
    assert_eq!(
        events.last().unwrap()["state"],
        "done",
        "{}",
        events.last().unwrap()
    );
    let (status, ndjson) = alice
        .raw(&format!("/v1/tasks/{task}/events?format=ndjson"), &[])
        .await;
    assert_eq!(status, 200);
    let lines: Vec<Value> = ndjson
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    check(lines.clone(), "NDJSON");
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "no gap, no repeat"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_stream_with_safe_headers_ranges_and_etags() {
    let (_setup, g) = start(
        &[
            ("core-api", plugin("core-api.toml")),
            ("sh", sh_backend("")),
        ],
        "",
    );
    let alice = Client { g: &g, key: ALICE };
    let ws = alice.workspace("files").await;
    let script = "printf '<script>alert(1)</script>' > page.html; \
                  printf '<svg onload=\"alert(1)\"/>' > pic.svg; \
                  printf 'hello world' > note.txt; \
                  truncate -s 1G big.bin";
    let task = alice.task(&ws, script).await;
    let done = alice
        .wait_state(&task, |s| s != "running" && s != "pending")
        .await;
    assert_eq!(done["state"], "done", "{done}");
    let file = |name: &str| format!("/v1/workspaces/{ws}/files/{name}");
    let auth = format!("Bearer {ALICE}");
    let get = |name: String, extra: Vec<(&'static str, String)>| {
        let auth = auth.clone();
        let g = &g;
        async move {
            let mut headers = vec![("authorization", auth.as_str())];
            headers.extend(extra.iter().map(|(n, v)| (*n, v.as_str())));
            let response = g.request("GET", &name, &headers, String::new()).await;
            let status = response.status().as_u16();
            let head = response.headers().clone();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, head, body)
        }
    };
    // Active content: a sandboxed attachment, never sniffed.
    for name in ["page.html", "pic.svg"] {
        let (status, head, _) = get(file(name), vec![]).await;
        assert_eq!(status, 200);
        assert_eq!(head["x-content-type-options"], "nosniff", "{name}");
        assert_eq!(head["content-security-policy"], "sandbox", "{name}");
        assert_eq!(head["content-disposition"], "attachment", "{name}");
    }
    // Validators and ranges.
    let (status, head, body) = get(file("note.txt"), vec![]).await;
    assert_eq!((status, &body[..]), (200, &b"hello world"[..]));
    assert_eq!(head["x-content-type-options"], "nosniff");
    assert_eq!(head["accept-ranges"], "bytes");
    assert!(head.get("content-security-policy").is_none());
    let etag = head["etag"].to_str().unwrap().to_string();
    assert!(head.contains_key("last-modified"));
    let (status, _, body) = get(file("note.txt"), vec![("if-none-match", etag.clone())]).await;
    assert_eq!((status, body.len()), (304, 0));
    let (status, head, body) = get(file("note.txt"), vec![("range", "bytes=6-".into())]).await;
    assert_eq!((status, &body[..]), (206, &b"world"[..]));
    assert_eq!(head["content-range"], "bytes 6-10/11");
    let (status, head, _) = get(file("note.txt"), vec![("range", "bytes=50-".into())]).await;
    assert_eq!(status, 416);
    assert_eq!(head["content-range"], "bytes */11");
    // A range of another version is the whole file.
    let stale = vec![
        ("range", "bytes=0-4".into()),
        ("if-range", "\"old\"".into()),
    ];
    let (status, _, body) = get(file("note.txt"), stale).await;
    assert_eq!((status, body.len()), (200, 11));
    // A gigabyte streams through a handler whose memory cap is 32 MiB.
    let response = g
        .request(
            "GET",
            &file("big.bin"),
            &[("authorization", &auth)],
            String::new(),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-length"],
        (1u64 << 30).to_string().as_str()
    );
    let mut body = response.into_body();
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.unwrap().data_ref() {
            assert!(data.iter().all(|&b| b == 0));
            total += data.len() as u64;
        }
    }
    assert_eq!(total, 1 << 30);
    // Missing files are still the API's 404.
    let (status, body) = alice.call("GET", &file("nope.txt"), Value::Null).await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_surface_starts_only_its_backends_and_a_command_list_holds_on_every_route() {
    let core = plugin("core-api.toml")
        .replace("[limits]", "backends = [\"sh\", \"commands\"]\n\n[limits]");
    let (_setup, g) = start(
        &[
            ("core-api", core),
            ("sh", sh_backend("")),
            ("other", sh_backend("")),
            // A backend that takes a fixed list of commands, as CLK's does.
            ("commands", sh_backend("prompts = [\"true\", \"echo ok\"]")),
        ],
        "",
    );
    let alice = Client { g: &g, key: ALICE };
    let ws = alice.workspace("w").await;
    let start = |backend: &str, prompt: &str| json!({ "workspace_id": ws, "backend": backend, "prompt": prompt });
    let (status, body) = alice
        .call("POST", "/v1/tasks", start("other", "true"))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "refused", "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("other"),
        "{body}"
    );
    let (status, body) = alice
        .call("POST", "/v1/tasks", start("commands", "touch pwned"))
        .await;
    assert!((400..500).contains(&status), "{status} {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not one of"),
        "{body}"
    );
    // Nothing ran.
    let (_, tasks) = alice.call("GET", "/v1/tasks", Value::Null).await;
    assert_eq!(tasks["tasks"].as_array().unwrap().len(), 0, "{tasks}");
    let (status, body) = alice
        .call("POST", "/v1/tasks", start("commands", "echo ok"))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = alice.call("POST", "/v1/tasks", start("sh", "true")).await;
    assert_eq!(status, 201, "{body}");
}
