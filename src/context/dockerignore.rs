//! `.dockerignore` rules: parsing, cleaning and matching, with the semantics of
//! `moby/patternmatcher` (`MatchesOrParentMatches`) and `ignorefile.ReadAll`, which is what
//! BuildKit applies when it transfers a build context.
//!
//! Rules (DESIGN.md section 8), all pinned by the tests below:
//! - A line whose first byte is `#` is a comment (checked *before* trimming, as BuildKit does:
//!   `  # x` is the pattern `# x`). Blank lines are skipped; a UTF-8 BOM on line 1 is dropped.
//! - Leading and trailing whitespace is trimmed; `!` marks an exception (whitespace after it is
//!   trimmed too). The rest is cleaned like Go's `path.Clean` and a leading `/` is dropped, so
//!   `./a`, `a/`, `/a` and `a/b/..` all mean `a`.
//! - Patterns are anchored at the context root. `*` and `?` never match `/`; `**` does (`**/`
//!   also matches nothing, so `**/a` matches `a`); `[a-c]`, `[^a]` are character classes; `\`
//!   escapes the next character.
//! - A path is matched against each pattern and against each of its parent directories; the
//!   last pattern that matches decides, so `!` re-includes what an earlier pattern excluded.
//! - A malformed pattern (unclosed `[`, trailing `\`, a lone `!`) is an error naming its line.
//!
//! BuildKit quirks reproduced on purpose: a pattern made only of literal characters after a
//! leading `**` (`**foo`) is a plain suffix test (`xfoo` matches); `foo/**` does not match `foo`
//! itself (only below it, which parent matching then covers); a `^` outside a class acts as a
//! regex anchor once the pattern has any wildcard (never matches mid-pattern).
//! Deviation: a `*` or `?` inside `[...]` is a literal class member here; Go mangles it into an
//! invalid class, which no real ignore file relies on.
//!
//! The glob engine here is also used by [`super::selection`] for COPY source wildcards, which
//! follow Go's `path.Match` (no `**`), through [`MatchPattern`].

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// One rule of an ignore file.
#[derive(Debug, Clone)]
pub struct Pattern {
    /// The rule as written on its line, trimmed of surrounding whitespace.
    pub text: String,
    /// 1-based line number in the ignore file (for `--exclude` patterns: 1-based position).
    pub line: usize,
    cleaned: String,
    exception: bool,
    matcher: Matcher,
}

impl Pattern {
    /// The cleaned pattern without its `!`, as it is matched.
    pub fn cleaned(&self) -> &str {
        &self.cleaned
    }

    /// Whether the rule starts with `!` (re-includes what it matches).
    pub fn is_exception(&self) -> bool {
        self.exception
    }

    fn matches_path_or_parent(&self, path: &str) -> bool {
        if self.matcher.matches(&self.cleaned, path) {
            return true;
        }
        path.match_indices('/')
            .any(|(index, _)| self.matcher.matches(&self.cleaned, &path[..index]))
    }
}

/// The parsed rules of one ignore file, in file order.
#[derive(Debug, Clone, Default)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
}

#[derive(Debug, thiserror::Error)]
pub enum DockerIgnoreError {
    #[error("invalid pattern `{pattern}` on line {line}: syntax error in pattern")]
    InvalidPattern { pattern: String, line: usize },
    #[error("illegal exclusion pattern `!` on line {line}")]
    LoneExclamation { line: usize },
    #[error("failed to read ignore file `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to parse ignore file `{}`", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<DockerIgnoreError>,
    },
}

