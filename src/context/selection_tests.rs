//! Tests of `selection.rs`, kept apart so the module itself stays readable.

use super::*;
use crate::context::content_hash::NoHashCache;
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

fn write(root: &Path, path: &str, content: &str) {
    let full = root.join(path);
    fs::create_dir_all(full.parent().expect("has parent")).expect("mkdir");
    fs::write(full, content).expect("write");
}

fn sample_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, "src/main.rs", "fn main() {}\n");
    write(root, "src/lib.rs", "pub fn f() {}\n");
    write(root, "src/nested/deep.rs", "// deep\n");
    write(root, "docs/a.md", "# a\n");
    write(root, "docs/b.txt", "b\n");
    write(root, "home.txt", "home\n");
    write(root, "homer.md", "homer\n");
    write(root, "README.md", "readme\n");
    write(root, "secret/key.pem", "key\n");
    write(root, "secret/public.pem", "public\n");
    dir
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| item.to_string()).collect()
}

fn paths(selection: &Selection) -> Vec<&str> {
    selection.entries.iter().map(|entry| entry.path.as_str()).collect()
}

fn select_simple(root: &Path, ignore: &str, sources: &[&str], excludes: &[&str]) -> Result<Selection, SelectionError> {
    let ignore = DockerIgnore::parse(ignore).expect("valid ignore file");
    select(root, &ignore, &strings(sources), &strings(excludes), false, &NoHashCache)
}

#[test]
fn sources_select_files_directories_and_wildcards() {
    let tree = sample_tree();
    let table: &[(&[&str], &[&str])] = &[
        (&["README.md"], &["README.md"]),
        (&["./README.md"], &["README.md"]),
        (&["/README.md"], &["README.md"]),
        (&["../README.md"], &["README.md"]),
        (&["src/../README.md"], &["README.md"]),
        (&["docs"], &["docs", "docs/a.md", "docs/b.txt"]),
        (&["docs/"], &["docs", "docs/a.md", "docs/b.txt"]),
        (&["hom*"], &["home.txt", "homer.md"]),
        (&["*.md"], &["README.md", "homer.md"]),
        (&["src/*.rs"], &["src/lib.rs", "src/main.rs"]),
        (&["*/a.md"], &["docs/a.md"]),
        (&["s?c"], &["src", "src/lib.rs", "src/main.rs", "src/nested", "src/nested/deep.rs"]),
        (&["[d]ocs/[a-b].*"], &["docs/a.md", "docs/b.txt"]),
        (&["home.txt", "docs/a.md", "home.txt"], &["docs/a.md", "home.txt"]),
    ];
    for &(sources, expected) in table {
        let selection = select_simple(tree.path(), "", sources, &[]).unwrap_or_else(|error| panic!("{sources:?}: {error}"));
        assert_eq!(paths(&selection), expected, "sources {sources:?}");
    }
}

#[test]
fn context_root_selects_everything_not_ignored() {
    let tree = sample_tree();
    let selection = select_simple(tree.path(), "secret\n**/*.txt\n", &["."], &[]).expect("selects");
    assert_eq!(
        paths(&selection),
        [".", "README.md", "docs", "docs/a.md", "homer.md", "src", "src/lib.rs", "src/main.rs", "src/nested", "src/nested/deep.rs"]
    );
}

#[test]
fn entries_carry_kind_size_digest_and_mode() {
    let tree = sample_tree();
    let file = tree.path().join("home.txt");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o4755)).expect("chmod");
    fs::set_permissions(tree.path().join("docs"), fs::Permissions::from_mode(0o1750)).expect("chmod");
    let selection = select_simple(tree.path(), "", &["home.txt", "docs"], &[]).expect("selects");
    let by_path: BTreeMap<&str, &Entry> = selection.entries.iter().map(|entry| (entry.path.as_str(), entry)).collect();
    let home = by_path["home.txt"];
    assert_eq!(home.mode, 0o4755);
    let expected_digest = crate::oci::Digest::sha256_of(b"home\n");
    assert_eq!(home.kind, EntryKind::File { size: 5, digest: expected_digest, hard_link: None });
    let metadata = fs::symlink_metadata(&file).expect("stat");
    assert_eq!((home.mtime, i64::from(home.mtime_nanos)), (metadata.mtime(), metadata.mtime_nsec()));
    assert_eq!(by_path["docs"].kind, EntryKind::Directory);
    assert_eq!(by_path["docs"].mode, 0o1750);
    assert!(selection.digest.starts_with("sha256:") && selection.digest.len() == 71);
}

