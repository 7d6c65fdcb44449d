//! Small helpers over `wasi:http` for handlers: read a request, answer, stream.

use crate::bindings::wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use crate::bindings::wasi::io::streams::{OutputStream, StreamError};

/// An incoming request, with its head decoded.
pub struct Request {
    inner: IncomingRequest,
    method: String,
    path: String,
    query: String,
}

impl Request {
    /// Decode the head of an incoming request.
    pub fn new(inner: IncomingRequest) -> Self {
        let method = match inner.method() {
            Method::Get => "GET".to_string(),
            Method::Head => "HEAD".to_string(),
            Method::Post => "POST".to_string(),
            Method::Put => "PUT".to_string(),
            Method::Delete => "DELETE".to_string(),
            Method::Connect => "CONNECT".to_string(),
            Method::Options => "OPTIONS".to_string(),
            Method::Trace => "TRACE".to_string(),
            Method::Patch => "PATCH".to_string(),
            Method::Other(other) => other,
        };
        let full = inner.path_with_query().unwrap_or_else(|| "/".to_string());
        let (path, query) = match full.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (full, String::new()),
        };
        Request {
            inner,
            method,
            path,
            query,
        }
    }

    /// The method, upper case.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The query as sent (without the `?`), not decoded.
    pub fn query_string(&self) -> &str {
        &self.query
    }

    /// The first value of a query parameter, percent-decoded.
    pub fn query(&self, name: &str) -> Option<String> {
        query_value(&self.query, name)
    }

    /// The first value of a header, if it is valid UTF-8.
    pub fn header(&self, name: &str) -> Option<String> {
        let values = self.inner.headers().get(name);
        values
            .into_iter()
            .next()
            .and_then(|v| String::from_utf8(v).ok())
    }

    /// Read the whole body, refusing more than `limit` bytes.
    pub fn body(self, limit: usize) -> Result<Vec<u8>, BodyError> {
        let body = self.inner.consume().map_err(|()| BodyError::Unavailable)?;
        let stream = body.stream().map_err(|()| BodyError::Unavailable)?;
        let mut out = Vec::new();
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => {
                    if out.len() + chunk.len() > limit {
                        return Err(BodyError::TooLarge);
                    }
                    out.extend_from_slice(&chunk);
                }
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(_)) => return Err(BodyError::Unavailable),
            }
        }
        Ok(out)
    }
}

/// Why a request body could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// The body was already taken or the stream failed.
    Unavailable,
    /// The body is larger than the limit given.
    TooLarge,
}

/// The first value of `name` in a query string (`a=1&b=2`), decoded as a form
/// (`application/x-www-form-urlencoded`: `%XX` escapes, and `+` is a space).
pub fn query_value(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Decode one query component as a form does: `%XX` escapes, and `+` is a space. Invalid
/// escapes stay as they are. Never use it on a path: see [`percent_decode_path`].
pub fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// Decode a path (or a path segment): `%XX` escapes only, so a `+` stays a plus and `%2B` is
/// one. Invalid escapes stay as they are; bytes that are not UTF-8 become U+FFFD.
pub fn percent_decode_path(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// The client went away or the body stream failed.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed;

/// A response body being written; dropping it without [`BodyWriter::finish`] ends the
/// response as incomplete.
pub struct BodyWriter {
    stream: Option<OutputStream>,
    body: Option<OutgoingBody>,
}

impl BodyWriter {
    /// Write all of `data`, waiting while the host applies backpressure, then flush.
    pub fn write_all(&mut self, mut data: &[u8]) -> Result<(), Closed> {
        let stream = self.stream.as_ref().ok_or(Closed)?;
        while !data.is_empty() {
            let permit = stream.check_write().map_err(|_| Closed)?;
            if permit == 0 {
                stream.subscribe().block();
                continue;
            }
            let n = data.len().min(permit as usize);
            stream.write(&data[..n]).map_err(|_| Closed)?;
            data = &data[n..];
        }
        stream.flush().map_err(|_| Closed)?;
        Ok(())
    }

    /// Flush what is left and end the body.
    pub fn finish(mut self) -> Result<(), Closed> {
        if let Some(stream) = self.stream.take() {
            stream.blocking_flush().map_err(|_| Closed)?;
        }
        match self.body.take() {
            Some(body) => OutgoingBody::finish(body, None).map_err(|_| Closed),
            None => Err(Closed),
        }
    }
}

/// Send the response head and return a writer for its body.
pub fn start(out: ResponseOutparam, status: u16, headers: &[(&str, &str)]) -> BodyWriter {
    let fields = Fields::new();
    for (name, value) in headers {
        // A handler passes only names and values it wrote itself; a bad one is a bug.
        fields
            .append(name, value.as_bytes())
            .expect("valid header name and value");
    }
    let response = OutgoingResponse::new(fields);
    response
        .set_status_code(status)
        .expect("valid HTTP status code");
    let body = response.body().expect("body taken once");
    ResponseOutparam::set(out, Ok(response));
    let stream = body.write().expect("body stream taken once");
    BodyWriter {
        stream: Some(stream),
        body: Some(body),
    }
}

/// Answer with a complete body.
pub fn respond(out: ResponseOutparam, status: u16, content_type: &str, body: &[u8]) {
    respond_with(out, status, &[("content-type", content_type)], body);
}

/// Answer with a complete body and these headers (its content type among them).
pub fn respond_with(out: ResponseOutparam, status: u16, headers: &[(&str, &str)], body: &[u8]) {
    let mut writer = start(out, status, headers);
    // A client that went away needs no answer.
    if writer.write_all(body).is_ok() {
        let _ = writer.finish();
    }
}

/// Answer with a JSON value.
pub fn json(out: ResponseOutparam, status: u16, value: &serde_json::Value) {
    json_with(out, status, &[], value);
}

/// Answer with a JSON value and these headers besides its content type (`Allow`, say).
pub fn json_with(
    out: ResponseOutparam,
    status: u16,
    headers: &[(&str, &str)],
    value: &serde_json::Value,
) {
    let body = serde_json::to_vec(value).expect("JSON values serialize");
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    respond_with(out, status, &all, &body);
}

/// Answer with a JSON error in gantry's envelope: `{"error": {"code", "message"}}`.
pub fn error(out: ResponseOutparam, status: u16, code: &str, message: &str) {
    json(
        out,
        status,
        &serde_json::json!({ "error": { "code": code, "message": message } }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_and_keeps_invalid_ones() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%E2%9C%93"), "\u{2713}");
        assert_eq!(percent_decode_path("a+b%2Fc"), "a+b/c");
        assert_eq!(percent_decode_path("a%2Bb+c%20d"), "a+b+c d");
        assert_eq!(percent_decode_path("100%"), "100%");
        assert_eq!(percent_decode("a%2Bb"), "a+b");
    }

    #[test]
    fn query_values() {
        let q = "lines=5&msg=hello%20there&flag&lines=9";
        assert_eq!(query_value(q, "lines").as_deref(), Some("5"));
        assert_eq!(query_value(q, "msg").as_deref(), Some("hello there"));
        assert_eq!(query_value(q, "flag").as_deref(), Some(""));
        assert_eq!(query_value(q, "missing"), None);
        assert_eq!(query_value("", "x"), None);
        assert_eq!(query_value("a+b=c+d%2B", "a b").as_deref(), Some("c d+"));
    }
}
