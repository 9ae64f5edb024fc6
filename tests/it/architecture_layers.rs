//! Import layering. The workspace's top-level modules (of every crate, read as one tree)
//! form layers, listed bottom first in
//! `docs/architecture.md` between `<!-- layers:begin -->` and `<!-- layers:end -->`, in a
//! fenced code block: one layer per line, its module names separated by spaces, `#` starts
//! a comment. A module may import only modules on lower lines; modules on one line are
//! peers and may not import each other; no files may import each other in a cycle.
//!
//! An import is a `crate::`, `self::` or `super::` path in code (`use`, `pub use` or
//! inline); comments, string literals and `#[cfg(test)]` items are skipped, as are the crate
//! roots `src/lib.rs`, `src/main.rs` and `src/bin/*.rs`. A path resolves to the file that defines the item,
//! following `pub use` re-exports (`crate::agents::Agent` is `src/agents/agent.rs`), so a
//! child importing through its parent's re-exports is not a cycle; `mod child;` is no import.
//!
//! To fix a violation, move what the lower module needs down into it (or into a lower
//! module both can use), or hand it in from above as a parameter or a trait; move a module
//! to another line of `docs/architecture.md` only if the layering itself is wrong, and add
//! every new top-level module there. A cycle between files is broken the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::{fs, path::Path};

type Files = BTreeMap<String, String>;
/// Per file, what its `pub use` lines bind: (name, absolute path).
type Reexports = BTreeMap<String, Vec<(String, Vec<String>)>>;

