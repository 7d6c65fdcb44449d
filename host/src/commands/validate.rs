//! The static checks of a command line (`POST /api/commands/validate`): whether it parses, and
//! whether it looks destructive, writes outside the workspace, escalates privilege, is a fork
//! bomb, or pipes the network into a shell. Pure functions over the text.
//!
//! Quoting is checked by `shlex` (a maintained POSIX word splitter: unbalanced quotes or a
//! trailing backslash do not split). `shlex` knows no operators, so the line is first cut at
//! the shell's control and redirection operators outside quotes (`|`, `||`, `&&`, `;`, `&`,
//! newlines, `(`, `)`, `>`, `>>`, `<`, …) by the small scanner here, and each word is then
//! unquoted by `shlex`. These checks warn; they are no wall — the sandbox is. A command line
//! that passes them still runs only inside it, and one that fails them may still be run.

/// What the checks found, in the document's shape.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Validation {
    /// It parses.
    pub valid: bool,
    /// No check below found a risk.
    pub safe: bool,
    /// What was found, for people.
    pub warnings: Vec<String>,
    /// What to do instead.
    pub suggestions: Vec<String>,
    /// What kinds of risk were found (stable names: `parse_error`, `destructive`,
    /// `outside_workspace`, `privilege_escalation`, `fork_bomb`, `remote_code`).
    pub risks: Vec<&'static str>,
}

impl Validation {
    fn flag(&mut self, risk: &'static str, warning: impl Into<String>, suggestion: &str) {
        if !self.risks.contains(&risk) {
            self.risks.push(risk);
        }
        let warning = warning.into();
        if !self.warnings.contains(&warning) {
            self.warnings.push(warning);
        }
        if !suggestion.is_empty() && !self.suggestions.iter().any(|s| s == suggestion) {
            self.suggestions.push(suggestion.to_string());
        }
    }
}

/// A piece of a command line: a word (raw, as written) or an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Op(&'static str),
}

/// Operators, longest first so that `>>` wins over `>`.
const OPERATORS: &[&str] = &[
    "&&", "||", ";;", ">>", "&>", ">|", "<<", "<&", ">&", "|", "&", ";", "(", ")", ">", "<", "\n",
];

/// Cut `line` into raw words and operators, respecting quotes, backslashes, `$(…)` and
/// backquotes (whose insides stay in their word). `Err` on unbalanced quotes or parentheses.
fn scan(line: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = line.chars().collect();
    let mut tokens = Vec::new();
    let mut word = String::new();
    let mut i = 0;
    let flush = |word: &mut String, tokens: &mut Vec<Token>| {
        if !word.is_empty() {
            tokens.push(Token::Word(std::mem::take(word)));
        }
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' => {
                word.push(c);
                if let Some(&next) = chars.get(i + 1) {
                    word.push(next);
                    i += 1;
                }
            }
            '\'' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&c| c == '\'')
                    .ok_or("an unbalanced single quote")?;
                word.extend(&chars[i..=i + 1 + end]);
                i += 1 + end;
            }
            '"' | '`' => {
                let mut j = i + 1;
                loop {
                    match chars.get(j) {
                        None if c == '"' => return Err("an unbalanced double quote".into()),
                        None => return Err("an unbalanced backquote".into()),
                        Some('\\') => j += 2,
                        Some(&d) if d == c => break,
                        Some(_) => j += 1,
                    }
                }
                word.extend(&chars[i..=j.min(chars.len() - 1)]);
                i = j;
            }
            '$' | '<' | '>' if chars.get(i + 1) == Some(&'(') => {
                // A command or process substitution stays inside its word, nested parentheses
                // and all.
                let mut depth = 0usize;
                let mut j = i + 1;
                loop {
                    match chars.get(j) {
                        None => return Err("an unclosed $( … )".into()),
                        Some('(') => depth += 1,
                        Some(')') => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        Some('\'') => {
                            j += chars[j + 1..]
                                .iter()
                                .position(|&c| c == '\'')
                                .ok_or("an unbalanced single quote")?
                                + 1;
                        }
                        Some('\\') => j += 1,
                        Some(_) => {}
                    }
                    j += 1;
                }
                word.extend(&chars[i..=j]);
                i = j;
            }
            '#' if word.is_empty() => {
                // A comment, to the end of the line.
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            c if c == ' ' || c == '\t' => flush(&mut word, &mut tokens),
            _ => {
                let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
                match OPERATORS.iter().find(|op| rest.starts_with(**op)) {
                    Some(op) => {
                        // `2>` and `2>&1`: the descriptor number belongs to the redirection.
                        if (op.starts_with('>') || op.starts_with('<'))
                            && !word.is_empty()
                            && word.chars().all(|c| c.is_ascii_digit())
                        {
                            word.clear();
                        }
                        flush(&mut word, &mut tokens);
                        tokens.push(Token::Op(op));
                        i += op.chars().count() - 1;
                    }
                    None => word.push(c),
                }
            }
        }
        i += 1;
    }
    flush(&mut word, &mut tokens);
    Ok(tokens)
}

