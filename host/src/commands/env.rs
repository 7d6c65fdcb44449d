//! A command's `environment`: names a POSIX shell takes, values without NUL, and none of the
//! variables that change how the dynamic loader, the shell or libc behave, nor the ones the
//! sandbox sets itself. A command starts from a clean environment (PATH, HOME, TMPDIR, LANG
//! and the egress proxy's variables, never gantry's own) plus what passes here.

/// The most variables one request sets.
pub const MAX_VARS: usize = 64;
/// The most bytes of one value.
pub const MAX_VALUE_BYTES: usize = 8 * 1024;

/// Names refused outright.
const DENIED: &[&str] = &[
    // The shell reads these at start or while it runs: code or parsing it was not given.
    "BASH_ENV",
    "ENV",
    "IFS",
    "PS4",
    "SHELLOPTS",
    "BASHOPTS",
    "PROMPT_COMMAND",
    "CDPATH",
    "GLOBIGNORE",
    // libc's loaders of code and data.
    "GCONV_PATH",
    "GLIBC_TUNABLES",
    "LOCPATH",
    "NLSPATH",
    "HOSTALIASES",
    "RESOLV_HOST_CONF",
    "RES_OPTIONS",
    // Set by the sandbox: the command's own directories and its only way out.
    "PATH",
    "HOME",
    "TMPDIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Name prefixes refused: the dynamic loaders' (`LD_PRELOAD`, `LD_LIBRARY_PATH`, …; macOS's
/// `DYLD_*`), malloc's debugging hooks, and bash's exported functions.
const DENIED_PREFIXES: &[&str] = &["LD_", "DYLD_", "MALLOC_", "BASH_FUNC_"];

/// Why `name` may not be set, if it may not.
pub fn refusal(name: &str) -> Option<String> {
    let mut chars = name.chars();
    let well_formed = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 128;
    if !well_formed {
        return Some(format!(
            "{name:?} is not a variable name (a letter or _, then letters, digits or _; at most 128)"
        ));
    }
    if DENIED.contains(&name) || DENIED_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return Some(format!(
            "{name} may not be set: it changes how programs load or how the shell or sandbox behaves"
        ));
    }
    None
}

/// The variables, checked: the first problem found, or them as given.
pub fn check(vars: &[(String, String)]) -> Result<Vec<(String, String)>, String> {
    if vars.len() > MAX_VARS {
        return Err(format!("at most {MAX_VARS} variables"));
    }
    for (name, value) in vars {
        if let Some(why) = refusal(name) {
            return Err(why);
        }
        if value.contains('\0') {
            return Err(format!("the value of {name} contains a NUL byte"));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(format!(
                "the value of {name} is longer than {MAX_VALUE_BYTES} bytes"
            ));
        }
    }
    Ok(vars.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loader_and_shell_variables_are_refused() {
        for name in [
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "LD_AUDIT",
            "DYLD_INSERT_LIBRARIES",
            "BASH_ENV",
            "ENV",
            "IFS",
            "PS4",
            "SHELLOPTS",
            "PROMPT_COMMAND",
            "GCONV_PATH",
            "GLIBC_TUNABLES",
            "BASH_FUNC_ls%%",
            "MALLOC_CHECK_",
            "PATH",
            "HOME",
            "HTTPS_PROXY",
        ] {
            assert!(refusal(name).is_some(), "{name} passes");
        }
    }

    #[test]
    fn malformed_names_are_refused() {
        for name in ["", "1ABC", "A-B", "A B", "A=B", "Ä", &"A".repeat(129)] {
            assert!(refusal(name).is_some(), "{name:?} passes");
        }
    }

    #[test]
    fn ordinary_variables_pass() {
        let vars = vec![
            ("NODE_ENV".to_string(), "development".to_string()),
            ("_private".into(), "x y z".into()),
            ("RUST_LOG".into(), String::new()),
        ];
        assert_eq!(check(&vars).unwrap(), vars);
    }

    #[test]
    fn bad_values_and_too_many_are_refused() {
        assert!(check(&[("A".into(), "a\0b".into())]).is_err());
        assert!(check(&[("A".into(), "x".repeat(MAX_VALUE_BYTES + 1))]).is_err());
        let many: Vec<_> = (0..=MAX_VARS)
            .map(|i| (format!("V{i}"), String::new()))
            .collect();
        assert!(check(&many).is_err());
    }
}
