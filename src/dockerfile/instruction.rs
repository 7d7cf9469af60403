//! Typed Dockerfile commands: raw [`Instruction`]s → [`Command`]s, with BuildKit's checks of
//! argument counts, flags per instruction, stage names, ONBUILD triggers and HEALTHCHECK
//! options (BuildKit's `frontend/dockerfile/instructions/parse.go` and `bflag.go`).
//!
//! Invariants:
//! - Nothing is expanded here: words keep their quotes, escapes and `$VARS` for the word lexer
//!   (`shell.rs`), which the frontend runs with the ARG/ENV scope of each stage.
//! - [`command`] returns BuildKit's bare messages (`unknown flag: --frm`); [`commands`] walks a
//!   whole file and, as BuildKit's `instructions.Parse` does, prefixes them with
//!   `dockerfile parse error on line N: `. Every error carries the span of its instruction.
//! - Flags are checked per instruction in BuildKit's order relative to the argument checks
//!   (e.g. `COPY --bad a` reports the missing destination first).
//!
//! Decisions, each with its trade-off:
//! - BuildKit never looks at the flags of ARG, STOPSIGNAL and `HEALTHCHECK NONE`, so
//!   `ARG --x=1 A` is accepted and the flag ignored; we keep that so files that build with
//!   BuildKit build here, at the price of not catching those typos.
//! - ADD accepts BuildKit's set (`--chown --chmod --link --keep-git-dir --checksum --unpack
//!   --exclude`), not `--from` or `--parents`, which BuildKit refuses on ADD.
//! - `--parents` and `--exclude` are accepted without a `# syntax=...labs` directive (they are
//!   stable in current Dockerfile frontends).
//! - The unknown-flag suggestion names the flag without dashes (`did you mean from?`), as
//!   BuildKit's suggester, which matches bare flag names, prints it.

use super::diagnostic::{DockerfileError, suggest};
use super::syntax::{self, Args, Dockerfile, Flag, Heredoc, Instruction, Span};
use crate::oci::go_quote;

/// A value with the instruction it came from.
#[derive(Debug, Clone)]
pub struct Located<T> {
    pub span: Span,
    pub original: String,
    pub value: T,
}

#[derive(Debug, Clone)]
pub enum Command {
    From {
        image: String,
        name: Option<String>,
        platform: Option<String>,
    },
    Run(RunCommand),
    Cmd(Args),
    Entrypoint(Args),
    Shell(Vec<String>),
    /// Raw (unexpanded) key/value words, quotes kept for the lexer.
    Label(Vec<(String, String)>),
    Maintainer(String),
    /// Sorted, as BuildKit sorts them.
    Expose(Vec<String>),
    Env(Vec<(String, String)>),
    Add(CopyCommand),
    Copy(CopyCommand),
    Volume(Vec<String>),
    User(String),
    Workdir(String),
    Arg(Vec<(String, Option<String>)>),
    /// The trigger, parsed as an instruction with the heredocs of the ONBUILD line.
    Onbuild(Box<Instruction>),
    Stopsignal(String),
    Healthcheck(Healthcheck),
}

#[derive(Debug, Clone)]
pub struct RunCommand {
    pub args: Args,
    pub heredocs: Vec<Heredoc>,
    /// Raw `--mount` values, in order.
    pub mounts: Vec<String>,
    pub network: Option<String>,
    pub security: Option<String>,
}

#[derive(Debug, Clone)]
pub struct CopyCommand {
    /// Raw words (JSON or whitespace-split shell form); a heredoc source stays as its `<<NAME`
    /// word, see [`syntax::heredoc_name`].
    pub sources: Vec<String>,
    pub dest: String,
    pub heredocs: Vec<Heredoc>,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub excludes: Vec<String>,
    /// ADD only.
    pub checksum: Option<String>,
    /// ADD only; `Some` when the flag was given.
    pub keep_git_dir: Option<bool>,
    /// ADD only; `Some` when the flag was given.
    pub unpack: Option<bool>,
}

