//! Reading a recorded text through layers of JSON string escaping, so that redaction
//! finds a value however it was encoded on its way into the text: as is (`p"w`), inside a
//! JSON string (`p\"w`, `p\u0022w`, minijinja's `tojson` writes `<` as `\u003c`), or a JSON
//! text inside such a string (`p\\\"w`: a tool call's arguments in the recorded tool-call
//! message), up to [`MAX_DEPTH`] layers.
//!
//! It also knows the marks of a bounded quote (`… (N bytes)`, `…[cut: N of M bytes
//! recorded]`): a value that runs into one was cut there, and what is left of it is still
//! matched (a cut never leaves half a secret unrecognised). It only finds byte ranges; it
//! must not decide what is secret or replace anything.

/// The most layers of JSON string escaping a value is looked for under: 0 is the text as
/// is, 1 a string of a JSON text, 2 a JSON text in such a string (a tool call's arguments),
/// 3 one more.
pub(crate) const MAX_DEPTH: u8 = 3;

/// One character read at some depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The character and the byte after its encoding.
    Char(char, usize),
    /// An escape sequence that a bounded quote's cut interrupted (`\u00… (300 bytes)`):
    /// the byte the cut's `…` starts at.
    Cut(usize),
    /// The end of the text, or an escape that does not decode.
    Stop,
}

/// Whether the text after a `…` at `after` is the rest of a bounded quote's mark: ` (N
/// bytes)` (`muster_core::util::bounded_text`) or `[cut: ` ([`crate::bound_text`]).
fn cut_mark(text: &str, after: usize) -> bool {
    let rest = text.get(after..).unwrap_or("");
    if rest.starts_with("[cut: ") {
        return true;
    }
    let Some(rest) = rest.strip_prefix(" (") else {
        return false;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && rest[digits..].starts_with(" bytes)")
}

/// The character at byte `pos` of `text` read through `depth` layers of escaping.
fn step(text: &str, pos: usize, depth: u8) -> Step {
    if depth == 0 {
        return match text.get(pos..).and_then(|t| t.chars().next()) {
            Some(c) => Step::Char(c, pos + c.len_utf8()),
            None => Step::Stop,
        };
    }
    match step(text, pos, depth - 1) {
        Step::Char('\\', next) => escape(text, next, depth),
        other => other,
    }
}

/// The escape sequence after a backslash at `depth` (its characters read one layer down).
fn escape(text: &str, pos: usize, depth: u8) -> Step {
    let (c, next) = match step(text, pos, depth - 1) {
        Step::Char(c, next) => (c, next),
        other => return other,
    };
    let cut_here = Step::Cut(pos);
    let simple = match c {
        '"' | '\\' | '/' => Some(c),
        'b' => Some('\u{8}'),
        'f' => Some('\u{c}'),
        'n' => Some('\n'),
        'r' => Some('\r'),
        't' => Some('\t'),
        '…' if cut_mark(text, next) => return cut_here,
        'u' => None,
        _ => return Step::Stop,
    };
    if let Some(c) = simple {
        return Step::Char(c, next);
    }
    let (unit, next) = match hex4(text, next, depth) {
        Ok(v) => v,
        Err(s) => return s,
    };
    if !(0xD800..0xDC00).contains(&unit) {
        return match char::from_u32(unit) {
            Some(c) => Step::Char(c, next),
            None => Step::Stop,
        };
    }
    // A high surrogate: the low one follows as `\uXXXX` at the same depth.
    let mut next = next;
    for want in ['\\', 'u'] {
        next = match step(text, next, depth - 1) {
            Step::Char(c, n) if c == want => n,
            Step::Char('…', n) if cut_mark(text, n) => return Step::Cut(next),
            Step::Cut(at) => return Step::Cut(at),
            _ => return Step::Stop,
        };
    }
    let (low, next) = match hex4(text, next, depth) {
        Ok(v) => v,
        Err(s) => return s,
    };
    if !(0xDC00..0xE000).contains(&low) {
        return Step::Stop;
    }
    match char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)) {
        Some(c) => Step::Char(c, next),
        None => Step::Stop,
    }
}

