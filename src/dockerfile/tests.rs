//! Golden snapshots of the Dockerfile reader (insta, under `snapshots/`): what a corpus of
//! Dockerfiles parses to, and every diagnostic the reader produces, rendered as the user sees it
//! (BuildKit's snippet, then `ERROR: failed to solve: ...`). The unit tests beside each file
//! pin single rules; these show whole results, so a change to the parser or to any message shows
//! up here as a diff to review. After an intended change: `INSTA_UPDATE=always cargo test --lib
//! dockerfile::tests`, then read and commit the `.snap` files.
//!
//! Every error message of `syntax.rs`, `instruction.rs` and `shell.rs` has a case; a new
//! message gets one too.

use super::diagnostic::render_snippet;
use super::instruction::commands;
use super::shell::Lexer;
use super::syntax::{Args, Dockerfile, parse};

/// The Dockerfiles of the parser corpus: every instruction, heredocs, escapes, continuations.
const CORPUS: &[(&str, &str)] = &[
    (
        "every_instruction",
        "# syntax=docker/dockerfile:1\n\
         # check=skip=all\n\
         ARG BASE=alpine:3.20\n\
         FROM --platform=$BUILDPLATFORM ${BASE} AS Build\n\
         MAINTAINER someone@example.com\n\
         LABEL org.opencontainers.image.title=\"app\" version=1.0 \"quoted key\"=x\n\
         LABEL legacy form with spaces\n\
         ENV A=1 B=\"two words\" C=three\\ words\n\
         ENV LEGACY value with spaces\n\
         ARG V1 V2=default\n\
         WORKDIR /src\n\
         USER 1000:1000\n\
         SHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"]\n\
         RUN --mount=type=cache,target=/root/.cache --mount=type=secret,id=token --network=none --security=insecure make\n\
         RUN [\"echo\", \"exec form\"]\n\
         COPY --from=build --chown=1000:1000 --chmod=0755 --link --parents --exclude=*.tmp --exclude=.git a b /dest/\n\
         COPY [\"with space\", \"/dest dir/\"]\n\
         ADD --checksum=sha256:0000000000000000000000000000000000000000000000000000000000000000 --keep-git-dir=true --unpack=false --link=false https://example.invalid/a.tar /a\n\
         EXPOSE 8080/tcp 53/udp 80\n\
         VOLUME [\"/data\", \"/logs\"]\n\
         VOLUME /cache /tmp/x\n\
         STOPSIGNAL SIGTERM\n\
         HEALTHCHECK --interval=30s --timeout=3s --start-period=1m --start-interval=1s --retries=3 CMD curl -f http://localhost/ || exit 1\n\
         HEALTHCHECK CMD [\"/bin/check\", \"--quick\"]\n\
         HEALTHCHECK NONE\n\
         ONBUILD RUN echo triggered\n\
         ONBUILD COPY . /app\n\
         CMD [\"app\", \"--serve\"]\n\
         ENTRYPOINT /bin/entry --flag\n\
         cmd lower case keyword\n",
    ),
    (
        "heredocs",
        "FROM busybox\n\
         RUN <<EOF\n\
         echo one\n\
         echo $HOME\n\
         EOF\n\
         RUN <<-TABS\n\
         \techo tabs stripped\n\
         \t\techo two\n\
         \tTABS\n\
         RUN <<'QUOTED' <<\"ALSO\"\n\
         echo $NOT_EXPANDED\n\
         QUOTED\n\
         echo second\n\
         ALSO\n\
         RUN python3 <<PY > /out.txt\n\
         print('hi')\n\
         PY\n\
         COPY <<A <<B /dest/\n\
         first file\n\
         A\n\
         second file\n\
         B\n\
         ADD <<file.txt /file.txt\n\
         content\n\
         file.txt\n\
         RUN 3<<EOF cat /dev/fd/3\n\
         fd three\n\
         EOF\n\
         ONBUILD RUN <<EOF\n\
         echo later\n\
         EOF\n\
         RUN echo no heredoc \\<<EOF here\n",
    ),
    (
        "escape_directive_backtick",
        "# escape=`\n\
         FROM windows/servercore\n\
         COPY testfile.txt c:\\\n\
         RUN dir c:\\ `\n\
         \x20 /b\n\
         ENV PATH=c:\\bin;`$PATH A=b`\"c\n\
         SHELL [\"cmd\", \"/S\", \"/C\"]\n\
         RUN echo one `\n\
         # a comment between continuation lines\n\
         \n\
         \x20 two\n",
    ),
    (
        "line_continuations",
        "FROM busybox\n\
         RUN echo a \\\n\
         \x20   b \\   \n\
         # comment lines inside are dropped\n\
         \n\
         \x20   c\n\
         RUN echo literal backslash \\\\\n\
         ENV X=1 \\\n\
         \x20   Y=2\n\
         LABEL a=b \\\n\
         \x20 c=d\n\
         RUN [\"echo\", \\\n\
         \x20    \"json over lines\"]\n\
         COPY a \\\n\
         \x20    b \\\n\
         \x20    /dest/\n\
         RUN echo last \\\n",
    ),
    (
        "comments_blank_lines_and_case",
        "\n\
         # leading comment, not a directive\n\
         # escape=`\n\
         \n\
         from busybox as Base\n\
         \x20   # indented comment\n\
         \tRUN echo indented\n\
         run [\"not\", \"valid\" json\n\
         Run [\"valid\", \"json\"]\n\
         copy --chown=0 src dst\n",
    ),
    ("crlf_and_bom", "\u{feff}FROM busybox\r\nRUN echo crlf \\\r\n  continued\r\nCMD [\"sh\"]\r\n"),
];

