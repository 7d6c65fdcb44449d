//! A plain `wasi:http/proxy` component, as one would build it for `wasmtime serve`: its
//! bindings come from the standard WASI WIT alone, so it imports nothing of gantry's.

#![allow(missing_debug_implementations)]

mod bindings {
    wit_bindgen::generate!({
        // The vendored WASI packages alone, dependencies first.
        path: [
            "../../../wit/deps/io",
            "../../../wit/deps/clocks",
            "../../../wit/deps/random",
            "../../../wit/deps/filesystem",
            "../../../wit/deps/sockets",
            "../../../wit/deps/cli",
            "../../../wit/deps/http",
        ],
        world: "wasi:http/proxy",
        generate_all,
    });
}

use bindings::exports::wasi::http::incoming_handler::Guest;
use bindings::wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Hello;

impl Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let text = format!(
            "hello from {}\n",
            request.path_with_query().unwrap_or_default()
        );
        let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())])
            .expect("a valid header");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("a body");
        ResponseOutparam::set(out, Ok(response));
        let stream = body.write().expect("a body stream");
        stream
            .blocking_write_and_flush(text.as_bytes())
            .expect("the body is written");
        drop(stream);
        OutgoingBody::finish(body, None).expect("the body ends");
    }
}

bindings::export!(Hello with_types_in bindings);
