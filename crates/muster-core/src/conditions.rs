//! Conditions: CEL expressions over JSON, compiled once and evaluated many times.
//!
//! Acceptance rules (`output.total > 0`), workflow transitions and input mappings are CEL
//! (the `cel` crate): muster does not invent an expression language. What this module owns is
//! the one rule for turning JSON into CEL values, so that users' arithmetic works:
//!
//! - a JSON integer that fits in `i64` becomes a CEL `int` (so `failed + 1` works; CEL has
//!   no implicit `uint + int`), a larger one a `uint`, every other number a `double`;
//! - strings, booleans, null, arrays and objects map to their CEL counterparts.
//!
//! It must not touch the runtime: evaluation is a pure function of the expression and the
//! variables.
//!
//! Every expression muster compiles goes through [`Condition::compile`], which bounds it
//! before the `cel` parser sees it, because the parser, the interpreter and the drop of
//! the tree all recurse on the expression: a sum of 10,001 terms or 100,000 nested
//! parentheses would overflow the stack. The limits (checked on the source text, string
//! literals and comments skipped):
//!
//! - at most [`MAX_SOURCE_BYTES`] bytes of source;
//! - at most [`MAX_NESTING`] levels of `()`, `[]` and `{}`;
//! - at most [`MAX_DEPTH`] operators on any path into the expression: `+ - * / % ! == !=
//!   < <= > >= && || in ?:`, a member selection `.`, and each call, index, list or map
//!   between two commas, plus those of the brackets nested inside. A chain `1+1+...+1`
//!   is evaluated recursively, so it counts as deep as it is long (`a + b + c` is 2).
//!
//! Within them, compiling and evaluating fit in a 2 MiB thread stack in release builds
//! and in the main thread's 8 MiB in debug builds.

use std::collections::HashMap;
use std::sync::Arc;

use cel::objects::{Key, Map};
use cel::{Context, Program, Value as Cel};
use serde_json::Value;

thread_local! {
    static STDLIB: Context<'static, 'static> = Context::default();
}

/// A compiled CEL expression.
///
/// # Example
/// ```
/// use muster_core::Condition;
/// use serde_json::json;
///
/// let rule = Condition::compile("output.failed + 1 == 1 && size(output.failures) == 0").unwrap();
/// let ok = rule.eval_bool(&[("output", &json!({"failed": 0, "failures": []}))]).unwrap();
/// assert!(ok);
/// ```
#[derive(Clone)]
pub struct Condition {
    source: Arc<str>,
    program: Arc<Program>,
    /// Set when the expression is a plain path (`steps.a.output`): read straight from the
    /// JSON, without converting the variables to CEL (see [`Condition::lookup`]).
    path: Option<Arc<[Box<str>]>>,
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Condition({:?})", self.source)
    }
}

/// The longest CEL expression muster compiles, in bytes.
pub const MAX_SOURCE_BYTES: usize = 16 * 1024;
/// The deepest nesting of `()`, `[]` and `{}` in a CEL expression.
pub const MAX_NESTING: usize = 16;
/// The most operators on any path into a CEL expression (see the module docs).
pub const MAX_DEPTH: usize = 64;

/// The expression as an error quotes it: the one bounded quote (whole when short, else
/// its start and its size).
fn quoted(source: &str) -> std::borrow::Cow<'_, str> {
    crate::util::bounded_text(source)
}

/// A message (the parser's or the interpreter's, which can quote a value) as an error
/// holds it: the one bounded quote.
fn clipped(message: &str) -> String {
    crate::util::bounded_text(message).into_owned()
}

/// A CEL expression that did not compile or did not evaluate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConditionError {
    /// Syntax error.
    #[error("invalid CEL expression `{}`: {message}", quoted(.source_text))]
    Syntax {
        /// The expression.
        source_text: String,
        /// The parser's message.
        message: String,
    },
    /// The expression is beyond a limit ([`MAX_SOURCE_BYTES`], [`MAX_NESTING`],
    /// [`MAX_DEPTH`]); it was not handed to the parser.
    #[error("CEL expression `{}` is too large: {message}", quoted(.source_text))]
    TooLarge {
        /// The expression.
        source_text: String,
        /// Which limit, and where.
        message: String,
    },
    /// Evaluation failed (missing field, wrong types...).
    #[error("CEL expression `{}` failed: {message}", quoted(.source_text))]
    Eval {
        /// The expression.
        source_text: String,
        /// The interpreter's message.
        message: String,
    },
    /// A condition did not produce a boolean.
    #[error("CEL expression `{}` gave {got}, expected a bool", quoted(.source_text))]
    NotBool {
        /// The expression.
        source_text: String,
        /// What it gave.
        got: String,
    },
}

