//! Scopes: the resources a task may touch, as part of its contract.
//!
//! Owns the [`Scope`] (write and read [`Pattern`]s: path globs such as
//! `src/user_service/**` and named concepts such as `concept:UserService`), the decision
//! whether two patterns can overlap (some path matches both), which scopes conflict
//! (a write against an overlapping write or read), the canonical order scopes are listed
//! in, and the check that what an agent touched lies inside its write scope. It is pure
//! data and decisions: who holds a scope, and who waits for it, is delegation's scope
//! table; it knows no actor, no journal and no agent.
//!
//! Glob syntax, per `/`-separated segment: `**` (a whole segment) matches zero or more
//! segments, `*` matches any run of characters within one segment, `?` one character, and
//! anything else itself. Paths are relative (`./` and empty segments are dropped); a
//! segment `..` never matches, so a touched path that climbs out is outside every scope.

use std::collections::HashSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::contract::{ContractError, SchemaViolation};

/// The most patterns one side (write or read) of a scope may list.
pub const MAX_PATTERNS: usize = 64;
/// The longest pattern, in bytes.
pub const MAX_PATTERN_BYTES: usize = 256;
/// The most touched paths an output may report.
pub const MAX_TOUCHED: usize = 10_000;

/// A pattern that is not a valid scope pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scope pattern `{pattern}`: {message}")]
pub struct ScopeError {
    /// The pattern as written (cut to its first 80 characters).
    pub pattern: String,
    /// What is wrong.
    pub message: String,
}

fn scope_error(pattern: &str, message: impl Into<String>) -> ScopeError {
    ScopeError {
        pattern: pattern.chars().take(80).collect(),
        message: message.into(),
    }
}

/// One character-level token of a glob segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Token {
    Char(char),
    Any,  // ?
    Star, // *
}

/// One `/`-separated segment of a glob.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Segment {
    /// `**`: zero or more whole segments.
    Any,
    /// A segment of tokens.
    Tokens(Vec<Token>),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Kind {
    Path(Vec<Segment>),
    Concept(Arc<str>),
}

/// A scope pattern: a path glob or a named concept (`concept:NAME`).
///
/// # Example
/// ```
/// use muster_core::Pattern;
///
/// let a: Pattern = "src/user_service/**".parse().unwrap();
/// let b: Pattern = "src/*/mod.rs".parse().unwrap();
/// assert!(a.overlaps(&b)); // src/user_service/mod.rs matches both
/// assert_eq!(a.example(&b).as_deref(), Some("src/user_service/mod.rs"));
/// assert!(a.matches("src/user_service/api.rs"));
/// ```
#[derive(Debug, Clone)]
pub struct Pattern {
    source: Arc<str>,
    kind: Kind,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}
impl Eq for Pattern {}
impl PartialOrd for Pattern {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pattern {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.source.cmp(&other.source)
    }
}
impl std::hash::Hash for Pattern {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.source.hash(state)
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for Pattern {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Pattern::parse(s)
    }
}

impl Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Pattern::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The relative, normalised segments of a path: `./` and empty segments dropped.
fn path_segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty() && *s != ".")
}

