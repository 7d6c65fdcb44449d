//! Builds gantry's first-party components (`components/*`) and test components
//! (`tests/components/*`) for wasm32-wasip2, and bundles the first-party ones and the
//! manifests of `plugins/` into the binary.
//!
//! The components are ordinary crates of this workspace; they are built by a nested cargo
//! into `target/wasm` so that the host build never waits on itself. If the wasm32-wasip2
//! standard library is missing, it is installed with rustup first.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const WASM_TARGET: &str = "wasm32-wasip2";

fn main() {
    let host_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = host_dir.parent().unwrap().to_path_buf();
    for watched in [
        "wit",
        "sdk",
        "components",
        "tests/components",
        "plugins",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    println!("cargo:rerun-if-env-changed=GANTRY_SKIP_COMPONENT_BUILD");

    let bundled = crate_dirs(&root.join("components"));
    let tests = crate_dirs(&root.join("tests/components"));
    let target_dir = root.join("target/wasm");
    let out_dir = target_dir.join(WASM_TARGET).join("release");

    // For work on the host alone: bundle the components last built instead of building them.
    if env::var_os("GANTRY_SKIP_COMPONENT_BUILD").is_none() {
        ensure_wasm_target();
        build_components(&root, &target_dir, bundled.iter().chain(&tests));
    }

    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let mut code = String::from("/// First-party components: (name, bytes).\n");
    code.push_str("pub const COMPONENTS: &[(&str, &[u8])] = &[\n");
    for name in &bundled {
        let wasm = out_dir.join(format!("{}.wasm", name.replace('-', "_")));
        assert!(
            wasm.exists(),
            "component {name} was not built at {}",
            wasm.display()
        );
        writeln!(
            code,
            "    ({name:?}, include_bytes!({:?})),",
            wasm.display().to_string()
        )
        .unwrap();
    }
    code.push_str("];\n/// Bundled manifests: (file name, text).\n");
    code.push_str("pub const MANIFESTS: &[(&str, &str)] = &[\n");
    let mut manifests: Vec<_> = fs::read_dir(root.join("plugins"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    manifests.retain(|p: &PathBuf| p.extension().is_some_and(|e| e == "toml"));
    manifests.sort();
    for path in manifests {
        let file = path.file_name().unwrap().to_str().unwrap().to_string();
        writeln!(
            code,
            "    ({file:?}, include_str!({:?})),",
            path.display().to_string()
        )
        .unwrap();
    }
    code.push_str("];\n");
    fs::write(out.join("bundled.rs"), code).unwrap();
    println!("cargo:rustc-env=GANTRY_COMPONENT_DIR={}", out_dir.display());
    contract_facts(&root.join("wit"), &out);
}

/// What the host needs to know of the contract, read from `wit/` so that it is never restated
/// by hand: the package's name and version, and the `gantry:plugin` interfaces each world
/// imports (the capabilities a manifest can grant).
fn contract_facts(wit: &Path, out: &Path) {
    let types = fs::read_to_string(wit.join("types.wit")).unwrap();
    let package = types
        .lines()
        .find_map(|l| l.trim().strip_prefix("package "))
        .and_then(|p| p.strip_suffix(';'))
        .expect("wit/types.wit names its package");
    let (name, version) = package.split_once('@').expect("the package is versioned");
    println!("cargo:rustc-env=GANTRY_WIT_PACKAGE={package}");
    println!("cargo:rustc-env=GANTRY_WIT_VERSION={version}");
    let mut code = String::new();
    for (world, file) in [("handler", "handler.wit"), ("backend", "backend.wit")] {
        let text = fs::read_to_string(wit.join(file)).unwrap();
        let imports = world_imports(&text, world);
        assert!(
            !imports.is_empty(),
            "world {world} in wit/{file} imports nothing"
        );
        writeln!(
            code,
            "/// The `{name}` interfaces `world {world}` imports.\npub const {}_IMPORTS: &[&str] = &{:?};",
            world.to_uppercase(),
            imports
                .iter()
                .map(|i| format!("{name}/{i}"))
                .collect::<Vec<_>>()
        )
        .unwrap();
    }
    fs::write(out.join("contract.rs"), code).unwrap();
}

/// The plain `import NAME;` lines of `world WORLD { … }` (interfaces of the same package).
fn world_imports(text: &str, world: &str) -> Vec<String> {
    let mut inside = false;
    let mut imports = Vec::new();
    for line in text.lines() {
        let line = line.split("//").next().unwrap_or("").trim();
        if line.starts_with(&format!("world {world} ")) {
            inside = true;
        } else if inside && line.starts_with('}') {
            break;
        } else if inside && let Some(name) = line.strip_prefix("import ") {
            let name = name.trim_end_matches(';').trim();
            if !name.contains(':') {
                imports.push(name.to_string());
            }
        }
    }
    imports
}

/// Crate directories directly under `dir`, by name. Each directory's name is its package name.
fn crate_dirs(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.path().join("Cargo.toml").exists())
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn ensure_wasm_target() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .expect("running rustc --print sysroot");
    let sysroot = String::from_utf8(sysroot.stdout).unwrap();
    if Path::new(sysroot.trim())
        .join("lib/rustlib")
        .join(WASM_TARGET)
        .exists()
    {
        return;
    }
    println!(
        "cargo:warning=installing the {WASM_TARGET} target with rustup, to build gantry's components"
    );
    let mut rustup = Command::new("rustup");
    rustup.args(["target", "add", WASM_TARGET]);
    if let Ok(toolchain) = env::var("RUSTUP_TOOLCHAIN") {
        rustup.args(["--toolchain", &toolchain]);
    }
    let status = rustup
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .unwrap_or_else(|e| panic!("gantry's components need the {WASM_TARGET} target, and rustup could not be run to install it ({e}); install it with `rustup target add {WASM_TARGET}`"));
    assert!(status.success(), "`rustup target add {WASM_TARGET}` failed");
}

fn build_components<'a>(
    root: &Path,
    target_dir: &Path,
    packages: impl Iterator<Item = &'a String>,
) {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--release", "--target", WASM_TARGET])
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    for package in packages {
        cmd.args(["-p", package]);
    }
    // The outer build's settings describe the host build, not this one; keep only what says
    // where cargo lives, how it reaches registries, and the jobserver.
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let keep = matches!(key, "CARGO_HOME" | "CARGO_MAKEFLAGS" | "CARGO_INCREMENTAL")
            || key.starts_with("CARGO_NET_")
            || key.starts_with("CARGO_HTTP_")
            || key.starts_with("CARGO_REGISTRIES_")
            || key.starts_with("CARGO_TERM_");
        let drop = (key.starts_with("CARGO_") && !keep)
            || matches!(
                key,
                "RUSTFLAGS" | "RUSTDOCFLAGS" | "RUSTC_WRAPPER" | "RUSTC_WORKSPACE_WRAPPER"
            );
        if drop {
            cmd.env_remove(key);
        }
    }
    let status = cmd
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .expect("running cargo to build components");
    assert!(
        status.success(),
        "building gantry's components for {WASM_TARGET} failed (see above)"
    );
}