#[test]
fn missing_sources_are_not_found_like_buildkit() {
    let tree = sample_tree();
    let table: &[&str] = &["nope", "src/nope.rs", "README.md/x"];
    // A wildcard that matches nothing selects nothing (BuildKit builds `COPY nomatch* /d/`).
    for source in ["*.nothing", "nope/*", "home.txt/*"] {
        let selection = select_simple(tree.path(), "", &[source], &[]).expect(source);
        assert!(selection.entries.is_empty() && selection.roots == [Vec::<String>::new()], "{source}: {selection:?}");
    }
    for &source in table {
        match select_simple(tree.path(), "", &[source], &[]) {
            Err(SelectionError::NotFound { excluded_by: None, .. }) => {}
            other => panic!("{source:?}: expected not found, got {other:?}"),
        }
    }
    let error = select_simple(tree.path(), "", &["./x/../nope"], &[]).expect_err("missing");
    assert_eq!(error.to_string(), "failed to compute cache key: \"/nope\": not found");
}

#[test]
fn dockerignore_exclusion_names_the_rule() {
    let tree = sample_tree();
    let ignore = "# secrets\nsecret\n*.txt\n";
    let table: &[(&str, &str, usize)] = &[("secret", "secret", 2), ("secret/key.pem", "secret", 2), ("home.txt", "*.txt", 3)];
    // A wildcard whose matches are all ignored matches nothing: it selects nothing.
    for source in ["*.txt", "secre?", "*/key.pem"] {
        let selection = select_simple(tree.path(), ignore, &[source], &[]).expect(source);
        assert!(selection.entries.is_empty(), "{source}: {selection:?}");
    }
    for &(source, rule, line) in table {
        match select_simple(tree.path(), ignore, &[source], &[]) {
            Err(SelectionError::NotFound { excluded_by: Some((text, actual_line)), .. }) => {
                assert_eq!((text.as_str(), actual_line), (rule, line), "{source:?}")
            }
            other => panic!("{source:?}: expected an excluded not-found, got {other:?}"),
        }
    }
    let error = select_simple(tree.path(), ignore, &["secret/key.pem"], &[]).expect_err("excluded");
    assert_eq!(
        error.to_string(),
        "failed to compute cache key: \"/secret/key.pem\": not found (excluded by .dockerignore rule `secret` on line 2)"
    );
    // Ignored matches of a wildcard are dropped silently when others remain.
    let selection = select_simple(tree.path(), "homer.md\n", &["hom*"], &[]).expect("selects");
    assert_eq!(paths(&selection), ["home.txt"]);
}

#[test]
fn exceptions_reinclude_inside_excluded_directories() {
    let tree = sample_tree();
    let selection = select_simple(tree.path(), "secret\n!secret/public.pem\n", &["secret"], &[]).expect("selects");
    assert_eq!(paths(&selection), ["secret", "secret/public.pem"]);

    let selection = select_simple(tree.path(), "src\n!src/**/*.rs\n", &["."], &[]).expect("selects");
    let selected = paths(&selection);
    assert!(selected.contains(&"src/nested/deep.rs") && selected.contains(&"src/nested"), "{selected:?}");

    // Excluded directory with nothing re-included below: gone entirely.
    let selection = select_simple(tree.path(), "docs\n!docs/none\n", &["."], &[]).expect("selects");
    assert!(!paths(&selection).iter().any(|path| path.starts_with("docs")));
}

