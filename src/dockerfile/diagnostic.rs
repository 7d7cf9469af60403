//! Dockerfile errors and how they are shown: the [`DockerfileError`] type every parsing stage
//! returns, BuildKit's source snippet ([`render_snippet`]) and the "did you mean" helper
//! ([`suggest`]).
//!
//! Invariants:
//! - `message` is BuildKit's text for the error, without the suggestion; `help` holds the
//!   suggestion as BuildKit words it (`did you mean COPY?`), so [`DockerfileError::buildkit_message`]
//!   rebuilds BuildKit's one-line text (`unknown instruction: COPPY (did you mean COPY?)`).
//! - `span` is the whole instruction (continuation and heredoc lines included), never a column:
//!   BuildKit only knows lines, and the snippet marks whole lines.
//!
//! Decision: messages keep BuildKit's wording (some start with an instruction name such as
//! `COPY requires ...`) instead of the house style of lowercase and backticks, because users
//! compare our output with `docker buildx build` and search the web for those exact strings.

use super::syntax::Span;

/// A Dockerfile that cannot be parsed, with the lines it is about.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DockerfileError {
    pub message: String,
    pub span: Option<Span>,
    /// A suggestion such as `did you mean COPY?`.
    pub help: Option<String>,
}

impl DockerfileError {
    pub fn new(message: impl Into<String>, span: Option<Span>) -> Self {
        Self { message: message.into(), span, help: None }
    }

    /// An error about the lines of `span`.
    pub fn at(message: impl Into<String>, span: Span) -> Self {
        Self::new(message, Some(span))
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// BuildKit's one-line text: the message, then the suggestion in parentheses, as in
    /// `dockerfile parse error on line 2: unknown flag: --frm (did you mean from?)`.
    pub fn buildkit_message(&self) -> String {
        match &self.help {
            Some(help) => format!("{} ({help})", self.message),
            None => self.message.clone(),
        }
    }
}

/// The rule BuildKit draws above and below the snippet.
const RULE: &str = "--------------------";

/// BuildKit's source snippet for `span` of `source`: a `name:line` header, a rule, the numbered
/// lines with `>>>` on those of the span and context lines around them, and a closing rule.
/// Each line ends with `\n`. A span outside the file renders nothing, as in BuildKit.
///
/// The context is BuildKit's: up to 4 lines in all around a one-line span, up to 2 around a
/// longer one, taken alternately before and after. `source` is split on `\n` exactly as Go's
/// `strings.Split` does, so a file ending in a newline shows an empty last line.
pub fn render_snippet(file_name: &str, source: &str, span: Span) -> String {
    let lines: Vec<&str> = source.split('\n').collect();
    let first_marked = span.start_line;
    let last_marked = span.end_line.max(span.start_line);
    if first_marked < 1 || first_marked > lines.len() {
        return String::new();
    }
    let mut start = first_marked;
    let mut end = last_marked.min(lines.len());

    // BuildKit's padding loop, kept step for step: its quirk of counting one extra step per
    // round decides how many context lines appear.
    let padding = if end == start { 4 } else { 2 };
    let mut added = 0;
    while added < padding {
        if start > 1 {
            start -= 1;
            added += 1;
        }
        if end != lines.len() {
            end += 1;
            added += 1;
        }
        added += 1;
    }

    let mut out = format!("{file_name}:{first_marked}\n{RULE}\n");
    for number in start..=end {
        let marker = if (first_marked..=last_marked).contains(&number) { ">>>" } else { "   " };
        out.push_str(&format!(" {number:>3} | {marker} {}\n", lines[number - 1]));
    }
    out.push_str(RULE);
    out.push('\n');
    out
}

/// The candidate closest to `word` by edit distance (case-insensitive), if it is closer than 3
/// edits; none when `word` is itself a candidate. Ties go to the earlier candidate, so callers
/// pass candidates in a fixed order (BuildKit iterates a Go map, so its ties are random).
pub fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let word: Vec<char> = word.to_lowercase().chars().collect();
    let mut best = None;
    let mut best_distance = 3;
    for candidate in candidates {
        let lowered: Vec<char> = candidate.to_lowercase().chars().collect();
        if lowered == word {
            return None;
        }
        let distance = levenshtein(&word, &lowered);
        if distance < best_distance {
            best_distance = distance;
            best = Some(*candidate);
        }
    }
    best
}

