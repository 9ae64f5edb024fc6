//! Structured inputs from raw bytes: a byte reader, JSON values, TOML mutations of the
//! shipped files and CEL expression trees. Every generator reads its choices from the
//! fuzz input, so a coverage-guided engine (libFuzzer) steers it as well as it steers a
//! byte parser, and the same bytes always give the same input (a crash reproduces from
//! its bytes alone). Reading past the end yields zeros, and choice 0 is always a leaf,
//! so every generator ends.

use serde_json::{Map, Number, Value};

/// Reads choices from the fuzz input.
pub struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bytes<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Bytes { data, pos: 0 }
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// The next byte (0 past the end).
    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos = self.pos.saturating_add(1);
        b
    }

    /// The next 4 bytes, little-endian.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// The next 8 bytes, little-endian.
    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// A number below `n` (0 when `n` is 0 or 1).
    pub fn below(&mut self, n: usize) -> usize {
        match n {
            0 | 1 => 0,
            2..=256 => usize::from(self.u8()) % n,
            _ => self.u32() as usize % n,
        }
    }

    /// A coin.
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// One of `xs` (which must not be empty).
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }

    /// The next `n` bytes (fewer at the end).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = start.saturating_add(n).min(self.data.len());
        self.pos = self.pos.saturating_add(n);
        &self.data[start..end]
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        self.pos = self.data.len();
        &self.data[start..]
    }

    /// A short string: a length byte, then that many bytes (lossy UTF-8).
    pub fn text(&mut self) -> String {
        let n = usize::from(self.u8() % 24);
        String::from_utf8_lossy(self.take(n)).into_owned()
    }
}

/// Strings that tend to matter to the parsers and checks under test.
pub const WORDS: &[&str] = &[
    "",
    "x",
    "a.b",
    "echo",
    "hop",
    "tester",
    "tester#0",
    "tester#1",
    "tester#18446744073709551616",
    "code.test",
    "code.write",
    "test-request",
    "test-report",
    "change-request",
    "p",
    "30s",
    "0s",
    "1ns",
    "250ms",
    "1m 30s",
    "18446744073709551615s",
    "99999999999999999999d",
    "584942417356y",
    "-1s",
    "done",
    "fail",
    "dead_letter",
    "sim",
    "function",
    "command",
    "stdio",
    "oneshot",
    "poisson",
    "all_at_once",
    "fixed",
    "normal",
    "lognormal",
    "uniform",
    "exponential",
    "permanent",
    "transient",
    "temporary",
    "one_for_one",
    "one_for_all",
    "rest_for_one",
    "output.total > 0",
    "run.input",
    "steps.a.output.x + 1",
    "has(steps.a) ? steps.a.output : {}",
    "0198f1c2-7d6e-7a3b-9c4d-5e6f7a8b9c0d",
    "00000000-0000-0000-0000-000000000000",
    "{'a': 1}",
    "/",
    "~1",
    "\u{0}",
    "\u{feff}",
    "é",
    "\\",
    "\"",
    "'",
    "`",
    "\n",
    "#",
    "=",
    "[",
    "]",
    "{",
    "}",
];

/// Integers at the edges of the types the code converts them to.
pub const INTS: &[i64] = &[
    0,
    1,
    -1,
    2,
    3,
    7,
    64,
    255,
    256,
    65_535,
    i32::MAX as i64,
    u32::MAX as i64,
    u32::MAX as i64 + 1,
    (1 << 53) + 1,
    i64::MAX,
    i64::MIN,
    i64::MIN + 1,
];

/// Floats at the edges.
pub const FLOATS: &[f64] = &[
    0.0,
    -0.0,
    0.5,
    1.0,
    1.5,
    -1.5,
    0.1,
    1e-300,
    5e-324,
    1e300,
    f64::MAX,
    f64::MIN,
    f64::EPSILON,
    9_007_199_254_740_993.0,
    18_446_744_073_709_551_616.0,
    0.30000000000000004,
    123_456_789.123_456_79,
];

/// A JSON number.
pub fn number(b: &mut Bytes) -> Number {
    match b.below(6) {
        0 => Number::from(b.pick(INTS)),
        1 => Number::from(b.u64()),
        2 => Number::from(b.u64() as i64),
        3 => Number::from(u64::MAX - u64::from(b.u8())),
        4 => Number::from_f64(b.pick(FLOATS)).unwrap_or_else(|| Number::from(0)),
        _ => {
            let f = f64::from_bits(b.u64());
            Number::from_f64(f).unwrap_or_else(|| Number::from(1))
        }
    }
}

/// A JSON string: a word or a few raw characters.
pub fn string(b: &mut Bytes) -> String {
    if b.bool() {
        b.pick(WORDS).to_string()
    } else {
        b.text()
    }
}