/// The layers, bottom first, from the marked block of `doc`.
fn parse_layers(doc: &str) -> Result<Vec<Vec<String>>, String> {
    let err = |m: &str| format!("docs/architecture.md: {m}");
    let (begin, end) = ("<!-- layers:begin -->", "<!-- layers:end -->");
    let block = doc
        .split_once(begin)
        .ok_or_else(|| err(&format!("no `{begin}` line")))?
        .1;
    let block = block
        .split_once(end)
        .ok_or_else(|| err(&format!("no `{end}` line")))?
        .0;
    let fence = |l: &&str| l.trim_start().starts_with("```");
    if block.lines().filter(fence).count() < 2 {
        return Err(err("the layer block has no fenced code block (```)"));
    }
    let (mut layers, mut seen) = (Vec::new(), BTreeSet::new());
    for line in block
        .lines()
        .skip_while(|l| !fence(l))
        .skip(1)
        .take_while(|l| !fence(l))
    {
        let names: Vec<String> = line
            .split('#')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .map(String::from)
            .collect();
        for n in &names {
            if !n.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                || !n.chars().all(is_ident)
            {
                return Err(err(&format!(
                    "layer line `{}`: `{n}` is not a module name",
                    line.trim()
                )));
            }
            if !seen.insert(n.clone()) {
                return Err(err(&format!("module `{n}` is listed twice")));
            }
        }
        layers.extend((!names.is_empty()).then_some(names));
    }
    if layers.is_empty() {
        return Err(err("the layer block lists no modules"));
    }
    Ok(layers)
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The tokens of `src` (identifiers, `::`, single marks), without comments, string and
/// char literals, and `#[cfg(test)]` items (up to their matching `}` or their `;`).
fn tokens(src: &str) -> Vec<String> {
    let c: Vec<char> = src.chars().collect();
    let at = |i: usize, s: &str| s.chars().zip(i..).all(|(ch, k)| c.get(k) == Some(&ch));
    let past = |i: usize, s: &str| {
        (i..c.len())
            .find(|&k| at(k, s))
            .map_or(c.len(), |k| k + s.len())
    };
    let (mut out, mut i) = (Vec::<String>::new(), 0);
    while i < c.len() {
        let w = c[i..].iter().take_while(|&&ch| is_ident(ch)).count();
        let h = c[i + w..].iter().take_while(|&&ch| ch == '#').count();
        let raw_string =
            matches!(c[i..i + w], ['r'] | ['b', 'r']) && c.get(i + w + h) == Some(&'"');
        i = if at(i, "//") {
            past(i, "\n")
        } else if at(i, "/*") {
            let (mut k, mut depth) = (i + 2, 1);
            while depth > 0 && k < c.len() {
                depth += i32::from(at(k, "/*")) - i32::from(at(k, "*/"));
                k += if at(k, "/*") || at(k, "*/") { 2 } else { 1 };
            }
            k
        } else if raw_string {
            past(i + w + h + 1, &format!("\"{}", "#".repeat(h)))
        } else if c[i] == '"' {
            let mut k = i + 1;
            while k < c.len() && c[k] != '"' {
                k += if c[k] == '\\' { 2 } else { 1 };
            }
            k + 1
        } else if at(i, "'\\") {
            past(i + 3, "'") // '\n', '\'', '\u{..}'
        } else if c[i] == '\'' && c.get(i + 2) == Some(&'\'') {
            i + 3 // 'x'; a lifetime ('a) is a token
        } else {
            let n = if w > 0 {
                w
            } else if at(i, "::") {
                2
            } else {
                1
            };
            if !c[i].is_whitespace() {
                out.push(c[i..i + n].iter().collect());
            }
            i + n
        };
    }
    let (mut kept, mut i, mut depth) = (Vec::new(), 0, 0);
    while i < out.len() {
        if out[i..]
            .iter()
            .take(7)
            .eq(["#", "[", "cfg", "(", "test", ")", "]"].iter())
        {
            i += 7;
            while i < out.len() {
                depth += i32::from(out[i] == "{") - i32::from(out[i] == "}");
                i += 1;
                if depth == 0 && (out[i - 1] == "}" || out[i - 1] == ";") {
                    break;
                }
            }
        } else {
            kept.push(std::mem::take(&mut out[i]));
            i += 1;
        }
    }
    kept
}

/// Parses the path tree at `t[i..]` (`a::b::{c, d::e as f, *}`) under `prefix`, pushing
/// each leaf path with the name it binds; returns the index after the tree.
fn tree(
    t: &[String],
    mut i: usize,
    prefix: &[String],
    out: &mut Vec<(Vec<String>, String)>,
) -> usize {
    let (mut path, start) = (prefix.to_vec(), i);
    while let Some(s) = t.get(i).map(String::as_str) {
        match s {
            "{" => {
                i += 1;
                while t.get(i).is_some_and(|s| s != "}") {
                    let next = tree(t, i, &path, out);
                    i = next + usize::from(next == i || t.get(next).is_some_and(|s| s == ","));
                }
                return i + 1;
            }
            "self" if !path.is_empty() => {}
            _ if s == "*" || s.starts_with(|c: char| c.is_alphabetic() || c == '_') => {
                path.push(s.into())
            }
            _ => break,
        }
        i += 1;
        if t.get(i).is_none_or(|s| s != "::") {
            break;
        }
        i += 1;
    }
    let alias = t.get(i).is_some_and(|s| s == "as");
    let name = if alias {
        t.get(i + 1).cloned()
    } else {
        path.last().cloned()
    };
    if i > start && !path.is_empty() {
        out.push((path, name.unwrap_or_default()));
    }
    i + if alias { 2 } else { 0 }
}

/// `path` (`crate::`, `self::`, `super::`, or relative as in `pub use child::Item`) made
/// absolute from the module `base`.
fn absolute(path: &[String], base: &[String]) -> Vec<String> {
    let mut out = if path[0] == "crate" {
        vec![]
    } else {
        base.to_vec()
    };
    for (k, s) in path.iter().enumerate() {
        match s.as_str() {
            "crate" | "self" if k == 0 => {}
            "super" if path[..k].iter().all(|p| p == "self" || p == "super") => {
                out.pop();
            }
            _ => out.push(s.clone()),
        }
    }
    out
}

/// The absolute crate paths a file of module `module` uses, and what its `pub use` binds.
#[allow(clippy::type_complexity)]
fn scan(src: &str, module: &[String]) -> (Vec<Vec<String>>, Vec<(String, Vec<String>)>) {
    let t = tokens(src);
    let (mut imports, mut reexports, mut inline, mut depth, mut i) = (vec![], vec![], vec![], 0, 0);
    let prefix = |s: &str| ["crate", "self", "super"].contains(&s);
    while i < t.len() {
        let pub_use = t[i] == "use" && i > 0 && (t[i - 1] == "pub" || t[i - 1] == ")");
        if pub_use || (prefix(&t[i]) && t.get(i + 1).is_some_and(|s| s == "::")) {
            // Inside `mod name { .. }`, paths are relative to that inline module.
            let base: Vec<String> = module
                .iter()
                .chain(inline.iter().map(|(m, _)| m))
                .cloned()
                .collect();
            let mut leaves = Vec::new();
            i = tree(&t, i + usize::from(pub_use), &[], &mut leaves);
            for (path, name) in leaves {
                let abs = absolute(&path, &base);
                if pub_use {
                    reexports.push((name, abs.clone()));
                }
                imports.extend(prefix(&path[0]).then_some(abs));
            }
            continue;
        }
        match t[i].as_str() {
            "{" => depth += 1,
            "}" => {
                depth -= 1;
                inline.retain(|&(_, d)| d < depth);
            }
            "mod" if t.get(i + 2).is_some_and(|s| s == "{") => {
                inline.push((t[i + 1].clone(), depth))
            }
            _ => {}
        }
        i += 1;
    }
    (imports, reexports)
}

/// `src/a/b.rs` -> `[a, b]`; `src/lib.rs` -> `[]`; `None` for `src/main.rs` (its own crate).
fn module_of(file: &str) -> Option<Vec<String>> {
    let rel = file.strip_prefix("src/")?.strip_suffix(".rs")?;
    let mut m: Vec<String> = rel.split('/').map(String::from).collect();
    if rel == "lib" || m.last().is_some_and(|s| s == "mod") {
        m.pop();
    }
    (rel != "main").then_some(m)
}

/// The file that defines `path`: the deepest module file on it, or where its re-export
/// there leads.
fn resolve(
    path: &[String],
    mods: &BTreeMap<Vec<String>, String>,
    re: &Reexports,
    depth: usize,
) -> Option<String> {
    let path: Vec<String> = path.iter().filter(|s| *s != "*").cloned().collect();
    let k = (0..=path.len())
        .rev()
        .find(|&k| mods.contains_key(&path[..k]))?;
    let file = &mods[&path[..k]];
    if k < path.len() && depth < 8 {
        let entries = re.get(file).into_iter().flatten();
        let named = entries
            .clone()
            .filter(|(n, _)| *n == path[k])
            .map(|(_, t)| [t, &path[k + 1..]].concat());
        let globs = entries
            .filter(|(n, _)| n == "*")
            .map(|(_, t)| [t, &path[k..]].concat());
        if let Some(f) = named
            .chain(globs)
            .find_map(|p| resolve(&p, mods, re, depth + 1))
        {
            return Some(f);
        }
    }
    Some(file.clone())
}

/// Every layering violation and file cycle in `files` (`src/...` path -> source).
fn check(files: &Files, layers: &[Vec<String>]) -> Vec<String> {
    let layer_of = |m: &str| {
        layers
            .iter()
            .position(|l| l.iter().any(|n| n == m))
            .map(|p| p + 1)
    };
    let top = |f: &str| module_of(f).and_then(|m| m.first().cloned());
    let mods: BTreeMap<Vec<String>, String> = files
        .keys()
        .filter_map(|f| Some((module_of(f)?, f.clone())))
        .collect();
    let scanned: BTreeMap<&String, _> = mods.iter().map(|(m, f)| (f, scan(&files[f], m))).collect();
    let re: Reexports = scanned
        .iter()
        .map(|(f, (_, r))| ((*f).clone(), r.clone()))
        .collect();
    let mut edges = BTreeSet::new();
    for (&from, (imports, _)) in scanned.iter().filter(|(f, _)| **f != "src/lib.rs") {
        for to in imports.iter().filter_map(|p| resolve(p, &mods, &re, 0)) {
            if to != *from && to != "src/lib.rs" {
                edges.insert((from.clone(), to));
            }
        }
    }
    let mut missing = BTreeMap::new();
    for f in mods.values() {
        if let Some(m) = top(f).filter(|m| layer_of(m).is_none()) {
            missing.entry(m).or_insert(f);
        }
    }
    let mut out: Vec<String> = missing
        .iter()
        .map(|(m, f)| format!("{f}: top-level module `{m}` is not in the layer list: add it to docs/architecture.md"))
        .collect();
    for (a, b) in &edges {
        let (Some(ma), Some(mb)) = (top(a), top(b)) else {
            continue;
        };
        let (Some(la), Some(lb)) = (layer_of(&ma), layer_of(&mb)) else {
            continue;
        };
        let why = if la == lb {
            "a peer on the same layer"
        } else {
            "a layer above it"
        };
        if ma != mb && lb >= la {
            out.push(format!(
                "{a} -> {b}: {ma} (layer {la}) imports {mb} (layer {lb}), {why}"
            ));
        }
    }
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in &edges {
        next.entry(a).or_default().push(b);
    }
    let (mut done, mut stack) = (BTreeSet::new(), Vec::new());
    for &n in next.keys() {
        cycles(n, &next, &mut done, &mut stack, &mut out);
    }
    out
}

/// Depth-first search from `n`, reporting each edge back into the current path as a cycle.
fn cycles<'a>(
    n: &'a str,
    next: &BTreeMap<&'a str, Vec<&'a str>>,
    done: &mut BTreeSet<&'a str>,
    stack: &mut Vec<&'a str>,
    out: &mut Vec<String>,
) {
    if let Some(p) = stack.iter().position(|&s| s == n) {
        out.push(format!("cycle: {} -> {n}", stack[p..].join(" -> ")));
        return;
    }
    if done.insert(n) {
        stack.push(n);
        for &m in next.get(n).into_iter().flatten() {
            cycles(m, next, done, stack, out);
        }
        stack.pop();
    }
}