/// Dockerfiles that fail, one per message the reader can give (`instruction.rs`, `syntax.rs`).
/// One message of `syntax.rs` cannot come out of a whole file: a heredoc word's unmatched quote
/// (`unexpected end of statement while looking for matching quote in ...`), because the line is
/// lexed first and a quote left open there means the line has no heredoc at all.
const DIAGNOSTICS: &[(&str, &str)] = &[
    // syntax.rs
    ("line_too_long", ""),
    ("no_instructions", "# only a comment\n\n"),
    ("empty_file", ""),
    ("two_escape_directives", "# escape=`\n# escape=\\\nFROM busybox\n"),
    ("invalid_escape_token", "# escape=x\nFROM busybox\n"),
    ("two_syntax_directives", "# syntax=a\n# syntax=b\nFROM busybox\n"),
    ("unterminated_heredoc", "FROM busybox\nRUN <<EOF\necho never closed\n"),
    ("env_needs_two_arguments", "FROM busybox\nENV ONLYKEY\n"),
    ("env_missing_equals", "FROM busybox\nENV A=1 B\n"),
    ("json_array_of_non_strings", "FROM busybox\nRUN [\"echo\", 1]\n"),
    // instruction.rs
    ("no_build_stage", "ARG V=1\nRUN echo before from\nFROM busybox\n"),
    ("from_one_or_three_arguments", "FROM busybox AS\n"),
    ("from_invalid_stage_name", "FROM busybox AS 1st\n"),
    ("unknown_instruction_with_suggestion", "FROM busybox\nCOPPY a b\n"),
    ("unknown_instruction", "FROM busybox\nFROBNICATE now\n"),
    ("unknown_flag_with_suggestion", "FROM busybox\nCOPY --frm=x a b\n"),
    ("unknown_flag", "FROM busybox\nRUN --bogus echo\n"),
    ("flag_missing_value", "FROM busybox\nCOPY --from a b\n"),
    ("flag_expects_boolean", "FROM busybox\nCOPY --link=maybe a b\n"),
    ("flag_duplicated", "FROM busybox\nRUN --network=none --network=host echo\n"),
    ("flag_on_an_instruction_without_flags", "FROM busybox\nCMD --x=1 echo\n"),
    ("requires_exactly_one_argument", "FROM busybox\nWORKDIR\n"),
    ("shell_not_json", "FROM busybox\nSHELL /bin/sh -c\n"),
    ("shell_not_json_windows_path", "FROM busybox\nSHELL [\"c:\\windows\\cmd.exe\", \"/S\"]\n"),
    ("shell_requires_an_argument", "FROM busybox\nSHELL []\n"),
    ("label_requires_an_argument", "FROM busybox\nLABEL\n"),
    ("env_blank_name", "FROM busybox\nENV =value\n"),
    ("expose_requires_an_argument", "FROM busybox\nEXPOSE\n"),
    ("copy_requires_two_arguments", "FROM busybox\nCOPY onlyone\n"),
    ("copy_heredoc_destination", "FROM busybox\nCOPY a <<EOF\nx\nEOF\n"),
    ("volume_requires_an_argument", "FROM busybox\nVOLUME\n"),
    ("volume_empty_string", "FROM busybox\nVOLUME [\"/data\", \" \"]\n"),
    ("arg_requires_an_argument", "ARG\nFROM busybox\n"),
    ("arg_blank_name", "ARG =1\nFROM busybox\n"),
    ("onbuild_requires_an_argument", "FROM busybox\nONBUILD\n"),
    ("onbuild_chained", "FROM busybox\nONBUILD ONBUILD RUN x\n"),
    ("onbuild_from_trigger", "FROM busybox\nONBUILD FROM alpine\n"),
    ("healthcheck_requires_an_argument", "FROM busybox\nHEALTHCHECK\n"),
    ("healthcheck_none_with_arguments", "FROM busybox\nHEALTHCHECK NONE now\n"),
    ("healthcheck_unknown_type", "FROM busybox\nHEALTHCHECK RUN true\n"),
    ("healthcheck_missing_command", "FROM busybox\nHEALTHCHECK CMD\n"),
    ("healthcheck_retries_not_a_number", "FROM busybox\nHEALTHCHECK --retries=many CMD true\n"),
    ("healthcheck_retries_negative", "FROM busybox\nHEALTHCHECK --retries=-1 CMD true\n"),
    ("healthcheck_interval_below_1ms", "FROM busybox\nHEALTHCHECK --interval=10us CMD true\n"),
    ("healthcheck_invalid_duration", "FROM busybox\nHEALTHCHECK --timeout=soon CMD true\n"),
    ("healthcheck_duration_missing_unit", "FROM busybox\nHEALTHCHECK --timeout=30 CMD true\n"),
    ("healthcheck_duration_unknown_unit", "FROM busybox\nHEALTHCHECK --start-period=3y CMD true\n"),
];

