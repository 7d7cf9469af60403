//! Dockerfile syntax: bytes → parser directives and raw [`Instruction`]s with their spans.
//!
//! This is BuildKit's `frontend/dockerfile/parser` stage. It decodes the text (UTF-8 BOM
//! stripped, CRLF → LF), reads the parser directives at the top (`# syntax=`, `# escape=`,
//! `# check=`), joins continuation lines, drops comment lines, splits each instruction into
//! keyword, `--flags` and arguments, picks the JSON (exec) form where the instruction allows it,
//! and reads heredoc bodies for RUN, COPY and ADD (also behind ONBUILD). It neither expands
//! variables (`shell.rs` does, later) nor checks what the arguments mean (`instruction.rs`).
//!
//! Invariants:
//! - Every [`Instruction`] has a 1-based inclusive [`Span`] covering its first line, its
//!   continuation lines and its heredoc bodies with their terminators.
//! - The errors returned here are the ones BuildKit raises while parsing (invalid escape token,
//!   repeated directive, JSON arrays of non-strings, unterminated heredoc, `ENV`/`LABEL`
//!   without `=`, empty file); they carry no `dockerfile parse error on line N:` prefix, as in
//!   BuildKit. Checks on the typed instruction belong to `instruction.rs`.
//!
//! Decisions, each with its trade-off:
//! - Bytes that are not UTF-8 are replaced by U+FFFD instead of failing: BuildKit works on
//!   bytes and accepts such files (typically Latin-1 comments); a replaced byte inside an
//!   argument would differ from BuildKit, which we accept for a `String`-based pipeline.
//! - CRLF becomes LF before anything else, heredoc bodies included (BuildKit keeps `\r` in
//!   heredoc bodies); a Windows checkout then builds the same image as a Unix one.
//! - The flag extractor and the heredoc word splitter treat `\` as the escape character
//!   whatever `# escape=` says, and the flag extractor reads characters (BuildKit reads bytes and
//!   so mangles non-ASCII flag values); both follow BuildKit except for that mangling.
//! - Empty continuation lines are accepted silently (BuildKit only warns) and lines longer than
//!   64 KiB are accepted (BuildKit's scanner refuses them).

use std::sync::Arc;

use super::diagnostic::DockerfileError;
use crate::oci::go_quote;

/// Lines of a Dockerfile, 1-based and inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start_line: usize,
    pub end_line: usize,
}

impl Span {
    pub fn line(line: usize) -> Self {
        Self { start_line: line, end_line: line }
    }
}

/// Parser directives read from the top of the file.
#[derive(Debug, Clone)]
pub struct Directives {
    /// `\` unless `# escape=` set a backtick.
    pub escape: char,
    pub syntax: Option<String>,
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Self { escape: DEFAULT_ESCAPE, syntax: None, check: None }
    }
}

/// A heredoc attached to an instruction, in the order of its `<<NAME` word.
#[derive(Debug, Clone)]
pub struct Heredoc {
    pub name: String,
    /// The body up to (not including) the terminator line; each line keeps its `\n`. For
    /// `<<-` the leading tabs of every line are already removed.
    pub body: String,
    /// False when any part of the delimiter was quoted (`<<"EOF"`, `<<'EOF'`): no expansion.
    pub expand: bool,
    /// `<<-NAME`.
    pub strip_tabs: bool,
}

/// One `--name=value` or `--name` word before the arguments, quotes already removed.
#[derive(Debug, Clone)]
pub struct Flag {
    pub name: String,
    /// `None` for a bare `--link`; `Some("")` for `--link=`.
    pub value: Option<String>,
    /// The word as extracted, e.g. `--mount=type=cache,target=/root/.cache`.
    pub raw: String,
}

/// The arguments of an instruction.
#[derive(Debug, Clone)]
pub enum Args {
    /// A valid JSON array of strings (exec form).
    Exec(Vec<String>),
    /// The rest of the line after the flags, continuations joined, trimmed.
    Shell(String),
}

/// One instruction as written.
#[derive(Debug, Clone)]
pub struct Instruction {
    /// Upper-case, e.g. `COPY`; an unknown keyword is kept (and refused by `instruction.rs`).
    pub keyword: String,
    pub flags: Vec<Flag>,
    /// JSON form only for RUN, CMD, ENTRYPOINT, SHELL, COPY, ADD and VOLUME; invalid JSON falls
    /// back to the shell form. HEALTHCHECK and ONBUILD keep their whole argument text here.
    pub args: Args,
    /// RUN, COPY and ADD only (and ONBUILD whose trigger is one of them).
    pub heredocs: Vec<Heredoc>,
    pub span: Span,
    /// The instruction as written with continuations joined and comment lines dropped
    /// (BuildKit's `Original`), for progress names and history.
    pub original: String,
    /// The escape character in force, needed to split `ENV`, `LABEL` and `ARG` words later.
    pub escape: char,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone)]
