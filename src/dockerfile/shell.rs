//! Dockerfile word expansion: quotes, the escape character and `$` parameter expansion, with the
//! semantics of BuildKit's `frontend/dockerfile/shell` lexer (`ProcessWord`, `ProcessWords`).
//!
//! Role: turn one raw instruction argument into its final text ([`Lexer::process_word`]) or into
//! the list of words a shell would see ([`Lexer::process_words`]). Pure: no I/O, the environment
//! comes in as a lookup function (`Some` = set, possibly empty; `None` = unset).
//!
//! Supported syntax, as BuildKit: `'...'` (literal), `"..."` (the escape character only escapes
//! `"`, `$` and itself; backquotes are not command substitution), the escape character outside
//! quotes (`\` by default, a backtick after an `escape` parser directive), `$NAME`, `${NAME}`, positional (`$1`, `$001`)
//! and special (`$@ $* $# $? $- $$ $! $0`) parameters, which are looked up like any name and are
//! normally unset, and `${NAME<op>word}` with `:-  -  :+  +  :?  ?  #  ##  %  %%  /  //` where
//! `word` may itself contain quotes and expansions.
//!
//! Invariants and deliberate BuildKit compatibility (each one pinned by a test):
//! - Unquoted text from an expansion is split on white space by `process_words`; quoted text and
//!   escaped characters never split. A word that ends up empty (`""`) is dropped, as in BuildKit.
//! - Patterns (`#`, `%`, `/`) keep their escape characters while being read (the pattern language
//!   has its own escapes: `\*`, `\?`, `\\`, and `\}` / `\/` for the delimiters); any other `\x`
//!   is an error. The replacement of `${V/p/r}` keeps escape characters literally too.
//! - `*` and `?` never match a newline (BuildKit turns patterns into Go regular expressions where
//!   `.` excludes `\n`); `${V//p/r}` expands `$$`, `$0` and `$name` in `r` the way Go's
//!   `Regexp.ReplaceAllString` does, while `${V/p/r}` uses `r` literally.
//! - Errors carry BuildKit's full wording, wrapper included:
//!   `failed to process "${X:?msg}": X: msg`.
//!
//! Decision: patterns are matched by a small position-set automaton instead of a regular
//! expression crate. The pattern language has only literals, `?` and `*`, so "longest" and
//! "shortest" are simply the largest or smallest reachable end; this keeps the module free of
//! dependencies and gives the same answers as BuildKit's greedy/lazy regular expressions (for
//! patterns of fixed-width pieces and stars, leftmost-first preference picks exactly the extreme
//! end). Trade-off: O(value × pattern) per start position, irrelevant for Dockerfile values.
//! The pattern language lives in `shell_pattern.rs`.

use super::shell_pattern::{Pattern, trim_prefix, trim_suffix};
use crate::oci::go_quote;

/// Expands Dockerfile words. `escape` is the Dockerfile escape character: `\` by default, a
/// backtick when the Dockerfile starts with the parser directive `# escape=` and a backtick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    pub escape: char,
}

/// A word could not be expanded; `message` is BuildKit's wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ShellError {
    pub message: String,
}

impl Default for Lexer {
    fn default() -> Self {
        Self::new('\\')
    }
}

impl Lexer {
    #[must_use]
    pub fn new(escape: char) -> Self {
        Self { escape }
    }