/// A raw word without its quotes (`shlex`); the raw text if it does not split as one word.
fn unquote(raw: &str) -> String {
    match shlex::split(raw) {
        Some(words) if words.len() == 1 => words.into_iter().next().unwrap_or_default(),
        Some(words) => words.join(" "),
        None => raw.to_string(),
    }
}

/// One simple command: its words (unquoted) and where it redirects output.
#[derive(Debug, Default)]
struct Simple {
    words: Vec<String>,
    /// Output redirection targets (`>`, `>>`, `>|`, `&>`).
    writes: Vec<String>,
    /// Its output goes into a pipe.
    piped_out: bool,
    /// Its input comes from a pipe.
    piped_in: bool,
}

/// Split the tokens into simple commands; `Err` on a dangling operator or redirection.
fn commands(tokens: &[Token]) -> Result<Vec<Simple>, String> {
    let mut out: Vec<Simple> = Vec::new();
    let mut current = Simple::default();
    let mut iter = tokens.iter().peekable();
    let mut last_op: Option<&str> = None;
    while let Some(token) = iter.next() {
        match token {
            Token::Word(w) => {
                current.words.push(unquote(w));
                last_op = None;
            }
            Token::Op(op @ (">" | ">>" | ">|" | "&>" | "<" | "<<" | ">&" | "<&")) => {
                let target = match iter.next() {
                    Some(Token::Word(w)) => unquote(w),
                    _ => return Err(format!("`{op}` needs a file after it")),
                };
                if matches!(*op, ">" | ">>" | ">|" | "&>")
                    || (*op == ">&" && !target.chars().all(|c| c.is_ascii_digit() || c == '-'))
                {
                    current.writes.push(target);
                }
                last_op = None;
            }
            Token::Op(op) => {
                let separator = matches!(*op, ";" | "\n" | "&" | "(" | ")");
                if current.words.is_empty() && current.writes.is_empty() {
                    // `a ; ; b`, `| b`, `a && && b`: nothing where a command must be.
                    // A separator may follow anything; `&&`, `||` and `|` may follow a
                    // subshell's `)`.
                    if !separator && last_op != Some(")") {
                        return Err(format!("`{op}` has no command before it"));
                    }
                } else {
                    let piped = *op == "|";
                    current.piped_out = piped;
                    out.push(std::mem::take(&mut current));
                    current.piped_in = piped;
                }
                last_op = Some(op);
            }
        }
    }
    if let Some(op) = last_op
        && matches!(op, "|" | "&&" | "||")
    {
        return Err(format!("`{op}` has no command after it"));
    }
    if !current.words.is_empty() || !current.writes.is_empty() {
        out.push(current);
    }
    Ok(out)
}

