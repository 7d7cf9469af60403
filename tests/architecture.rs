//! Keeps the one-way data flow of DESIGN.md section 1 mechanically.
//!
//! The modules sit in ranked layers, in the order data flows (`cli` → `frontend` → `solver` →
//! `ops` → `exporter`, then the resources they use, then the leaves that import nothing). A
//! module may use only the modules its row in [`ALLOWED`] names, and every such edge must point
//! to a lower layer, unless it is in [`EXCEPTIONS`] with the reason it exists. An allowed edge
//! that no file uses any more is a failure too: the table shrinks with the code, it never
//! silently widens. The scanner reads every `crate::` path in `src/`, nested `use` groups
//! included (`use crate::{graph::{Op, Vertex}, store}`). Also keeps the unit-test layout the
//! README's Development section states.

#![allow(clippy::disallowed_methods)] // fixtures are written directly; the rule is for rbuild's own writes

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// The layers, highest first. A module uses modules of lower layers only (or an exception).
const LAYERS: &[&[&str]] = &[
    // Joins the stages: the one place that sees them all.
    &["cli"],
    // Dockerfile → graph.
    &["frontend"],
    // Runs the graph; the shared cache imports and exports step records beside it.
    &["solver", "remote_cache"],
    // One vertex each.
    &["ops"],
    // The result, written out.
    &["exporter"],
    // Layers on disk: diff, apply, extract.
    &["snapshot"],
    // Resources: a registry client, the state root.
    &["registry"],
    // Leaves: import nothing of the crate but the vocabulary.
    &["context", "dockerfile", "graph", "progress", "sandbox", "ssh_agent", "store"],
    // The shared vocabulary (references, platforms, paths, ...): under everything.
    &["oci"],
];

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
            "oci",
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
    // Base images are resolved by ops::image: the frontend is given its ResolvedImage or
    // ResolveError through ImageResolver, and calls no op.
    ("frontend", &["dockerfile", "graph", "oci", "ops"]),
    ("solver", &["graph", "oci", "ops", "progress", "store"]),
    ("remote_cache", &["exporter", "oci", "ops", "progress", "registry", "store"]),
    ("ops", &["context", "graph", "oci", "registry", "sandbox", "snapshot", "ssh_agent", "store"]),
    // Lazy layers come in through store::layer::LayerFetcher, which ops implement.
    ("exporter", &["oci", "progress", "registry", "snapshot", "store"]),
    // Layers on disk; a layered view resolves paths with the shared in-root resolver.
    ("snapshot", &["oci", "store"]),
    // Registries: on its own tokio runtime; speaks the shared image vocabulary.
    ("registry", &["oci"]),
    // The shared image vocabulary (references, media types).
    ("oci", &[]),
    ("dockerfile", &["oci"]),
    ("graph", &["oci"]),
    // Containers: self-contained, so its re-exec'd child pulls in nothing but the shared
    // vocabulary (how runc reads /etc/passwd, which --chown reads the same way).
    ("sandbox", &["oci"]),
    // The SSH agent of `RUN --mount=type=ssh`: self-contained, only ops (exec) starts it.
    ("ssh_agent", &[]),
    ("context", &["oci"]),
    ("store", &["oci"]),
    ("progress", &["oci"]),
];

/// Allowed edges that point up or sideways, each with why it is there.
const EXCEPTIONS: &[(&str, &str, &str)] = &[];

fn module_of(path: &Path, src: &Path) -> Option<String> {
    let relative = path.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_string_lossy().into_owned();
    Some(first.trim_end_matches(".rs").to_string())
}

/// The top-level modules named by `crate::NAME` in a source text: plain paths
/// (`crate::store::Store`), groups (`crate::{a, b::c}`) and nested groups
/// (`crate::{graph::{Op, Vertex}, store}`).
fn used_modules(text: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let mut rest = text;
    while let Some(index) = rest.find("crate::") {
        rest = &rest[index + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            used.extend(group_items(group));
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                used.insert(name);
            }
        }
    }
    used
}

/// The first path segment of each top-level item of a `{...}` group (the text after `{`).
fn group_items(group: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut current = String::new();
    let mut take = true;
    for character in group.chars() {
        match character {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(std::mem::take(&mut current));
                take = true;
                continue;
            }
            _ => {}
        }
        if depth == 0 && take {
            if character.is_alphanumeric() || character == '_' {
                current.push(character);
            } else if !current.is_empty() {
                take = false;
            }
        }
    }
    items.push(current);
    items.into_iter().filter(|item| !item.is_empty()).collect()
}

/// The three tables.
struct Design {
    layers: &'static [&'static [&'static str]],
    allowed: &'static [(&'static str, &'static [&'static str])],
    exceptions: &'static [(&'static str, &'static str, &'static str)],
}

const DESIGN: Design = Design { layers: LAYERS, allowed: ALLOWED, exceptions: EXCEPTIONS };