#[derive(Debug, Clone)]
pub enum Healthcheck {
    None,
    /// The durations are checked with Go's duration syntax but kept as written; an empty value
    /// (`--interval=`) is `None`, which BuildKit also treats as unset.
    Check {
        test: Args,
        interval: Option<String>,
        timeout: Option<String>,
        start_period: Option<String>,
        start_interval: Option<String>,
        retries: Option<String>,
    },
}

/// Instruction names, in the order used to break ties between suggestions.
pub const INSTRUCTIONS: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// Types every instruction of a file. Errors from [`command`] get BuildKit's
/// `dockerfile parse error on line N: ` prefix; an instruction other than ARG before the first
/// FROM is `no build stage in current context`.
pub fn commands(dockerfile: &Dockerfile) -> Result<Vec<Located<Command>>, DockerfileError> {
    let mut located = Vec::with_capacity(dockerfile.instructions.len());
    let mut in_stage = false;
    for instruction in &dockerfile.instructions {
        let value = command(instruction).map_err(|error| DockerfileError {
            message: format!("dockerfile parse error on line {}: {}", instruction.span.start_line, error.message),
            ..error
        })?;
        match value {
            Command::From { .. } => in_stage = true,
            Command::Arg(_) => {}
            _ if !in_stage => {
                return Err(DockerfileError::at("no build stage in current context", instruction.span));
            }
            _ => {}
        }
        located.push(Located { span: instruction.span, original: instruction.original.clone(), value });
    }
    Ok(located)
}

