//! `gantry:plugin/responses`: answers the host writes on a handler's behalf, so that a long
//! answer holds no component instance. `stream-log` sends the response head now and leaves a
//! [`LogHandoff`] for the call to pump once the guest has returned; `send-file` streams a
//! workspace file from disk, with `Range`, `ETag` and safe headers for active content.

use super::Services;
use super::bindings::gantry::plugin::responses as wit;
use super::bindings::gantry::plugin::workspaces::WorkspaceError as WitWorkspaceError;
use super::tasks::LogReader;
use super::workspaces::ws_error;
use crate::tenants::TenantId;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use hyper::header::{HeaderName, HeaderValue};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::UNIX_EPOCH;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p2::types::HostResponseOutparam;

/// Chunks buffered between the host's writer and the client: a slow client holds the writer
/// back (and with it the log reader) instead of growing a buffer.
const BODY_CHUNKS: usize = 4;
/// What one read of a file sends.
const FILE_CHUNK: usize = 64 << 10;

/// A log the call handed to the host to answer with: the reader, the shaper's first state,
/// and the sending half of the answer's body.
pub(crate) struct LogHandoff {
    pub(crate) log: LogReader,
    pub(crate) state: String,
    pub(crate) body: mpsc::Sender<Bytes>,
}

/// What `responses` reaches: the services and the call's table, for the caller's tenant.
pub(crate) struct ResponsesView<'a> {
    pub(crate) services: &'a Services,
    pub(crate) tenant: &'a TenantId,
    pub(crate) handoff: &'a mut Option<LogHandoff>,
    pub(crate) table: &'a mut ResourceTable,
}

/// A response body the host writes through a channel; it ends when the sender is dropped.
struct HostBody(mpsc::Receiver<Bytes>);

impl Body for HostBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

fn channel_body() -> (mpsc::Sender<Bytes>, HyperOutgoingBody) {
    let (tx, rx) = mpsc::channel(BODY_CHUNKS);
    (tx, HostBody(rx).boxed_unsync())
}

/// A response head from a guest's status and headers; a bad one is the guest's bug (a trap).
fn head(
    status: u16,
    headers: &[(String, String)],
) -> wasmtime::Result<hyper::http::response::Builder> {
    let mut builder = hyper::Response::builder().status(
        hyper::StatusCode::from_u16(status)
            .map_err(|_| wasmtime::format_err!("{status} is not an HTTP status"))?,
    );
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| wasmtime::format_err!("{name:?} is not a header name"))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| wasmtime::format_err!("the value of header {name} is not valid"))?;
        builder = builder.header(name, value);
    }
    Ok(builder)
}

fn send(out: HostResponseOutparam, response: hyper::Response<HyperOutgoingBody>) {
    (out.send)(Ok(response));
}

impl wit::Host for ResponsesView<'_> {
    async fn stream_log(
        &mut self,
        out: Resource<HostResponseOutparam>,
        log: Resource<LogReader>,
        answer: wit::LogAnswer,
    ) -> wasmtime::Result<()> {
        if self.handoff.is_some() {
            wasmtime::bail!("stream-log was already called in this call");
        }
        let builder = head(answer.status, &answer.headers)?;
        let out = self.table.delete(out)?;
        let log = self.table.delete(log)?;
        let (tx, body) = channel_body();
        send(out, builder.body(body)?);
        *self.handoff = Some(LogHandoff {
            log,
            state: answer.state,
            body: tx,
        });
        Ok(())
    }

    async fn send_file(
        &mut self,
        out: Resource<HostResponseOutparam>,
        workspace_id: String,
        path: String,
        answer: wit::FileAnswer,
    ) -> wasmtime::Result<Result<(), (WitWorkspaceError, Resource<HostResponseOutparam>)>> {
        let opened = self
            .services
            .workspaces
            .open_file(self.tenant, &workspace_id, &path)
            .await;
        let (file, meta) = match opened {
            Ok(opened) => opened,
            Err(e) => return Ok(Err((ws_error(e), out))),
        };
        let mut file_facts = FileFacts::of(&meta);
        file_facts.active_name = has_active_extension(&path);
        let plan = plan(&file_facts, &answer);
        let mut builder = head(plan.status, &answer.headers)?;
        for (name, value) in file_headers(&file_facts, &plan, &answer.headers) {
            builder = builder.header(name, value);
        }
        let out = self.table.delete(out)?;
        let Some((start, len)) = plan.bytes else {
            let empty = http_body_util::Empty::new().map_err(|never| match never {});
            send(out, builder.body(empty.boxed_unsync())?);
            return Ok(Ok(()));
        };
        let (tx, body) = channel_body();
        send(out, builder.body(body)?);
        tokio::spawn(copy_file(tokio::fs::File::from_std(file), start, len, tx));
        Ok(Ok(()))
    }
}

