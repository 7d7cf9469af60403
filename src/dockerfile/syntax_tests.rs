//! Tests of `syntax.rs`, kept apart so the module itself stays readable.

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
            let mut line = format!("{}-{} {}", instruction.span.start_line, instruction.span.end_line, instruction.keyword);
            for flag in &instruction.flags {
                line.push_str(&format!(" [{}={:?}]", flag.name, flag.value));
            }
            match &instruction.args {
                Args::Exec(words) => line.push_str(&format!(" exec{words:?}")),
                Args::Shell(text) => line.push_str(&format!(" shell{text:?}")),
            }
            for heredoc in &instruction.heredocs {
                line.push_str(&format!(" | {} expand={} strip={} {:?}", heredoc.name, heredoc.expand, heredoc.strip_tabs, heredoc.body));
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
    let dockerfile = parse_text("# syntax=docker/dockerfile:1.7\n#check = skip=all\n# escape=`\nFROM a\n");
    assert_eq!(dockerfile.directives.syntax.as_deref(), Some("docker/dockerfile:1.7"));
    assert_eq!(dockerfile.directives.check.as_deref(), Some("skip=all"));
    assert_eq!(dockerfile.directives.escape, '`');
    assert_eq!(dump(&dockerfile), "4-4 FROM shell\"a\"\n");
}

#[test]
fn a_directive_after_a_comment_an_empty_line_or_an_instruction_is_a_comment() {
    for text in ["# hello\n# escape=`\nFROM a\n", "\n# escape=`\nFROM a\n", "FROM a\n# escape=`\n", "# unknown=x\n# escape=`\nFROM a"] {
        assert_eq!(parse_text(text).directives.escape, '\\', "{text:?}");
    }
}

#[test]
fn an_invalid_or_repeated_directive_is_an_error() {
    let error = parse_error("# escape=x\nFROM a\n");
    assert_eq!(error.message, "invalid escape token 'x' does not match ` or \\");
    assert_eq!(error.span, Some(Span::line(1)));
    let error = parse_error("# syntax=a\n# syntax=b\nFROM a\n");
    assert_eq!(error.message, "only one syntax parser directive can be used");
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
    assert_eq!(dockerfile.instructions[1].original, "RUN apt-get update     && apt-get install -y curl   && true");
}

#[test]
fn a_doubled_escape_at_the_end_is_not_a_continuation() {
    assert_eq!(dump(&parse_text("RUN echo \\\\\nRUN b")), "1-1 RUN shell\"echo \\\\\\\\\"\n2-2 RUN shell\"b\"\n");
}

#[test]
fn the_backtick_escape_continues_lines() {
    let dockerfile = parse_text("# escape=`\nFROM a\nRUN dir c:\\ `\n  /b\n");
    assert_eq!(dump(&dockerfile), "2-2 FROM shell\"a\"\n3-4 RUN shell\"dir c:\\\\   /b\"\n");
}

#[test]
fn a_continuation_at_the_end_of_the_file_ends_the_instruction() {
    let dockerfile = parse_text("FROM a\nRUN b \\\n");
    assert_eq!(dump(&dockerfile), "1-1 FROM shell\"a\"\n2-2 RUN shell\"b\"\n");
    assert_eq!(dockerfile.instructions[1].original, "RUN b ");
}

#[test]
fn bom_and_crlf_are_removed() {
    let dockerfile = parse_text("\u{feff}# escape=`\r\nFROM a\r\nRUN b `\r\n c\r\n");
    assert_eq!(dockerfile.directives.escape, '`');
    assert_eq!(dump(&dockerfile), "2-2 FROM shell\"a\"\n3-4 RUN shell\"b  c\"\n");
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
    assert_eq!(error.message, "when using JSON array syntax, arrays must be comprised of strings only");
    assert_eq!(error.span, Some(Span::line(2)));
    let error = parse_error("FROM a\nHEALTHCHECK CMD [true]\n");
    assert_eq!(error.message, "when using JSON array syntax, arrays must be comprised of strings only");
}

#[test]
fn flags_are_split_from_arguments() {
    let text = "FROM --platform=$BUILDPLATFORM a\nCOPY --from=build --link --chown=\"1 2\" a b\nRUN --mount=type=cache,target=/c \\\n  --network=none make\nRUN -- --not-a-flag\nRUN --a=b\n";
    let expected = "1-1 FROM [platform=Some(\"$BUILDPLATFORM\")] shell\"a\"\n\
2-2 COPY [from=Some(\"build\")] [link=None] [chown=Some(\"1 2\")] shell\"a b\"\n\
3-4 RUN [mount=Some(\"type=cache,target=/c\")] [network=Some(\"none\")] shell\"make\"\n\
5-5 RUN shell\"--not-a-flag\"\n6-6 RUN [a=Some(\"b\")] shell\"\"\n";
    assert_eq!(dump(&parse_text(text)), expected);
    assert_eq!(parse_text("COPY --chown=\"1 2\" a b").instructions[0].flags[0].raw, "--chown=1 2");
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
    assert_eq!(dump(&dockerfile), "1-1 FROM shell\"a\"\n2-4 ONBUILD shell\"RUN <<EOF\" | EOF expand=true strip=false \"x\\n\"\n");
}

#[test]
fn heredoc_with_file_descriptor_and_command_after_it() {
    let dockerfile = parse_text("FROM a\nRUN 3<<EOF cat /dev/fd/3 > /out\nhi\nEOF\n");
    assert_eq!(dockerfile.instructions[1].heredocs[0].name, "EOF");
    assert_eq!(dockerfile.instructions[1].span, Span { start_line: 2, end_line: 4 });
}

#[test]
fn an_unterminated_heredoc_is_an_error() {
    let error = parse_error("FROM a\nRUN <<EOF\necho\nEOF \n");
    assert_eq!(error.message, "unterminated heredoc");
    assert_eq!(error.span, Some(Span { start_line: 2, end_line: 4 }));
}

#[test]
fn env_and_label_without_equals_are_checked_while_parsing() {
    let error = parse_error("FROM a\nENV A\n");
    assert_eq!((error.message.as_str(), error.span), ("ENV must have two arguments", Some(Span::line(2))));
    let error = parse_error("FROM a\nLABEL a=b c\n");
    assert_eq!(error.message, "Syntax error - can't find = in \"c\". Must be of the form: name=value");
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
    assert_eq!(split_name_values("A   b  c", "ENV", '\\'), Ok(vec![("A".into(), "b  c".into())]));
    assert_eq!(split_name_values("a=`\"b", "ENV", '`'), Ok(vec![("a".into(), "`\"b".into())]));
}

#[test]
fn an_empty_file_or_only_comments_is_an_error() {
    assert_eq!(parse_error("").message, "file with no instructions");
    let error = parse_error("# just\n\n# comments\n");
    assert_eq!((error.message.as_str(), error.span), ("file with no instructions", Some(Span::line(3))));
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
