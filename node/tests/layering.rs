//! The layering of the node's top-level modules (see the crate docs in `src/lib.rs`): no module
//! imports, directly or through others, a module that imports it.
//!
//! The test reads `src/`: each top-level module declared in `lib.rs` is its file `src/<m>.rs`
//! and the files under `src/<m>/`. A path `crate::<other>::...` (also inside `use crate::{...}`)
//! outside comments and outside test code (`#[cfg(test)]` items and the files of `#[cfg(test)]`
//! modules) is an edge `<m> -> <other>`. One kind of path is left out, in the modules of
//! [`NODE_HANDLE_USERS`] only: the node handle, `crate::node::Node`, which the request handlers
//! (`server`, `ws`, `matrix`, `crossdomain`'s challenge endpoint) receive as their state while
//! `node` builds them, and which `stubhost` is given once the node is built (its Matrix side
//! calls the Matrix router; its feeds follow the node's stream); anything else they take from
//! `node` counts, and so does the handle in any other module.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The modules that may hold the node handle `crate::node::Node` (see the module docs).
const NODE_HANDLE_USERS: &[&str] = &["server", "ws", "matrix", "crossdomain", "stubhost"];

/// An edge and one file that makes it.
type Graph = BTreeMap<String, BTreeMap<String, String>>;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level modules declared in `lib.rs`, each under its own name and under the names
/// `lib.rs` re-exports from it (`pub use node::{Node, RunningNode};`).
fn modules(src: &Path) -> BTreeMap<String, String> {
    let lib = fs::read_to_string(src.join("lib.rs")).expect("read src/lib.rs");
    let mut names = BTreeMap::new();
    for line in lib.lines().map(str::trim) {
        if let Some(m) = line
            .strip_prefix("pub mod ")
            .or_else(|| line.strip_prefix("mod "))
            .and_then(|l| l.strip_suffix(';'))
        {
            names.insert(m.to_owned(), m.to_owned());
        } else if let Some((m, items)) = line
            .strip_prefix("pub use ")
            .and_then(|l| l.strip_suffix(';'))
            .and_then(|l| l.split_once("::"))
        {
            let items = items.trim_start_matches('{').trim_end_matches('}');
            for item in items.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                names.insert(item.to_owned(), m.to_owned());
            }
        }
    }
    names
}

/// The non-test files of module `m`, relative to `src`.
fn files(src: &Path, m: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let file = src.join(format!("{m}.rs"));
    if file.is_file() {
        out.push(file);
    }
    let dir = src.join(m);
    if dir.is_dir() {
        walk(&dir, &mut out);
    }
    let tests: BTreeSet<PathBuf> = out.iter().flat_map(|f| test_modules(f)).collect();
    out.retain(|f| !tests.contains(f));
    out.sort();
    out
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read a module directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The files of the `#[cfg(test)] mod x;` declarations in `file`.
fn test_modules(file: &Path) -> Vec<PathBuf> {
    let text = fs::read_to_string(file).expect("read a source file");
    let dir = match file.file_name().and_then(|n| n.to_str()) {
        Some("mod.rs") => file.parent().map(Path::to_path_buf),
        _ => file
            .parent()
            .map(|p| p.join(file.file_stem().unwrap_or_default())),
    }
    .unwrap_or_default();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    lines
        .windows(2)
        .filter(|w| w[0] == "#[cfg(test)]")
        .filter_map(|w| {
            let decl = ["pub(crate) ", "pub "]
                .iter()
                .find_map(|p| w[1].strip_prefix(p))
                .unwrap_or(w[1]);
            decl.strip_prefix("mod ")?.strip_suffix(';')
        })
        .flat_map(|name| {
            [
                dir.join(format!("{name}.rs")),
                dir.join(name).join("mod.rs"),
            ]
        })
        .collect()
}

/// `text` without comments and without the items under `#[cfg(test)]`.
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            continue;
        }
        if trimmed == "#[cfg(test)]" {
            skip_item(&mut lines);
            continue;
        }
        out.push_str(line.split(" // ").next().unwrap_or_default());
        out.push('\n');
    }
    out
}

/// Skips one item: up to its `;` or the `}` that closes its first `{`.
fn skip_item<'a>(lines: &mut impl Iterator<Item = &'a str>) {
    let mut depth = 0i32;
    let mut opened = false;
    for line in lines {
        for c in line.chars() {
            match c {
                '{' => {
                    depth += 1;
                    opened = true;
                }
                '}' => depth -= 1,
                _ => {}
            }
        }
        if (opened && depth <= 0) || (!opened && line.trim_end().ends_with(';')) {
            return;
        }
    }
}

/// The top-level modules `code` names through `crate::` (the node handle not counted when
/// `handle_allowed`).
fn targets(
    code: &str,
    modules: &BTreeMap<String, String>,
    handle_allowed: bool,
) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            found.extend(group.split(',').map(|p| ident(p.trim())));
        } else if !(handle_allowed && is_node_handle(rest)) {
            found.insert(ident(rest));
        }
    }
    found
        .iter()
        .filter_map(|name| modules.get(name).cloned())
        .collect()
}

/// Whether a path after `crate::` is the node handle `node::Node` itself.
fn is_node_handle(rest: &str) -> bool {
    rest.strip_prefix("node::Node")
        .is_some_and(|after| !after.starts_with(|c: char| c.is_alphanumeric() || c == '_'))
}

