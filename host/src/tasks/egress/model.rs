//! The model route: origin-form requests go to the task's model upstream, with the per-task
//! token checked and swapped for the real key on the way out.

use super::policy::normalize_host;
use super::relay::{exchange, origin_form, relay, strip_hop_by_hop, text};
use super::usage::UsageScanner;
use super::{AbortOnDrop, Answer, CONNECT_TIMEOUT, Proxy, TaskEgress, connect_any, resolve};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Request, Response, StatusCode, Uri};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use subtle::ConstantTimeEq;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// The model upstream of one task: where origin-form requests go, with which key.
#[derive(Clone)]
pub struct ModelRoute {
    /// Base URL of the upstream, e.g. "https://api.anthropic.com" or "http://127.0.0.1:4000/v1".
    pub upstream: String,
    /// The per-task token the task's CLI was given in place of the key.
    pub token: String,
    /// The real API key; `None` sends requests without one.
    pub key: Option<String>,
}

impl ModelRoute {
    /// The base URL the task's CLI is given: http://<listen addr><upstream path, without
    /// trailing slash>.
    pub fn local_base_url(&self, listen: SocketAddr) -> String {
        let path = self
            .upstream
            .parse::<Uri>()
            .map(|u| u.path().to_owned())
            .unwrap_or_default();
        format!("http://{listen}{}", path.trim_end_matches('/'))
    }
}

impl ModelRoute {
    /// The upstream as an egress allowlist entry (`host:port`), or why its URL is unusable.
    pub fn egress_pattern(&self) -> Result<String, String> {
        let u = Upstream::parse(&self.upstream)?;
        Ok(if u.host.contains(':') {
            format!("[{}]:{}", u.host, u.port)
        } else {
            format!("{}:{}", u.host, u.port)
        })
    }
}

impl fmt::Debug for ModelRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelRoute")
            .field("upstream", &self.upstream)
            .field("token", &"<redacted>")
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The parsed model upstream.
pub(super) struct Upstream {
    tls: bool,
    host: String,
    port: u16,
    /// For the Host header, as the operator wrote it.
    authority: String,
}

impl Upstream {
    pub(super) fn parse(url: &str) -> Result<Upstream, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("model upstream {url:?}: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(format!(
                    "model upstream {url:?}: must be http:// or https://"
                ));
            }
        };
        let authority = uri.authority().filter(|a| !a.as_str().contains('@'));
        let authority = authority.ok_or_else(|| format!("model upstream {url:?}: needs a host"))?;
        Ok(Upstream {
            tls,
            host: normalize_host(authority.host()),
            port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            authority: authority.as_str().to_owned(),
        })
    }
}

pub(super) async fn model(proxy: &Proxy, req: Request<Incoming>) -> Answer {
    let egress = &proxy.egress;
    let (mut parts, body) = req.into_parts();
    // The path only: the query may carry the token.
    let path = parts.uri.path().to_owned();
    let method = parts.method.clone();
    let answer = match (&egress.model, &proxy.upstream) {
        (Some(route), Some(upstream)) => {
            strip_hop_by_hop(&mut parts.headers);
            if swap_token(&mut parts, route) {
                to_upstream(egress, upstream, parts, body).await
            } else {
                text(StatusCode::UNAUTHORIZED, "missing or wrong model token")
            }
        }
        _ => text(StatusCode::NOT_FOUND, "this task has no model upstream"),
    };
    let status = answer.status().as_u16();
    tracing::info!(tenant = %egress.tenant, task = %egress.task, backend = %egress.backend, %method, %path, status, "model proxy");
    answer
}