impl Condition {
    /// Compiles an expression, after checking it is within the limits (see the module
    /// docs): this is the only place muster hands text to the CEL parser.
    pub fn compile(source: &str) -> Result<Self, ConditionError> {
        bounded(source)?;
        let program =
            with_stack(|| Program::compile(source)).map_err(|e| ConditionError::Syntax {
                source_text: source.to_string(),
                message: clipped(&e.to_string()),
            })?;
        Ok(Condition {
            source: Arc::from(source),
            program: Arc::new(program),
            path: plain_path(source),
        })
    }

    /// A plain path (`steps.a.output`) read straight from the JSON variables: `None` when
    /// the expression is not a plain path, or a variable or key on the way is absent (then
    /// CEL evaluates it, and names what is missing). Where it answers, it answers what CEL
    /// would: converting a JSON value to CEL and back gives the same JSON (see
    /// [`to_cel`]).
    fn lookup<'v>(&self, vars: &[(&str, &'v Value)]) -> Option<&'v Value> {
        let (first, rest) = self.path.as_deref()?.split_first()?;
        let mut at = vars.iter().find(|(n, _)| *n == &**first)?.1;
        for key in rest {
            at = at.as_object()?.get(&**key)?;
        }
        Some(at)
    }

    /// The segments of the expression when it is a plain path of field names
    /// (`steps.a.output`), which is read straight from the JSON; `None` otherwise.
    ///
    /// # Example
    /// ```
    /// use muster_core::conditions::Condition;
    ///
    /// let c = Condition::compile("steps.a.output").unwrap();
    /// assert_eq!(c.plain_path().map(|p| p.len()), Some(3));
    /// assert!(Condition::compile("steps.a.output.n + 1").unwrap().plain_path().is_none());
    /// ```
    pub fn plain_path(&self) -> Option<&[Box<str>]> {
        self.path.as_deref()
    }

    /// The expression text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The top-level variable names the expression reads.
    pub fn variables(&self) -> Vec<String> {
        self.program
            .references()
            .variables()
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    /// Evaluates to a CEL value, with the given JSON variables bound.
    fn eval_cel(&self, vars: &[(&str, &Value)]) -> Result<Cel, ConditionError> {
        // Building the standard library is most of the cost of a fresh context: build it
        // once per thread and bind each evaluation's variables in a child scope.
        STDLIB.with(|base| {
            let mut ctx = base.new_inner_scope();
            for (name, value) in vars {
                ctx.add_variable_from_value(*name, to_cel(value));
            }
            with_stack(|| self.program.execute(&ctx)).map_err(|e| ConditionError::Eval {
                source_text: self.source.to_string(),
                message: clipped(&e.to_string()),
            })
        })
    }

    /// Evaluates a condition; anything but a bool is an error.
    pub fn eval_bool(&self, vars: &[(&str, &Value)]) -> Result<bool, ConditionError> {
        if let Some(Value::Bool(b)) = self.lookup(vars) {
            return Ok(*b);
        }
        match self.eval_cel(vars)? {
            Cel::Bool(b) => Ok(b),
            other => Err(ConditionError::NotBool {
                source_text: self.source.to_string(),
                got: clipped(&format!("{other:?}")),
            }),
        }
    }

    /// Evaluates to JSON (input mappings).
    pub fn eval_json(&self, vars: &[(&str, &Value)]) -> Result<Value, ConditionError> {
        if let Some(v) = self.lookup(vars) {
            return Ok(v.clone());
        }
        let v = self.eval_cel(vars)?;
        from_cel(&v).map_err(|message| ConditionError::Eval {
            source_text: self.source.to_string(),
            message: clipped(&message),
        })
    }
}

/// The stack the CEL parser and evaluator may need within the limits: antlr's generated
/// rules recurse once per bracket level and CEL's evaluator once per operator. Unoptimised
/// frames are far larger (16 nested brackets took over 2 MiB, a test thread's whole stack),
/// so debug builds ask for more.
const CEL_STACK: usize = if cfg!(debug_assertions) {
    8 << 20
} else {
    1 << 20
};

