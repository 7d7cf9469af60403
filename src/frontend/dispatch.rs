//! Lowers one stage: its base, the ONBUILD triggers the base carries, then each instruction in
//! order, updating the image config, the history and the filesystem vertex.
//!
//! Progress names follow BuildKit: `[stage-1 2/5] COPY a /b`, the stage part only when the
//! Dockerfile has several stages, the step count over FROM (for image bases), COPY, ADD, RUN,
//! WORKDIR and inherited triggers; the index right-aligned to the width of the total.

use super::go_format::{duration_string, plain_list, quote_list};
use super::history::HistoryChain;
use super::scope::Scope;
use super::{Lowering, NamedContext, StageResult, origin};
use crate::dockerfile::diagnostic::DockerfileError;
use crate::dockerfile::instruction::go_duration_nanoseconds;
use crate::dockerfile::instruction::{Command, Healthcheck, Located, command, onbuild_expression};
use crate::dockerfile::syntax::{Args, Span, parse_line};
use crate::graph::{ContextSource, CopyAction, FileAction, HttpSource, MkdirAction, Op, Owner, VertexId};
use crate::oci::Platform;
use crate::oci::image_config::{Empty, Healthcheck as HealthcheckConfig, History, ImageDocument};
use crate::ops::image::ResolveError;

pub(super) const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// A stage while it is lowered.
pub(super) struct StageState {
    pub index: usize,
    /// `stage-1 ` or `name ` (with the space), empty in a single-stage Dockerfile.
    pub label: String,
    /// The stage name `--no-cache-filter` matches.
    pub stage_name: String,
    pub step: usize,
    pub total: usize,
    pub vertex: VertexId,
    /// The config so far; its `history` holds this stage's own entries (and a base image's).
    pub image: ImageDocument,
    /// The history of the stage this one is built on.
    pub inherited_history: HistoryChain,
    pub scope: Scope,
    pub cmd_set: bool,
}

impl StageState {
    /// The progress name of the next counted step.
    pub(super) fn step_name(&mut self, text: &str) -> String {
        if self.total == 0 {
            return text.to_string();
        }
        self.step += 1;
        let width = self.total.to_string().len();
        format!("[{}{:>width$}/{}] {text}", self.label, self.step, self.total)
    }

    /// Adds a history entry. A step with a layer always adds one, empty diff or not, as
    /// BuildKit does.
    pub(super) fn commit(&mut self, created_by: String, with_layer: bool, epoch: Option<i64>) {
        self.image.history.push(History {
            created: epoch.map(crate::oci::time::rfc3339),
            created_by: Some(created_by),
            author: None,
            comment: Some(HISTORY_COMMENT.into()),
            empty_layer: !with_layer,
        });
    }

    fn working_dir(&self) -> &str {
        if self.image.config.working_dir.is_empty() { "/" } else { &self.image.config.working_dir }
    }
}

/// The config of `FROM scratch` (BuildKit's empty image).
fn empty_image() -> ImageDocument {
    let mut image = ImageDocument::default();
    image.rootfs.kind = "layers".into();
    image.config.env = vec![format!("PATH={DEFAULT_PATH}")];
    image.config.working_dir = "/".into();
    image
}

fn counts_as_step(command: &Command) -> bool {
    matches!(command, Command::Copy(_) | Command::Add(_) | Command::Run(_) | Command::Workdir(_))
}

