//! The shape of the user-space code: the modules of `tracer/src` depend on each other without
//! cycles, so each stage can be read (and changed) knowing only what comes before it. A module
//! depends on another when its non-test code names `crate::<other>`.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

/// Top-level module -> the top-level modules its non-test code names.
fn dependencies(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src");
            let rel = rel.to_string_lossy();
            let top = rel
                .split('/')
                .next()
                .unwrap_or_default()
                .trim_end_matches(".rs");
            let is_test = rel.ends_with("tests.rs") || rel.contains("/tests/");
            if is_test || matches!(top, "lib" | "main" | "fixtures") || !rel.ends_with(".rs") {
                continue;
            }
            let text = fs::read_to_string(&path).expect("read source");
            let code = text
                .split("#[cfg(test)]\nmod tests")
                .next()
                .unwrap_or_default();
            let set = deps.entry(top.to_string()).or_default();
            set.extend(names_after_crate(code).filter(|m| m != top));
        }
    }
    let modules: BTreeSet<String> = deps.keys().cloned().collect();
    for set in deps.values_mut() {
        set.retain(|m| modules.contains(m));
    }
    deps
}

/// The first path segment after every `crate::`, and every segment of `use crate::{a, b::c}`.
fn names_after_crate(code: &str) -> impl Iterator<Item = String> + '_ {
    code.match_indices("crate::").flat_map(move |(i, _)| {
        let rest = &code[i + "crate::".len()..];
        let group = rest
            .strip_prefix('{')
            .and_then(|g| g.split_once("};").map(|(g, _)| g));
        match group {
            // A `use crate::{...}` list: the first segment of each path in it (nested groups
            // belong to a path already counted).
            Some(g) => top_level_items(g),
            None => vec![ident(rest)],
        }
    })
}

fn ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

fn top_level_items(group: &str) -> Vec<String> {
    let (mut depth, mut start, mut out) = (0, 0, Vec::new());
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(ident(group[start..i].trim()));
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(ident(group[start..].trim()));
    out.retain(|s| !s.is_empty());
    out
}

/// A cycle through `from`, if any (depth-first search).
fn cycle_from(g: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    fn walk(
        g: &BTreeMap<String, BTreeSet<String>>,
        goal: &str,
        at: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in g.get(at).into_iter().flatten() {
            if next == goal {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(g, goal, next, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![from.to_string()];
    walk(g, from, from, &mut path, &mut BTreeSet::new()).then(|| {
        path.push(from.to_string());
        path
    })
}

#[test]
fn no_import_cycles_between_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let g = dependencies(&src);
    assert!(
        g.len() > 10,
        "found only {} modules in {}",
        g.len(),
        src.display()
    );
    // The pipeline's stages in order: each depends only on the model and on stages before it.
    assert!(g["pipeline"].contains("correlate") && g["pipeline"].contains("verdict"));
    let cycles: Vec<String> = g
        .keys()
        .filter_map(|m| cycle_from(&g, m))
        .map(|c| c.join(" -> "))
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_dependency_reader_sees_a_cycle() {
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(
        cycle_from(&g, "a").map(|c| c.join(">")),
        Some("a>b>a".into())
    );
    let items: Vec<String> = names_after_crate(
        "use crate::{\n    attach::{self, x},\n    model::Trace,\n};\nlet v = crate::verdict::judge;",
    )
    .collect();
    assert_eq!(items, ["attach", "model", "verdict"]);
}