#[test]
fn copy_excludes_apply_relative_to_each_match() {
    let tree = sample_tree();
    let table: &[(&[&str], &[&str], &[&str])] = &[
        (&["docs"], &["*.txt"], &["docs", "docs/a.md"]),
        (
            &["."],
            &["*/*.txt", "src"],
            &[".", "README.md", "docs", "docs/a.md", "home.txt", "homer.md", "secret", "secret/key.pem", "secret/public.pem"],
        ),
        // `*.rs` does not cross `/`: relative to `src`, `nested/deep.rs` stays
        (&["s*"], &["*.rs"], &["secret", "secret/key.pem", "secret/public.pem", "src", "src/nested", "src/nested/deep.rs"]),
        (&["s*"], &["**/*.rs"], &["secret", "secret/key.pem", "secret/public.pem", "src", "src/nested"]),
        (
            &["s*"],
            &["**/*.rs", "!nested/deep.rs"],
            &["secret", "secret/key.pem", "secret/public.pem", "src", "src/nested", "src/nested/deep.rs"],
        ),
        // the match itself is never tested (BuildKit's `ADD --exclude=* dir* /d`)
        (&["docs"], &["*"], &["docs"]),
        (&["home.txt"], &["*.txt"], &["home.txt"]),
    ];
    for &(sources, excludes, expected) in table {
        let selection =
            select_simple(tree.path(), "", sources, excludes).unwrap_or_else(|error| panic!("{sources:?} {excludes:?}: {error}"));
        assert_eq!(paths(&selection), expected, "{sources:?} minus {excludes:?}");
    }
    assert!(matches!(select_simple(tree.path(), "", &["docs"], &["[bad"]), Err(SelectionError::InvalidExclude(_))));
    assert!(matches!(select_simple(tree.path(), "", &["[bad"], &[]), Err(SelectionError::InvalidSource { .. })));
}

#[test]
fn symlinks_are_recorded_not_followed() {
    let outside = tempfile::tempdir().expect("tempdir");
    write(outside.path(), "passwd", "root:x:0:0\n");
    let tree = sample_tree();
    let root = tree.path();
    symlink(outside.path().join("passwd"), root.join("docs/escape")).expect("symlink");
    symlink("../README.md", root.join("docs/readme-link")).expect("symlink");
    symlink(outside.path(), root.join("outdir")).expect("symlink");

    let selection = select_simple(root, "", &["docs"], &[]).expect("selects");
    let by_path: BTreeMap<&str, &EntryKind> = selection.entries.iter().map(|entry| (entry.path.as_str(), &entry.kind)).collect();
    assert_eq!(by_path["docs/escape"], &EntryKind::Symlink { target: outside.path().join("passwd").to_string_lossy().into_owned() });
    assert_eq!(by_path["docs/readme-link"], &EntryKind::Symlink { target: "../README.md".to_string() });

    // A source that is itself a symlink out of the context leads nowhere inside it: not found,
    // as in BuildKit, and never the target.
    match select_simple(root, "", &["outdir"], &[]) {
        Err(SelectionError::NotFound { .. }) => {}
        other => panic!("expected not found, got {other:?}"),
    }

    // Walking through it would leave the context: an absolute target restarts at the root.
    match select_simple(root, "", &["outdir/passwd"], &[]) {
        Err(SelectionError::NotFound { .. }) => {}
        other => panic!("expected not found, got {other:?}"),
    }
}

#[test]
fn symlinked_directories_in_the_prefix_resolve_inside_the_context() {
    let tree = sample_tree();
    let root = tree.path();
    symlink("src", root.join("code")).expect("symlink");
    symlink("/docs", root.join("absolute-docs")).expect("symlink");
    let selection = select_simple(root, "", &["code/main.rs", "absolute-docs/*.md"], &[]).expect("selects");
    assert_eq!(paths(&selection), ["absolute-docs/a.md", "code/main.rs"]);
    // .dockerignore sees the real path.
    match select_simple(root, "src/main.rs\n", &["code/main.rs"], &[]) {
        Err(SelectionError::NotFound { excluded_by: Some((text, 1)), .. }) => assert_eq!(text, "src/main.rs"),
        other => panic!("expected excluded, got {other:?}"),
    }
    symlink("loop", root.join("loop")).expect("symlink");
    assert!(matches!(select_simple(root, "", &["loop/x"], &[]), Err(SelectionError::TooManyLinks { .. })));
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in walkdir::WalkDir::new(from).sort_by_file_name() {
        let entry = entry.expect("walk");
        let relative = entry.path().strip_prefix(from).expect("inside");
        let target = to.join(relative);
        if entry.file_type().is_dir() {
            fs::create_dir_all(&target).expect("mkdir");
        } else {
            fs::copy(entry.path(), &target).expect("copy");
        }
        let mode = entry.metadata().expect("metadata").permissions();
        fs::set_permissions(&target, mode).expect("chmod");
    }
}

