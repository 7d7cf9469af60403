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
            message: format!(
                "dockerfile parse error on line {}: {}",
                instruction.span.start_line, error.message
            ),
            ..error
        })?;
        match value {
            Command::From { .. } => in_stage = true,
            Command::Arg(_) => {}
            _ if !in_stage => {
                return Err(DockerfileError::at(
                    "no build stage in current context",
                    instruction.span,
                ));
            }
            _ => {}
        }
        located.push(Located {
            span: instruction.span,
            original: instruction.original.clone(),
            value,
        });
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
        if rest.is_empty() {
            Err(fail(format!("{keyword} requires exactly one argument")))
        } else {
            Ok(rest.to_string())
        }
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
                            syntax::go_quote(name)
                        )));
                    }
                    (image, Some(lowered))
                }
                [image] => (image, None),
                _ => {
                    return Err(fail(
                        "FROM requires either one or three arguments".to_string(),
                    ));
                }
            };
            let flags = parse_flags(&instruction.flags, &[("platform", FlagKind::String)], span)?;
            Ok(Command::From {
                image: image.clone(),
                name,
                platform: flags.string("platform"),
            })
        }
        "RUN" => {
            let known = [
                ("mount", FlagKind::Strings),
                ("network", FlagKind::String),
                ("security", FlagKind::String),
            ];
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
                Args::Shell(text) if !text.is_empty() => {
                    Err(fail(not_json_message("SHELL", &instruction.original)))
                }
                _ => Err(fail("SHELL requires at least one argument".to_string())),
            }
        }
        "ENV" | "LABEL" => {
            no_flags()?;
            let pairs =
                syntax::split_name_values(rest, keyword, instruction.escape).map_err(fail)?;
            if pairs.is_empty() {
                return Err(fail(format!("{keyword} requires at least one argument")));
            }
            if pairs.iter().any(|(key, _)| key.is_empty()) {
                return Err(fail(format!("{keyword} names can not be blank")));
            }
            Ok(if keyword == "ENV" {
                Command::Env(pairs)
            } else {
                Command::Label(pairs)
            })
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
        "ADD" | "COPY" => copy_command(instruction, keyword).map(|copy| {
            if keyword == "ADD" {
                Command::Add(copy)
            } else {
                Command::Copy(copy)
            }
        }),
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
                        Err(fail(
                            "VOLUME specified can not be an empty string".to_string(),
                        ))
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
                    return Err(fail(
                        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".to_string(),
                    ));
                }
                "MAINTAINER" | "FROM" => {
                    return Err(fail(format!(
                        "{} isn't allowed as an ONBUILD trigger",
                        trigger.keyword
                    )));
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
            format!(
                "{keyword} requires at least two arguments, but only one was provided. Destination could not be determined"
            ),
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
        return Err(DockerfileError::at(
            format!("{keyword} cannot accept a heredoc as a destination"),
            span,
        ));
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
        return Err(fail(
            "HEALTHCHECK requires at least one argument".to_string(),
        ));
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
        return Err(fail(format!(
            "Unknown type {} in HEALTHCHECK (try CMD)",
            syntax::go_quote(&kind)
        )));
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
        let parsed: i32 = retries.parse().map_err(|_| {
            fail(format!(
                "strconv.ParseInt: parsing {}: invalid syntax",
                syntax::go_quote(retries)
            ))
        })?;
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
        return Err(format!(
            "Interval {} cannot be less than 1ms",
            syntax::go_quote(name)
        ));
    }
    Ok(())
}