fn read_tree(dir: &Path, rel: &str, files: &mut Files) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        let name = format!(
            "{rel}/{}",
            path.file_name().unwrap_or_default().to_string_lossy()
        );
        if path.is_dir() {
            read_tree(&path, &name, files);
        } else if name.ends_with(".rs") {
            files.insert(name, fs::read_to_string(&path).expect("source file"));
        }
    }
}

/// Where each crate's modules sit in the one tree of layers: its `lib.rs` is the module
/// file at that path and its other files are that module's children (`muster-sqlite`'s
/// `lib.rs` is `src/journal/sqlite.rs`). The core, the facade and the binary are roots.
const MOUNTS: [(&str, &str); 16] = [
    ("muster-core", ""),
    ("muster-sqlite", "journal/sqlite"),
    ("muster-command", "agents/command"),
    ("muster-llm", "agents/llm"),
    ("muster-mcp", "agents/mcp"),
    ("muster-a2a", "agents/a2a"),
    ("muster-sim", "agents/sim"),
    ("muster-workflow", "workflow"),
    ("muster-cast", "cast"),
    ("muster-cluster", "cluster"),
    ("muster-telemetry", "telemetry"),
    ("muster-scenario", "scenario"),
    ("muster-bench", "bench"),
    ("muster-serve", "serve"),
    ("muster", ""),
    ("muster-cli", ""),
];

