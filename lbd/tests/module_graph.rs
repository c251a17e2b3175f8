//! lbd's file-level import graph has no import loop spanning more than two files.
//!
//! Every `.rs` file under `lbd/src` is a node (except `src/bin/`, files named `tests.rs` and
//! anything under a `tests/` directory: test code may import freely). A file refers to another
//! when its code names a path into it: `crate::a::b::X` anywhere (in `use` lines, grouped
//! `use crate::{a, b::{c, d}}` forms, or inline as `crate::proxy::udp::serve(..)`), and
//! `super::..` / `self::..` paths resolved from the file's module. Each path goes to the longest
//! module prefix that is a file (`crate::cluster::agent::Cluster` → `src/cluster/agent.rs`).
//! Comments (doc comments included), string and char literals, and `#[cfg(test)] mod .. { .. }`
//! blocks are ignored; `mod child;` declarations are not references, and neither is a file's
//! reference to itself.
//!
//! The test fails when a strongly connected component of that graph holds more than two files,
//! and prints each such component with the edges inside it and the lines that make them, so
//! you can see which reference to cut. A loop between two files (a parent and its child
//! sharing types, say) is tolerated.
//!
//! Run it with `cargo test -p spanlb-lbd --test module_graph` (or
//! `cargo nextest run -p spanlb-lbd --test module_graph`); add `-- --nocapture` to see the
//! file and edge counts when it passes.
//!
//! The analysis is lexical, which is what a rule about files needs: no macro expansion, no
//! resolution of re-exports or glob imports; bare paths are followed only when they start with
//! a child module the file declares (`use child::X;`), and inline non-test `mod x { .. }`
//! blocks count as their file.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// Largest strongly connected component tolerated, in files.
const MAX_LOOP_FILES: usize = 2;

#[test]
fn lbd_has_no_import_loop_over_two_files() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = read_sources(&src);
    assert!(!files.is_empty(), "no source files under {}", src.display());
    let graph = Graph::build(&files);
    eprintln!(
        "module_graph: {} files, {} edges between files",
        graph.files.len(),
        graph.edges.len()
    );
    if let Some(report) = graph.loop_report(MAX_LOOP_FILES) {
        panic!("{report}");
    }
}

/// Every `.rs` file under `src`, as (path relative to `src` with `/` separators, text), sorted.
fn read_sources(src: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    walk(src, src, &mut out);
    out.sort();
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            walk(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root).expect("under src");
            let rel: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let text = fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            out.push((rel.join("/"), text));
        }
    }
}

/// The module path of a file given relative to `src` (`lib.rs` → `[]`, `a/mod.rs` → `[a]`,
/// `a/b.rs` → `[a, b]`), or `None` for a file the graph leaves out: binaries (`bin/`), files
/// named `tests.rs`, anything under a `tests/` directory, non-Rust files.
fn module_path(rel: &str) -> Option<Vec<String>> {
    let parts: Vec<&str> = rel.split('/').collect();
    let (file, dirs) = parts.split_last()?;
    let stem = file.strip_suffix(".rs")?;
    if dirs.first() == Some(&"bin") || dirs.contains(&"tests") || stem == "tests" {
        return None;
    }
    let mut module: Vec<String> = dirs.iter().map(|d| d.to_string()).collect();
    let is_root_file = dirs.is_empty() && stem == "lib";
    if stem != "mod" && !is_root_file {
        module.push(stem.to_string());
    }
    Some(module)
}

