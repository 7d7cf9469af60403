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

use std::io;
use std::path::{Path, PathBuf};

use crate::oci::path::clean;

/// The largest `.dockerignore` read: more is an error, never a read without end.
const IGNORE_FILE_LIMIT: u64 = 16 << 20;

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
        path.match_indices('/').any(|(index, _)| self.matcher.matches(&self.cleaned, &path[..index]))
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
    pub fn load(context_dir: &Path, dockerfile: Option<&Path>) -> Result<(Option<PathBuf>, DockerIgnore), DockerIgnoreError> {
        for candidate in Self::candidates(context_dir, dockerfile) {
            // Read inside the directory it lies in, as BuildKit receives it: a link out of it
            // leads nowhere (the file then does not count), and a huge file is an error.
            let (Some(directory), Some(name)) = (candidate.parent(), candidate.file_name()) else { continue };
            let bytes = super::in_root::read_file(directory, &name.to_string_lossy(), IGNORE_FILE_LIMIT)
                .map_err(|error| DockerIgnoreError::Read { path: candidate.clone(), source: error })?;
            let Some(bytes) = bytes else { continue };
            // Go reads bytes; an invalid sequence can only occur in a pattern that then
            // fails to match real (UTF-8) paths, so a lossy read changes no outcome.
            let text = String::from_utf8_lossy(&bytes);
            let rules = DockerIgnore::parse(&text)
                .map_err(|error| DockerIgnoreError::Parse { path: candidate.clone(), source: Box::new(error) })?;
            return Ok((Some(candidate), rules));
        }
        Ok((None, DockerIgnore::empty()))
    }

    /// The ignore files that may apply, in order of precedence: `<dockerfile name>.dockerignore`
    /// next to the Dockerfile, then `<context>/.dockerignore`.
    pub fn candidates(context_dir: &Path, dockerfile: Option<&Path>) -> Vec<PathBuf> {
        let mut candidates = Vec::with_capacity(2);
        if let Some(dockerfile) = dockerfile
            && let Some(name) = dockerfile.file_name()
        {
            let mut ignore_name = name.to_os_string();
            ignore_name.push(".dockerignore");
            candidates.push(dockerfile.with_file_name(ignore_name));
        }
        candidates.push(context_dir.join(".dockerignore"));
        candidates
    }

    /// For a `/`-separated path relative to the context root: the last rule that matches it or
    /// one of its parents, if that rule excludes; `None` if the path is included.
    pub fn excluded_by(&self, path: &str) -> Option<&Pattern> {
        // The walk asks this of every entry, twice (`.dockerignore`, `--exclude`), and most
        // builds have no `--exclude`: cleaning the path for no rule at all showed in profiles.
        if self.patterns.is_empty() {
            return None;
        }
        let path = normalize_relative(path)?;
        // Evaluating every rule and keeping the last match gives the same answer as
        // patternmatcher's skip-optimised loop, and tells which rule decided.
        let last = self.patterns.iter().rev().find(|pattern| pattern.matches_path_or_parent(&path))?;
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
        self.patterns.iter().filter(|pattern| pattern.exception).any(|pattern| {
            let stem = pattern.cleaned.strip_suffix("/**").unwrap_or(&pattern.cleaned);
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
        let mut body = if body.is_empty() { String::new() } else { clean(body) };
        if body.len() > 1 && body.starts_with('/') {
            body.remove(0);
        }
        // patternmatcher.New cleans the whole string once more, `!` included, then splits it.
        let whole = clean(&format!("{bang}{body}"));
        let (exception, cleaned) = match whole.strip_prefix('!') {
            Some("") => return Err(DockerIgnoreError::LoneExclamation { line }),
            Some(rest) => (true, rest.to_string()),
            None => (false, whole),
        };
        let matcher =
            Matcher::compile(&cleaned).map_err(|SyntaxError| DockerIgnoreError::InvalidPattern { pattern: text.to_string(), line })?;
        Ok(Some(Pattern { text: text.to_string(), line, cleaned, exception, matcher }))
    }
}

/// A cleaned relative path, or `None` for the context root itself (never excluded).
fn normalize_relative(path: &str) -> Option<String> {
    let cleaned = clean(path);
    let relative = cleaned.trim_start_matches('/');
    (!relative.is_empty() && relative != ".").then(|| relative.to_string())
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

/// Whether `tokens` match all of `text`. Simulated over the set of reachable positions, one
/// token at a time (O(tokens × text)): a backtracking match took exponential time on a hostile
/// pattern such as `*.m*.m*.m*...` (found by fuzzing; the build never finished).
fn match_tokens(tokens: &[Token], text: &[char]) -> bool {
    let mut reachable = vec![false; text.len() + 1];
    reachable[0] = true;
    for token in tokens {
        let mut next = vec![false; text.len() + 1];
        match token {
            Token::Literal(_) | Token::AnyChar | Token::Class { .. } => {
                for (position, &ch) in text.iter().enumerate() {
                    next[position + 1] = reachable[position] && single_char_matches(token, ch);
                }
            }
            Token::Star => {
                // Any run without `/`.
                let mut running = false;
                for position in 0..=text.len() {
                    running = reachable[position] || (running && position > 0 && text[position - 1] != '/');
                    next[position] = running;
                }
            }
            Token::AnyDirectories => {
                // Nothing, or anything that ends in `/`.
                let mut seen = false;
                for position in 0..=text.len() {
                    next[position] = reachable[position] || (seen && text[position - 1] == '/');
                    seen |= reachable[position];
                }
            }
            Token::AnyRest => {
                let mut seen = false;
                for position in 0..=text.len() {
                    seen |= reachable[position];
                    next[position] = seen;
                }
            }
            Token::Never => {}
        }
        reachable = next;
        if !reachable.contains(&true) {
            return false;
        }
    }
    reachable[text.len()]
}

fn single_char_matches(token: &Token, ch: char) -> bool {
    match token {
        Token::Literal(expected) => ch == *expected,
        Token::AnyChar => ch != '/',
        Token::Class { negated, ranges } => ranges.iter().any(|&(low, high)| low <= ch && ch <= high) != *negated,
        _ => false,
    }
}

#[cfg(test)]
#[path = "dockerignore_tests.rs"]
mod tests;