/// A JSON value nested at most `depth` deep, using `keys` for object keys (and random
/// ones).
pub fn json(b: &mut Bytes, depth: usize, keys: &[&str]) -> Value {
    let kinds = if depth == 0 { 6 } else { 8 };
    match b.below(kinds) {
        0 => Value::Null,
        1 => Value::Bool(b.bool()),
        2 | 3 => Value::Number(number(b)),
        4 | 5 => Value::String(string(b)),
        6 => Value::Array((0..b.below(5)).map(|_| json(b, depth - 1, keys)).collect()),
        _ => {
            let mut m = Map::new();
            for _ in 0..b.below(6) {
                let k = if !keys.is_empty() && b.u8() < 200 {
                    b.pick(keys).to_string()
                } else {
                    string(b)
                };
                m.insert(k, json(b, depth - 1, keys));
            }
            Value::Object(m)
        }
    }
}

/// A value nested exactly `depth` deep (arrays or objects, as the bytes say).
pub fn deep_json(b: &mut Bytes, depth: usize) -> Value {
    let mut v = json(b, 0, &[]);
    for _ in 0..depth {
        v = if b.bool() {
            Value::Array(vec![v])
        } else {
            let mut m = Map::new();
            m.insert("a".into(), v);
            Value::Object(m)
        };
    }
    v
}

