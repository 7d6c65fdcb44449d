//! `gantry plugin test` for a handler: requests from a file sent to the component through the
//! route table and the runtime of a node assembled in memory for the test, with no listening
//! socket. The host interfaces are the real ones over a throwaway store and data directory;
//! the responses are rendered as text and compared with an expected file, as a backend's
//! transcripts are.
//!
//! A requests file is JSON Lines, one request a line (comments and blank lines skipped):
//!
//! ```text
//! {"method": "GET", "path": "/greet/hello?name=you"}
//! {"method": "POST", "path": "/greet/items", "headers": {"x-trace": "1"}, "body": {"a": 1}}
//! {"path": "/greet/hello", "tenant": "alice"}
//! ```
//!
//! - `path` (required): the path and query, starting with `/`;
//! - `method`: `GET` when absent;
//! - `headers`: an object of header names and string values;
//! - `body`: a string sent as it is, or any other JSON value sent as JSON (with
//!   `content-type: application/json` unless `headers` names one);
//! - `tenant`: the caller's tenant, `local` when absent;
//! - `redact`: JSON pointers into the rendered answer (`/body/id`, `/body/items/0/created_at`)
//!   whose values change from run to run; each is shown as `"[redacted]"`, so that the
//!   expected file holds what must not change.

use crate::http::router::Router;
use crate::runtime::{Caller, Runtime};
use crate::tenants::TenantId;
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Map, Value, json};

/// One request of a requests file.
#[derive(Debug, Clone, PartialEq)]
pub struct TestRequest {
    /// The HTTP method.
    pub method: String,
    /// The path and query.
    pub path: String,
    /// Header names and values.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// The caller's tenant.
    pub tenant: String,
    /// JSON pointers into the rendered answer whose values are not compared.
    pub redact: Vec<String>,
}

const KEYS: &[&str] = &["method", "path", "headers", "body", "tenant", "redact"];

/// What a redacted value is shown as.
pub const REDACTED: &str = "[redacted]";

/// Read a requests file; an error names the line and what is wrong with it.
pub fn parse(text: &str) -> Result<Vec<TestRequest>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let entry: Map<String, Value> =
            serde_json::from_str(line).with_context(|| format!("line {n}: not a JSON object"))?;
        if let Some(unknown) = entry.keys().find(|k| !KEYS.contains(&k.as_str())) {
            bail!(
                "line {n}: unknown key `{unknown}`: expected {}",
                KEYS.join(", ")
            );
        }
        let string = |key: &str| -> Result<Option<String>> {
            match entry.get(key) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => bail!("line {n}: `{key}` must be a string, not {other}"),
            }
        };
        let Some(path) = string("path")? else {
            bail!("line {n}: a request needs a `path`");
        };
        if !path.starts_with('/') {
            bail!("line {n}: the path {path:?} must start with `/`");
        }
        let method = string("method")?.unwrap_or_else(|| "GET".into());
        if hyper::Method::from_bytes(method.as_bytes()).is_err() {
            bail!("line {n}: {method:?} is not an HTTP method");
        }
        let mut headers = Vec::new();
        match entry.get("headers") {
            None => {}
            Some(Value::Object(map)) => {
                for (name, value) in map {
                    let Some(value) = value.as_str() else {
                        bail!("line {n}: header {name:?} must be a string");
                    };
                    headers.push((name.to_ascii_lowercase(), value.to_string()));
                }
            }
            Some(_) => bail!("line {n}: `headers` must be an object of strings"),
        }
        let body = match entry.get("body") {
            None => Vec::new(),
            Some(Value::String(s)) => s.clone().into_bytes(),
            Some(value) => {
                if !headers.iter().any(|(h, _)| h == "content-type") {
                    headers.push(("content-type".into(), "application/json".into()));
                }
                value.to_string().into_bytes()
            }
        };
        let redact = match entry.get("redact") {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|p| match p.as_str() {
                    Some(p) if p.starts_with('/') => Ok(p.to_string()),
                    _ => bail!("line {n}: `redact` lists JSON pointers, such as \"/body/id\""),
                })
                .collect::<Result<_>>()?,
            Some(_) => bail!("line {n}: `redact` lists JSON pointers, such as \"/body/id\""),
        };
        let tenant = string("tenant")?.unwrap_or_else(|| "local".into());
        TenantId::new(&tenant).with_context(|| format!("line {n}: tenant {tenant:?}"))?;
        out.push(TestRequest {
            method: method.to_ascii_uppercase(),
            path,
            headers,
            body,
            tenant,
            redact,
        });
    }
    if out.is_empty() {
        bail!("the file holds no request");
    }
    Ok(out)
}