/// Parses Go's `time.ParseDuration` syntax (`1h30m`, `1.5s`, `-2ms`, `0`) into nanoseconds,
/// with Go's error messages.
pub fn go_duration_nanoseconds(text: &str) -> Result<f64, String> {
    let invalid = || format!("time: invalid duration {}", syntax::go_quote(text));
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
        let number_length = rest
            .find(|character: char| !(character.is_ascii_digit() || character == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_length];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(invalid());
        }
        let value: f64 = number.parse().map_err(|_| invalid())?;
        rest = &rest[number_length..];
        let unit_length = rest
            .find(|character: char| character.is_ascii_digit() || character == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_length];
        rest = &rest[unit_length..];
        let scale = match unit {
            "" => {
                return Err(format!(
                    "time: missing unit in duration {}",
                    syntax::go_quote(text)
                ));
            }
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    syntax::go_quote(unit),
                    syntax::go_quote(text)
                ));
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
        Some(candidate) => {
            error.with_help(format!("did you mean {}?", match_case(candidate, written)))
        }
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
            && after
                .next()
                .is_some_and(|letter| letter.is_ascii_lowercase())
            && after.next() == Some(':')
            && after.next() == Some('\\')
    });
    let mut message = format!("{keyword} requires the arguments to be in JSON form");
    if has_drive_path && !lowered.contains("\\\\") && lowered.contains('[') && lowered.contains(']')
    {
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
        Args::Shell(text) => text
            .split(syntax::is_token_whitespace)
            .filter(|word| !word.is_empty())
            .map(str::to_string)
            .collect(),
    }
}