/// Words the shell lexer refuses, one per message of `shell.rs` and `shell_pattern.rs`; the
/// frontend shows them on the line of the instruction that holds the word. One message has no
/// case here: `expansions nested deeper than 100000 levels` quotes its whole (half-megabyte) word,
/// and `shell_tests.rs` pins it (`nesting_is_bounded_with_a_message`).
const SHELL_ERRORS: &[(&str, &str)] = &[
    ("missing_brace", "${"),
    ("end_after_name", "${V"),
    ("missing_brace_after_operator", "${V:-word"),
    ("bad_substitution", "${:}"),
    ("unsupported_modifier", "${V!x}"),
    ("unsupported_colon_modifier", "${V:!x}"),
    ("unset_not_allowed", "${UNSET:?}"),
    ("empty_not_allowed", "${EMPTY:?}"),
    ("required_with_message", "${UNSET?set it first}"),
    ("missing_slash", "${V/pattern"),
    ("invalid_pattern_escape", "${V/a\\b/c}"),
    ("unmatched_single_quote", "'open"),
    ("unmatched_double_quote", "\"open"),
];

/// One block per instruction: its lines, keyword, flags, arguments and heredocs as parsed, and
/// the typed command `instruction.rs` makes of it.
fn dump(dockerfile: &Dockerfile) -> String {
    let typed = match commands(dockerfile) {
        Ok(typed) => typed,
        Err(error) => panic!("{}", error.buildkit_message()),
    };
    let directives = &dockerfile.directives;
    let mut out = format!("directives: escape={:?} syntax={:?} check={:?}\n", directives.escape, directives.syntax, directives.check);
    for (instruction, command) in dockerfile.instructions.iter().zip(&typed) {
        out.push_str(&format!("\nlines {}-{}: {}\n", instruction.span.start_line, instruction.span.end_line, instruction.keyword));
        out.push_str(&format!("  original: {:?}\n", instruction.original));
        for flag in &instruction.flags {
            out.push_str(&format!("  flag: {} = {:?}\n", flag.name, flag.value));
        }
        match &instruction.args {
            Args::Exec(words) => out.push_str(&format!("  exec: {words:?}\n")),
            Args::Shell(text) => out.push_str(&format!("  shell: {text:?}\n")),
        }
        for heredoc in &instruction.heredocs {
            out.push_str(&format!(
                "  heredoc {} (expand={}, strip_tabs={}): {:?}\n",
                heredoc.name, heredoc.expand, heredoc.strip_tabs, heredoc.body
            ));
        }
        out.push_str(&format!("  command: {:?}\n", command.value));
    }
    out
}