pub struct Dockerfile {
    /// Display name, e.g. `Dockerfile`, used in snippets.
    pub name: String,
    /// The text after BOM strip and CRLF → LF; spans index its lines.
    pub source: Arc<str>,
    pub directives: Directives,
    pub instructions: Vec<Instruction>,
}

pub const DEFAULT_ESCAPE: char = '\\';

/// BuildKit's longest Dockerfile line, in bytes.
pub const MAX_LINE_BYTES: usize = 65535;

const UTF8_BOM: &str = "\u{feff}";

/// Parses a Dockerfile. `name` is only used for display.
pub fn parse(name: &str, bytes: &[u8]) -> Result<Dockerfile, DockerfileError> {
    let decoded = String::from_utf8_lossy(bytes);
    let text = decoded.strip_prefix(UTF8_BOM).unwrap_or(&decoded).replace("\r\n", "\n");
    let lines: Vec<&str> = text.split_inclusive('\n').map(trim_newline).collect();
    // BuildKit reads lines with a 64 KiB scanner; a longer one is an error there (no snippet:
    // the line itself would fill the terminal).
    if lines.iter().any(|line| line.len() > MAX_LINE_BYTES) {
        return Err(DockerfileError::new(format!("dockerfile line greater than max allowed size of {MAX_LINE_BYTES}"), None));
    }

    let mut directives = DirectiveReader::default();
    let mut instructions = Vec::new();
    let mut next = 0;
    while next < lines.len() {
        let line_number = next + 1;
        let first = lines[next].trim_start();
        next += 1;
        directives.read(first).map_err(|message| DockerfileError::at(message, Span::line(line_number)))?;
        let escape = directives.values.escape;

        let (mut joined, mut complete) = trim_continuation(strip_comment(first), escape);
        if complete && joined.is_empty() {
            continue;
        }
        while !complete && next < lines.len() {
            let line = lines[next];
            next += 1;
            if is_comment(line) || line.trim_start().is_empty() {
                continue;
            }
            let (part, done) = trim_continuation(line, escape);
            joined.push_str(&part);
            complete = done;
        }

        let mut span = Span { start_line: line_number, end_line: next };
        let mut instruction = parse_line(&joined, escape, span)?;
        if can_contain_heredoc(&instruction) && joined.contains("<<") {
            let markers = heredoc_markers(&joined).map_err(|message| DockerfileError::at(message, span))?;
            for marker in markers {
                let (body, terminator_index) = read_heredoc_body(&lines, next, &marker)
                    .ok_or_else(|| DockerfileError::at("unterminated heredoc", Span { start_line: line_number, end_line: lines.len() }))?;
                next = terminator_index + 1;
                instruction.heredocs.push(Heredoc {
                    body: if marker.strip_tabs { strip_leading_tabs(&body) } else { body },
                    name: marker.name,
                    expand: marker.expand,
                    strip_tabs: marker.strip_tabs,
                });
            }
            span.end_line = next;
            instruction.span = span;
        }
        instructions.push(instruction);
    }

    if instructions.is_empty() {
        let span = (!lines.is_empty()).then(|| Span::line(lines.len()));
        return Err(DockerfileError::new("file with no instructions", span));
    }
    Ok(Dockerfile { name: name.to_string(), source: Arc::from(text.as_str()), directives: directives.values, instructions })
}

/// Parses one logical line (continuations already joined) into an [`Instruction`], as BuildKit
/// does for each line and for the trigger of ONBUILD. Heredoc bodies are not read here. The
/// frontend can use it for the ONBUILD triggers of a base image.
pub fn parse_line(line: &str, escape: char, span: Span) -> Result<Instruction, DockerfileError> {
    let error = |message: String| DockerfileError::at(message, span);
    let trimmed = line.trim();
    let (keyword, remainder) = match trimmed.find(is_token_whitespace) {
        Some(index) => (&trimmed[..index], trimmed[index..].trim_start_matches(is_token_whitespace)),
        None => (trimmed, ""),
    };
    let (flags, rest) = extract_flags(remainder);
    let keyword = keyword.to_uppercase();
    let args = match keyword.as_str() {
        "RUN" | "CMD" | "ENTRYPOINT" | "SHELL" | "COPY" | "ADD" | "VOLUME" => maybe_json(&rest).map_err(error)?,
        "HEALTHCHECK" => {
            let (_, command) = split_first_word(&rest);
            maybe_json(command).map_err(error)?;
            Args::Shell(rest)
        }
        "ENV" | "LABEL" => {
            split_name_values(&rest, &keyword, escape).map_err(error)?;
            Args::Shell(rest)
        }
        "ONBUILD" => {
            if !rest.is_empty() {
                parse_line(&rest, escape, span)?;
            }
            Args::Shell(rest)
        }
        _ => Args::Shell(rest),
    };
    Ok(Instruction { keyword, flags, args, heredocs: Vec::new(), span, original: line.to_string(), escape })
}