/// Four hex digits read one layer below `depth`.
fn hex4(text: &str, mut pos: usize, depth: u8) -> Result<(u32, usize), Step> {
    let mut unit = 0u32;
    for _ in 0..4 {
        match step(text, pos, depth - 1) {
            Step::Char(c, next) => match c.to_digit(16) {
                Some(d) => {
                    unit = unit * 16 + d;
                    pos = next;
                }
                None if c == '…' && cut_mark(text, next) => return Err(Step::Cut(pos)),
                None => return Err(Step::Stop),
            },
            other => return Err(other),
        }
    }
    Ok((unit, pos))
}

/// How `value` was found at a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// Whole: it ends at this byte.
    Whole(usize),
    /// Its beginning, up to a bounded quote's cut at this byte.
    Cut(usize),
}

impl Found {
    /// The byte its text ends at.
    pub(crate) fn end(self) -> usize {
        match self {
            Found::Whole(e) | Found::Cut(e) => e,
        }
    }
}

/// Whether `value`, escaped `depth` times, starts at byte `start` of `text`: whole, or
/// (its first character at least) up to a bounded quote's cut.
pub(crate) fn value_at(text: &str, start: usize, value: &str, depth: u8) -> Option<Found> {
    let mut pos = start;
    let mut matched = false;
    // A `…` that is a cut mark and also the value's next character: the value may go on,
    // or have been cut there.
    let mut cut_at = None;
    for want in value.chars() {
        match step(text, pos, depth) {
            Step::Char(c, next) if c == want => {
                if c == '…' && matched && cut_mark(text, next) {
                    cut_at = Some(pos);
                }
                pos = next;
            }
            Step::Char('…', next) if matched && cut_mark(text, next) => {
                return Some(Found::Cut(pos));
            }
            Step::Cut(at) if matched => return Some(Found::Cut(at)),
            _ => return cut_at.map(Found::Cut),
        }
        matched = true;
    }
    Some(Found::Whole(pos))
}

/// A value to look for: its text, and whether it is a number (found only whole: no digit
/// right before or after it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wanted<'a> {
    /// The value's text.
    pub(crate) text: &'a str,
    /// A number.
    pub(crate) number: bool,
}

/// Where the occurrences of the `wanted` values in `text` are, at any depth up to
/// [`MAX_DEPTH`] (the longest at each place), as byte ranges, in one pass over the text:
/// at each character only the values that can start there are tried.
pub(crate) fn occurrences(text: &str, wanted: &[Wanted<'_>]) -> Vec<(usize, usize)> {
    // The values by their first character.
    let mut by_first: std::collections::HashMap<char, Vec<usize>> = Default::default();
    for (i, w) in wanted.iter().enumerate() {
        if let Some(c) = w.text.chars().next() {
            by_first.entry(c).or_default().push(i);
        }
    }
    if by_first.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    // Past the last occurrence found, per value.
    let mut from = vec![0usize; wanted.len()];
    for (i, c) in text.char_indices() {
        // Values written as they are (any depth: a character that needs no escape is
        // itself at every depth), and values whose first character is escaped here.
        let mut tries: Vec<(usize, u8)> = Vec::new();
        if let Some(ws) = by_first.get(&c) {
            tries.extend(
                ws.iter()
                    .flat_map(|w| (0..=MAX_DEPTH).map(move |d| (*w, d))),
            );
        }
        if c == '\\' {
            for d in 1..=MAX_DEPTH {
                if let Step::Char(first, _) = step(text, i, d)
                    && let Some(ws) = by_first.get(&first)
                {
                    tries.extend(ws.iter().map(|w| (*w, d)));
                }
            }
        }
        let mut best: Vec<(usize, usize)> = Vec::new();
        for (w, d) in tries {
            let want = wanted[w];
            if i < from[w] || (want.number && text[..i].ends_with(|p: char| p.is_ascii_digit())) {
                continue;
            }
            let Some(found) = value_at(text, i, want.text, d) else {
                continue;
            };
            if want.number && matches!(found, Found::Whole(e) if digit_goes_on(text, e)) {
                continue;
            }
            best.push((w, found.end()));
        }
        let Some(end) = best.iter().map(|b| b.1).filter(|e| *e > i).max() else {
            continue;
        };
        for (w, e) in best {
            from[w] = from[w].max(e);
        }
        out.push((i, end));
    }
    out
}

/// Whether a number ending at `end` goes on (a digit, or a decimal point and a digit).
fn digit_goes_on(text: &str, end: usize) -> bool {
    let rest = text.get(end..).unwrap_or("").as_bytes();
    match rest {
        [d, ..] if d.is_ascii_digit() => true,
        [b'.', d, ..] if d.is_ascii_digit() => true,
        _ => false,
    }
}

/// A JSON member whose key is one of the names asked for, found at some depth: where its
/// value's text is, and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Member {
    /// The byte its value starts at.
    pub(crate) start: usize,
    /// The byte its value ends at (a bounded quote's cut, or the text's end, for a value
    /// that was cut).
    pub(crate) end: usize,
    /// How many layers of escaping it is under.
    pub(crate) depth: u8,
    /// Whether the value is whole (not cut).
    pub(crate) whole: bool,
    /// The value's own JSON text, unescaped (`"p\"w"`, `4711`, `true`, `{...}`), when
    /// whole.
    pub(crate) json: Option<String>,
}