impl DockerIgnore {
    /// Parses the text of an ignore file.
    pub fn parse(text: &str) -> Result<DockerIgnore, DockerIgnoreError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut patterns = Vec::new();
        for (index, raw_line) in text.lines().enumerate() {
            if raw_line.starts_with('#') {
                continue;
            }
            if let Some(pattern) = Self::build_pattern(raw_line, index + 1)? {
                patterns.push(pattern);
            }
        }
        Ok(DockerIgnore { patterns })
    }

    /// Builds rules from a list of patterns (COPY `--exclude`), one per entry; no comments.
    pub fn from_patterns<S: AsRef<str>>(patterns: &[S]) -> Result<DockerIgnore, DockerIgnoreError> {
        let mut built = Vec::new();
        for (index, pattern) in patterns.iter().enumerate() {
            if let Some(pattern) = Self::build_pattern(pattern.as_ref(), index + 1)? {
                built.push(pattern);
            }
        }
        Ok(DockerIgnore { patterns: built })
    }

    /// No rules: nothing is excluded.
    pub fn empty() -> DockerIgnore {
        DockerIgnore::default()
    }

    /// The rules in file order.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// `<dockerfile name>.dockerignore` next to the Dockerfile wins over
    /// `<context>/.dockerignore`. Returns the file that was used (for messages) and the parsed
    /// rules; no file at all gives `(None, empty)`.
    pub fn load(
        context_dir: &Path,
        dockerfile: Option<&Path>,
    ) -> Result<(Option<PathBuf>, DockerIgnore), DockerIgnoreError> {
        let mut candidates = Vec::with_capacity(2);
        if let Some(dockerfile) = dockerfile
            && let Some(name) = dockerfile.file_name()
        {
            let mut ignore_name = name.to_os_string();
            ignore_name.push(".dockerignore");
            candidates.push(dockerfile.with_file_name(ignore_name));
        }
        candidates.push(context_dir.join(".dockerignore"));

        for candidate in candidates {
            match fs::read(&candidate) {
                Ok(bytes) => {
                    // Go reads bytes; an invalid sequence can only occur in a pattern that then
                    // fails to match real (UTF-8) paths, so a lossy read changes no outcome.
                    let text = String::from_utf8_lossy(&bytes);
                    let rules =
                        DockerIgnore::parse(&text).map_err(|error| DockerIgnoreError::Parse {
                            path: candidate.clone(),
                            source: Box::new(error),
                        })?;
                    return Ok((Some(candidate), rules));
                }
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => {
                    return Err(DockerIgnoreError::Read {
                        path: candidate,
                        source: error,
                    });
                }
            }
        }
        Ok((None, DockerIgnore::empty()))
    }

    /// For a `/`-separated path relative to the context root: the last rule that matches it or
    /// one of its parents, if that rule excludes; `None` if the path is included.
    pub fn excluded_by(&self, path: &str) -> Option<&Pattern> {
        let path = normalize_relative(path)?;
        // Evaluating every rule and keeping the last match gives the same answer as
        // patternmatcher's skip-optimised loop, and tells which rule decided.
        let last = self
            .patterns
            .iter()
            .rev()
            .find(|pattern| pattern.matches_path_or_parent(&path))?;
        (!last.exception).then_some(last)
    }

    pub fn is_excluded(&self, path: &str) -> bool {
        self.excluded_by(path).is_some()
    }

    /// Whether an excluded directory must still be walked because an exception (`!`) could
    /// re-include something below it. Same test as fsutil's walker: an exception with wildcards
    /// (after dropping a trailing `/**` or `/*`) always could; a literal one could when it lies
    /// below `dir`.
    pub fn may_include_below(&self, dir: &str) -> bool {
        let Some(dir) = normalize_relative(dir) else {
            return self.patterns.iter().any(|pattern| pattern.exception);
        };
        let dir_slash = format!("{dir}/");
        self.patterns
            .iter()
            .filter(|pattern| pattern.exception)
            .any(|pattern| {
                let stem = pattern
                    .cleaned
                    .strip_suffix("/**")
                    .unwrap_or(&pattern.cleaned);
                let stem = stem.strip_suffix("/*").unwrap_or(stem);
                if stem.contains(['*', '[', ']', '?', '^', '\\']) {
                    return true;
                }
                format!("{stem}/").starts_with(&dir_slash)
            })
    }

    /// One line (or `--exclude` value) to a rule; `None` for a blank one.
    fn build_pattern(raw: &str, line: usize) -> Result<Option<Pattern>, DockerIgnoreError> {
        let text = raw.trim();
        if text.is_empty() {
            return Ok(None);
        }
        // ignorefile.ReadAll: split off `!`, clean, drop a leading `/`.
        let (bang, body) = match text.strip_prefix('!') {
            Some(rest) => ("!", rest.trim()),
            None => ("", text),
        };
        let mut body = if body.is_empty() {
            String::new()
        } else {
            clean_path(body)
        };
        if body.len() > 1 && body.starts_with('/') {
            body.remove(0);
        }
        // patternmatcher.New cleans the whole string once more, `!` included, then splits it.
        let whole = clean_path(&format!("{bang}{body}"));
        let (exception, cleaned) = match whole.strip_prefix('!') {
            Some("") => return Err(DockerIgnoreError::LoneExclamation { line }),
            Some(rest) => (true, rest.to_string()),
            None => (false, whole),
        };
        let matcher = Matcher::compile(&cleaned).map_err(|SyntaxError| {
            DockerIgnoreError::InvalidPattern {
                pattern: text.to_string(),
                line,
            }
        })?;
        Ok(Some(Pattern {
            text: text.to_string(),
            line,
            cleaned,
            exception,
            matcher,
        }))
    }
}

