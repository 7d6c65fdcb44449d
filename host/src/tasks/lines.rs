//! Reading a child's output as lines, never holding more than one line's limit in memory.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// One line of output, or a piece of a line longer than the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The text (invalid UTF-8 replaced), without its newline.
    pub text: String,
    /// True when the line was longer than the limit: this is a piece, and more follows.
    pub partial: bool,
}

/// Read the next line of at most `limit` bytes; longer lines come in pieces marked partial.
/// `None` at the end of the stream.
pub async fn next_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    limit: usize,
) -> std::io::Result<Option<Line>> {
    let mut bytes = Vec::new();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            if bytes.is_empty() {
                return Ok(None);
            }
            return Ok(Some(finish(bytes, false)));
        }
        let room = limit - bytes.len();
        let window = &available[..available.len().min(room)];
        if let Some(i) = window.iter().position(|&b| b == b'\n') {
            bytes.extend_from_slice(&window[..i]);
            reader.consume(i + 1);
            return Ok(Some(finish(bytes, false)));
        }
        let n = window.len();
        bytes.extend_from_slice(window);
        reader.consume(n);
        if bytes.len() == limit {
            return Ok(Some(finish(bytes, true)));
        }
    }
}

fn finish(mut bytes: Vec<u8>, partial: bool) -> Line {
    if !partial && bytes.last() == Some(&b'\r') {
        bytes.pop();
    }
    let text = match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    Line { text, partial }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn all(input: &[u8], limit: usize) -> Vec<Line> {
        // A tiny buffer, so lines straddle reads.
        let mut reader = tokio::io::BufReader::with_capacity(3, input);
        let mut out = Vec::new();
        while let Some(line) = next_line(&mut reader, limit).await.unwrap() {
            out.push(line);
        }
        out
    }

    fn line(text: &str, partial: bool) -> Line {
        Line {
            text: text.into(),
            partial,
        }
    }

    #[tokio::test]
    async fn splits_lines_and_long_lines() {
        assert_eq!(
            all(b"one\ntwo\r\n\nlast", 100).await,
            [
                line("one", false),
                line("two", false),
                line("", false),
                line("last", false)
            ]
        );
        assert_eq!(
            all(b"abcdefghij\nxy\n", 4).await,
            [
                line("abcd", true),
                line("efgh", true),
                line("ij", false),
                line("xy", false)
            ]
        );
        assert_eq!(all(b"", 4).await, []);
        assert_eq!(
            all(b"\xff\xfeok\n", 10).await,
            [line("\u{fffd}\u{fffd}ok", false)]
        );
    }
}
