//! Tests of `dockerignore.rs`, kept apart so the module itself stays readable.

use super::*;
use std::fs;

/// `(ignore file, path, expected)`: expected is `None` when included, else the line of the
/// rule that excludes.
const MATCH_TABLE: &[(&str, &str, Option<usize>)] = &[
    // cleaning: ./a, a/, /a, a/b/.. all mean `a`
    ("./a", "a", Some(1)),
    ("a/", "a", Some(1)),
    ("/a", "a", Some(1)),
    ("a/b/..", "a", Some(1)),
    ("//a//b//", "a/b", Some(1)),
    ("/../a", "a", Some(1)),
    ("  a  ", "a", Some(1)),
    // anchored at the root, not gitignore-style basename matching
    ("a", "x/a", None),
    ("b.txt", "dir/b.txt", None),
    // parent-directory matching
    ("a", "a/b/c", Some(1)),
    ("a/b", "a/b/c/d", Some(1)),
    ("a/b", "a/bc", None),
    ("*/tmp", "x/tmp/file", Some(1)),
    // `*` and `?` never cross `/`
    ("*.go", "main.go", Some(1)),
    ("*.go", "cmd/main.go", None),
    ("a*", "abc", Some(1)),
    ("a*c", "ab/c", None),
    ("a?c", "abc", Some(1)),
    ("a?c", "a/c", None),
    ("a?c", "ac", None),
    ("*", "anything/at/all", Some(1)),
    // `**` crosses `/`, also zero directories
    ("**/*.go", "main.go", Some(1)),
    ("**/*.go", "a/b/c/main.go", Some(1)),
    ("a/**/b", "a/b", Some(1)),
    ("a/**/b", "a/x/y/b", Some(1)),
    ("a/**/b", "a/x/yb", None),
    ("**", "x/y/z", Some(1)),
    ("a/**", "a/x/y", Some(1)),
    ("a/**", "a", None),
    ("**/node_modules", "node_modules", Some(1)),
    ("**/node_modules", "web/app/node_modules/x.js", Some(1)),
    ("**foo", "xfoo", Some(1)),
    ("a**b", "ab", Some(1)),
    ("a**b", "ax/b", Some(1)),
    ("a**", "abc/d", Some(1)),
    // character classes and escapes
    ("[a-c].txt", "b.txt", Some(1)),
    ("[a-c].txt", "d.txt", None),
    ("[^a-c].txt", "d.txt", Some(1)),
    ("[^a-c].txt", "a.txt", None),
    ("file[0-9]", "file7", Some(1)),
    ("[ab]x", "bx", Some(1)),
    ("\\*.txt", "*.txt", Some(1)),
    ("\\*.txt", "a.txt", None),
    ("a\\?", "a?", Some(1)),
    ("a\\?", "ab", None),
    ("x.y", "xzy", None),
    ("(a)+{b}|$", "(a)+{b}|$", Some(1)),
    // comments and blank lines
    ("# a\na", "a", Some(2)),
    ("#a", "#a", None),
    ("\n\n  \na", "a", Some(4)),
    ("  # a", "# a", Some(1)),
    ("\u{feff}a", "a", Some(1)),
    // last match wins
    ("a\n!a", "a", None),
    ("!a\na", "a", Some(2)),
    ("*.md\n!README.md", "README.md", None),
    ("*.md\n!README.md", "CHANGES.md", Some(1)),
    ("*.md\n!README.md\nREADME*", "README.md", Some(3)),
    // `!` re-includes inside an excluded directory
    ("a\n!a/b", "a/b", None),
    ("a\n!a/b", "a/b/c", None),
    ("a\n!a/b", "a/c", Some(1)),
    ("a\n!a/b", "a", Some(1)),
    ("a\n! a/b ", "a/b/c", None),
    ("**\n!src/**/*.rs", "src/x/y.rs", None),
    ("**\n!src/**/*.rs", "src/x/y.c", Some(1)),
    // the context root itself is never excluded
    ("*", ".", None),
    ("*", "", None),
    // `.` and `/` as patterns match nothing
    (".", "a", None),
    ("/", "a", None),
];

#[test]
fn matching_table() {
    for &(ignore_file, path, expected) in MATCH_TABLE {
        let rules = DockerIgnore::parse(ignore_file).unwrap_or_else(|error| panic!("{ignore_file:?} failed to parse: {error}"));
        let actual = rules.excluded_by(path).map(|pattern| pattern.line);
        assert_eq!(actual, expected, "ignore file {ignore_file:?}, path {path:?}");
        assert_eq!(rules.is_excluded(path), expected.is_some(), "{ignore_file:?} / {path:?}");
    }
}

#[test]
fn pattern_keeps_text_as_written_and_cleaned_form() {
    let rules = DockerIgnore::parse("  ./build/  \n!/keep/../keep.txt").expect("valid");
    let patterns = rules.patterns();
    assert_eq!(patterns.len(), 2);
    assert_eq!(patterns[0].text, "./build/");
    assert_eq!(patterns[0].cleaned(), "build");
    assert_eq!(patterns[0].line, 1);
    assert!(!patterns[0].is_exception());
    assert_eq!(patterns[1].text, "!/keep/../keep.txt");
    assert_eq!(patterns[1].cleaned(), "keep.txt");
    assert!(patterns[1].is_exception());
}

