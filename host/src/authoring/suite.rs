//! `gantry plugin test`: a project's tests, each a file in its `tests/` directory with an
//! expected file beside it. A backend's are transcripts (`*.transcript`, replayed through the
//! component); a handler's are requests (`*.requests`, sent to the component on a node
//! assembled for the test). What the component makes of each is compared with
//! `*.expected`: a mismatch prints a unified diff; `--update` writes what it made instead.

use super::{replay, requests, transcript::Transcript};
use crate::config::{Config, Overrides};
use crate::manifest::{Manifest, PluginKind};
use crate::runtime::Plugins;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Run the tests of the project (or manifest) at `path`; whether all passed.
pub fn run(path: &Path, tests: Option<&Path>, update: bool) -> Result<bool> {
    let defaults = Config::from_layers(None, &Overrides::default())?;
    let rt = &defaults.runtime;
    let (manifest_path, default_tests) = locate(path, &defaults)?;
    let tests_dir = tests.map_or(default_tests, Path::to_path_buf);
    let manifest = Manifest::load(&manifest_path, &rt.plugin_defaults, rt.max_memory_mb)?;
    let extension = match manifest.kind {
        PluginKind::Backend => "transcript",
        PluginKind::Handler => "requests",
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&tests_dir)
        .with_context(|| format!("reading {}", tests_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    if files.is_empty() {
        match manifest.kind {
            PluginKind::Backend => bail!(
                "no *.transcript in {}: record one with `gantry plugin record -- CMD ARGS…`",
                tests_dir.display()
            ),
            PluginKind::Handler => bail!(
                "no *.requests in {}: write one, a request a line, e.g. {{\"path\": \"/my/route\"}}",
                tests_dir.display()
            ),
        }
    }
    // The compiled-component cache and the store live for this run only.
    let scratch = tempfile::tempdir().context("a directory for the test's node")?;
    let mut config = defaults.clone();
    config.data_dir = scratch.path().to_path_buf();
    config.plugins = manifest_path
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    tokio.block_on(async {
        let subject = Subject::start(&config, manifest, &tests_dir).await?;
        let mut failed = 0;
        for path in &files {
            let shown = path.display();
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {shown}"))?;
            let actual = subject
                .run(&text)
                .await
                .with_context(|| format!("in {shown}"))?;
            let expected_path = path.with_extension("expected");
            if update {
                std::fs::write(&expected_path, &actual)
                    .with_context(|| format!("writing {}", expected_path.display()))?;
                println!("wrote {}", expected_path.display());
                continue;
            }
            let expected = match std::fs::read_to_string(&expected_path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    failed += 1;
                    println!(
                        "FAIL {shown}: no {} (`gantry plugin test --update` writes it); the component made:\n{actual}",
                        expected_path.display()
                    );
                    continue;
                }
                Err(e) => {
                    return Err(anyhow::Error::from(e)
                        .context(format!("reading {}", expected_path.display())));
                }
            };
            match replay::diff(&expected, &actual, &expected_path.display().to_string()) {
                None => println!("ok   {shown}"),
                Some(diff) => {
                    failed += 1;
                    println!("FAIL {shown}: the component's answers differ from the expected ones\n{diff}");
                }
            }
        }
        if !update {
            println!(
                "{} of {} {extension} files as expected",
                files.len() - failed,
                files.len()
            );
        }
        Ok(failed == 0)
    })
}

/// The manifest and the tests directory of `path`: a project directory (one manifest in its
/// `plugin/`, tests in its `tests/`) or a manifest file (tests in `../tests`).
fn locate(path: &Path, defaults: &Config) -> Result<(PathBuf, PathBuf)> {
    if !path.is_dir() {
        let tests = path
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new("."))
            .join("tests");
        return Ok((path.to_path_buf(), tests));
    }
    let plugin_dir = path.join("plugin");
    let manifests: Vec<PathBuf> = std::fs::read_dir(&plugin_dir)
        .with_context(|| {
            format!(
                "{} has no plugin/ directory: give a project directory or a manifest file",
                path.display()
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    if let [manifest] = &manifests[..] {
        return Ok((manifest.clone(), path.join("tests")));
    }
    // A handler with the backends its tasks run on beside it: the handler is under test.
    let rt = &defaults.runtime;
    let handlers: Vec<&PathBuf> = manifests
        .iter()
        .filter(|m| {
            Manifest::load(m, &rt.plugin_defaults, rt.max_memory_mb)
                .is_ok_and(|m| m.kind == PluginKind::Handler)
        })
        .collect();
    match handlers[..] {
        [handler] => Ok((handler.clone(), path.join("tests"))),
        _ => bail!(
            "{} holds {} manifests ({} handlers): give the one to test",
            plugin_dir.display(),
            manifests.len(),
            handlers.len()
        ),
    }
}

/// The component under test, loaded.
enum Subject {
    /// A backend, called directly.
    Backend { plugins: Plugins, name: String },
    /// A handler, on a node of its own: the manifests beside its own (backends it starts
    /// tasks on, say) are loaded too.
    Handler {
        node: Box<crate::node::Node>,
        router: crate::http::router::Router,
        /// Held for the node's life: the port the sandbox's probe proves unreachable.
        _probe: std::net::TcpListener,
        /// Held for the node's life: the scripts scripted backends run.
        _scripts: tempfile::TempDir,
    },
}

impl Subject {
    async fn start(config: &Config, manifest: Manifest, tests_dir: &Path) -> Result<Subject> {
        match manifest.kind {
            PluginKind::Backend => {
                let name = manifest.name.clone();
                let plugins = Plugins::start_with(config, vec![manifest]).await?;
                Ok(Subject::Backend { plugins, name })
            }
            PluginKind::Handler => {
                std::fs::create_dir_all(&config.data_dir)?;
                let rt = &config.runtime;
                let mut manifests = crate::runtime::registry::read_manifests(
                    &config.plugins,
                    &rt.plugin_defaults,
                    rt.max_memory_mb,
                )?;
                // Outside the data directory, which no task may read.
                let scripts = tempfile::tempdir().context("a directory for scripted backends")?;
                script_backends(&mut manifests, &tests_dir.join("backends"), scripts.path())?;
                let plugins = Plugins::start_with(config, manifests).await?;
                let router = crate::http::router::Router::for_plugins(plugins.plugins())?;
                let probe = std::net::TcpListener::bind("127.0.0.1:0")
                    .context("a loopback port for the sandbox's probe")?;
                let node = crate::node::assemble(
                    config,
                    plugins,
                    &crate::node::Probe {
                        port: probe.local_addr()?.port(),
                        secret_files: vec![],
                        tenants: 1,
                    },
                )
                .await?;
                Ok(Subject::Handler {
                    node: Box::new(node),
                    router,
                    _probe: probe,
                    _scripts: scripts,
                })
            }
        }
    }

    /// What the component makes of one test file.
    async fn run(&self, text: &str) -> Result<String> {
        match self {
            Subject::Backend { plugins, name } => {
                let transcript = Transcript::parse(text)?;
                Ok(replay::replay(plugins, name, &transcript).await?.render())
            }
            Subject::Handler { node, router, .. } => {
                let requests = requests::parse(text)?;
                let runtime: &Arc<crate::runtime::Runtime> = &node.runtime;
                requests::send_all(runtime, router, &requests).await
            }
        }
    }
}

/// Backends whose runs a handler's tests script: for each backend manifest with a transcript
/// `backends/NAME.transcript`, its binary becomes a script (in `scripts`, named as the binary
/// is, so that the adapter's `describe` still matches) that prints the transcript's lines and
/// exits as it says. Its tasks run in the sandbox as any other; the adapter is the real one.
fn script_backends(manifests: &mut [Manifest], backends: &Path, scripts: &Path) -> Result<()> {
    for manifest in manifests.iter_mut() {
        let transcript_path = backends.join(format!("{}.transcript", manifest.name));
        let (PluginKind::Backend, Some(binary)) = (manifest.kind, &manifest.binary) else {
            continue;
        };
        if !transcript_path.exists() {
            continue;
        }
        let shown = transcript_path.display();
        let text = std::fs::read_to_string(&transcript_path)
            .with_context(|| format!("reading {shown}"))?;
        let transcript = Transcript::parse(&text).with_context(|| format!("in {shown}"))?;
        let file_name = Path::new(binary)
            .file_name()
            .context("the backend's binary has no file name")?;
        let dir = scripts.join(&manifest.name);
        std::fs::create_dir_all(&dir)?;
        let script = dir.join(file_name);
        std::fs::write(&script, replay_script(&manifest.name, &transcript)?)
            .with_context(|| format!("writing {}", script.display()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
        }
        let script = script
            .to_str()
            .context("the scripts' directory is not UTF-8")?
            .to_string();
        if manifest.settings.contains_key("binary") {
            manifest.settings.insert("binary".into(), script.clone());
        }
        manifest.binary = Some(script);
        println!("backend {} replays {shown}", manifest.name);
    }
    Ok(())
}

/// A POSIX shell script that prints `transcript`'s lines, each on its stream, and exits as it
/// did. The text is single-quoted, so nothing in it is ever interpreted.
fn replay_script(name: &str, transcript: &Transcript) -> Result<String> {
    use crate::contract::OutputStream;
    let quote = |text: &str| format!("'{}'", text.replace('\'', r"'\''"));
    let mut out =
        format!("#!/bin/sh\n# gantry plugin test: backend {name}, scripted from a transcript.\n");
    for line in &transcript.lines {
        if line.text.contains('\0') {
            bail!("a transcript line holds a NUL character, which no script can print");
        }
        let format = if line.partial { "'%s'" } else { r"'%s\n'" };
        let redirect = match line.stream {
            OutputStream::Stdout => "",
            OutputStream::Stderr => " >&2",
        };
        out.push_str(&format!(
            "printf {format} {}{redirect}\n",
            quote(&line.text)
        ));
    }
    match transcript.exit_code {
        // As a shell reports it: a status is a byte.
        Some(code) => out.push_str(&format!("exit {}\n", code.rem_euclid(256))),
        None => out.push_str("kill -9 $$\n"),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_script_prints_its_transcript_and_exits_as_it_did() {
        let t = Transcript::parse(
            "{\"stdout\": \"it's $HOME `x` \\\\ %s\"}\n{\"stderr\": \"warn\"}\n{\"stdout\": \"ab\", \"partial\": true}\n{\"stdout\": \"cd\"}\n{\"exit\": 3}\n",
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("cli");
        std::fs::write(&script, replay_script("cli", &t).unwrap()).unwrap();
        let out = std::process::Command::new("sh")
            .arg(&script)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "it's $HOME `x` \\ %s\nabcd\n"
        );
        assert_eq!(String::from_utf8_lossy(&out.stderr), "warn\n");
        let killed = Transcript::parse("{\"exit\": null}\n").unwrap();
        std::fs::write(&script, replay_script("cli", &killed).unwrap()).unwrap();
        let out = std::process::Command::new("sh")
            .arg(&script)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), None);
    }
}