pub(super) fn lower_stage(lowering: &mut Lowering, index: usize) -> Result<StageResult, DockerfileError> {
    let definition = &lowering.stages[index];
    let from = definition.from.clone();
    let commands = definition.commands.clone();
    let stage_name = definition.name.clone();
    let Command::From { image: base_word, platform: platform_word, .. } = &from.value else {
        return Err(DockerfileError::at("stage does not start with FROM", from.span));
    };
    // `FROM --platform=...` picks the base image's platform (expanded with global ARGs).
    let platform = match platform_word {
        Some(word) => {
            let text =
                lowering.global_scope().expand(&lowering.lexer, word).map_err(|error| DockerfileError::at(error.message, from.span))?;
            Platform::parse(&text)
                .ok_or_else(|| DockerfileError::at(format!("failed to parse platform {text}: expected os/arch[/variant]"), from.span))?
        }
        None => lowering.options.platform.clone(),
    };
    let display_name = lowering.stage_display_name(index);
    let label = if lowering.multi_stage { format!("{display_name} ") } else { String::new() };

    // A named context with the stage's name replaces the whole stage.
    if let Some(name) = &stage_name
        && let Some((context_name, context)) = lowering.named_context(name).map(|(n, c)| (n.clone(), c.clone()))
    {
        let mut state = new_state(index, label, display_name, 0, 0, empty_image());
        base_from_context(lowering, &mut state, &context_name, &context, from.span, &platform)?;
        return Ok(finish(state));
    }

    let base_name =
        lowering.global_scope().expand(&lowering.lexer, base_word).map_err(|error| DockerfileError::at(error.message, from.span))?;
    if base_name.is_empty() {
        return Err(DockerfileError::at("base name (${}) should not be blank".replace("${}", base_word), from.span));
    }

    let mut triggers: Vec<String> = Vec::new();
    let mut state;
    let base_stage = if base_name.eq_ignore_ascii_case("scratch") { None } else { lowering.find_stage(&base_name, Some(index)) };
    if base_name.eq_ignore_ascii_case("scratch") {
        let total = commands.iter().filter(|c| counts_as_step(&c.value)).count();
        state = new_state(index, label, display_name, total, lowering.scratch_vertex(), empty_image());
    } else if let Some(parent) = base_stage {
        let parent_result = lowering.stage(parent)?;
        let image = parent_result.image.clone();
        triggers = image.config.on_build.clone();
        let total = commands.iter().filter(|c| counts_as_step(&c.value)).count() + triggers.len();
        state = new_state(index, label, display_name, total, parent_result.vertex, image);
        state.inherited_history = parent_result.history.clone();
        state.scope.args = parent_result.args.clone();
    } else if let Some((context_name, context)) = lowering.named_context(&base_name).map(|(n, c)| (n.clone(), c.clone())) {
        let total = commands.iter().filter(|c| counts_as_step(&c.value)).count() + 1;
        state = new_state(index, label, display_name, total, 0, empty_image());
        base_from_context(lowering, &mut state, &context_name, &context, from.span, &platform)?;
        triggers = std::mem::take(&mut state.image.config.on_build);
    } else {
        let resolved = lowering.resolver.resolve_reference(&base_name, &platform).map_err(|error| match error {
            // BuildKit's words: the name is a stage name until it parses as an image.
            ResolveError::Reference(_) => DockerfileError::at(format!("failed to parse stage name \"{base_name}\": {error}"), from.span),
            _ => DockerfileError::at(error.to_string(), from.span),
        })?;
        let total = commands.iter().filter(|c| counts_as_step(&c.value)).count() + 1;
        state = new_state(index, label, display_name, total, 0, resolved.config.clone());
        state.image.created = None;
        triggers = std::mem::take(&mut state.image.config.on_build);
        state.total += triggers.len();
        let name = state.step_name(&format!("FROM {}", resolved.display));
        state.vertex = lowering.graph.add(Op::Image(resolved.source), vec![], name, origin(from.span), Some(state.stage_name.clone()));
    }
    state.image.config.on_build.clear();
    if state.image.config.env_get("PATH").is_none() {
        state.image.config.env.push(format!("PATH={DEFAULT_PATH}"));
    }
    for (key, value) in state.image.config.env.iter().map(|entry| split_env(entry)).collect::<Vec<_>>() {
        state.scope.set_env(&key, &value);
    }

    for trigger in triggers {
        let instruction = parse_line(&trigger, lowering.options.dockerfile.directives.escape, from.span)?;
        let trigger_command = command(&instruction)?;
        let located = Located { span: from.span, original: format!("ONBUILD {}", instruction.original), value: trigger_command };
        dispatch(lowering, &mut state, &located)?;
    }
    for located in &commands {
        dispatch(lowering, &mut state, located)?;
    }
    Ok(finish(state))
}