/// Edit distance with unit costs for insertion, deletion and substitution.
fn levenshtein(left: &[char], right: &[char]) -> usize {
    let mut previous: Vec<usize> = (0..=right.len()).collect();
    let mut current = vec![0; right.len() + 1];
    for (i, left_char) in left.iter().enumerate() {
        current[0] = i + 1;
        for (j, right_char) in right.iter().enumerate() {
            let substitution = previous[j] + usize::from(left_char != right_char);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[right.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const NINE_LINES: &str =
        "FROM alpine\nARG A=1\nENV B=2\nWORKDIR /src\nCOPY . .\nRUN make\nRUN make test\nRUN make install\nCMD [\"app\"]\n";

    #[test]
    fn snippet_of_one_line_shows_four_context_lines() {
        let snippet = render_snippet("Dockerfile", NINE_LINES, Span { start_line: 7, end_line: 7 });
        let expected = "Dockerfile:7\n\
--------------------\n   5 |     COPY . .\n   6 |     RUN make\n   7 | >>> RUN make test\n   8 |     RUN make install\n   9 |     CMD [\"app\"]\n\
--------------------\n";
        assert_eq!(snippet, expected);
    }

    #[test]
    fn snippet_at_the_end_shows_the_empty_last_line_like_buildkit() {
        // BuildKit's issue 5368 shows exactly this: line 3 is the empty string after the final
        // newline, printed with its trailing spaces.
        let source = "FROM alpine\nCOPY --nosuchflag . .\n";
        let snippet = render_snippet("Dockerfile", source, Span { start_line: 2, end_line: 2 });
        let expected = "Dockerfile:2\n\
--------------------\n   1 |     FROM alpine\n   2 | >>> COPY --nosuchflag . .\n   3 |     \n\
--------------------\n";
        assert_eq!(snippet, expected);
    }

    #[test]
    fn snippet_of_several_lines_shows_two_context_lines() {
        let source = "FROM alpine\nRUN a \\\n  b \\\n  c\nRUN d\nRUN e\nRUN f";
        let snippet = render_snippet("Dockerfile", source, Span { start_line: 2, end_line: 4 });
        let expected = "Dockerfile:2\n\
--------------------\n   1 |     FROM alpine\n   2 | >>> RUN a \\\n   3 | >>>   b \\\n   4 | >>>   c\n   5 |     RUN d\n\
--------------------\n";
        assert_eq!(snippet, expected);
    }

    #[test]
    fn snippet_on_the_first_line_pads_only_after() {
        let snippet = render_snippet("df", "FROMM a\nRUN b\nRUN c\nRUN d\nRUN e\nRUN f", Span { start_line: 1, end_line: 1 });
        // Each round adds one line after and counts two steps: two rounds, two lines.
        let expected = "df:1\n\
--------------------\n   1 | >>> FROMM a\n   2 |     RUN b\n   3 |     RUN c\n\
--------------------\n";
        assert_eq!(snippet, expected);
    }

    #[test]
    fn snippet_widens_numbers_past_three_digits() {
        let source: String = (1..=1001).map(|n| format!("RUN {n}\n")).collect();
        let snippet = render_snippet("Dockerfile", &source, Span { start_line: 1000, end_line: 1000 });
        assert!(snippet.contains(" 998 |     RUN 998\n"), "{snippet}");
        assert!(snippet.contains(" 1000 | >>> RUN 1000\n"), "{snippet}");
    }

    #[test]
    fn snippet_outside_the_file_is_empty() {
        assert_eq!(render_snippet("Dockerfile", "FROM a", Span { start_line: 3, end_line: 3 }), "");
        assert_eq!(render_snippet("Dockerfile", "FROM a", Span { start_line: 0, end_line: 0 }), "");
    }

    #[test]
    fn suggest_finds_close_words_case_insensitively() {
        let names = ["FROM", "COPY", "RUN"];
        assert_eq!(suggest("COPPY", &names), Some("COPY"));
        assert_eq!(suggest("copp", &names), Some("COPY"));
        assert_eq!(suggest("frm", &names), Some("FROM"));
        assert_eq!(suggest("completely", &names), None);
        assert_eq!(suggest("copy", &names), None, "an exact match needs no suggestion");
    }

    #[test]
    fn suggest_keeps_the_first_of_equally_close_candidates() {
        assert_eq!(suggest("ab", &["ax", "ay"]), Some("ax"));
    }

    #[test]
    fn buildkit_message_appends_the_help_in_parentheses() {
        let error = DockerfileError::new("unknown instruction: COPPY", None).with_help("did you mean COPY?");
        assert_eq!(error.buildkit_message(), "unknown instruction: COPPY (did you mean COPY?)");
        assert_eq!(error.to_string(), "unknown instruction: COPPY");
    }
}
