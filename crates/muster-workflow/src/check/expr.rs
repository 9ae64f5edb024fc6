//! Reading CEL expressions from their source text for `muster check`: the member
//! selections they make and the keys of a map literal. String literals are skipped with
//! the conditions module's scanner, so a literal is never read as code.

use std::collections::BTreeSet;

use muster_core::conditions::string_literal_at;

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Every member-selection chain rooted at an identifier (`steps.test.output.failed` →
/// `["steps", "test", "output", "failed"]`), outside string literals. A chain that ends in
/// a method call (`x.y.size()`) loses the method name.
pub(super) fn member_chains(source: &str) -> Vec<Vec<String>> {
    let b = source.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut prev: u8 = b' ';
    while i < b.len() {
        let c = b[i];
        if let Some(literal) = string_literal_at(source, i) {
            i = literal.end;
            prev = b'"';
            continue;
        }
        if is_ident_start(c) && !is_ident(prev) && prev != b'.' {
            let mut chain = Vec::new();
            let mut j = i;
            loop {
                let s = j;
                while j < b.len() && is_ident(b[j]) {
                    j += 1;
                }
                chain.push(source[s..j].to_string());
                if j + 1 < b.len() && b[j] == b'.' && is_ident_start(b[j + 1]) {
                    j += 1;
                } else {
                    break;
                }
            }
            let mut k = j;
            while k < b.len() && b[k].is_ascii_whitespace() {
                k += 1;
            }
            if k < b.len() && b[k] == b'(' {
                chain.pop();
            }
            if !chain.is_empty() {
                out.push(chain);
            }
            prev = b[j - 1];
            i = j;
            continue;
        }
        if !c.is_ascii_whitespace() {
            prev = c;
        }
        i += 1;
    }
    out
}

/// The top-level keys of an expression that is a map literal with string keys
/// (`{'spec': run.input.spec, 'round': 1}`); `None` for any other expression.
pub(super) fn map_literal_keys(source: &str) -> Option<BTreeSet<String>> {
    let src = source.trim();
    let b = src.as_bytes();
    if b.first() != Some(&b'{') || b.last() != Some(&b'}') {
        return None;
    }
    let mut keys = BTreeSet::new();
    let mut depth = 0usize;
    let mut expect_key = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if let Some(literal) = string_literal_at(src, i) {
            if depth == 1 && expect_key {
                if literal.bytes {
                    return None; // a bytes key: not a field name
                }
                keys.insert(src.get(literal.contents)?.to_string());
                expect_key = false;
            }
            i = literal.end;
            continue;
        }
        match c {
            b'{' | b'[' | b'(' => {
                depth += 1;
                if depth == 1 {
                    expect_key = true;
                }
            }
            b'}' | b']' | b')' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 && i + 1 != b.len() {
                    return None; // `{...} + x`: not one literal
                }
            }
            b',' if depth == 1 => expect_key = true,
            c if c.is_ascii_whitespace() => {}
            _ if depth == 1 && expect_key => return None, // a computed key
            _ => {}
        }
        i += 1;
    }
    Some(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_skip_strings_and_method_names() {
        let c = member_chains(
            "has(steps.test) ? steps.test.output.failures.size() : size(run.input.spec) + 'steps.x.y'",
        );
        let c: Vec<String> = c.iter().map(|v| v.join(".")).collect();
        assert_eq!(
            c,
            vec!["steps.test", "steps.test.output.failures", "run.input.spec"]
        );
    }

    /// In a raw string a backslash does not escape the quote: the old scanner (escapes
    /// everywhere, no prefixes) read `r'C:\'` as a string running to the end of the
    /// expression, so it missed `steps.build.output.size` and took the prefix `r` for a
    /// variable.
    #[test]
    fn chains_after_a_raw_string_with_a_trailing_backslash_are_read() {
        let c = member_chains(r"steps.build.output.dir == r'C:\' && steps.build.output.size > 0");
        let c: Vec<String> = c.iter().map(|v| v.join(".")).collect();
        assert_eq!(c, vec!["steps.build.output.dir", "steps.build.output.size"]);
        let k = map_literal_keys(r"{r'dir': r'C:\', 'size': steps.build.output.size}").unwrap();
        assert_eq!(k.into_iter().collect::<Vec<_>>(), vec!["dir", "size"]);
        assert!(map_literal_keys("{b'k': 1}").is_none());
    }

    #[test]
    fn map_literal_keys_are_the_top_level_ones() {
        let k =
            map_literal_keys("{'spec': run.input.spec, 'f': {'inner': 1}, \"w\": [1, 2]}").unwrap();
        assert_eq!(k.into_iter().collect::<Vec<_>>(), vec!["f", "spec", "w"]);
        assert!(map_literal_keys("{'a': 1} + x").is_none());
        assert!(map_literal_keys("run.input").is_none());
        assert!(map_literal_keys("{k: 1}").is_none());
    }
}