/// Types one instruction; also used for ONBUILD triggers.
pub fn command(instruction: &Instruction) -> Result<Command, DockerfileError> {
    let span = instruction.span;
    let fail = |message: String| DockerfileError::at(message, span);
    let rest = match &instruction.args {
        Args::Shell(text) => text.as_str(),
        Args::Exec(_) => "",
    };
    let keyword = instruction.keyword.as_str();
    let no_flags = || parse_flags(&instruction.flags, &[], span);
    let exactly_one = || {
        if rest.is_empty() { Err(fail(format!("{keyword} requires exactly one argument"))) } else { Ok(rest.to_string()) }
    };

    match keyword {
        "FROM" => {
            let words = split_list(&instruction.args);
            let (image, name) = match words.as_slice() {
                [image, as_word, name] if as_word.eq_ignore_ascii_case("as") => {
                    let lowered = name.to_lowercase();
                    if !is_valid_stage_name(&lowered) {
                        return Err(fail(format!(
                            "invalid name for build stage: {}, name can't start with a number or contain symbols",
                            go_quote(name)
                        )));
                    }
                    (image, Some(lowered))
                }
                [image] => (image, None),
                _ => {
                    return Err(fail("FROM requires either one or three arguments".to_string()));
                }
            };
            let flags = parse_flags(&instruction.flags, &[("platform", FlagKind::String)], span)?;
            Ok(Command::From { image: image.clone(), name, platform: flags.string("platform") })
        }
        "RUN" => {
            let known = [("mount", FlagKind::Strings), ("network", FlagKind::String), ("security", FlagKind::String)];
            let flags = parse_flags(&instruction.flags, &known, span)?;
            Ok(Command::Run(RunCommand {
                args: instruction.args.clone(),
                heredocs: instruction.heredocs.clone(),
                mounts: flags.strings("mount"),
                network: flags.string("network"),
                security: flags.string("security"),
            }))
        }
        "CMD" => {
            no_flags()?;
            Ok(Command::Cmd(instruction.args.clone()))
        }
        "ENTRYPOINT" => {
            no_flags()?;
            Ok(Command::Entrypoint(instruction.args.clone()))
        }
        "SHELL" => {
            no_flags()?;
            match &instruction.args {
                Args::Exec(words) if !words.is_empty() => Ok(Command::Shell(words.clone())),
                Args::Shell(text) if !text.is_empty() => Err(fail(not_json_message("SHELL", &instruction.original))),
                _ => Err(fail("SHELL requires at least one argument".to_string())),
            }
        }
        "ENV" | "LABEL" => {
            no_flags()?;
            let pairs = syntax::split_name_values(rest, keyword, instruction.escape).map_err(fail)?;
            if pairs.is_empty() {
                return Err(fail(format!("{keyword} requires at least one argument")));
            }
            if pairs.iter().any(|(key, _)| key.is_empty()) {
                return Err(fail(format!("{keyword} names can not be blank")));
            }
            Ok(if keyword == "ENV" { Command::Env(pairs) } else { Command::Label(pairs) })
        }
        "MAINTAINER" => {
            let maintainer = exactly_one()?;
            no_flags()?;
            Ok(Command::Maintainer(maintainer))
        }
        "EXPOSE" => {
            let mut ports = split_list(&instruction.args);
            if ports.is_empty() {
                return Err(fail("EXPOSE requires at least one argument".to_string()));
            }
            no_flags()?;
            ports.sort();
            Ok(Command::Expose(ports))
        }
        "ADD" | "COPY" => {
            copy_command(instruction, keyword).map(|copy| if keyword == "ADD" { Command::Add(copy) } else { Command::Copy(copy) })
        }
        "VOLUME" => {
            let volumes = split_list(&instruction.args);
            if volumes.is_empty() {
                return Err(fail("VOLUME requires at least one argument".to_string()));
            }
            no_flags()?;
            volumes
                .into_iter()
                .map(|volume| {
                    let trimmed = volume.trim();
                    if trimmed.is_empty() {
                        Err(fail("VOLUME specified can not be an empty string".to_string()))
                    } else {
                        Ok(trimmed.to_string())
                    }
                })
                .collect::<Result<_, _>>()
                .map(Command::Volume)
        }
        "USER" => {
            let user = exactly_one()?;
            no_flags()?;
            Ok(Command::User(user))
        }
        "WORKDIR" => {
            let directory = exactly_one()?;
            no_flags()?;
            Ok(Command::Workdir(directory))
        }
        "ARG" => {
            let words = syntax::split_words(rest, instruction.escape);
            if words.is_empty() {
                return Err(fail("ARG requires at least one argument".to_string()));
            }
            words
                .into_iter()
                .map(|word| match word.split_once('=') {
                    Some(("", _)) => Err(fail("ARG names can not be blank".to_string())),
                    Some((key, value)) => Ok((key.to_string(), Some(value.to_string()))),
                    None => Ok((word, None)),
                })
                .collect::<Result<_, _>>()
                .map(Command::Arg)
        }
        "ONBUILD" => {
            if rest.is_empty() {
                return Err(fail("ONBUILD requires at least one argument".to_string()));
            }
            no_flags()?;
            let mut trigger = syntax::parse_line(rest, instruction.escape, span)?;
            match trigger.keyword.as_str() {
                "ONBUILD" => {
                    return Err(fail("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".to_string()));
                }
                "MAINTAINER" | "FROM" => {
                    return Err(fail(format!("{} isn't allowed as an ONBUILD trigger", trigger.keyword)));
                }
                _ => {}
            }
            trigger.heredocs = instruction.heredocs.clone();
            Ok(Command::Onbuild(Box::new(trigger)))
        }
        "STOPSIGNAL" => exactly_one().map(Command::Stopsignal),
        "HEALTHCHECK" => healthcheck(instruction, rest).map(Command::Healthcheck),
        _ => Err(unknown_instruction(instruction)),
    }
}