/// `text` with every path into a workspace crate written as a `crate::` path of the one
/// tree: `muster_sqlite::X` is `crate::journal::sqlite::X`, a crate's own `crate::X` is
/// `crate::<its mount>::X`, and `muster_core::`/`muster::` (whose modules sit at the
/// root) are `crate::`.
fn as_one_tree(text: &str, own: &str) -> String {
    let mut out = text.to_string();
    let colons = |m: &str| m.replace('/', "::");
    let own_mount = MOUNTS
        .iter()
        .find(|(c, _)| *c == own)
        .map_or("", |(_, m)| m);
    if !own_mount.is_empty() {
        out = out.replace("crate::", &format!("CRATE::{}::", colons(own_mount)));
    }
    // Longest crate names first, so `muster_` alone is replaced last.
    let mut names: Vec<&(&str, &str)> = MOUNTS.iter().collect();
    names.sort_by_key(|(c, _)| std::cmp::Reverse(c.len()));
    for (c, m) in names {
        let ident = format!("{}::", c.replace('-', "_"));
        let to = if m.is_empty() {
            "CRATE::".to_string()
        } else {
            format!("CRATE::{}::", colons(m))
        };
        out = replace_ident_path(&out, &ident, &to);
    }
    out.replace("CRATE::", "crate::")
}

/// Replaces `from` (a `name::` path head) where it starts an identifier.
fn replace_ident_path(text: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(from) {
        let before = rest[..i].chars().next_back();
        out.push_str(&rest[..i]);
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            out.push_str(from);
        } else {
            out.push_str(to);
        }
        rest = &rest[i + from.len()..];
    }
    out.push_str(rest);
    out
}

/// The workspace's sources as one tree of layers: every crate's files at their mount
/// (see [`MOUNTS`]), with paths into other crates read as `crate::` paths of that tree.
/// Crate roots (the core's `lib.rs`, a binary's `main.rs` or `bin/*.rs`, and the whole of the `muster`
/// facade, which only re-exports) may import anything and are skipped.
fn workspace_tree(root: &Path) -> Files {
    let mut files = Files::new();
    for (krate, mount) in MOUNTS {
        let mut own = Files::new();
        read_tree(
            &root.join("crates").join(krate).join("src"),
            "src",
            &mut own,
        );
        for (name, text) in own {
            let name = match (mount, name.as_str()) {
                // The facade only re-exports: all of it is a crate root.
                _ if krate == "muster" => continue,
                ("", "src/lib.rs" | "src/main.rs") => continue,
                // Further binaries (`src/bin/*.rs`) are crate roots too.
                _ if name.starts_with("src/bin/") => continue,
                ("", _) => name,
                (m, "src/lib.rs") => format!("src/{m}.rs"),
                (m, n) => format!("src/{m}/{}", &n["src/".len()..]),
            };
            let text: String = text.lines().map(|l| as_one_tree(l, krate) + "\n").collect();
            files.entry(name).or_default().push_str(&text);
        }
    }
    files
}

