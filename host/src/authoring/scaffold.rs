//! `gantry plugin new backend|handler NAME`: a ready project in a directory of its own,
//! outside gantry's tree. It carries what it builds with — the Rust SDK (`gantry-guest`) and
//! the WIT contract of this gantry, under `gantry/` — so it builds with no checkout of gantry
//! and no registry but crates.io, against exactly the contract the gantry that made it loads.

use crate::manifest::PluginKind;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// A file of the SDK or the WIT, as this gantry was built with it.
struct Embedded {
    path: &'static str,
    text: &'static str,
}

macro_rules! embed {
    ($($path:literal),* $(,)?) => {
        &[$(Embedded { path: $path, text: include_str!(concat!("../../../", $path)) }),*]
    };
}

/// The SDK's sources and the WIT package with its dependencies. `tests` below checks that
/// the list names every file of `sdk/rust/src` and `wit/`.
const EMBEDDED: &[Embedded] = embed!(
    "sdk/rust/src/adapter.rs",
    "sdk/rust/src/enums.rs",
    "sdk/rust/src/http.rs",
    "sdk/rust/src/json.rs",
    "sdk/rust/src/lib.rs",
    "sdk/rust/src/lines.rs",
    "sdk/rust/src/log.rs",
    "sdk/rust/src/testing.rs",
    "sdk/rust/src/time.rs",
    "wit/backend.wit",
    "wit/commands.wit",
    "wit/handler.wit",
    "wit/host.wit",
    "wit/types.wit",
    "wit/webhooks.wit",
    "wit/websocket.wit",
    "wit/work-sessions.wit",
    "wit/deps/cli/cli.wit",
    "wit/deps/clocks/clocks.wit",
    "wit/deps/filesystem/filesystem.wit",
    "wit/deps/http/http.wit",
    "wit/deps/io/io.wit",
    "wit/deps/random/random.wit",
    "wit/deps/sockets/sockets.wit",
);

const SDK_MANIFEST: &str = include_str!("../../../sdk/rust/Cargo.toml");
const WORKSPACE_MANIFEST: &str = include_str!("../../../Cargo.toml");
const TOOLCHAIN: &str = include_str!("../../../rust-toolchain.toml");
const BACKEND_LIB: &str = include_str!("templates/backend.rs.txt");
const HANDLER_LIB: &str = include_str!("templates/handler.rs.txt");
const JS_HANDLER: &str = include_str!("templates/js/handler.js.txt");
const JS_WORLD: &str = include_str!("templates/js/world.wit.txt");
const JS_PACKAGE: &str = include_str!("templates/js/package.json.txt");
/// componentize-js and what it needs, pinned: `npm ci` installs exactly these.
const JS_LOCK: &str = include_str!("templates/js/package-lock.json");
/// The package name the JavaScript templates are written with.
const JS_TEMPLATE_NAME: &str = "\"name\": \"gantry-js-handler\"";

/// Where the SDK's bindings find the WIT, in gantry's tree and in a new project.
const WIT_PATH_IN_TREE: &str = "path: \"../../wit\"";
const WIT_PATH_IN_PROJECT: &str = "path: \"../wit\"";

/// The language of a new project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust on the `gantry-guest` SDK, built with cargo for wasm32-wasip2.
    Rust,
    /// JavaScript, built into a component by componentize-js (npm; handlers only).
    Js,
}

impl Lang {
    /// The command that builds a new project's component, run in its directory.
    pub fn build_command(self) -> &'static str {
        match self {
            Lang::Rust => BUILD_COMMAND,
            Lang::Js => JS_BUILD_COMMAND,
        }
    }
}

/// The project `new` made.
#[derive(Debug)]
pub struct Project {
    /// Its directory.
    pub dir: PathBuf,
    /// The component's path once built, relative to the directory.
    pub component: String,
}

/// The command that builds a new Rust project's component, run in its directory.
pub const BUILD_COMMAND: &str = "cargo build --release --target wasm32-wasip2";
/// The command that builds a new JavaScript project's component, run in its directory.
pub const JS_BUILD_COMMAND: &str = "npm ci && npm run build";

