//! The `search` query parameter: its small boolean syntax and its translation
//! into an SQLite FTS5 `MATCH` expression.
//!
//! Accepted syntax:
//!
//! - `authentication` — a word; `auth*` — a prefix;
//! - `"user authentication"` — an exact phrase;
//! - `title:auth`, `title:auth*`, `title:"user auth"` — restricted to one field;
//! - `AND`, `OR`, `NOT` (uppercase only) and parentheses; adjacent terms are
//!   ANDed. `NOT` binds tighter than `AND`, which binds tighter than `OR`.
//!
//! User text never reaches FTS5 as syntax: every term is rendered as a quoted
//! FTS5 string, and only the operators and parentheses this module emits
//! itself appear unquoted. That is what makes the output injection-safe and
//! guarantees FTS5 never reports a syntax error for a query that parsed.

use std::fmt;

/// Longest accepted query, in characters, so a request cannot make FTS5 do
/// unbounded work.
pub const MAX_QUERY_CHARS: usize = 500;

/// Most terms (words, prefixes, phrases) a query may contain; this also bounds
/// the nesting depth of the rendered expression well below FTS5's limits.
pub const MAX_TERMS: usize = 32;

/// A parsed search query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// A single word, prefix or phrase.
    Term(Term),
    /// Both sides must match.
    And(Box<Query>, Box<Query>),
    /// Either side must match.
    Or(Box<Query>, Box<Query>),
    /// The left side must match and the right side must not.
    Not(Box<Query>, Box<Query>),
}

/// One searchable unit of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// The field (FTS5 column) the term is restricted to, or `None` for all.
    pub field: Option<String>,
    /// The text as typed, without the quotes of a phrase or the `*` of a prefix.
    pub text: String,
    /// How `text` is matched.
    pub kind: TermKind,
}

/// How a [`Term`]'s text is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TermKind {
    /// The text's tokens, as a phrase if the tokenizer splits it (`auth-service`).
    Word,
    /// Like `Word`, but the last token matches any token it is a prefix of.
    Prefix,
    /// The quoted text's tokens, adjacent and in order.
    Phrase,
}

/// Why a query does not parse: a message for the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchError(pub String);

impl fmt::Display for SearchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SearchError {}

impl Query {
    /// Parses `input` in the search syntax described in the module docs.
    ///
    /// `fields` are the names accepted before a `:`; they must also be the
    /// FTS5 column names, since [`Query::to_fts5`] uses them verbatim.
    pub fn parse(input: &str, fields: &[&str]) -> Result<Query, SearchError> {
        let chars = input.chars().count();
        if chars > MAX_QUERY_CHARS {
            return Err(error(format!(
                "the search is {chars} characters long; at most {MAX_QUERY_CHARS} are allowed"
            )));
        }
        if input.chars().all(is_separator) {
            return Err(error("the search is empty".to_string()));
        }
        let tokens = lex(input, fields)?;
        let terms = tokens
            .iter()
            .filter(|t| matches!(t.kind, TokenKind::Term(_)))
            .count();
        if terms > MAX_TERMS {
            return Err(error(format!(
                "the search has {terms} terms; at most {MAX_TERMS} are allowed"
            )));
        }
        let mut parser = Parser { tokens, next: 0 };
        let query = parser.or_expr()?;
        match parser.tokens.get(parser.next) {
            None => Ok(query),
            // The grammar consumes everything except a `)` that closes nothing.
            Some(token) => Err(error(format!(
                "unmatched {} at byte {}",
                token.kind.describe(),
                token.pos
            ))),
        }
    }

    /// Renders the query as an FTS5 `MATCH` expression.
    ///
    /// Every binary node is parenthesised so FTS5's own precedence rules never
    /// come into play.
    pub fn to_fts5(&self) -> String {
        let mut out = String::new();
        self.write_fts5(&mut out);
        out
    }