/// The text BuildKit stores in the image config for an ONBUILD trigger: the trigger line, then
/// each heredoc body followed by its terminator.
pub fn onbuild_expression(trigger: &Instruction) -> String {
    let mut expression = trigger.original.trim_start().to_string();
    for heredoc in &trigger.heredocs {
        expression.push('\n');
        expression.push_str(&heredoc.body);
        expression.push_str(&heredoc.name);
    }
    expression
}

fn copy_command(instruction: &Instruction, keyword: &str) -> Result<CopyCommand, DockerfileError> {
    let span = instruction.span;
    let mut words = split_list(&instruction.args);
    if words.len() < 2 {
        return Err(DockerfileError::at(
            format!("{keyword} requires at least two arguments, but only one was provided. Destination could not be determined"),
            span,
        ));
    }
    let is_add = keyword == "ADD";
    let known: &[(&str, FlagKind)] = if is_add {
        &[
            ("chown", FlagKind::String),
            ("chmod", FlagKind::String),
            ("link", FlagKind::Bool),
            ("keep-git-dir", FlagKind::Bool),
            ("checksum", FlagKind::String),
            ("unpack", FlagKind::Bool),
            ("exclude", FlagKind::Strings),
        ]
    } else {
        &[
            ("from", FlagKind::String),
            ("chown", FlagKind::String),
            ("chmod", FlagKind::String),
            ("link", FlagKind::Bool),
            ("parents", FlagKind::Bool),
            ("exclude", FlagKind::Strings),
        ]
    };
    let flags = parse_flags(&instruction.flags, known, span)?;
    let dest = words.pop().unwrap_or_default();
    if syntax::heredoc_name(&dest).is_some() {
        return Err(DockerfileError::at(format!("{keyword} cannot accept a heredoc as a destination"), span));
    }
    Ok(CopyCommand {
        sources: words,
        dest,
        heredocs: instruction.heredocs.clone(),
        from: flags.string("from"),
        chown: flags.string("chown"),
        chmod: flags.string("chmod"),
        link: flags.bool("link").unwrap_or(false),
        parents: flags.bool("parents").unwrap_or(false),
        excludes: flags.strings("exclude"),
        checksum: flags.string("checksum"),
        keep_git_dir: flags.bool("keep-git-dir"),
        unpack: flags.bool("unpack"),
    })
}

fn healthcheck(instruction: &Instruction, rest: &str) -> Result<Healthcheck, DockerfileError> {
    let span = instruction.span;
    let fail = |message: String| DockerfileError::at(message, span);
    if rest.is_empty() {
        return Err(fail("HEALTHCHECK requires at least one argument".to_string()));
    }
    let (kind, command_text) = syntax::split_first_word(rest);
    let kind = kind.to_uppercase();
    if kind == "NONE" {
        if !command_text.is_empty() {
            return Err(fail("HEALTHCHECK NONE takes no arguments".to_string()));
        }
        return Ok(Healthcheck::None);
    }
    let known = [
        ("interval", FlagKind::String),
        ("timeout", FlagKind::String),
        ("start-period", FlagKind::String),
        ("start-interval", FlagKind::String),
        ("retries", FlagKind::String),
    ];
    let flags = parse_flags(&instruction.flags, &known, span)?;
    if kind != "CMD" {
        return Err(fail(format!("Unknown type {} in HEALTHCHECK (try CMD)", go_quote(&kind))));
    }
    let test = syntax::maybe_json(command_text).map_err(fail)?;
    let is_empty = match &test {
        Args::Exec(words) => words.is_empty(),
        Args::Shell(text) => text.is_empty(),
    };
    if is_empty {
        return Err(fail("Missing command after HEALTHCHECK CMD".to_string()));
    }
    let non_empty = |name: &str| flags.string(name).filter(|value| !value.is_empty());
    let mut durations = Vec::new();
    for name in ["interval", "timeout", "start-period", "start-interval"] {
        let value = non_empty(name);
        if let Some(value) = &value {
            check_interval(name, value).map_err(fail)?;
        }
        durations.push(value);
    }
    let retries = non_empty("retries");
    if let Some(retries) = &retries {
        let parsed: i32 = retries.parse().map_err(|_| fail(format!("strconv.ParseInt: parsing {}: invalid syntax", go_quote(retries))))?;
        if parsed < 0 {
            return Err(fail(format!("--retries cannot be negative ({parsed})")));
        }
    }
    let mut durations = durations.into_iter();
    Ok(Healthcheck::Check {
        test,
        interval: durations.next().flatten(),
        timeout: durations.next().flatten(),
        start_period: durations.next().flatten(),
        start_interval: durations.next().flatten(),
        retries,
    })
}

