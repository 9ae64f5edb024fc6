//! Strings that match a regular expression: the `pattern` keyword of JSON Schema, for
//! [`super::generate`].
//!
//! Owns a small parser and generator for the regex subset that schemas use: literals,
//! `.`, classes (`[a-z0-9._-]`, `[^...]`, `\d \w \s` and their negations), groups with
//! alternation (`(a|b)`, `(?:...)`), the quantifiers `* + ? {n} {n,} {n,m}` and the
//! anchors `^ $`. Unbounded repetitions are kept short (at most three beyond their
//! minimum). Anything else (look-around, back-references) is refused with a message rather
//! than generated wrongly.

use super::SimRng;

#[derive(Debug, Clone)]
enum Node {
    Lit(char),
    Class {
        ranges: Vec<(char, char)>,
        negated: bool,
    },
    Any,
    Group(Vec<Vec<Piece>>),
    Anchor,
}

#[derive(Debug, Clone)]
struct Piece {
    node: Node,
    min: u32,
    max: Option<u32>,
}

/// A string matching `pattern`, or why the pattern is outside the supported subset.
pub(crate) fn generate(pattern: &str, rng: &mut SimRng) -> Result<String, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut pos = 0;
    let alts = parse_alt(&chars, &mut pos)?;
    if pos < chars.len() {
        return Err(format!("unbalanced `)` at {pos} in `{pattern}`"));
    }
    let mut out = String::new();
    gen_alt(&alts, rng, &mut out);
    Ok(out)
}

fn parse_alt(c: &[char], pos: &mut usize) -> Result<Vec<Vec<Piece>>, String> {
    let mut alts = vec![Vec::new()];
    while *pos < c.len() {
        match c[*pos] {
            ')' => break,
            '|' => {
                *pos += 1;
                alts.push(Vec::new());
            }
            _ => {
                let node = parse_atom(c, pos)?;
                let (min, max) = parse_quantifier(c, pos)?;
                if let Some(seq) = alts.last_mut() {
                    seq.push(Piece { node, min, max });
                }
            }
        }
    }
    Ok(alts)
}

fn parse_atom(c: &[char], pos: &mut usize) -> Result<Node, String> {
    let ch = c[*pos];
    *pos += 1;
    match ch {
        '^' | '$' => Ok(Node::Anchor),
        '.' => Ok(Node::Any),
        '(' => {
            if c.get(*pos) == Some(&'?') {
                if c.get(*pos + 1) == Some(&':') {
                    *pos += 2;
                } else {
                    return Err("look-around and named groups are not supported".into());
                }
            }
            let alts = parse_alt(c, pos)?;
            if c.get(*pos) != Some(&')') {
                return Err("unclosed group".into());
            }
            *pos += 1;
            Ok(Node::Group(alts))
        }
        '[' => parse_class(c, pos),
        '\\' => parse_escape(c, pos),
        '*' | '+' | '?' | '{' => Err(format!("quantifier `{ch}` with nothing to repeat")),
        other => Ok(Node::Lit(other)),
    }
}

fn escape_class(e: char) -> Option<(Vec<(char, char)>, bool)> {
    let digits = vec![('0', '9')];
    let word = vec![('a', 'z'), ('A', 'Z'), ('0', '9'), ('_', '_')];
    // Generating \s as a plain space keeps the strings readable.
    let space = vec![(' ', ' '), ('\t', '\t'), ('\n', '\n'), ('\r', '\r')];
    match e {
        'd' => Some((digits, false)),
        'D' => Some((digits, true)),
        'w' => Some((word, false)),
        'W' => Some((word, true)),
        's' => Some((vec![(' ', ' ')], false)),
        'S' => Some((space, true)),
        _ => None,
    }
}

fn escaped_literal(e: char) -> Result<char, String> {
    match e {
        'n' => Ok('\n'),
        't' => Ok('\t'),
        'r' => Ok('\r'),
        c if c.is_ascii_digit() => Err("back-references are not supported".into()),
        'b' | 'B' | 'p' | 'P' | 'u' | 'x' => Err(format!("`\\{e}` is not supported")),
        c => Ok(c),
    }
}

fn parse_escape(c: &[char], pos: &mut usize) -> Result<Node, String> {
    let Some(&e) = c.get(*pos) else {
        return Err("trailing `\\`".into());
    };
    *pos += 1;
    if let Some((ranges, negated)) = escape_class(e) {
        return Ok(Node::Class { ranges, negated });
    }
    escaped_literal(e).map(Node::Lit)
}