impl Pattern {
    /// Parses a pattern: `concept:NAME`, or a path glob.
    pub fn parse(s: &str) -> Result<Pattern, ScopeError> {
        if s.len() > MAX_PATTERN_BYTES {
            return Err(scope_error(
                s,
                format!("longer than the limit of {MAX_PATTERN_BYTES} bytes"),
            ));
        }
        if let Some(name) = s.strip_prefix("concept:") {
            if name.is_empty() {
                return Err(scope_error(
                    s,
                    "a concept needs a name, e.g. concept:UserService",
                ));
            }
            return Ok(Pattern {
                source: Arc::from(s),
                kind: Kind::Concept(Arc::from(name)),
            });
        }
        if s.starts_with('/') {
            return Err(scope_error(
                s,
                "an absolute path; scopes are relative to the workspace",
            ));
        }
        let mut segments = Vec::new();
        for seg in path_segments(s) {
            if seg == ".." {
                return Err(scope_error(s, "`..` is not allowed in a scope"));
            }
            if seg == "**" {
                // `**/**` is `**`.
                if segments.last() != Some(&Segment::Any) {
                    segments.push(Segment::Any);
                }
                continue;
            }
            if seg.contains("**") {
                return Err(scope_error(
                    s,
                    format!("`**` must be a whole segment (in `{seg}`); write `*` within a name"),
                ));
            }
            if seg.contains(['[', ']', '{', '}']) {
                return Err(scope_error(
                    s,
                    format!(
                        "`{seg}`: character classes and alternatives are not supported; list the patterns instead"
                    ),
                ));
            }
            let tokens = seg
                .chars()
                .map(|c| match c {
                    '*' => Token::Star,
                    '?' => Token::Any,
                    c => Token::Char(c),
                })
                .collect();
            segments.push(Segment::Tokens(tokens));
        }
        if segments.is_empty() {
            return Err(scope_error(s, "an empty path; write `**` for everything"));
        }
        Ok(Pattern {
            source: Arc::from(s),
            kind: Kind::Path(segments),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether this is a named concept.
    pub fn is_concept(&self) -> bool {
        matches!(self.kind, Kind::Concept(_))
    }

    /// Whether some path (or concept) matches both patterns.
    pub fn overlaps(&self, other: &Pattern) -> bool {
        self.example(other).is_some()
    }

    /// A path (or the concept) that matches both patterns, if there is one.
    pub fn example(&self, other: &Pattern) -> Option<String> {
        match (&self.kind, &other.kind) {
            (Kind::Concept(a), Kind::Concept(b)) => (a == b).then(|| self.source.to_string()),
            (Kind::Path(a), Kind::Path(b)) => {
                if literal_prefixes_differ(a, b) {
                    return None; // the common case between unrelated scopes: no search
                }
                let mut failed = HashSet::new();
                let mut out = Vec::new();
                path_witness(a, b, 0, 0, &mut failed, &mut out).then(|| out.join("/"))
            }
            _ => None,
        }
    }

    /// Whether `path` (relative; `./` and empty segments ignored) matches this glob. A
    /// concept matches only `concept:NAME` itself.
    pub fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Concept(_) => *self.source == *path,
            Kind::Path(segs) => {
                let literal: Vec<Segment> = match path_segments(path)
                    .map(|s| {
                        (s != ".." && s != "**").then(|| {
                            Segment::Tokens(
                                s.chars()
                                    .map(|c| match c {
                                        // A literal `*` or `?` in a path is only matched by
                                        // a wildcard: a char no pattern writes stands in.
                                        '*' | '?' => Token::Char('\u{FFFF}'),
                                        c => Token::Char(c),
                                    })
                                    .collect(),
                            )
                        })
                    })
                    .collect::<Option<Vec<_>>>()
                {
                    Some(l) if !l.is_empty() => l,
                    _ => return false,
                };
                let mut failed = HashSet::new();
                let mut out = Vec::new();
                path_witness(segs, &literal, 0, 0, &mut failed, &mut out)
            }
        }
    }
}

/// Whether the two globs start with literal segments (before any wildcard) that differ:
/// then no path matches both, decided without a search.
fn literal_prefixes_differ(a: &[Segment], b: &[Segment]) -> bool {
    let literal = |t: &[Token]| t.iter().all(|t| matches!(t, Token::Char(_)));
    for (x, y) in a.iter().zip(b) {
        match (x, y) {
            (Segment::Tokens(s), Segment::Tokens(t)) if literal(s) && literal(t) => {
                if s != t {
                    return true;
                }
            }
            _ => return false,
        }
    }
    false
}

/// Finds a path matching both segment lists from `(i, j)` on, pushing its segments onto
/// `out`. `failed` memoises the positions from which there is none, so the search is
/// O(len(a) · len(b)) segment comparisons.
fn path_witness(
    a: &[Segment],
    b: &[Segment],
    i: usize,
    j: usize,
    failed: &mut HashSet<(usize, usize)>,
    out: &mut Vec<String>,
) -> bool {
    if failed.contains(&(i, j)) {
        return false;
    }
    let mark = out.len();
    let (x, y) = (a.get(i), b.get(j));
    let found = match (x, y) {
        (None, None) => true,
        (Some(Segment::Tokens(s)), Some(Segment::Tokens(t))) => match segment_witness(s, t) {
            Some(name) => {
                out.push(name);
                path_witness(a, b, i + 1, j + 1, failed, out)
            }
            None => false,
        },
        _ => {
            let a_any = x == Some(&Segment::Any);
            let b_any = y == Some(&Segment::Any);
            // Either `**` ends here, or it absorbs the other side's next segment.
            let mut found = (a_any && path_witness(a, b, i + 1, j, failed, out))
                || (b_any && path_witness(a, b, i, j + 1, failed, out));
            if !found
                && a_any
                && let Some(Segment::Tokens(t)) = y
            {
                out.truncate(mark);
                out.push(some_name(t));
                found = path_witness(a, b, i, j + 1, failed, out);
            }
            if !found
                && b_any
                && let Some(Segment::Tokens(t)) = x
            {
                out.truncate(mark);
                out.push(some_name(t));
                found = path_witness(a, b, i + 1, j, failed, out);
            }
            found
        }
    };
    if !found {
        out.truncate(mark);
        failed.insert((i, j));
    }
    found
}

/// A name matching the tokens `t` alone.
fn some_name(t: &[Token]) -> String {
    // A star stands for `x` (it matches any run), so the name is never empty.
    t.iter().map(|t| one_char(Some(t)).unwrap_or('x')).collect()
}

/// The character a single-character token can stand for (`?`: any, so `x`).
fn one_char(t: Option<&Token>) -> Option<char> {
    match t {
        Some(Token::Char(c)) => Some(*c),
        Some(Token::Any) => Some('x'),
        _ => None,
    }
}

/// A non-empty name matching both token lists, if there is one.
fn segment_witness(a: &[Token], b: &[Token]) -> Option<String> {
    let mut failed = HashSet::new();
    let mut out = String::new();
    if !token_witness(a, b, 0, 0, &mut failed, &mut out) {
        return None;
    }
    if out.is_empty() || out.starts_with('.') {
        // Stars that matched nothing leave a hidden or empty name: one more character in
        // front reads better, when both still match it (an empty witness means both are
        // all stars, which match `x`).
        let nicer = format!("x{out}");
        if out.is_empty() || (name_matches(a, &nicer) && name_matches(b, &nicer)) {
            return Some(nicer);
        }
    }
    Some(out)
}

/// Whether the name matches the tokens.
fn name_matches(t: &[Token], name: &str) -> bool {
    let literal: Vec<Token> = name.chars().map(Token::Char).collect();
    let mut failed = HashSet::new();
    token_witness(t, &literal, 0, 0, &mut failed, &mut String::new())
}

fn token_witness(
    a: &[Token],
    b: &[Token],
    i: usize,
    j: usize,
    failed: &mut HashSet<(usize, usize)>,
    out: &mut String,
) -> bool {
    if failed.contains(&(i, j)) {
        return false;
    }
    let mark = out.len();
    let (x, y) = (a.get(i), b.get(j));
    let a_star = x == Some(&Token::Star);
    let b_star = y == Some(&Token::Star);
    let found = if x.is_none() && y.is_none() {
        true
    } else if a_star || b_star {
        // Either a star ends here, or it absorbs the other side's next character.
        let mut found = (a_star && token_witness(a, b, i + 1, j, failed, out))
            || (b_star && token_witness(a, b, i, j + 1, failed, out));
        if !found
            && a_star
            && let Some(c) = one_char(y)
        {
            out.truncate(mark);
            out.push(c);
            found = token_witness(a, b, i, j + 1, failed, out);
        }
        if !found
            && b_star
            && let Some(c) = one_char(x)
        {
            out.truncate(mark);
            out.push(c);
            found = token_witness(a, b, i + 1, j, failed, out);
        }
        found
    } else {
        let c = match (x, y) {
            (Some(Token::Char(c)), Some(Token::Char(d))) if c == d => Some(*c),
            (Some(Token::Char(c)), Some(Token::Any)) | (Some(Token::Any), Some(Token::Char(c))) => {
                Some(*c)
            }
            (Some(Token::Any), Some(Token::Any)) => Some('x'),
            _ => None,
        };
        match c {
            Some(c) => {
                out.push(c);
                token_witness(a, b, i + 1, j + 1, failed, out)
            }
            None => false,
        }
    };
    if !found {
        out.truncate(mark);
        failed.insert((i, j));
    }
    found
}

/// The resources a task may touch: what it may change (`write`) and what it reads
/// (`read`). Write scopes are exclusive against overlapping writes and reads; read scopes
/// share. Listed in canonical order (sorted, no duplicates).
///
/// # Example
/// ```
/// use muster_core::Scope;
///
/// let first = Scope::new(["src/user_service/**", "concept:UserService"], ["spec/**"]).unwrap();
/// let second = Scope::new(["concept:UserService"], Vec::<String>::new()).unwrap();
/// let c = second.conflict_with(&first).unwrap();
/// assert_eq!(c.mine, "concept:UserService");
/// assert!(first.outside_write(&["src/user_service/api.rs", "README.md"]) == vec!["README.md"]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// What the task may change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub write: Vec<Pattern>,
    /// What the task reads (shared with other readers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read: Vec<Pattern>,
}