    fn write_fts5(&self, out: &mut String) {
        let (left, op, right) = match self {
            Query::Term(term) => return term.write_fts5(out),
            Query::And(l, r) => (l, " AND ", r),
            Query::Or(l, r) => (l, " OR ", r),
            Query::Not(l, r) => (l, " NOT ", r),
        };
        out.push('(');
        left.write_fts5(out);
        out.push_str(op);
        right.write_fts5(out);
        out.push(')');
    }
}

impl Term {
    fn write_fts5(&self, out: &mut String) {
        if let Some(field) = &self.field {
            // Parsed fields are always plain identifiers; quoting covers terms
            // built by hand so they still cannot inject syntax.
            if is_field_name(field) {
                out.push_str(field);
            } else {
                write_fts5_string(field, out);
            }
            out.push_str(" : ");
        }
        write_fts5_string(&self.text, out);
        if self.kind == TermKind::Prefix {
            out.push_str(" *");
        }
    }
}

/// Writes `text` as an FTS5 string literal.
fn write_fts5_string(text: &str, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\"\""),
            // FTS5 reads the expression as a C string, so a NUL would end it
            // inside the quotes and cause an "unterminated string" error.
            // Tokenizers treat control characters as separators anyway.
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn error(message: String) -> SearchError {
    SearchError(message)
}

/// Characters between terms. Control characters count so that none of them
/// (NUL in particular) can end up in a word.
fn is_separator(c: char) -> bool {
    c.is_whitespace() || c.is_control()
}

fn ends_word(c: char) -> bool {
    is_separator(c) || matches!(c, '"' | '(' | ')')
}

/// Only plain identifiers count as field names, so that colons in ordinary
/// text (`C:`, `12:30`, `Re:`) are not mistaken for field filters.
fn is_field_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

#[derive(Debug)]
struct Token {
    kind: TokenKind,
    /// Byte offset in the input, for error messages.
    pos: usize,
}

#[derive(Debug)]
enum TokenKind {
    Term(Term),
    Open,
    Close,
    And,
    Or,
    Not,
}

impl TokenKind {
    fn describe(&self) -> String {
        match self {
            TokenKind::Term(term) => {
                let text = match term.kind {
                    TermKind::Word => term.text.clone(),
                    TermKind::Prefix => format!("{}*", term.text),
                    TermKind::Phrase => format!("\"{}\"", term.text),
                };
                match &term.field {
                    Some(field) => format!("`{field}:{text}`"),
                    None => format!("`{text}`"),
                }
            }
            TokenKind::Open => "`(`".to_string(),
            TokenKind::Close => "`)`".to_string(),
            TokenKind::And => "`AND`".to_string(),
            TokenKind::Or => "`OR`".to_string(),
            TokenKind::Not => "`NOT`".to_string(),
        }
    }

    fn is_operator(&self) -> bool {
        matches!(self, TokenKind::And | TokenKind::Or | TokenKind::Not)
    }
}

fn lex(input: &str, fields: &[&str]) -> Result<Vec<Token>, SearchError> {
    let mut tokens = Vec::new();
    let mut pos = 0;
    while let Some(c) = input[pos..].chars().next() {
        if is_separator(c) {
            pos += c.len_utf8();
            continue;
        }
        let start = pos;
        let kind = match c {
            '(' => {
                pos += 1;
                TokenKind::Open
            }
            ')' => {
                pos += 1;
                TokenKind::Close
            }
            '"' => {
                let (text, end) = lex_phrase(input, start)?;
                pos = end;
                TokenKind::Term(Term {
                    field: None,
                    text,
                    kind: TermKind::Phrase,
                })
            }
            _ => {
                let end = input[start..]
                    .find(ends_word)
                    .map_or(input.len(), |n| start + n);
                let (kind, after) = lex_word(input, start, end, fields)?;
                pos = after;
                kind
            }
        };
        tokens.push(Token { kind, pos: start });
    }
    Ok(tokens)
}

