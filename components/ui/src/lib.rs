//! The `ui` handler: gantry's web UI, a single-page app over gantry's own public APIs, and the
//! API reference people read at `/docs`. Every file is built into the component (`assets/`,
//! tabled by `build.rs`): nothing is fetched from elsewhere, and it works offline.
//!
//! | method and path | what |
//! |---|---|
//! | `GET /` | the app (`index.html`) |
//! | `GET /ui/assets/{file}` | the app's scripts, styles and images |
//! | `GET /ui/{view…}` | the app again: each view has its own URL, drawn in the browser |
//! | `GET /docs` | the API reference (`docs.html`), drawn from `/openapi.json` |

use gantry_guest::handler::{Guest, IncomingRequest, ResponseOutparam};
use gantry_guest::http;

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// What every page and file is served with: only this origin's scripts, styles and
/// connections (the APIs and the WebSocket), never framed, no referrer.
const SECURITY: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
];

struct Ui;

impl Guest for Ui {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let request = http::Request::new(request);
        let path = request.path().to_string();
        if !matches!(request.method(), "GET" | "HEAD") {
            let body = format!("{path} is read with GET");
            return http::respond_with(
                out,
                405,
                &[
                    ("content-type", "text/plain; charset=utf-8"),
                    ("allow", "GET, HEAD"),
                ],
                body.as_bytes(),
            );
        }
        let file = match path.as_str() {
            "/" | "/ui" | "/ui/" => "index.html",
            "/docs" | "/docs/" => "docs.html",
            // Any other /ui/… is a view of the app, drawn in the browser.
            p => p.strip_prefix("/ui/assets/").unwrap_or("index.html"),
        };
        match asset(file) {
            Some((content_type, etag, bytes)) => {
                let fresh = request
                    .header("if-none-match")
                    .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag));
                let mut headers = vec![
                    ("content-type", content_type),
                    ("etag", etag),
                    // Always revalidated: a new gantry's files are seen at once, and an
                    // unchanged one costs a 304.
                    ("cache-control", "no-cache"),
                ];
                headers.extend_from_slice(SECURITY);
                if fresh {
                    http::respond_with(out, 304, &headers, b"");
                } else {
                    http::respond_with(out, 200, &headers, bytes);
                }
            }
            None => {
                let body = format!("no file {path}");
                let mut headers = vec![("content-type", "text/plain; charset=utf-8")];
                headers.extend_from_slice(SECURITY);
                http::respond_with(out, 404, &headers, body.as_bytes());
            }
        }
    }
}

/// A file of the app by its path under `assets/`: content type, ETag and bytes.
fn asset(name: &str) -> Option<(&'static str, &'static str, &'static [u8])> {
    ASSETS
        .iter()
        .find(|(n, ..)| *n == name)
        .map(|(_, content_type, etag, bytes)| (*content_type, *etag, *bytes))
}

gantry_guest::bindings::export_handler!(Ui);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pages_are_built_in() {
        for page in ["index.html", "docs.html"] {
            let (content_type, etag, bytes) = asset(page).expect(page);
            assert!(content_type.starts_with("text/html"));
            assert!(etag.starts_with('"') && etag.ends_with('"'));
            assert!(!bytes.is_empty());
        }
        assert!(asset("../Cargo.toml").is_none());
    }
}