/// Why two scopes cannot be held at once: the first overlapping pair found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overlap {
    /// The pattern of the scope asking.
    pub mine: String,
    /// The held pattern it overlaps.
    pub theirs: String,
    /// Whether `mine` is a write pattern (else a read pattern against a held write).
    pub mine_writes: bool,
    /// Whether `theirs` is a write pattern.
    pub theirs_writes: bool,
    /// A path (or the concept) matching both.
    pub example: String,
}

impl std::fmt::Display for Overlap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let side = |w: bool| if w { "write" } else { "read" };
        write!(
            f,
            "{} `{}` overlaps {} `{}` (e.g. `{}`)",
            side(self.mine_writes),
            self.mine,
            side(self.theirs_writes),
            self.theirs,
            self.example
        )
    }
}

impl Scope {
    /// A scope from write and read patterns, in canonical order.
    pub fn new<W, R>(write: W, read: R) -> Result<Scope, ScopeError>
    where
        W: IntoIterator,
        W::Item: AsRef<str>,
        R: IntoIterator,
        R::Item: AsRef<str>,
    {
        let parse = |side: &str, items: Vec<String>| -> Result<Vec<Pattern>, ScopeError> {
            if items.len() > MAX_PATTERNS {
                return Err(scope_error(
                    &items[0],
                    format!(
                        "{side}: {} patterns, above the limit of {MAX_PATTERNS}",
                        items.len()
                    ),
                ));
            }
            items.iter().map(|s| Pattern::parse(s)).collect()
        };
        let write = parse(
            "write",
            write.into_iter().map(|s| s.as_ref().to_string()).collect(),
        )?;
        let read = parse(
            "read",
            read.into_iter().map(|s| s.as_ref().to_string()).collect(),
        )?;
        Ok(Scope { write, read }.canonical())
    }