/// Runs `f` on a stack with at least [`CEL_STACK`] bytes left: on the current one when it
/// has them, else on a fresh segment twice that size (an `mmap`, only on a thread whose
/// stack is nearly used up or smaller than the bound).
fn with_stack<R>(f: impl FnOnce() -> R) -> R {
    stacker::maybe_grow(CEL_STACK, 2 * CEL_STACK, f)
}

/// Checks an expression against [`MAX_SOURCE_BYTES`], [`MAX_NESTING`] and [`MAX_DEPTH`]
/// without parsing it, in one pass over the text (string literals and `//` comments
/// skipped as the CEL lexer skips them). A string literal the lexer would not accept
/// (unterminated, or with an invalid escape) is refused here: the lexer would otherwise
/// skip the quote and read the literal's contents as code.
///
/// # Example
/// ```
/// use muster_core::conditions::bounded;
///
/// assert!(bounded("steps.test.output.failed + 1 > 0").is_ok());
/// let sum = vec!["1"; 1_000].join("+");
/// assert!(bounded(&sum).unwrap_err().to_string().contains("operators"));
/// ```
pub fn bounded(source: &str) -> Result<(), ConditionError> {
    let refuse = |message: String| ConditionError::TooLarge {
        source_text: source.to_string(),
        message,
    };
    if source.len() > MAX_SOURCE_BYTES {
        return Err(refuse(format!(
            "{} bytes, above the limit of {MAX_SOURCE_BYTES}",
            source.len()
        )));
    }
    let depth = estimated_depth(source).map_err(|e| match e {
        Scan::Nesting(at) => refuse(format!(
            "brackets nest deeper than {MAX_NESTING} levels (at byte {at})"
        )),
        Scan::String(at, why) => ConditionError::Syntax {
            source_text: source.to_string(),
            message: format!("{why} (the string literal at byte {at})"),
        },
    })?;
    if depth > MAX_DEPTH {
        return Err(refuse(format!(
            "{depth} operators on one path into the expression, above the limit of \
             {MAX_DEPTH} (CEL evaluates a chain like `a + b + c` recursively); split it \
             or nest it in fewer levels"
        )));
    }
    Ok(())
}

