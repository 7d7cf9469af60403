//! Tests of `shell.rs`, kept apart so the module itself stays readable.

use super::*;
use std::collections::HashMap;

const REFERENCE_DIRECTORY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/buildkit-shell");

fn read_reference(name: &str) -> String {
    let path = format!("{REFERENCE_DIRECTORY}/{name}");
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("cannot read {path}: {error}"))
}

fn lookup_in(map: &HashMap<String, String>) -> impl Fn(&str) -> Option<String> + '_ {
    move |name| map.get(name).cloned()
}

fn environment(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect()
}

fn word(lexer: Lexer, input: &str, pairs: &[(&str, &str)]) -> Result<String, ShellError> {
    let map = environment(pairs);
    lexer.process_word(input, &lookup_in(&map))
}

fn expand(input: &str, pairs: &[(&str, &str)]) -> String {
    word(Lexer::default(), input, pairs).unwrap_or_else(|error| panic!("{input}: {error}"))
}

fn failure(input: &str, pairs: &[(&str, &str)]) -> String {
    match word(Lexer::default(), input, pairs) {
        Ok(text) => panic!("{input} expanded to {text:?}, expected an error"),
        Err(error) => error.message,
    }
}

#[test]
fn buildkit_env_var_table() {
    let table = read_reference("envVarTest");
    let map = environment(&[("PWD", "/home"), ("SHELL", "bash"), ("KOREAN", "한국어"), ("NULL", "")]);
    let lexer = Lexer::new('\\');
    let mut checked = 0;
    let mut failures = Vec::new();
    for (index, line) in table.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.trim().split('|').map(str::trim).collect();
        assert_eq!(fields.len(), 3, "envVarTest:{}: malformed line", index + 1);
        let (platform, input, expected) = (fields[0], fields[1], fields[2]);
        if platform == "W" {
            continue;
        }
        checked += 1;
        let outcome = match lexer.process_word(input, &lookup_in(&map)) {
            Ok(text) => text,
            Err(_) => "error".to_owned(),
        };
        if outcome != expected {
            failures.push(format!("envVarTest:{}: {input:?} gave {outcome:?}, expected {expected:?}", index + 1));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked > 200, "only {checked} lines checked");
}

#[test]
fn buildkit_words_table() {
    let table = read_reference("wordsTest");
    let lexer = Lexer::new('\\');
    let mut map = HashMap::new();
    let mut checked = 0;
    let mut failures = Vec::new();
    for (index, line) in table.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(definition) = line.strip_prefix("ENV ") {
            let (name, value) = definition.trim_start_matches(' ').split_once('=').unwrap_or((definition, ""));
            map.insert(name.to_owned(), value.to_owned());
            continue;
        }
        let fields: Vec<&str> = line.split('|').collect();
        assert_eq!(fields.len(), 2, "wordsTest:{}: malformed line", index + 1);
        let input = fields[0].trim();
        let expected: Vec<&str> = fields[1].trim_start_matches(' ').split(',').collect();
        checked += 1;
        let outcome = lexer.process_words(input, &lookup_in(&map)).unwrap_or_else(|_| vec!["error".to_owned()]);
        if outcome != expected {
            failures.push(format!("wordsTest:{}: {input:?} gave {outcome:?}, expected {expected:?}", index + 1));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked > 20, "only {checked} lines checked");
}