    /// The same scope in canonical order: each side sorted, without duplicates, and a read
    /// pattern also written dropped (the write covers it).
    pub fn canonical(mut self) -> Scope {
        self.write.sort();
        self.write.dedup();
        self.read.sort();
        self.read.dedup();
        let write = &self.write;
        self.read.retain(|r| !write.contains(r));
        self
    }

    /// Whether the scope names nothing (a task without a scope takes no lease on one).
    pub fn is_empty(&self) -> bool {
        self.write.is_empty() && self.read.is_empty()
    }

    /// Why this scope cannot be held while `held` is: a write of one overlapping a write
    /// or read of the other. `None` when they can be held at once.
    pub fn conflict_with(&self, held: &Scope) -> Option<Overlap> {
        let pairs = self
            .write
            .iter()
            .flat_map(|m| {
                held.write
                    .iter()
                    .map(move |t| (m, true, t, true))
                    .chain(held.read.iter().map(move |t| (m, true, t, false)))
            })
            .chain(
                self.read
                    .iter()
                    .flat_map(|m| held.write.iter().map(move |t| (m, false, t, true))),
            );
        for (m, mw, t, tw) in pairs {
            if let Some(example) = m.example(t) {
                return Some(Overlap {
                    mine: m.to_string(),
                    theirs: t.to_string(),
                    mine_writes: mw,
                    theirs_writes: tw,
                    example,
                });
            }
        }
        None
    }

    /// Whether a write pattern of this scope covers `path`.
    pub fn allows_write(&self, path: &str) -> bool {
        self.write.iter().any(|p| p.matches(path))
    }

