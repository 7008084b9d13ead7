//! The shape of the code, checked as ARCHITECTURE.md states it: imports between the top-level
//! modules point one way (no module imports one that imports it back), no production file is
//! over 700 lines and no production function over 120. The test reads the sources as text, the
//! way a reviewer's grep would.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 700;
const MAX_FN_LINES: usize = 120;

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The package's directory as cargo gives it to the running test, since a test built in
/// another checkout (a build cache shared between clones) holds that checkout's path; the path
/// it was built with when run by hand.
fn root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}

/// Test code is not production code: files named `tests.rs`, files under a `tests` folder, and
/// everything from a `#[cfg(test)]` module on.
fn production(path: &Path, text: &str) -> Option<String> {
    if path.file_name().is_some_and(|n| n == "tests.rs")
        || path.components().any(|c| c.as_os_str() == "tests")
    {
        return None;
    }
    let end = text.find("\n#[cfg(test)]\nmod tests").unwrap_or(text.len());
    Some(text[..end].to_string())
}

/// The top-level module a file of `src/` belongs to (`src/quota/gate.rs`: `quota`).
fn module_of(src: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

/// Which top-level modules each one names (`crate::quota::...`), outside comments.
fn imports(src: &Path) -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let mut graph: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for path in sources(src) {
        let Some(module) = module_of(src, &path) else {
            continue;
        };
        let text = std::fs::read_to_string(&path).unwrap();
        let edges = graph.entry(module.clone()).or_default();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or_default();
            for (at, _) in code.match_indices("crate::") {
                let name: String = code[at + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    let file = path.strip_prefix(root()).unwrap().display().to_string();
                    edges.entry(name).or_default().insert(file);
                }
            }
        }
    }
    graph
}

/// A path from `from` back to itself through the graph, if there is one.
fn cycle_through(
    graph: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    from: &str,
) -> Option<Vec<String>> {
    let mut stack = vec![vec![from.to_string()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().unwrap();
        for next in graph.get(last).into_iter().flat_map(|e| e.keys()) {
            if next == from {
                let mut cycle = path.clone();
                cycle.push(next.clone());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
    }
    None
}

#[test]
fn no_top_level_module_imports_one_that_imports_it_back() {
    let src = root().join("src");
    let graph = imports(&src);
    assert!(graph.len() > 10, "the sources were found: {graph:?}");
    let mut cycles = Vec::new();
    for module in graph.keys() {
        if let Some(cycle) = cycle_through(&graph, module) {
            let hops: Vec<String> = cycle
                .windows(2)
                .map(|w| {
                    let files = &graph[&w[0]][&w[1]];
                    format!("{} -> {} ({})", w[0], w[1], files.iter().next().unwrap())
                })
                .collect();
            cycles.push(hops.join(", "));
        }
    }
    assert!(
        cycles.is_empty(),
        "imports that point back (see ARCHITECTURE.md for the layers):\n{}",
        cycles.join("\n")
    );
    for helper in ["util", "secret", "stats"] {
        assert!(
            graph.get(helper).is_none_or(|e| e.is_empty()),
            "{helper} is used by everything and must use nothing of the crate: {:?}",
            graph[helper]
        );
    }
}

#[test]
fn a_cycle_is_found_where_there_is_one() {
    let mut graph: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (a, b) in [("http", "quota"), ("quota", "config"), ("config", "http")] {
        graph
            .entry(a.into())
            .or_default()
            .insert(b.into(), BTreeSet::from(["f.rs".to_string()]));
    }
    assert_eq!(
        cycle_through(&graph, "http").unwrap(),
        ["http", "quota", "config", "http"]
    );
    graph.get_mut("config").unwrap().clear();
    assert_eq!(cycle_through(&graph, "http"), None);
}

/// The functions of rustfmt-formatted `text` longer than `max` lines: each runs from its `fn`
/// line to the first line after it that closes at the same indentation.
fn long_functions(text: &str, max: usize) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut long = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let is_fn = [
            "fn ",
            "pub fn ",
            "async fn ",
            "pub async fn ",
            "pub(crate) fn ",
        ]
        .iter()
        .chain(&["pub(super) fn ", "const fn ", "pub const fn "])
        .any(|p| trimmed.starts_with(p));
        if !is_fn || line.trim_end().ends_with(';') || line.trim_end().ends_with('}') {
            continue;
        }
        let close = format!("{}}}", " ".repeat(indent));
        if let Some(end) = lines[i + 1..].iter().position(|l| *l == close) {
            let n = end + 2;
            if n > max {
                let name = trimmed.split('(').next().unwrap_or(trimmed).to_string();
                long.push((name, n));
            }
        }
    }
    long
}

#[test]
fn no_production_file_or_function_is_too_long() {
    let mut too_long = Vec::new();
    for dir in ["src", "sandbox/src"] {
        for path in sources(&root().join(dir)) {
            let text = std::fs::read_to_string(&path).unwrap();
            let Some(code) = production(&path, &text) else {
                continue;
            };
            let name = path.strip_prefix(root()).unwrap().display().to_string();
            let lines = text.lines().count();
            if lines > MAX_FILE_LINES {
                too_long.push(format!("{name}: {lines} lines"));
            }
            for (f, n) in long_functions(&code, MAX_FN_LINES) {
                too_long.push(format!("{name}: {f}: {n} lines"));
            }
        }
    }
    assert!(
        too_long.is_empty(),
        "split these (at most {MAX_FILE_LINES} lines a file, {MAX_FN_LINES} a function):\n{}",
        too_long.join("\n")
    );
}

#[test]
fn a_long_function_is_found() {
    let body = "        x();\n".repeat(130);
    let text = format!(
        "impl A {{\n    pub fn long(&self) {{\n{body}    }}\n\n    fn short() {{\n        y();\n    }}\n}}\n"
    );
    assert_eq!(
        long_functions(&text, 120),
        [("pub fn long".to_string(), 132)]
    );
}