/// Send each request through `router` to `runtime`'s handlers, in order; the rendering of
/// the answers, one JSON value a line.
pub async fn send_all(
    runtime: &Runtime,
    router: &Router,
    requests: &[TestRequest],
) -> Result<String> {
    let mut out = String::new();
    for r in requests {
        let mut line = send(runtime, router, r).await?;
        for pointer in &r.redact {
            // A pointer that names nothing is left alone: the diff shows the answer's shape.
            if let Some(value) = line.pointer_mut(pointer) {
                *value = REDACTED.into();
            }
        }
        out.push_str(&line.to_string());
        out.push('\n');
    }
    Ok(out)
}

async fn send(runtime: &Runtime, router: &Router, r: &TestRequest) -> Result<Value> {
    let shown = format!("{} {}", r.method, r.path);
    let route_path = r.path.split('?').next().unwrap_or_default();
    let Some(target) = router.lookup(route_path) else {
        return Ok(json!({ "request": shown, "error": "no plugin serves this path" }));
    };
    let mut request = hyper::Request::builder()
        .method(r.method.as_str())
        .uri(format!("http://plugin-test{}", r.path));
    for (name, value) in &r.headers {
        request = request.header(name, value);
    }
    let request = request
        .body(Full::new(Bytes::from(r.body.clone())))
        .with_context(|| format!("building {shown}"))?;
    let caller = Caller::tenant(TenantId::new(&r.tenant)?);
    let response = match runtime
        .handle(&target.plugin, target.timeout, &caller, request)
        .await
    {
        Ok(response) => response,
        Err(failure) => {
            return Ok(json!({
                "request": shown,
                "failure": failure.code(),
                "message": failure.message(),
            }));
        }
    };
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = match response.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return Ok(json!({
                "request": shown,
                "status": status,
                "failure": "body",
                "message": format!("the body failed midway: {e}"),
            }));
        }
    };
    let is_json = content_type
        .as_deref()
        .is_some_and(|t| t.starts_with("application/json"));
    let body = match serde_json::from_slice::<Value>(&bytes) {
        Ok(value) if is_json => value,
        _ => Value::String(String::from_utf8_lossy(&bytes).into_owned()),
    };
    Ok(json!({
        "request": shown,
        "status": status,
        "content_type": content_type,
        "body": body,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_requests_with_their_defaults() {
        let rs = parse(
            "# two\n{\"path\": \"/a?b=1\"}\n{\"method\": \"post\", \"path\": \"/c\", \"body\": {\"x\": 1}, \"tenant\": \"alice\", \"headers\": {\"X-A\": \"1\"}}\n",
        )
        .unwrap();
        assert_eq!(rs[0].method, "GET");
        assert_eq!(rs[0].tenant, "local");
        assert!(rs[0].body.is_empty());
        assert_eq!(rs[1].method, "POST");
        assert_eq!(rs[1].body, b"{\"x\":1}");
        assert_eq!(
            rs[1].headers,
            [
                ("x-a".to_string(), "1".to_string()),
                ("content-type".to_string(), "application/json".to_string())
            ]
        );
        assert_eq!(rs[1].tenant, "alice");
    }

    #[test]
    fn bad_input_names_its_line() {
        let cases = [
            ("", "holds no request"),
            (
                "{\"method\": \"GET\"}\n",
                "line 1: a request needs a `path`",
            ),
            ("{\"path\": \"a\"}\n", "must start with `/`"),
            (
                "{\"path\": \"/a\", \"verb\": \"GET\"}\n",
                "unknown key `verb`",
            ),
            (
                "{\"path\": \"/a\", \"method\": \"G E T\"}\n",
                "not an HTTP method",
            ),
            (
                "{\"path\": \"/a\", \"headers\": {\"x\": 1}}\n",
                "header \"x\" must be a string",
            ),
            (
                "{\"path\": \"/a\", \"tenant\": \"no such/tenant\"}\n",
                "line 1: tenant",
            ),
            ("x\n", "line 1: not a JSON object"),
            (
                "{\"path\": \"/a\", \"redact\": [\"id\"]}\n",
                "`redact` lists JSON pointers",
            ),
            (
                "{\"path\": \"/a\", \"redact\": \"/id\"}\n",
                "`redact` lists JSON pointers",
            ),
        ];
        for (text, expected) in cases {
            let e = format!("{:#}", parse(text).unwrap_err());
            assert!(e.contains(expected), "{text:?}: {e}");
        }
    }
}