/// `src` with comments, string literal contents and char literals blanked out (replaced by
/// spaces, newlines kept so line numbers stay right). Handles nested block comments, escapes,
/// raw strings (`r#".."#`, `br".."`), and tells char literals from lifetimes.
fn strip(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let n = c.len();
    let at = |i: usize| c.get(i).copied();
    let is_ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let blank = |ch: char| if ch == '\n' { '\n' } else { ' ' };
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < n {
        let ch = c[i];
        let prev_ident = i > 0 && is_ident(c[i - 1]);
        if ch == '/' && at(i + 1) == Some('/') {
            while i < n && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
            continue;
        }
        if ch == '/' && at(i + 1) == Some('*') {
            let mut depth = 0usize;
            while i < n {
                if c[i] == '/' && at(i + 1) == Some('*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == Some('/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
            continue;
        }
        // Raw strings: r"..", r#".."#, br#".."#.
        if !prev_ident && (ch == 'r' || (ch == 'b' && at(i + 1) == Some('r'))) {
            let r = if ch == 'b' { i + 1 } else { i };
            let mut j = r + 1;
            while at(j) == Some('#') {
                j += 1;
            }
            if at(j) == Some('"') {
                let hashes = j - r - 1;
                out.extend(&c[i..=j]);
                i = j + 1;
                while i < n {
                    if c[i] == '"' && (1..=hashes).all(|k| at(i + k) == Some('#')) {
                        out.extend(&c[i..=i + hashes]);
                        i += hashes + 1;
                        break;
                    }
                    out.push(blank(c[i]));
                    i += 1;
                }
                continue;
            }
        }
        if ch == '"' {
            out.push('"');
            i += 1;
            while i < n {
                if c[i] == '\\' {
                    out.push(' ');
                    if let Some(e) = at(i + 1) {
                        out.push(blank(e));
                    }
                    i += 2;
                } else if c[i] == '"' {
                    out.push('"');
                    i += 1;
                    break;
                } else {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
            continue;
        }
        if ch == '\'' {
            // A char literal ('x', '\n', '\u{..}', b'"'), else a lifetime or label: keep it.
            let end = if at(i + 1) == Some('\\') {
                (i + 3..n.min(i + 16)).find(|&k| c[k] == '\'')
            } else if at(i + 1).is_some_and(|x| x != '\'') && at(i + 2) == Some('\'') {
                Some(i + 2)
            } else {
                None
            };
            if let Some(end) = end {
                out.push('\'');
                out.extend(std::iter::repeat_n(' ', end - i - 1));
                out.push('\'');
                i = end + 1;
                continue;
            }
        }
        out.push(ch);
        i += 1;
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    PathSep,
    Punct(char),
    /// Number literals and anything else that cannot be part of a path.
    Other,
}

/// A token and its 1-based line.
type Token = (Tok, usize);

/// Tokens of stripped source (see [`strip`]).
fn tokenize(s: &str) -> Vec<Token> {
    let c: Vec<char> = s.chars().collect();
    let is_ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            out.push((Tok::PathSep, line));
            i += 2;
        } else if ch.is_ascii_digit() {
            while i < c.len() && is_ident(c[i]) {
                i += 1;
            }
            out.push((Tok::Other, line));
        } else if is_ident(ch) {
            // A raw identifier r#name is the identifier name.
            if ch == 'r' && c.get(i + 1) == Some(&'#') && c.get(i + 2).is_some_and(|&x| is_ident(x))
            {
                i += 2;
            }
            let start = i;
            while i < c.len() && is_ident(c[i]) {
                i += 1;
            }
            out.push((Tok::Ident(c[start..i].iter().collect()), line));
        } else {
            out.push((Tok::Punct(ch), line));
            i += 1;
        }
    }
    out
}

fn is_punct(toks: &[Token], i: usize, p: char) -> bool {
    matches!(toks.get(i), Some((Tok::Punct(x), _)) if *x == p)
}

fn is_word(toks: &[Token], i: usize, w: &str) -> bool {
    matches!(toks.get(i), Some((Tok::Ident(x), _)) if x == w)
}

/// Index just past the group opened at `open` (`{`/`[`/`(`), matching nested groups of the same
/// kind; `toks.len()` when it never closes.
fn close_of(toks: &[Token], open: usize) -> usize {
    let (o, c) = match toks[open].0 {
        Tok::Punct('{') => ('{', '}'),
        Tok::Punct('[') => ('[', ']'),
        _ => ('(', ')'),
    };
    let mut depth = 0usize;
    for (k, (t, _)) in toks.iter().enumerate().skip(open) {
        match t {
            Tok::Punct(x) if *x == o => depth += 1,
            Tok::Punct(x) if *x == c => {
                depth -= 1;
                if depth == 0 {
                    return k + 1;
                }
            }
            _ => {}
        }
    }
    toks.len()
}

/// `toks` without `#[cfg(test)] mod name { .. }` blocks (further attributes and a `pub(..)`
/// between the attribute and `mod` allowed).
fn drop_test_modules(toks: &[Token]) -> Vec<Token> {
    const CFG_TEST: [&str; 7] = ["#", "[", "cfg", "(", "test", ")", "]"];
    let matches_at = |i: usize| {
        CFG_TEST
            .iter()
            .enumerate()
            .all(|(k, w)| match toks.get(i + k) {
                Some((Tok::Ident(x), _)) => x == w,
                Some((Tok::Punct(p), _)) => w.len() == 1 && w.starts_with(*p),
                _ => false,
            })
    };
    let mut out = Vec::with_capacity(toks.len());
    let mut i = 0;
    while i < toks.len() {
        if matches_at(i) {
            let mut j = i + CFG_TEST.len();
            while is_punct(toks, j, '#') && is_punct(toks, j + 1, '[') {
                j = close_of(toks, j + 1);
            }
            if is_word(toks, j, "pub") {
                j += 1;
                if is_punct(toks, j, '(') {
                    j = close_of(toks, j);
                }
            }
            if is_word(toks, j, "mod")
                && matches!(toks.get(j + 1), Some((Tok::Ident(_), _)))
                && is_punct(toks, j + 2, '{')
            {
                i = close_of(toks, j + 2);
                continue;
            }
        }
        out.push(toks[i].clone());
        i += 1;
    }
    out
}

/// A path as written (`crate`/`super`/`self` first), with the lines of its first and last tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RawPath {
    segments: Vec<String>,
    first_line: usize,
    last_line: usize,
}

/// The child modules a file declares (`mod x;`, `pub mod x;`, `pub(crate) mod x;`).
fn child_modules(toks: &[Token]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for i in 0..toks.len().saturating_sub(2) {
        if is_word(toks, i, "mod") && is_punct(toks, i + 2, ';') {
            if let Tok::Ident(w) = &toks[i + 1].0 {
                out.insert(w.clone());
            }
        }
    }
    out
}

/// Every path starting with `crate::`, `super::` or `self::` (also `$crate::`), or with the
/// name of a child module the file declares (`use senders::Outbox;` in a parent: read as
/// `self::senders::Outbox`), use-tree braces expanded: `crate::{a, b::{c, d}}` gives
/// `crate::a`, `crate::b::c`, `crate::b::d`.
fn raw_paths(toks: &[Token]) -> Vec<RawPath> {
    let children = child_modules(toks);
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let child = matches!(&toks[i].0, Tok::Ident(w) if children.contains(w))
            && !(i > 0 && is_word(toks, i - 1, "mod"));
        let root = child
            || matches!(&toks[i].0, Tok::Ident(w) if w == "crate" || w == "super" || w == "self");
        let after_sep = i > 0 && toks[i - 1].0 == Tok::PathSep;
        // `pub(in crate::a)` is a visibility, not a reference.
        let visibility = i > 1 && is_word(toks, i - 1, "in") && is_punct(toks, i - 2, '(');
        if root && !after_sep && !visibility && toks.get(i + 1).map(|t| &t.0) == Some(&Tok::PathSep)
        {
            let first_line = toks[i].1;
            let prefix = if child {
                vec!["self".to_string()]
            } else {
                Vec::new()
            };
            i = use_tree(toks, i, &prefix, first_line, &mut out);
        } else {
            i += 1;
        }
    }
    out
}

/// Parses the use tree (or plain path) at `i` under `prefix`, pushing its leaves onto `out`;
/// returns the index just past it.
fn use_tree(
    toks: &[Token],
    mut i: usize,
    prefix: &[String],
    first_line: usize,
    out: &mut Vec<RawPath>,
) -> usize {
    let mut segments = prefix.to_vec();
    let mut last_line = first_line;
    let mut glob = false;
    loop {
        match toks.get(i) {
            Some((Tok::Ident(w), line)) if w != "as" => {
                segments.push(w.clone());
                last_line = *line;
                i += 1;
                if toks.get(i).map(|t| &t.0) == Some(&Tok::PathSep) {
                    i += 1;
                    continue;
                }
                break;
            }
            Some((Tok::Punct('{'), _)) => {
                let end = close_of(toks, i) - 1;
                i += 1;
                while i < end {
                    if is_punct(toks, i, ',') {
                        i += 1;
                        continue;
                    }
                    let next = use_tree(toks, i, &segments, first_line, out);
                    i = if next > i { next } else { i + 1 };
                    if is_word(toks, i, "as") {
                        i += 2;
                    }
                }
                return end + 1;
            }
            Some((Tok::Punct('*'), line)) => {
                last_line = *line;
                glob = true;
                i += 1;
                break;
            }
            // `a::<T>` or a stray `::`: the path ends here.
            _ => break,
        }
    }
    if segments.len() > prefix.len() || glob {
        out.push(RawPath {
            segments,
            first_line,
            last_line,
        });
    }
    i
}

/// The absolute module path `segments` names when written in module `module`; `None` when
/// `super` climbs above the crate root.
fn absolute(module: &[String], segments: &[String]) -> Option<Vec<String>> {
    let (first, rest) = segments.split_first()?;
    let mut out = match first.as_str() {
        "crate" => Vec::new(),
        "self" => module.to_vec(),
        "super" => {
            let mut m = module.to_vec();
            m.pop()?;
            m
        }
        _ => return None,
    };
    for s in rest {
        match s.as_str() {
            "self" => {}
            "super" => {
                out.pop()?;
            }
            _ => out.push(s.clone()),
        }
    }
    Some(out)
}

/// Lines of one source file that refer to another file.
type Refs = BTreeSet<(usize, String)>;

struct Graph {
    /// Paths relative to `src`, in node order.
    files: Vec<String>,
    /// (from, to) → the referring lines of `from`.
    edges: BTreeMap<(usize, usize), Refs>,
}

impl Graph {
    /// The graph of `files` (path relative to `src`, text); files [`module_path`] leaves out are
    /// not nodes.
    fn build(files: &[(String, String)]) -> Graph {
        let nodes: Vec<(&str, Vec<String>, &str)> = files
            .iter()
            .filter_map(|(rel, text)| Some((rel.as_str(), module_path(rel)?, text.as_str())))
            .collect();
        let by_module: BTreeMap<&[String], usize> = nodes
            .iter()
            .enumerate()
            .map(|(k, (_, m, _))| (m.as_slice(), k))
            .collect();
        let mut edges: BTreeMap<(usize, usize), Refs> = BTreeMap::new();
        for (from, (_, module, text)) in nodes.iter().enumerate() {
            let lines: Vec<&str> = text.lines().collect();
            let line = |n: usize| lines.get(n - 1).map_or("", |l| l.trim());
            let toks = drop_test_modules(&tokenize(&strip(text)));
            for p in raw_paths(&toks) {
                let Some(abs) = absolute(module, &p.segments) else {
                    continue;
                };
                let to = (0..=abs.len())
                    .rev()
                    .find_map(|k| by_module.get(&abs[..k]).copied());
                let Some(to) = to else { continue };
                if to == from {
                    continue;
                }
                let mut snippet = line(p.first_line).to_string();
                if p.last_line != p.first_line {
                    snippet = format!("{snippet} … {}", line(p.last_line));
                }
                edges
                    .entry((from, to))
                    .or_default()
                    .insert((p.last_line, snippet));
            }
        }
        Graph {
            files: nodes.iter().map(|(rel, _, _)| rel.to_string()).collect(),
            edges,
        }
    }

    /// Strongly connected components (Tarjan), each sorted, in discovery order.
    fn components(&self) -> Vec<Vec<usize>> {
        let mut adj = vec![Vec::new(); self.files.len()];
        for &(a, b) in self.edges.keys() {
            adj[a].push(b);
        }
        let mut t = Tarjan {
            adj,
            index: vec![None; self.files.len()],
            low: vec![0; self.files.len()],
            on_stack: vec![false; self.files.len()],
            stack: Vec::new(),
            next: 0,
            out: Vec::new(),
        };
        for v in 0..self.files.len() {
            if t.index[v].is_none() {
                t.visit(v);
            }
        }
        t.out
    }

    /// A description of every component over `max` files with the edges inside it, or `None`
    /// when there is none.
    fn loop_report(&self, max: usize) -> Option<String> {
        let big: Vec<Vec<usize>> = self
            .components()
            .into_iter()
            .filter(|c| c.len() > max)
            .collect();
        if big.is_empty() {
            return None;
        }
        let mut r = format!(
            "{} import loop(s) spanning more than {max} files in lbd/src \
             (cut references until each loop has at most {max} files):\n",
            big.len()
        );
        for comp in &big {
            let names: Vec<&str> = comp.iter().map(|&k| self.files[k].as_str()).collect();
            r += &format!("\nloop over {} files: {}\n", comp.len(), names.join(", "));
            for ((a, b), refs) in &self.edges {
                if !comp.contains(a) || !comp.contains(b) {
                    continue;
                }
                r += &format!("  {} -> {}\n", self.files[*a], self.files[*b]);
                for (line, text) in refs {
                    r += &format!("      {}:{line}: {text}\n", self.files[*a]);
                }
            }
        }
        Some(r)
    }
}

struct Tarjan {
    adj: Vec<Vec<usize>>,
    index: Vec<Option<usize>>,
    low: Vec<usize>,
    on_stack: Vec<bool>,
    stack: Vec<usize>,
    next: usize,
    out: Vec<Vec<usize>>,
}

impl Tarjan {
    fn visit(&mut self, v: usize) {
        self.index[v] = Some(self.next);
        self.low[v] = self.next;
        self.next += 1;
        self.stack.push(v);
        self.on_stack[v] = true;
        for w in self.adj[v].clone() {
            match self.index[w] {
                None => {
                    self.visit(w);
                    self.low[v] = self.low[v].min(self.low[w]);
                }
                Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(self.low[v]) == self.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = self.stack.pop() {
                self.on_stack[w] = false;
                comp.push(w);
                if w == v {
                    break;
                }
            }
            comp.sort_unstable();
            self.out.push(comp);
        }
    }
}

/// The parser and graph on small in-memory inputs.
mod parser {
    use super::*;

    fn modules(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// Absolute paths named by `text` written in `module` (`a::b` form, `""` for the root).
    fn refs(module: &str, text: &str) -> Vec<String> {
        let module: Vec<String> = module
            .split("::")
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        let toks = drop_test_modules(&tokenize(&strip(text)));
        raw_paths(&toks)
            .iter()
            .filter_map(|p| absolute(&module, &p.segments))
            .map(|a| a.join("::"))
            .collect()
    }

    fn graph(files: &[(&str, &str)]) -> Graph {
        let files: Vec<(String, String)> = files
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        Graph::build(&files)
    }

    fn edge_names(g: &Graph) -> Vec<(String, String)> {
        g.edges
            .keys()
            .map(|&(a, b)| (g.files[a].clone(), g.files[b].clone()))
            .collect()
    }

    #[test]
    fn module_paths_of_files() {
        assert_eq!(module_path("lib.rs"), Some(vec![]));
        assert_eq!(module_path("a.rs"), Some(modules(&["a"])));
        assert_eq!(module_path("a/mod.rs"), Some(modules(&["a"])));
        assert_eq!(module_path("a/b.rs"), Some(modules(&["a", "b"])));
        assert_eq!(module_path("a/b/mod.rs"), Some(modules(&["a", "b"])));
        assert_eq!(module_path("bin/lbd.rs"), None);
        assert_eq!(module_path("a/tests.rs"), None);
        assert_eq!(module_path("a/tests/helpers.rs"), None);
        assert_eq!(module_path("a/notes.md"), None);
    }

    #[test]
    fn brace_groups_expand() {
        let got = refs(
            "",
            "use crate::{a, b::{c, d as dd}, e::*, f::{self, G}};\nuse crate::h::{\n    i::J,\n};",
        );
        assert_eq!(
            got,
            ["a", "b::c", "b::d", "e", "f", "f::G", "h::i::J"].map(String::from)
        );
    }

    #[test]
    fn inline_paths_count() {
        let got = refs(
            "daemon",
            "fn f() { let t = tokio::spawn(crate::proxy::udp::serve(me, k)); }\n\
             struct S { m: Vec<crate::mirror::proto::Record>, x: crate::plugins::Reg<T> }\n\
             fn g() -> crate::a::B::<u8> { crate::c::d::<u8>() }",
        );
        assert_eq!(
            got,
            [
                "proxy::udp::serve",
                "mirror::proto::Record",
                "plugins::Reg",
                "a::B",
                "c::d"
            ]
            .map(String::from)
        );
    }

    #[test]
    fn super_and_self_resolve_from_the_module() {
        let got = refs(
            "x::y",
            "use super::z::Thing;\nfn f() { super::super::w::f(); self::inner::g(); }\n\
             use super::{Claim, q::{self, R}};\npub(in crate::x) fn h() {}\npub(crate) fn k() {}",
        );
        assert_eq!(
            got,
            [
                "x::z::Thing",
                "w::f",
                "x::y::inner::g",
                "x::Claim",
                "x::q",
                "x::q::R"
            ]
            .map(String::from)
        );
        // A mod.rs file is its directory's module: super:: is the parent directory's.
        assert_eq!(
            refs("cluster::heartbeat", "use super::Claim;"),
            ["cluster::Claim"]
        );
        // Above the root: no reference.
        assert!(refs("", "use super::x;").is_empty());
    }

    #[test]
    fn comments_and_strings_are_stripped() {
        let text = r##"//! See [`crate::a::A`].
/// Calls [`crate::b::f`].
// crate::c::x
/* crate::d /* nested crate::e */ still crate::f */
fn f() {
    let s = "crate::g::h \" crate::i";
    let r = r#"crate::j "quoted" crate::k"#;
    let q = '"';
    let b = b'{';
    let e = '\'';
    let l: &'static str = "x";
    crate::real::y();
}
"##;
        assert_eq!(refs("", text), ["real::y"]);
        // Line numbers survive the stripping.
        let toks = tokenize(&strip(text));
        let paths = raw_paths(&toks);
        assert_eq!(paths.len(), 1);
        assert_eq!(paths[0].first_line, 12);
    }

    #[test]
    fn cfg_test_modules_are_skipped() {
        let text = "use crate::a::A;\n\
             #[cfg(test)]\nmod tests {\n    use super::*;\n    use crate::b::B;\n    \
             fn f() { if x { crate::c::g('}'); } }\n}\n\
             #[cfg(test)]\n#[allow(dead_code)]\npub(crate) mod helpers { use crate::h::H; }\n\
             #[cfg(test)]\nmod tests_file;\n\
             fn after() { crate::d::D::new(); }";
        assert_eq!(refs("m", text), ["a::A", "d::D::new"]);
    }

    #[test]
    fn mod_declarations_and_self_references_are_not_edges() {
        let g = graph(&[
            ("lib.rs", "pub mod a;\npub mod b;\npub const V: u8 = 1;"),
            (
                "a/mod.rs",
                "pub mod c;\nuse self::c::C;\nuse crate::a::X;\nfn f() { crate::V; }",
            ),
            ("a/c.rs", "pub struct C;"),
            ("b.rs", "use crate::a::c::C;\nuse crate::nope::Z;"),
            ("a/tests.rs", "use crate::b::B;"),
            ("bin/tool.rs", "use lbd::a::X;"),
        ]);
        assert_eq!(g.files, ["lib.rs", "a/mod.rs", "a/c.rs", "b.rs"]);
        assert_eq!(
            edge_names(&g),
            [
                ("a/mod.rs", "lib.rs"),
                ("a/mod.rs", "a/c.rs"),
                ("b.rs", "lib.rs"),
                ("b.rs", "a/c.rs")
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
    }

    #[test]
    fn longest_file_prefix_is_the_target() {
        let g = graph(&[
            ("lib.rs", ""),
            ("cluster/mod.rs", ""),
            ("cluster/agent.rs", ""),
            (
                "d.rs",
                "fn f(c: crate::cluster::agent::Cluster, h: crate::cluster::Heartbeat) {}",
            ),
        ]);
        assert_eq!(
            edge_names(&g),
            [("d.rs", "cluster/mod.rs"), ("d.rs", "cluster/agent.rs")]
                .map(|(a, b)| (a.to_string(), b.to_string()))
        );
    }

    #[test]
    fn three_file_loop_is_reported() {
        let g = graph(&[
            ("lib.rs", "pub mod a;\npub mod b;\npub mod c;\npub mod d;"),
            ("a.rs", "use crate::b::B;"),
            ("b.rs", "pub fn f() { crate::c::g(); }"),
            ("c.rs", "use crate::{a::A, d::D};"),
            ("d.rs", "use crate::a::A;"),
        ]);
        let comps: Vec<Vec<usize>> = g.components().into_iter().filter(|c| c.len() > 1).collect();
        assert_eq!(comps, [vec![1, 2, 3, 4]]);
        let report = g.loop_report(2).expect("a loop over 4 files");
        assert!(
            report.contains("loop over 4 files: a.rs, b.rs, c.rs, d.rs"),
            "{report}"
        );
        assert!(report.contains("  b.rs -> c.rs\n"), "{report}");
        assert!(
            report.contains("b.rs:1: pub fn f() { crate::c::g(); }"),
            "{report}"
        );
        assert!(
            report.contains("c.rs:1: use crate::{a::A, d::D};"),
            "{report}"
        );
        assert!(!report.contains("lib.rs"), "{report}");
        // A pure 3-cycle too.
        let g = graph(&[
            ("a.rs", "use crate::b::B;"),
            ("b.rs", "use crate::c::C;"),
            ("c.rs", "use super::a::A;"),
        ]);
        assert!(g.loop_report(2).is_some());
    }

    #[test]
    fn bare_paths_into_declared_children_count() {
        let g = graph(&[
            (
                "a/mod.rs",
                "mod b;\nmod c;\nuse b::B;\nfn f() { c::g(); other::h(); }",
            ),
            ("a/b.rs", "pub struct B;"),
            ("a/c.rs", "pub fn g() {}"),
        ]);
        assert_eq!(
            edge_names(&g),
            vec![
                ("a/mod.rs".to_string(), "a/b.rs".to_string()),
                ("a/mod.rs".to_string(), "a/c.rs".to_string())
            ]
        );
    }

    #[test]
    fn two_file_loop_is_accepted() {
        let g = graph(&[
            ("lib.rs", "pub mod cluster;"),
            (
                "cluster/mod.rs",
                "pub mod driver;\nuse self::driver::Driver;",
            ),
            ("cluster/driver.rs", "fn f(h: super::Heartbeat) {}"),
            ("other.rs", "use crate::cluster::driver::Driver;"),
        ]);
        assert_eq!(g.edges.len(), 3);
        assert!(g.components().iter().any(|c| c.len() == 2));
        assert_eq!(g.loop_report(2), None);
    }
}
