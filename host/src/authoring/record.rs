//! `gantry plugin record -- CMD ARGS…`: run a CLI once, directly (argv, no shell, stdin
//! closed), and capture what it printed as a [`Transcript`], lines split as the host splits
//! them for an adapter.

use super::transcript::Transcript;
use crate::contract::{OutputLine, OutputStream, PromptRequest};
use crate::tasks::lines::next_line;
use anyhow::{Context, Result, bail};
use std::process::Stdio;
use tokio::io::{AsyncRead, BufReader};
use tokio::sync::mpsc;

/// Run `argv` and record its output; `request` is what the transcript says it was asked
/// (the prompt given to the CLI, for the replay's `build-command`). `line_limit` is the
/// longest line the host hands an adapter whole (`tasks.max_line_bytes`).
pub async fn record(
    argv: &[String],
    request: PromptRequest,
    line_limit: usize,
) -> Result<Transcript> {
    let Some((program, args)) = argv.split_first() else {
        bail!("nothing to record: give the command after `--`");
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stdout = child.stdout.take().context("the child's stdout")?;
    let stderr = child.stderr.take().context("the child's stderr")?;
    let readers = [
        tokio::spawn(read(stdout, OutputStream::Stdout, line_limit, tx.clone())),
        tokio::spawn(read(stderr, OutputStream::Stderr, line_limit, tx)),
    ];
    // Lines in the order they were read from either stream.
    let mut lines = Vec::new();
    while let Some(line) = rx.recv().await {
        lines.push(line);
    }
    for reader in readers {
        reader.await.context("reading the child's output")??;
    }
    let status = child.wait().await.context("waiting for the child")?;
    Ok(Transcript {
        request,
        lines,
        exit_code: status.code(),
    })
}

async fn read(
    stream: impl AsyncRead + Unpin,
    which: OutputStream,
    limit: usize,
    out: mpsc::UnboundedSender<OutputLine>,
) -> Result<()> {
    let mut reader = BufReader::new(stream);
    while let Some(line) = next_line(&mut reader, limit).await? {
        let _ = out.send(OutputLine {
            stream: which,
            text: line.text,
            partial: line.partial,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::plain_request;

    #[tokio::test]
    async fn captures_both_streams_long_lines_in_pieces_and_the_exit_code() {
        let argv: Vec<String> = [
            "sh",
            "-c",
            "echo one; echo two >&2; printf 'abcdefghij\\n'; exit 3",
        ]
        .map(String::from)
        .into();
        let t = record(&argv, plain_request("p"), 4).await.unwrap();
        assert_eq!(t.exit_code, Some(3));
        let stdout: Vec<(&str, bool)> = t
            .lines
            .iter()
            .filter(|l| l.stream == OutputStream::Stdout)
            .map(|l| (l.text.as_str(), l.partial))
            .collect();
        assert_eq!(
            stdout,
            [
                ("one", false),
                ("abcd", true),
                ("efgh", true),
                ("ij", false)
            ]
        );
        assert!(
            t.lines
                .iter()
                .any(|l| l.stream == OutputStream::Stderr && l.text == "two")
        );
        let killed = ["sh", "-c", "kill -9 $$"].map(String::from);
        let t = record(&killed, plain_request("p"), 100).await.unwrap();
        assert_eq!(t.exit_code, None);
        let missing = ["/nonexistent/cli"].map(String::from);
        let e = record(&missing, plain_request("p"), 100).await.unwrap_err();
        assert!(
            format!("{e:#}").contains("starting /nonexistent/cli"),
            "{e:#}"
        );
    }
}