async fn to_upstream(
    egress: &Arc<TaskEgress>,
    up: &Upstream,
    mut parts: Parts,
    body: Incoming,
) -> Answer {
    parts.uri = origin_form(&parts.uri);
    if let Ok(host) = HeaderValue::from_str(&up.authority) {
        parts.headers.insert(header::HOST, host);
    }
    // Compressed responses would hide the usage figures from the scanner.
    parts.headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    let req = Request::from_parts(parts, body);
    match upstream_exchange(up, req).await {
        Ok((response, conn)) => {
            egress.usage.requests.fetch_add(1, Ordering::Relaxed);
            let sse = response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream"));
            relay(
                response,
                conn,
                Some((UsageScanner::new(sse), egress.clone())),
            )
        }
        Err(e) => {
            tracing::warn!(task = %egress.task, upstream = %up.authority, "model upstream failed: {e}");
            text(StatusCode::BAD_GATEWAY, "model upstream unreachable")
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn upstream_exchange(
    up: &Upstream,
    req: Request<Incoming>,
) -> Result<(Response<Incoming>, AbortOnDrop), BoxError> {
    let stream = connect_any(&resolve(&up.host, up.port).await?).await?;
    if !up.tls {
        return Ok(exchange(stream, req).await?);
    }
    let name = ServerName::try_from(up.host.clone())?;
    let tls =
        tokio::time::timeout(CONNECT_TIMEOUT, tls_connector().connect(name, stream)).await??;
    Ok(exchange(tls, req).await?)
}

/// The TLS client for HTTPS upstreams: ring, the webpki roots, HTTP/1.1.
pub(crate) fn tls_connector() -> &'static TlsConnector {
    static TLS: OnceLock<TlsConnector> = OnceLock::new();
    TLS.get_or_init(|| {
        // Named explicitly: the process-wide default provider is ambiguous when several are built.
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsConnector::from(Arc::new(config))
    })
}

/// Finds the task's token wherever the CLI's SDK put it and swaps in the real key there, or
/// removes it if there is no key, so that the token never goes upstream. False if absent.
fn swap_token(parts: &mut Parts, route: &ModelRoute) -> bool {
    let token = route.token.as_bytes();
    let mut found = false;
    for (name, prefix) in [
        ("x-api-key", ""),
        ("x-goog-api-key", ""),
        ("authorization", "Bearer "),
    ] {
        let Some(value) = parts.headers.get(name) else {
            continue;
        };
        let (head, given) = value.as_bytes().split_at(prefix.len().min(value.len()));
        if !head.eq_ignore_ascii_case(prefix.as_bytes()) || !ct_eq(given, token) {
            continue;
        }
        found = true;
        let real = route
            .key
            .as_ref()
            .and_then(|k| HeaderValue::from_str(&format!("{prefix}{k}")).ok());
        match real {
            Some(mut value) => {
                value.set_sensitive(true);
                parts.headers.insert(name, value);
            }
            None => drop(parts.headers.remove(name)),
        }
    }
    let swapped = parts
        .uri
        .query()
        .and_then(|q| swap_query_key(q, token, route.key.as_deref()));
    if let Some(query) = swapped {
        let sep = if query.is_empty() { "" } else { "?" };
        match format!("{}{sep}{query}", parts.uri.path()).parse() {
            Ok(uri) => (parts.uri, found) = (uri, true),
            Err(_) => return false,
        }
    }
    found
}

/// Gemini style `?key=`: the query with the token replaced (or removed), if it was there.
fn swap_query_key(query: &str, token: &[u8], key: Option<&str>) -> Option<String> {
    let mut found = false;
    let pairs: Vec<String> = query
        .split('&')
        .filter_map(|pair| match pair.strip_prefix("key=") {
            Some(given) if ct_eq(given.as_bytes(), token) => {
                found = true;
                key.map(|k| format!("key={}", percent_encode(k)))
            }
            _ => Some(pair.to_owned()),
        })
        .collect();
    found.then(|| pairs.join("&"))
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// All but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`), so that a key is one
/// query value whatever it holds; bytes of non-ASCII characters are always escaped.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, QUERY_VALUE).to_string()
}

#[cfg(test)]
mod tests {
    use super::super::EgressPolicy;
    use super::super::test_support::*;
    use super::*;
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    #[tokio::test]
    async fn model_proxy_swaps_the_token_for_the_key_where_it_was() {
        let (upstream, seen) = echo_origin().await;
        let egress = task(&[], Some(route(format!("http://{upstream}"), Some(KEY))));
        let (proxy, _h) = start(egress.clone());
        let cases = [
            (
                "/v1/messages?beta=true",
                "x-api-key: $T\r\n",
                "x-api-key: $K",
            ),
            (
                "/v1/responses",
                "authorization: Bearer $T\r\n",
                "authorization: bearer $K",
            ),
            (
                "/v1beta/m:gen",
                "x-goog-api-key: $T\r\n",
                "x-goog-api-key: $K",
            ),
            (
                "/v1beta/m:gen?alt=sse&key=$T",
                "",
                "get /v1beta/m:gen?alt=sse&key=$K ",
            ),
            // A client that sends even loopback through HTTP_PROXY.
            (
                &format!("http://{proxy}/v1/messages"),
                "x-api-key: $T\r\n",
                "x-api-key: $K",
            ),
        ];
        for (target, auth, expected) in cases {
            let answer = send(proxy, &get(&fill(target), &fill(auth))).await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{target}: {answer}");
            assert!(answer.contains(&fill(expected)), "{target}: {answer}");
            assert!(answer.contains(&format!("host: {upstream}")) && !answer.contains(TOKEN));
        }
        assert_eq!(seen.load(Ordering::SeqCst), cases.len());
        assert_eq!(egress.usage.requests(), cases.len() as u64);

        // No key configured: the token is removed, not forwarded.
        let (proxy, _h) = start(task(&[], Some(route(format!("http://{upstream}"), None))));
        let answer = send(
            proxy,
            &get(&fill("/m?key=$T&x=1"), &fill("x-api-key: $T\r\n")),
        )
        .await;
        assert!(
            answer.contains("get /m?x=1 ") && !answer.contains("x-api-key"),
            "{answer}"
        );
        assert!(!answer.contains(TOKEN));
    }

    #[tokio::test]
    async fn model_proxy_refuses_a_wrong_or_missing_token() {
        let (upstream, seen) = echo_origin().await;
        let (proxy, _h) = start(task(
            &[],
            Some(route(format!("http://{upstream}"), Some(KEY))),
        ));
        let wrong = [
            "x-api-key: tok-12",
            "authorization: Bearer tok-1234",
            "authorization: $T",
        ];
        for auth in wrong
            .map(|h| fill(h) + "\r\n")
            .into_iter()
            .chain([String::new()])
        {
            let answer = send(proxy, &get("/v1/messages?key=nope", &auth)).await;
            assert!(answer.starts_with("HTTP/1.1 401"), "{auth}: {answer}");
            assert!(!answer.contains(TOKEN) && !answer.contains(KEY));
        }
        assert_eq!(seen.load(Ordering::SeqCst), 0, "the upstream saw a request");
        let (proxy, _h) = start(task(&[], None));
        let answer = send(proxy, &get("/v1/messages", "")).await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    }

    /// An upstream that sends the first event, then the rest once `go` fires.
    async fn two_part_upstream(go: tokio::sync::oneshot::Receiver<()>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let chunk = |event: &str| format!("{:x}\r\n{event}\n\n\r\n", event.len() + 2);
        let head =
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked";
        let first = r#"data: {"type":"message_start","message":{"usage":{"input_tokens":25,"output_tokens":1}}}"#;
        let first = format!("{head}\r\n\r\n{}", chunk(first));
        let delta = r#"data: {"type":"message_delta","usage":{"output_tokens":15}}"#;
        let rest = chunk(delta) + &chunk(r#"data: {"type":"message_stop"}"#) + "0\r\n\r\n";
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            read_request(&mut s).await;
            s.write_all(first.as_bytes()).await.unwrap();
            go.await.unwrap();
            s.write_all(rest.as_bytes()).await.unwrap();
        });
        addr
    }

    #[tokio::test]
    async fn model_proxy_streams_events_and_counts_usage() {
        let (go, wait) = tokio::sync::oneshot::channel();
        let upstream = two_part_upstream(wait).await;
        let egress = task(&[], Some(route(format!("http://{upstream}"), Some(KEY))));
        let (proxy, _h) = start(egress.clone());
        let mut s = TcpStream::connect(proxy).await.unwrap();
        let head = "POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: $T\r\nconnection: close";
        s.write_all(fill(&format!("{head}\r\ncontent-length: 2\r\n\r\n{{}}")).as_bytes())
            .await
            .unwrap();
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).contains("message_start") {
            let mut buf = [0; 4096];
            let read = tokio::time::timeout(WAIT, s.read(&mut buf)).await;
            let n = read.expect("the first event was held back").unwrap();
            assert!(n > 0, "closed early");
            got.extend_from_slice(&buf[..n]);
        }
        go.send(()).unwrap();
        tokio::time::timeout(WAIT, s.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert!(String::from_utf8_lossy(&got).contains("message_stop"));
        // The proxy counts when it sees the body end, which may be just after the client does.
        let usage = &egress.usage;
        for _ in 0..100 {
            if usage.output_tokens() > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            (
                usage.input_tokens(),
                usage.output_tokens(),
                usage.requests()
            ),
            (25, 15, 1)
        );
    }

    #[tokio::test]
    async fn unreachable_or_non_tls_upstream_is_a_bad_gateway() {
        let fake = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = fake.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = fake.accept().await {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await;
            }
        });
        // Bound but never listening, and held to the end: a connection to it is refused. (A
        // port bound and let go could be taken meanwhile by another test's server.)
        let refusing = tokio::net::TcpSocket::new_v4().unwrap();
        refusing.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let closed = refusing.local_addr().unwrap();
        for upstream in [format!("https://{addr}"), format!("http://{closed}")] {
            let (proxy, _h) = start(task(&[], Some(route(upstream, Some(KEY)))));
            let answer = send(proxy, &get("/v1/messages", &fill("x-api-key: $T\r\n"))).await;
            assert!(
                answer.starts_with("HTTP/1.1 502") && !answer.contains(KEY),
                "{answer}"
            );
        }
    }

    #[test]
    fn a_key_in_the_query_is_percent_encoded() {
        // Only the unreserved characters pass; every other byte is %XX, upper-case.
        for b in 0..=0x7f_u8 {
            let c = char::from(b);
            let kept = c.is_ascii_alphanumeric() || "-._~".contains(c);
            let expected = if kept {
                c.to_string()
            } else {
                format!("%{b:02X}")
            };
            assert_eq!(percent_encode(&c.to_string()), expected, "{b:#04x}");
        }
        assert_eq!(percent_encode("é€"), "%C3%A9%E2%82%AC");
        let query = fill("alt=sse&key=$T");
        let swapped = swap_query_key(&query, TOKEN.as_bytes(), Some("a/b+c=d&e f"));
        assert_eq!(swapped.unwrap(), "alt=sse&key=a%2Fb%2Bc%3Dd%26e%20f");
    }

    #[test]
    fn the_upstream_becomes_an_allowlist_entry_or_is_refused() {
        let route = |upstream: &str| ModelRoute {
            upstream: upstream.into(),
            token: "t".into(),
            key: None,
        };
        let pattern = |u: &str| route(u).egress_pattern();
        assert_eq!(
            pattern("https://API.example.com/v1").unwrap(),
            "api.example.com:443"
        );
        assert_eq!(pattern("http://127.0.0.1:4000").unwrap(), "127.0.0.1:4000");
        assert_eq!(pattern("http://[::1]/x").unwrap(), "[::1]:80");
        for bad in [
            "ftp://example.com",
            "http://user@example.com",
            "example.com",
        ] {
            assert!(pattern(bad).is_err(), "{bad}");
        }
        // What it gives is a pattern the policy takes.
        assert!(EgressPolicy::new([pattern("http://[::1]/x").unwrap()]).is_ok());
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let model = route("https://api.example.com/v1/".into(), Some(KEY));
        let listen: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        assert_eq!(model.local_base_url(listen), "http://127.0.0.1:9000/v1");
        let bare = route("http://h:1".into(), None);
        assert_eq!(bare.local_base_url(listen), "http://127.0.0.1:9000");
        let egress = task(&["*"], Some(model.clone()));
        for shown in [format!("{model:?}"), format!("{egress:?}")] {
            assert!(shown.contains("api.example.com"), "{shown}");
            assert!(!shown.contains(TOKEN) && !shown.contains(KEY), "{shown}");
        }
    }
}
