//! The crates' modules form layers: each module uses only modules below it, so
//! each can be read (and changed) knowing only what is under it. This test reads
//! the sources of the webhook crate, the policy SDK and the contract, finds every
//! `crate::<module>` a top-level module mentions (code and doc links alike: a doc
//! that links upwards is a dependency of the reader), and fails on a cycle,
//! naming it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Top-level modules of the crate rooted at `src`: `foo.rs` (with `foo/`) per module.
fn modules(src: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut modules = BTreeMap::new();
    for entry in fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".rs"))
        else {
            continue;
        };
        if name == "lib" || name == "main" {
            continue;
        }
        let mut files = vec![path.clone()];
        let dir = src.join(name);
        if dir.is_dir() {
            collect_rs(&dir, &mut files);
        }
        modules.insert(name.to_string(), files);
    }
    modules
}

fn collect_rs(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_rs(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The first path segments after each `crate::` in `text`, including each item of
/// a `crate::{a, b::c}` group (top level of the group only).
fn crate_references(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        // `stsguard_webhook::crate::` does not exist; `$crate::` is a macro's own crate.
        if text[..at].ends_with('$') {
            continue;
        }
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Items at depth 0 of the group: `a`, `b` in `{a::{x, y}, b}`.
            let mut depth = 0;
            let mut item = String::new();
            let mut at_item_start = true;
            let mut flush = |item: &mut String| {
                if !item.is_empty() {
                    found.insert(std::mem::take(item));
                }
            };
            for c in group.chars() {
                match c {
                    '}' if depth == 0 => break,
                    '{' => {
                        flush(&mut item);
                        at_item_start = false;
                        depth += 1;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        flush(&mut item);
                        at_item_start = true;
                    }
                    c if depth == 0 && at_item_start && (c.is_alphanumeric() || c == '_') => {
                        item.push(c)
                    }
                    _ if !item.is_empty() => {
                        flush(&mut item);
                        at_item_start = false;
                    }
                    _ => {}
                }
            }
            flush(&mut item);
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.insert(name);
        }
    }
    found
}

/// Module → the crate's other top-level modules it mentions.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules(src);
    modules
        .iter()
        .map(|(name, files)| {
            let uses = files
                .iter()
                .flat_map(|f| crate_references(&fs::read_to_string(f).unwrap()))
                .filter(|used| used != name && modules.contains_key(used))
                .collect();
            (name.clone(), uses)
        })
        .collect()
}

/// A cycle, as the modules on it, if the graph has one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

fn assert_layered(crate_src: &str) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(crate_src);
    let graph = graph(&src);
    assert!(graph.len() > 1, "no modules found in {}", src.display());
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "modules of {} use each other: {} (each module may use only the modules \
             below it; move what both need into a lower module)",
            src.display(),
            cycle.join(" -> ")
        );
    }
}

#[test]
fn webhook_modules_form_layers() {
    assert_layered("src");
}

#[test]
fn sdk_modules_form_layers() {
    assert_layered("../policies/sdk/src");
}

#[test]
fn contract_modules_form_layers() {
    assert_layered("../policies/contract/src");
}

#[test]
fn references_are_read_from_paths_groups_and_doc_links() {
    let text = "use crate::a::{x, y};\nuse crate::{b, c::{d, e}, f};\n/// [`g`](crate::g)\n\
                fn h() { crate::i::j(); $crate::k::l }";
    let found: Vec<String> = crate_references(text).into_iter().collect();
    assert_eq!(found, ["a", "b", "c", "f", "g", "i"]);
}

#[test]
fn a_cycle_is_found_and_named() {
    let edges = |pairs: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in pairs {
            g.entry(a.to_string()).or_default().insert(b.to_string());
            g.entry(b.to_string()).or_default();
        }
        g
    };
    assert_eq!(
        find_cycle(&edges(&[("a", "b"), ("b", "c"), ("a", "c")])),
        None
    );
    assert_eq!(
        find_cycle(&edges(&[("a", "b"), ("b", "c"), ("c", "a")])),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}