    /// The paths (or `concept:NAME`s) of `touched` outside the write scope, in order.
    pub fn outside_write<S: AsRef<str>>(&self, touched: &[S]) -> Vec<String> {
        touched
            .iter()
            .map(AsRef::as_ref)
            .filter(|p| !self.allows_write(p))
            .map(str::to_string)
            .collect()
    }

    /// Checks what an output reports it touched against the write scope: a contract
    /// violation naming each offending path (at `/<field>/<index>`) if any lies outside.
    /// `touched` must be an array of strings of at most [`MAX_TOUCHED`] entries.
    pub fn check_touched(
        &self,
        field: &str,
        touched: &serde_json::Value,
    ) -> Result<(), ContractError> {
        let violation = |instance_path: String, message: String| SchemaViolation {
            instance_path,
            schema_path: "/scope/write".into(),
            message,
        };
        let err = |errors| ContractError {
            schema: "scope".into(),
            errors,
        };
        let Some(items) = touched.as_array() else {
            return Err(err(vec![violation(
                format!("/{field}"),
                format!(
                    "`{field}` must be an array of paths, got {}",
                    crate::util::bounded_json(touched)
                ),
            )]));
        };
        if items.len() > MAX_TOUCHED {
            return Err(err(vec![violation(
                format!("/{field}"),
                format!(
                    "{} touched paths, above the limit of {MAX_TOUCHED}",
                    items.len()
                ),
            )]));
        }
        let writes: Vec<&str> = self.write.iter().map(Pattern::as_str).collect();
        let errors: Vec<SchemaViolation> = items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| match v.as_str() {
                Some(p) if self.allows_write(p) => None,
                Some(p) => Some(violation(
                    format!("/{field}/{i}"),
                    format!(
                        "`{p}` is outside the task's write scope [{}]",
                        writes.join(", ")
                    ),
                )),
                None => Some(violation(
                    format!("/{field}/{i}"),
                    format!(
                        "expected a path (a string), got {}",
                        crate::util::bounded_json(v)
                    ),
                )),
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(err(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    #[test]
    fn globs_overlap_when_some_path_matches_both() {
        let cases = [
            ("src/**", "src/a/b.rs", true),
            ("src/**", "src", true),
            ("src/*.rs", "src/*/x.rs", false),
            ("a/**", "**/b", true),
            ("*a*b*", "*b*a*", true),
            ("a?", "?b", true),
            ("a*", "b*", false),
            ("**", "x/y/z", true),
            ("concept:User", "concept:User", true),
            ("concept:User", "concept:Users", false),
            ("concept:User", "**", false),
        ];
        for (a, b, want) in cases {
            assert_eq!(p(a).overlaps(&p(b)), want, "{a} vs {b}");
            assert_eq!(p(b).overlaps(&p(a)), want, "{b} vs {a}");
            if let Some(ex) = p(a).example(&p(b))
                && !p(a).is_concept()
            {
                assert!(p(a).matches(&ex) && p(b).matches(&ex), "{a} {b} {ex}");
            }
        }
    }

    #[test]
    fn bad_patterns_are_refused_with_the_reason() {
        for bad in ["", "/abs", "a/../b", "a**/b", "src/[ab]", "concept:"] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_touched_path_outside_the_write_scope_is_named() {
        let s = Scope::new(["src/user/**"], ["spec/**"]).unwrap();
        let e = s
            .check_touched(
                "touched",
                &serde_json::json!(["src/user/a.rs", "spec/x.md", "../etc/passwd"]),
            )
            .unwrap_err();
        let paths: Vec<&str> = e.errors.iter().map(|v| v.instance_path.as_str()).collect();
        assert_eq!(paths, ["/touched/1", "/touched/2"]);
        assert!(e.errors[0].message.contains("spec/x.md"));
    }

    #[test]
    fn reads_share_and_writes_exclude() {
        let r = Scope::new(Vec::<&str>::new(), ["spec/**"]).unwrap();
        let w = Scope::new(["spec/a.md"], Vec::<&str>::new()).unwrap();
        assert!(r.conflict_with(&r).is_none());
        assert!(w.conflict_with(&r).is_some());
        assert!(r.conflict_with(&w).is_some());
        assert!(w.conflict_with(&w).is_some());
    }
}