#[test]
fn required_with_message_reports_name_and_message() {
    assert_eq!(failure("${X:?msg}", &[]), r#"failed to process "${X:?msg}": X: msg"#);
    assert_eq!(failure("${X:?msg}", &[("X", "")]), r#"failed to process "${X:?msg}": X: msg"#);
    assert_eq!(expand("${X:?msg}", &[("X", "v")]), "v");
    // The message is itself expanded.
    assert_eq!(failure("${VAR:?message here$ARG}", &[("ARG", "x")]), r#"failed to process "${VAR:?message here$ARG}": VAR: message herex"#);
}

#[test]
fn required_without_message_uses_buildkit_wording() {
    assert_eq!(failure("${X?}", &[]), r#"failed to process "${X?}": X: is not allowed to be unset"#);
    assert_eq!(failure("${X:?}", &[]), r#"failed to process "${X:?}": X: is not allowed to be unset"#);
    assert_eq!(failure("${X:?}", &[("X", "")]), r#"failed to process "${X:?}": X: is not allowed to be empty"#);
    assert_eq!(expand("a${X?}b", &[("X", "")]), "ab");
    assert_eq!(expand("${X?oops}", &[("X", "")]), "");
}

#[test]
fn syntax_errors_use_buildkit_wording() {
    let cases = [
        ("he${PWD", "unsupported modifier (\u{fffd}) in substitution"),
        ("${}", "syntax error: bad substitution"),
        ("${", "syntax error: missing '}'"),
        ("${X:-abc", "syntax error: missing '}'"),
        ("${X:=a}", "unsupported modifier (:=) in substitution"),
        ("${X=a}", "unsupported modifier (=) in substitution"),
        ("${X//a}", "syntax error: missing '/' in ${}"),
        ("'abc", "unexpected end of statement while looking for matching single-quote"),
        ("\"abc", "unexpected end of statement while looking for matching double-quote"),
        ("${X#\\x}", "invalid pattern (\\x) in substitution: invalid escape '\\x'"),
        // BuildKit shows the reversed pattern for suffix trims.
        ("${X%ab\\x}", "invalid pattern (\\xba) in substitution: invalid escape '\\x'"),
    ];
    for (input, reason) in cases {
        assert_eq!(failure(input, &[]), format!("failed to process {}: {reason}", go_quote(input)), "{input}");
    }
    assert_eq!(
        failure("${X%$P}", &[("X", "x"), ("P", "ab\\")]),
        r#"failed to process "${X%$P}": invalid pattern (\ba) in substitution: invalid escape '\b'"#
    );
}

#[test]
fn backtick_escape_leaves_backslash_literal() {
    let lexer = Lexer::new('`');
    let pairs = [("USER", "me"), ("SPACE", "a b")];
    assert_eq!(word(lexer, r"C:\Users\$USER", &pairs).as_deref(), Ok(r"C:\Users\me"));
    assert_eq!(word(lexer, r"a`$USER", &pairs).as_deref(), Ok("a$USER"));
    assert_eq!(word(lexer, r#""x`"y""#, &pairs).as_deref(), Ok(r#"x"y"#));
    assert_eq!(word(lexer, r#""x\""#, &pairs).as_deref(), Ok(r"x\"));
    assert_eq!(word(lexer, r#""a``b`c""#, &pairs).as_deref(), Ok("a`b`c"));
    assert_eq!(word(lexer, "end`", &pairs).as_deref(), Ok("end"));
    let map = environment(&pairs);
    assert_eq!(
        lexer.process_words(r"a`  b $SPACE", &lookup_in(&map)),
        Ok(vec!["a ".to_owned(), "b".to_owned(), "a".to_owned(), "b".to_owned()])
    );
    assert_eq!(lexer.process_words(r"C:\dir\ x", &lookup_in(&map)), Ok(vec![r"C:\dir\".to_owned(), "x".to_owned()]));
}

#[test]
fn default_values_and_alternatives() {
    let pairs = [("FOO", "xxx"), ("BAR", "")];
    assert_eq!(expand("${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}", &pairs), "xxx  ccc");
    assert_eq!(expand("${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}", &pairs), "xxx bbb ccc");
    assert_eq!(expand("${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}", &pairs), "aaa bbb ");
    assert_eq!(expand("${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}", &pairs), "aaa  ");
    assert_eq!(expand("${BAZ:-\"a  b\"}", &pairs), "a  b");
    assert_eq!(expand("${BAZ:-'}'}", &pairs), "}");
    assert_eq!(
        expand(
            "something-${VERSION}.${TARGETOS}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz",
            &[("VERSION", "v1"), ("TARGETOS", "linux"), ("TARGETVARIANT", "v7")]
        ),
        "something-v1.linux-v7.tar.gz"
    );
}

#[test]
fn prefix_and_suffix_trimming() {
    let cases = [
        ("${FOO#()[]{\\}^$.\\*\\?|\\\\}", "()[]{}^$.*?|\\x", "x"),
        ("${FOO%%\\**}", "xx**", "xx"),
        ("${FOO#*x*y}", "xxyy", "y"),
        ("${FOO#*}", "xxyy", "xxyy"),
        ("${FOO##*}", "xxyy", ""),
        ("${FOO#}", "xxyy", "xxyy"),
        ("${FOO##*x}", "xxyy", "yy"),
        ("${FOO##}", "xxyy", "xxyy"),
        ("${FOO#?\\?}", "???y", "?y"),
        ("${FOO%%\\**\\*}", "a***yy*", "a"),
        ("${FOO%}", "xxyy", "xxyy"),
        ("${FOO%y*}", "xxyy", "xxy"),
        ("${FOO%%y*}", "xxyy", "xx"),
        ("${FOO%.*}", "archive.tar.gz", "archive.tar"),
        ("${FOO%%.*}", "archive.tar.gz", "archive"),
        ("${FOO##*/}", "/usr/local/bin/tool", "tool"),
        ("${FOO#*/}", "/usr/local/bin/tool", "usr/local/bin/tool"),
        ("${FOO#nomatch}", "value", "value"),
        ("${FOO:#v}", "value", "alue"),
        // `*` does not cross a newline (Go's `.`).
        ("${FOO##*b}", "ab\nab", "\nab"),
    ];
    for (input, value, expected) in cases {
        assert_eq!(expand(input, &[("FOO", value)]), expected, "{input} on {value:?}");
    }
    assert_eq!(expand("${FOO#$BAR}", &[("FOO", "xxyy"), ("BAR", "x")]), "xyy");
    assert_eq!(expand("${ABC:-.}${FOO%x}${ABC:-.}", &[("FOO", "xxyy")]), ".xxyy.");
    assert_eq!(expand("${UNSET#a}", &[]), "");
}

#[test]
fn pattern_substitution() {
    assert_eq!(
        expand("${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}", &[("FOO", "/foo*/*/*.txt"), ("NEEDLE", "\\*/")]),
        "/foo.*/*.txt - /foo..*.txt"
    );
    assert_eq!(expand("${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}", &[("FOO", "/tmp/tmp/bar.txt"), ("NEEDLE", "/tmp")]), "/tmp/bar.txt - /bar.txt");
    assert_eq!(
        expand(
            "${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}",
            &[("FOO", "/a/foo/b/c.txt"), ("NEEDLE", "/?/"), ("REPLACEMENT", "/")]
        ),
        "/foo/b/c.txt - /foo/c.txt"
    );
    assert_eq!(expand("${FOO/$N/$R}", &[("FOO", "http://google.de"), ("N", "http://"), ("R", "https://")]), "https://google.de");
    // The escape before the delimiter is dropped from the pattern but kept in the replacement.
    assert_eq!(expand("${FOO//\\//\\/}", &[("FOO", "/tmp/foo.txt")]), "\\/tmp\\/foo.txt");
    assert_eq!(expand("${FOO/$BAR/ww}", &[("FOO", "xxyy"), ("BAR", "")]), "wwxxyy");
    assert_eq!(expand("${FOO///}", &[("FOO", "xxyy")]), "xxyy");
    assert_eq!(expand("${FOO///}", &[]), "");
    assert_eq!(expand("${FOO//a*/X}", &[("FOO", "bab\nab")]), "bX\nX");
    assert_eq!(expand("${FOO//?/-}", &[("FOO", "안녕")]), "--");
    // Empty pattern with replace-all inserts around every character, as Go's ReplaceAllString.
    assert_eq!(expand("${FOO///-}", &[("FOO", "ab")]), "-a-b-");
    // Go template expansion applies to replace-all only.
    assert_eq!(expand("${FOO//b/[$R]}", &[("FOO", "abc"), ("R", "$0$$x$y")]), "a[b$x]c");
    assert_eq!(expand("${FOO/b/[$R]}", &[("FOO", "abc"), ("R", "$0$$x$y")]), "a[$0$$x$y]c");
    assert_eq!(failure("${FOO//ww}", &[("FOO", "x")]), r#"failed to process "${FOO//ww}": syntax error: missing '/' in ${}"#);
}

#[test]
fn words_split_only_unquoted_expansions() {
    let map = environment(&[("SPACE", " a  b "), ("EMPTY", "")]);
    let lexer = Lexer::default();
    let words = |input: &str| lexer.process_words(input, &lookup_in(&map));
    assert_eq!(words("x$SPACE\"$SPACE\""), Ok(vec!["x".to_owned(), "a".to_owned(), "b".to_owned(), " a  b ".to_owned()]));
    assert_eq!(words("a \"\" b"), Ok(vec!["a".to_owned(), "b".to_owned()]));
    assert_eq!(words("  $EMPTY  "), Ok(vec![]));
    assert_eq!(words("a\\ b 'c d'"), Ok(vec!["a b".to_owned(), "c d".to_owned()]));
    assert!(words("'open").is_err());
}

#[test]
fn names_and_special_parameters() {
    let pairs = [("A_1", "x"), ("한", "k")];
    assert_eq!(expand("$A_1.$A_1x", &pairs), "x.");
    assert_eq!(expand("$한국", &pairs), "");
    assert_eq!(expand("${한}", &pairs), "k");
    assert_eq!(expand("$12ab", &[("12", "n")]), "nab");
    assert_eq!(expand("$$x", &[]), "x");
    assert_eq!(expand("a$", &[]), "a$");
    assert_eq!(expand("\u{feff}$A_1", &pairs), "x");
}

#[test]
fn go_quote_matches_strconv_quote() {
    assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
    assert_eq!(go_quote("\t\n\u{1}\u{7f}"), r#""\t\n\x01\x7f""#);
    assert_eq!(go_quote("안녕 x"), "\"안녕 x\"");
    assert_eq!(go_quote("\u{a0}\u{200b}"), r#""\u00a0\u200b""#);
    assert_eq!(go_quote("\u{e0001}"), r#""\U000e0001""#);
}

/// Regression: COPY heredoc bodies lost their quotes (BuildKit keeps them, and expands `$V` even
/// inside single quotes); the escape character is always `\` there (conformance cases
/// heredoc-copy-quotes-do-not-stop-expansion and heredoc-copy-backtick-escape).
#[test]
fn heredoc_bodies_keep_quotes_and_escape_with_backslash() {
    let env = |name: &str| (name == "V").then(|| "value".to_string());
    let backslash = Lexer::new('\\');
    assert_eq!(backslash.process_heredoc("'$V' \"$V\" '${V}'\n", &env).unwrap(), "'value' \"value\" 'value'\n");
    assert_eq!(backslash.process_heredoc("back\\\\slash tab\\t\nend \\\n", &env).unwrap(), "back\\slash tabt\nend \n");
    let backtick = Lexer::new('`');
    assert_eq!(backtick.process_heredoc("`$V $V \\n `\n", &env).unwrap(), "`value value n `\n");
}

/// Progress names as BuildKit shows them (recorded with the oracle from `ARG V=1`, `ENV E=env`):
/// set variables expand, unset ones stay as written, quotes stay, escapes go.
#[test]
fn progress_names_expand_only_what_is_set() {
    let env = |name: &str| match name {
        "V" => Some("1".to_string()),
        "E" => Some("env".to_string()),
        _ => None,
    };
    let lexer = Lexer::new('\\');
    let cases = [
        ("RUN echo \"a  b\" '$V' $V ${U:-dflt} > /x", "RUN echo \"a  b\" '$V' 1 ${U:-dflt} > /x"),
        ("RUN echo ${V:-x} ${V:+y} \\$V \"$V\" ${V} $E", "RUN echo 1 y $V \"1\" 1 env"),
        ("RUN echo $UNSET ${UNSET} ${UNSET:+z} \"${UNSET:-d}\" a\\ b", "RUN echo $UNSET ${UNSET} ${UNSET:+z} \"${UNSET:-d}\" a b"),
        ("RUN [\"sh\", \"-c\", \"echo $V\"]", "RUN [\"sh\", \"-c\", \"echo 1\"]"),
    ];
    for (text, shown) in cases {
        assert_eq!(lexer.process_progress_name(text, &env), shown, "{text}");
    }
}

/// Regression: nesting of 8,516 levels overflowed the stack and aborted rbuild. Deep nesting
/// expands; beyond the bound it is an error with a message.
#[test]
fn nesting_is_bounded_with_a_message() {
    let env = |_: &str| None;
    let nested = |levels: usize| format!("{}x{}", "${A:-".repeat(levels), "}".repeat(levels));
    let lexer = Lexer::new('\\');
    let deep = std::thread::Builder::new()
        .stack_size(1 << 30)
        .spawn(move || {
            let fits = lexer.process_word(&nested(20_000), &env);
            let beyond = lexer.process_word(&nested(100_001), &env);
            (fits, beyond)
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(deep.0.unwrap(), "x");
    assert!(deep.1.unwrap_err().message.contains("nested deeper than 100000 levels"));
}