/// Lexes the word `input[start..end]`. Returns the token and where lexing
/// resumes, which is past `end` when a bare `field:` is followed by a phrase.
fn lex_word(
    input: &str,
    start: usize,
    end: usize,
    fields: &[&str],
) -> Result<(TokenKind, usize), SearchError> {
    let word = &input[start..end];
    match word {
        "AND" => return Ok((TokenKind::And, end)),
        "OR" => return Ok((TokenKind::Or, end)),
        "NOT" => return Ok((TokenKind::Not, end)),
        _ => {}
    }
    let Some((name, rest)) = word
        .split_once(':')
        // `http://host` and similar are text, not a filter on an `http` field.
        .filter(|(name, rest)| is_field_name(name) && !rest.starts_with('/'))
    else {
        return Ok((word_term(word, None, start)?, end));
    };
    if !fields.contains(&name) {
        let message = if fields.is_empty() {
            format!("unknown field `{name}` at byte {start}; this search has no fields")
        } else {
            format!(
                "unknown field `{name}` at byte {start}; the fields are: {}",
                fields.join(", ")
            )
        };
        return Err(error(message));
    }
    let field = Some(name.to_string());
    if !rest.is_empty() {
        return Ok((word_term(rest, field, start + name.len() + 1)?, end));
    }
    if input[end..].starts_with('"') {
        let (text, after) = lex_phrase(input, end)?;
        let term = Term {
            field,
            text,
            kind: TermKind::Phrase,
        };
        return Ok((TokenKind::Term(term), after));
    }
    Err(error(format!(
        "`{name}:` at byte {start} needs a word or a quoted phrase right after it, \
         as in `{name}:auth` or `{name}:\"user auth\"`"
    )))
}

fn word_term(text: &str, field: Option<String>, pos: usize) -> Result<TokenKind, SearchError> {
    let stem = text.trim_end_matches('*');
    if stem.is_empty() {
        return Err(error(format!(
            "`{text}` at byte {pos} has no word before the `*`; a prefix search looks like `auth*`"
        )));
    }
    let kind = if stem.len() < text.len() {
        TermKind::Prefix
    } else {
        TermKind::Word
    };
    Ok(TokenKind::Term(Term {
        field,
        text: stem.to_string(),
        kind,
    }))
}

/// Lexes the phrase whose opening quote is at `quote`; returns its text and
/// the byte offset just past the closing quote.
fn lex_phrase(input: &str, quote: usize) -> Result<(String, usize), SearchError> {
    let body = quote + 1;
    let Some(len) = input[body..].find('"') else {
        return Err(error(format!("the quote at byte {quote} is never closed")));
    };
    let text = &input[body..body + len];
    if text.chars().all(is_separator) {
        return Err(error(format!(
            "the phrase at byte {quote} is empty; put words between the quotes"
        )));
    }
    Ok((text.to_string(), body + len + 1))
}

/// Recursive descent over the tokens:
///
/// ```text
/// or   := and ("OR" and)*
/// and  := not (["AND"] not | "AND" "NOT" term)*
/// not  := term ("NOT" term)*
/// term := TERM | "(" or ")"
/// ```
///
/// `a AND NOT b` is folded into `Not(a, b)` because FTS5's NOT is binary:
/// there is no "everything except b" to AND with.
struct Parser {
    tokens: Vec<Token>,
    next: usize,
}

impl Parser {
    fn peek(&self) -> Option<&TokenKind> {
        self.tokens.get(self.next).map(|t| &t.kind)
    }

