//! Token usage: what the model proxy counted for a task, and the scanner that reads it off
//! each response as it streams past.

use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};

/// The usage scanner's line (or non-streamed body) buffer; larger ones are skipped.
const MAX_SCAN_BYTES: usize = 1 << 20;

/// Token counts the model proxy saw for one task.
#[derive(Debug, Default)]
pub struct ModelUsage {
    input: AtomicU64,
    output: AtomicU64,
    pub(super) requests: AtomicU64,
}

impl ModelUsage {
    /// Input (prompt) tokens over all responses so far.
    pub fn input_tokens(&self) -> u64 {
        self.input.load(Ordering::Relaxed)
    }

    /// Output (completion) tokens over all responses so far.
    pub fn output_tokens(&self) -> u64 {
        self.output.load(Ordering::Relaxed)
    }

    /// Requests the model upstream answered.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub(super) fn add(&self, tokens: Tokens) {
        self.input.fetch_add(tokens.input, Ordering::Relaxed);
        self.output.fetch_add(tokens.output, Ordering::Relaxed);
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Tokens {
    input: u64,
    output: u64,
}

/// Reads usage off one response. Server-sent events are parsed line by line; anything else
/// as one JSON document (Gemini's are pretty-printed over many lines). Streams repeat usage
/// cumulatively (Anthropic's `message_delta`, every Gemini chunk), so a response counts the
/// largest figure it showed for each side, never their sum.
#[derive(Debug)]
pub(super) struct UsageScanner {
    sse: bool,
    buf: Vec<u8>,
    /// The current line outgrew the buffer: skip it up to its end.
    overflowed: bool,
    seen: Tokens,
}

impl UsageScanner {
    pub(super) fn new(sse: bool) -> UsageScanner {
        UsageScanner {
            sse,
            buf: Vec::new(),
            overflowed: false,
            seen: Tokens::default(),
        }
    }

    pub(super) fn feed(&mut self, mut data: &[u8]) {
        while self.sse {
            let Some(i) = data.iter().position(|&b| b == b'\n') else {
                break;
            };
            self.push(&data[..i]);
            let line = std::mem::take(&mut self.buf);
            if !self.overflowed {
                self.line(&line);
            }
            (self.buf, self.overflowed) = (line, false);
            self.buf.clear();
            data = &data[i + 1..];
        }
        self.push(data);
    }

    fn push(&mut self, data: &[u8]) {
        if self.overflowed {
            return;
        }
        if self.buf.len() + data.len() > MAX_SCAN_BYTES {
            (self.buf, self.overflowed) = (Vec::new(), true);
        } else {
            self.buf.extend_from_slice(data);
        }
    }

    pub(super) fn finish(mut self) -> Tokens {
        if !self.overflowed {
            let rest = std::mem::take(&mut self.buf);
            self.line(&rest);
        }
        self.seen
    }

    fn line(&mut self, line: &[u8]) {
        let json = line.strip_prefix(b"data:").unwrap_or(line).trim_ascii();
        if !matches!(json.first(), Some(b'{' | b'[')) {
            return;
        }
        if let Ok(value) = serde_json::from_slice::<Value>(json) {
            self.observe(&value);
        }
    }

    fn observe(&mut self, v: &Value) {
        if let Value::Array(items) = v {
            for item in items {
                self.observe(item);
            }
            return;
        }
        // Anthropic and OpenAI (top level, Anthropic's `message_start`, OpenAI Responses'
        // `response.completed`), with chat-completions' names as a fallback.
        for usage in [&v["usage"], &v["message"]["usage"], &v["response"]["usage"]] {
            let input = usage["input_tokens"]
                .as_u64()
                .or(usage["prompt_tokens"].as_u64());
            let output = usage["output_tokens"]
                .as_u64()
                .or(usage["completion_tokens"].as_u64());
            self.take(input, output);
        }
        let gemini = &v["usageMetadata"];
        self.take(
            gemini["promptTokenCount"].as_u64(),
            gemini["candidatesTokenCount"].as_u64(),
        );
    }

    fn take(&mut self, input: Option<u64>, output: Option<u64>) {
        self.seen.input = self.seen.input.max(input.unwrap_or(0));
        self.seen.output = self.seen.output.max(output.unwrap_or(0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `payload` in 7-byte pieces, so that lines split across chunks.
    fn scan(sse: bool, payload: &str) -> (u64, u64) {
        let mut scanner = UsageScanner::new(sse);
        payload.as_bytes().chunks(7).for_each(|c| scanner.feed(c));
        let tokens = scanner.finish();
        (tokens.input, tokens.output)
    }

    #[test]
    fn usage_of_anthropic_messages() {
        let stream = concat!(
            "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",",
            "\"usage\":{\"input_tokens\":472,\"cache_read_input_tokens\":0,\"output_tokens\":2}}}\r\n\r\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":89}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        assert_eq!(scan(true, stream), (472, 89));
        let body = r#"{"id":"m","content":[],"usage":{"input_tokens":12,"output_tokens":34}}"#;
        assert_eq!(scan(false, body), (12, 34));
    }

    #[test]
    fn usage_of_openai_responses() {
        let stream = concat!(
            "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"usage\":null}}\n\n",
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\"}\n\n",
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":",
            "{\"input_tokens\":1200,\"output_tokens\":300,\"total_tokens\":1500}}}\n\n",
        );
        assert_eq!(scan(true, stream), (1200, 300));
    }

    #[test]
    fn usage_of_gemini_streams_and_pretty_bodies() {
        let usage = |out: u64| {
            format!(
                "\"usageMetadata\": {{\"promptTokenCount\": 50, \"candidatesTokenCount\": {out}}}"
            )
        };
        let stream: String = [3, 9, 17]
            .map(|n| format!("data: {{{}}}\r\n\r\n", usage(n)))
            .concat();
        assert_eq!(scan(true, &stream), (50, 17));
        let body = format!(
            "[{{\n  \"candidates\": [],\n  {}\n}},\n{{\n  {}\n}}]",
            usage(2),
            usage(5)
        );
        assert_eq!(scan(false, &body), (50, 5));
    }

    #[test]
    fn usage_scanner_skips_oversized_lines_and_keeps_going() {
        let pad = "x".repeat(MAX_SCAN_BYTES);
        let huge = format!("data: {{\"usage\":{{\"input_tokens\":999,\"pad\":\"{pad}\"}}}}\n");
        let after = "data: {\"usage\":{\"input_tokens\":3,\"output_tokens\":4}}\n";
        assert_eq!(scan(true, &(huge.clone() + after)), (3, 4));
        assert_eq!(scan(false, &huge), (0, 0));
    }
}
