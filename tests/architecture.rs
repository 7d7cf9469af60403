//! Keeps the one-way data flow of DESIGN.md section 1: each top-level module may use only the
//! modules listed for it here. Reads every `crate::` path in `src/`. Also keeps the unit-test
//! layout the README's Development section states.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

/// module → the crate modules it may use.
const ALLOWED: &[(&str, &[&str])] = &[
    (
        "cli",
        &[
            "context",
            "dockerfile",
            "exporter",
            "frontend",
            "graph",
            "ops",
            "progress",
            "registry",
            "remote_cache",
            "sandbox",
            "snapshot",
            "solver",
            "store",
        ],
    ),
    // Registries: self-contained, on its own tokio runtime.
    ("registry", &[]),
    ("dockerfile", &[]),
    ("graph", &[]),
    ("frontend", &["dockerfile", "graph"]),
    ("solver", &["context", "graph", "ops", "progress", "registry", "sandbox", "store"]),
    ("ops", &["context", "graph", "registry", "sandbox", "snapshot", "ssh_agent", "store"]),
    // The exporter reads the image config the frontend made (plain data) and the layers ops made.
    ("exporter", &["frontend", "ops", "progress", "registry", "snapshot", "store"]),
    // The shared cache: reads and writes records and layer blobs (through the exporter's
    // compression), hands out lazy layers (ops).
    ("remote_cache", &["exporter", "graph", "ops", "progress", "registry", "store"]),
    ("snapshot", &["store"]),
    // Containers: self-contained, so its re-exec'd child pulls in nothing else.
    ("sandbox", &[]),
    // The SSH agent of `RUN --mount=type=ssh`: self-contained, only ops (exec) starts it.
    ("ssh_agent", &[]),
    ("context", &[]),
    ("store", &[]),
    ("progress", &[]),
];

fn module_of(path: &Path, src: &Path) -> Option<String> {
    let relative = path.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_string_lossy().into_owned();
    Some(first.trim_end_matches(".rs").to_string())
}

/// The top-level modules named by `crate::NAME` in a source text, including grouped uses
/// (`use crate::{a, b::c}`).
fn used_modules(text: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let mut rest = text;
    while let Some(index) = rest.find("crate::") {
        rest = &rest[index + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    used.insert(name);
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                used.insert(name);
            }
        }
    }
    used
}

#[test]
fn modules_only_use_what_the_design_allows() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    let mut checked = 0;
    for entry in walkdir::WalkDir::new(&src) {
        let entry = entry.unwrap();
        if entry.path().extension().is_none_or(|extension| extension != "rs") {
            continue;
        }
        let Some(module) = module_of(entry.path(), &src) else { continue };
        if module == "lib" || module == "main" {
            continue;
        }
        let Some((_, allowed)) = ALLOWED.iter().find(|(name, _)| *name == module) else {
            violations.push(format!("{}: module `{module}` is not in the architecture table", entry.path().display()));
            continue;
        };
        checked += 1;
        let text = fs::read_to_string(entry.path()).unwrap();
        for used in used_modules(&text) {
            if used != module && !allowed.contains(&used.as_str()) {
                violations.push(format!("{}: `{module}` uses `crate::{used}`", entry.path().display()));
            }
        }
    }
    assert!(checked > 20, "only {checked} files checked: is src/ where it should be?");
    assert!(violations.is_empty(), "dependency rules broken:\n{}", violations.join("\n"));
}

#[test]
fn the_scanner_sees_grouped_and_inline_paths() {
    let text = "use crate::{graph::Op, store};\nfn f() { crate::cli::run(); }";
    let used: Vec<String> = used_modules(text).into_iter().collect();
    assert_eq!(used, ["cli", "graph", "store"]);
}

/// The unit-test layout of the README's Development section: a test set under
/// [`INLINE_LIMIT`] lines is inline (`mod tests { ... }`), a larger one is a file beside the
/// code (`NAME_tests.rs` for `NAME.rs`, `tests.rs` for a `mod.rs`).
const INLINE_LIMIT: usize = 200;

#[test]
fn unit_tests_follow_one_layout() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    for entry in walkdir::WalkDir::new(&src) {
        let entry = entry.unwrap();
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|name| name.to_str()) else { continue };
        if !name.ends_with(".rs") {
            continue;
        }
        let text = fs::read_to_string(path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        if name.ends_with("_tests.rs") || name == "tests.rs" {
            if lines.len() < INLINE_LIMIT {
                violations.push(format!("{}: {} lines of tests belong inline", path.display(), lines.len()));
            }
            continue;
        }
        if let Some(start) = lines.iter().position(|line| *line == "mod tests {") {
            let length = lines[start..].iter().position(|line| *line == "}").map_or(lines.len() - start, |end| end + 1);
            if length >= INLINE_LIMIT {
                violations.push(format!("{}: {length} lines of inline tests belong in a file beside it", path.display()));
            }
        }
        let stem = name.trim_end_matches(".rs");
        for line in &lines {
            if let Some(included) = line.strip_prefix("#[path = \"").and_then(|rest| rest.strip_suffix("\"]"))
                && included != format!("{stem}_tests.rs")
            {
                violations.push(format!("{}: tests in `{included}`, not `{stem}_tests.rs`", path.display()));
            }
        }
    }
    assert!(violations.is_empty(), "unit-test layout broken:\n{}", violations.join("\n"));
}
