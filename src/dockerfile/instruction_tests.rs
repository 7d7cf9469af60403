//! Tests of `instruction.rs`, kept apart so the module itself stays readable.

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
    let dump: Vec<String> = commands.iter().flatten().map(|command| format!("{:?}", command.value)).collect();
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
    assert_eq!(error_of("FROM\n").buildkit_message(), "dockerfile parse error on line 1: FROM requires either one or three arguments");
    assert_eq!(error_of("FROM a b\n").message, "dockerfile parse error on line 1: FROM requires either one or three arguments");
    assert_eq!(
        error_of("FROM a AS 1st\n").message,
        "dockerfile parse error on line 1: invalid name for build stage: \"1st\", name can't start with a number or contain symbols"
    );
}

#[test]
fn run_forms_and_flags() {
    assert_eq!(
        format!("{:?}", typed("RUN --mount=type=cache,target=/c --mount=type=secret,id=a --network=none --security=insecure make")),
        "Run(RunCommand { args: Shell(\"make\"), heredocs: [], mounts: [\"type=cache,target=/c\", \"type=secret,id=a\"], network: Some(\"none\"), security: Some(\"insecure\") })"
    );
    assert_eq!(
        format!("{:?}", typed("RUN [\"echo\", \"hi\"]")),
        "Run(RunCommand { args: Exec([\"echo\", \"hi\"]), heredocs: [], mounts: [], network: None, security: None })"
    );
    let Command::Run(run) = typed("RUN <<EOF\necho hi\nEOF") else { panic!("not a RUN") };
    assert_eq!((run.heredocs.len(), run.heredocs[0].body.as_str()), (1, "echo hi\n"));
}