/// What `rbuild build` prints for a Dockerfile the reader refuses (`cli::build`): the snippet
/// when the error has lines, then BuildKit's one-line message.
fn rendered_error(text: &str) -> String {
    let error = match parse("Dockerfile", text.as_bytes()) {
        Ok(dockerfile) => match commands(&dockerfile) {
            Ok(typed) => panic!("expected an error, got {typed:#?}"),
            Err(error) => error,
        },
        Err(error) => error,
    };
    let source = text.strip_prefix('\u{feff}').unwrap_or(text).replace("\r\n", "\n");
    let snippet = error.span.map(|span| render_snippet("Dockerfile", &source, span)).unwrap_or_default();
    format!("{snippet}ERROR: failed to solve: {}\n", error.buildkit_message())
}

#[test]
fn the_corpus_parses_as_recorded() {
    for (name, text) in CORPUS {
        let dockerfile = match parse("Dockerfile", text.as_bytes()) {
            Ok(dockerfile) => dockerfile,
            Err(error) => panic!("{name}: {}", error.buildkit_message()),
        };
        insta::assert_snapshot!(format!("parse_{name}"), dump(&dockerfile), text);
    }
}

#[test]
fn every_diagnostic_renders_as_recorded() {
    for (name, text) in DIAGNOSTICS {
        let (text, shown) = match *name {
            "line_too_long" => {
                (format!("FROM busybox\nRUN echo {}\n", "x".repeat(super::syntax::MAX_LINE_BYTES)), "a RUN line of 65545 bytes".to_string())
            }
            _ => (text.to_string(), text.to_string()),
        };
        insta::assert_snapshot!(format!("error_{name}"), rendered_error(&text), &shown);
    }
}

#[test]
fn every_shell_error_reads_as_recorded() {
    let lexer = Lexer::new('\\');
    let env = |name: &str| match name {
        "V" => Some("value".to_string()),
        "EMPTY" => Some(String::new()),
        _ => None,
    };
    for (name, word) in SHELL_ERRORS {
        let message = match lexer.process_word(word, &env) {
            Ok(expanded) => panic!("{name}: expected an error, got {expanded:?}"),
            Err(error) => error.to_string(),
        };
        insta::assert_snapshot!(format!("shell_error_{name}"), message, word);
    }
}