/// A cleaned relative path, or `None` for the context root itself (never excluded).
fn normalize_relative(path: &str) -> Option<String> {
    let cleaned = clean_path(path);
    let relative = cleaned.trim_start_matches('/');
    (!relative.is_empty() && relative != ".").then(|| relative.to_string())
}

/// Go's `path.Clean` for `/`-separated paths: drops empty and `.` elements, resolves `..`
/// lexically (never above a leading `/`), returns `.` for an empty result.
pub(crate) fn clean_path(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(".."),
            },
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// Whether one path component holds an unescaped `*`, `?` or `[` (BuildKit's
/// `containsWildcards`: such a component starts the wildcard part of a COPY source).
pub(crate) fn contains_wildcards(component: &str) -> bool {
    let mut chars = component.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' => {
                chars.next();
            }
            '*' | '?' | '[' => return true,
            _ => {}
        }
    }
    false
}

/// A malformed glob (Go's `filepath.ErrBadPattern`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SyntaxError;

/// Go's `path.Match` pattern for one path component (COPY source wildcards).
#[derive(Debug, Clone)]
pub(crate) struct MatchPattern {
    tokens: Vec<Token>,
}

impl MatchPattern {
    pub(crate) fn compile(pattern: &str) -> Result<MatchPattern, SyntaxError> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut position = 0;
        while position < chars.len() {
            let ch = chars[position];
            position += 1;
            match ch {
                '*' => tokens.push(Token::Star),
                '?' => tokens.push(Token::AnyChar),
                '[' => {
                    let (class, next) = parse_class(&chars, position)?;
                    tokens.push(class);
                    position = next;
                }
                '\\' => {
                    let escaped = chars.get(position).ok_or(SyntaxError)?;
                    tokens.push(Token::Literal(*escaped));
                    position += 1;
                }
                other => tokens.push(Token::Literal(other)),
            }
        }
        Ok(MatchPattern { tokens })
    }

    pub(crate) fn matches(&self, name: &str) -> bool {
        let text: Vec<char> = name.chars().collect();
        match_tokens(&self.tokens, &text)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Literal(char),
    /// `?`: one character other than `/`.
    AnyChar,
    /// `*`: any run of characters without `/`.
    Star,
    /// `**` followed by more pattern: nothing, or anything ending in `/`.
    AnyDirectories,
    /// `**` ending the pattern: anything.
    AnyRest,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    /// A `^` that is not first: a regex anchor in the middle, which matches nothing.
    Never,
}

/// How patternmatcher decides a pattern (its `matchType`); only `Glob` uses the tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exact,
    /// `foo**`: the text before `**` is a prefix.
    Prefix,
    /// `**foo` with only literals after: the text after `**` is a suffix.
    Suffix,
    Glob,
}

#[derive(Debug, Clone)]
struct Matcher {
    kind: Kind,
    tokens: Vec<Token>,
}