/// Check `line`: parse errors always, the safety checks when `check_safety`.
pub fn validate(line: &str, check_safety: bool) -> Validation {
    let mut v = Validation {
        valid: true,
        safe: true,
        ..Validation::default()
    };
    if line.trim().is_empty() {
        v.valid = false;
        v.flag("parse_error", "The command is empty", "");
        v.safe = false;
        return v;
    }
    let parsed = match shlex::split(line) {
        None => Err("unbalanced quotes or a trailing backslash".to_string()),
        Some(_) => scan(line).and_then(|tokens| commands(&tokens)),
    };
    let simples = match parsed {
        Ok(s) => s,
        Err(why) => {
            v.valid = false;
            v.flag(
                "parse_error",
                format!("The command does not parse: {why}"),
                "Check that every quote and parenthesis is closed",
            );
            v.safe = false;
            return v;
        }
    };
    if check_safety {
        fork_bomb(line, &mut v);
        remote_code(line, &simples, &mut v);
        for simple in &simples {
            check_simple(simple, &mut v);
        }
        v.safe = v.risks.is_empty();
    }
    v
}

/// The program a simple command runs, past `env`, `nice`, `command`, `exec`, `time`,
/// `nohup` and leading `VAR=value` assignments; its arguments follow.
fn program(words: &[String]) -> Option<(&str, &[String])> {
    let mut i = 0;
    while let Some(w) = words.get(i) {
        let name = w.rsplit('/').next().unwrap_or(w);
        let is_assignment = w.contains('=')
            && w.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if is_assignment || matches!(name, "env" | "nice" | "command" | "exec" | "time" | "nohup") {
            i += 1;
            continue;
        }
        if w.starts_with('-') && i > 0 {
            i += 1; // an option of a wrapper above
            continue;
        }
        return Some((name, &words[i + 1..]));
    }
    None
}

/// Devices a write to is harmless.
const HARMLESS_DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/stdout",
    "/dev/stderr",
    "/dev/tty",
    "/dev/fd/1",
    "/dev/fd/2",
];

/// Whether a path written to leaves the workspace: absolute (but a harmless device), in the
/// home directory, or climbing out with `..`.
fn leaves_workspace(path: &str) -> bool {
    if HARMLESS_DEVICES.contains(&path) {
        return false;
    }
    path.starts_with('/')
        || path.starts_with('~')
        || path.starts_with("$HOME")
        || path.starts_with("${HOME}")
        || escapes(path)
}

/// Whether a relative path climbs above where it starts.
fn escapes(path: &str) -> bool {
    let mut depth: i64 = 0;
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => depth += 1,
        }
    }
    false
}