#[test]
fn digest_depends_on_content_and_mode_only() {
    let first = sample_tree();
    let second = tempfile::tempdir().expect("tempdir");
    copy_tree(first.path(), second.path());
    let old = SystemTime::now() - Duration::from_secs(86_400 * 400);
    File::options().write(true).open(second.path().join("src/main.rs")).expect("open").set_modified(old).expect("set mtime");

    let digest_of = |root: &Path| select_simple(root, "", &["src", "docs"], &[]).expect("selects").digest;
    let original = digest_of(first.path());
    assert_eq!(digest_of(second.path()), original, "same content elsewhere with other mtimes");

    write(second.path(), "src/main.rs", "fn main() {}\r");
    let changed_byte = digest_of(second.path());
    assert_ne!(changed_byte, original, "one byte changed");

    write(second.path(), "src/main.rs", "fn main() {}\n");
    assert_eq!(digest_of(second.path()), original, "byte restored");
    fs::set_permissions(second.path().join("src/main.rs"), fs::Permissions::from_mode(0o755)).expect("chmod");
    assert_ne!(digest_of(second.path()), original, "mode changed");
}

/// The digest is a cache key: the same selection must give the same digest in every version of
/// rbuild (or every cached COPY misses once). Pinned from the digest as hashed field by field,
/// before its fields went through a buffer.
#[test]
fn the_digest_of_a_known_tree_never_changes() {
    let tree = tempfile::tempdir().expect("tempdir");
    write(tree.path(), "a/one.txt", "one\n");
    write(tree.path(), "a/b/two.txt", "two\n");
    fs::set_permissions(tree.path().join("a"), fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::set_permissions(tree.path().join("a/b"), fs::Permissions::from_mode(0o750)).expect("chmod");
    fs::set_permissions(tree.path().join("a/one.txt"), fs::Permissions::from_mode(0o644)).expect("chmod");
    fs::set_permissions(tree.path().join("a/b/two.txt"), fs::Permissions::from_mode(0o4755)).expect("chmod");
    symlink("one.txt", tree.path().join("a/link")).expect("symlink");
    let selection = select_simple(tree.path(), "", &["a"], &[]).expect("selects");
    assert_eq!(selection.digest, "sha256:a537e4bebba5548865a74ce44610a3ee5363e291de9fde1cd16209ac6a5dd839");
}

#[derive(Default)]
struct RecordingCache {
    stored: Mutex<Vec<(StatKey, Digest)>>,
    lookups: Mutex<Vec<PathBuf>>,
    answer: Option<Digest>,
}

impl HashCache for RecordingCache {
    fn get(&self, key: &StatKey) -> Option<Digest> {
        self.lookups.lock().expect("lock").push(key.path.clone());
        self.answer.clone()
    }

    fn put(&self, key: &StatKey, digest: &Digest) {
        self.stored.lock().expect("lock").push((key.clone(), digest.clone()));
    }
}

#[test]
fn cache_is_consulted_by_stat_key() {
    let tree = sample_tree();
    let ignore = DockerIgnore::empty();
    let cache = RecordingCache::default();
    let selection = select(tree.path(), &ignore, &strings(&["docs"]), &[], false, &cache).expect("selects");
    let stored = cache.stored.lock().expect("lock").clone();
    assert_eq!(stored.len(), 2, "both files hashed and stored");
    let canonical = fs::canonicalize(tree.path()).expect("canonical");
    let (key, digest) = stored.iter().find(|(key, _)| key.path.ends_with("docs/a.md")).expect("a.md stored");
    assert_eq!(key.path, canonical.join("docs/a.md"));
    assert_eq!(key.stamp.size, 4);
    assert!(key.stamp.inode != 0 && key.stamp.mtime_nanos > 0 && key.stamp.ctime_nanos > 0);
    let entry = selection.entries.iter().find(|entry| entry.path == "docs/a.md").expect("entry");
    assert_eq!(entry.kind, EntryKind::File { size: 4, digest: digest.clone(), hard_link: None });

    // A hit is trusted without reading the file: the answer shows up in the entry.
    let cached = Digest::sha256_of(b"cached");
    let hit = RecordingCache { answer: Some(cached.clone()), ..RecordingCache::default() };
    let selection = select(tree.path(), &ignore, &strings(&["docs/a.md"]), &[], false, &hit).expect("selects");
    assert_eq!(selection.entries[0].kind, EntryKind::File { size: 4, digest: cached, hard_link: None });
    assert_eq!(hit.lookups.lock().expect("lock").len(), 1);
    assert!(hit.stored.lock().expect("lock").is_empty());
}

#[test]
fn only_reachable_files_are_hashed() {
    let tree = sample_tree();
    let cache = RecordingCache::default();
    let sources = strings(&["src/*.rs", "docs/a.md"]);
    select(tree.path(), &DockerIgnore::empty(), &sources, &[], false, &cache).expect("selects");
    let mut looked_up: Vec<String> =
        cache.lookups.lock().expect("lock").iter().map(|path| path.file_name().expect("name").to_string_lossy().into_owned()).collect();
    looked_up.sort();
    assert_eq!(looked_up, ["a.md", "lib.rs", "main.rs"]);
}

/// Regression: `COPY lnk/passwd /x` with `lnk -> /etc` and a context file `etc/passwd` copied the
/// host's /etc/passwd, because the copy read `context/lnk/passwd` on the host while the digest
/// came from `context/etc/passwd`. Every entry's real path is inside the context.
#[test]
fn entries_are_read_from_their_path_inside_the_context() {
    let tree = sample_tree();
    let root = tree.path();
    write(root, "etc/passwd", "context passwd\n");
    symlink("/etc", root.join("lnk")).expect("symlink");
    symlink("/etc/passwd", root.join("file-link")).expect("symlink");
    let canonical = fs::canonicalize(root).unwrap();
    for source in ["lnk/passwd", "file-link", "fil*-link"] {
        let selection = select_simple(root, "", &[source], &[]).expect("selects");
        assert_eq!(selection.entries.len(), 1, "{source}");
        let entry = &selection.entries[0];
        assert_eq!(entry.real, canonical.join("etc/passwd"), "{source}");
        assert!(matches!(entry.kind, EntryKind::File { size: 15, .. }), "{source}: {:?}", entry.kind);
    }
}

/// `COPY --parents`: `**` matches any number of directories, `--exclude` sees the path after the
/// pivot, a pivot with nothing after it is not found, and each source's roots are recorded
/// (conformance cases copy-parents-*, recorded from the oracle).
#[test]
fn parents_rules_and_roots() {
    let tree = tempfile::tempdir().expect("tempdir");
    let root = tree.path();
    for path in ["x.txt", "a/x.txt", "a/b/x.txt", "a/b/skip.txt", "a/b/keep.txt"] {
        write(root, path, "x\n");
    }
    let parents = |sources: &[&str], excludes: &[&str]| {
        select(root, &DockerIgnore::empty(), &strings(sources), &strings(excludes), true, &NoHashCache)
    };
    let selection = parents(&["**/x.txt"], &[]).expect("selects");
    assert_eq!(selection.roots, [["a/b/x.txt", "a/x.txt", "x.txt"]]);
    let selection = parents(&["./a/./b/*.txt"], &["b/skip.txt"]).expect("selects");
    assert_eq!(selection.roots, [["a/b/keep.txt", "a/b/x.txt"]]);
    assert!(matches!(parents(&["./a/./"], &[]), Err(SelectionError::NotFound { source, .. }) if source == "/a"));
    // Without --parents, `**` is one directory, like `*`.
    let selection = select_simple(root, "", &["**/x.txt", "nomatch*"], &[]).expect("selects");
    assert_eq!(selection.roots, [vec!["a/x.txt".to_string()], vec![]]);
}
