//! The house keeps its floors: the `use crate::…` edges between the app's top-level modules,
//! and between the modules inside each, form no circle; a module reaches only its own floor
//! or those below (DESIGN.md's layout); and no crate of `crates/` depends on the app.
//!
//! It reads the sources as text, as `../shared/tools/modcycles.py` does, so a new module or a
//! new edge is judged without anyone listing it: a top-level module missing from `FLOORS`
//! fails the test until it is given a floor. Unit-test modules (`#[cfg(test)] mod tests`)
//! may reach anywhere and are not counted.

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module's floor: a module may use modules on its own floor or below, as
/// long as that makes no circle.
const FLOORS: &[(&str, u8)] = &[
    ("model", 1),
    ("host", 2),
    ("containers", 2),
    ("optimizer", 3),
    ("eliminator", 3),
    ("coordinator", 3),
    ("engine", 4),
    ("tui", 5),
    ("api", 5),
    ("metrics", 5),
    ("report", 5),
    ("alerts", 5),
    ("config", 6),
    ("cli", 6),
];

type Edges = BTreeMap<String, BTreeSet<String>>;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `path` (or `path` itself), sorted.
fn rust_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).unwrap() {
        let entry = entry.unwrap().path();
        if entry.is_dir() {
            files.extend(rust_files(&entry));
        } else if entry.extension().is_some_and(|e| e == "rs") {
            files.push(entry);
        }
    }
    files.sort();
    files
}

/// The text of a file without its unit-test module.
fn without_tests(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// The names that follow `prefix` in `text`: `prefix name` and every first name of a
/// `prefix{a, b::c}` group.
fn names_after(text: &str, prefix: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices(prefix) {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &text[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            names.extend(group.split(',').map(|part| ident(part.trim())));
        } else {
            names.insert(ident(rest));
        }
    }
    names.retain(|n| !n.is_empty());
    names
}

/// The top-level modules of the app (directories and files of `src/` but lib.rs and main.rs).
fn top_level_modules() -> Vec<String> {
    let mut modules: Vec<String> = std::fs::read_dir(src())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_string();
            match (p.is_dir(), name.strip_suffix(".rs")) {
                (true, _) => Some(name),
                (false, Some(stem)) if stem != "lib" && stem != "main" => Some(stem.to_string()),
                _ => None,
            }
        })
        .collect();
    modules.sort();
    modules
}

fn module_path(module: &str) -> PathBuf {
    let dir = src().join(module);
    if dir.is_dir() {
        dir
    } else {
        src().join(format!("{module}.rs"))
    }
}

/// `use crate::…` edges between top-level modules (cli lives in the binary, main.rs).
fn top_level_edges() -> Edges {
    let modules = top_level_modules();
    let known: BTreeSet<&str> = modules.iter().map(String::as_str).collect();
    let mut edges = Edges::new();
    for module in &modules {
        let mut reached = BTreeSet::new();
        for file in rust_files(&module_path(module)) {
            reached.extend(names_after(&without_tests(&file), "crate::"));
        }
        reached.retain(|r| r != module && known.contains(r.as_str()));
        edges.insert(module.clone(), reached);
    }
    edges
}

/// Edges between the modules directly inside `module` (its `mod.rs` assembles them, so it
/// is not one of them): `super::x` from a file of `module`, `crate::module::x` from anywhere
/// in it.
fn inner_edges(module: &str) -> Edges {
    let dir = src().join(module);
    let mut edges = Edges::new();
    if !dir.is_dir() {
        return edges;
    }
    let children: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != "mod.rs"))
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_string()))
        .collect();
    for file in rust_files(&dir) {
        let relative = file.strip_prefix(&dir).unwrap();
        let parts: Vec<&str> = relative.iter().map(|p| p.to_str().unwrap()).collect();
        if parts == ["mod.rs"] {
            continue;
        }
        let child = parts[0].trim_end_matches(".rs").to_string();
        // How many `super::` lead from this file up to `module`.
        let depth = parts.len() - usize::from(parts.last() == Some(&"mod.rs"));
        let text = without_tests(&file);
        let mut reached = names_after(&text, &format!("crate::{module}::"));
        reached.extend(names_after(&text, &"super::".repeat(depth)));
        reached.retain(|r| r != &child && children.contains(r));
        edges.entry(child).or_default().extend(reached);
    }
    edges
}