    /// One word, quotes removed, expansions applied (like BuildKit `ProcessWord`); white space
    /// inside the word is kept.
    ///
    /// # Errors
    /// Unterminated quotes or `${`, unsupported modifiers, invalid patterns, and `${V:?msg}` /
    /// `${V?msg}` on a missing variable; the message is BuildKit's, e.g.
    /// `failed to process "${X:?msg}": X: msg`.
    pub fn process_word(&self, word: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, ShellError> {
        self.process(word, env).map(|expansion| expansion.text)
    }

    /// Split into words with expansion (like BuildKit `ProcessWords`): unquoted white space,
    /// including white space produced by an unquoted expansion, separates words; empty words
    /// are dropped.
    ///
    /// # Errors
    /// The same as [`Lexer::process_word`].
    pub fn process_words(&self, word: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<String>, ShellError> {
        self.process(word, env).map(|expansion| expansion.words.finish())
    }

    /// The body of a heredoc with an unquoted delimiter (like BuildKit's lexer with
    /// `SkipProcessQuotes`): quotes are ordinary characters, kept and not special, so `'$V'`
    /// expands; `$` expansions work as outside quotes, and `\` escapes whatever the Dockerfile's
    /// escape directive says (measured with the oracle: after `# escape=` and a backtick, a
    /// heredoc body still takes `\n` as `n` and keeps backticks).
    ///
    /// # Errors
    /// The same as [`Lexer::process_word`].
    pub fn process_heredoc(&self, body: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, ShellError> {
        Lexer::new('\\').process_with(body, env, true).map(|expansion| expansion.text)
    }

    /// A step's name as BuildKit shows it in progress (`processCmdEnv`): variables that are set
    /// expanded, operators included; an unset one left as written (`${U:-d}` stays); quotes kept
    /// with their contents processed; escapes removed. On an error, the text as written.
    pub fn process_progress_name(&self, text: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
        let mut scanner = WordScanner::new(text, self.escape, env);
        scanner.progress_name = true;
        scanner.process_until(None, false).map_or_else(|_| text.to_string(), |expansion| expansion.text)
    }

    fn process(&self, word: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Expansion, ShellError> {
        self.process_with(word, env, false)
    }

    fn process_with(&self, word: &str, env: &dyn Fn(&str) -> Option<String>, skip_quotes: bool) -> Result<Expansion, ShellError> {
        let mut scanner = WordScanner::new(word, self.escape, env);
        scanner.skip_quotes = skip_quotes;
        scanner
            .process_until(None, false)
            .map_err(|reason| ShellError { message: format!("failed to process {}: {reason}", go_quote(word)) })
    }
}

/// What one pass of [`WordScanner::process_until`] produced: the joined text and its split form.
struct Expansion {
    text: String,
    words: Words,
}

/// Accumulates shell words. `in_word` becomes true as soon as anything quoted or escaped was
/// added, even if empty, which matters only for where splitting happens (BuildKit's rules).
#[derive(Default)]
struct Words {
    finished: Vec<String>,
    current: String,
    in_word: bool,
}

impl Words {
    /// Adds unquoted text: white space separates words.
    fn add_splitting_char(&mut self, character: char) {
        if !character.is_whitespace() {
            self.add_literal_char(character);
        } else if self.in_word && !self.current.is_empty() {
            self.finished.push(std::mem::take(&mut self.current));
            self.in_word = false;
        }
    }

    fn add_splitting_text(&mut self, text: &str) {
        text.chars().for_each(|character| self.add_splitting_char(character));
    }

    /// Adds quoted or escaped text: never splits.
    fn add_literal_char(&mut self, character: char) {
        self.current.push(character);
        self.in_word = true;
    }

    fn add_literal_text(&mut self, text: &str) {
        self.current.push_str(text);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.current.is_empty() {
            self.finished.push(self.current);
        }
        self.finished
    }
}

/// The reason an expansion failed, before it is wrapped with the word (BuildKit's inner error).
pub(super) type Reason = String;

const MISSING_BRACE: &str = "syntax error: missing '}'";

/// The deepest `${A:-${B:-...}}` expanded (BuildKit, in Go, has only its stack's limit; 60,000
/// levels were measured to fit rbuild's build thread several times over).
const MAX_NESTING: usize = 100_000;

/// Cursor over one word. Positions are in `char`s: BuildKit scans runes, and every operation
/// here (names, `?` in patterns, splitting) is defined per character.
struct WordScanner<'a> {
    characters: Vec<char>,
    position: usize,
    escape: char,
    /// Quotes are ordinary characters ([`Lexer::process_heredoc`]).
    skip_quotes: bool,
    /// Quotes are kept and unset variables left as written ([`Lexer::process_progress_name`]).
    progress_name: bool,
    /// How many `$` expansions enclose the cursor.
    depth: usize,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> WordScanner<'a> {
    fn new(word: &str, escape: char, env: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self { characters: characters_without_bom(word), position: 0, escape, skip_quotes: false, progress_name: false, depth: 0, env }
    }

    fn peek(&self) -> Option<char> {
        self.characters.get(self.position).copied()
    }

    fn next(&mut self) -> Option<char> {
        let character = self.peek()?;
        self.position += 1;
        Some(character)
    }

    /// Reads up to (and consumes) `stop`, or to the end of the word when `stop` is `None`.
    /// `raw_escapes` keeps escape characters in the output (used for patterns).
    fn process_until(&mut self, stop: Option<char>, raw_escapes: bool) -> Result<Expansion, Reason> {
        let mut text = String::new();
        let mut words = Words::default();
        while let Some(character) = self.peek() {
            if Some(character) == stop {
                self.position += 1;
                return Ok(Expansion { text, words });
            }
            match character {
                '$' => {
                    let value = self.process_dollar()?;
                    text.push_str(&value);
                    words.add_splitting_text(&value);
                }
                '\'' if !self.skip_quotes => {
                    let value = self.process_single_quote()?;
                    let value = if self.progress_name { format!("'{value}'") } else { value };
                    text.push_str(&value);
                    words.add_literal_text(&value);
                }
                '"' if !self.skip_quotes => {
                    let value = self.process_double_quote(raw_escapes)?;
                    let value = if self.progress_name { format!("\"{value}\"") } else { value };
                    text.push_str(&value);
                    words.add_literal_text(&value);
                }
                _ => {
                    self.position += 1;
                    if character != self.escape {
                        text.push(character);
                        words.add_splitting_char(character);
                        continue;
                    }
                    if raw_escapes {
                        text.push(character);
                        words.add_literal_char(character);
                    }
                    // An escape character at the very end escapes nothing and disappears.
                    let Some(escaped) = self.next() else { break };
                    text.push(escaped);
                    words.add_literal_char(escaped);
                }
            }
        }
        match stop {
            Some(stop) => Err(format!("unexpected end of statement while looking for matching {stop}")),
            None => Ok(Expansion { text, words }),
        }
    }

    fn process_single_quote(&mut self) -> Result<String, Reason> {
        self.position += 1;
        let mut text = String::new();
        loop {
            match self.next() {
                None => {
                    return Err("unexpected end of statement while looking for matching single-quote".to_owned());
                }
                Some('\'') => return Ok(text),
                Some(character) => text.push(character),
            }
        }
    }

    fn process_double_quote(&mut self, raw_escapes: bool) -> Result<String, Reason> {
        self.position += 1;
        let mut text = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err("unexpected end of statement while looking for matching double-quote".to_owned());
                }
                Some('"') => {
                    self.position += 1;
                    return Ok(text);
                }
                Some('$') => text.push_str(&self.process_dollar()?),
                Some(mut character) => {
                    self.position += 1;
                    if character == self.escape {
                        if raw_escapes {
                            text.push(character);
                        }
                        match self.peek() {
                            // Left for the loop, which reports the missing closing quote.
                            None => continue,
                            Some(next) if next == '"' || next == '$' || next == self.escape => {
                                character = next;
                                self.position += 1;
                            }
                            // Any other escape stays literal inside double quotes.
                            Some(_) => {}
                        }
                    }
                    text.push(character);
                }
            }
        }
    }

