//! Tests of `walk.rs`: the parallel walk gives what a plain recursive walk with the same rules
//! gives (the walk it replaced), whatever the number of threads.

use super::*;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::fs::symlink;

/// The sequential walk `selection.rs` had before the parallel one: `read_dir` recursion, an
/// excluded directory kept only when one of its children is.
fn reference_walk(root: &Path, real: &str, exclude_path: Option<&str>, ignore: &DockerIgnore, excludes: &DockerIgnore) -> Walked {
    let mut entries = Vec::new();
    let outcome = reference_visit(root, real, "", exclude_path, ignore, excludes, &mut entries);
    entries.sort_by(|(left, _), (right, _)| left.cmp(right));
    if outcome != Outcome::Kept {
        entries.clear();
    }
    Walked { outcome, entries }
}

fn reference_visit(
    root: &Path,
    real: &str,
    relative: &str,
    exclude_path: Option<&str>,
    ignore: &DockerIgnore,
    excludes: &DockerIgnore,
    entries: &mut Vec<(String, Found)>,
) -> Outcome {
    let absolute = root.join(real);
    let Ok(metadata) = fs::symlink_metadata(&absolute) else { return Outcome::Dropped };
    let ignored_by = ignore.excluded_by(real).map(|rule| (rule.text.clone(), rule.line));
    let excluded = exclude_path.is_some_and(|path| excludes.is_excluded(path));
    let removed = || match &ignored_by {
        Some((text, line)) => Outcome::Ignored(text.clone(), *line),
        None => Outcome::Dropped,
    };
    if metadata.is_dir() {
        let may_descend = (ignored_by.is_none() || ignore.may_include_below(real))
            && (!excluded || exclude_path.is_some_and(|path| excludes.may_include_below(path)));
        if !may_descend {
            return removed();
        }
        let mut any_child_kept = false;
        for child in fs::read_dir(&absolute).expect("read_dir") {
            let name = child.expect("entry").file_name().into_string().expect("UTF-8 name");
            let child_exclude_path = match exclude_path {
                Some(path) => format!("{path}/{name}"),
                None => name.clone(),
            };
            let outcome =
                reference_visit(root, &join(real, &name), &join(relative, &name), Some(&child_exclude_path), ignore, excludes, entries);
            any_child_kept |= outcome == Outcome::Kept;
        }
        if (ignored_by.is_some() || excluded) && !any_child_kept {
            return removed();
        }
        entries.push((relative.to_string(), Found::new(absolute, FoundKind::Directory, &EntryStat::from(&metadata))));
        return Outcome::Kept;
    }
    if ignored_by.is_some() || excluded {
        return removed();
    }
    let kind = if metadata.file_type().is_symlink() {
        FoundKind::Symlink(fs::read_link(&absolute).expect("readlink").into_os_string().into_string().expect("UTF-8 target"))
    } else if metadata.is_file() {
        FoundKind::File(crate::oci::FileStamp::of(&metadata))
    } else {
        return Outcome::Dropped;
    };
    entries.push((relative.to_string(), Found::new(absolute, kind, &EntryStat::from(&metadata))));
    Outcome::Kept
}

fn write(root: &Path, path: &str, content: &str) {
    let full = root.join(path);
    fs::create_dir_all(full.parent().expect("has parent")).expect("mkdir");
    fs::write(full, content).expect("write");
}

/// Nested ignores, `!` re-includes (literal and wildcard, below directories excluded and not),
/// symlinks to files, directories, nowhere and out of the context, empty directories, a fifo,
/// and the files `ignore` would skip by default (hidden ones, `.gitignore`, `.ignore`, `.git`).
fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, "keep.txt", "keep\n");
    fs::create_dir_all(root.join("empty")).expect("mkdir");
    for name in ["a.log", "b.log", "keep.log"] {
        write(root, &format!("logs/{name}"), name);
    }
    write(root, "build/out/x.o", "object");
    fs::create_dir_all(root.join("build/sub/empty")).expect("mkdir");
    write(root, "vendor/a/lib.rs", "lib");
    write(root, "vendor/b/README.md", "readme");
    write(root, "vendor/b/deep/er/README.md", "readme");
    fs::create_dir_all(root.join("vendor/c")).expect("mkdir");
    write(root, "nested/deep/deeper/secret.key", "key");
    write(root, "nested/deep/deeper/ok.txt", "ok");
    fs::create_dir_all(root.join("nested/deep/empty")).expect("mkdir");
    write(root, "node_modules/pkg/index.js", "js");
    write(root, "node_modules/pkg/keep.json", "{}");
    write(root, "node_modules/other/keep.json", "{}");
    write(root, "tmp/.hidden", "hidden");
    write(root, "tmp/.gitignore", "*\n");
    write(root, "tmp/.ignore", "*\n");
    write(root, "tmp/visible.txt", "visible");
    write(root, ".gitignore", "*\n");
    write(root, ".git/HEAD", "ref: refs/heads/main\n");
    fs::create_dir_all(root.join("links")).expect("mkdir");
    symlink("../keep.txt", root.join("links/to-file")).expect("symlink");
    symlink("../nested", root.join("links/to-dir")).expect("symlink");
    symlink("nowhere", root.join("links/dangling")).expect("symlink");
    symlink("/etc", root.join("links/outside")).expect("symlink");
    symlink("../keep.txt", root.join("links/ignored-link")).expect("symlink");
    nix::unistd::mkfifo(&root.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o644)).expect("mkfifo");
    dir
}