#[test]
fn bad_patterns_report_their_line() {
    let cases: &[(&str, usize)] =
        &[("ok\n[a", 2), ("a\\", 1), ("x\ny\n[]", 3), ("[a-]", 1), ("[-a]", 1), ("[^]", 1), ("# comment\nfile[", 2)];
    for &(text, line) in cases {
        match DockerIgnore::parse(text) {
            Err(DockerIgnoreError::InvalidPattern { line: actual, .. }) => {
                assert_eq!(actual, line, "{text:?}")
            }
            other => panic!("{text:?}: expected an invalid pattern error, got {other:?}"),
        }
    }
    for text in ["!", "a\n!  ", "!/"] {
        assert!(matches!(DockerIgnore::parse(text), Err(DockerIgnoreError::LoneExclamation { .. })), "{text:?}");
    }
    let message = DockerIgnore::parse("a\n[b").expect_err("invalid").to_string();
    assert_eq!(message, "invalid pattern `[b` on line 2: syntax error in pattern");
}

#[test]
fn may_include_below_follows_fsutil() {
    let table: &[(&str, &str, bool)] = &[
        ("a", "a", false),
        ("a\n!a/b", "a", true),
        ("a\n!a/b/c", "a/b", true),
        ("a\n!a/b", "a/b", true),
        ("a\n!a/b", "c", false),
        ("a\n!ab", "a", false),
        ("a\n!a/b/**", "a", true),
        ("a\n!x/*", "a", false),
        ("a\n!**/keep", "a", true),
        ("a\n!a/*.txt", "a", true),
    ];
    for &(text, dir, expected) in table {
        let rules = DockerIgnore::parse(text).expect("valid");
        assert_eq!(rules.may_include_below(dir), expected, "{text:?} / {dir:?}");
    }
}

#[test]
fn from_patterns_uses_the_same_language() {
    let rules = DockerIgnore::from_patterns(&["*.txt", "", "!keep.txt", "#literal"]).expect("valid");
    assert!(rules.is_excluded("a.txt"));
    assert!(!rules.is_excluded("keep.txt"));
    assert!(!rules.is_excluded("dir/a.txt"));
    assert!(rules.is_excluded("#literal"), "no comments in --exclude values");
    assert_eq!(rules.excluded_by("a.txt").map(|pattern| pattern.line), Some(1));
}

#[test]
fn load_prefers_the_dockerfile_specific_file() {
    let context = tempfile::tempdir().expect("tempdir");
    let dockerfiles = tempfile::tempdir().expect("tempdir");
    let dockerfile = dockerfiles.path().join("app.Dockerfile");
    fs::write(&dockerfile, "FROM scratch\n").expect("write");

    let (used, rules) = DockerIgnore::load(context.path(), Some(&dockerfile)).expect("no files");
    assert_eq!(used, None);
    assert!(rules.patterns().is_empty());

    fs::write(context.path().join(".dockerignore"), "root-rule\n").expect("write");
    let (used, rules) = DockerIgnore::load(context.path(), Some(&dockerfile)).expect("root file");
    assert_eq!(used, Some(context.path().join(".dockerignore")));
    assert!(rules.is_excluded("root-rule"));

    let specific = dockerfiles.path().join("app.Dockerfile.dockerignore");
    fs::write(&specific, "specific-rule\n").expect("write");
    let (used, rules) = DockerIgnore::load(context.path(), Some(&dockerfile)).expect("both files");
    assert_eq!(used, Some(specific));
    assert!(rules.is_excluded("specific-rule"));
    assert!(!rules.is_excluded("root-rule"), "the root file is not merged in");

    let (used, _) = DockerIgnore::load(context.path(), None).expect("no dockerfile");
    assert_eq!(used, Some(context.path().join(".dockerignore")));

    fs::write(context.path().join(".dockerignore"), "[bad\n").expect("write");
    let error = DockerIgnore::load(context.path(), None).expect_err("bad pattern");
    assert!(
        matches!(&error, DockerIgnoreError::Parse { source, .. } if matches!(**source, DockerIgnoreError::InvalidPattern { line: 1, .. })),
        "{error:?}"
    );
}

#[test]
fn clean_path_matches_go() {
    let table: &[(&str, &str)] = &[
        ("", "."),
        (".", "."),
        ("./a", "a"),
        ("a/", "a"),
        ("/a", "/a"),
        ("/", "/"),
        ("a//b/./c/..", "a/b"),
        ("../a", "../a"),
        ("a/../..", ".."),
        ("/../x", "/x"),
        ("!a/..", "."),
    ];
    for &(input, expected) in table {
        assert_eq!(crate::oci::path::clean(input), expected, "{input:?}");
    }
}

#[test]
fn match_pattern_is_go_path_match() {
    let table: &[(&str, &str, bool)] = &[
        ("*.txt", "a.txt", true),
        ("*.txt", "a.txt.bak", false),
        ("?", "a", true),
        ("?", "ab", false),
        ("[a-c]*", "beta", true),
        ("[^a-c]*", "beta", false),
        ("\\*", "*", true),
        ("\\*", "a", false),
        ("hom*", "home", true),
        ("", "", true),
    ];
    for &(pattern, name, expected) in table {
        let compiled = MatchPattern::compile(pattern).expect("valid");
        assert_eq!(compiled.matches(name), expected, "{pattern:?} / {name:?}");
    }
    for bad in ["[", "a\\", "[]", "[a-"] {
        assert!(MatchPattern::compile(bad).is_err(), "{bad:?}");
    }
    assert!(contains_wildcards("a*"));
    assert!(contains_wildcards("[x]"));
    assert!(!contains_wildcards("a\\*"));
    assert!(!contains_wildcards("plain"));
}

/// Regression (found by fuzzing): `*.m*.m*...` against a long name backtracked exponentially
/// and never returned; matching is linear in the pattern times the path now.
#[test]
fn a_pattern_of_many_stars_matches_in_linear_time() {
    let pattern = format!("{}x", "*.m".repeat(60));
    let ignore = DockerIgnore::parse(&pattern).unwrap();
    let path = ".m".repeat(200);
    assert!(!ignore.is_excluded(&path));
    assert!(ignore.is_excluded(&format!("{path}x")));
}