/// Make a project for a `kind` plugin called `name` in `parent/name`, which must not exist.
pub fn new(kind: PluginKind, name: &str, parent: &Path, lang: Lang) -> Result<Project> {
    check_name(name)?;
    if lang == Lang::Js && kind == PluginKind::Backend {
        bail!(
            "the JavaScript template is a handler: write a backend in Rust (`--lang rust`), \
             whose adapter the SDK makes a few dozen lines"
        );
    }
    let dir = parent.join(name);
    if dir.exists() {
        bail!(
            "{} already exists: choose another name or directory",
            dir.display()
        );
    }
    let files = match lang {
        Lang::Rust => rust_files(kind, name),
        Lang::Js => Ok(js_files(name)),
    }?;
    write_files(&dir, &files)?;
    let component = match lang {
        Lang::Rust => rust_component(name),
        Lang::Js => js_component(name),
    };
    Ok(Project { dir, component })
}

fn rust_component(name: &str) -> String {
    format!(
        "target/wasm32-wasip2/release/{}.wasm",
        name.replace('-', "_")
    )
}

fn js_component(name: &str) -> String {
    format!("dist/{name}.wasm")
}

fn write_files(dir: &Path, files: &[(String, String)]) -> Result<()> {
    for (path, text) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// A JavaScript handler: its source, its world, gantry's WIT and WASI's under `wit/deps`,
/// and componentize-js pinned by a lockfile.
fn js_files(name: &str) -> Vec<(String, String)> {
    let named = format!("\"name\": \"{name}\"");
    let component = js_component(name);
    let mut files: Vec<(String, String)> = vec![
        (
            "package.json".into(),
            JS_PACKAGE
                .replace(JS_TEMPLATE_NAME, &named)
                .replace("{{name}}", name),
        ),
        (
            "package-lock.json".into(),
            JS_LOCK.replace(JS_TEMPLATE_NAME, &named),
        ),
        (".gitignore".into(), "/node_modules\n/dist\n".into()),
        // The contract's version, so a new plugin names the WIT it is given.
        (
            "src/handler.js".into(),
            JS_HANDLER
                .replace("{{name}}", name)
                .replace("{{version}}", crate::contract::VERSION),
        ),
        (
            "wit/world.wit".into(),
            JS_WORLD.replace("{{version}}", crate::contract::VERSION),
        ),
        (
            "tests/hello.requests".into(),
            HELLO_REQUESTS.replace("{{name}}", name),
        ),
        (
            "tests/hello.expected".into(),
            hello_answers(name, Some("javascript")),
        ),
        (
            format!("plugin/{name}.toml"),
            plugin_manifest(PluginKind::Handler, name, &component),
        ),
        (
            "README.md".into(),
            readme(PluginKind::Handler, name, &component, Lang::Js),
        ),
    ];
    for e in EMBEDDED {
        if let Some(wit) = e.path.strip_prefix("wit/") {
            let path = match wit.strip_prefix("deps/") {
                Some(dep) => format!("wit/deps/{dep}"),
                None => format!("wit/deps/gantry/{wit}"),
            };
            files.push((path, e.text.to_string()));
        }
    }
    files
}

fn rust_files(kind: PluginKind, name: &str) -> Result<Vec<(String, String)>> {
    let component = rust_component(name);
    let mut files: Vec<(String, String)> = vec![
        ("Cargo.toml".into(), project_manifest(name)),
        ("rust-toolchain.toml".into(), TOOLCHAIN.into()),
        (".gitignore".into(), "/target\n".into()),
        ("gantry/sdk/Cargo.toml".into(), standalone_sdk_manifest()?),
        (
            format!("plugin/{name}.toml"),
            plugin_manifest(kind, name, &component),
        ),
        (
            "README.md".into(),
            readme(kind, name, &component, Lang::Rust),
        ),
    ];
    for e in EMBEDDED {
        let (path, text) = match e.path.strip_prefix("sdk/rust/") {
            Some(rest) => (
                format!("gantry/sdk/{rest}"),
                e.text.replace(WIT_PATH_IN_TREE, WIT_PATH_IN_PROJECT),
            ),
            None => (format!("gantry/{}", e.path), e.text.to_string()),
        };
        files.push((path, text));
    }
    match kind {
        PluginKind::Backend => {
            files.push(("src/lib.rs".into(), BACKEND_LIB.replace("{{name}}", name)));
            files.push(("tests/hello.transcript".into(), HELLO_TRANSCRIPT.into()));
            files.push(("tests/hello.expected".into(), HELLO_EXPECTED.into()));
        }
        PluginKind::Handler => {
            files.push(("src/lib.rs".into(), HANDLER_LIB.replace("{{name}}", name)));
            files.push((
                "tests/hello.requests".into(),
                HELLO_REQUESTS.replace("{{name}}", name),
            ));
            files.push(("tests/hello.expected".into(), hello_answers(name, None)));
        }
    }
    Ok(files)
}

/// A name that is a plugin name, a crate name and a directory name at once.
fn check_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_is_letter = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    if !first_is_letter
        || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        || name.len() > 64
    {
        bail!(
            "{name:?} cannot name a plugin: use up to 64 lowercase ASCII letters, digits, '-' \
             or '_', starting with a letter (e.g. my-backend)"
        );
    }
    Ok(())
}