/// BuildKit's `parseOptInterval`: a Go duration, zero or at least one millisecond.
fn check_interval(name: &str, value: &str) -> Result<(), String> {
    let nanoseconds = go_duration_nanoseconds(value)?;
    if nanoseconds != 0.0 && nanoseconds < 1_000_000.0 {
        return Err(format!("Interval {} cannot be less than 1ms", go_quote(name)));
    }
    Ok(())
}

/// Parses Go's `time.ParseDuration` syntax (`1h30m`, `1.5s`, `-2ms`, `0`) into nanoseconds,
/// with Go's error messages.
pub fn go_duration_nanoseconds(text: &str) -> Result<f64, String> {
    let invalid = || format!("time: invalid duration {}", go_quote(text));
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(0.0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let number_length = rest.find(|character: char| !(character.is_ascii_digit() || character == '.')).unwrap_or(rest.len());
        let number = &rest[..number_length];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(invalid());
        }
        let value: f64 = number.parse().map_err(|_| invalid())?;
        rest = &rest[number_length..];
        let unit_length = rest.find(|character: char| character.is_ascii_digit() || character == '.').unwrap_or(rest.len());
        let unit = &rest[..unit_length];
        rest = &rest[unit_length..];
        let scale = match unit {
            "" => {
                return Err(format!("time: missing unit in duration {}", go_quote(text)));
            }
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => {
                return Err(format!("time: unknown unit {} in duration {}", go_quote(unit), go_quote(text)));
            }
        };
        total += value * scale;
    }
    Ok(if negative { -total } else { total })
}

fn unknown_instruction(instruction: &Instruction) -> DockerfileError {
    let written = instruction
        .original
        .trim()
        .split(syntax::is_token_whitespace)
        .next()
        .filter(|word| !word.is_empty())
        .unwrap_or(&instruction.keyword);
    let error = DockerfileError::at(format!("unknown instruction: {written}"), instruction.span);
    match suggest(written, &INSTRUCTIONS) {
        Some(candidate) => error.with_help(format!("did you mean {}?", match_case(candidate, written))),
        None => error,
    }
}

/// BuildKit's `matchCase`: a suggestion in the case the user wrote in.
fn match_case(candidate: &str, written: &str) -> String {
    if written == written.to_lowercase() {
        candidate.to_lowercase()
    } else if written == written.to_uppercase() {
        candidate.to_uppercase()
    } else {
        candidate.to_string()
    }
}

/// BuildKit's `errNotJSON`, with its hint for Windows paths whose backslashes are not escaped.
fn not_json_message(keyword: &str, original: &str) -> String {
    let lowered = original.to_lowercase();
    let has_drive_path = lowered.char_indices().any(|(index, character)| {
        let mut after = lowered[index..].chars().skip(1);
        character == '"'
            && after.next().is_some_and(|letter| letter.is_ascii_lowercase())
            && after.next() == Some(':')
            && after.next() == Some('\\')
    });
    let mut message = format!("{keyword} requires the arguments to be in JSON form");
    if has_drive_path && !lowered.contains("\\\\") && lowered.contains('[') && lowered.contains(']') {
        message.push_str(&format!(
            ". It looks like '{lowered}' includes a file path without an escaped back-slash. JSON requires back-slashes to be escaped such as [\"c:\\\\path\\\\to\\\\file.exe\", \"/parameter\"]"
        ));
    }
    message
}