/// The name of a heredoc from a `<<NAME` argument word (quotes removed), as COPY and ADD match
/// their sources against [`Instruction::heredocs`]; `None` when the word is no heredoc.
pub fn heredoc_name(word: &str) -> Option<String> {
    parse_heredoc_word(word).ok().flatten().map(|marker| marker.name)
}

/// Splits `ENV`/`LABEL` arguments into raw key/value pairs: `a=b c="d e"` or the legacy
/// `a b c` (one pair, the value is the rest of the line). Quotes and escapes stay in the words.
pub fn split_name_values(rest: &str, keyword: &str, escape: char) -> Result<Vec<(String, String)>, String> {
    let words = split_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        let mut parts = rest.splitn(2, is_token_whitespace);
        let key = parts.next().unwrap_or_default();
        let value = parts.next().map(|value| value.trim_start_matches(is_token_whitespace));
        return match value {
            Some(value) => Ok(vec![(key.to_string(), value.to_string())]),
            None => Err(format!("{keyword} must have two arguments")),
        };
    }
    words
        .iter()
        .map(|word| match word.split_once('=') {
            Some((key, value)) => Ok((key.to_string(), value.to_string())),
            None => Err(format!("Syntax error - can't find = in {}. Must be of the form: name=value", go_quote(word))),
        })
        .collect()
}