/// The members of any JSON text in `text` (at any depth, also one inside prose, also
/// one cut by a bounded quote) whose key is one of `names`.
pub(crate) fn members(text: &str, names: &[String]) -> Vec<Member> {
    // Every beginning of a name: a key is read only while it could still be one.
    let prefixes: std::collections::HashSet<&str> = names
        .iter()
        .flat_map(|n| {
            n.char_indices()
                .map(move |(i, _)| &n[..i])
                .chain([n.as_str()])
        })
        .collect();
    if names.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut from = 0;
    for (i, c) in text.char_indices() {
        if i < from {
            continue;
        }
        // A quote as it is opens a key of a JSON text written as it is; an escaped one,
        // of a JSON text inside a string.
        let depths = match c {
            '"' => 0..=0,
            '\\' => 1..=MAX_DEPTH,
            _ => continue,
        };
        for depth in depths {
            if let Some(m) = member_at(text, i, depth, names, &prefixes) {
                from = m.end;
                out.push(m);
                break;
            }
        }
    }
    out
}

/// The member whose key starts at `start` (its opening quote), `depth` layers down.
fn member_at(
    text: &str,
    start: usize,
    depth: u8,
    names: &[String],
    prefixes: &std::collections::HashSet<&str>,
) -> Option<Member> {
    let Step::Char('"', mut pos) = step(text, start, depth) else {
        return None;
    };
    let mut key = String::new();
    loop {
        match step(text, pos, depth) {
            Step::Char('"', next) => {
                pos = next;
                break;
            }
            Step::Char(c, next) if c != '\\' => {
                key.push(c);
                if !prefixes.contains(key.as_str()) {
                    return None;
                }
                pos = next;
            }
            _ => return None,
        }
    }
    if !names.contains(&key) {
        return None;
    }
    pos = skip_space(text, pos, depth);
    let Step::Char(':', next) = step(text, pos, depth) else {
        return None;
    };
    let start = skip_space(text, next, depth);
    let (end, whole, json) = value_end(text, start, depth)?;
    Some(Member {
        start,
        end,
        depth,
        whole,
        json,
    })
}

fn skip_space(text: &str, mut pos: usize, depth: u8) -> usize {
    while let Step::Char(' ' | '\n' | '\r' | '\t', next) = step(text, pos, depth) {
        pos = next;
    }
    pos
}