/// Every property name, `enum` and `const` string of the schemas in `dir`: the keys and
/// the values the loaders look for.
pub fn schema_words(dir: &std::path::Path) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("properties" | "$defs", Value::Object(props)) => {
                            out.extend(props.keys().cloned());
                        }
                        ("enum", Value::Array(xs)) => {
                            out.extend(xs.iter().filter_map(|x| x.as_str().map(String::from)));
                        }
                        ("const", Value::String(s)) => out.push(s.clone()),
                        _ => {}
                    }
                    walk(v, out);
                }
            }
            Value::Array(xs) => xs.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if let Ok(text) = std::fs::read_to_string(e.path())
                && let Ok(v) = serde_json::from_str::<Value>(&text)
            {
                walk(&v, &mut out);
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// TOML values worth putting on the right of a `=`.
const TOML_VALUES: &[&str] = &[
    "0",
    "1",
    "-1",
    "2",
    "1.5",
    "-0.0",
    "nan",
    "inf",
    "-inf",
    "1e309",
    "true",
    "false",
    "9223372036854775807",
    "-9223372036854775808",
    "4294967296",
    "18446744073709551615",
    "\"\"",
    "''",
    "[]",
    "{}",
    "[1, \"a\", {}]",
    "[[]]",
    "{ kind = \"fixed\", value = \"1s\" }",
    "{ kind = \"normal\", mean = 1, std_dev = -1 }",
    "{ kind = \"poisson\", rate = 0.0 }",
    "{ kind = \"function\", name = \"echo\" }",
    "{ kind = \"sim\" }",
    "{ kind = \"command\", program = \"true\" }",
    "[{ when = \"true\", goto = \"done\" }]",
    "[{ otherwise = true, goto = \"x\", max_visits = 0 }]",
    "1979-05-27T07:32:00Z",
    "1979-05-27",
    "07:32:00",
    "\"\"\"\nmulti\n\"\"\"",
    "'''\nlit\n'''",
    "\"\\u0000\"",
    "\"\\uD800\"",
];

/// One TOML value: from the list, a quoted word, or a generated JSON value written as TOML.
pub fn toml_value(b: &mut Bytes, words: &[String]) -> String {
    match b.below(4) {
        0 => b.pick(TOML_VALUES).to_string(),
        1 => toml_string(b.pick(WORDS)),
        2 if !words.is_empty() => toml_string(&words[b.below(words.len())]),
        _ => {
            let v = json(b, 2, &[]);
            toml_inline(&v).unwrap_or_else(|| "0".into())
        }
    }
}

/// `s` as a TOML basic string.
pub fn toml_string(s: &str) -> String {
    // JSON string escapes are valid TOML basic-string escapes.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A JSON value as an inline TOML value (`None` for null, which TOML lacks).
pub fn toml_inline(v: &Value) -> Option<String> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
                format!("{f:?}")
            } else {
                n.to_string()
            }
        }
        Value::String(s) => toml_string(s),
        Value::Array(xs) => format!(
            "[{}]",
            xs.iter()
                .filter_map(toml_inline)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Object(m) => format!(
            "{{ {} }}",
            m.iter()
                .filter_map(|(k, v)| Some(format!("{} = {}", toml_string(k), toml_inline(v)?)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// A key: a schema word (bare or quoted), dotted, or a few raw characters.
fn toml_key(b: &mut Bytes, words: &[String]) -> String {
    if words.is_empty() {
        return "x".into();
    }
    let w = words[b.below(words.len())].clone();
    let bare = !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match b.below(6) {
        0 => toml_string(&b.text()),
        1 => format!(
            "{}.{}",
            toml_string(&w),
            toml_string(&words[b.below(words.len())])
        ),
        2 => toml_string(&w),
        _ if bare => w,
        _ => toml_string(&w),
    }
}

/// Mutates a TOML document line by line: values, keys, lines and tables replaced,
/// inserted, removed, duplicated or swapped, raw bytes spliced in. Zero mutations leave
/// the seed as it is (so the seeds themselves are inputs).
pub fn mutate_toml(seed: &str, b: &mut Bytes, words: &[String]) -> String {
    let mut lines: Vec<String> = seed.lines().map(String::from).collect();
    let n = b.below(9);
    for _ in 0..n {
        if lines.is_empty() {
            lines.push(String::new());
        }
        let i = b.below(lines.len());
        match b.below(12) {
            0 | 1 => {
                // A new value for the key on line i.
                if let Some(eq) = lines[i].find('=') {
                    let key = lines[i][..eq].to_string();
                    lines[i] = format!("{key}= {}", toml_value(b, words));
                } else {
                    lines[i] = format!("{} = {}", toml_key(b, words), toml_value(b, words));
                }
            }
            2 => {
                // A new key for the value on line i.
                let value = lines[i]
                    .find('=')
                    .map(|eq| lines[i][eq + 1..].to_string())
                    .unwrap_or_else(|| format!(" {}", toml_value(b, words)));
                lines[i] = format!("{} ={value}", toml_key(b, words));
            }
            3 | 4 => {
                let line = format!("{} = {}", toml_key(b, words), toml_value(b, words));
                lines.insert(i + 1, line);
            }
            5 => {
                let k = toml_key(b, words);
                let header = match b.below(3) {
                    0 => format!("[{k}]"),
                    1 => format!("[[{k}]]"),
                    _ => format!("[{k}.{}]", toml_key(b, words)),
                };
                lines.insert(i, header);
            }
            6 => {
                lines.remove(i);
            }
            7 => {
                let l = lines[i].clone();
                lines.insert(i, l);
            }
            8 => {
                let j = b.below(lines.len());
                lines.swap(i, j);
            }
            9 => {
                // Raw characters spliced in at a char boundary.
                let at = boundary(&lines[i], b.below(lines[i].len() + 1));
                let t = b.text();
                lines[i].insert_str(at, &t);
            }
            10 => {
                let at = boundary(&lines[i], b.below(lines[i].len() + 1));
                lines[i].truncate(at);
            }
            _ => {
                // A word spliced in.
                let at = boundary(&lines[i], b.below(lines[i].len() + 1));
                let w = b.pick(WORDS);
                lines[i].insert_str(at, w);
            }
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// The char boundary at or before `at`.
fn boundary(s: &str, mut at: usize) -> usize {
    at = at.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Identifiers a CEL expression may name (the variables the runtime binds and a few it
/// does not).
const CEL_IDENTS: &[&str] = &[
    "output", "input", "run", "steps", "x", "y", "missing", "null",
];
/// Member names.
pub const CEL_FIELDS: &[&str] = &[
    "total", "passed", "failed", "failures", "a", "b", "output", "input", "test", "spec",
];
/// Binary operators.
const CEL_BINARY: &[&str] = &[
    "+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "&&", "||", "in",
];
/// Literals, including the ones at the edges of CEL's types.
const CEL_LITERALS: &[&str] = &[
    "0",
    "1",
    "-1",
    "2",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "0x7fffffffffffffff",
    "18446744073709551615u",
    "18446744073709551616u",
    "0u",
    "1u",
    "1.5",
    "-0.0",
    "1e308",
    "1e309",
    "2.2250738585072014e-308",
    "true",
    "false",
    "null",
    "''",
    "'a'",
    "\"b\"",
    "'\\u00e9'",
    "'\\x00'",
    "'\\377'",
    "r'\\d+'",
    "'''x'''",
    "b'\\xff'",
    "b''",
    "[]",
    "{}",
    "[1, 2, 3]",
    "{'a': 1, 'b': [true]}",
    "duration('1s')",
    "duration('-9223372036s')",
    "duration('87600000h')",
    "timestamp('2023-01-01T00:00:00Z')",
    "timestamp('9999-12-31T23:59:59Z')",
    "timestamp('0001-01-01T00:00:00Z')",
];
/// Global functions, by arity.
const CEL_FUNCTIONS: &[(&str, usize)] = &[
    ("size", 1),
    ("int", 1),
    ("uint", 1),
    ("double", 1),
    ("string", 1),
    ("bytes", 1),
    ("bool", 1),
    ("type", 1),
    ("dyn", 1),
    ("duration", 1),
    ("timestamp", 1),
    ("max", 2),
    ("min", 2),
    ("matches", 2),
    ("contains", 2),
    ("startsWith", 2),
    ("endsWith", 2),
    ("unknown_fn", 1),
];
/// Methods (receiver first), by arity without the receiver.
const CEL_METHODS: &[(&str, usize)] = &[
    ("size", 0),
    ("contains", 1),
    ("startsWith", 1),
    ("endsWith", 1),
    ("matches", 1),
    ("getHours", 0),
    ("getFullYear", 0),
    ("getMilliseconds", 0),
];
/// Macros over a list or map: `e.all(v, p)`...
const CEL_MACROS: &[&str] = &["all", "exists", "exists_one", "map", "filter"];

/// A CEL expression tree, written out, at most `depth` deep.
pub fn cel(b: &mut Bytes, depth: usize) -> String {
    let kinds = if depth == 0 { 3 } else { 13 };
    match b.below(kinds) {
        0 => b.pick(CEL_LITERALS).to_string(),
        1 => b.pick(CEL_IDENTS).to_string(),
        2 => format!("{:?}", b.text()),
        3 => format!("{}.{}", cel(b, depth - 1), b.pick(CEL_FIELDS)),
        4 => format!("{}[{}]", cel(b, depth - 1), cel(b, depth - 1)),
        5 => format!("{}{}", b.pick(&["!", "-", "!!", "--"]), cel(b, depth - 1)),
        6 | 7 => format!(
            "{} {} {}",
            cel(b, depth - 1),
            b.pick(CEL_BINARY),
            cel(b, depth - 1)
        ),
        8 => format!(
            "{} ? {} : {}",
            cel(b, depth - 1),
            cel(b, depth - 1),
            cel(b, depth - 1)
        ),
        9 => {
            let (f, n) = b.pick(CEL_FUNCTIONS);
            let args: Vec<String> = (0..n).map(|_| cel(b, depth - 1)).collect();
            format!("{f}({})", args.join(", "))
        }
        10 => {
            let (m, n) = b.pick(CEL_METHODS);
            let recv = cel(b, depth - 1);
            let args: Vec<String> = (0..n).map(|_| cel(b, depth - 1)).collect();
            format!("({recv}).{m}({})", args.join(", "))
        }
        11 => {
            let m = b.pick(CEL_MACROS);
            let v = b.pick(&["v", "x", "output"]);
            format!("{}.{m}({v}, {})", cel(b, depth - 1), cel(b, depth - 1))
        }
        _ => match b.below(4) {
            0 => format!("[{}]", list(b, depth)),
            1 => {
                let entries: Vec<String> = (0..b.below(4))
                    .map(|_| format!("{}: {}", cel(b, depth - 1), cel(b, depth - 1)))
                    .collect();
                format!("{{{}}}", entries.join(", "))
            }
            2 => format!("has({}.{})", cel(b, depth - 1), b.pick(CEL_FIELDS)),
            _ => format!("({})", cel(b, depth - 1)),
        },
    }
}

fn list(b: &mut Bytes, depth: usize) -> String {
    let items: Vec<String> = (0..b.below(4)).map(|_| cel(b, depth - 1)).collect();
    items.join(", ")
}

/// A CEL expression built by repeating one construct `n` times around (or after) a leaf:
/// nested parentheses, unary operators, lists, maps, calls, member chains, ternaries,
/// and long left-associative operator chains.
pub fn deep_cel(b: &mut Bytes, n: usize) -> String {
    let leaf = b.pick(CEL_LITERALS);
    match b.below(10) {
        0 => format!("{}{leaf}{}", "(".repeat(n), ")".repeat(n)),
        1 => format!("{}{leaf}", "!".repeat(n)),
        2 => format!("{}{leaf}", "-".repeat(n)),
        3 => format!("{}{leaf}{}", "[".repeat(n), "]".repeat(n)),
        4 => format!("{}{leaf}{}", "{'a': ".repeat(n), "}".repeat(n)),
        5 => format!("{}{leaf}{}", "size(".repeat(n), ")".repeat(n)),
        6 => format!("output{}", ".a".repeat(n)),
        7 => format!("{}{leaf}", "true ? 1 : ".repeat(n)),
        8 => {
            let op = b.pick(CEL_BINARY);
            let mut s = leaf.to_string();
            for _ in 0..n {
                s.push_str(&format!(" {op} {leaf}"));
            }
            s
        }
        _ => format!("{}{leaf}{}", "[1, ".repeat(n), "]".repeat(n)),
    }
}