/// The crates, bottom first, from the `crates:begin` block of `doc` (same format as the
/// layer block).
fn parse_crates(doc: &str) -> Vec<String> {
    let block = doc
        .split_once("<!-- crates:begin -->")
        .and_then(|(_, b)| b.split_once("<!-- crates:end -->"))
        .map(|(b, _)| b)
        .expect("docs/architecture.md: no `<!-- crates:begin -->` ... `<!-- crates:end -->` block");
    block
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty() && !l.starts_with("```"))
        .map(String::from)
        .collect()
}

/// The workspace crates each crate depends on (normal and build dependencies).
fn crate_deps(root: &Path, krate: &str, all: &[String]) -> Vec<String> {
    let manifest = fs::read_to_string(root.join("crates").join(krate).join("Cargo.toml"))
        .unwrap_or_else(|e| panic!("crates/{krate}/Cargo.toml: {e}"));
    let mut section = String::new();
    let mut deps = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.trim_matches(|c| c == '[' || c == ']').to_string();
            continue;
        }
        if section != "dependencies" && section != "build-dependencies" {
            continue;
        }
        let name = line.split(['=', '.', ' ']).next().unwrap_or("");
        if all.iter().any(|c| c == name) {
            deps.push(name.to_string());
        }
    }
    deps
}

#[test]
fn the_source_tree_has_no_upward_or_circular_imports() {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let doc = fs::read_to_string(root.join("docs/architecture.md")).expect("docs/architecture.md");
    let layers = parse_layers(&doc).unwrap_or_else(|e| panic!("{e}"));
    let found = check(&workspace_tree(root), &layers);
    let how =
        "the rule and how to fix a violation are at the top of tests/it/architecture_layers.rs";
    assert!(
        found.is_empty(),
        "{} import violation(s); {how}:\n{}",
        found.len(),
        found.join("\n")
    );
}

#[test]
fn no_crate_depends_on_a_crate_above_it() {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let doc = fs::read_to_string(root.join("docs/architecture.md")).expect("docs/architecture.md");
    let crates = parse_crates(&doc);
    let on_disk: BTreeSet<String> = fs::read_dir(root.join("crates"))
        .expect("crates/")
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        .collect();
    let listed: BTreeSet<String> = crates.iter().cloned().collect();
    assert_eq!(
        on_disk, listed,
        "docs/architecture.md's crate list must name every crate under crates/"
    );
    let mut out = Vec::new();
    for (i, krate) in crates.iter().enumerate() {
        for dep in crate_deps(root, krate, &crates) {
            let j = crates.iter().position(|c| *c == dep).unwrap_or(usize::MAX);
            if j >= i {
                out.push(format!("crates/{krate} depends on {dep}, which is not below it in docs/architecture.md's crate list"));
            }
        }
    }
    assert!(out.is_empty(), "{}", out.join("\n"));
}

/// Checks a synthetic tree: each file is a `//- path` line followed by its source.
fn run(layers: &str, tree: &str) -> Vec<String> {
    let doc = format!("<!-- layers:begin -->\n```\n{layers}\n```\n<!-- layers:end -->");
    let split = |f: &str| {
        f.split_once('\n')
            .map(|(p, s)| (p.trim().to_string(), s.to_string()))
    };
    check(
        &tree.split("//- ").skip(1).filter_map(split).collect(),
        &parse_layers(&doc).expect("layers"),
    )
}

#[test]
fn an_upward_import_names_both_files() {
    let tree = "//- src/util.rs\n use crate::agents::x::Agent;\n//- src/agents.rs\n pub mod x;\n//- src/agents/x.rs\n";
    let want =
        "src/util.rs -> src/agents/x.rs: util (layer 1) imports agents (layer 2), a layer above it";
    assert_eq!(run("util\nagents # top", tree), [want]);
}