    fn or_expr(&mut self) -> Result<Query, SearchError> {
        let mut left = self.and_expr()?;
        while let Some(TokenKind::Or) = self.peek() {
            self.next += 1;
            let right = self.and_expr()?;
            left = Query::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and_expr(&mut self) -> Result<Query, SearchError> {
        let mut left = self.not_expr()?;
        loop {
            match self.peek() {
                Some(TokenKind::And) => {
                    self.next += 1;
                    if let Some(TokenKind::Not) = self.peek() {
                        self.next += 1;
                        let right = self.primary()?;
                        left = Query::Not(Box::new(left), Box::new(right));
                        left = self.not_tail(left)?;
                    } else {
                        let right = self.not_expr()?;
                        left = Query::And(Box::new(left), Box::new(right));
                    }
                }
                Some(TokenKind::Term(_) | TokenKind::Open) => {
                    let right = self.not_expr()?;
                    left = Query::And(Box::new(left), Box::new(right));
                }
                _ => return Ok(left),
            }
        }
    }

    fn not_expr(&mut self) -> Result<Query, SearchError> {
        let left = self.primary()?;
        self.not_tail(left)
    }

    fn not_tail(&mut self, mut left: Query) -> Result<Query, SearchError> {
        while let Some(TokenKind::Not) = self.peek() {
            self.next += 1;
            let right = self.primary()?;
            left = Query::Not(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn primary(&mut self) -> Result<Query, SearchError> {
        let open = match self.tokens.get(self.next) {
            Some(Token {
                kind: TokenKind::Term(term),
                ..
            }) => {
                let term = term.clone();
                self.next += 1;
                return Ok(Query::Term(term));
            }
            Some(Token {
                kind: TokenKind::Open,
                pos,
            }) => *pos,
            _ => return Err(self.missing_term()),
        };
        self.next += 1;
        let inner = self.or_expr()?;
        match self.peek() {
            Some(TokenKind::Close) => {
                self.next += 1;
                Ok(inner)
            }
            // `or_expr` stops only at `)` or the end of the input.
            _ => Err(error(format!("the `(` at byte {open} is never closed"))),
        }
    }

    /// Explains why no term starts at the current token, in terms of what
    /// surrounds the gap.
    fn missing_term(&self) -> SearchError {
        let current = self.tokens.get(self.next);
        let previous = self.next.checked_sub(1).and_then(|i| self.tokens.get(i));
        if let Some(Token {
            kind: TokenKind::Not,
            pos,
        }) = current
        {
            return error(format!(
                "NOT needs a term before it, as in `auth NOT legacy` (the `NOT` at byte {pos})"
            ));
        }
        if let Some(prev) = previous.filter(|p| p.kind.is_operator()) {
            let found = match current {
                Some(cur) => format!(", but found {} at byte {}", cur.kind.describe(), cur.pos),
                None => ", but the search ends there".to_string(),
            };
            return error(format!(
                "{} at byte {} needs a term after it{found}",
                prev.kind.describe(),
                prev.pos
            ));
        }
        let opened = previous.filter(|p| matches!(p.kind, TokenKind::Open));
        match (current, opened) {
            (Some(cur), _) if cur.kind.is_operator() => error(format!(
                "{} at byte {} needs a term before it",
                cur.kind.describe(),
                cur.pos
            )),
            (Some(_), Some(open)) => error(format!("empty parentheses at byte {}", open.pos)),
            (Some(cur), None) => error(format!(
                "unmatched {} at byte {}",
                cur.kind.describe(),
                cur.pos
            )),
            (None, Some(open)) => error(format!("the `(` at byte {} is never closed", open.pos)),
            // Unreachable in practice: an all-whitespace search is rejected
            // before parsing, so the first token always exists.
            (None, None) => error("the search is empty".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    const FIELDS: &[&str] = &["title", "description", "tags"];

    fn parse(input: &str) -> Result<Query, SearchError> {
        Query::parse(input, FIELDS)
    }

    fn term(field: Option<&str>, text: &str, kind: TermKind) -> Query {
        Query::Term(Term {
            field: field.map(str::to_string),
            text: text.to_string(),
            kind,
        })
    }

    fn word(text: &str) -> Query {
        term(None, text, TermKind::Word)
    }

    fn and(l: Query, r: Query) -> Query {
        Query::And(Box::new(l), Box::new(r))
    }

    fn or(l: Query, r: Query) -> Query {
        Query::Or(Box::new(l), Box::new(r))
    }

    fn not(l: Query, r: Query) -> Query {
        Query::Not(Box::new(l), Box::new(r))
    }

    fn err(input: &str) -> String {
        match parse(input) {
            Ok(q) => panic!("{input:?} parsed as {q:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn assert_err(input: &str, expected: &[&str]) {
        let message = err(input);
        for part in expected {
            assert!(
                message.contains(part),
                "error for {input:?} is {message:?}, expected it to contain {part:?}"
            );
        }
    }

    #[test]
    fn words_prefixes_and_phrases() {
        assert_eq!(parse("auth"), Ok(word("auth")));
        assert_eq!(parse("  auth\t"), Ok(word("auth")));
        assert_eq!(parse("auth*"), Ok(term(None, "auth", TermKind::Prefix)));
        assert_eq!(parse("auth**"), Ok(term(None, "auth", TermKind::Prefix)));
        assert_eq!(
            parse("\"user  auth\""),
            Ok(term(None, "user  auth", TermKind::Phrase))
        );
        assert_eq!(parse("a*b"), Ok(word("a*b")));
        assert_eq!(
            parse("and or not"),
            Ok(and(and(word("and"), word("or")), word("not")))
        );
        assert_eq!(parse("AND*"), Ok(term(None, "AND", TermKind::Prefix)));
    }

    #[test]
    fn field_filters() {
        assert_eq!(
            parse("title:auth"),
            Ok(term(Some("title"), "auth", TermKind::Word))
        );
        assert_eq!(
            parse("tags:auth*"),
            Ok(term(Some("tags"), "auth", TermKind::Prefix))
        );
        assert_eq!(
            parse("description:\"user auth\""),
            Ok(term(Some("description"), "user auth", TermKind::Phrase))
        );
        assert_eq!(
            parse("title:a:b"),
            Ok(term(Some("title"), "a:b", TermKind::Word))
        );
        assert_eq!(
            parse("title:AND"),
            Ok(term(Some("title"), "AND", TermKind::Word))
        );
    }

    #[test]
    fn colons_that_are_not_field_filters() {
        assert_eq!(parse("http://x"), Ok(word("http://x")));
        assert_eq!(parse("Title:x"), Ok(word("Title:x")));
        assert_eq!(parse("12:30"), Ok(word("12:30")));
        assert_eq!(parse(":x"), Ok(word(":x")));
        assert_err("x:", &["unknown field `x`"]);
    }

    #[test]
    fn document_examples() {
        assert_eq!(parse("authentication"), Ok(word("authentication")));
        assert_eq!(
            parse("\"user authentication\""),
            Ok(term(None, "user authentication", TermKind::Phrase))
        );
        assert_eq!(
            parse("auth* AND security"),
            Ok(and(term(None, "auth", TermKind::Prefix), word("security")))
        );
        assert_eq!(
            parse("title:authentication"),
            Ok(term(Some("title"), "authentication", TermKind::Word))
        );
    }

    #[test]
    fn precedence() {
        let (a, b, c) = (word("a"), word("b"), word("c"));
        assert_eq!(
            parse("a OR b AND c"),
            Ok(or(a.clone(), and(b.clone(), c.clone())))
        );
        assert_eq!(
            parse("a AND b OR c"),
            Ok(or(and(a.clone(), b.clone()), c.clone()))
        );
        assert_eq!(
            parse("a OR b c"),
            Ok(or(a.clone(), and(b.clone(), c.clone())))
        );
        assert_eq!(
            parse("(a OR b) c"),
            Ok(and(or(a.clone(), b.clone()), c.clone()))
        );
        assert_eq!(
            parse("a b NOT c"),
            Ok(and(a.clone(), not(b.clone(), c.clone())))
        );
        assert_eq!(
            parse("a OR b NOT c"),
            Ok(or(a.clone(), not(b.clone(), c.clone())))
        );
        assert_eq!(parse("a NOT b"), Ok(not(a.clone(), b.clone())));
        assert_eq!(parse("a AND NOT b"), Ok(not(a.clone(), b.clone())));
        assert_eq!(
            parse("a AND NOT b NOT c"),
            Ok(not(not(a.clone(), b.clone()), c.clone()))
        );
        assert_eq!(
            parse("a NOT (b OR c)"),
            Ok(not(a.clone(), or(b.clone(), c.clone())))
        );
        assert_eq!(parse("((a))"), Ok(a.clone()));
        assert_eq!(
            parse("a\"b\"c"),
            Ok(and(and(a, term(None, "b", TermKind::Phrase)), c))
        );
    }

    #[test]
    fn empty_and_too_long() {
        assert_err("", &["empty"]);
        assert_err(" \t\n ", &["empty"]);
        assert_err(&"a ".repeat(251), &["502 characters", "500"]);
        assert!(parse(&"é".repeat(MAX_QUERY_CHARS)).is_ok());
        assert_err(&"é".repeat(MAX_QUERY_CHARS + 1), &["501 characters"]);
    }

    #[test]
    fn too_many_terms() {
        let ok = vec!["w"; MAX_TERMS].join(" ");
        assert!(parse(&ok).is_ok());
        assert_err(&format!("{ok} w"), &["33 terms", "32"]);
    }

    #[test]
    fn quote_errors() {
        assert_err("a \"user auth", &["quote at byte 2", "never closed"]);
        assert_err("title:\"user", &["quote at byte 6"]);
        assert_err("\"\"", &["phrase at byte 0 is empty"]);
        assert_err("a \"  \"", &["phrase at byte 2 is empty"]);
    }

    #[test]
    fn star_errors() {
        assert_err("*", &["`*` at byte 0", "auth*"]);
        assert_err("a **", &["`**` at byte 2"]);
        assert_err("title:*", &["`*` at byte 6"]);
        assert_err("\"a b\"*", &["`*` at byte 5"]);
    }

    #[test]
    fn field_errors() {
        assert_err(
            "author:bob",
            &["unknown field `author`", "title, description, tags"],
        );
        assert_err("a mailto:x", &["unknown field `mailto` at byte 2"]);
        assert_eq!(
            Query::parse("title:x", &[]).map_err(|e| e.to_string()),
            Err("unknown field `title` at byte 0; this search has no fields".to_string())
        );
        assert_err("title: auth", &["`title:` at byte 0", "title:auth"]);
        assert_err("title:(a OR b)", &["`title:` at byte 0"]);
    }

    #[test]
    fn parenthesis_errors() {
        assert_err("(a", &["`(` at byte 0 is never closed"]);
        assert_err("(", &["`(` at byte 0 is never closed"]);
        assert_err("a (b (c)", &["`(` at byte 2 is never closed"]);
        assert_err("a)", &["unmatched `)` at byte 1"]);
        assert_err(")", &["unmatched `)` at byte 0"]);
        assert_err("(a))", &["unmatched `)` at byte 3"]);
        assert_err("()", &["empty parentheses at byte 0"]);
        assert_err("a ( ) b", &["empty parentheses at byte 2"]);
    }

    #[test]
    fn operator_errors() {
        assert_err("a AND", &["`AND` at byte 2 needs a term after it", "ends"]);
        assert_err("a OR", &["`OR` at byte 2 needs a term after it"]);
        assert_err("OR b", &["`OR` at byte 0 needs a term before it"]);
        assert_err("AND", &["`AND` at byte 0 needs a term before it"]);
        assert_err("a OR OR b", &["`OR` at byte 2", "found `OR` at byte 5"]);
        assert_err("a AND OR b", &["`AND` at byte 2", "found `OR` at byte 6"]);
        assert_err("(a OR)", &["`OR` at byte 3", "found `)` at byte 5"]);
        assert_err("(OR a)", &["`OR` at byte 1 needs a term before it"]);
        assert_err("a NOT", &["`NOT` at byte 2 needs a term after it"]);
        assert_err("a AND NOT", &["`NOT` at byte 6 needs a term after it"]);
    }

    #[test]
    fn not_without_left_operand() {
        let expected = "NOT needs a term before it, as in `auth NOT legacy`";
        assert_err("NOT b", &[expected, "byte 0"]);
        assert_err("(NOT b)", &[expected, "byte 1"]);
        assert_err("a (NOT b)", &[expected, "byte 3"]);
        assert_err("a OR NOT b", &[expected, "byte 5"]);
        assert_err("a NOT NOT b", &[expected, "byte 6"]);
    }

    #[test]
    fn rendering() {
        let render = |input: &str| parse(input).map(|q| q.to_fts5());
        assert_eq!(render("auth"), Ok("\"auth\"".to_string()));
        assert_eq!(render("auth*"), Ok("\"auth\" *".to_string()));
        assert_eq!(
            render("\"user authentication\""),
            Ok("\"user authentication\"".to_string())
        );
        assert_eq!(render("title:auth*"), Ok("title : \"auth\" *".to_string()));
        assert_eq!(render("tags:\"a b\""), Ok("tags : \"a b\"".to_string()));
        assert_eq!(
            render("a OR b AND NOT c"),
            Ok("(\"a\" OR (\"b\" NOT \"c\"))".to_string())
        );
        assert_eq!(
            render("(a OR b) c"),
            Ok("((\"a\" OR \"b\") AND \"c\")".to_string())
        );
        assert_eq!(render("don't"), Ok("\"don't\"".to_string()));
        assert_eq!(render("a*b"), Ok("\"a*b\"".to_string()));
        assert_eq!(
            render("naïve 日本"),
            Ok("(\"naïve\" AND \"日本\")".to_string())
        );
        assert_eq!(render("auth-service"), Ok("\"auth-service\"".to_string()));
        assert_eq!(render("http://x"), Ok("\"http://x\"".to_string()));
        assert_eq!(render("NEAR(a)"), Ok("(\"NEAR\" AND \"a\")".to_string()));
        assert_eq!(render("\"a\tb\""), Ok("\"a b\"".to_string()));
    }

    #[test]
    fn rendering_hand_built_terms_stays_quoted() {
        let q = Query::Term(Term {
            field: Some("my col\"".to_string()),
            text: "say \"hi\"\0".to_string(),
            kind: TermKind::Prefix,
        });
        assert_eq!(q.to_fts5(), "\"my col\"\"\" : \"say \"\"hi\"\" \" *");
    }

    fn fixture() -> Connection {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(
            "CREATE VIRTUAL TABLE t USING fts5(title, description, tags);
             INSERT INTO t(rowid, title, description, tags) VALUES
               (1, 'User authentication guide', 'How to log in with passwords', 'auth security'),
               (2, 'Authentication for services', 'user tokens and keys', 'api'),
               (3, 'Legacy login', 'old authentication flow, deprecated', 'legacy auth'),
               (4, 'Security overview', 'threat model and user authentication', 'security'),
               (5, 'Rate limiting', 'protect the gateway', 'ops'),
               (6, 'auth-service design', 'authentication service internals', 'design');",
        )
        .expect("fixture");
        conn
    }

    fn run(conn: &Connection, fts: &str) -> rusqlite::Result<Vec<i64>> {
        let mut stmt = conn.prepare("SELECT rowid FROM t WHERE t MATCH ?1 ORDER BY rowid")?;
        let rows = stmt.query_map([fts], |row| row.get(0))?;
        rows.collect()
    }

    fn search(conn: &Connection, input: &str) -> Vec<i64> {
        let query = parse(input).expect("parses");
        run(conn, &query.to_fts5()).expect("FTS5 accepts the rendering")
    }

    #[test]
    fn fts5_matches() {
        let conn = fixture();
        assert_eq!(search(&conn, "authentication"), [1, 2, 3, 4, 6]);
        assert_eq!(search(&conn, "user authentication"), [1, 2, 4]);
        assert_eq!(search(&conn, "\"user authentication\""), [1, 4]);
        assert_eq!(search(&conn, "\"authentication user\""), Vec::<i64>::new());
        assert_eq!(search(&conn, "auth"), [1, 3, 6]);
        assert_eq!(search(&conn, "auth*"), [1, 2, 3, 4, 6]);
        assert_eq!(search(&conn, "auth* AND security"), [1, 4]);
        assert_eq!(search(&conn, "title:authentication"), [1, 2]);
        assert_eq!(search(&conn, "tags:auth*"), [1, 3]);
        assert_eq!(search(&conn, "description:\"user authentication\""), [4]);
        assert_eq!(search(&conn, "authentication AND NOT legacy"), [1, 2, 4, 6]);
        assert_eq!(search(&conn, "authentication NOT legacy"), [1, 2, 4, 6]);
        assert_eq!(search(&conn, "legacy OR rate"), [3, 5]);
        assert_eq!(search(&conn, "auth-service"), [6]);
        assert_eq!(search(&conn, "(legacy OR rate) login"), [3]);
        assert_eq!(search(&conn, "AND*"), [2, 4]);
    }

    /// A deterministic xorshift generator, so failures are reproducible
    /// without extra crates.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n as u64).expect("fits")
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len())]
        }
    }

    /// Every query that parses must be accepted by FTS5, and nothing may panic.
    #[test]
    fn rendered_queries_never_raise_fts5_syntax_errors() {
        const PIECES: &[&str] = &[
            "auth",
            "user",
            "legacy",
            "AND",
            "OR",
            "NOT",
            "and",
            "NEAR",
            "NEAR(",
            "(",
            ")",
            "\"",
            "\"user auth\"",
            "*",
            "auth*",
            "a*b",
            ":",
            "title:",
            "tags:",
            "description:",
            "title:auth",
            "foo:",
            "http://x",
            "-",
            "-title",
            "'",
            "^",
            "+",
            "{",
            "}",
            ",",
            ";",
            "\\",
            "é",
            "日本",
            "\u{0}",
            "\u{1}",
            "\t",
            "\n",
            "\u{3000}",
            "\u{a0}",
            "🙂",
            "\"\"",
            "''",
            "NOT(",
            "OR)",
            "*\"",
            "x\"y",
            "title:\"",
            "title:\"a b\"",
            "0",
            "$",
        ];
        let conn = fixture();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut parsed, mut rejected) = (0, 0);
        for _ in 0..20_000 {
            let mut input = String::new();
            for _ in 0..=rng.below(12) {
                if rng.below(3) > 0 {
                    input.push(' ');
                }
                if rng.below(8) == 0 {
                    // Arbitrary code points reach corners the pieces miss.
                    let c = char::from_u32(u32::try_from(rng.below(0x3000)).expect("fits"));
                    input.push(c.unwrap_or('?'));
                } else {
                    input.push_str(rng.pick(PIECES));
                }
            }
            match Query::parse(&input, FIELDS) {
                Ok(query) => {
                    parsed += 1;
                    let fts = query.to_fts5();
                    if let Err(e) = run(&conn, &fts) {
                        panic!("{input:?} rendered as {fts:?}, which FTS5 rejects: {e}");
                    }
                }
                Err(e) => {
                    rejected += 1;
                    assert!(!e.0.is_empty());
                }
            }
        }
        // Guards against a generator that only ever exercises one branch.
        assert!(
            parsed > 2_000 && rejected > 2_000,
            "{parsed} parsed, {rejected} rejected"
        );
    }

    #[test]
    fn deepest_and_widest_queries_are_accepted_by_fts5() {
        let conn = fixture();
        // Alternating operators with explicit parentheses give the deepest
        // tree MAX_TERMS allows, nested to the right.
        let ops = ["OR", "AND", "NOT"];
        let mut right_nested = String::new();
        for i in 0..MAX_TERMS - 1 {
            right_nested.push_str(&format!("w{i} {} (", ops[i % 3]));
        }
        right_nested.push('z');
        right_nested.push_str(&")".repeat(MAX_TERMS - 1));
        let left_nested = format!(
            "{}a{}",
            "(".repeat(MAX_TERMS - 1),
            " AND NOT b)".repeat(MAX_TERMS - 1)
        );
        let parens = format!("{}auth{}", "(".repeat(240), ")".repeat(240));
        for input in [right_nested, left_nested, parens] {
            let query = parse(&input).expect("parses");
            run(&conn, &query.to_fts5()).expect("FTS5 accepts deep nesting");
        }
    }

    #[test]
    fn tokens_that_tokenize_to_nothing() {
        let conn = fixture();
        for input in [
            "-",
            "-*",
            "'",
            "title:-",
            "auth OR -",
            "auth NOT -",
            "- NOT auth",
        ] {
            let query = parse(input).expect("parses");
            run(&conn, &query.to_fts5()).expect("FTS5 accepts empty phrases");
        }
    }
}