/// Why [`estimated_depth`] stopped.
enum Scan {
    /// Brackets nest deeper than [`MAX_NESTING`], at this byte.
    Nesting(usize),
    /// A string literal at this byte is not one the lexer accepts.
    String(usize, &'static str),
}

/// One bracket level of the scan: the operators of the current comma-separated part,
/// the deepest bracket closed in it, and the deepest part finished before it.
#[derive(Default)]
struct Level {
    ops: usize,
    child: usize,
    best: usize,
}

impl Level {
    fn depth(&self) -> usize {
        self.best.max(self.ops + self.child)
    }
}

/// An upper bound of the depth of the expression's tree: on any path, the operators of
/// each comma-separated part crossed plus one per bracket entered (a call, an index, a
/// list or a map is a node of the part it is in).
fn estimated_depth(source: &str) -> Result<usize, Scan> {
    let b = source.as_bytes();
    let mut levels = vec![Level::default()];
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' => {
                i = skip_string(b, i, false)?;
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'0'..=b'9' => {
                i = skip_number(b, i);
                continue;
            }
            b'`' => {
                // An escaped identifier (`a.b-c/d`) is one token; a lone backtick is a
                // character the lexer skips.
                let body = b[i + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || b"_.-/ ".contains(c))
                    .count();
                if body > 0 && b.get(i + 1 + body) == Some(&b'`') {
                    i += body + 2;
                    continue;
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                let word = &b[start..i];
                if let (Some((raw, _)), Some(b'"' | b'\'')) = (string_prefix(word), b.get(i)) {
                    i = skip_string(b, i, raw)?;
                } else if word == b"in"
                    && let Some(l) = levels.last_mut()
                {
                    l.ops += 1;
                }
                continue;
            }
            b'(' | b'[' | b'{' => {
                if let Some(l) = levels.last_mut() {
                    l.ops += 1;
                }
                levels.push(Level::default());
                if levels.len() - 1 > MAX_NESTING {
                    return Err(Scan::Nesting(i));
                }
            }
            // An unmatched closer is a syntax error the parser reports; the outermost
            // level is never closed, so the bound still holds.
            b')' | b']' | b'}' => close(&mut levels),
            b',' => {
                if let Some(l) = levels.last_mut() {
                    l.best = l.depth();
                    l.ops = 0;
                    l.child = 0;
                }
            }
            b'=' | b'!' | b'<' | b'>' | b'&' | b'|'
                if matches!(
                    (c, b.get(i + 1)),
                    (b'=' | b'!' | b'<' | b'>', Some(b'='))
                        | (b'&', Some(b'&'))
                        | (b'|', Some(b'|'))
                ) =>
            {
                if let Some(l) = levels.last_mut() {
                    l.ops += 1;
                }
                i += 2;
                continue;
            }
            b'+' | b'-' | b'*' | b'/' | b'%' | b'!' | b'<' | b'>' | b'=' | b'&' | b'|' | b'?'
            | b'.' => {
                if let Some(l) = levels.last_mut() {
                    l.ops += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    while levels.len() > 1 {
        close(&mut levels);
    }
    Ok(levels.last().map_or(0, Level::depth))
}

/// Closes the innermost bracket level (never the outermost), folding its depth into the
/// level that holds it.
fn close(levels: &mut Vec<Level>) {
    if levels.len() > 1
        && let Some(done) = levels.pop()
        && let Some(l) = levels.last_mut()
    {
        l.child = l.child.max(done.depth());
    }
}

/// Skips a number literal starting at a digit (`12`, `1.5`, `1e-3`, `0x1F`, `3u`) the way
/// the lexer reads it; a `.` not followed by a digit is left to be read as an operator.
fn skip_number(b: &[u8], mut i: usize) -> usize {
    if b[i] == b'0' && matches!(b.get(i + 1), Some(b'x' | b'X')) {
        i += 2;
        while i < b.len() && b[i].is_ascii_hexdigit() {
            i += 1;
        }
    } else {
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if b.get(i) == Some(&b'.') && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
            i += 1;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            let mut j = i + 1;
            if matches!(b.get(j), Some(b'+' | b'-')) {
                j += 1;
            }
            if b.get(j).is_some_and(u8::is_ascii_digit) {
                i = j;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
        }
    }
    if matches!(b.get(i), Some(b'u' | b'U')) {
        i += 1;
    }
    i
}

/// Whether `word` is a string literal's prefix when a quote follows it: `Some((raw, bytes))`
/// for `r`/`R` (raw: escapes off), `b`/`B` (bytes) and their combinations, else `None`.
fn string_prefix(word: &[u8]) -> Option<(bool, bool)> {
    match word {
        b"r" | b"R" => Some((true, false)),
        b"b" | b"B" => Some((false, true)),
        b"br" | b"bR" | b"Br" | b"BR" => Some((true, true)),
        _ => None,
    }
}

/// A string literal in a CEL expression's source, found by [`string_literal_at`]. The
/// offsets are bytes of the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StringLiteral {
    /// Its contents as written (escapes not decoded), between the quotes.
    pub contents: std::ops::Range<usize>,
    /// The byte after its closing quote (the end of the source if it has none).
    pub end: usize,
    /// An `r` prefix: a backslash is just a backslash.
    pub raw: bool,
    /// A `b` prefix: the literal is bytes, not a string.
    pub bytes: bool,
}

/// The string literal that starts at byte `at` of a CEL expression (at its opening quote
/// or its prefix), read as the CEL lexer reads it, or `None` if none starts there. This is
/// the scanner [`bounded`] skips literals with; tools that read expressions from their
/// source text use it so that an operator, a dot or a quote inside a literal is never read
/// as code.
///
/// Single, double and triple quotes; the prefixes `r`/`R` (raw: no escapes, so `r'C:\'`
/// ends at its second quote), `b`/`B` (bytes) and `br` in any case. A prefix counts only at
/// the start of a word (`xr'a'` is the identifier `xr`, then a literal at the quote). A
/// literal the lexer refuses (unterminated, a bad escape) runs to the end of the source:
/// [`Condition::compile`] reports it.
///
/// # Example
/// ```
/// use muster_core::conditions::string_literal_at;
///
/// let src = r"r'C:\' + steps.a.output.dir";
/// let lit = string_literal_at(src, 0).unwrap();
/// assert_eq!(&src[lit.contents.clone()], r"C:\");
/// assert!(lit.raw);
/// assert_eq!(&src[lit.end..], " + steps.a.output.dir");
/// assert_eq!(string_literal_at(src, 9), None); // `steps` is no literal
/// ```
pub fn string_literal_at(source: &str, at: usize) -> Option<StringLiteral> {
    let b = source.as_bytes();
    let ident = |c: &u8| c.is_ascii_alphanumeric() || *c == b'_';
    let (quote, raw, bytes) = match *b.get(at)? {
        b'"' | b'\'' => (at, false, false),
        _ if at > 0 && ident(&b[at - 1]) => return None,
        _ => {
            let len = b[at..].iter().take_while(|c| ident(c)).count();
            let (raw, bytes) = string_prefix(&b[at..at + len])?;
            if !matches!(b.get(at + len), Some(b'"' | b'\'')) {
                return None;
            }
            (at + len, raw, bytes)
        }
    };
    let q = b[quote];
    let triple = b.get(quote + 1) == Some(&q) && b.get(quote + 2) == Some(&q);
    let open = if triple { 3 } else { 1 };
    let (end, close) = match skip_string(b, quote, raw) {
        Ok(end) => (end, open),
        Err(_) => (b.len(), 0),
    };
    Some(StringLiteral {
        contents: quote + open..end - close,
        end,
        raw,
        bytes,
    })
}

/// Skips a string literal whose opening quote is at `i` (single or triple quotes; `raw`
/// when an `r` prefix turns escapes off), as the CEL lexer reads it; returns the index
/// after the closing quote. Anything the lexer would not take as a string is an error.
fn skip_string(b: &[u8], i: usize, raw: bool) -> Result<usize, Scan> {
    let q = b[i];
    let triple = b.get(i + 1) == Some(&q) && b.get(i + 2) == Some(&q);
    let mut j = if triple { i + 3 } else { i + 1 };
    while j < b.len() {
        let c = b[j];
        if c == b'\\' && !raw {
            j += escape_len(&b[j..]).ok_or(Scan::String(i, "invalid escape sequence"))?;
            continue;
        }
        if c == q {
            if !triple {
                return Ok(j + 1);
            }
            if b.get(j + 1) == Some(&q) && b.get(j + 2) == Some(&q) {
                return Ok(j + 3);
            }
        }
        if !triple && (c == b'\n' || c == b'\r') {
            return Err(Scan::String(i, "unterminated string literal"));
        }
        j += 1;
    }
    Err(Scan::String(i, "unterminated string literal"))
}

/// The length of the escape sequence at the start of `s` (which starts with `\`), if
/// CEL has it: `\n`-style, `\xHH`, `\uHHHH`, `\UHHHHHHHH`, or octal `\[0-3][0-7][0-7]`.
fn escape_len(s: &[u8]) -> Option<usize> {
    let hex = |n: usize| {
        (s.len() > 1 + n && s[2..2 + n].iter().all(u8::is_ascii_hexdigit)).then_some(2 + n)
    };
    match s.get(1)? {
        b'a' | b'b' | b'f' | b'n' | b'r' | b't' | b'v' | b'"' | b'\'' | b'\\' | b'?' | b'`' => {
            Some(2)
        }
        b'x' | b'X' => hex(2),
        b'u' => hex(4),
        b'U' => hex(8),
        b'0'..=b'3' => {
            let octal = |k: usize| s.get(k).is_some_and(|c| (b'0'..=b'7').contains(c));
            (octal(2) && octal(3)).then_some(4)
        }
        _ => None,
    }
}

/// The segments of an expression that is only identifiers joined by dots (`steps.a.output`,
/// no spaces, no calls, no indexing), else `None`. Such an expression selects fields and
/// nothing else, so reading the JSON directly gives what CEL gives.
fn plain_path(source: &str) -> Option<Arc<[Box<str>]>> {
    let ident = |s: &str| {
        let mut b = s.bytes();
        b.next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
            && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
            // Literals and reserved words are not field names.
            && !matches!(s, "true" | "false" | "null" | "in")
    };
    let segments: Vec<Box<str>> = source.split('.').map(Box::from).collect();
    segments.iter().all(|s| ident(s)).then(|| segments.into())
}

/// JSON to CEL, by the rule in the module docs.
pub fn to_cel(value: &Value) -> Cel {
    match value {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Cel::Int(i)
            } else if let Some(u) = n.as_u64() {
                Cel::UInt(u)
            } else {
                Cel::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(a) => Cel::List(Arc::new(a.iter().map(to_cel).collect())),
        Value::Object(o) => {
            let map: HashMap<Key, Cel> = o
                .iter()
                .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v)))
                .collect();
            Cel::Map(Map { map: Arc::new(map) })
        }
    }
}

