//! The modules of `rthreads/src` form no import cycle: dependencies point one way, from the API
//! (threads, synchronisation, placement, output, launch) down to the runtime and its leaves (see
//! docs/architecture.md, "Layers"). This test reads the sources and fails naming the cycle.

// Tests print as they like: the rule against std's print macros is the runtime's.
#![allow(clippy::disallowed_macros)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level module a source file belongs to (`runtime/service.rs` belongs to `runtime`).
fn module_of(rel: &Path) -> String {
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
    first.trim_end_matches(".rs").to_owned()
}

/// The top-level modules `src` names with `crate::NAME`, comments and unit tests aside.
fn uses(src: &str) -> BTreeSet<String> {
    let code = src.split("#[cfg(test)]\nmod tests").next().unwrap_or(src);
    let mut out = BTreeSet::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or("");
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                out.insert(name);
            } else if let Some(group) = rest.strip_prefix('{') {
                // `use crate::{a, b::c}`.
                let group = group.split('}').next().unwrap_or("");
                out.extend(group.split(',').map(|p| p.trim().split("::").next().unwrap_or("").to_owned()));
            }
        }
    }
    out.retain(|n| !n.is_empty());
    out
}

fn collect(dir: &Path, root: &Path, graph: &mut BTreeMap<String, BTreeSet<String>>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, root, graph);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let module = module_of(path.strip_prefix(root).unwrap());
            let deps = uses(&std::fs::read_to_string(&path).unwrap());
            graph.entry(module).or_default().extend(deps);
        }
    }
}

/// A cycle of the graph, if it has one (depth-first search).
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == n) {
            let mut ring = path[at..].to_vec();
            ring.push(n.to_owned());
            return Some(ring);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_owned());
        for d in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_modules_of_rthreads_form_no_import_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = BTreeMap::new();
    collect(&root, &root, &mut graph);
    // The crate root re-exports everything; it is above every module by construction.
    graph.remove("lib");
    let names: BTreeSet<String> = graph.keys().cloned().collect();
    for (m, deps) in graph.iter_mut() {
        deps.retain(|d| d != m && names.contains(d));
    }
    for (m, deps) in &graph {
        eprintln!("{m} -> {deps:?}");
    }
    assert!(graph.contains_key("runtime") && graph.contains_key("thread"), "modules not found: {graph:?}");
    if let Some(ring) = cycle(&graph) {
        panic!("the modules of rthreads/src import each other in a cycle: {}", ring.join(" -> "));
    }
    // The runtime stays below what registers with it.
    for upper in ["thread", "sync", "placement", "output", "launch", "stats", "consistency"] {
        assert!(
            !graph["runtime"].contains(upper),
            "the runtime uses `{upper}`, which must register with it instead"
        );
    }
}

#[test]
fn a_planted_cycle_is_found() {
    let mut g = BTreeMap::new();
    g.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    g.insert("b".to_owned(), BTreeSet::from(["c".to_owned()]));
    g.insert("c".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert_eq!(cycle(&g).unwrap().len(), 4);
    g.get_mut("c").unwrap().clear();
    assert!(cycle(&g).is_none());
    assert_eq!(
        uses("use crate::{alloc::X, log};\nlet x = crate::runtime::get(); // crate::nothing"),
        BTreeSet::from(["alloc".to_owned(), "log".to_owned(), "runtime".to_owned()])
    );
}
