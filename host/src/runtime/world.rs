//! Which imports a plugin may have, and whether a component fits its world.
//!
//! Every import falls in one of three classes per world: *ambient* (harmless WASI every
//! component may use: clocks, random, stdio, an environment with nothing in it, a filesystem
//! with no directories), *grantable* (a capability the manifest must grant), or *unavailable*
//! (gantry does not provide it to that world at all).
//!
//! The `gantry:plugin` interfaces each world may import, and the contract's version, come from
//! `wit/` (see [`crate::contract`]); only the WASI policy is written here.

use crate::contract;
use crate::manifest::PluginKind;
use std::fmt;

/// How a world treats one import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Always linked.
    Ambient,
    /// Linked when the manifest grants it.
    Grantable,
    /// Not provided to this world.
    Unavailable,
}

const AMBIENT: &[&str] = &[
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "gantry:plugin/types",
];

const HANDLER_AMBIENT: &[&str] = &["wasi:http/types"];

/// Capabilities beyond the contract's own that a backend may be granted.
const BACKEND_GRANTABLE: &[&str] = &["gantry:plugin/log"];

/// WASI a handler may be granted (outbound HTTP and sockets).
const HANDLER_GRANTABLE: &[&str] = &[
    "wasi:http/outgoing-handler",
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
    "wasi:sockets/ip-name-lookup",
];

/// The export a world requires, and the version prefix it must carry.
pub fn required_export(kind: PluginKind) -> (&'static str, &'static str) {
    match kind {
        PluginKind::Handler => ("wasi:http/incoming-handler", "0.2"),
        PluginKind::Backend => ("gantry:plugin/adapter", contract::compatible_prefix()),
    }
}

/// Whether `version` is `prefix` or a patch of it (`0.3` fits `0.3.0` and `0.3.2`).
fn fits_version(version: &str, prefix: &str) -> bool {
    version == prefix || version.starts_with(&format!("{prefix}."))
}

/// Split `ns:pkg/iface@1.2.3` into `ns:pkg/iface` and `1.2.3`.
pub fn split_version(name: &str) -> (&str, Option<&str>) {
    match name.split_once('@') {
        Some((n, v)) => (n, Some(v)),
        None => (name, None),
    }
}

/// How `kind`'s world treats the import `name` (versioned or not).
pub fn access(kind: PluginKind, name: &str) -> Access {
    let (iface, _) = split_version(name);
    if AMBIENT.contains(&iface) {
        return Access::Ambient;
    }
    match kind {
        PluginKind::Handler if HANDLER_AMBIENT.contains(&iface) => Access::Ambient,
        PluginKind::Handler
            if contract::HANDLER_IMPORTS.contains(&iface) || HANDLER_GRANTABLE.contains(&iface) =>
        {
            Access::Grantable
        }
        PluginKind::Backend
            if contract::BACKEND_IMPORTS.contains(&iface) || BACKEND_GRANTABLE.contains(&iface) =>
        {
            Access::Grantable
        }
        _ => Access::Unavailable,
    }
}

/// Whether a grant (`ns:pkg/iface` or a whole `ns:pkg`) covers the import `name`.
pub fn grant_covers(grant: &str, name: &str) -> bool {
    let (iface, _) = split_version(name);
    iface == grant
        || iface
            .strip_prefix(grant)
            .is_some_and(|rest| rest.starts_with('/') && !grant.contains('/'))
}

/// Why a component cannot run as a plugin of some kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Misfit {
    /// It lacks the world's export.
    MissingExport(String),
    /// It imports something gantry does not give this world.
    Unavailable(String),
    /// It was built for another version of the `gantry:plugin` contract.
    OtherContract(String),
    /// It imports a capability its manifest does not grant.
    NotGranted(String),
}

impl fmt::Display for Misfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Misfit::MissingExport(e) => write!(f, "does not export {e}"),
            Misfit::Unavailable(i) => write!(f, "imports {i}, which gantry does not provide"),
            Misfit::OtherContract(name) => write!(
                f,
                "was built for {name}, but this gantry speaks {} only: rebuild it against \
                 the WIT of {} (its SDK's {} release)",
                contract::PACKAGE,
                contract::PACKAGE,
                contract::compatible_prefix()
            ),
            Misfit::NotGranted(i) => {
                let (iface, _) = split_version(i);
                write!(
                    f,
                    "imports {i}, which its manifest does not grant (add \"{iface}\" to `imports`)"
                )
            }
        }
    }
}