impl Matcher {
    /// Follows patternmatcher's `compile`, including how each character changes the kind.
    fn compile(cleaned: &str) -> Result<Matcher, SyntaxError> {
        validate_go_syntax(cleaned)?;
        let chars: Vec<char> = cleaned.chars().collect();
        let mut tokens = Vec::new();
        let mut kind = Kind::Exact;
        let mut position = 0;
        let mut iteration = 0;
        while position < chars.len() {
            let ch = chars[position];
            position += 1;
            match ch {
                '*' if chars.get(position) == Some(&'*') => {
                    position += 1;
                    if chars.get(position) == Some(&'/') {
                        position += 1;
                    }
                    if position == chars.len() {
                        if kind == Kind::Exact {
                            kind = Kind::Prefix;
                        } else {
                            tokens.push(Token::AnyRest);
                            kind = Kind::Glob;
                        }
                    } else {
                        tokens.push(Token::AnyDirectories);
                        kind = Kind::Glob;
                    }
                    if iteration == 0 {
                        kind = Kind::Suffix;
                    }
                }
                '*' => {
                    tokens.push(Token::Star);
                    kind = Kind::Glob;
                }
                '?' => {
                    tokens.push(Token::AnyChar);
                    kind = Kind::Glob;
                }
                '\\' => match chars.get(position) {
                    Some(&escaped) => {
                        tokens.push(Token::Literal(escaped));
                        position += 1;
                        kind = Kind::Glob;
                    }
                    None => tokens.push(Token::Literal('\\')),
                },
                '[' => {
                    let (class, next) = parse_class(&chars, position)?;
                    tokens.push(class);
                    position = next;
                    kind = Kind::Glob;
                }
                ']' => {
                    tokens.push(Token::Literal(']'));
                    kind = Kind::Glob;
                }
                // A first `^` doubles the regex's own anchor; any other `^` is an anchor that
                // cannot match. Neither changes the kind, so exact patterns compare it literally.
                '^' if iteration != 0 => tokens.push(Token::Never),
                '^' => {}
                other => tokens.push(Token::Literal(other)),
            }
            iteration += 1;
        }
        Ok(Matcher { kind, tokens })
    }

    fn matches(&self, cleaned: &str, path: &str) -> bool {
        match self.kind {
            Kind::Exact => path == cleaned,
            Kind::Prefix => path.starts_with(&cleaned[..cleaned.len() - 2]),
            Kind::Suffix => {
                let suffix = &cleaned[2..];
                path.ends_with(suffix) || suffix.strip_prefix('/').is_some_and(|rest| path == rest)
            }
            Kind::Glob => {
                let text: Vec<char> = path.chars().collect();
                match_tokens(&self.tokens, &text)
            }
        }
    }
}

/// Parses a class whose `[` was just consumed, with Go's `filepath.Match` rules: optional `^`,
/// then `lo` or `lo-hi` items (`\` escapes), the first item may not be `]` or `-`.
fn parse_class(chars: &[char], mut position: usize) -> Result<(Token, usize), SyntaxError> {
    let mut negated = false;
    if chars.get(position) == Some(&'^') {
        negated = true;
        position += 1;
    }
    let mut ranges = Vec::new();
    loop {
        if chars.get(position) == Some(&']') && !ranges.is_empty() {
            return Ok((Token::Class { negated, ranges }, position + 1));
        }
        let (low, next) = class_char(chars, position)?;
        position = next;
        let mut high = low;
        if chars.get(position) == Some(&'-') {
            let (upper, next) = class_char(chars, position + 1)?;
            high = upper;
            position = next;
        }
        ranges.push((low, high));
    }
}

/// Go's `getEsc`: one class character; also fails when nothing follows it (unclosed class).
fn class_char(chars: &[char], mut position: usize) -> Result<(char, usize), SyntaxError> {
    match chars.get(position) {
        None | Some('-') | Some(']') => return Err(SyntaxError),
        Some('\\') => position += 1,
        Some(_) => {}
    }
    let ch = *chars.get(position).ok_or(SyntaxError)?;
    position += 1;
    if position >= chars.len() {
        return Err(SyntaxError);
    }
    Ok((ch, position))
}

/// The syntax check patternmatcher gets from `filepath.Match(pattern, ".")`.
fn validate_go_syntax(pattern: &str) -> Result<(), SyntaxError> {
    MatchPattern::compile(pattern).map(|_| ())
}