/// The words of a list-shaped instruction: the JSON array, or the shell form split on blanks.
fn split_list(args: &Args) -> Vec<String> {
    match args {
        Args::Exec(words) => words.clone(),
        Args::Shell(text) => text.split(syntax::is_token_whitespace).filter(|word| !word.is_empty()).map(str::to_string).collect(),
    }
}

fn is_valid_stage_name(name: &str) -> bool {
    let mut characters = name.chars();
    characters.next().is_some_and(|first| first.is_ascii_lowercase())
        && characters.all(|character| character.is_ascii_lowercase() || character.is_ascii_digit() || matches!(character, '-' | '_' | '.'))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlagKind {
    Bool,
    String,
    /// May be repeated; every value is kept.
    Strings,
}

/// The flags that were given, by name.
struct ParsedFlags {
    values: Vec<(String, FlagValue)>,
}

enum FlagValue {
    Bool(bool),
    String(String),
    Strings(Vec<String>),
}

impl ParsedFlags {
    fn get(&self, name: &str) -> Option<&FlagValue> {
        self.values.iter().find(|(given, _)| given == name).map(|(_, value)| value)
    }

    fn string(&self, name: &str) -> Option<String> {
        match self.get(name) {
            Some(FlagValue::String(value)) => Some(value.clone()),
            _ => None,
        }
    }

    fn bool(&self, name: &str) -> Option<bool> {
        match self.get(name) {
            Some(FlagValue::Bool(value)) => Some(*value),
            _ => None,
        }
    }

    fn strings(&self, name: &str) -> Vec<String> {
        match self.get(name) {
            Some(FlagValue::Strings(values)) => values.clone(),
            _ => Vec::new(),
        }
    }
}

/// BuildKit's `BFlags.Parse` for the flags an instruction knows.
fn parse_flags(flags: &[Flag], known: &[(&str, FlagKind)], span: Span) -> Result<ParsedFlags, DockerfileError> {
    let fail = |message: String| DockerfileError::at(message, span);
    let mut parsed = ParsedFlags { values: Vec::new() };
    for flag in flags {
        let name = flag.name.as_str();
        let Some(&(_, kind)) = known.iter().find(|(known_name, _)| *known_name == name) else {
            let names: Vec<&str> = known.iter().map(|(known_name, _)| *known_name).collect();
            let error = fail(format!("unknown flag: --{name}"));
            return Err(match suggest(name, &names) {
                Some(candidate) => error.with_help(format!("did you mean {candidate}?")),
                None => error,
            });
        };
        let missing_value = || fail(format!("missing a value on flag: --{name}"));
        let value = match (kind, &flag.value) {
            (FlagKind::Bool, None) => FlagValue::Bool(true),
            (FlagKind::Bool, Some(value)) => match value.to_lowercase().as_str() {
                "" => return Err(missing_value()),
                "true" => FlagValue::Bool(true),
                "false" => FlagValue::Bool(false),
                _ => {
                    return Err(fail(format!("expecting boolean value for flag --{name}, not: {value}")));
                }
            },
            (_, None) => return Err(missing_value()),
            (FlagKind::String, Some(value)) => FlagValue::String(value.clone()),
            (FlagKind::Strings, Some(value)) => FlagValue::Strings(vec![value.clone()]),
        };
        match (parsed.values.iter_mut().find(|(given, _)| given == name), value) {
            (Some((_, FlagValue::Strings(values))), FlagValue::Strings(more)) => values.extend(more),
            (Some(_), _) => return Err(fail(format!("duplicate flag specified: --{name}"))),
            (None, value) => parsed.values.push((name.to_string(), value)),
        }
    }
    Ok(parsed)
}

#[cfg(test)]
#[path = "instruction_tests.rs"]
mod tests;