/// Check a component's import and export names against `kind`'s world and the grants.
/// Types are checked later, when the component is linked.
pub fn check<'a>(
    kind: PluginKind,
    imports: impl IntoIterator<Item = &'a str>,
    exports: impl IntoIterator<Item = &'a str>,
    grants: &[String],
) -> Result<(), Misfit> {
    let (export, major) = required_export(kind);
    let exports: Vec<&str> = exports.into_iter().collect();
    let imports: Vec<&str> = imports.into_iter().collect();
    // A component of another contract version is named as such, before anything else.
    let contract_name = contract::PACKAGE.split('@').next().unwrap_or_default();
    for name in exports.iter().chain(&imports) {
        let (iface, version) = split_version(name);
        let ours = iface
            .strip_prefix(contract_name)
            .is_some_and(|rest| rest.starts_with('/'));
        if ours && !version.is_some_and(|v| fits_version(v, contract::compatible_prefix())) {
            return Err(Misfit::OtherContract(format!(
                "{contract_name}@{}",
                version.unwrap_or("(unversioned)")
            )));
        }
    }
    let has_export = exports.iter().any(|e| {
        let (name, version) = split_version(e);
        name == export && version.is_some_and(|v| fits_version(v, major))
    });
    if !has_export {
        return Err(Misfit::MissingExport(format!("{export}@{major}.x")));
    }
    for import in imports {
        match access(kind, import) {
            Access::Ambient => {}
            Access::Unavailable => return Err(Misfit::Unavailable(import.to_string())),
            Access::Grantable => {
                if !grants.iter().any(|g| grant_covers(g, import)) {
                    return Err(Misfit::NotGranted(import.to_string()));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HANDLER_EXPORTS: &[&str] = &["wasi:http/incoming-handler@0.2.12"];

    #[test]
    fn ambient_imports_need_no_grant() {
        let imports = ["wasi:io/streams@0.2.12", "wasi:cli/environment@0.2.0"];
        check(
            PluginKind::Handler,
            imports,
            HANDLER_EXPORTS.iter().copied(),
            &[],
        )
        .unwrap();
    }

    #[test]
    fn grantable_imports_need_their_grant() {
        let imports = ["gantry:plugin/config@0.3.0"];
        let err = check(
            PluginKind::Handler,
            imports,
            HANDLER_EXPORTS.iter().copied(),
            &[],
        )
        .unwrap_err();
        assert_eq!(err, Misfit::NotGranted("gantry:plugin/config@0.3.0".into()));
        assert!(err.to_string().contains("add \"gantry:plugin/config\""));
        let grants = ["gantry:plugin/config".to_string()];
        check(
            PluginKind::Handler,
            imports,
            HANDLER_EXPORTS.iter().copied(),
            &grants,
        )
        .unwrap();
        // A package grant covers each of its interfaces.
        let grants = ["wasi:sockets".to_string()];
        check(
            PluginKind::Handler,
            ["wasi:sockets/tcp@0.2.0"],
            HANDLER_EXPORTS.iter().copied(),
            &grants,
        )
        .unwrap();
    }

    #[test]
    fn backends_get_no_io() {
        let exports = ["gantry:plugin/adapter@0.3.0"];
        check(PluginKind::Backend, ["wasi:cli/stderr@0.2.0"], exports, &[]).unwrap();
        let grants = ["wasi:http/outgoing-handler".to_string()];
        let err = check(
            PluginKind::Backend,
            ["wasi:http/outgoing-handler@0.2.0"],
            exports,
            &grants,
        )
        .unwrap_err();
        assert!(matches!(err, Misfit::Unavailable(_)));
    }

    #[test]
    fn unknown_imports_and_missing_exports() {
        let err = check(
            PluginKind::Handler,
            ["acme:thing/widget@1.0.0"],
            HANDLER_EXPORTS.iter().copied(),
            &["acme:thing".into()],
        )
        .unwrap_err();
        assert_eq!(err, Misfit::Unavailable("acme:thing/widget@1.0.0".into()));
        let err = check(
            PluginKind::Backend,
            [],
            HANDLER_EXPORTS.iter().copied(),
            &[],
        )
        .unwrap_err();
        assert_eq!(
            err,
            Misfit::MissingExport("gantry:plugin/adapter@0.3.x".into())
        );
        // A future major version of the export does not fit.
        let err = check(
            PluginKind::Handler,
            [],
            ["wasi:http/incoming-handler@0.3.0"],
            &[],
        )
        .unwrap_err();
        assert!(matches!(err, Misfit::MissingExport(_)));
    }

    #[test]
    fn components_of_another_contract_are_named_as_such() {
        let err = check(
            PluginKind::Backend,
            ["gantry:plugin/config@0.2.0"],
            ["gantry:plugin/adapter@0.2.0"],
            &["gantry:plugin/config".into()],
        )
        .unwrap_err();
        assert_eq!(err, Misfit::OtherContract("gantry:plugin@0.2.0".into()));
        let text = err.to_string();
        assert!(
            text.contains("gantry:plugin@0.2.0") && text.contains(contract::PACKAGE),
            "{text}"
        );
        // A handler importing an older interface is refused the same way.
        let err = check(
            PluginKind::Handler,
            ["gantry:plugin/tasks@0.2.0"],
            HANDLER_EXPORTS.iter().copied(),
            &["gantry:plugin/tasks".into()],
        )
        .unwrap_err();
        assert!(matches!(err, Misfit::OtherContract(_)));
    }

    #[test]
    fn grantable_interfaces_come_from_the_wit() {
        for iface in [
            "gantry:plugin/tasks",
            "gantry:plugin/sessions",
            "gantry:plugin/metrics",
        ] {
            assert_eq!(access(PluginKind::Handler, iface), Access::Grantable);
            assert_eq!(access(PluginKind::Backend, iface), Access::Unavailable);
        }
        assert_eq!(
            access(PluginKind::Backend, "gantry:plugin/config"),
            Access::Grantable
        );
    }

    #[test]
    fn grant_matching() {
        assert!(grant_covers("gantry:plugin/log", "gantry:plugin/log@0.3.0"));
        assert!(!grant_covers(
            "gantry:plugin/log",
            "gantry:plugin/logger@0.3.0"
        ));
        assert!(grant_covers("gantry:plugin", "gantry:plugin/log@0.3.0"));
        assert!(!grant_covers("gantry:plug", "gantry:plugin/log@0.3.0"));
    }
}
