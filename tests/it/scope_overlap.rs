//! Scope overlap is decided correctly: two globs overlap exactly when some path matches
//! both, checked against brute force over every path of a small tree, and the example
//! path given for an overlap matches both.

use muster::Pattern;
use proptest::prelude::*;

/// An obviously correct matcher (backtracking, exponential, fine for tiny inputs).
fn seg_match(p: &[char], s: &[char]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some('*') => (0..=s.len()).any(|k| seg_match(&p[1..], &s[k..])),
        Some('?') => !s.is_empty() && seg_match(&p[1..], &s[1..]),
        Some(c) => s.first() == Some(c) && seg_match(&p[1..], &s[1..]),
    }
}

fn path_match(p: &[&str], s: &[&str]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(&"**") => (0..=s.len()).any(|k| path_match(&p[1..], &s[k..])),
        Some(seg) => {
            !s.is_empty()
                && seg_match(
                    &seg.chars().collect::<Vec<_>>(),
                    &s[0].chars().collect::<Vec<_>>(),
                )
                && path_match(&p[1..], &s[1..])
        }
    }
}

fn brute_match(pattern: &str, path: &str) -> bool {
    let p: Vec<&str> = pattern.split('/').collect();
    let s: Vec<&str> = path.split('/').collect();
    path_match(&p, &s)
}

/// Every path of up to 4 segments, each segment 1 or 2 characters of `a` and `b`. That is
/// deep and wide enough to hold a witness for any two generated globs: a segment of at
/// most two tokens needs a name of at most two characters, and two globs of at most three
/// segments that both have `**` need at most four segments (one without `**` fixes the
/// depth at three or fewer).
fn tree() -> Vec<String> {
    let mut names = Vec::new();
    for len in 1..=2u32 {
        for bits in 0..(1u32 << len) {
            names.push(
                (0..len)
                    .map(|i| if bits >> i & 1 == 1 { 'b' } else { 'a' })
                    .collect::<String>(),
            );
        }
    }
    let mut paths: Vec<String> = names.clone();
    for depth in 2..=4 {
        let mut next = Vec::new();
        for p in paths.iter().filter(|p| p.matches('/').count() == depth - 2) {
            for n in &names {
                next.push(format!("{p}/{n}"));
            }
        }
        paths.extend(next);
    }
    paths
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just("**".to_string()),
        6 => proptest::collection::vec(prop_oneof![Just("a"), Just("b"), Just("*"), Just("?")], 1..=2)
            .prop_map(|t| t.concat()),
    ]
}

fn glob() -> impl Strategy<Value = String> {
    proptest::collection::vec(segment(), 1..=3).prop_map(|s| s.join("/"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn two_globs_overlap_exactly_when_a_path_of_the_tree_matches_both(a in glob(), b in glob()) {
        let (pa, pb) = (Pattern::parse(&a).unwrap(), Pattern::parse(&b).unwrap());
        let brute = tree().iter().any(|p| brute_match(&a, p) && brute_match(&b, p));
        prop_assert_eq!(pa.overlaps(&pb), brute, "{} vs {}", a, b);
        prop_assert_eq!(pb.overlaps(&pa), brute, "{} vs {} (swapped)", b, a);
        if let Some(example) = pa.example(&pb) {
            prop_assert!(brute_match(&a, &example) && brute_match(&b, &example),
                "example {} does not match both {} and {}", example, a, b);
        }
    }

    #[test]
    fn a_glob_matches_exactly_the_paths_brute_force_matches(a in glob()) {
        let pa = Pattern::parse(&a).unwrap();
        for path in tree() {
            prop_assert_eq!(pa.matches(&path), brute_match(&a, &path), "{} on {}", a, path);
        }
    }
}