/// Send `len` bytes of `file` from `start`, until done or the client is gone.
async fn copy_file(mut file: tokio::fs::File, start: u64, len: u64, body: mpsc::Sender<Bytes>) {
    if start > 0 && file.seek(std::io::SeekFrom::Start(start)).await.is_err() {
        return;
    }
    let mut left = len;
    while left > 0 {
        let mut chunk = vec![0; FILE_CHUNK.min(usize::try_from(left).unwrap_or(FILE_CHUNK))];
        match file.read(&mut chunk).await {
            Ok(0) | Err(_) => return, // Shorter than it was: the body ends short, as an error.
            Ok(n) => {
                chunk.truncate(n);
                left -= n as u64;
                if body.send(Bytes::from(chunk)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// What the answer needs to know of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileFacts {
    pub(crate) len: u64,
    /// A strong validator from the size and the modification time (as nginx makes them).
    pub(crate) etag: String,
    pub(crate) modified: Option<std::time::SystemTime>,
    /// Its name is one a browser would render as a document whatever the type sent.
    pub(crate) active_name: bool,
}

impl FileFacts {
    fn of(meta: &std::fs::Metadata) -> FileFacts {
        let modified = meta.modified().ok();
        let nanos = modified
            .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        FileFacts {
            len: meta.len(),
            etag: format!("\"{:x}-{nanos:x}\"", meta.len()),
            modified,
            active_name: false,
        }
    }
}

/// The answer to a file request: its status, and the bytes to send (none for 304 and 416).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) status: u16,
    /// `(start, length)`.
    pub(crate) bytes: Option<(u64, u64)>,
    /// The `content-range` header of a 206 or 416.
    pub(crate) content_range: Option<String>,
}

/// Decide the answer: 304 when `if-none-match` matches, 206 for one satisfiable range (when
/// `if-range`, if sent, names this version), 416 for an unsatisfiable one, else 200.
pub(crate) fn plan(file: &FileFacts, answer: &wit::FileAnswer) -> Plan {
    let whole = Plan {
        status: 200,
        bytes: Some((0, file.len)),
        content_range: None,
    };
    if let Some(tags) = &answer.if_none_match
        && etag_matches(tags, &file.etag)
    {
        return Plan {
            status: 304,
            bytes: None,
            content_range: None,
        };
    }
    let Some(range) = &answer.range else {
        return whole;
    };
    // A range of an older version would splice two versions together.
    if answer
        .if_range
        .as_deref()
        .is_some_and(|v| v.trim() != file.etag)
    {
        return whole;
    }
    match parse_range(range, file.len) {
        RangeAnswer::Whole => whole,
        RangeAnswer::Part(start, end) => Plan {
            status: 206,
            bytes: Some((start, end - start + 1)),
            content_range: Some(format!("bytes {start}-{end}/{}", file.len)),
        },
        RangeAnswer::Unsatisfiable => Plan {
            status: 416,
            bytes: None,
            content_range: Some(format!("bytes */{}", file.len)),
        },
    }
}

fn etag_matches(header: &str, etag: &str) -> bool {
    header
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

#[derive(Debug, PartialEq, Eq)]
enum RangeAnswer {
    /// Not one range this answers: send the whole file (several ranges, a malformed one, a
    /// unit other than bytes).
    Whole,
    /// Inclusive.
    Part(u64, u64),
    Unsatisfiable,
}

fn parse_range(header: &str, len: u64) -> RangeAnswer {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeAnswer::Whole;
    };
    if spec.contains(',') {
        return RangeAnswer::Whole;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return RangeAnswer::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    if first.is_empty() {
        // `bytes=-N`: the last N bytes.
        return match number(last) {
            None => RangeAnswer::Whole,
            Some(0) => RangeAnswer::Unsatisfiable,
            Some(_) if len == 0 => RangeAnswer::Unsatisfiable,
            Some(n) => RangeAnswer::Part(len.saturating_sub(n), len - 1),
        };
    }
    let Some(start) = number(first) else {
        return RangeAnswer::Whole;
    };
    let end = if last.is_empty() {
        None
    } else {
        match number(last) {
            Some(end) if end >= start => Some(end),
            _ => return RangeAnswer::Whole,
        }
    };
    if start >= len {
        return RangeAnswer::Unsatisfiable;
    }
    RangeAnswer::Part(start, end.map_or(len - 1, |e| e.min(len - 1)))
}

/// Content types a browser runs or renders as a document: sent as attachments in a
/// sandbox, so that a file a task wrote cannot act as a page of gantry's origin.
fn is_active(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        essence.as_str(),
        "text/html"
            | "application/xhtml+xml"
            | "image/svg+xml"
            | "text/xml"
            | "application/xml"
            | "text/xsl"
            | "application/xslt+xml"
            | "text/javascript"
            | "application/javascript"
            | "application/ecmascript"
            | "text/ecmascript"
            | "application/wasm"
            | "multipart/x-mixed-replace"
            | "message/rfc822"
            | "application/pdf"
    ) || essence.ends_with("+xml")
}

/// Names a browser opened as a file (or a sniffing proxy) would treat as a document.
fn has_active_extension(path: &str) -> bool {
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    matches!(
        ext.as_str(),
        "html"
            | "htm"
            | "xhtml"
            | "shtml"
            | "svg"
            | "svgz"
            | "xml"
            | "xsl"
            | "xslt"
            | "js"
            | "mjs"
            | "mht"
            | "mhtml"
            | "pdf"
    )
}

/// The headers the host adds to a file answer.
fn file_headers(
    file: &FileFacts,
    plan: &Plan,
    given: &[(String, String)],
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    let mut add = |name: HeaderName, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            out.push((name, value));
        }
    };
    use hyper::header;
    let content_type = given
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.as_str());
    if content_type.is_none() {
        add(header::CONTENT_TYPE, "application/octet-stream".into());
    }
    add(header::X_CONTENT_TYPE_OPTIONS, "nosniff".into());
    add(header::ACCEPT_RANGES, "bytes".into());
    add(header::ETAG, file.etag.clone());
    if let Some(modified) = file.modified {
        add(header::LAST_MODIFIED, httpdate::fmt_http_date(modified));
    }
    if file.active_name || content_type.is_some_and(is_active) {
        add(header::CONTENT_SECURITY_POLICY, "sandbox".into());
        let named = given.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case("content-disposition") && v.starts_with("attachment")
        });
        if !named {
            add(header::CONTENT_DISPOSITION, "attachment".into());
        }
    }
    if let Some(range) = &plan.content_range {
        add(header::CONTENT_RANGE, range.clone());
    }
    let length = plan.bytes.map_or(0, |(_, len)| len);
    if plan.status != 304 {
        add(header::CONTENT_LENGTH, length.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(len: u64) -> FileFacts {
        FileFacts {
            len,
            etag: "\"a-1\"".into(),
            modified: None,
            active_name: false,
        }
    }

    fn answer(range: Option<&str>, inm: Option<&str>, if_range: Option<&str>) -> wit::FileAnswer {
        wit::FileAnswer {
            headers: vec![],
            range: range.map(Into::into),
            if_none_match: inm.map(Into::into),
            if_range: if_range.map(Into::into),
        }
    }

    #[test]
    fn ranges() {
        let cases = [
            ("bytes=0-4", RangeAnswer::Part(0, 4)),
            ("bytes=5-", RangeAnswer::Part(5, 9)),
            ("bytes=-3", RangeAnswer::Part(7, 9)),
            ("bytes=-30", RangeAnswer::Part(0, 9)),
            ("bytes=8-100", RangeAnswer::Part(8, 9)),
            ("bytes=10-", RangeAnswer::Unsatisfiable),
            ("bytes=-0", RangeAnswer::Unsatisfiable),
            ("bytes=4-2", RangeAnswer::Whole),
            ("bytes=0-1,4-5", RangeAnswer::Whole),
            ("items=0-4", RangeAnswer::Whole),
            ("bytes=x-4", RangeAnswer::Whole),
            ("bytes=1-y", RangeAnswer::Whole),
            ("bytes=+1-2", RangeAnswer::Whole),
            ("bytes=", RangeAnswer::Whole),
        ];
        for (header, expected) in cases {
            assert_eq!(parse_range(header, 10), expected, "{header}");
        }
        assert_eq!(parse_range("bytes=0-", 0), RangeAnswer::Unsatisfiable);
    }

    #[test]
    fn plans() {
        let f = facts(10);
        assert_eq!(plan(&f, &answer(None, None, None)).status, 200);
        let p = plan(&f, &answer(Some("bytes=2-3"), None, None));
        assert_eq!((p.status, p.bytes), (206, Some((2, 2))));
        assert_eq!(p.content_range.as_deref(), Some("bytes 2-3/10"));
        let p = plan(&f, &answer(Some("bytes=20-"), None, None));
        assert_eq!((p.status, p.bytes), (416, None));
        assert_eq!(p.content_range.as_deref(), Some("bytes */10"));
        // A validator that matches: nothing to send.
        for inm in ["\"a-1\"", "W/\"a-1\"", "\"b\", \"a-1\"", "*"] {
            assert_eq!(
                plan(&f, &answer(None, Some(inm), None)).status,
                304,
                "{inm}"
            );
        }
        assert_eq!(plan(&f, &answer(None, Some("\"b\""), None)).status, 200);
        // A range of another version is the whole file.
        let p = plan(&f, &answer(Some("bytes=2-3"), None, Some("\"old\"")));
        assert_eq!(p.status, 200);
        let p = plan(&f, &answer(Some("bytes=2-3"), None, Some("\"a-1\"")));
        assert_eq!(p.status, 206);
    }

    #[test]
    fn active_content_goes_out_as_a_sandboxed_attachment() {
        let f = facts(3);
        let whole = plan(&f, &answer(None, None, None));
        let names = |given: &[(&str, &str)]| {
            let given: Vec<_> = given
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            file_headers(&f, &whole, &given)
                .into_iter()
                .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap()))
                .collect::<Vec<_>>()
        };
        for active in [
            "text/html; charset=utf-8",
            "image/svg+xml",
            "application/xhtml+xml",
            "text/javascript",
            "application/atom+xml",
        ] {
            let h = names(&[("content-type", active)]);
            assert!(
                h.contains(&"content-security-policy: sandbox".to_string()),
                "{active}: {h:?}"
            );
            assert!(
                h.contains(&"content-disposition: attachment".to_string()),
                "{active}"
            );
            assert!(h.contains(&"x-content-type-options: nosniff".to_string()));
        }
        let h = names(&[("content-type", "text/plain; charset=utf-8")]);
        assert!(!h.iter().any(|l| l.starts_with("content-security-policy")));
        assert!(h.contains(&"content-length: 3".to_string()));
        assert!(h.contains(&"etag: \"a-1\"".to_string()));
        let h = names(&[]);
        assert!(h.contains(&"content-type: application/octet-stream".to_string()));
    }
}