fn project_manifest(name: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
# gantry's Rust SDK and the WIT it binds, as the gantry that made this project has them.
gantry-guest = {{ path = "gantry/sdk" }}
serde_json = "1"

# A workspace of its own, wherever the project sits.
[workspace]

[profile.release]
opt-level = "s"
strip = true
"#
    )
}

/// The SDK's manifest with what it inherits from gantry's workspace written out.
fn standalone_sdk_manifest() -> Result<String> {
    let workspace: toml::Table = toml::from_str(WORKSPACE_MANIFEST).context("Cargo.toml")?;
    let mut sdk: toml::Table = toml::from_str(SDK_MANIFEST).context("sdk/rust/Cargo.toml")?;
    let inherited = |section: &str, key: &str| -> Result<toml::Value> {
        workspace
            .get("workspace")
            .and_then(|w| w.get(section))
            .and_then(|s| s.get(key))
            .cloned()
            .with_context(|| format!("the workspace has no {section}.{key}"))
    };
    let is_inherited =
        |v: &toml::Value| v.get("workspace").and_then(toml::Value::as_bool) == Some(true);
    if let Some(package) = sdk.get_mut("package").and_then(toml::Value::as_table_mut) {
        for (key, value) in package.iter_mut() {
            if is_inherited(value) {
                *value = inherited("package", key)?;
            }
        }
        package.insert("publish".into(), false.into());
    }
    if let Some(deps) = sdk
        .get_mut("dependencies")
        .and_then(toml::Value::as_table_mut)
    {
        for (key, value) in deps.iter_mut() {
            if is_inherited(value) {
                *value = inherited("dependencies", key)?;
            }
        }
    }
    // The workspace's lints are gantry's own business.
    sdk.remove("lints");
    Ok(format!(
        "# gantry's Rust SDK, as the gantry that made this project was built with it.\n{}",
        toml::to_string(&sdk)?
    ))
}

fn plugin_manifest(kind: PluginKind, name: &str, component: &str) -> String {
    match kind {
        PluginKind::Backend => format!(
            r#"# {name}: a backend. gantry runs `binary` with the argv the component builds, and the
# component turns each line the program prints into unified events.
kind = "backend"
component = "../{component}"
# The only program this backend may have spawned: a name on the tasks' PATH or an absolute path.
binary = "echo"
# The manifest's settings (and `binary`) reach the component through gantry:plugin/config.
imports = ["gantry:plugin/config"]
"#
        ),
        PluginKind::Handler => format!(
            r#"# {name}: a handler. gantry routes these paths to the component, one fresh instance
# per request, as the caller's tenant.
kind = "handler"
component = "../{component}"
routes = ["/{name}/hello"]
# The host interfaces the component may call (docs/plugins.md lists them all).
imports = ["gantry:plugin/identity"]

[limits]
memory_mb = 16
cpu_ms = 100
timeout_ms = 5000
"#
        ),
    }
}

