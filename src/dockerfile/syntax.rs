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

/// Lines of a Dockerfile, 1-based and inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start_line: usize,
    pub end_line: usize,
}

impl Span {
    pub fn line(line: usize) -> Self {
        Self {
            start_line: line,
            end_line: line,
        }
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
        Self {
            escape: DEFAULT_ESCAPE,
            syntax: None,
            check: None,
        }
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

const UTF8_BOM: &str = "\u{feff}";

/// Parses a Dockerfile. `name` is only used for display.
pub fn parse(name: &str, bytes: &[u8]) -> Result<Dockerfile, DockerfileError> {
    let decoded = String::from_utf8_lossy(bytes);
    let text = decoded
        .strip_prefix(UTF8_BOM)
        .unwrap_or(&decoded)
        .replace("\r\n", "\n");
    let lines: Vec<&str> = text.split_inclusive('\n').map(trim_newline).collect();

    let mut directives = DirectiveReader::default();
    let mut instructions = Vec::new();
    let mut next = 0;
    while next < lines.len() {
        let line_number = next + 1;
        let first = lines[next].trim_start();
        next += 1;
        directives
            .read(first)
            .map_err(|message| DockerfileError::at(message, Span::line(line_number)))?;
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

        let mut span = Span {
            start_line: line_number,
            end_line: next,
        };
        let mut instruction = parse_line(&joined, escape, span)?;
        if can_contain_heredoc(&instruction) && joined.contains("<<") {
            let markers =
                heredoc_markers(&joined).map_err(|message| DockerfileError::at(message, span))?;
            for marker in markers {
                let (body, terminator_index) = read_heredoc_body(&lines, next, &marker)
                    .ok_or_else(|| {
                        DockerfileError::at(
                            "unterminated heredoc",
                            Span {
                                start_line: line_number,
                                end_line: lines.len(),
                            },
                        )
                    })?;
                next = terminator_index + 1;
                instruction.heredocs.push(Heredoc {
                    body: if marker.strip_tabs {
                        strip_leading_tabs(&body)
                    } else {
                        body
                    },
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
    Ok(Dockerfile {
        name: name.to_string(),
        source: Arc::from(text.as_str()),
        directives: directives.values,
        instructions,
    })
}

/// Parses one logical line (continuations already joined) into an [`Instruction`], as BuildKit
/// does for each line and for the trigger of ONBUILD. Heredoc bodies are not read here. The
/// frontend can use it for the ONBUILD triggers of a base image.
pub fn parse_line(line: &str, escape: char, span: Span) -> Result<Instruction, DockerfileError> {
    let error = |message: String| DockerfileError::at(message, span);
    let trimmed = line.trim();
    let (keyword, remainder) = match trimmed.find(is_token_whitespace) {
        Some(index) => (
            &trimmed[..index],
            trimmed[index..].trim_start_matches(is_token_whitespace),
        ),
        None => (trimmed, ""),
    };
    let (flags, rest) = extract_flags(remainder);
    let keyword = keyword.to_uppercase();
    let args = match keyword.as_str() {
        "RUN" | "CMD" | "ENTRYPOINT" | "SHELL" | "COPY" | "ADD" | "VOLUME" => {
            maybe_json(&rest).map_err(error)?
        }
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
    Ok(Instruction {
        keyword,
        flags,
        args,
        heredocs: Vec::new(),
        span,
        original: line.to_string(),
        escape,
    })
}

/// The name of a heredoc from a `<<NAME` argument word (quotes removed), as COPY and ADD match
/// their sources against [`Instruction::heredocs`]; `None` when the word is no heredoc.
pub fn heredoc_name(word: &str) -> Option<String> {
    parse_heredoc_word(word)
        .ok()
        .flatten()
        .map(|marker| marker.name)
}

/// Splits `ENV`/`LABEL` arguments into raw key/value pairs: `a=b c="d e"` or the legacy
/// `a b c` (one pair, the value is the rest of the line). Quotes and escapes stay in the words.
pub fn split_name_values(
    rest: &str,
    keyword: &str,
    escape: char,
) -> Result<Vec<(String, String)>, String> {
    let words = split_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        let mut parts = rest.splitn(2, is_token_whitespace);
        let key = parts.next().unwrap_or_default();
        let value = parts
            .next()
            .map(|value| value.trim_start_matches(is_token_whitespace));
        return match value {
            Some(value) => Ok(vec![(key.to_string(), value.to_string())]),
            None => Err(format!("{keyword} must have two arguments")),
        };
    }
    words
        .iter()
        .map(|word| match word.split_once('=') {
            Some((key, value)) => Ok((key.to_string(), value.to_string())),
            None => Err(format!(
                "Syntax error - can't find = in {}. Must be of the form: name=value",
                go_quote(word)
            )),
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

/// Quotes a string the way Go's `%q` does, for messages that BuildKit formats with it.
pub(super) fn go_quote(text: &str) -> String {
    let mut quoted = String::from("\"");
    for character in text.chars() {
        match character {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            '\r' => quoted.push_str("\\r"),
            '\u{7}' => quoted.push_str("\\a"),
            '\u{8}' => quoted.push_str("\\b"),
            '\u{b}' => quoted.push_str("\\v"),
            '\u{c}' => quoted.push_str("\\f"),
            character if (character as u32) < 0x20 || character as u32 == 0x7f => {
                quoted.push_str(&format!("\\x{:02x}", character as u32));
            }
            character if character.is_control() => {
                quoted.push_str(&format!("\\u{:04x}", character as u32))
            }
            character => quoted.push(character),
        }
    }
    quoted.push('"');
    quoted
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
            _ => Err(
                "when using JSON array syntax, arrays must be comprised of strings only"
                    .to_string(),
            ),
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
                        return Err(format!(
                            "invalid escape token '{value}' does not match ` or \\"
                        ));
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
        .take_while(|(index, character)| {
            if *index == 0 {
                character.is_ascii_alphabetic()
            } else {
                character.is_ascii_alphanumeric()
            }
        })
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
        (Args::Shell(trigger), "ONBUILD") if !trigger.is_empty() => {
            parse_line(trigger, instruction.escape, instruction.span).is_ok_and(|trigger| {
                is_heredoc_keyword(&trigger.keyword) && matches!(trigger.args, Args::Shell(_))
            })
        }
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
    let unterminated = || {
        format!(
            "unexpected end of statement while looking for matching quote in {}",
            go_quote(delimiter)
        )
    };
    let unquoted = shell_words(delimiter, false).ok_or_else(unterminated)?;
    let [name] = unquoted.as_slice() else {
        return Ok(None);
    };
    let with_quotes = shell_words(delimiter, true).ok_or_else(unterminated)?;
    let count_quotes = |text: &str| {
        text.chars()
            .filter(|character| matches!(character, '"' | '\''))
            .count()
    };
    let expand = with_quotes
        .first()
        .is_some_and(|raw| count_quotes(raw) == count_quotes(name));
    Ok(Some(HeredocMarker {
        name: name.clone(),
        expand,
        strip_tabs,
    }))
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
fn read_heredoc_body(
    lines: &[&str],
    start: usize,
    marker: &HeredocMarker,
) -> Option<(String, usize)> {
    let mut body = String::new();
    for (index, line) in lines.iter().enumerate().skip(start) {
        let candidate = if marker.strip_tabs {
            line.trim_start_matches('\t')
        } else {
            line
        };
        if candidate == marker.name {
            return Some((body, index));
        }
        body.push_str(line);
        body.push('\n');
    }
    None
}

fn strip_leading_tabs(body: &str) -> String {
    body.split_inclusive('\n')
        .map(|line| line.trim_start_matches('\t'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Dockerfile {
        match parse("Dockerfile", text.as_bytes()) {
            Ok(dockerfile) => dockerfile,
            Err(error) => panic!("parse failed: {error:?}"),
        }
    }

    fn parse_error(text: &str) -> DockerfileError {
        match parse("Dockerfile", text.as_bytes()) {
            Ok(dockerfile) => panic!("expected an error, got {:#?}", dockerfile.instructions),
            Err(error) => error,
        }
    }

    /// One line per instruction: `start-end KEYWORD [flags] args | heredocs`.
    fn dump(dockerfile: &Dockerfile) -> String {
        dockerfile
            .instructions
            .iter()
            .map(|instruction| {
                let mut line = format!(
                    "{}-{} {}",
                    instruction.span.start_line, instruction.span.end_line, instruction.keyword
                );
                for flag in &instruction.flags {
                    line.push_str(&format!(" [{}={:?}]", flag.name, flag.value));
                }
                match &instruction.args {
                    Args::Exec(words) => line.push_str(&format!(" exec{words:?}")),
                    Args::Shell(text) => line.push_str(&format!(" shell{text:?}")),
                }
                for heredoc in &instruction.heredocs {
                    line.push_str(&format!(
                        " | {} expand={} strip={} {:?}",
                        heredoc.name, heredoc.expand, heredoc.strip_tabs, heredoc.body
                    ));
                }
                line.push('\n');
                line
            })
            .collect()
    }

    #[test]
    fn every_instruction_keyword_is_read_case_insensitively() {
        let text = "from alpine AS base\nRun echo hi\ncmd [\"sh\"]\nlabel a=b\nmaintainer me\nexpose 80\nenv A=1\n\
add a b\ncopy a b\nentrypoint [\"x\"]\nvolume /v\nuser root\nworkdir /w\narg X\nonbuild RUN x\nstopsignal SIGTERM\n\
healthcheck NONE\nshell [\"bash\", \"-c\"]\n";
        let expected = "1-1 FROM shell\"alpine AS base\"\n2-2 RUN shell\"echo hi\"\n3-3 CMD exec[\"sh\"]\n4-4 LABEL shell\"a=b\"\n\
5-5 MAINTAINER shell\"me\"\n6-6 EXPOSE shell\"80\"\n7-7 ENV shell\"A=1\"\n8-8 ADD shell\"a b\"\n9-9 COPY shell\"a b\"\n\
10-10 ENTRYPOINT exec[\"x\"]\n11-11 VOLUME shell\"/v\"\n12-12 USER shell\"root\"\n13-13 WORKDIR shell\"/w\"\n14-14 ARG shell\"X\"\n\
15-15 ONBUILD shell\"RUN x\"\n16-16 STOPSIGNAL shell\"SIGTERM\"\n17-17 HEALTHCHECK shell\"NONE\"\n18-18 SHELL exec[\"bash\", \"-c\"]\n";
        assert_eq!(dump(&parse_text(text)), expected);
        let dockerfile = parse_text("  from   alpine  ");
        assert_eq!(dockerfile.instructions[0].original, "from   alpine  ");
    }

    #[test]
    fn directives_at_the_top_are_read() {
        let dockerfile =
            parse_text("# syntax=docker/dockerfile:1.7\n#check = skip=all\n# escape=`\nFROM a\n");
        assert_eq!(
            dockerfile.directives.syntax.as_deref(),
            Some("docker/dockerfile:1.7")
        );
        assert_eq!(dockerfile.directives.check.as_deref(), Some("skip=all"));
        assert_eq!(dockerfile.directives.escape, '`');
        assert_eq!(dump(&dockerfile), "4-4 FROM shell\"a\"\n");
    }

    #[test]
    fn a_directive_after_a_comment_an_empty_line_or_an_instruction_is_a_comment() {
        for text in [
            "# hello\n# escape=`\nFROM a\n",
            "\n# escape=`\nFROM a\n",
            "FROM a\n# escape=`\n",
            "# unknown=x\n# escape=`\nFROM a",
        ] {
            assert_eq!(parse_text(text).directives.escape, '\\', "{text:?}");
        }
    }

    #[test]
    fn an_invalid_or_repeated_directive_is_an_error() {
        let error = parse_error("# escape=x\nFROM a\n");
        assert_eq!(
            error.message,
            "invalid escape token 'x' does not match ` or \\"
        );
        assert_eq!(error.span, Some(Span::line(1)));
        let error = parse_error("# syntax=a\n# syntax=b\nFROM a\n");
        assert_eq!(
            error.message,
            "only one syntax parser directive can be used"
        );
        assert_eq!(error.span, Some(Span::line(2)));
    }

    #[test]
    fn continuations_join_lines_and_skip_comments_and_empty_lines() {
        let text = "FROM a\nRUN apt-get update \\\n# a comment inside\n\n    && apt-get install -y curl \\  \n  && true\nRUN done\n";
        let dockerfile = parse_text(text);
        assert_eq!(
            dump(&dockerfile),
            "1-1 FROM shell\"a\"\n2-6 RUN shell\"apt-get update     && apt-get install -y curl   && true\"\n7-7 RUN shell\"done\"\n"
        );
        assert_eq!(
            dockerfile.instructions[1].original,
            "RUN apt-get update     && apt-get install -y curl   && true"
        );
    }

    #[test]
    fn a_doubled_escape_at_the_end_is_not_a_continuation() {
        assert_eq!(
            dump(&parse_text("RUN echo \\\\\nRUN b")),
            "1-1 RUN shell\"echo \\\\\\\\\"\n2-2 RUN shell\"b\"\n"
        );
    }

    #[test]
    fn the_backtick_escape_continues_lines() {
        let dockerfile = parse_text("# escape=`\nFROM a\nRUN dir c:\\ `\n  /b\n");
        assert_eq!(
            dump(&dockerfile),
            "2-2 FROM shell\"a\"\n3-4 RUN shell\"dir c:\\\\   /b\"\n"
        );
    }

    #[test]
    fn a_continuation_at_the_end_of_the_file_ends_the_instruction() {
        let dockerfile = parse_text("FROM a\nRUN b \\\n");
        assert_eq!(
            dump(&dockerfile),
            "1-1 FROM shell\"a\"\n2-2 RUN shell\"b\"\n"
        );
        assert_eq!(dockerfile.instructions[1].original, "RUN b ");
    }

    #[test]
    fn bom_and_crlf_are_removed() {
        let dockerfile = parse_text("\u{feff}# escape=`\r\nFROM a\r\nRUN b `\r\n c\r\n");
        assert_eq!(dockerfile.directives.escape, '`');
        assert_eq!(
            dump(&dockerfile),
            "2-2 FROM shell\"a\"\n3-4 RUN shell\"b  c\"\n"
        );
        assert_eq!(&*dockerfile.source, "# escape=`\nFROM a\nRUN b `\n c\n");
    }

    #[test]
    fn json_form_only_where_accepted_and_invalid_json_falls_back() {
        let text = "FROM a\nRUN [\"a\", \"b c\"]\nRUN [\"a\", \"b\"\nCMD []\nWORKDIR [\"x\"]\nCOPY [\"a b\", \"/c\"]\nVOLUME [\"/v\"]\nENTRYPOINT [ \"x\" ] \n";
        let expected = "1-1 FROM shell\"a\"\n2-2 RUN exec[\"a\", \"b c\"]\n3-3 RUN shell\"[\\\"a\\\", \\\"b\\\"\"\n4-4 CMD exec[]\n\
5-5 WORKDIR shell\"[\\\"x\\\"]\"\n6-6 COPY exec[\"a b\", \"/c\"]\n7-7 VOLUME exec[\"/v\"]\n8-8 ENTRYPOINT exec[\"x\"]\n";
        assert_eq!(dump(&parse_text(text)), expected);
    }

    #[test]
    fn a_json_array_of_non_strings_is_an_error() {
        let error = parse_error("FROM a\nCMD [\"a\", 1]\n");
        assert_eq!(
            error.message,
            "when using JSON array syntax, arrays must be comprised of strings only"
        );
        assert_eq!(error.span, Some(Span::line(2)));
        let error = parse_error("FROM a\nHEALTHCHECK CMD [true]\n");
        assert_eq!(
            error.message,
            "when using JSON array syntax, arrays must be comprised of strings only"
        );
    }

    #[test]
    fn flags_are_split_from_arguments() {
        let text = "FROM --platform=$BUILDPLATFORM a\nCOPY --from=build --link --chown=\"1 2\" a b\nRUN --mount=type=cache,target=/c \\\n  --network=none make\nRUN -- --not-a-flag\nRUN --a=b\n";
        let expected = "1-1 FROM [platform=Some(\"$BUILDPLATFORM\")] shell\"a\"\n\
2-2 COPY [from=Some(\"build\")] [link=None] [chown=Some(\"1 2\")] shell\"a b\"\n\
3-4 RUN [mount=Some(\"type=cache,target=/c\")] [network=Some(\"none\")] shell\"make\"\n\
5-5 RUN shell\"--not-a-flag\"\n6-6 RUN [a=Some(\"b\")] shell\"\"\n";
        assert_eq!(dump(&parse_text(text)), expected);
        assert_eq!(
            parse_text("COPY --chown=\"1 2\" a b").instructions[0].flags[0].raw,
            "--chown=1 2"
        );
    }

    #[test]
    fn heredocs_are_read_for_run_copy_and_add() {
        let text = "FROM a\nRUN <<EOF\necho $HOME\nEOF\nCOPY <<-\"END\" /dst\n\tindented\n\t\tdeeper\n\tEND\nRUN echo done\n";
        let expected = "1-1 FROM shell\"a\"\n2-4 RUN shell\"<<EOF\" | EOF expand=true strip=false \"echo $HOME\\n\"\n\
5-8 COPY shell\"<<-\\\"END\\\" /dst\" | END expand=false strip=true \"indented\\ndeeper\\n\"\n9-9 RUN shell\"echo done\"\n";
        assert_eq!(dump(&parse_text(text)), expected);
    }

    #[test]
    fn several_heredocs_in_one_instruction_are_read_in_order() {
        let text = "FROM a\nCOPY <<one <<'two' /dst/\nfirst\none\nsecond\ntwo\n";
        let expected = "1-1 FROM shell\"a\"\n2-6 COPY shell\"<<one <<'two' /dst/\" | one expand=true strip=false \"first\\n\" | two expand=false strip=false \"second\\n\"\n";
        assert_eq!(dump(&parse_text(text)), expected);
    }

    #[test]
    fn heredocs_elsewhere_are_plain_text() {
        let text = "FROM a\nENV A=<<EOF\nRUN [\"cat\", \"<<EOF\"]\nRUN echo \"<<EOF\" cat<<EOF\nRUN cat <<<word\n";
        let expected = "1-1 FROM shell\"a\"\n2-2 ENV shell\"A=<<EOF\"\n3-3 RUN exec[\"cat\", \"<<EOF\"]\n\
4-4 RUN shell\"echo \\\"<<EOF\\\" cat<<EOF\"\n5-5 RUN shell\"cat <<<word\"\n";
        assert_eq!(dump(&parse_text(text)), expected);
    }

    #[test]
    fn onbuild_triggers_read_heredocs() {
        let dockerfile = parse_text("FROM a\nONBUILD RUN <<EOF\nx\nEOF\n");
        assert_eq!(
            dump(&dockerfile),
            "1-1 FROM shell\"a\"\n2-4 ONBUILD shell\"RUN <<EOF\" | EOF expand=true strip=false \"x\\n\"\n"
        );
    }

    #[test]
    fn heredoc_with_file_descriptor_and_command_after_it() {
        let dockerfile = parse_text("FROM a\nRUN 3<<EOF cat /dev/fd/3 > /out\nhi\nEOF\n");
        assert_eq!(dockerfile.instructions[1].heredocs[0].name, "EOF");
        assert_eq!(
            dockerfile.instructions[1].span,
            Span {
                start_line: 2,
                end_line: 4
            }
        );
    }

    #[test]
    fn an_unterminated_heredoc_is_an_error() {
        let error = parse_error("FROM a\nRUN <<EOF\necho\nEOF \n");
        assert_eq!(error.message, "unterminated heredoc");
        assert_eq!(
            error.span,
            Some(Span {
                start_line: 2,
                end_line: 4
            })
        );
    }

    #[test]
    fn env_and_label_without_equals_are_checked_while_parsing() {
        let error = parse_error("FROM a\nENV A\n");
        assert_eq!(
            (error.message.as_str(), error.span),
            ("ENV must have two arguments", Some(Span::line(2)))
        );
        let error = parse_error("FROM a\nLABEL a=b c\n");
        assert_eq!(
            error.message,
            "Syntax error - can't find = in \"c\". Must be of the form: name=value"
        );
    }

    #[test]
    fn name_values_respect_quotes_and_escapes() {
        let pairs = split_name_values(r#"a="b c" d=e\ f g='h i' "j k"=l"#, "ENV", '\\');
        assert_eq!(
            pairs,
            Ok(vec![
                ("a".into(), "\"b c\"".into()),
                ("d".into(), "e\\ f".into()),
                ("g".into(), "'h i'".into()),
                ("\"j k\"".into(), "l".into()),
            ])
        );
        assert_eq!(
            split_name_values("A   b  c", "ENV", '\\'),
            Ok(vec![("A".into(), "b  c".into())])
        );
        assert_eq!(
            split_name_values("a=`\"b", "ENV", '`'),
            Ok(vec![("a".into(), "`\"b".into())])
        );
    }

    #[test]
    fn an_empty_file_or_only_comments_is_an_error() {
        assert_eq!(parse_error("").message, "file with no instructions");
        let error = parse_error("# just\n\n# comments\n");
        assert_eq!(
            (error.message.as_str(), error.span),
            ("file with no instructions", Some(Span::line(3)))
        );
    }

    #[test]
    fn unknown_instructions_are_kept_for_the_instruction_stage() {
        assert_eq!(dump(&parse_text("COPPY a b")), "1-1 COPPY shell\"a b\"\n");
    }

    #[test]
    fn heredoc_name_reads_copy_source_words() {
        assert_eq!(heredoc_name("<<EOF").as_deref(), Some("EOF"));
        assert_eq!(heredoc_name("<<-\"END\"").as_deref(), Some("END"));
        assert_eq!(heredoc_name("file"), None);
        assert_eq!(heredoc_name("<<"), None);
    }

    #[test]
    fn go_quote_escapes_like_go() {
        assert_eq!(go_quote("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\x01é\"");
    }
}