fn graph(src: &Path) -> Graph {
    let modules = modules(src);
    let mut graph = Graph::new();
    for m in modules.values().collect::<BTreeSet<_>>() {
        let edges = graph.entry(m.clone()).or_default();
        for file in files(src, m) {
            let text = fs::read_to_string(&file).expect("read a source file");
            let shown = file
                .strip_prefix(src)
                .unwrap_or(&file)
                .display()
                .to_string();
            let allowed = NODE_HANDLE_USERS.contains(&m.as_str());
            for target in targets(&code(&text), &modules, allowed) {
                if target != *m {
                    edges.entry(target).or_insert_with(|| shown.clone());
                }
            }
        }
    }
    graph
}

/// A cycle of `graph`, as its modules in order (the first one repeated at the end).
fn cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        m: &str,
        graph: &Graph,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(m.to_owned(), Mark::Open);
        path.push(m.to_owned());
        for next in graph.get(m).into_iter().flat_map(BTreeMap::keys) {
            match marks.get(next).copied().unwrap_or(Mark::New) {
                Mark::Open => {
                    let start = path.iter().position(|p| p == next).unwrap_or(0);
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(cycle) = visit(next, graph, marks, path) {
                        return Some(cycle);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks.insert(m.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for m in graph.keys() {
        if marks.get(m).copied().unwrap_or(Mark::New) == Mark::New
            && let Some(cycle) = visit(m, graph, &mut marks, &mut Vec::new())
        {
            return Some(cycle);
        }
    }
    None
}

fn show(graph: &Graph, cycle: &[String]) -> String {
    cycle
        .windows(2)
        .map(|w| format!("  {} -> {} ({})", w[0], w[1], graph[&w[0]][&w[1]]))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn top_level_modules_import_each_other_without_cycles() {
    let src = src();
    let graph = graph(&src);
    assert!(
        graph.len() > 10,
        "found only {:?} in src/lib.rs",
        graph.keys()
    );
    if let Some(cycle) = cycle(&graph) {
        panic!(
            "an import cycle between top-level modules (a lower layer knows a higher one):\n{}",
            show(&graph, &cycle)
        );
    }
}

/// The modules in the order of the numbered list under `# Layers` in the docs of `lib.rs`.
fn documented_order(src: &Path, graph: &Graph) -> Vec<String> {
    let lib = fs::read_to_string(src.join("lib.rs")).expect("read src/lib.rs");
    let mut order = Vec::new();
    let mut in_list = false;
    for line in lib.lines() {
        let Some(doc) = line.strip_prefix("//!") else {
            break;
        };
        let item = doc.trim_start();
        let numbered = item
            .split_once(". ")
            .is_some_and(|(n, _)| n.parse::<u32>().is_ok());
        if numbered {
            in_list = true;
        } else if in_list && (item.is_empty() || !doc.starts_with("    ")) {
            break;
        }
        if in_list {
            for name in item.split('`').skip(1).step_by(2) {
                if graph.contains_key(name) && !order.iter().any(|o| o == name) {
                    order.push(name.to_owned());
                }
            }
        }
    }
    order
}

#[test]
fn the_documented_layer_order_holds() {
    let src = src();
    let graph = graph(&src);
    let order = documented_order(&src, &graph);
    let missing: Vec<&String> = graph.keys().filter(|m| !order.contains(m)).collect();
    assert!(
        missing.is_empty(),
        "not in the lib.rs layer list: {missing:?}"
    );
    let at = |m: &str| order.iter().position(|o| o == m).unwrap_or(usize::MAX);
    let upward: Vec<String> = graph
        .iter()
        .flat_map(|(m, edges)| edges.iter().map(move |(t, file)| (m, t, file)))
        .filter(|(m, t, _)| at(t) > at(m))
        .map(|(m, t, file)| format!("{m} -> {t} ({file})"))
        .collect();
    assert!(
        upward.is_empty(),
        "imports of modules listed after the importer in lib.rs:\n  {}",
        upward.join("\n  ")
    );
}

#[test]
fn the_reader_sees_imports_and_skips_comments_and_tests() {
    let modules: BTreeMap<String, String> = ["bus", "store", "rooms", "node", "config", "Config"]
        .map(|m| (m.to_owned(), m.to_lowercase()))
        .into();
    let text = "use crate::store::StoreOp;\n\
                use crate::{Config, rooms::Pdu, sync::lock};\n\
                // crate::bus::Bus in a comment\n\
                fn f(n: crate::node::Node, e: crate::node::NodeError) {}\n\
                #[cfg(test)]\n\
                mod tests {\n    use crate::bus::Bus;\n    fn g() { if true { } }\n}\n";
    let found = targets(&code(text), &modules, true);
    let expected: BTreeSet<String> = ["config", "node", "rooms", "store"]
        .map(String::from)
        .into();
    assert_eq!(found, expected);
    assert!(targets("x: crate::node::Node,", &modules, true).is_empty());
    // In a module not allowed the handle, it is an edge to `node` like any other path.
    let outside: BTreeSet<String> = ["node"].map(String::from).into();
    assert_eq!(targets("x: crate::node::Node,", &modules, false), outside);
}