/// The end of the JSON value starting at `start`, `depth` layers down: `(end, whole, its
/// unescaped text when whole)`; `None` when no value starts there.
fn value_end(text: &str, start: usize, depth: u8) -> Option<(usize, bool, Option<String>)> {
    let mut pos = start;
    let mut json = String::new();
    let mut nesting = 0u32;
    let mut in_string = false;
    let mut escaped = false;
    loop {
        let here = pos;
        let c = match step(text, pos, depth) {
            Step::Char(c, next) => {
                if c == '…' && cut_mark(text, next) {
                    return (here > start).then_some((here, false, None));
                }
                pos = next;
                c
            }
            Step::Cut(at) => return (at > start).then_some((at, false, None)),
            // The text ended inside the value: it was cut (a stream, a quote).
            Step::Stop if here >= text.len() => {
                return (here > start).then_some((here, false, None));
            }
            Step::Stop => return None,
        };
        if in_string {
            json.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
                if nesting == 0 {
                    return Some((pos, true, Some(json)));
                }
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' | '[' => nesting += 1,
            '}' | ']' if nesting > 0 => {
                nesting -= 1;
                if nesting == 0 {
                    json.push(c);
                    return Some((pos, true, Some(json)));
                }
            }
            c if nesting == 0 && (c.is_ascii_alphanumeric() || matches!(c, '-' | '+' | '.')) => {}
            _ if nesting == 0 => {
                // The end of a bare literal (a number, `true`...).
                return (here > start).then_some((here, true, Some(json)));
            }
            _ => {}
        }
        json.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `s` as a JSON string's inside, `n` times over.
    fn escaped(s: &str, n: u8) -> String {
        let mut t = s.to_string();
        for _ in 0..n {
            let q = serde_json::Value::String(t).to_string();
            t = q[1..q.len() - 1].to_string();
        }
        t
    }

    #[test]
    fn a_value_is_found_under_each_layer_of_escaping() {
        let secret = "p\"w\\d\n<é😀";
        for depth in 0..=MAX_DEPTH {
            let text = format!("before {} after", escaped(secret, depth));
            let found = occurrences(
                &text,
                &[Wanted {
                    text: secret,
                    number: false,
                }],
            );
            assert_eq!(found.len(), 1, "depth {depth}: {text}");
            let (s, e) = found[0];
            assert_eq!(&text[..s], "before ");
            assert_eq!(&text[e..], " after", "depth {depth}");
        }
        // `\u` escapes of any character, upper or lower case, surrogate pairs included.
        let text = r#"x p\u0022w\\d\n\u003C\u00e9\ud83d\uDE00 y"#;
        assert_eq!(
            occurrences(
                text,
                &[Wanted {
                    text: secret,
                    number: false
                }]
            ),
            [(2, text.len() - 2)]
        );
    }

    #[test]
    fn a_value_cut_by_a_bounded_quote_is_found_up_to_the_cut() {
        let quote = "the answer `key hunter2-sec… (900 bytes)`";
        let (s, e) = occurrences(
            quote,
            &[Wanted {
                text: "hunter2-secret",
                number: false,
            }],
        )[0];
        assert_eq!(&quote[s..e], "hunter2-sec");
        // Cut inside an escape sequence.
        let quote = r#"{"k": "hunter\u00… (900 bytes)"#;
        let (s, e) = occurrences(
            quote,
            &[Wanted {
                text: "hunteré",
                number: false,
            }],
        )[0];
        assert_eq!(&quote[s..e], r"hunter\u00");
        // A `…` that is no cut mark ends nothing.
        assert!(
            occurrences(
                "hunt… and more",
                &[Wanted {
                    text: "hunter2",
                    number: false
                }]
            )
            .is_empty()
        );
    }

    #[test]
    fn a_number_is_found_only_whole() {
        let text = "pin 4711, not 47110 nor 14711 nor 4711.5, but 4711.";
        let found: Vec<&str> = occurrences(
            text,
            &[Wanted {
                text: "4711",
                number: true,
            }],
        )
        .into_iter()
        .map(|(s, e)| &text[s..e])
        .collect();
        assert_eq!(found, ["4711", "4711"]);
    }

    #[test]
    fn members_are_found_in_json_at_any_depth_and_in_prose() {
        let names = vec!["password".to_string(), "admin".to_string()];
        let text = r#"see {"password": "p\"w", "admin": true, "n": 1} and "{\"admin\":false}""#;
        let ms = members(text, &names);
        let values: Vec<(&str, u8, Option<&str>)> = ms
            .iter()
            .map(|m| (&text[m.start..m.end], m.depth, m.json.as_deref()))
            .collect();
        assert_eq!(
            values,
            [
                (r#""p\"w""#, 0, Some(r#""p\"w""#)),
                ("true", 0, Some("true")),
                ("false", 1, Some("false")),
            ]
        );
        // A value cut by a bounded quote is taken up to the cut.
        let text = r#"{"password": "hunter2-sec… (900 bytes)"#;
        let m = &members(text, &names)[0];
        assert_eq!((&text[m.start..m.end], m.whole), (r#""hunter2-sec"#, false));
    }
}