const HELLO_TRANSCRIPT: &str = r#"# A run of `echo "say hello"`, as `gantry plugin record --prompt "say hello" -- echo "say hello"`
# records it (the stderr line is added by hand). `gantry plugin test` replays it through the
# component and compares what it makes of it with hello.expected.
{"request": {"prompt": "say hello"}}
{"stdout": "say hello"}
{"stderr": "a warning on stderr"}
{"exit": 0}
"#;

const HELLO_EXPECTED: &str = r#"{"command":{"args":["say hello"],"env":[],"files":[],"stdin":null}}
{"text":"say hello","type":"message"}
{"line":"a warning on stderr","type":"raw"}
{"summary":{"error":null,"final_text":"say hello","session_id":null,"success":true,"usage":null}}
"#;

const HELLO_REQUESTS: &str = r#"# Requests `gantry plugin test` sends to the handler, one a line; hello.expected holds
# its answers (`gantry plugin test --update` writes them anew).
{"path": "/{{name}}/hello?name=you"}
{"path": "/{{name}}/hello", "tenant": "alice"}
{"method": "POST", "path": "/{{name}}/hello"}
"#;

/// What the handler template answers to [`HELLO_REQUESTS`]; `lang` is the JavaScript
/// template's extra field.
fn hello_answers(name: &str, lang: Option<&str>) -> String {
    let answer = |request: String, status: u16, body: serde_json::Value| {
        let line = serde_json::json!({
            "request": request,
            "status": status,
            "content_type": "application/json",
            "body": body,
        });
        format!("{line}\n")
    };
    let hello = |who: &str, tenant: &str| {
        let mut body = serde_json::json!({ "hello": who, "tenant": tenant });
        if let Some(lang) = lang {
            body["lang"] = lang.into();
        }
        body
    };
    let path = format!("/{name}/hello");
    [
        answer(format!("GET {path}?name=you"), 200, hello("you", "local")),
        answer(format!("GET {path}"), 200, hello("world", "alice")),
        answer(
            format!("POST {path}"),
            405,
            serde_json::json!({"error": {"code": "method_not_allowed", "message": "use GET"}}),
        ),
    ]
    .concat()
}