fn new_state(index: usize, label: String, stage_name: String, total: usize, vertex: VertexId, image: ImageDocument) -> StageState {
    StageState {
        index,
        label,
        stage_name,
        step: 0,
        total,
        vertex,
        image,
        inherited_history: HistoryChain::default(),
        scope: Scope::default(),
        cmd_set: false,
    }
}

fn finish(mut state: StageState) -> StageResult {
    let history = state.inherited_history.extended(std::mem::take(&mut state.image.history));
    StageResult { vertex: state.vertex, image: state.image, history, args: state.scope.args }
}

fn split_env(entry: &str) -> (String, String) {
    match entry.split_once('=') {
        Some((key, value)) => (key.to_string(), value.to_string()),
        None => (entry.to_string(), String::new()),
    }
}

/// A base from a `--build-context`: a directory becomes the root filesystem, an OCI layout or a
/// `docker-image://` reference an image, an http(s) URL a root holding the file `/context`.
fn base_from_context(
    lowering: &mut Lowering,
    state: &mut StageState,
    context_name: &str,
    context: &NamedContext,
    span: Span,
    platform: &Platform,
) -> Result<(), DockerfileError> {
    match context {
        NamedContext::Directory(dir) => {
            let source = ContextSource { name: context_name.to_string(), dir: dir.clone(), dockerfile: None };
            let context_vertex =
                lowering.graph.add(Op::Context(source), vec![], format!("[context {context_name}] load from client"), None, None);
            let scratch = lowering.scratch_vertex();
            let copy = Op::File {
                actions: vec![FileAction::Copy(CopyAction {
                    source_input: 1,
                    sources: vec!["/".into()],
                    dest: "/".into(),
                    owner: None,
                    chmod: None,
                    excludes: vec![],
                    parents: false,
                    unpack: false,
                    timestamp: lowering.options.source_date_epoch,
                })],
            };
            let name = state.step_name(&format!("FROM {context_name}"));
            state.vertex = lowering.graph.add(copy, vec![scratch, context_vertex], name, origin(span), Some(state.stage_name.clone()));
        }
        NamedContext::OciLayout { path, selector } => {
            let resolved =
                lowering.resolver.resolve_layout(path, selector, platform).map_err(|error| DockerfileError::at(error.to_string(), span))?;
            state.image = resolved.config.clone();
            state.image.created = None;
            // Inherited triggers count as steps; the total must be right before the first name.
            state.total += state.image.config.on_build.len();
            let name = state.step_name(&format!("FROM {}", resolved.display));
            state.vertex = lowering.graph.add(Op::Image(resolved.source), vec![], name, origin(span), Some(state.stage_name.clone()));
        }
        NamedContext::Git(url) => {
            state.vertex = super::copy::git_context_vertex(lowering, url, span)?;
        }
        NamedContext::Http(url) => {
            let source = HttpSource { url: url.clone(), filename: super::HTTP_CONTEXT_FILE.into(), checksum: None };
            let name = format!("[context {context_name}] {url}");
            state.vertex = lowering.graph.add(Op::Http(source), vec![], name, origin(span), Some(state.stage_name.clone()));
        }
        NamedContext::DockerImage(reference) => {
            let resolved = lowering
                .resolver
                .resolve_context_image(context_name, reference, platform)
                .map_err(|error| DockerfileError::at(error.to_string(), span))?;
            state.image = resolved.config.clone();
            state.image.created = None;
            state.total += state.image.config.on_build.len();
            // BuildKit names the image after the context, without a step number (the total still
            // counts it).
            let name = format!("[context {context_name}] {reference}");
            state.vertex = lowering.graph.add(Op::Image(resolved.source), vec![], name, origin(span), Some(state.stage_name.clone()));
        }
    }
    Ok(())
}