#[test]
fn cmd_entrypoint_and_shell() {
    assert_eq!(format!("{:?}", typed("CMD [\"a\", \"b\"]")), "Cmd(Exec([\"a\", \"b\"]))");
    assert_eq!(format!("{:?}", typed("CMD echo $HOME")), "Cmd(Shell(\"echo $HOME\"))");
    assert_eq!(format!("{:?}", typed("ENTRYPOINT [\"x\"]")), "Entrypoint(Exec([\"x\"]))");
    assert_eq!(format!("{:?}", typed("SHELL [\"bash\", \"-c\"]")), "Shell([\"bash\", \"-c\"])");
    assert_eq!(error_after_from("SHELL bash -c"), "dockerfile parse error on line 2: SHELL requires the arguments to be in JSON form");
    assert_eq!(error_after_from("SHELL []"), "dockerfile parse error on line 2: SHELL requires at least one argument");
    assert!(error_after_from(r#"SHELL ["c:\windows\cmd.exe"]"#).contains("includes a file path without an escaped back-slash"));
    assert_eq!(error_after_from("CMD --help"), "dockerfile parse error on line 2: unknown flag: --help");
}

#[test]
fn env_label_and_arg_pairs_keep_quotes() {
    assert_eq!(
        format!("{:?}", typed(r#"ENV A=1 B="two words" C=three\ words"#)),
        r#"Env([("A", "1"), ("B", "\"two words\""), ("C", "three\\ words")])"#
    );
    assert_eq!(format!("{:?}", typed("ENV LEGACY value with spaces")), r#"Env([("LEGACY", "value with spaces")])"#);
    assert_eq!(
        format!("{:?}", typed(r#"LABEL "com.example.vendor"="ACME Inc" version=1.0"#)),
        r#"Label([("\"com.example.vendor\"", "\"ACME Inc\""), ("version", "1.0")])"#
    );
    assert_eq!(
        format!("{:?}", typed(r#"ARG A B=2 C="x y" D="#)),
        r#"Arg([("A", None), ("B", Some("2")), ("C", Some("\"x y\"")), ("D", Some(""))])"#
    );
    assert_eq!(error_after_from("ENV"), "dockerfile parse error on line 2: ENV requires at least one argument");
    assert_eq!(error_after_from("LABEL =x"), "dockerfile parse error on line 2: LABEL names can not be blank");
    assert_eq!(error_after_from("ARG =x"), "dockerfile parse error on line 2: ARG names can not be blank");
    assert_eq!(error_after_from("ARG"), "dockerfile parse error on line 2: ARG requires at least one argument");
}

#[test]
fn single_argument_instructions() {
    assert_eq!(format!("{:?}", typed("MAINTAINER Jane Doe <jane@example.com>")), "Maintainer(\"Jane Doe <jane@example.com>\")");
    assert_eq!(format!("{:?}", typed("USER app:app")), "User(\"app:app\")");
    assert_eq!(format!("{:?}", typed("WORKDIR /my dir")), "Workdir(\"/my dir\")");
    assert_eq!(format!("{:?}", typed("STOPSIGNAL SIGKILL")), "Stopsignal(\"SIGKILL\")");
    for keyword in ["MAINTAINER", "USER", "WORKDIR", "STOPSIGNAL"] {
        assert_eq!(error_after_from(keyword), format!("dockerfile parse error on line 2: {keyword} requires exactly one argument"));
    }
}

#[test]
fn expose_and_volume_lists() {
    assert_eq!(format!("{:?}", typed("EXPOSE 8080/tcp 443 80")), "Expose([\"443\", \"80\", \"8080/tcp\"])");
    assert_eq!(format!("{:?}", typed("VOLUME /a /b")), "Volume([\"/a\", \"/b\"])");
    assert_eq!(format!("{:?}", typed("VOLUME [\"/a b\"]")), "Volume([\"/a b\"])");
    assert_eq!(error_after_from("EXPOSE"), "dockerfile parse error on line 2: EXPOSE requires at least one argument");
    assert_eq!(error_after_from("VOLUME"), "dockerfile parse error on line 2: VOLUME requires at least one argument");
    assert_eq!(error_after_from("VOLUME [\" \"]"), "dockerfile parse error on line 2: VOLUME specified can not be an empty string");
}

#[test]
fn copy_with_every_flag() {
    let Command::Copy(copy) = typed("COPY --from=build --chown=1:2 --chmod=644 --link --parents --exclude=*.md --exclude=.git a b /dst/")
    else {
        panic!("not a COPY")
    };
    assert_eq!(
        format!("{copy:?}"),
        "CopyCommand { sources: [\"a\", \"b\"], dest: \"/dst/\", heredocs: [], from: Some(\"build\"), chown: Some(\"1:2\"), \
chmod: Some(\"644\"), link: true, parents: true, excludes: [\"*.md\", \".git\"], checksum: None, keep_git_dir: None, unpack: None }"
    );
    let Command::Copy(copy) = typed("COPY --link=false [\"a b\", \"/c d/\"]") else { panic!("not a COPY") };
    assert_eq!((copy.sources, copy.dest.as_str(), copy.link), (vec!["a b".to_string()], "/c d/", false));
}

#[test]
fn add_with_its_flags() {
    let Command::Add(add) = typed("ADD --checksum=sha256:abc --keep-git-dir --unpack=false --chown=app https://x/y.tar /y") else {
        panic!("not an ADD")
    };
    assert_eq!(
        (add.checksum.as_deref(), add.keep_git_dir, add.unpack, add.chown.as_deref(), add.from),
        (Some("sha256:abc"), Some(true), Some(false), Some("app"), None)
    );
    assert_eq!(error_after_from("ADD --from=a b c"), "dockerfile parse error on line 2: unknown flag: --from");
}

#[test]
fn copy_heredoc_sources() {
    let Command::Copy(copy) = typed("COPY <<one <<\"two\" /dst/\n1\none\n2\ntwo") else { panic!("not a COPY") };
    assert_eq!(copy.sources, ["<<one", "<<\"two\""]);
    let names: Vec<Option<String>> = copy.sources.iter().map(|source| syntax::heredoc_name(source)).collect();
    assert_eq!(names, [Some("one".to_string()), Some("two".to_string())]);
    assert_eq!(
        copy.heredocs.iter().map(|heredoc| (heredoc.name.as_str(), heredoc.expand)).collect::<Vec<_>>(),
        [("one", true), ("two", false)]
    );
    assert_eq!(error_after_from("COPY a <<EOF\nx\nEOF"), "dockerfile parse error on line 2: COPY cannot accept a heredoc as a destination");
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
    assert_eq!(error.message, "dockerfile parse error on line 2: unknown flag: --frm");
    assert_eq!(error.help.as_deref(), Some("did you mean from?"));
    assert_eq!(error.buildkit_message(), "dockerfile parse error on line 2: unknown flag: --frm (did you mean from?)");
    assert_eq!(error_after_from("RUN --mout=type=cache x"), "dockerfile parse error on line 2: unknown flag: --mout (did you mean mount?)");
    assert_eq!(
        error_after_from("FROM --platfrom=x a"),
        "dockerfile parse error on line 2: unknown flag: --platfrom (did you mean platform?)"
    );
    assert_eq!(error_after_from("ENV --x=1 A=b"), "dockerfile parse error on line 2: unknown flag: --x");
    assert_eq!(
        error_after_from("HEALTHCHECK --intervl=5s CMD true"),
        "dockerfile parse error on line 2: unknown flag: --intervl (did you mean interval?)"
    );
}

#[test]
fn flag_value_errors_match_buildkit() {
    assert_eq!(error_after_from("COPY --from a b"), "dockerfile parse error on line 2: missing a value on flag: --from");
    assert_eq!(error_after_from("COPY --link= a b"), "dockerfile parse error on line 2: missing a value on flag: --link");
    assert_eq!(
        error_after_from("COPY --link=yes a b"),
        "dockerfile parse error on line 2: expecting boolean value for flag --link, not: yes"
    );
    assert_eq!(error_after_from("COPY --from=a --from=b c d"), "dockerfile parse error on line 2: duplicate flag specified: --from");
    assert_eq!(error_after_from("COPY --exclude a b"), "dockerfile parse error on line 2: missing a value on flag: --exclude");
}

#[test]
fn flags_buildkit_ignores_are_ignored() {
    assert_eq!(format!("{:?}", typed("ARG --whatever=1 A")), "Arg([(\"A\", None)])");
    assert_eq!(format!("{:?}", typed("STOPSIGNAL --x SIGTERM")), "Stopsignal(\"SIGTERM\")");
    assert_eq!(format!("{:?}", typed("HEALTHCHECK --x NONE")), "Healthcheck(None)");
}

#[test]
fn unknown_instruction_suggests_in_the_case_written() {
    let error = error_of("FROM scratch\nCOPPY a b\n");
    assert_eq!(error.message, "dockerfile parse error on line 2: unknown instruction: COPPY");
    assert_eq!(error.help.as_deref(), Some("did you mean COPY?"));
    assert_eq!(error.span, Some(Span::line(2)));
    assert_eq!(error_after_from("runn make"), "dockerfile parse error on line 2: unknown instruction: runn (did you mean run?)");
    assert_eq!(error_after_from("Frobnicate x"), "dockerfile parse error on line 2: unknown instruction: Frobnicate");
}

#[test]
fn only_arg_may_come_before_the_first_from() {
    let commands = parse_commands("ARG V=1\nFROM a:$V\nRUN x\n").map(|commands| commands.len());
    assert_eq!(commands.map_err(|error| error.message), Ok(3));
    let error = error_of("ARG V=1\nENV A=b\nFROM a\n");
    assert_eq!((error.message.as_str(), error.span), ("no build stage in current context", Some(Span::line(2))));
    let error = error_of("# comment\nRUN x \\\n  y\nFROM a\n");
    assert_eq!((error.message.as_str(), error.span), ("no build stage in current context", Some(Span { start_line: 2, end_line: 3 })));
}

#[test]
fn onbuild_triggers() {
    let Command::Onbuild(trigger) = typed("ONBUILD RUN --network=none make") else { panic!("not ONBUILD") };
    assert_eq!((trigger.keyword.as_str(), trigger.original.as_str(), trigger.flags.len()), ("RUN", "RUN --network=none make", 1));
    assert!(matches!(command(&trigger), Ok(Command::Run(_))));
    let Command::Onbuild(trigger) = typed("ONBUILD COPY <<EOF /x\nbody\nEOF") else { panic!("not ONBUILD") };
    assert_eq!(onbuild_expression(&trigger), "COPY <<EOF /x\nbody\nEOF");
    assert_eq!(
        error_after_from("ONBUILD ONBUILD RUN x"),
        "dockerfile parse error on line 2: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
    );
    assert_eq!(error_after_from("ONBUILD from a"), "dockerfile parse error on line 2: FROM isn't allowed as an ONBUILD trigger");
    assert_eq!(
        error_after_from("ONBUILD MAINTAINER me"),
        "dockerfile parse error on line 2: MAINTAINER isn't allowed as an ONBUILD trigger"
    );
    assert_eq!(error_after_from("ONBUILD"), "dockerfile parse error on line 2: ONBUILD requires at least one argument");
}

#[test]
fn healthcheck_forms_and_options() {
    assert_eq!(
        format!(
            "{:?}",
            typed("HEALTHCHECK --interval=30s --timeout=1m30s --start-period=0 --start-interval=500ms --retries=3 CMD curl -f http://x/")
        ),
        "Healthcheck(Check { test: Shell(\"curl -f http://x/\"), interval: Some(\"30s\"), timeout: Some(\"1m30s\"), \
start_period: Some(\"0\"), start_interval: Some(\"500ms\"), retries: Some(\"3\") })"
    );
    assert_eq!(
        format!("{:?}", typed("healthcheck cmd [\"true\"]")),
        "Healthcheck(Check { test: Exec([\"true\"]), interval: None, timeout: None, start_period: None, start_interval: None, retries: None })"
    );
    assert_eq!(format!("{:?}", typed("HEALTHCHECK none")), "Healthcheck(None)");
    let cases = [
        ("HEALTHCHECK", "HEALTHCHECK requires at least one argument"),
        ("HEALTHCHECK NONE x", "HEALTHCHECK NONE takes no arguments"),
        ("HEALTHCHECK CMD", "Missing command after HEALTHCHECK CMD"),
        ("HEALTHCHECK RUN x", "Unknown type \"RUN\" in HEALTHCHECK (try CMD)"),
        ("HEALTHCHECK --interval=5 CMD x", "time: missing unit in duration \"5\""),
        ("HEALTHCHECK --interval=abc CMD x", "time: invalid duration \"abc\""),
        ("HEALTHCHECK --timeout=5y CMD x", "time: unknown unit \"y\" in duration \"5y\""),
        ("HEALTHCHECK --interval=10us CMD x", "Interval \"interval\" cannot be less than 1ms"),
        ("HEALTHCHECK --retries=-1 CMD x", "--retries cannot be negative (-1)"),
        ("HEALTHCHECK --retries=x CMD x", "strconv.ParseInt: parsing \"x\": invalid syntax"),
    ];
    for (line, message) in cases {
        assert_eq!(error_after_from(line), format!("dockerfile parse error on line 2: {message}"), "{line:?}");
    }
}

#[test]
fn parser_level_errors_have_no_prefix() {
    let error = error_of("FROM a\nENV A\n");
    assert_eq!((error.message.as_str(), error.span), ("ENV must have two arguments", Some(Span::line(2))));
}

#[test]
fn located_commands_keep_span_and_original() {
    let commands = parse_commands("FROM a\nRUN echo \\\n  hi\n").unwrap_or_default();
    let located: Vec<(Span, &str)> = commands.iter().map(|command| (command.span, command.original.as_str())).collect();
    assert_eq!(located, [(Span::line(1), "FROM a"), (Span { start_line: 2, end_line: 3 }, "RUN echo   hi")]);
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
    let Some(span) = error.span else { panic!("no span") };
    let shown =
        format!("{}ERROR: failed to solve: {}\n", render_snippet(&dockerfile.name, &dockerfile.source, span), error.buildkit_message());
    let expected = "Dockerfile:7\n\
--------------------\n   5 |     COPY . .\n   6 |     RUN make\n   7 | >>> COPPY --from=x a b\n   8 |     RUN make install\n   9 |     CMD [\"app\"]\n\
--------------------\n\
ERROR: failed to solve: dockerfile parse error on line 7: unknown instruction: COPPY (did you mean COPY?)\n";
    assert_eq!(shown, expected);
}