fn readme(kind: PluginKind, name: &str, component: &str, lang: Lang) -> String {
    let (what, test, serve) = match kind {
        PluginKind::Backend => (
            "a backend adapter: pure functions over a CLI's argv and output lines",
            "gantry plugin test        # replay tests/*.transcript, compare with tests/*.expected\n\
             gantry plugin test --update  # write what the component makes of them as expected\n\
             gantry plugin record --prompt \"say hi\" -- echo \"say hi\" > tests/hi.transcript",
            format!(
                "Copy `plugin/{name}.toml` into gantry's plugin directory (with `component` pointing \
                 at the built `.wasm`), and run tasks with `\"backend\": \"{name}\"`."
            ),
        ),
        PluginKind::Handler => (
            "a handler: HTTP routes served by a component",
            "gantry plugin test        # send tests/*.requests, compare with tests/*.expected\n\
             gantry plugin test --update  # write the component's answers as expected\n\
             gantry plugin check {component}",
            format!(
                "`gantry serve --plugins plugin` serves it alone; \
                 `curl http://127.0.0.1:8080/{name}/hello?name=you`."
            ),
        ),
    };
    let test = test.replace("{component}", component);
    let build = lang.build_command();
    let carried = match lang {
        Lang::Rust => {
            "`gantry/` holds gantry's Rust SDK and WIT contract as the gantry that made this \
             project has them"
        }
        Lang::Js => {
            "`wit/world.wit` is this handler's world; `wit/deps/` holds gantry's WIT contract \
             (`gantry/`) and WASI's as the gantry that made this project has them"
        }
    };
    format!(
        "# {name}\n\n\
         A gantry plugin, {what}.\n\n\
         ```sh\n\
         {build}   # -> {component}\n\
         {test}\n\
         ```\n\n\
         {serve}\n\n\
         {carried}; `gantry plugin new` in a newer gantry makes them anew. docs/plugins.md in \
         gantry's repository is the guide: the worlds, every host interface, limits, errors, \
         testing and versioning.\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files_under(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files_under(&path, base, out);
            } else {
                out.push(path.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }

    #[test]
    fn every_file_of_the_sdk_and_the_wit_is_embedded() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut on_disk = Vec::new();
        files_under(&root.join("sdk/rust/src"), &root, &mut on_disk);
        files_under(&root.join("wit"), &root, &mut on_disk);
        on_disk.sort();
        let mut embedded: Vec<String> = EMBEDDED.iter().map(|e| e.path.to_string()).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk, "update EMBEDDED");
        // The SDK's bindings are made to find the WIT in the project's layout.
        let lib = EMBEDDED
            .iter()
            .find(|e| e.path.ends_with("lib.rs"))
            .unwrap();
        assert!(lib.text.contains(WIT_PATH_IN_TREE));
    }

    #[test]
    fn the_sdk_manifest_stands_alone() {
        let text = standalone_sdk_manifest().unwrap();
        assert!(!text.contains("workspace"), "{text}");
        let sdk: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(sdk["package"]["name"].as_str(), Some("gantry-guest"));
        assert_eq!(sdk["package"]["edition"].as_str(), Some("2024"));
        assert_eq!(sdk["dependencies"]["wit-bindgen"].as_str(), Some("0.61"));
    }

    #[test]
    fn names_are_checked_and_an_existing_directory_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "1abc", "Abc", "a b", "a/b", "..", "é"] {
            let e = new(PluginKind::Backend, bad, dir.path(), Lang::Rust).unwrap_err();
            assert!(e.to_string().contains("cannot name a plugin"), "{bad}: {e}");
        }
        std::fs::create_dir(dir.path().join("taken")).unwrap();
        std::fs::write(dir.path().join("taken/keep"), "mine").unwrap();
        let e = new(PluginKind::Handler, "taken", dir.path(), Lang::Rust).unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("taken/keep")).unwrap(),
            "mine"
        );
    }

    #[test]
    fn the_javascript_templates_take_the_projects_name_and_pin_componentize_js() {
        let files = js_files("greet-js");
        let text = |path: &str| {
            files
                .iter()
                .find(|(p, _)| p == path)
                .map(|(_, t)| t.clone())
                .unwrap_or_else(|| panic!("no {path}"))
        };
        let package: serde_json::Value = serde_json::from_str(&text("package.json")).unwrap();
        let lock: serde_json::Value = serde_json::from_str(&text("package-lock.json")).unwrap();
        assert_eq!(package["name"], "greet-js");
        assert_eq!(lock["name"], "greet-js");
        assert_eq!(lock["packages"][""]["name"], "greet-js");
        let pinned = &package["devDependencies"]["@bytecodealliance/componentize-js"];
        assert_eq!(
            &lock["packages"][""]["devDependencies"]["@bytecodealliance/componentize-js"],
            pinned
        );
        assert_eq!(
            &lock["packages"]["node_modules/@bytecodealliance/componentize-js"]["version"],
            pinned
        );
        assert!(
            package["scripts"]["build"]
                .as_str()
                .unwrap()
                .ends_with("--out dist/greet-js.wasm")
        );
        assert!(text("src/handler.js").contains("'/greet-js/hello'"));
        assert!(text("wit/deps/gantry/host.wit").contains("package gantry:plugin"));
        assert!(text("wit/deps/http/http.wit").contains("package wasi:http"));
        let e = new(
            PluginKind::Backend,
            "x",
            tempfile::tempdir().unwrap().path(),
            Lang::Js,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("JavaScript template is a handler"),
            "{e}"
        );
    }

    #[test]
    fn the_backend_template_is_at_most_sixty_lines() {
        let lib = BACKEND_LIB.replace("{{name}}", "x");
        assert!(lib.lines().count() <= 60, "{}", lib.lines().count());
        let transcript = super::super::transcript::Transcript::parse(HELLO_TRANSCRIPT).unwrap();
        assert_eq!(transcript.lines.len(), 2);
    }
}