fn expand(lowering: &Lowering, state: &StageState, word: &str, span: Span) -> Result<String, DockerfileError> {
    state.scope.expand(&lowering.lexer, word).map_err(|error| DockerfileError::at(error.message, span))
}

fn exec_form(state: &StageState, args: &Args) -> Vec<String> {
    match args {
        Args::Exec(words) => words.clone(),
        Args::Shell(text) => {
            let mut shell = if state.image.config.shell.is_empty() {
                vec!["/bin/sh".to_string(), "-c".to_string()]
            } else {
                state.image.config.shell.clone()
            };
            shell.push(text.clone());
            shell
        }
    }
}

fn dispatch(lowering: &mut Lowering, state: &mut StageState, located: &Located<Command>) -> Result<(), DockerfileError> {
    let span = located.span;
    let epoch = lowering.options.source_date_epoch;
    match &located.value {
        Command::From { .. } => Err(DockerfileError::at("FROM cannot be used here", span)),
        Command::Run(run) => super::run::lower_run(lowering, state, located, run),
        Command::Env(pairs) => {
            let mut expanded = Vec::new();
            for (key, value) in pairs {
                expanded.push((expand(lowering, state, key, span)?, expand(lowering, state, value, span)?));
            }
            let mut message = String::from("ENV");
            for (key, value) in expanded {
                message.push_str(&format!(" {key}={value}"));
                state.image.config.env_set(&key, &value);
                state.scope.set_env(&key, &value);
            }
            state.commit(message, false, epoch);
            Ok(())
        }
        Command::Label(pairs) => {
            let mut message = String::from("LABEL");
            let mut expanded = Vec::new();
            for (key, value) in pairs {
                expanded.push((expand(lowering, state, key, span)?, expand(lowering, state, value, span)?));
            }
            for (key, value) in expanded {
                message.push_str(&format!(" {key}={value}"));
                state.image.config.labels.insert(key, value);
            }
            state.commit(message, false, epoch);
            Ok(())
        }
        Command::Maintainer(text) => {
            state.image.author = Some(text.clone());
            state.commit(format!("MAINTAINER {text}"), false, epoch);
            Ok(())
        }
        Command::Expose(ports) => {
            let mut parsed = Vec::new();
            for port in ports {
                for word in state.scope.expand_words(&lowering.lexer, port).map_err(|e| DockerfileError::at(e.message, span))? {
                    parsed.extend(parse_port(&word).map_err(|error| DockerfileError::at(error.to_string(), span))?);
                }
            }
            for port in &parsed {
                state.image.config.exposed_ports.insert(port.clone(), Empty {});
            }
            state.commit(format!("EXPOSE {}", plain_list(&parsed)), false, epoch);
            Ok(())
        }
        Command::Volume(volumes) => {
            let mut expanded = Vec::new();
            for volume in volumes {
                let volume = expand(lowering, state, volume, span)?;
                if volume.trim().is_empty() {
                    return Err(DockerfileError::at("VOLUME specified can not be an empty string", span));
                }
                state.image.config.volumes.insert(volume.clone(), Empty {});
                expanded.push(volume);
            }
            state.commit(format!("VOLUME {}", plain_list(&expanded)), false, epoch);
            Ok(())
        }
        Command::User(user) => {
            let user = expand(lowering, state, user, span)?;
            state.image.config.user = user.clone();
            state.commit(format!("USER {user}"), false, epoch);
            Ok(())
        }
        Command::Workdir(path) => {
            let expanded = expand(lowering, state, path, span)?;
            let joined = if expanded.starts_with('/') { expanded.clone() } else { format!("{}/{}", state.working_dir(), expanded) };
            let directory = crate::oci::path::clean_absolute(&joined);
            state.image.config.working_dir = directory.clone();
            if directory == "/" {
                state.commit(format!("WORKDIR {directory}"), false, epoch);
                return Ok(());
            }
            let owner = (!state.image.config.user.is_empty()).then(|| parse_owner(&state.image.config.user));
            let op = Op::File {
                actions: vec![FileAction::Mkdir(MkdirAction { path: directory.clone(), mode: 0o755, owner, timestamp: epoch })],
            };
            let original = located.original.trim();
            let shown = state.scope.progress_name(&lowering.lexer, original);
            let name = state.step_name(&uppercase_first_word(&shown));
            let base = state.vertex;
            state.vertex = lowering.graph.add(op, vec![base], name, origin(span), Some(state.stage_name.clone()));
            state.commit(format!("WORKDIR {directory}"), true, epoch);
            Ok(())
        }
        Command::Cmd(args) => {
            let command = exec_form(state, args);
            state.image.config.cmd = Some(command.clone());
            state.image.config.args_escaped = true;
            state.cmd_set = true;
            state.commit(format!("CMD {}", quote_list(&command)), false, epoch);
            Ok(())
        }
        Command::Entrypoint(args) => {
            let entrypoint = exec_form(state, args);
            state.image.config.entrypoint = Some(entrypoint.clone());
            if !state.cmd_set {
                state.image.config.cmd = None;
            }
            state.commit(format!("ENTRYPOINT {}", quote_list(&entrypoint)), false, epoch);
            Ok(())
        }
        Command::Shell(shell) => {
            state.image.config.shell = shell.clone();
            state.commit(format!("SHELL {}", plain_list(shell)), false, epoch);
            Ok(())
        }
        Command::Stopsignal(signal) => {
            let signal = expand(lowering, state, signal, span)?;
            if !valid_signal(&signal) {
                return Err(DockerfileError::at(format!("Invalid signal: {signal}"), span));
            }
            state.image.config.stop_signal = signal.clone();
            state.commit(format!("STOPSIGNAL {signal}"), false, epoch);
            Ok(())
        }
        Command::Healthcheck(healthcheck) => {
            let config = healthcheck_config(healthcheck).map_err(|error| DockerfileError::at(error.to_string(), span))?;
            let message = format!(
                "HEALTHCHECK {{Test:{} Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
                plain_list(&config.test),
                duration_string(config.interval),
                duration_string(config.timeout),
                duration_string(config.start_period),
                duration_string(config.start_interval),
                config.retries
            );
            state.image.config.healthcheck = Some(config);
            state.commit(message, false, epoch);
            Ok(())
        }
        Command::Arg(pairs) => {
            let mut entries = Vec::new();
            for (name, default) in pairs {
                let value = lowering.arg_value(name, default.as_deref(), &state.scope, span)?;
                entries.push(match &value {
                    Some(value) => format!("{name}={value}"),
                    None => name.clone(),
                });
                // Declared again without a value in a stage built FROM another stage: the value
                // the parent stage gave it stays, though history shows the bare name (measured
                // with the oracle: `ARG V` gives `RUN |1 V=parent` and history `ARG V`).
                let value =
                    value.or_else(|| state.scope.args.iter().rev().find(|(key, _)| key == name).and_then(|(_, value)| value.clone()));
                state.scope.set_arg(name, value);
            }
            state.commit(format!("ARG {}", entries.join(" ")), false, epoch);
            Ok(())
        }
        Command::Onbuild(trigger) => {
            state.image.config.on_build.push(onbuild_expression(trigger));
            Ok(())
        }
        Command::Copy(copy) => super::copy::lower_copy(lowering, state, located, copy, false),
        Command::Add(copy) => super::copy::lower_copy(lowering, state, located, copy, true),
    }
}

