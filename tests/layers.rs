//! The host's layers (DESIGN.md, `docs/architecture.md`): a module imports only from layers
//! below its own, and modules of one layer never form a cycle. This reads `host/src` and fails
//! on the first import that goes up, naming the file and the line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top to bottom. A module may use modules of a lower layer, and of its own layer as long as
/// that forms no cycle.
const LAYERS: &[&[&str]] = &[
    &["cli", "authoring", "reload", "node"],
    &["http"],
    &["runtime"],
    &["tasks", "commands", "webhooks"],
    &[
        "workspaces",
        "sessions",
        "users",
        "projects",
        "backends",
        "events",
        "work_sessions",
    ],
    &["store"],
    &[
        "config", "manifest", "contract", "tenants", "metrics", "spawn",
    ],
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src` belongs to (`None` for the crate root and binaries).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.trim_end_matches(".rs").to_string();
    (!matches!(name.as_str(), "lib" | "main" | "bin")).then_some(name)
}

/// `crate::X` paths used in code (comments and strings of doc text are skipped).
fn crate_uses(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let preceded = rest[..i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            if !preceded
                && !name.is_empty()
                && name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            {
                out.push((n + 1, name));
            }
            rest = after;
        }
    }
    out
}

#[test]
fn imports_only_go_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut upward = Vec::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let from = rank(&module).unwrap_or_else(|| {
            panic!("module `{module}` is in no layer: add it to LAYERS here and to docs/architecture.md")
        });
        let text = std::fs::read_to_string(file).unwrap();
        for (line, target) in crate_uses(&text) {
            if target == module || target == "VERSION" {
                continue;
            }
            let Some(to) = rank(&target) else {
                continue; // a root item, e.g. a macro or a constant of lib.rs
            };
            if to < from {
                upward.push(format!(
                    "{}:{line}: `{module}` uses `crate::{target}`, a layer above it",
                    file.strip_prefix(&src).unwrap().display()
                ));
            }
            edges.entry(module.clone()).or_default().insert(target);
        }
    }
    assert!(
        upward.is_empty(),
        "imports that go up:\n{}",
        upward.join("\n")
    );
    // No cycle, within a layer or across.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if done.contains(node) {
            return;
        }
        if let Some(i) = path.iter().position(|p| p == node) {
            panic!("an import cycle: {} -> {node}", path[i..].join(" -> "));
        }
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            visit(next, edges, path, done);
        }
        path.pop();
        done.insert(node.to_string());
    }
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        visit(node, &edges, &mut Vec::new(), &mut done);
    }
}

#[test]
fn the_check_sees_an_upward_import() {
    let uses = crate_uses(
        "use crate::runtime::Plugins; // crate::http in a comment\nlet x = my_crate::tasks;",
    );
    assert_eq!(uses, vec![(1, "runtime".to_string())]);
    assert!(rank("tasks") > rank("runtime"));
}