/// What the table says wrong about itself or about the code: edges used but not allowed,
/// allowed edges pointing up without an exception, allowed edges nobody uses.
fn violations(design: &Design, used: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let rank = |module: &str| design.layers.iter().position(|layer| layer.contains(&module));
    let allowed = |module: &str| design.allowed.iter().find(|(name, _)| *name == module).map(|(_, allowed)| *allowed);
    let mut found = Vec::new();
    for (module, targets) in used {
        let Some(allowed) = allowed(module) else {
            found.push(format!("module `{module}` is not in the architecture table"));
            continue;
        };
        for target in targets {
            if target != module && !allowed.contains(&target.as_str()) {
                found.push(format!("`{module}` uses `crate::{target}`, which its row does not allow"));
            }
        }
    }
    for (module, allowed) in design.allowed {
        let Some(from) = rank(module) else {
            found.push(format!("module `{module}` is in no layer"));
            continue;
        };
        for target in *allowed {
            let Some(to) = rank(target) else {
                found.push(format!("module `{target}` is in no layer"));
                continue;
            };
            let excepted = design.exceptions.iter().any(|(a, b, _)| a == module && b == target);
            if to <= from && !excepted {
                found.push(format!("`{module}` → `{target}` points up or sideways (layer {from} to {to}) and is no exception"));
            }
            if !used.get(*module).is_some_and(|targets| targets.contains(*target)) {
                found.push(format!("`{module}` → `{target}` is allowed but no longer used: remove it from the table"));
            }
        }
    }
    for (module, target, _) in design.exceptions {
        if !allowed(module).is_some_and(|allowed| allowed.contains(target)) {
            found.push(format!("the exception `{module}` → `{target}` is for an edge the table does not allow"));
        }
    }
    found
}

/// Every module's used modules, read from `src/`.
fn scan() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in walkdir::WalkDir::new(&src) {
        let entry = entry.unwrap();
        if entry.path().extension().is_none_or(|extension| extension != "rs") {
            continue;
        }
        let Some(module) = module_of(entry.path(), &src) else { continue };
        if module == "lib" || module == "main" {
            continue;
        }
        let text = fs::read_to_string(entry.path()).unwrap();
        let targets = used.entry(module.clone()).or_default();
        targets.extend(used_modules(&text).into_iter().filter(|target| *target != module));
    }
    used
}

#[test]
fn modules_only_use_what_the_design_allows() {
    let used = scan();
    assert!(used.len() > 10, "only {} modules found: is src/ where it should be?", used.len());
    let found = violations(&DESIGN, &used);
    assert!(found.is_empty(), "the architecture table and the code disagree:\n{}", found.join("\n"));
}

#[test]
fn the_scanner_sees_grouped_nested_and_inline_paths() {
    let text =
        "use crate::{graph::{Op, Vertex}, store};\nuse crate::{ops::exec::{self, run}, progress::Sender};\nfn f() { crate::cli::run(); }";
    let used: Vec<String> = used_modules(text).into_iter().collect();
    assert_eq!(used, ["cli", "graph", "ops", "progress", "store"]);
}

#[test]
fn an_upward_edge_and_an_unused_allowance_fail() {
    let mut used = scan();
    // ops reaching up into the solver, without the table allowing it.
    used.get_mut("ops").unwrap().insert("solver".into());
    let found = violations(&DESIGN, &used);
    assert!(found.iter().any(|line| line == "`ops` uses `crate::solver`, which its row does not allow"), "{found:#?}");
    // snapshot no longer using store: its allowance must go.
    let mut used = scan();
    used.get_mut("snapshot").unwrap().remove("store");
    let found = violations(&DESIGN, &used);
    assert!(found.iter().any(|line| line.starts_with("`snapshot` → `store` is allowed but no longer used")), "{found:#?}");
    // A table that allows an upward edge without saying why.
    let upward = Design { layers: &[&["solver"], &["ops"]], allowed: &[("solver", &["ops"]), ("ops", &["solver"])], exceptions: &[] };
    let used: BTreeMap<String, BTreeSet<String>> =
        [("solver", "ops"), ("ops", "solver")].iter().map(|(a, b)| (a.to_string(), BTreeSet::from([b.to_string()]))).collect();
    let found = violations(&upward, &used);
    assert_eq!(found, ["`ops` → `solver` points up or sideways (layer 1 to 0) and is no exception"]);
    let excepted = Design { exceptions: &[("ops", "solver", "a reason")], ..upward };
    assert!(violations(&excepted, &used).is_empty());
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

/// The `libc` functions a source text calls (`libc::poll(`), not its types and constants.
fn libc_calls(text: &str) -> Vec<String> {
    let mut calls = Vec::new();
    for (index, _) in text.match_indices("libc::") {
        let rest = &text[index + "libc::".len()..];
        let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        let called = rest[name.len()..].trim_start().starts_with('(');
        if called && name.starts_with(|c: char| c.is_ascii_lowercase()) {
            calls.push(name);
        }
    }
    calls
}

/// `sandbox/sys.rs` holds the sandbox's syscalls (its module docs): the other files of the
/// sandbox call those or nix, never a `libc` function (`unsafe` itself the compiler refuses).
#[test]
fn the_sandbox_calls_libc_only_in_sys() {
    let sandbox = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sandbox");
    let mut found = Vec::new();
    for entry in fs::read_dir(&sandbox).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|name| name == "sys.rs") || path.extension().is_none_or(|extension| extension != "rs") {
            continue;
        }
        let text = fs::read_to_string(&path).unwrap();
        found.extend(libc_calls(&text).into_iter().map(|name| format!("{}: libc::{name}", path.display())));
    }
    assert!(found.is_empty(), "call these through sandbox::sys:\n{}", found.join("\n"));
    assert_eq!(libc_calls("libc::poll(fds, 2, -1); let x: libc::c_int = libc::SIGKILL; libc::kill (1, 2)"), ["poll", "kill"]);
}
