//! `GET /api/commands/suggestions`: the shipped catalogue (`catalogue.tsv`, compiled in) and
//! the user's own history, filtered by context and prefix and ranked.
//!
//! Ranking: what the user ran before comes first when it matches (more runs rank higher),
//! then the catalogue in its order. A `context` keeps entries of that category or whose
//! program is that word (`git`, `python`, …); an unknown context keeps nothing of the
//! catalogue but still matches history by program. The `prefix` matches the start of the
//! command, ignoring case and repeated spaces.

/// The catalogue: category, command, description per line.
const CATALOGUE: &str = include_str!("catalogue.tsv");
/// The most suggestions one answer carries.
pub const MAX_SUGGESTIONS: usize = 20;

/// One suggestion, in the document's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suggestion {
    /// The command line.
    pub command: String,
    /// What it does.
    pub description: String,
    /// The catalogue's category, or `history` for the user's own command.
    pub category: String,
}

/// The catalogue's entries: (category, command, description).
pub fn catalogue() -> impl Iterator<Item = (&'static str, &'static str, &'static str)> {
    CATALOGUE
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let mut parts = l.splitn(3, '\t');
            Some((parts.next()?, parts.next()?, parts.next()?))
        })
}

/// Lower case with single spaces, for matching.
fn normal(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn program(command: &str) -> &str {
    command.split_whitespace().next().unwrap_or("")
}

/// Suggestions for `prefix` in `context` from `history` (command, times run; most first) and
/// the catalogue, at most `limit`, without repeats.
pub fn rank(
    history: &[(String, u64)],
    context: &str,
    prefix: &str,
    limit: usize,
) -> Vec<Suggestion> {
    let context = normal(context);
    let prefix = normal(prefix);
    let matches = |command: &str| normal(command).starts_with(&prefix);
    let in_context = |category: &str, command: &str| {
        context.is_empty()
            || category.eq_ignore_ascii_case(&context)
            || program(command).eq_ignore_ascii_case(&context)
    };
    let mut out: Vec<Suggestion> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut ranked: Vec<&(String, u64)> = history.iter().collect();
    ranked.sort_by_key(|h| std::cmp::Reverse(h.1));
    for (command, runs) in ranked {
        let category = catalogue()
            .find(|(_, c, _)| program(c) == program(command))
            .map_or("history", |(cat, _, _)| cat);
        if matches(command) && in_context(category, command) && seen.insert(normal(command)) {
            out.push(Suggestion {
                command: command.clone(),
                description: format!(
                    "You ran this {runs} time{}",
                    if *runs == 1 { "" } else { "s" }
                ),
                category: "history".into(),
            });
        }
    }
    for (category, command, description) in catalogue() {
        if matches(command) && in_context(category, command) && seen.insert(normal(command)) {
            out.push(Suggestion {
                command: command.into(),
                description: description.into(),
                category: category.into(),
            });
        }
    }
    out.truncate(limit);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_is_well_formed() {
        let entries: Vec<_> = catalogue().collect();
        assert!(entries.len() > 50);
        for (category, command, description) in entries {
            assert!(!category.is_empty() && !command.is_empty() && !description.is_empty());
            assert!(!command.contains("sudo") && !command.starts_with("docker"));
        }
    }

    #[test]
    fn the_documents_example() {
        let got = rank(&[], "git", "git ", 3);
        let commands: Vec<_> = got.iter().map(|s| s.command.as_str()).collect();
        assert_eq!(commands, ["git status", "git add .", "git commit -m"]);
        assert_eq!(got[0].description, "Show the working tree status");
        assert_eq!(got[0].category, "git");
    }

    #[test]
    fn history_comes_first_most_run_first() {
        let history = vec![
            ("git log --graph".to_string(), 2),
            ("git status".to_string(), 7),
            ("ls -la".to_string(), 9),
        ];
        let got = rank(&history, "git", "git", 50);
        assert_eq!(got[0].command, "git status");
        assert_eq!(got[0].category, "history");
        assert_eq!(got[1].command, "git log --graph");
        // Not repeated from the catalogue, and nothing outside the context.
        assert_eq!(got.iter().filter(|s| s.command == "git status").count(), 1);
        assert!(got.iter().all(|s| s.command.starts_with("git")));
    }

    #[test]
    fn prefix_and_context_filter() {
        assert!(
            rank(&[], "", "pyt", 50)
                .iter()
                .all(|s| s.command.starts_with("pyt"))
        );
        assert!(!rank(&[], "", "pytest", 50).is_empty());
        assert!(
            rank(&[], "python", "", 50)
                .iter()
                .all(|s| s.category == "python")
        );
        assert!(rank(&[], "nonsense", "", 50).is_empty());
        assert!(
            rank(&[], "", "CARGO  T", 50)
                .iter()
                .any(|s| s.command == "cargo test")
        );
        assert_eq!(rank(&[], "", "", 5).len(), 5);
    }
}