fn match_tokens(tokens: &[Token], text: &[char]) -> bool {
    let Some((token, rest)) = tokens.split_first() else {
        return text.is_empty();
    };
    match token {
        Token::Literal(expected) => {
            text.first() == Some(expected) && match_tokens(rest, &text[1..])
        }
        Token::AnyChar => {
            text.first().is_some_and(|&ch| ch != '/') && match_tokens(rest, &text[1..])
        }
        Token::Class { negated, ranges } => {
            text.first().is_some_and(|&ch| {
                let inside = ranges.iter().any(|&(low, high)| low <= ch && ch <= high);
                inside != *negated
            }) && match_tokens(rest, &text[1..])
        }
        Token::Star => {
            for skip in 0..=text.len() {
                if match_tokens(rest, &text[skip..]) {
                    return true;
                }
                if text.get(skip) == Some(&'/') {
                    break;
                }
            }
            false
        }
        Token::AnyDirectories => {
            match_tokens(rest, text)
                || text
                    .iter()
                    .enumerate()
                    .any(|(index, &ch)| ch == '/' && match_tokens(rest, &text[index + 1..]))
        }
        Token::AnyRest => true,
        Token::Never => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let rules = DockerIgnore::parse(ignore_file)
                .unwrap_or_else(|error| panic!("{ignore_file:?} failed to parse: {error}"));
            let actual = rules.excluded_by(path).map(|pattern| pattern.line);
            assert_eq!(
                actual, expected,
                "ignore file {ignore_file:?}, path {path:?}"
            );
            assert_eq!(
                rules.is_excluded(path),
                expected.is_some(),
                "{ignore_file:?} / {path:?}"
            );
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
        let cases: &[(&str, usize)] = &[
            ("ok\n[a", 2),
            ("a\\", 1),
            ("x\ny\n[]", 3),
            ("[a-]", 1),
            ("[-a]", 1),
            ("[^]", 1),
            ("# comment\nfile[", 2),
        ];
        for &(text, line) in cases {
            match DockerIgnore::parse(text) {
                Err(DockerIgnoreError::InvalidPattern { line: actual, .. }) => {
                    assert_eq!(actual, line, "{text:?}")
                }
                other => panic!("{text:?}: expected an invalid pattern error, got {other:?}"),
            }
        }
        for text in ["!", "a\n!  ", "!/"] {
            assert!(
                matches!(
                    DockerIgnore::parse(text),
                    Err(DockerIgnoreError::LoneExclamation { .. })
                ),
                "{text:?}"
            );
        }
        let message = DockerIgnore::parse("a\n[b")
            .expect_err("invalid")
            .to_string();
        assert_eq!(
            message,
            "invalid pattern `[b` on line 2: syntax error in pattern"
        );
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
        let rules =
            DockerIgnore::from_patterns(&["*.txt", "", "!keep.txt", "#literal"]).expect("valid");
        assert!(rules.is_excluded("a.txt"));
        assert!(!rules.is_excluded("keep.txt"));
        assert!(!rules.is_excluded("dir/a.txt"));
        assert!(
            rules.is_excluded("#literal"),
            "no comments in --exclude values"
        );
        assert_eq!(
            rules.excluded_by("a.txt").map(|pattern| pattern.line),
            Some(1)
        );
    }

    #[test]
    fn load_prefers_the_dockerfile_specific_file() {
        let context = tempfile::tempdir().expect("tempdir");
        let dockerfiles = tempfile::tempdir().expect("tempdir");
        let dockerfile = dockerfiles.path().join("app.Dockerfile");
        fs::write(&dockerfile, "FROM scratch\n").expect("write");

        let (used, rules) =
            DockerIgnore::load(context.path(), Some(&dockerfile)).expect("no files");
        assert_eq!(used, None);
        assert!(rules.patterns().is_empty());

        fs::write(context.path().join(".dockerignore"), "root-rule\n").expect("write");
        let (used, rules) =
            DockerIgnore::load(context.path(), Some(&dockerfile)).expect("root file");
        assert_eq!(used, Some(context.path().join(".dockerignore")));
        assert!(rules.is_excluded("root-rule"));

        let specific = dockerfiles.path().join("app.Dockerfile.dockerignore");
        fs::write(&specific, "specific-rule\n").expect("write");
        let (used, rules) =
            DockerIgnore::load(context.path(), Some(&dockerfile)).expect("both files");
        assert_eq!(used, Some(specific));
        assert!(rules.is_excluded("specific-rule"));
        assert!(
            !rules.is_excluded("root-rule"),
            "the root file is not merged in"
        );

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
            assert_eq!(clean_path(input), expected, "{input:?}");
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
}