/// `user[:group]`.
pub(super) fn parse_owner(text: &str) -> Owner {
    match text.split_once(':') {
        Some((user, group)) => Owner { user: user.into(), group: Some(group.into()) },
        None => Owner { user: text.into(), group: None },
    }
}

/// BuildKit shows a step as written, first word upper-cased.
pub(super) fn uppercase_first_word(text: &str) -> String {
    match text.split_once(char::is_whitespace) {
        Some((first, rest)) => format!("{} {}", first.to_uppercase(), rest),
        None => text.to_uppercase(),
    }
}

/// `80`, `80/udp`, `8000-8002/tcp` → `80/tcp`, ... (ranges expanded).
fn parse_port(text: &str) -> Result<Vec<String>, String> {
    let (ports, protocol) = match text.split_once('/') {
        Some((ports, protocol)) => (ports, protocol.to_lowercase()),
        None => (text, "tcp".to_string()),
    };
    let invalid = || format!("invalid containerPort: {text}");
    let (start, end) = match ports.split_once('-') {
        Some((start, end)) => (start.parse::<u32>().map_err(|_| invalid())?, end.parse::<u32>().map_err(|_| invalid())?),
        None => {
            let port = ports.parse::<u32>().map_err(|_| invalid())?;
            (port, port)
        }
    };
    if end < start || end > 65535 {
        return Err(invalid());
    }
    Ok((start..=end).map(|port| format!("{port}/{protocol}")).collect())
}