#[test]
fn a_peer_import_and_a_missing_module_are_reported() {
    let tree = "//- src/a.rs\n fn f() { crate::b::g() }\n//- src/b.rs\n//- src/c.rs\n";
    let missing =
        "src/c.rs: top-level module `c` is not in the layer list: add it to docs/architecture.md";
    let peer = "src/a.rs -> src/b.rs: a (layer 1) imports b (layer 1), a peer on the same layer";
    assert_eq!(run("a b", tree), [missing, peer]);
}

#[test]
fn a_cycle_of_three_files_is_reported() {
    let tree = "//- src/m.rs\n mod x; mod y; mod z;
        //- src/m/x.rs\n use super::y::Y; pub struct X;
        //- src/m/y.rs\n use crate::m::z::Z; pub struct Y;
        //- src/m/z.rs\n fn f() -> self::super::x::X { todo!() }\n";
    assert_eq!(
        run("m", tree),
        ["cycle: src/m/x.rs -> src/m/y.rs -> src/m/z.rs -> src/m/x.rs"]
    );
}

#[test]
fn a_reexport_through_the_parent_root_is_not_a_cycle() {
    let root = "//- src/lib.rs\n pub use agents::Failure;
        //- src/agents.rs\n pub mod agent; pub mod instance; pub struct Own;
        pub use agent::{Agent as A2, Failure};\n pub use instance::Instance;
        //- src/agents/instance.rs\n use super::{A2, Own}; use crate::Failure; pub struct Instance;\n";
    let tree = format!(
        "{root}//- src/agents/agent.rs\n pub struct Failure;\n//- src/b.rs\n use crate::agents::Instance;\n"
    );
    assert!(run("agents\nb", &tree).is_empty());
    let tree = format!("{root}//- src/agents/agent.rs\n use crate::agents::instance::Instance;\n");
    assert_eq!(
        run("agents", &tree),
        ["cycle: src/agents/agent.rs -> src/agents/instance.rs -> src/agents/agent.rs"]
    );
}

#[test]
fn tests_comments_and_strings_are_not_imports() {
    let a = r##"//! see crate::b::X
        /* crate::b::X /* nested */ crate::b::X */ const S: &str = "crate::b::X \" crate::b::X";
        const R: &str = r#"crate::b::"X"#; const Q: char = '"'; const E: char = '\''; fn f<'a>(x: &'a str) {}
        #[cfg(test)]
        mod tests { use crate::b::X; fn g() { let _ = '{'; } }
        #[cfg(test)] use crate::b::Y;"##;
    let clean = format!("//- src/a.rs\n{a}\n//- src/b.rs\n use crate::a::f;");
    assert!(run("a\nb", &clean).is_empty());
    let upward = format!("//- src/a.rs\n{a}\n use crate::b::Z;\n//- src/b.rs\n");
    assert_eq!(run("a\nb", &upward).len(), 1);
}

#[test]
fn super_super_resolves_from_the_file_module_and_inline_modules() {
    // In `mod inner`, three `super`s reach `crate::a` (`src/a/c.rs`), not the root (`src/c.rs`).
    let tree = "//- src/a.rs\n mod c; mod x;\n//- src/a/x.rs\n mod y;\n//- src/a/c.rs\n//- src/b.rs\n//- src/c.rs
        //- src/a/x/y.rs\n use super::super::super::b::B; mod inner { use super::super::super::c::C; }\n";
    assert_eq!(
        run("a\nb\nc", tree),
        ["src/a/x/y.rs -> src/b.rs: a (layer 1) imports b (layer 2), a layer above it"]
    );
}

#[test]
fn a_missing_or_malformed_layer_block_is_refused() {
    let block = |body: &str| format!("<!-- layers:begin -->\n{body}\n<!-- layers:end -->");
    let refused = |doc: &str| parse_layers(doc).expect_err("refused");
    assert!(refused("# Architecture").contains("no `<!-- layers:begin -->` line"));
    assert!(refused(&block("util")).contains("no fenced code block"));
    assert!(refused(&block("```\n1. util\n```")).contains("`1.` is not a module name"));
    assert!(refused(&block("```\nutil\nutil\n```")).contains("listed twice"));
    assert!(
        refused("<!-- layers:begin -->\n```\nutil\n```").contains("no `<!-- layers:end -->` line")
    );
    let layers = parse_layers(&block("```text\nutil ids # leaves\n\nagents\n```")).expect("valid");
    assert_eq!(layers, [vec!["util", "ids"], vec!["agents"]]);
}
