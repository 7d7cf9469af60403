//! Lowers `RUN` to an exec op: the argv (shell form through SHELL, exec form as written, a
//! heredoc body as the script), the process environment as BuildKit builds it, the working
//! directory and user of the stage, `--network`, and `--mount` (bind, cache, tmpfs).
//!
//! History: `RUN [|N K=V ...] argv # buildkit`, where the `|N` prefix lists the stage's ARGs.

use super::dispatch::{StageState, uppercase_first_word};
use super::{Lowering, origin};
use crate::dockerfile::diagnostic::DockerfileError;
use crate::dockerfile::instruction::{Command, Located, RunCommand};
use crate::dockerfile::syntax::{Args, Span, heredoc_name};
use crate::graph::{CacheSharing, ExecMount, ExecMountKind, ExecOp, NetworkMode, Op, VertexId};

/// BuildKit's hostname inside RUN steps.
const HOSTNAME: &str = "buildkitsandbox";

pub(super) fn lower_run(
    lowering: &mut Lowering,
    state: &mut StageState,
    located: &Located<Command>,
    run: &RunCommand,
) -> Result<(), DockerfileError> {
    let span = located.span;
    let shell =
        if state.image.config.shell.is_empty() { vec!["/bin/sh".to_string(), "-c".to_string()] } else { state.image.config.shell.clone() };
    let mut script_mount = None;
    let args = match &run.args {
        Args::Exec(words) => words.clone(),
        Args::Shell(text) => {
            match (run.heredocs.as_slice(), heredoc_name(text.trim())) {
                ([], _) => with_shell(shell, text.clone()),
                // A lone heredoc with a `#!` line is a script run by its interpreter: written to
                // `/dev/pipes/NAME` and run through the shell, as BuildKit does (its history
                // reads `RUN /bin/sh -c /dev/pipes/EOF`).
                ([heredoc], Some(name)) if heredoc.name == name && heredoc.body.starts_with("#!") => {
                    let path = format!("/dev/pipes/{name}");
                    script_mount = Some(ExecMount {
                        target: path.clone(),
                        kind: ExecMountKind::Inline { data: heredoc.body.clone().into_bytes(), mode: 0o755 },
                    });
                    with_shell(shell, path)
                }
                ([heredoc], Some(name)) if heredoc.name == name => with_shell(shell, heredoc.body.clone()),
                // Heredocs inside a command line: the shell reads them, so the command line is
                // given back to it with the bodies and delimiters after it.
                (heredocs, _) => {
                    let mut script = text.clone();
                    for heredoc in heredocs {
                        script.push('\n');
                        script.push_str(&heredoc.body);
                        if !heredoc.body.ends_with('\n') && !heredoc.body.is_empty() {
                            script.push('\n');
                        }
                        script.push_str(&heredoc.name);
                    }
                    with_shell(shell, script)
                }
            }
        }
    };

    // The process environment: the image's, then ARGs the image does not set.
    let mut env: Vec<String> = state.scope.env.iter().map(|(key, value)| format!("{key}={value}")).collect();
    let mut arg_entries = Vec::new();
    for (name, value) in &state.scope.args {
        let shown = state.scope.lookup(name).or_else(|| value.clone()).unwrap_or_default();
        arg_entries.push(format!("{name}={shown}"));
        if let Some(value) = value
            && !state.scope.env.iter().any(|(key, _)| key == name)
        {
            env.push(format!("{name}={value}"));
        }
    }
    let proxy_env: Vec<String> = lowering
        .options
        .build_args
        .iter()
        .filter(|(name, _)| super::scope::PROXY_ARGS.contains(&name.as_str()))
        .filter(|(name, _)| !state.scope.args.iter().any(|(declared, _)| declared == *name))
        .map(|(name, value)| format!("{name}={value}"))
        .collect();

    let network = match run.network.as_deref() {
        None => lowering.options.network,
        Some("default") => NetworkMode::Default,
        Some("none") => NetworkMode::None,
        Some("host") if !lowering.options.allow_network_host => {
            return Err(DockerfileError::at("network.host is not allowed: RUN --network=host needs `--allow network.host`", span));
        }
        Some("host") => NetworkMode::Host,
        Some(other) => return Err(DockerfileError::at(format!("unsupported network mode `{other}` (default, none, host)"), span)),
    };
    if run.security.as_deref().is_some_and(|security| security != "sandbox") {
        return Err(DockerfileError::at("RUN --security=insecure is not supported", span));
    }

    let mut inputs = vec![state.vertex];
    let mut mounts: Vec<ExecMount> = script_mount.into_iter().collect();
    for text in &run.mounts {
        let text = state.scope.expand(&lowering.lexer, text).map_err(|error| DockerfileError::at(error.message, span))?;
        let ssh_index = mounts.iter().filter(|mount| matches!(mount.kind, ExecMountKind::Ssh { .. })).count();
        mounts.push(parse_mount(lowering, state, &text, &mut inputs, ssh_index, span)?);
    }

    let op = ExecOp {
        args: args.clone(),
        env,
        cwd: if state.image.config.working_dir.is_empty() { "/".into() } else { state.image.config.working_dir.clone() },
        user: state.image.config.user.clone(),
        hostname: HOSTNAME.into(),
        extra_hosts: lowering.options.extra_hosts.clone(),
        ulimits: lowering.options.ulimits.clone(),
        shm_size: lowering.options.shm_size,
        network,
        mounts,
        proxy_env,
    };
    let mut shown = state.scope.progress_name(&lowering.lexer, located.original.trim());
    // A command that is one heredoc shows its first line, as BuildKit: `RUN <<EOF (make...)`.
    if let Args::Shell(text) = &run.args
        && let ([heredoc], Some(name)) = (run.heredocs.as_slice(), heredoc_name(text.trim()))
        && heredoc.name == name
    {
        let mut lines = heredoc.body.lines();
        let first = state.scope.progress_name(&lowering.lexer, lines.next().unwrap_or(""));
        let more = if lines.next().is_some() { "..." } else { "" };
        shown.push_str(&format!(" ({first}{more})"));
    }
    let name = state.step_name(&uppercase_first_word(&shown));
    state.vertex = lowering.graph.add(Op::Exec(op), inputs, name, origin(span), Some(state.stage_name.clone()));
    let prefix = if arg_entries.is_empty() { String::new() } else { format!("|{} {} ", arg_entries.len(), arg_entries.join(" ")) };
    state.commit(format!("RUN {prefix}{} # buildkit", args.join(" ")), true, lowering.options.source_date_epoch);
    Ok(())
}