/// A disk or partition device.
fn is_block_device(path: &str) -> bool {
    let Some(name) = path.strip_prefix("/dev/") else {
        return false;
    };
    [
        "sd", "hd", "vd", "xvd", "nvme", "mmcblk", "disk", "loop", "md", "dm-", "mapper/",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

/// Targets whose recursive removal takes everything: the root, the home, all of the current
/// directory, a top-level system directory.
fn is_sweeping(target: &str) -> bool {
    let t = target.trim_end_matches('/');
    matches!(
        t,
        "" | "/*" | "~" | "~/*" | "$HOME" | "${HOME}" | "$HOME/*" | "*" | "." | ".." | "./*" | ".*"
    ) || (target.starts_with('/') && t.matches('/').count() <= 1 && !t.is_empty())
}

fn has_flag(args: &[String], short: char, long: &str) -> bool {
    args.iter().any(|a| {
        a == long || (a.starts_with('-') && !a.starts_with("--") && a[1..].contains(short))
    })
}

fn operands(args: &[String]) -> impl Iterator<Item = &String> {
    args.iter().filter(|a| !a.starts_with('-'))
}

fn check_simple(simple: &Simple, v: &mut Validation) {
    for target in &simple.writes {
        if is_block_device(target) {
            v.flag(
                "destructive",
                format!("Writing to {target} overwrites a disk"),
                "Write to a file inside the workspace instead",
            );
        } else if leaves_workspace(target) {
            v.flag(
                "outside_workspace",
                format!("The output goes to {target}, outside the workspace"),
                "Redirect to a relative path inside the workspace, such as ./output.txt",
            );
        }
    }
    let Some((name, args)) = program(&simple.words) else {
        return;
    };
    match name {
        "rm" => {
            let recursive =
                has_flag(args, 'r', "--recursive") || has_flag(args, 'R', "--recursive");
            if recursive && let Some(t) = operands(args).find(|t| is_sweeping(t)) {
                v.flag(
                    "destructive",
                    format!("This command is potentially destructive: it deletes {t} recursively"),
                    "Use 'rm -rf ./directory' to delete a specific directory",
                );
                v.flag(
                    "destructive",
                    "Command attempts to delete system files or everything in a directory",
                    "Use 'ls' to list files before deletion",
                );
            }
            write_targets(operands(args), v);
        }
        "mkfs" | "mke2fs" | "wipefs" | "fdisk" | "sfdisk" | "parted" | "mkswap" => {
            v.flag(
                "destructive",
                format!("{name} formats or repartitions a disk"),
                "Do not format disks from a command line",
            );
        }
        n if n.starts_with("mkfs.") => {
            v.flag(
                "destructive",
                format!("{name} formats a disk"),
                "Do not format disks from a command line",
            );
        }
        "dd" => {
            for a in args {
                if let Some(of) = a.strip_prefix("of=") {
                    if is_block_device(of)
                        || of.starts_with("/dev/") && !HARMLESS_DEVICES.contains(&of)
                    {
                        v.flag(
                            "destructive",
                            format!("dd writes to the device {of}"),
                            "Use dd only with of= a file inside the workspace",
                        );
                    } else if leaves_workspace(of) {
                        v.flag(
                            "outside_workspace",
                            format!("dd writes to {of}, outside the workspace"),
                            "Use dd only with of= a file inside the workspace",
                        );
                    }
                }
            }
        }
        "shred" => {
            if operands(args).any(|t| t.starts_with("/dev/")) {
                v.flag("destructive", "shred overwrites a device", "");
            }
            write_targets(operands(args), v);
        }
        "chmod" | "chown" | "chgrp" => {
            let recursive = has_flag(args, 'R', "--recursive");
            let ops: Vec<&String> = operands(args).collect();
            if recursive && ops.iter().skip(1).any(|t| is_sweeping(t)) {
                v.flag(
                    "destructive",
                    format!(
                        "{name} -R changes the whole of {}",
                        ops.last().map_or("/", |s| s.as_str())
                    ),
                    "Change the permissions of specific files inside the workspace",
                );
            }
            if name == "chmod" && ops.first().is_some_and(|m| is_setid_mode(m)) {
                v.flag(
                    "privilege_escalation",
                    "chmod sets the setuid or setgid bit",
                    "Do not make programs setuid or setgid",
                );
            }
            if name != "chmod"
                && ops
                    .first()
                    .is_some_and(|o| o.starts_with("root") || o.starts_with("0:") || *o == "0")
            {
                v.flag(
                    "privilege_escalation",
                    format!("{name} gives files to root"),
                    "",
                );
            }
            write_targets(ops.into_iter().skip(1), v);
        }
        "sudo" | "su" | "doas" | "pkexec" | "runuser" | "setpriv" | "chroot" | "unshare"
        | "nsenter" | "capsh" => {
            v.flag(
                "privilege_escalation",
                format!("{name} tries to run with other privileges"),
                "Run the command without sudo; it runs as your sandbox's user",
            );
            if matches!(name, "sudo" | "doas") {
                // What it would run is checked too (`sudo rm -rf /`): past its options, and
                // the values of those that take one.
                let mut rest = args;
                while let Some((first, tail)) = rest.split_first()
                    && first.starts_with('-')
                {
                    let takes_value = matches!(first.as_str(), "-u" | "-g" | "-C" | "-h" | "-p");
                    rest = if takes_value {
                        tail.get(1..).unwrap_or(&[])
                    } else {
                        tail
                    };
                }
                let inner = Simple {
                    words: rest.to_vec(),
                    ..Simple::default()
                };
                check_simple(&inner, v);
            }
        }
        "setcap" => {
            v.flag(
                "privilege_escalation",
                "setcap gives a program capabilities",
                "Do not give programs capabilities",
            );
        }
        "cp" | "mv" | "install" | "ln" | "rsync" => {
            let ops: Vec<&String> = operands(args).collect();
            let target_dir = args
                .iter()
                .position(|a| a == "-t" || a == "--target-directory")
                .and_then(|i| args.get(i + 1))
                .or_else(|| {
                    args.iter()
                        .find_map(|a| a.strip_prefix("--target-directory=").map(|_| a))
                });
            let destination =
                target_dir.or_else(|| (ops.len() >= 2).then(|| *ops.last().unwrap_or(&ops[0])));
            if let Some(d) = destination {
                let d = d.strip_prefix("--target-directory=").unwrap_or(d);
                write_targets(std::iter::once(&d.to_string()), v);
            }
        }
        "tee" | "touch" | "mkdir" | "truncate" => write_targets(operands(args), v),
        _ => {}
    }
}

/// Flag every path in `targets` that leaves the workspace.
fn write_targets<'a>(targets: impl Iterator<Item = &'a String>, v: &mut Validation) {
    for t in targets {
        if is_block_device(t) {
            v.flag(
                "destructive",
                format!("It writes to the device {t}"),
                "Write to a file inside the workspace instead",
            );
        } else if leaves_workspace(t) {
            v.flag(
                "outside_workspace",
                format!("It writes to {t}, outside the workspace"),
                "Use paths relative to the workspace, without '..'",
            );
        }
    }
}

/// `u+s`, `g+s`, `+s`, `4755`, `2755`, `a+rws`: a mode that sets setuid or setgid.
fn is_setid_mode(mode: &str) -> bool {
    if mode.chars().all(|c| c.is_ascii_digit()) {
        return mode.len() == 4 && matches!(mode.as_bytes()[0], b'2' | b'4' | b'6' | b'7');
    }
    // `s` in a symbolic mode is setuid for `u`, setgid for `g` (and both for `a` or none).
    mode.split(',').any(|clause| {
        clause
            .split_once(['+', '='])
            .is_some_and(|(_, perms)| perms.contains('s'))
    })
}

/// A function that calls itself twice, one in the background, then is called: `:(){ :|:& };:`
/// and the same under any name, with any spacing, or written `function f { f | f & }; f`.
fn fork_bomb(line: &str, v: &mut Validation) {
    let compact: String = line.chars().filter(|c| !c.is_whitespace()).collect();
    let mut search_from = 0;
    while let Some(at) = compact[search_from..].find('{') {
        let open = search_from + at;
        search_from = open + 1;
        let head = &compact[..open];
        // `name()` or `functionname` (the keyword and the name ran together once spaces went).
        let name = if let Some(h) = head.strip_suffix("()") {
            h.rsplit([';', '&', '|', '\n', '(', ')', '{', '}'])
                .next()
                .unwrap_or("")
        } else if let Some(i) = head.rfind("function") {
            &head[i + "function".len()..]
        } else {
            continue;
        };
        let name = name.trim_start_matches("function");
        if name.is_empty() {
            continue;
        }
        let Some(close) = compact[open..].find('}') else {
            continue;
        };
        let body = &compact[open + 1..open + close];
        let recursive_pipe = body.contains(&format!("{name}|{name}"));
        let background = body.contains('&');
        let called = compact[open + close..].contains(name);
        if recursive_pipe && background && called {
            v.flag(
                "fork_bomb",
                format!("This is a fork bomb: {name} starts two copies of itself, forever"),
                "Do not run it; it would exhaust the sandbox's process limit",
            );
            return;
        }
    }
}

/// The network piped or substituted into an interpreter: `curl … | sh`, `wget -O- … | bash`,
/// `sh -c "$(curl …)"`, `bash <(curl …)`.
fn remote_code(line: &str, simples: &[Simple], v: &mut Validation) {
    const FETCHERS: &[&str] = &["curl", "wget", "fetch", "nc", "ncat", "aria2c"];
    const SHELLS: &[&str] = &[
        "sh", "bash", "zsh", "dash", "ksh", "fish", "python", "python3", "perl", "ruby", "node",
        "php", "source", ".",
    ];
    let is_shell = |s: &Simple| {
        program(&s.words).is_some_and(|(name, args)| {
            SHELLS.contains(&name)
                || (matches!(name, "sudo" | "doas")
                    && args.first().is_some_and(|a| SHELLS.contains(&a.as_str())))
        })
    };
    let mut fetched = false;
    for s in simples {
        if s.piped_in && fetched && is_shell(s) {
            v.flag(
                "remote_code",
                "It pipes a download straight into an interpreter",
                "Download the script to a file, read it, then run it",
            );
            return;
        }
        let fetches = program(&s.words).is_some_and(|(name, _)| FETCHERS.contains(&name));
        fetched = s.piped_out && (fetches || (fetched && s.piped_in));
    }
    let substituted = FETCHERS.iter().any(|f| {
        ["$(", "<(", "`"]
            .iter()
            .any(|open| line.contains(&format!("{open}{f} ")))
    });
    if substituted && simples.iter().any(is_shell) {
        v.flag(
            "remote_code",
            "It runs a download as code",
            "Download the script to a file, read it, then run it",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn risks(line: &str) -> Vec<&'static str> {
        let v = validate(line, true);
        assert!(v.valid, "{line:?} does not parse: {:?}", v.warnings);
        v.risks
    }

    fn assert_flags(risk: &str, lines: &[&str]) {
        for line in lines {
            let found = risks(line);
            assert!(
                found.contains(&risk),
                "{line:?} is not flagged {risk}: {found:?}"
            );
        }
    }

    #[test]
    fn parse_errors() {
        for line in [
            "echo 'unterminated",
            "echo \"unterminated",
            "echo `date",
            "echo $(date",
            "ls |",
            "ls &&",
            "| ls",
            "ls ; && pwd",
            "echo hi >",
            "cat <",
            "",
            "   ",
            "echo trailing\\",
        ] {
            let v = validate(line, true);
            assert!(!v.valid, "{line:?} parses");
            assert!(!v.safe);
            assert_eq!(v.risks, ["parse_error"], "{line:?}");
        }
    }

    #[test]
    fn ordinary_lines_are_valid_and_safe() {
        for line in [
            "ls -la",
            "git status",
            "cargo test -- --nocapture",
            "echo 'a | b; c' > out.txt",
            "grep -r \"fn main\" src | head -5",
            "make && ./build/app --flag=1",
            "rm -rf ./build",
            "rm -rf target/debug",
            "cp a.txt b.txt",
            "mv src/a.rs src/b.rs",
            "find . -name '*.rs' | xargs wc -l",
            "python3 -c 'print(1)' 2>&1 | tee log.txt",
            "echo x > /dev/null",
            "ls 2>/dev/null",
            "(cd sub && make)",
            "npm test # runs the tests",
            "chmod +x script.sh",
            "chmod -R 755 ./bin",
            "curl -sS https://example.com -o page.html",
            "echo $(date) > stamp",
            "dd if=/dev/zero of=./blob bs=1k count=1",
            "a=1 b=2 env",
        ] {
            let v = validate(line, true);
            assert!(v.valid && v.safe, "{line:?}: {v:?}");
            assert!(v.warnings.is_empty() && v.suggestions.is_empty());
        }
    }

    #[test]
    fn destructive_patterns() {
        assert_flags(
            "destructive",
            &[
                "rm -rf /",
                "rm -rf /*",
                "rm -fr ~",
                "rm -r -f ~/",
                "rm -rf $HOME",
                "rm --recursive --force /",
                "rm -rf *",
                "cd / && rm -rf *",
                "sudo rm -rf / --no-preserve-root",
                "/bin/rm -Rf /etc",
                "mkfs.ext4 /dev/sda1",
                "mkfs -t ext4 /dev/sdb",
                "wipefs -a /dev/sda",
                "dd if=/dev/zero of=/dev/sda bs=1M",
                "dd if=image.iso of=/dev/nvme0n1",
                "chmod -R 777 /",
                "chown -R nobody /",
                "echo x > /dev/sda",
                "cat junk >> /dev/vda",
                "shred /dev/sda",
            ],
        );
        let v = validate("rm -rf /", true);
        assert!(!v.safe && v.valid);
        assert!(
            v.warnings
                .iter()
                .any(|w| w.contains("potentially destructive"))
        );
        assert!(!v.suggestions.is_empty());
    }

    #[test]
    fn writes_outside_the_workspace() {
        assert_flags(
            "outside_workspace",
            &[
                "echo x > /tmp/outside",
                "echo x >> /etc/passwd",
                "ls &> /var/log/x",
                "touch ../../escape",
                "echo x > ../escape",
                "echo x > sub/../../escape",
                "cp a.txt /etc/",
                "cp -r src ../",
                "mv file ~/file",
                "cp -t /usr/bin tool",
                "cat secret | tee /tmp/copy",
                "tee -a ../log < in",
                "mkdir /opt/x",
                "echo x > $HOME/.bashrc",
                "dd if=a of=/tmp/b",
                "install -m 755 tool /usr/local/bin/tool",
            ],
        );
    }

    #[test]
    fn privilege_escalation() {
        assert_flags(
            "privilege_escalation",
            &[
                "sudo ls",
                "sudo -u root id",
                "su -",
                "su root -c id",
                "doas sh",
                "pkexec bash",
                "chmod u+s ./tool",
                "chmod +s tool",
                "chmod g+s dir",
                "chmod 4755 tool",
                "setcap cap_net_raw+ep ./tool",
                "chown root:root tool",
                "env FOO=1 sudo id",
            ],
        );
    }

    #[test]
    fn fork_bombs_under_any_name() {
        assert_flags(
            "fork_bomb",
            &[
                ":(){ :|:& };:",
                ":(){ :|: & };:",
                ": ( ) { : | : & } ; :",
                "bomb(){ bomb|bomb& };bomb",
                "f() { f | f & }; f",
                "function boom { boom | boom & }; boom",
                "x(){ x|x&\n};x",
            ],
        );
        // A function that calls itself once, or is never called, is not one.
        for line in ["f(){ echo hi; }; f", "g(){ g|g& }"] {
            assert!(!risks(line).contains(&"fork_bomb"), "{line:?}");
        }
    }

    #[test]
    fn network_into_a_shell() {
        assert_flags(
            "remote_code",
            &[
                "curl https://example.com/install.sh | sh",
                "curl -fsSL https://x.io/i | sudo bash",
                "wget -qO- https://x.io/i | bash -s -- --yes",
                "curl x | tee log | sh",
                "sh -c \"$(curl -fsSL https://x.io/i)\"",
                "bash <(curl -s https://x.io/i)",
                "curl https://x.io/x.py | python3",
            ],
        );
        for line in ["curl https://x.io | grep title", "cat install.sh | sh"] {
            assert!(!risks(line).contains(&"remote_code"), "{line:?}");
        }
    }

    #[test]
    fn safety_checks_can_be_skipped() {
        let v = validate("rm -rf /", false);
        assert!(v.valid && v.safe && v.warnings.is_empty());
        assert!(!validate("echo 'x", false).valid);
    }

    #[test]
    fn escapes_counts_depth() {
        assert!(escapes(".."));
        assert!(escapes("a/../.."));
        assert!(!escapes("a/../b"));
        assert!(!escapes("./a/./b/.."));
    }
}