/// The circles of a graph (strongly connected groups of two or more), each sorted.
fn circles(edges: &Edges) -> Vec<Vec<String>> {
    // Reachability by repeated search: the graphs are a few dozen nodes.
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(node) = todo.pop() {
            for next in edges.get(&node).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let mut found: BTreeSet<Vec<String>> = BTreeSet::new();
    for node in edges.keys() {
        let ahead = reach(node);
        let mut group: Vec<String> = ahead
            .iter()
            .filter(|other| reach(other).contains(node))
            .cloned()
            .collect();
        if !group.is_empty() {
            if !group.contains(node) {
                group.push(node.clone());
            }
            group.sort();
            found.insert(group);
        }
    }
    found.into_iter().collect()
}

fn show(edges: &Edges) -> String {
    edges
        .iter()
        .map(|(from, to)| {
            format!(
                "  {from} -> {}",
                to.iter().cloned().collect::<Vec<_>>().join(" ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn no_circle_between_top_level_modules() {
    let edges = top_level_edges();
    // `cargo test --test floors -- --nocapture` shows the edges.
    println!(
        "use crate::… edges between top-level modules:\n{}",
        show(&edges)
    );
    let found = circles(&edges);
    assert!(
        found.is_empty(),
        "circles: {found:?}\nedges:\n{}",
        show(&edges)
    );
}

#[test]
fn every_module_reaches_only_its_floor_or_below() {
    let floors: BTreeMap<&str, u8> = FLOORS.iter().copied().collect();
    let edges = top_level_edges();
    let mut wrong = Vec::new();
    for (from, reached) in &edges {
        let Some(&own) = floors.get(from.as_str()) else {
            wrong.push(format!(
                "{from} has no floor: give it one in FLOORS (tests/floors.rs)"
            ));
            continue;
        };
        for to in reached {
            let theirs = floors.get(to.as_str()).copied().unwrap_or(u8::MAX);
            if theirs > own {
                wrong.push(format!(
                    "{from} (floor {own}) reaches up to {to} (floor {theirs})"
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{}\nedges:\n{}",
        wrong.join("\n"),
        show(&edges)
    );
}

#[test]
fn no_circle_inside_a_module() {
    let mut wrong = Vec::new();
    for module in top_level_modules() {
        let edges = inner_edges(&module);
        for circle in circles(&edges) {
            wrong.push(format!(
                "{module}: {}\n{}",
                circle.join(" <-> "),
                show(&edges)
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn no_crate_depends_on_the_app() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates");
    let mut checked = 0;
    for entry in std::fs::read_dir(crates).unwrap() {
        let manifest = entry.unwrap().path().join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).unwrap();
        let on_the_app = |line: &str| {
            let line = line.trim_start();
            line.starts_with("sutazai-top")
                || line.starts_with("sutazai_top")
                || line.contains("path = \"../..\"")
        };
        assert!(
            !text.lines().any(on_the_app),
            "{} depends on the app",
            manifest.display()
        );
        checked += 1;
    }
    assert!(
        checked >= 2,
        "the cache and the balancer crates are expected under crates/"
    );
}

/// The check finds what it must: a made-up circle and a made-up reach upward.
#[test]
fn the_check_sees_a_circle_and_a_group_import() {
    let mut edges = Edges::new();
    edges.insert("a".into(), ["b".to_string()].into());
    edges.insert("b".into(), ["c".to_string()].into());
    edges.insert("c".into(), ["a".to_string()].into());
    edges.insert("d".into(), ["a".to_string()].into());
    assert_eq!(circles(&edges), vec![vec!["a", "b", "c"]]);
    let names = names_after(
        "use crate::{model::Snapshot, host};\nx(crate::engine::y); my_crate::no",
        "crate::",
    );
    assert_eq!(names, ["engine", "host", "model"].map(String::from).into());
}