fn with_shell(mut shell: Vec<String>, script: String) -> Vec<String> {
    shell.push(script);
    shell
}

/// One `--mount=type=...,target=...` value.
fn parse_mount(
    lowering: &mut Lowering,
    state: &StageState,
    text: &str,
    inputs: &mut Vec<VertexId>,
    ssh_index: usize,
    span: Span,
) -> Result<ExecMount, DockerfileError> {
    let invalid = |message: String| DockerfileError::at(format!("invalid mount `{text}`: {message}"), span);
    let mut fields = std::collections::BTreeMap::new();
    for field in text.split(',') {
        let (key, value) = match field.split_once('=') {
            Some((key, value)) => (key, value),
            // Only these stand alone, as in BuildKit's `parseMount`.
            None if ["readonly", "ro", "readwrite", "rw", "required"].contains(&field.trim().to_ascii_lowercase().as_str()) => {
                (field, "true")
            }
            None => return Err(DockerfileError::at(format!("invalid field '{field}' must be a key=value pair"), span)),
        };
        fields.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    // An empty value is no value: `from=` means the build context, as in BuildKit.
    let get = |names: &[&str]| names.iter().find_map(|name| fields.get(*name).filter(|value| !value.is_empty()).cloned());
    let kind = get(&["type"]).unwrap_or_else(|| "bind".into());
    // Secrets and ssh sockets have default targets, as in BuildKit.
    let default_target = match kind.as_str() {
        "secret" => get(&["id"]).map(|id| format!("/run/secrets/{id}")),
        "ssh" => Some(format!("/run/buildkit/ssh_agent.{ssh_index}")),
        _ => None,
    };
    let target = get(&["target", "dst", "destination"]).or(default_target).ok_or_else(|| invalid("a target is required".into()))?;
    let target = if target.starts_with('/') {
        target
    } else {
        let base = if state.image.config.working_dir.is_empty() { "/" } else { &state.image.config.working_dir };
        format!("{}/{target}", base.trim_end_matches('/'))
    };
    let flag = |name: &str| get(&[name]).is_some_and(|value| value == "true" || value == "1");
    let number = |name: &str, default: u32, radix: u32| -> Result<u32, DockerfileError> {
        match get(&[name]) {
            None => Ok(default),
            Some(value) => u32::from_str_radix(&value, radix).map_err(|_| invalid(format!("`{name}` must be a number"))),
        }
    };
    let source_input = |from: Option<String>, inputs: &mut Vec<VertexId>, lowering: &mut Lowering| -> Result<usize, DockerfileError> {
        let vertex = match from {
            Some(from) => super::copy::source_from(lowering, state, &from, span)?,
            None => lowering.context_vertex(),
        };
        inputs.push(vertex);
        Ok(inputs.len() - 1)
    };
    let kind = match kind.as_str() {
        "bind" => {
            let input = source_input(get(&["from"]), inputs, lowering)?;
            ExecMountKind::Bind {
                input,
                source: get(&["source", "src"]).unwrap_or_else(|| "/".into()),
                readwrite: flag("rw") || flag("readwrite"),
            }
        }
        "cache" => {
            let sharing = match get(&["sharing"]).as_deref() {
                None | Some("shared") => CacheSharing::Shared,
                Some("private") => CacheSharing::Private,
                Some("locked") => CacheSharing::Locked,
                Some(other) => return Err(invalid(format!("unknown sharing `{other}`"))),
            };
            let from = match get(&["from"]) {
                Some(from) => {
                    let input = source_input(Some(from), inputs, lowering)?;
                    Some((input, get(&["source", "src"]).unwrap_or_else(|| "/".into())))
                }
                None => None,
            };
            ExecMountKind::Cache {
                id: get(&["id"]).unwrap_or_else(|| target.clone()),
                sharing,
                mode: number("mode", 0o755, 8)?,
                uid: number("uid", 0, 10)?,
                gid: number("gid", 0, 10)?,
                from,
            }
        }
        "tmpfs" => {
            let size = match get(&["size"]) {
                None => None,
                // BuildKit reads it with go-units' RAMInBytes and its own message; 0 is no limit.
                Some(value) => Some(
                    crate::oci::units::ram_in_bytes(&value)
                        .map_err(|_| DockerfileError::at(format!("invalid value for size: {value}"), span))?,
                )
                .filter(|bytes| *bytes > 0),
            };
            ExecMountKind::Tmpfs { size }
        }
        "secret" => {
            let id = get(&["id"]).unwrap_or_else(|| target_name(&target));
            let env = get(&["env"]);
            let explicit_target = get(&["target", "dst", "destination"]).is_some();
            ExecMountKind::Secret {
                file: explicit_target || env.is_none(),
                id,
                env,
                required: flag("required"),
                mode: number("mode", 0o400, 8)?,
                uid: number("uid", 0, 10)?,
                gid: number("gid", 0, 10)?,
            }
        }
        "ssh" => ExecMountKind::Ssh {
            id: get(&["id"]).unwrap_or_else(|| "default".into()),
            required: flag("required"),
            mode: number("mode", 0o600, 8)?,
            uid: number("uid", 0, 10)?,
            gid: number("gid", 0, 10)?,
        },
        other => return Err(invalid(format!("unknown mount type `{other}`"))),
    };
    Ok(ExecMount { target, kind })
}

/// The last component of a path (a secret's default id).
fn target_name(target: &str) -> String {
    target.trim_end_matches('/').rsplit('/').next().unwrap_or(target).to_string()
}