/// CEL to JSON; maps with non-string keys use the key's text.
pub fn from_cel(value: &Cel) -> Result<Value, String> {
    Ok(match value {
        Cel::Null => Value::Null,
        Cel::Bool(b) => Value::Bool(*b),
        Cel::Int(i) => Value::from(*i),
        Cel::UInt(u) => Value::from(*u),
        Cel::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .ok_or_else(|| format!("{f} has no JSON form"))?,
        Cel::String(s) => Value::String(s.to_string()),
        Cel::List(l) => Value::Array(l.iter().map(from_cel).collect::<Result<_, _>>()?),
        Cel::Map(m) => {
            let mut out = serde_json::Map::new();
            let mut entries: Vec<_> = m.map.iter().collect();
            entries.sort_by_key(|(k, _)| key_text(k));
            for (k, v) in entries {
                out.insert(key_text(k), from_cel(v)?);
            }
            Value::Object(out)
        }
        other => value
            .json()
            .map_err(|e| format!("{other:?} has no JSON form: {e:?}"))?,
    })
}

fn key_text(k: &Key) -> String {
    match k {
        Key::String(s) => s.to_string(),
        Key::Int(i) => i.to_string(),
        Key::Uint(u) => u.to_string(),
        Key::Bool(b) => b.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// At the limits, on a thread with a 256 KiB stack (well below the 2 MiB of a test
    /// thread, on which an unoptimised parser overflowed at 16 brackets): compiling and
    /// evaluating run on a grown stack instead of overflowing it.
    #[test]
    fn the_deepest_expressions_within_the_limits_run_on_a_small_thread_stack() {
        let nested = format!("{}1{}", "(".repeat(MAX_NESTING), ")".repeat(MAX_NESTING));
        let chain = vec!["1"; MAX_DEPTH].join(" + ");
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let c = Condition::compile(&nested).expect("nested brackets at the limit");
                assert_eq!(c.eval_json(&[]).expect("evaluates"), json!(1));
                let c = Condition::compile(&chain).expect("a chain at the limit");
                assert_eq!(c.eval_json(&[]).expect("evaluates"), json!(MAX_DEPTH));
            })
            .expect("a thread")
            .join()
            .expect("no overflow");
    }

    #[test]
    fn integer_arithmetic_works_on_json_numbers() {
        let c = Condition::compile("steps.test.output.failed + 1").unwrap();
        let steps = json!({"test": {"output": {"failed": 2}}});
        assert_eq!(c.eval_json(&[("steps", &steps)]).unwrap(), json!(3));
    }

    #[test]
    fn has_ternary_size_and_map_literals_work() {
        let c = Condition::compile(
            "{'spec': run.input.spec, 'feedback': has(steps.test) ? steps.test.output.failures : []}",
        )
        .unwrap();
        let run = json!({"input": {"spec": "x"}});
        let out = c
            .eval_json(&[("run", &run), ("steps", &json!({}))])
            .unwrap();
        assert_eq!(out, json!({"spec": "x", "feedback": []}));
        let steps = json!({"test": {"output": {"failures": ["f"]}}});
        let out = c.eval_json(&[("run", &run), ("steps", &steps)]).unwrap();
        assert_eq!(out, json!({"spec": "x", "feedback": ["f"]}));
    }

    #[test]
    fn a_non_bool_condition_is_an_error() {
        let c = Condition::compile("1 + 1").unwrap();
        assert!(matches!(
            c.eval_bool(&[]),
            Err(ConditionError::NotBool { .. })
        ));
    }

    #[test]
    fn syntax_errors_name_the_expression() {
        let e = Condition::compile("a &&").unwrap_err();
        assert!(e.to_string().contains("a &&"));
    }

    fn too_large(source: &str) -> bool {
        matches!(
            Condition::compile(source),
            Err(ConditionError::TooLarge { .. })
        )
    }

    #[test]
    fn a_sum_of_10001_terms_is_refused_before_the_parser_sees_it() {
        let sum = vec!["1"; 10_001].join("+");
        let e = Condition::compile(&sum).unwrap_err();
        assert!(matches!(e, ConditionError::TooLarge { .. }), "{e}");
        // The message quotes the start of the expression, not all of it.
        assert!(e.to_string().len() < 400, "{e}");
        // Short enough to pass the byte limit, too deep for the operator limit.
        let sum = vec!["1"; 1_000].join("+");
        let e = Condition::compile(&sum).unwrap_err();
        assert!(e.to_string().contains("operators"), "{e}");
    }

    #[test]
    fn a_hundred_thousand_nested_parentheses_are_refused() {
        let deep = format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000));
        let e = Condition::compile(&deep).unwrap_err();
        assert!(matches!(e, ConditionError::TooLarge { .. }), "{e}");
        let deep = format!("{}1{}", "(".repeat(1_000), ")".repeat(1_000));
        let e = Condition::compile(&deep).unwrap_err();
        assert!(e.to_string().contains("nest"), "{e}");
    }

    #[test]
    fn every_recursive_shape_counts_toward_the_depth() {
        let n = MAX_DEPTH + 1;
        let shapes = [
            vec!["x"; n + 1].join(" * "),
            vec!["x"; n + 1].join(" == "),
            vec!["x"; n + 1].join(" in "),
            format!("x{}", ".a".repeat(n)),
            format!("x{}", "[0]".repeat(n)),
            format!("'a'{}", ".size()".repeat(n)),
            format!("{}1", "false ? 1 : ".repeat(n)),
            format!("{}true", "!".repeat(n)),
            format!("{}1", "-".repeat(n)),
            format!("{}1{}", "int(".repeat(n), ")".repeat(n)),
            format!("{}1{}", "[".repeat(n), "]".repeat(n)),
            format!("{}1{}", "{'a': ".repeat(n), "}".repeat(n)),
            // Nested brackets add their operators to the path.
            format!("({}) + 1", vec!["1"; n].join("+")),
            format!("size([{}])", vec!["1"; n - 1].join("+")),
        ];
        for s in shapes {
            assert!(too_large(&s), "not refused: {s}");
        }
    }

    #[test]
    fn operators_in_strings_and_comments_do_not_count_but_malformed_strings_are_refused() {
        let plus = "+".repeat(MAX_DEPTH * 2);
        for ok in [
            format!("'{plus}' == x"),
            format!(r#""{plus}" == x"#),
            format!("'''{plus}\n''' == x"),
            format!(r"r'\{plus}' == x"),
            format!("b'{plus}' == x"),
            format!("x // {plus}\n == 1"),
            format!(r"'\x41\u0041\101\'{plus}' == x"),
        ] {
            Condition::compile(&ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        // Each of these would make the lexer skip the quote and read the rest as code.
        let chain = vec!["1"; 10_001].join("+");
        for bad in [
            format!(r"'\q' + {chain}"),
            format!("'abc\n{chain}"),
            format!("'{chain}"),
            format!("'''{chain}"),
            format!("r'abc\n{chain}'"),
        ] {
            let e = Condition::compile(&bad).unwrap_err();
            assert!(
                matches!(
                    e,
                    ConditionError::Syntax { .. } | ConditionError::TooLarge { .. }
                ),
                "{e}"
            );
        }
        // A word ending in r is not a raw-string prefix; a dot after a number is an
        // operator; `//` inside an escaped identifier is not a comment.
        assert!(too_large(&format!(r"xr'\'' + {chain}")));
        assert!(too_large(&format!("1{}", ".a".repeat(MAX_DEPTH + 1))));
        assert!(too_large(&format!("`a//b` + {chain}")));
    }

    #[test]
    fn string_literals_are_found_as_the_lexer_reads_them() {
        let at = |src: &str, i: usize| {
            string_literal_at(src, i).map(|l| (src[l.contents.clone()].to_string(), l.end))
        };
        assert_eq!(at("'a' + b", 0), Some(("a".into(), 3)));
        assert_eq!(at(r#""a\"b" + c"#, 0), Some((r#"a\"b"#.into(), 6)));
        assert_eq!(at("'''a'b''' + c", 0), Some(("a'b".into(), 9)));
        assert_eq!(at("'' + c", 0), Some((String::new(), 2)));
        // Raw: the backslash does not escape the quote.
        assert_eq!(at(r"r'C:\' + x", 0), Some((r"C:\".into(), 6)));
        assert_eq!(at(r"R'\'", 0), Some((r"\".into(), 4)));
        let l = string_literal_at("BR'x'", 0).unwrap();
        assert!(l.raw && l.bytes);
        assert!(string_literal_at("b'x'", 0).is_some_and(|l| l.bytes && !l.raw));
        // Not a prefix: a longer word, or a word not followed by a quote.
        assert_eq!(at("xr'a'", 1), None);
        assert_eq!(at("xr'a'", 2), Some(("a".into(), 5)));
        assert_eq!(at("r + 1", 0), None);
        assert_eq!(at("steps.a", 0), None);
        // Unterminated: to the end, with whatever follows as its contents.
        assert_eq!(at("'abc", 0), Some(("abc".into(), 4)));
        // And the raw string is the one CEL evaluates.
        let c = Condition::compile(r"r'C:\' + 'x' == 'C:\\x'").unwrap();
        assert!(c.eval_bool(&[]).unwrap());
    }

    #[test]
    fn a_source_beyond_the_byte_limit_is_refused() {
        let long = format!("'{}'", "a".repeat(MAX_SOURCE_BYTES));
        let e = Condition::compile(&long).unwrap_err();
        assert!(e.to_string().contains("bytes"), "{e}");
    }

    #[test]
    fn expressions_at_the_limits_compile_and_evaluate() {
        // A chain of MAX_DEPTH operators, and MAX_NESTING brackets with the rest of the
        // operators inside, on a thread with the main thread's stack (8 MiB).
        let chain = vec!["1"; MAX_DEPTH + 1].join("+");
        let inner = vec!["1"; MAX_DEPTH - MAX_NESTING + 1].join("+");
        let nested = format!(
            "{}{inner}{}",
            "[".repeat(MAX_NESTING),
            "]".repeat(MAX_NESTING)
        );
        let map = format!(
            "{}{inner}{}",
            "{'a': ".repeat(MAX_NESTING),
            "}".repeat(MAX_NESTING)
        );
        for s in [&chain, &nested, &map] {
            assert!(bounded(s).is_ok(), "{s}");
        }
        std::thread::Builder::new()
            .stack_size(8 << 20)
            .spawn(move || {
                let v = Condition::compile(&chain).unwrap().eval_json(&[]).unwrap();
                assert_eq!(v, serde_json::json!(MAX_DEPTH + 1));
                Condition::compile(&nested).unwrap().eval_json(&[]).unwrap();
                Condition::compile(&map).unwrap().eval_json(&[]).unwrap();
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn variables_are_listed() {
        let c = Condition::compile("steps.a.output.x > run.input.y").unwrap();
        let mut v = c.variables();
        v.sort();
        assert_eq!(v, vec!["run", "steps"]);
    }

    #[test]
    fn a_plain_path_reads_the_json_and_gives_what_cel_gives() {
        let steps = json!({"a": {"output": {
            "n": 3, "big": u64::MAX, "neg": -7, "f": 2.5, "whole": 3.0, "s": "x",
            "list": [1, {"k": null}], "map": {"z": 1, "a": [true]}, "ok": true
        }}});
        let run = json!({"input": {"y": 1}});
        for path in [
            "steps.a.output",
            "steps.a.output.n",
            "steps.a.output.big",
            "steps.a.output.f",
            "steps.a.output.whole",
            "steps.a.output.list",
            "steps.a.output.map",
            "steps.a.output.neg",
            "run.input",
            "steps.a.output.s",
        ] {
            let c = Condition::compile(path).unwrap();
            assert!(c.path.is_some(), "{path} is a plain path");
            let vars = [("run", &run), ("steps", &steps)];
            let fast = c.eval_json(&vars).unwrap();
            let by_cel = from_cel(&c.eval_cel(&vars).unwrap()).unwrap();
            assert_eq!(fast, by_cel, "{path}");
        }
        let flag = Condition::compile("steps.a.output.ok").unwrap();
        assert!(flag.eval_bool(&[("steps", &steps)]).unwrap());
    }

    #[test]
    fn a_plain_path_to_something_absent_fails_as_cel_fails() {
        let steps = json!({"a": {"output": {"n": 3}}});
        for path in ["steps.b.output", "steps.a.output.n.deeper", "other.x"] {
            let c = Condition::compile(path).unwrap();
            let err = c.eval_json(&[("steps", &steps)]).unwrap_err();
            assert!(matches!(err, ConditionError::Eval { .. }), "{path}: {err}");
        }
        let not_bool = Condition::compile("steps.a.output.n").unwrap();
        assert!(matches!(
            not_bool.eval_bool(&[("steps", &steps)]),
            Err(ConditionError::NotBool { .. })
        ));
    }

    #[test]
    fn only_identifiers_joined_by_dots_are_plain_paths() {
        for not in [
            "steps.a.output.x + 1",
            "size(steps)",
            "steps['a']",
            "true",
            "steps.a .b",
            "1.5",
        ] {
            assert!(plain_path(not).is_none(), "{not}");
        }
        assert!(plain_path("run.input").is_some());
    }
}