fn is_valid_stage_name(name: &str) -> bool {
    let mut characters = name.chars();
    characters
        .next()
        .is_some_and(|first| first.is_ascii_lowercase())
        && characters.all(|character| {
            character.is_ascii_lowercase()
                || character.is_ascii_digit()
                || matches!(character, '-' | '_' | '.')
        })
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
        self.values
            .iter()
            .find(|(given, _)| given == name)
            .map(|(_, value)| value)
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
fn parse_flags(
    flags: &[Flag],
    known: &[(&str, FlagKind)],
    span: Span,
) -> Result<ParsedFlags, DockerfileError> {
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
                    return Err(fail(format!(
                        "expecting boolean value for flag --{name}, not: {value}"
                    )));
                }
            },
            (_, None) => return Err(missing_value()),
            (FlagKind::String, Some(value)) => FlagValue::String(value.clone()),
            (FlagKind::Strings, Some(value)) => FlagValue::Strings(vec![value.clone()]),
        };
        match (
            parsed.values.iter_mut().find(|(given, _)| given == name),
            value,
        ) {
            (Some((_, FlagValue::Strings(values))), FlagValue::Strings(more)) => {
                values.extend(more)
            }
            (Some(_), _) => return Err(fail(format!("duplicate flag specified: --{name}"))),
            (None, value) => parsed.values.push((name.to_string(), value)),
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_commands(text: &str) -> Result<Vec<Located<Command>>, DockerfileError> {
        let dockerfile = syntax::parse("Dockerfile", text.as_bytes())?;
        commands(&dockerfile)
    }

    /// The commands of `FROM scratch` + `line`, without the FROM.
    fn typed(line: &str) -> Command {
        match parse_commands(&format!("FROM scratch\n{line}\n")) {
            Ok(mut commands) => commands.remove(1).value,
            Err(error) => panic!("{line:?} failed: {}", error.buildkit_message()),
        }
    }

    fn error_of(text: &str) -> DockerfileError {
        match parse_commands(text) {
            Ok(commands) => panic!("expected an error, got {commands:#?}"),
            Err(error) => error,
        }
    }

    /// The BuildKit message of the error for `FROM scratch` + `line` (the line is line 2).
    fn error_after_from(line: &str) -> String {
        let error = error_of(&format!("FROM scratch\n{line}\n"));
        assert_eq!(error.span.map(|span| span.start_line), Some(2), "{line:?}");
        error.buildkit_message()
    }

    #[test]
    fn from_with_name_and_platform() {
        let text = "FROM --platform=linux/arm64 golang:1.22 AS Build\nFROM build\n";
        let commands = parse_commands(text).map_err(|error| error.message);
        let dump: Vec<String> = commands
            .iter()
            .flatten()
            .map(|command| format!("{:?}", command.value))
            .collect();
        assert_eq!(
            dump,
            [
                "From { image: \"golang:1.22\", name: Some(\"build\"), platform: Some(\"linux/arm64\") }",
                "From { image: \"build\", name: None, platform: None }",
            ]
        );
    }

    #[test]
    fn from_argument_errors() {
        assert_eq!(
            error_of("FROM\n").buildkit_message(),
            "dockerfile parse error on line 1: FROM requires either one or three arguments"
        );
        assert_eq!(
            error_of("FROM a b\n").message,
            "dockerfile parse error on line 1: FROM requires either one or three arguments"
        );
        assert_eq!(
            error_of("FROM a AS 1st\n").message,
            "dockerfile parse error on line 1: invalid name for build stage: \"1st\", name can't start with a number or contain symbols"
        );
    }

    #[test]
    fn run_forms_and_flags() {
        assert_eq!(
            format!(
                "{:?}",
                typed(
                    "RUN --mount=type=cache,target=/c --mount=type=secret,id=a --network=none --security=insecure make"
                )
            ),
            "Run(RunCommand { args: Shell(\"make\"), heredocs: [], mounts: [\"type=cache,target=/c\", \"type=secret,id=a\"], network: Some(\"none\"), security: Some(\"insecure\") })"
        );
        assert_eq!(
            format!("{:?}", typed("RUN [\"echo\", \"hi\"]")),
            "Run(RunCommand { args: Exec([\"echo\", \"hi\"]), heredocs: [], mounts: [], network: None, security: None })"
        );
        let Command::Run(run) = typed("RUN <<EOF\necho hi\nEOF") else {
            panic!("not a RUN")
        };
        assert_eq!(
            (run.heredocs.len(), run.heredocs[0].body.as_str()),
            (1, "echo hi\n")
        );
    }

    #[test]
    fn cmd_entrypoint_and_shell() {
        assert_eq!(
            format!("{:?}", typed("CMD [\"a\", \"b\"]")),
            "Cmd(Exec([\"a\", \"b\"]))"
        );
        assert_eq!(
            format!("{:?}", typed("CMD echo $HOME")),
            "Cmd(Shell(\"echo $HOME\"))"
        );
        assert_eq!(
            format!("{:?}", typed("ENTRYPOINT [\"x\"]")),
            "Entrypoint(Exec([\"x\"]))"
        );
        assert_eq!(
            format!("{:?}", typed("SHELL [\"bash\", \"-c\"]")),
            "Shell([\"bash\", \"-c\"])"
        );
        assert_eq!(
            error_after_from("SHELL bash -c"),
            "dockerfile parse error on line 2: SHELL requires the arguments to be in JSON form"
        );
        assert_eq!(
            error_after_from("SHELL []"),
            "dockerfile parse error on line 2: SHELL requires at least one argument"
        );
        assert!(
            error_after_from(r#"SHELL ["c:\windows\cmd.exe"]"#)
                .contains("includes a file path without an escaped back-slash")
        );
        assert_eq!(
            error_after_from("CMD --help"),
            "dockerfile parse error on line 2: unknown flag: --help"
        );
    }

    #[test]
    fn env_label_and_arg_pairs_keep_quotes() {
        assert_eq!(
            format!("{:?}", typed(r#"ENV A=1 B="two words" C=three\ words"#)),
            r#"Env([("A", "1"), ("B", "\"two words\""), ("C", "three\\ words")])"#
        );
        assert_eq!(
            format!("{:?}", typed("ENV LEGACY value with spaces")),
            r#"Env([("LEGACY", "value with spaces")])"#
        );
        assert_eq!(
            format!(
                "{:?}",
                typed(r#"LABEL "com.example.vendor"="ACME Inc" version=1.0"#)
            ),
            r#"Label([("\"com.example.vendor\"", "\"ACME Inc\""), ("version", "1.0")])"#
        );
        assert_eq!(
            format!("{:?}", typed(r#"ARG A B=2 C="x y" D="#)),
            r#"Arg([("A", None), ("B", Some("2")), ("C", Some("\"x y\"")), ("D", Some(""))])"#
        );
        assert_eq!(
            error_after_from("ENV"),
            "dockerfile parse error on line 2: ENV requires at least one argument"
        );
        assert_eq!(
            error_after_from("LABEL =x"),
            "dockerfile parse error on line 2: LABEL names can not be blank"
        );
        assert_eq!(
            error_after_from("ARG =x"),
            "dockerfile parse error on line 2: ARG names can not be blank"
        );
        assert_eq!(
            error_after_from("ARG"),
            "dockerfile parse error on line 2: ARG requires at least one argument"
        );
    }

    #[test]
    fn single_argument_instructions() {
        assert_eq!(
            format!("{:?}", typed("MAINTAINER Jane Doe <jane@example.com>")),
            "Maintainer(\"Jane Doe <jane@example.com>\")"
        );
        assert_eq!(format!("{:?}", typed("USER app:app")), "User(\"app:app\")");
        assert_eq!(
            format!("{:?}", typed("WORKDIR /my dir")),
            "Workdir(\"/my dir\")"
        );
        assert_eq!(
            format!("{:?}", typed("STOPSIGNAL SIGKILL")),
            "Stopsignal(\"SIGKILL\")"
        );
        for keyword in ["MAINTAINER", "USER", "WORKDIR", "STOPSIGNAL"] {
            assert_eq!(
                error_after_from(keyword),
                format!(
                    "dockerfile parse error on line 2: {keyword} requires exactly one argument"
                )
            );
        }
    }

    #[test]
    fn expose_and_volume_lists() {
        assert_eq!(
            format!("{:?}", typed("EXPOSE 8080/tcp 443 80")),
            "Expose([\"443\", \"80\", \"8080/tcp\"])"
        );
        assert_eq!(
            format!("{:?}", typed("VOLUME /a /b")),
            "Volume([\"/a\", \"/b\"])"
        );
        assert_eq!(
            format!("{:?}", typed("VOLUME [\"/a b\"]")),
            "Volume([\"/a b\"])"
        );
        assert_eq!(
            error_after_from("EXPOSE"),
            "dockerfile parse error on line 2: EXPOSE requires at least one argument"
        );
        assert_eq!(
            error_after_from("VOLUME"),
            "dockerfile parse error on line 2: VOLUME requires at least one argument"
        );
        assert_eq!(
            error_after_from("VOLUME [\" \"]"),
            "dockerfile parse error on line 2: VOLUME specified can not be an empty string"
        );
    }

    #[test]
    fn copy_with_every_flag() {
        let Command::Copy(copy) = typed(
            "COPY --from=build --chown=1:2 --chmod=644 --link --parents --exclude=*.md --exclude=.git a b /dst/",
        ) else {
            panic!("not a COPY")
        };
        assert_eq!(
            format!("{copy:?}"),
            "CopyCommand { sources: [\"a\", \"b\"], dest: \"/dst/\", heredocs: [], from: Some(\"build\"), chown: Some(\"1:2\"), \
chmod: Some(\"644\"), link: true, parents: true, excludes: [\"*.md\", \".git\"], checksum: None, keep_git_dir: None, unpack: None }"
        );
        let Command::Copy(copy) = typed("COPY --link=false [\"a b\", \"/c d/\"]") else {
            panic!("not a COPY")
        };
        assert_eq!(
            (copy.sources, copy.dest.as_str(), copy.link),
            (vec!["a b".to_string()], "/c d/", false)
        );
    }

    #[test]
    fn add_with_its_flags() {
        let Command::Add(add) = typed(
            "ADD --checksum=sha256:abc --keep-git-dir --unpack=false --chown=app https://x/y.tar /y",
        ) else {
            panic!("not an ADD")
        };
        assert_eq!(
            (
                add.checksum.as_deref(),
                add.keep_git_dir,
                add.unpack,
                add.chown.as_deref(),
                add.from
            ),
            (
                Some("sha256:abc"),
                Some(true),
                Some(false),
                Some("app"),
                None
            )
        );
        assert_eq!(
            error_after_from("ADD --from=a b c"),
            "dockerfile parse error on line 2: unknown flag: --from"
        );
    }

    #[test]
    fn copy_heredoc_sources() {
        let Command::Copy(copy) = typed("COPY <<one <<\"two\" /dst/\n1\none\n2\ntwo") else {
            panic!("not a COPY")
        };
        assert_eq!(copy.sources, ["<<one", "<<\"two\""]);
        let names: Vec<Option<String>> = copy
            .sources
            .iter()
            .map(|source| syntax::heredoc_name(source))
            .collect();
        assert_eq!(names, [Some("one".to_string()), Some("two".to_string())]);
        assert_eq!(
            copy.heredocs
                .iter()
                .map(|heredoc| (heredoc.name.as_str(), heredoc.expand))
                .collect::<Vec<_>>(),
            [("one", true), ("two", false)]
        );
        assert_eq!(
            error_after_from("COPY a <<EOF\nx\nEOF"),
            "dockerfile parse error on line 2: COPY cannot accept a heredoc as a destination"
        );
    }

    #[test]
    fn copy_and_add_need_a_destination() {
        assert_eq!(
            error_after_from("COPY a"),
            "dockerfile parse error on line 2: COPY requires at least two arguments, but only one was provided. Destination could not be determined"
        );
        assert_eq!(
            error_after_from("ADD --frm=x a"),
            "dockerfile parse error on line 2: ADD requires at least two arguments, but only one was provided. Destination could not be determined"
        );
    }

    #[test]
    fn unknown_flags_suggest_a_known_one() {
        let error = error_of("FROM scratch\nCOPY --frm=build a b\n");
        assert_eq!(
            error.message,
            "dockerfile parse error on line 2: unknown flag: --frm"
        );
        assert_eq!(error.help.as_deref(), Some("did you mean from?"));
        assert_eq!(
            error.buildkit_message(),
            "dockerfile parse error on line 2: unknown flag: --frm (did you mean from?)"
        );
        assert_eq!(
            error_after_from("RUN --mout=type=cache x"),
            "dockerfile parse error on line 2: unknown flag: --mout (did you mean mount?)"
        );
        assert_eq!(
            error_after_from("FROM --platfrom=x a"),
            "dockerfile parse error on line 2: unknown flag: --platfrom (did you mean platform?)"
        );
        assert_eq!(
            error_after_from("ENV --x=1 A=b"),
            "dockerfile parse error on line 2: unknown flag: --x"
        );
        assert_eq!(
            error_after_from("HEALTHCHECK --intervl=5s CMD true"),
            "dockerfile parse error on line 2: unknown flag: --intervl (did you mean interval?)"
        );
    }

    #[test]
    fn flag_value_errors_match_buildkit() {
        assert_eq!(
            error_after_from("COPY --from a b"),
            "dockerfile parse error on line 2: missing a value on flag: --from"
        );
        assert_eq!(
            error_after_from("COPY --link= a b"),
            "dockerfile parse error on line 2: missing a value on flag: --link"
        );
        assert_eq!(
            error_after_from("COPY --link=yes a b"),
            "dockerfile parse error on line 2: expecting boolean value for flag --link, not: yes"
        );
        assert_eq!(
            error_after_from("COPY --from=a --from=b c d"),
            "dockerfile parse error on line 2: duplicate flag specified: --from"
        );
        assert_eq!(
            error_after_from("COPY --exclude a b"),
            "dockerfile parse error on line 2: missing a value on flag: --exclude"
        );
    }

    #[test]
    fn flags_buildkit_ignores_are_ignored() {
        assert_eq!(
            format!("{:?}", typed("ARG --whatever=1 A")),
            "Arg([(\"A\", None)])"
        );
        assert_eq!(
            format!("{:?}", typed("STOPSIGNAL --x SIGTERM")),
            "Stopsignal(\"SIGTERM\")"
        );
        assert_eq!(
            format!("{:?}", typed("HEALTHCHECK --x NONE")),
            "Healthcheck(None)"
        );
    }

    #[test]
    fn unknown_instruction_suggests_in_the_case_written() {
        let error = error_of("FROM scratch\nCOPPY a b\n");
        assert_eq!(
            error.message,
            "dockerfile parse error on line 2: unknown instruction: COPPY"
        );
        assert_eq!(error.help.as_deref(), Some("did you mean COPY?"));
        assert_eq!(error.span, Some(Span::line(2)));
        assert_eq!(
            error_after_from("runn make"),
            "dockerfile parse error on line 2: unknown instruction: runn (did you mean run?)"
        );
        assert_eq!(
            error_after_from("Frobnicate x"),
            "dockerfile parse error on line 2: unknown instruction: Frobnicate"
        );
    }

    #[test]
    fn only_arg_may_come_before_the_first_from() {
        let commands = parse_commands("ARG V=1\nFROM a:$V\nRUN x\n").map(|commands| commands.len());
        assert_eq!(commands.map_err(|error| error.message), Ok(3));
        let error = error_of("ARG V=1\nENV A=b\nFROM a\n");
        assert_eq!(
            (error.message.as_str(), error.span),
            ("no build stage in current context", Some(Span::line(2)))
        );
        let error = error_of("# comment\nRUN x \\\n  y\nFROM a\n");
        assert_eq!(
            (error.message.as_str(), error.span),
            (
                "no build stage in current context",
                Some(Span {
                    start_line: 2,
                    end_line: 3
                })
            )
        );
    }

    #[test]
    fn onbuild_triggers() {
        let Command::Onbuild(trigger) = typed("ONBUILD RUN --network=none make") else {
            panic!("not ONBUILD")
        };
        assert_eq!(
            (
                trigger.keyword.as_str(),
                trigger.original.as_str(),
                trigger.flags.len()
            ),
            ("RUN", "RUN --network=none make", 1)
        );
        assert!(matches!(command(&trigger), Ok(Command::Run(_))));
        let Command::Onbuild(trigger) = typed("ONBUILD COPY <<EOF /x\nbody\nEOF") else {
            panic!("not ONBUILD")
        };
        assert_eq!(onbuild_expression(&trigger), "COPY <<EOF /x\nbody\nEOF");
        assert_eq!(
            error_after_from("ONBUILD ONBUILD RUN x"),
            "dockerfile parse error on line 2: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
        );
        assert_eq!(
            error_after_from("ONBUILD from a"),
            "dockerfile parse error on line 2: FROM isn't allowed as an ONBUILD trigger"
        );
        assert_eq!(
            error_after_from("ONBUILD MAINTAINER me"),
            "dockerfile parse error on line 2: MAINTAINER isn't allowed as an ONBUILD trigger"
        );
        assert_eq!(
            error_after_from("ONBUILD"),
            "dockerfile parse error on line 2: ONBUILD requires at least one argument"
        );
    }

    #[test]
    fn healthcheck_forms_and_options() {
        assert_eq!(
            format!(
                "{:?}",
                typed(
                    "HEALTHCHECK --interval=30s --timeout=1m30s --start-period=0 --start-interval=500ms --retries=3 CMD curl -f http://x/"
                )
            ),
            "Healthcheck(Check { test: Shell(\"curl -f http://x/\"), interval: Some(\"30s\"), timeout: Some(\"1m30s\"), \
start_period: Some(\"0\"), start_interval: Some(\"500ms\"), retries: Some(\"3\") })"
        );
        assert_eq!(
            format!("{:?}", typed("healthcheck cmd [\"true\"]")),
            "Healthcheck(Check { test: Exec([\"true\"]), interval: None, timeout: None, start_period: None, start_interval: None, retries: None })"
        );
        assert_eq!(
            format!("{:?}", typed("HEALTHCHECK none")),
            "Healthcheck(None)"
        );
        let cases = [
            ("HEALTHCHECK", "HEALTHCHECK requires at least one argument"),
            ("HEALTHCHECK NONE x", "HEALTHCHECK NONE takes no arguments"),
            ("HEALTHCHECK CMD", "Missing command after HEALTHCHECK CMD"),
            (
                "HEALTHCHECK RUN x",
                "Unknown type \"RUN\" in HEALTHCHECK (try CMD)",
            ),
            (
                "HEALTHCHECK --interval=5 CMD x",
                "time: missing unit in duration \"5\"",
            ),
            (
                "HEALTHCHECK --interval=abc CMD x",
                "time: invalid duration \"abc\"",
            ),
            (
                "HEALTHCHECK --timeout=5y CMD x",
                "time: unknown unit \"y\" in duration \"5y\"",
            ),
            (
                "HEALTHCHECK --interval=10us CMD x",
                "Interval \"interval\" cannot be less than 1ms",
            ),
            (
                "HEALTHCHECK --retries=-1 CMD x",
                "--retries cannot be negative (-1)",
            ),
            (
                "HEALTHCHECK --retries=x CMD x",
                "strconv.ParseInt: parsing \"x\": invalid syntax",
            ),
        ];
        for (line, message) in cases {
            assert_eq!(
                error_after_from(line),
                format!("dockerfile parse error on line 2: {message}"),
                "{line:?}"
            );
        }
    }

    #[test]
    fn parser_level_errors_have_no_prefix() {
        let error = error_of("FROM a\nENV A\n");
        assert_eq!(
            (error.message.as_str(), error.span),
            ("ENV must have two arguments", Some(Span::line(2)))
        );
    }

    #[test]
    fn located_commands_keep_span_and_original() {
        let commands = parse_commands("FROM a\nRUN echo \\\n  hi\n").unwrap_or_default();
        let located: Vec<(Span, &str)> = commands
            .iter()
            .map(|command| (command.span, command.original.as_str()))
            .collect();
        assert_eq!(
            located,
            [
                (Span::line(1), "FROM a"),
                (
                    Span {
                        start_line: 2,
                        end_line: 3
                    },
                    "RUN echo   hi"
                )
            ]
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration_nanoseconds("1h30m"), Ok(5_400e9));
        assert_eq!(go_duration_nanoseconds("1.5s"), Ok(1.5e9));
        assert_eq!(go_duration_nanoseconds("-2ms"), Ok(-2e6));
        assert_eq!(go_duration_nanoseconds(".5µs"), Ok(500.0));
        assert!(go_duration_nanoseconds("").is_err());
        assert!(go_duration_nanoseconds("1..2s").is_err());
    }

    #[test]
    fn an_error_renders_like_buildkit() {
        use super::super::diagnostic::render_snippet;
        let text = "FROM alpine\nARG A=1\nENV B=2\nWORKDIR /src\nCOPY . .\nRUN make\nCOPPY --from=x a b\nRUN make install\nCMD [\"app\"]\n";
        let dockerfile = match syntax::parse("Dockerfile", text.as_bytes()) {
            Ok(dockerfile) => dockerfile,
            Err(error) => panic!("{error}"),
        };
        let error = match commands(&dockerfile) {
            Ok(_) => panic!("expected an error"),
            Err(error) => error,
        };
        let Some(span) = error.span else {
            panic!("no span")
        };
        let shown = format!(
            "{}ERROR: failed to solve: {}\n",
            render_snippet(&dockerfile.name, &dockerfile.source, span),
            error.buildkit_message()
        );
        let expected = "Dockerfile:7\n\
--------------------\n   5 |     COPY . .\n   6 |     RUN make\n   7 | >>> COPPY --from=x a b\n   8 |     RUN make install\n   9 |     CMD [\"app\"]\n\
--------------------\n\
ERROR: failed to solve: dockerfile parse error on line 7: unknown instruction: COPPY (did you mean COPY?)\n";
        assert_eq!(shown, expected);
    }
}