fn valid_signal(signal: &str) -> bool {
    if let Ok(number) = signal.parse::<u32>() {
        return number > 0 && number <= 64;
    }
    let name = signal.strip_prefix("SIG").unwrap_or(signal);
    const NAMES: &[&str] = &[
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL", "PIPE", "POLL", "PROF", "PWR",
        "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU",
        "XFSZ",
    ];
    NAMES.contains(&name) || name.starts_with("RTMIN") || name.starts_with("RTMAX")
}

fn healthcheck_config(healthcheck: &Healthcheck) -> Result<HealthcheckConfig, String> {
    match healthcheck {
        Healthcheck::None => Ok(HealthcheckConfig { test: vec!["NONE".into()], ..Default::default() }),
        Healthcheck::Check { test, interval, timeout, start_period, start_interval, retries } => {
            let test = match test {
                Args::Exec(words) => {
                    let mut all = vec!["CMD".to_string()];
                    all.extend(words.iter().cloned());
                    all
                }
                Args::Shell(text) => vec!["CMD-SHELL".to_string(), text.clone()],
            };
            let duration = |value: &Option<String>, name: &str| -> Result<i64, String> {
                match value {
                    None => Ok(0),
                    Some(text) => match go_duration_nanoseconds(text) {
                        Ok(nanos) if nanos >= 0.0 => Ok(nanos.round() as i64),
                        Ok(_) => Err(format!("{name} cannot be negative")),
                        Err(message) => Err(message),
                    },
                }
            };
            let retries = match retries {
                None => 0,
                Some(text) => text.parse::<i64>().map_err(|_| format!("invalid retries `{text}`"))?,
            };
            Ok(HealthcheckConfig {
                test,
                interval: duration(interval, "interval")?,
                timeout: duration(timeout, "timeout")?,
                start_period: duration(start_period, "start-period")?,
                start_interval: duration(start_interval, "start-interval")?,
                retries,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_paths() {
        assert_eq!(parse_port("80").unwrap(), ["80/tcp"]);
        assert_eq!(parse_port("53/UDP").unwrap(), ["53/udp"]);
        assert_eq!(parse_port("8000-8002").unwrap(), ["8000/tcp", "8001/tcp", "8002/tcp"]);
        assert!(parse_port("x").is_err());
        assert_eq!(uppercase_first_word("workdir /app"), "WORKDIR /app");
    }
}