/// Splits words on whitespace, keeping quotes and escapes in the words (BuildKit's
/// `parseWords`): a quoted part may hold spaces, `'...'` escapes nothing, and the escape
/// character keeps the next character in the word.
pub fn split_words(rest: &str, escape: char) -> Vec<String> {
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut blank_ok = false;
    let mut index = 0;
    while index < chars.len() {
        let character = chars[index];
        index += 1;
        if !in_word {
            if character.is_whitespace() {
                continue;
            }
            in_word = true;
        }
        match quote {
            None => {
                if character.is_whitespace() {
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    in_word = false;
                    blank_ok = false;
                    continue;
                }
                if character == '\'' || character == '"' {
                    quote = Some(character);
                    blank_ok = true;
                } else if character == escape {
                    let Some(&next) = chars.get(index) else {
                        continue;
                    };
                    word.push(character);
                    word.push(next);
                    index += 1;
                    continue;
                }
                word.push(character);
            }
            Some(open) => {
                if character == open {
                    quote = None;
                } else if character == escape && open != '\'' {
                    let Some(&next) = chars.get(index) else {
                        quote = None;
                        continue;
                    };
                    word.push(character);
                    word.push(next);
                    index += 1;
                    continue;
                }
                word.push(character);
            }
        }
    }
    if in_word && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// The first whitespace-delimited word and the rest (trimmed), as BuildKit's HEALTHCHECK parser
/// splits its type from its command.
pub(super) fn split_first_word(text: &str) -> (&str, &str) {
    match text.find(char::is_whitespace) {
        Some(index) => (&text[..index], text[index..].trim_start()),
        None => (text, ""),
    }
}

/// Exec form when `text` is a JSON array of strings, shell form when it is not JSON at all.
pub(super) fn maybe_json(text: &str) -> Result<Args, String> {
    if !text.trim_start().starts_with('[') {
        return Ok(Args::Shell(text.to_string()));
    }
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(text) else {
        return Ok(Args::Shell(text.to_string()));
    };
    values
        .into_iter()
        .map(|value| match value {
            serde_json::Value::String(string) => Ok(string),
            _ => Err("when using JSON array syntax, arrays must be comprised of strings only".to_string()),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Args::Exec)
}

/// BuildKit's `tokenWhitespace`/`reWhitespace`: the separators between keyword and arguments.
pub(super) fn is_token_whitespace(character: char) -> bool {
    matches!(character, ' ' | '\t' | '\u{b}' | '\u{c}' | '\r')
}

fn trim_newline(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

fn strip_comment(line: &str) -> &str {
    if line.starts_with('#') { "" } else { line }
}

/// Removes a trailing line-continuation escape (and the blanks after it). BuildKit's rule: the
/// escape is the last non-blank character and is either alone on the line or not preceded by
/// another escape (`foo \\` ends with a literal backslash, not a continuation). Returns the
/// line and whether the instruction is complete.
fn trim_continuation(line: &str, escape: char) -> (String, bool) {
    let without_blanks = line.trim_end_matches([' ', '\t']);
    let Some(before) = without_blanks.strip_suffix(escape) else {
        return (line.to_string(), true);
    };
    if before.ends_with(escape) {
        return (line.to_string(), true);
    }
    (before.to_string(), false)
}

/// Reads the parser directives at the top of the file (BuildKit's `DirectiveParser`).
#[derive(Default)]
struct DirectiveReader {
    done: bool,
    seen_escape: bool,
    values: Directives,
}

impl DirectiveReader {
    /// Looks at one line (leading blanks already removed). The first line that is not a known
    /// directive ends the directives, an empty line and an unknown `# key=value` included.
    fn read(&mut self, line: &str) -> Result<(), String> {
        if self.done {
            return Ok(());
        }
        let Some((key, value)) = directive(line) else {
            self.done = true;
            return Ok(());
        };
        let key = key.to_lowercase();
        let slot = match key.as_str() {
            "escape" => {
                if std::mem::replace(&mut self.seen_escape, true) {
                    return Err("only one escape parser directive can be used".to_string());
                }
                self.values.escape = match value {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        return Err(format!("invalid escape token '{value}' does not match ` or \\"));
                    }
                };
                return Ok(());
            }
            "syntax" => &mut self.values.syntax,
            "check" => &mut self.values.check,
            _ => {
                self.done = true;
                return Ok(());
            }
        };
        if slot.replace(value.to_string()).is_some() {
            return Err(format!("only one {key} parser directive can be used"));
        }
        Ok(())
    }
}

/// Matches `#` blanks `key` blanks `=` blanks `value` (BuildKit's
/// `^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` after the `#`).
fn directive(line: &str) -> Option<(&str, &str)> {
    let body = line.strip_prefix('#')?.trim_start();
    let key_length = body
        .char_indices()
        .take_while(|(index, character)| if *index == 0 { character.is_ascii_alphabetic() } else { character.is_ascii_alphanumeric() })
        .count();
    if key_length == 0 {
        return None;
    }
    let (key, after_key) = body.split_at(key_length);
    let value = after_key.trim_start().strip_prefix('=')?.trim();
    (!value.is_empty()).then_some((key, value))
}

/// Splits the leading `--flag` words off the arguments (BuildKit's `extractBuilderFlags`).
/// Quotes are removed from flag words and `\` escapes the next character; a lone `--` ends the
/// flags. Returns the flags and the trimmed rest of the line.
fn extract_flags(line: &str) -> (Vec<Flag>, String) {
    let chars: Vec<char> = line.chars().collect();
    let mut words: Vec<String> = Vec::new();
    let mut rest_start = chars.len();
    let mut index = 0;
    'words: while index < chars.len() {
        if chars[index].is_whitespace() {
            index += 1;
            continue;
        }
        if chars[index] != '-' || chars.get(index + 1) != Some(&'-') {
            rest_start = index;
            break;
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        while index < chars.len() {
            let character = chars[index];
            index += 1;
            match quote {
                None if character.is_whitespace() => {
                    if word == "--" {
                        rest_start = index - 1;
                        break 'words;
                    }
                    break;
                }
                None if character == '\'' || character == '"' => quote = Some(character),
                Some(open) if character == open => quote = None,
                _ if character == '\\' => match chars.get(index) {
                    Some(&next) => {
                        word.push(next);
                        index += 1;
                    }
                    None => quote = None,
                },
                _ => word.push(character),
            }
        }
        if word != "--" && !word.is_empty() {
            words.push(word);
        }
    }
    let rest: String = chars[rest_start.min(chars.len())..].iter().collect();
    let flags = words
        .into_iter()
        .map(|raw| {
            let body = raw.strip_prefix("--").unwrap_or(&raw);
            let (name, value) = match body.split_once('=') {
                Some((name, value)) => (name.to_string(), Some(value.to_string())),
                None => (body.to_string(), None),
            };
            Flag { name, value, raw }
        })
        .collect();
    (flags, rest.trim().to_string())
}

fn can_contain_heredoc(instruction: &Instruction) -> bool {
    let is_heredoc_keyword = |keyword: &str| matches!(keyword, "RUN" | "COPY" | "ADD");
    match (&instruction.args, instruction.keyword.as_str()) {
        (Args::Shell(_), keyword) if is_heredoc_keyword(keyword) => true,
        (Args::Shell(trigger), "ONBUILD") if !trigger.is_empty() => parse_line(trigger, instruction.escape, instruction.span)
            .is_ok_and(|trigger| is_heredoc_keyword(&trigger.keyword) && matches!(trigger.args, Args::Shell(_))),
        _ => false,
    }
}

/// What a `<<NAME` word announces.
struct HeredocMarker {
    name: String,
    expand: bool,
    strip_tabs: bool,
}

/// The heredocs a line announces, in order (BuildKit's `heredocsFromLine`): the line is split
/// into shell words with quotes and escapes kept, and each word of the form `[digits]<<[-]NAME`
/// is a heredoc.
fn heredoc_markers(line: &str) -> Result<Vec<HeredocMarker>, String> {
    let Some(words) = shell_words(line, true) else {
        return Ok(Vec::new());
    };
    let mut markers = Vec::new();
    for word in words {
        if let Some(marker) = parse_heredoc_word(&word)? {
            markers.push(marker);
        }
    }
    Ok(markers)
}

fn parse_heredoc_word(word: &str) -> Result<Option<HeredocMarker>, String> {
    let after_digits = word.trim_start_matches(|character: char| character.is_ascii_digit());
    let Some(after_marker) = after_digits.strip_prefix("<<") else {
        return Ok(None);
    };
    let (strip_tabs, delimiter) = match after_marker.strip_prefix('-') {
        Some(delimiter) => (true, delimiter),
        None => (false, after_marker),
    };
    if delimiter.is_empty() || delimiter.contains('<') {
        return Ok(None);
    }
    let unterminated = || format!("unexpected end of statement while looking for matching quote in {}", go_quote(delimiter));
    let unquoted = shell_words(delimiter, false).ok_or_else(unterminated)?;
    let [name] = unquoted.as_slice() else {
        return Ok(None);
    };
    let with_quotes = shell_words(delimiter, true).ok_or_else(unterminated)?;
    let count_quotes = |text: &str| text.chars().filter(|character| matches!(character, '"' | '\'')).count();
    let expand = with_quotes.first().is_some_and(|raw| count_quotes(raw) == count_quotes(name));
    Ok(Some(HeredocMarker { name: name.clone(), expand, strip_tabs }))
}

/// Splits text into shell words without expanding anything. With `keep_quotes`, quotes and
/// escapes stay in the words (BuildKit's raw lexing of a heredoc line); without, quotes are
/// removed and `\` escapes are resolved. `None` when a quote is never closed.
fn shell_words(text: &str, keep_quotes: bool) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut has_word = false;
    let mut chars = text.chars();
    while let Some(character) = chars.next() {
        match character {
            character if character.is_whitespace() => {
                if has_word {
                    words.push(std::mem::take(&mut word));
                    has_word = false;
                }
            }
            '\'' | '"' => {
                has_word = true;
                if keep_quotes {
                    word.push(character);
                }
                loop {
                    let inner = chars.next()?;
                    if inner == character {
                        break;
                    }
                    if inner == '\\' && character == '"' {
                        let escaped = chars.next()?;
                        if keep_quotes || !matches!(escaped, '"' | '\\' | '$' | '`') {
                            word.push('\\');
                        }
                        word.push(escaped);
                        continue;
                    }
                    word.push(inner);
                }
                if keep_quotes {
                    word.push(character);
                }
            }
            '\\' => {
                has_word = true;
                if keep_quotes {
                    word.push('\\');
                }
                if let Some(escaped) = chars.next() {
                    word.push(escaped);
                }
            }
            character => {
                has_word = true;
                word.push(character);
            }
        }
    }
    if has_word {
        words.push(word);
    }
    Some(words)
}

/// Reads a heredoc body starting at line index `start`; returns the body and the index of the
/// terminator line, or `None` when the file ends first.
fn read_heredoc_body(lines: &[&str], start: usize, marker: &HeredocMarker) -> Option<(String, usize)> {
    let mut body = String::new();
    for (index, line) in lines.iter().enumerate().skip(start) {
        let candidate = if marker.strip_tabs { line.trim_start_matches('\t') } else { line };
        if candidate == marker.name {
            return Some((body, index));
        }
        body.push_str(line);
        body.push('\n');
    }
    None
}

fn strip_leading_tabs(body: &str) -> String {
    body.split_inclusive('\n').map(|line| line.trim_start_matches('\t')).collect()
}

#[cfg(test)]
#[path = "syntax_tests.rs"]
mod tests;