const RULES: &str =
    "logs\n!logs/keep.log\nbuild\nvendor\n!vendor/**/README.md\n**/*.key\nlinks/ignored-link\nnode_modules\n!node_modules/pkg/keep.json\n";

fn paths(walked: &Walked) -> Vec<&str> {
    walked.entries.iter().map(|(path, _)| path.as_str()).collect()
}

#[test]
fn the_parallel_walk_finds_what_a_sequential_walk_finds() {
    let tree = tree();
    let root = tree.path();
    let ignore = DockerIgnore::parse(RULES).expect("rules");
    let no_excludes = DockerIgnore::empty();
    let excludes = DockerIgnore::from_patterns(&["*.txt", "!keep.txt", "deep/empty"]).expect("excludes");
    // (matched path, its path for --exclude, --exclude rules)
    let cases: &[(&str, Option<&str>, &DockerIgnore)] = &[
        ("", None, &no_excludes),
        ("", None, &excludes),
        ("nested", None, &excludes),
        ("nested/deep", Some("deep"), &excludes),
        ("logs", None, &no_excludes),
        ("vendor", None, &no_excludes),
        ("build", None, &no_excludes),
        ("node_modules/other", None, &no_excludes),
        ("empty", None, &no_excludes),
        ("keep.txt", None, &no_excludes),
        ("links/dangling", None, &no_excludes),
        ("links/ignored-link", None, &no_excludes),
        ("fifo", None, &no_excludes),
        ("missing", None, &no_excludes),
    ];
    for &(real, exclude_path, excludes) in cases {
        let expected = reference_walk(root, real, exclude_path, &ignore, excludes);
        for threads in [1, 2, 8] {
            for _ in 0..3 {
                let walked = walk_with_threads(root, real, exclude_path, &Rules { ignore: &ignore, excludes }, threads)
                    .unwrap_or_else(|error| panic!("`{real}` with {threads} threads: {error}"));
                assert_eq!(walked.outcome, expected.outcome, "`{real}` with {threads} threads");
                assert_eq!(paths(&walked), paths(&expected), "`{real}` with {threads} threads");
                assert_eq!(walked.entries, expected.entries, "`{real}` with {threads} threads");
            }
        }
    }

    // The tree holds what the comparison is about.
    let whole = walk(root, "", None, &ignore, &no_excludes).expect("walks");
    let found: BTreeMap<&str, &Found> = whole.entries.iter().map(|(path, found)| (path.as_str(), found)).collect();
    for kept in [
        "",
        "empty",
        "logs",
        "logs/keep.log",
        "vendor",
        "vendor/b/README.md",
        "vendor/b/deep/er/README.md",
        "nested/deep/empty",
        "nested/deep/deeper/ok.txt",
        "node_modules/pkg/keep.json",
        "tmp/.hidden",
        "tmp/.gitignore",
        "tmp/.ignore",
        ".gitignore",
        ".git/HEAD",
    ] {
        assert!(found.contains_key(kept), "`{kept}` is kept: {:?}", paths(&whole));
    }
    for left_out in ["logs/a.log", "build", "vendor/a", "vendor/c", "nested/deep/deeper/secret.key", "node_modules/other", "fifo"] {
        assert!(!found.contains_key(left_out), "`{left_out}` is left out");
    }
    assert_eq!(found["links/to-dir"].kind, FoundKind::Symlink("../nested".into()), "a link to a directory is not followed");
    assert_eq!(found["links/dangling"].kind, FoundKind::Symlink("nowhere".into()));
    assert_eq!(found["links/outside"].kind, FoundKind::Symlink("/etc".into()));
    assert!(!found.contains_key("links/ignored-link") && !found.keys().any(|path| path.starts_with("links/to-dir/")));
    assert_eq!(walk(root, "build", None, &ignore, &no_excludes).expect("walks").outcome, Outcome::Ignored("build".into(), 3));
}

/// Two names that are not UTF-8: whichever thread meets its own first, the error names the
/// first in walk order.
#[test]
fn the_error_reported_is_the_first_in_walk_order() {
    let tree = tempfile::tempdir().expect("tempdir");
    let root = tree.path();
    for directory in ["a", "b", "c"] {
        fs::create_dir_all(root.join(directory).join("fine")).expect("mkdir");
    }
    for directory in ["b", "c"] {
        fs::write(root.join(directory).join(OsStr::from_bytes(b"bad\xff")), "x").expect("write");
    }
    let ignore = DockerIgnore::empty();
    for threads in [1, 2, 8] {
        for _ in 0..5 {
            match walk_with_threads(root, "", None, &Rules { ignore: &ignore, excludes: &ignore }, threads) {
                Err(SelectionError::NonUtf8Path { path }) => assert_eq!(path, root.join("b").join(OsStr::from_bytes(b"bad\xff"))),
                other => panic!("expected a non-UTF-8 error, got {other:?}"),
            }
        }
    }
}