    /// Expands the `$...` at the cursor.
    fn process_dollar(&mut self) -> Result<String, Reason> {
        // Each nested `${...}` is a level of recursion: bounded, so a hostile line fails with a
        // message instead of overflowing the stack.
        if self.depth >= MAX_NESTING {
            return Err(format!("expansions nested deeper than {MAX_NESTING} levels"));
        }
        self.depth += 1;
        let result = self.process_dollar_at_depth();
        self.depth -= 1;
        result
    }

    fn process_dollar_at_depth(&mut self) -> Result<String, Reason> {
        if !self.progress_name {
            return self.expand_dollar();
        }
        // A progress name keeps an expansion of an unset variable as written, operator and all.
        let start = self.position;
        let name = self.peek_dollar_name();
        let result = self.expand_dollar();
        if !name.is_empty() && self.lookup(&name).is_none() {
            return Ok(self.characters[start..self.position].iter().collect());
        }
        result
    }

    /// The name after the `$` (or `${`) at the cursor, which does not move.
    fn peek_dollar_name(&mut self) -> String {
        let start = self.position;
        self.position += 1;
        if self.peek() == Some('{') {
            self.position += 1;
        }
        let name = self.process_name();
        self.position = start;
        name
    }

    fn expand_dollar(&mut self) -> Result<String, Reason> {
        self.position += 1;
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_owned());
            }
            return Ok(self.lookup(&name).unwrap_or_default());
        }
        self.position += 1;
        match self.peek() {
            None => return Err(MISSING_BRACE.to_owned()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".to_owned()),
            Some(_) => {}
        }
        let name = self.process_name();
        match self.next() {
            Some('}') => Ok(self.lookup(&name).unwrap_or_default()),
            Some(':') => {
                let operator = self.next();
                let spelled = format!(":{}", go_char(operator));
                self.apply_operator(&name, operator, true, &spelled)
            }
            Some(operator @ ('+' | '-' | '?' | '#' | '%')) => self.apply_operator(&name, Some(operator), false, &operator.to_string()),
            Some('/') => self.substitute(&name),
            other => Err(unsupported_modifier(&go_char(other))),
        }
    }

    /// `${name<operator>word}` for every operator but `/`. `empty_is_unset` is the `:` form.
    fn apply_operator(&mut self, name: &str, operator: Option<char>, empty_is_unset: bool, spelled: &str) -> Result<String, Reason> {
        let is_pattern = matches!(operator, Some('#' | '%'));
        let word = self.process_until_brace(is_pattern)?;
        let value = self.lookup(name);
        let is_missing = match &value {
            None => true,
            Some(value) => empty_is_unset && value.is_empty(),
        };
        match operator {
            Some('-') => Ok(if is_missing { word } else { value.unwrap_or_default() }),
            Some('+') => Ok(if is_missing { String::new() } else { word }),
            Some('?') => match value {
                Some(value) if !is_missing => Ok(value),
                _ => {
                    let message = if !word.is_empty() {
                        word
                    } else if value.is_none() {
                        "is not allowed to be unset".to_owned()
                    } else {
                        "is not allowed to be empty".to_owned()
                    };
                    Err(format!("{name}: {message}"))
                }
            },
            Some(operator @ ('#' | '%')) => {
                let (pattern, longest) = match word.strip_prefix(operator) {
                    Some(rest) => (rest.to_owned(), true),
                    None => (word, false),
                };
                let value = value.unwrap_or_default();
                if operator == '#' { trim_prefix(&pattern, &value, longest) } else { trim_suffix(&pattern, &value, longest) }
            }
            _ => Err(unsupported_modifier(spelled)),
        }
    }

    /// `${name/pattern/replacement}` and `${name//pattern/replacement}`.
    fn substitute(&mut self, name: &str) -> Result<String, Reason> {
        let replace_all = self.peek() == Some('/');
        if replace_all {
            self.position += 1;
        }
        let pattern = match self.process_until(Some('/'), true) {
            Ok(expansion) => expansion.text,
            Err(_) if self.peek().is_none() => {
                return Err("syntax error: missing '/' in ${}".to_owned());
            }
            Err(reason) => return Err(reason),
        };
        let replacement = self.process_until_brace(true)?;
        let value = self.lookup(name).unwrap_or_default();
        let pattern = Pattern::parse(&pattern).map_err(|reason| invalid_pattern(&pattern, &reason))?;
        let value: Vec<char> = value.chars().collect();
        Ok(if replace_all { pattern.replace_all(&value, &replacement) } else { pattern.replace_first(&value, &replacement) })
    }

    /// Reads the word of `${name<op>word}` up to its closing brace.
    fn process_until_brace(&mut self, raw_escapes: bool) -> Result<String, Reason> {
        match self.process_until(Some('}'), raw_escapes) {
            Ok(expansion) => Ok(expansion.text),
            Err(_) if self.peek().is_none() => Err(MISSING_BRACE.to_owned()),
            Err(reason) => Err(reason),
        }
    }

    /// A parameter name: digits only when it starts with a digit (`$10` is parameter 10), one
    /// special character, or letters, digits and `_`. Empty when none of these follows.
    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(character) = self.peek() {
            if name.is_empty() && character.is_numeric() {
                while let Some(digit) = self.peek().filter(|next| next.is_numeric()) {
                    name.push(digit);
                    self.position += 1;
                }
                return name;
            }
            if name.is_empty() && is_special_parameter(character) {
                self.position += 1;
                return character.to_string();
            }
            if !(character.is_alphanumeric() || character == '_') {
                break;
            }
            name.push(character);
            self.position += 1;
        }
        name
    }

    fn lookup(&self, name: &str) -> Option<String> {
        (self.env)(name)
    }
}

fn is_special_parameter(character: char) -> bool {
    matches!(character, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

fn unsupported_modifier(spelled: &str) -> Reason {
    format!("unsupported modifier ({spelled}) in substitution")
}

pub(super) fn invalid_pattern(pattern: &str, reason: &str) -> Reason {
    format!("invalid pattern ({pattern}) in substitution: {reason}")
}

/// Go's `string(rune)` of a scanner result: the end of input (-1) prints as U+FFFD.
pub(super) fn go_char(character: Option<char>) -> String {
    character.unwrap_or(char::REPLACEMENT_CHARACTER).to_string()
}

/// Go's `text/scanner` silently skips a byte order mark at the start of its input; so do we, so
/// that a word (or pattern) starting with U+FEFF expands as in BuildKit.
pub(super) fn characters_without_bom(text: &str) -> Vec<char> {
    text.strip_prefix('\u{feff}').unwrap_or(text).chars().collect()
}

#[cfg(test)]
#[path = "shell_tests.rs"]
mod tests;
