//! Architecture test: the import direction of docs/ARCHITECTURE.md, enforced on `src/`.
//!
//! The layer table in docs/ARCHITECTURE.md is the single source: every top-level module of
//! `src/` must be listed there, and a module may import (`crate::NAME`) only modules of a
//! lower layer. Modules of one layer are peers and never import each other, so no cycle
//! between top-level modules is possible; the test still looks for cycles, to name one
//! plainly when the table itself is wrong.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `module → layer`, read from the rows `| N | `module` | … |` of docs/ARCHITECTURE.md.
fn layers() -> BTreeMap<String, u32> {
    let text = fs::read_to_string(root().join("docs/ARCHITECTURE.md"))
        .unwrap_or_else(|e| panic!("docs/ARCHITECTURE.md: {e}"));
    let mut layers = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 {
            continue;
        }
        let Ok(layer) = cells[1].parse::<u32>() else {
            continue;
        };
        let module = cells[2].trim_matches('`');
        assert!(
            layers.insert(module.to_owned(), layer).is_none(),
            "docs/ARCHITECTURE.md lists `{module}` twice"
        );
    }
    assert!(!layers.is_empty(), "no layer table in docs/ARCHITECTURE.md");
    layers
}

/// The top-level modules of the library: `src/NAME.rs` and `src/NAME/`.
fn top_level_modules() -> BTreeSet<String> {
    let mut modules = BTreeSet::new();
    for entry in fs::read_dir(root().join("src")).expect("src/ is readable") {
        let path = entry.expect("src/ entry").path();
        let name = path
            .file_stem()
            .and_then(|n| n.to_str())
            .expect("utf-8 file name")
            .to_owned();
        let is_module = path.is_dir() || path.extension().is_some_and(|e| e == "rs");
        if is_module && name != "lib" && name != "main" {
            modules.insert(name);
        }
    }
    modules
}

fn rust_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_owned()];
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(path).expect("module directory is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// Code without comments: what `//` starts on a line is dropped (doc links are not imports).
fn code_of(source: &str) -> String {
    source
        .lines()
        .map(|line| match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The source without its `#[cfg(test)]` items (a `mod tests;` line, or a block to its
/// closing brace).
fn shipped_part(source: &str) -> String {
    let mut shipped = String::new();
    let mut rest = source;
    while let Some(at) = rest.find("#[cfg(test)]") {
        shipped.push_str(&rest[..at]);
        let item = &rest[at..];
        let end = match (item.find(';'), item.find('{')) {
            (Some(semi), Some(brace)) if semi < brace => semi + 1,
            (_, Some(brace)) => brace + 1 + matching_brace(&item[brace + 1..]) + 1,
            (Some(semi), None) => semi + 1,
            (None, None) => item.len(),
        };
        rest = &item[end.min(item.len())..];
    }
    shipped.push_str(rest);
    shipped
}

/// Every top-level module named after `crate::`, including inside `use crate::{a, b::c}`.
fn imports_of(code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = matching_brace(group);
            for item in split_top_level(&group[..end]) {
                add_module(item.trim(), modules, &mut found);
            }
        } else {
            add_module(rest, modules, &mut found);
        }
    }
    found
}

fn add_module(path: &str, modules: &BTreeSet<String>, found: &mut BTreeSet<String>) {
    let name: String = path
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if modules.contains(&name) {
        found.insert(name);
    }
}

fn matching_brace(text: &str) -> usize {
    let mut depth = 1;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    text.len()
}

fn split_top_level(group: &str) -> Vec<&str> {
    let (mut items, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&group[start..]);
    items
}

/// `module → modules it imports`, for every top-level module.
fn import_graph(modules: &BTreeSet<String>) -> BTreeMap<String, BTreeSet<String>> {
    let src = root().join("src");
    let mut graph = BTreeMap::new();
    for module in modules {
        let path = if src.join(module).is_dir() {
            src.join(module)
        } else {
            src.join(format!("{module}.rs"))
        };
        let mut imports = BTreeSet::new();
        for file in rust_files(&path) {
            // Tests may reach anywhere (a planner test drives the fake registry of `enrich`):
            // the direction binds the code that ships.
            if file.file_name().is_some_and(|n| n == "tests.rs") {
                continue;
            }
            let source = fs::read_to_string(&file).expect("source is readable");
            imports.extend(imports_of(&shipped_part(&code_of(&source)), modules));
        }
        imports.remove(module);
        graph.insert(module.clone(), imports);
    }
    graph
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn every_module_is_placed_in_a_layer() {
    let layers = layers();
    let modules = top_level_modules();
    let unplaced: Vec<_> = modules
        .iter()
        .filter(|m| !layers.contains_key(*m))
        .collect();
    assert!(
        unplaced.is_empty(),
        "modules missing from the layer table of docs/ARCHITECTURE.md: {unplaced:?}"
    );
    let stale: Vec<_> = layers.keys().filter(|m| !modules.contains(*m)).collect();
    assert!(
        stale.is_empty(),
        "docs/ARCHITECTURE.md lists modules that src/ does not have: {stale:?}"
    );
}

#[test]
fn imports_only_point_down_the_layers() {
    let layers = layers();
    let graph = import_graph(&top_level_modules());
    let mut violations = Vec::new();
    for (module, imports) in &graph {
        let Some(&own) = layers.get(module) else {
            continue;
        };
        for import in imports {
            let theirs = layers.get(import).copied().unwrap_or(u32::MAX);
            if theirs >= own {
                violations.push(format!(
                    "{module} (layer {own}) imports {import} (layer {theirs})"
                ));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports against the direction of docs/ARCHITECTURE.md:\n  {}",
        violations.join("\n  ")
    );
}

#[test]
fn top_level_modules_form_no_cycle() {
    let graph = import_graph(&top_level_modules());
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "import cycle between top-level modules: {}",
            cycle.join(" → ")
        );
    }
}

#[test]
fn the_reader_sees_grouped_and_nested_imports() {
    let modules: BTreeSet<String> = ["a", "b", "c", "d"].map(String::from).into();
    let code = code_of(
        "use crate::{a::X, b::{Y, Z}};\nfn f() { crate::c::g(); }\n// crate::d is only a comment",
    );
    assert_eq!(
        imports_of(&code, &modules),
        ["a", "b", "c"].map(String::from).into()
    );
    let shipped = shipped_part(
        "use crate::a::X;\n#[cfg(test)]\nmod tests;\n#[cfg(test)]\nmod more { use crate::d::Y; }\nfn g() {}",
    );
    assert_eq!(
        imports_of(&code_of(&shipped), &modules),
        ["a"].map(String::from).into()
    );
    assert!(shipped.contains("fn g()"));
    let cyclic: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_owned(), ["b".to_owned()].into()),
        ("b".to_owned(), ["a".to_owned()].into()),
    ]
    .into();
    assert!(find_cycle(&cyclic).is_some());
}