fn parse_class(c: &[char], pos: &mut usize) -> Result<Node, String> {
    let mut negated = false;
    if c.get(*pos) == Some(&'^') {
        negated = true;
        *pos += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let Some(&ch) = c.get(*pos) else {
            return Err("unclosed `[`".into());
        };
        *pos += 1;
        if ch == ']' && !first {
            break;
        }
        first = false;
        let lo = if ch == '\\' {
            let Some(&e) = c.get(*pos) else {
                return Err("trailing `\\`".into());
            };
            *pos += 1;
            if let Some((rs, neg)) = escape_class(e) {
                if neg {
                    return Err(format!("`\\{e}` inside a class is not supported"));
                }
                ranges.extend(rs);
                continue;
            }
            escaped_literal(e)?
        } else {
            ch
        };
        // A range `lo-hi`, unless the `-` is the last character of the class.
        if c.get(*pos) == Some(&'-') && c.get(*pos + 1).is_some_and(|&n| n != ']') {
            let mut hi = c[*pos + 1];
            *pos += 2;
            if hi == '\\' {
                let Some(&e) = c.get(*pos) else {
                    return Err("trailing `\\`".into());
                };
                *pos += 1;
                hi = escaped_literal(e)?;
            }
            if hi < lo {
                return Err(format!("bad range `{lo}-{hi}`"));
            }
            ranges.push((lo, hi));
        } else {
            ranges.push((lo, lo));
        }
    }
    Ok(Node::Class { ranges, negated })
}

fn parse_number(c: &[char], pos: &mut usize) -> Option<u32> {
    let start = *pos;
    while c.get(*pos).is_some_and(|d| d.is_ascii_digit()) {
        *pos += 1;
    }
    c[start..*pos].iter().collect::<String>().parse().ok()
}

fn parse_quantifier(c: &[char], pos: &mut usize) -> Result<(u32, Option<u32>), String> {
    let q = match c.get(*pos) {
        Some('*') => (0, None),
        Some('+') => (1, None),
        Some('?') => (0, Some(1)),
        Some('{') => {
            let save = *pos;
            *pos += 1;
            let Some(min) = parse_number(c, pos) else {
                // Not a quantifier: a literal `{`.
                *pos = save;
                return Ok((1, Some(1)));
            };
            let max = if c.get(*pos) == Some(&',') {
                *pos += 1;
                parse_number(c, pos)
            } else {
                Some(min)
            };
            if c.get(*pos) != Some(&'}') {
                return Err("unclosed `{`".into());
            }
            // `pos` is advanced past `}` below, with the other quantifiers.
            (min, max)
        }
        _ => return Ok((1, Some(1))),
    };
    *pos += 1;
    // A lazy or possessive marker changes nothing about which strings match.
    if matches!(c.get(*pos), Some('?') | Some('+')) {
        *pos += 1;
    }
    Ok(q)
}

fn gen_alt(alts: &[Vec<Piece>], rng: &mut SimRng, out: &mut String) {
    let seq = &alts[rng.below(alts.len())];
    for p in seq {
        let max = p.max.unwrap_or(p.min + 3).min(p.min + 3);
        let n = rng.range_i64(p.min as i64, max as i64);
        for _ in 0..n {
            gen_node(&p.node, rng, out);
        }
    }
}

fn gen_node(node: &Node, rng: &mut SimRng, out: &mut String) {
    match node {
        Node::Lit(c) => out.push(*c),
        Node::Anchor => {}
        Node::Any => out.push((b'a' + rng.below(26) as u8) as char),
        Node::Group(alts) => gen_alt(alts, rng, out),
        Node::Class {
            ranges,
            negated: false,
        } => {
            let total: u64 = ranges
                .iter()
                .map(|(lo, hi)| (*hi as u64) - (*lo as u64) + 1)
                .sum();
            let mut k = rng.next_u64() % total.max(1);
            for (lo, hi) in ranges {
                let size = (*hi as u64) - (*lo as u64) + 1;
                if k < size {
                    if let Some(c) = char::from_u32(*lo as u32 + k as u32) {
                        out.push(c);
                        return;
                    }
                    break;
                }
                k -= size;
            }
            if let Some((lo, _)) = ranges.first() {
                out.push(*lo);
            }
        }
        Node::Class {
            ranges,
            negated: true,
        } => {
            let allowed: Vec<char> = ('!'..='~')
                .filter(|c| !ranges.iter().any(|(lo, hi)| lo <= c && c <= hi))
                .collect();
            if !allowed.is_empty() {
                out.push(allowed[rng.below(allowed.len())]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, s: &str) -> bool {
        jsonschema::is_valid(
            &serde_json::json!({"type": "string", "pattern": pattern}),
            &serde_json::json!(s),
        )
    }

    #[test]
    fn generated_strings_match_their_pattern() {
        let patterns = [
            "^[a-z][a-z0-9-]*$",
            "^[a-z0-9][a-z0-9._-]*$",
            "^[a-z][a-z0-9_-]*(\\.[a-z][a-z0-9_-]*)*$",
            "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}$",
            "^\\s*[0-9]+\\s*(ms|s|µs|min)(\\s*[0-9]+\\s*(ms|s|m))*\\s*$",
            "^(?:ab|cd)+x?y{2,}z{1,3}[^a-z]\\d\\w.$",
            "v[0-9]+",
        ];
        for p in patterns {
            for seed in 0..200 {
                let s = generate(p, &mut SimRng::new(seed)).unwrap();
                assert!(matches(p, &s), "`{s}` does not match `{p}`");
            }
        }
    }

    #[test]
    fn unsupported_features_are_refused() {
        for p in ["(?=a)b", "(a)\\1", "[a-", "(ab"] {
            assert!(generate(p, &mut SimRng::new(1)).is_err(), "{p}");
        }
    }
}
