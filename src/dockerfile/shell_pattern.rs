//! The pattern language of `${NAME#pattern}`, `${NAME%pattern}` and `${NAME/pattern/replacement}`
//! as BuildKit's lexer reads it: literals, `?`, `*` and a few escapes, no bracket expressions.
//! Matching is by reachable end positions, so no pattern backtracks exponentially.
//!
//! Role: the part of [`super::shell`] that trims and replaces; the word reader hands it the raw
//! pattern text (escapes kept) and the value.

use super::shell::{Reason, characters_without_bom, go_char, invalid_pattern};

/// `${value#pattern}` (shortest) and `${value##pattern}` (`longest`).
pub(super) fn trim_prefix(pattern_text: &str, value: &str, longest: bool) -> Result<String, Reason> {
    let pattern = Pattern::parse(pattern_text).map_err(|reason| invalid_pattern(pattern_text, &reason))?;
    let value: Vec<char> = value.chars().collect();
    let ends = pattern.match_ends(&value, 0);
    let end = if longest { ends.iter().rposition(|&reachable| reachable) } else { ends.iter().position(|&reachable| reachable) };
    Ok(value[end.unwrap_or(0)..].iter().collect())
}

/// `${value%pattern}` and `${value%%pattern}`: a prefix trim of the reversed value with the
/// reversed pattern. Reversing (rather than matching suffixes directly) keeps BuildKit's error
/// text, which shows the reversed pattern.
pub(super) fn trim_suffix(pattern_text: &str, value: &str, longest: bool) -> Result<String, Reason> {
    let reversed_value: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&reverse_pattern(pattern_text), &reversed_value, longest)?;
    Ok(trimmed.chars().rev().collect())
}

/// Reverses a pattern while keeping each `\x` escape pair in order (`a\*c` → `c\*a`).
fn reverse_pattern(pattern: &str) -> String {
    let characters: Vec<char> = pattern.chars().collect();
    let mut pieces: Vec<&[char]> = Vec::with_capacity(characters.len());
    let mut index = 0;
    while index < characters.len() {
        let width = if characters[index] == '\\' && index + 1 < characters.len() { 2 } else { 1 };
        pieces.push(&characters[index..index + width]);
        index += width;
    }
    pieces.iter().rev().flat_map(|piece| piece.iter()).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatternToken {
    Literal(char),
    /// `?`: one character other than a newline.
    AnyCharacter,
    /// `*`: any run of characters without a newline.
    AnyRun,
}

/// A shell pattern as BuildKit accepts it: literals, `?`, `*`, and the escapes `\*`, `\?`, `\\`,
/// plus `\}` and `\/` which stand for the delimiter. No bracket expressions.
pub(super) struct Pattern {
    tokens: Vec<PatternToken>,
}

impl Pattern {
    pub(super) fn parse(text: &str) -> Result<Self, Reason> {
        let characters = characters_without_bom(text);
        let mut tokens = Vec::with_capacity(characters.len());
        let mut index = 0;
        while index < characters.len() {
            let character = characters[index];
            index += 1;
            let token = match character {
                '*' => PatternToken::AnyRun,
                '?' => PatternToken::AnyCharacter,
                '\\' => match characters.get(index).copied() {
                    // The backslash only protected the delimiter from the word reader; the
                    // delimiter is read as a plain character on the next turn.
                    Some('}' | '/') => continue,
                    Some(escaped @ ('*' | '?' | '\\')) => {
                        index += 1;
                        PatternToken::Literal(escaped)
                    }
                    other => return Err(format!("invalid escape '\\{}'", go_char(other))),
                },
                literal => PatternToken::Literal(literal),
            };
            tokens.push(token);
        }
        Ok(Self { tokens })
    }

    /// `ends[e]` is true when the pattern matches exactly `value[start..e]`.
    fn match_ends(&self, value: &[char], start: usize) -> Vec<bool> {
        let mut reachable = vec![false; value.len() + 1];
        reachable[start] = true;
        for token in &self.tokens {
            let mut next = vec![false; value.len() + 1];
            match token {
                PatternToken::Literal(expected) => {
                    for position in 0..value.len() {
                        next[position + 1] = reachable[position] && value[position] == *expected;
                    }
                }
                PatternToken::AnyCharacter => {
                    for position in 0..value.len() {
                        next[position + 1] = reachable[position] && value[position] != '\n';
                    }
                }
                PatternToken::AnyRun => {
                    let mut running = false;
                    for position in 0..=value.len() {
                        running = reachable[position] || (running && position > 0 && value[position - 1] != '\n');
                        next[position] = running;
                    }
                }
            }
            reachable = next;
        }
        reachable
    }

    /// The leftmost match starting at or after `from`, with its longest end (what a greedy
    /// leftmost-first regular expression finds), as `(start, end)`.
    fn find(&self, value: &[char], from: usize) -> Option<(usize, usize)> {
        (from..=value.len()).find_map(|start| {
            let end = self.match_ends(value, start).iter().rposition(|&reachable| reachable)?;
            Some((start, end))
        })
    }

    pub(super) fn replace_first(&self, value: &[char], replacement: &str) -> String {
        match self.find(value, 0) {
            Some((start, end)) => {
                let mut output: String = value[..start].iter().collect();
                output.push_str(replacement);
                output.extend(&value[end..]);
                output
            }
            None => value.iter().collect(),
        }
    }

    /// Replaces every non-overlapping match, as Go's `ReplaceAllString`: an empty match right
    /// after a previous match is skipped, and the search always advances by at least one
    /// character.
    pub(super) fn replace_all(&self, value: &[char], replacement: &str) -> String {
        let mut output = String::new();
        let mut last_match_end = 0;
        let mut search_from = 0;
        while search_from <= value.len() {
            let Some((start, end)) = self.find(value, search_from) else {
                break;
            };
            output.extend(&value[last_match_end..start]);
            if end > last_match_end || start == 0 {
                let matched: String = value[start..end].iter().collect();
                expand_go_template(replacement, &matched, &mut output);
            }
            last_match_end = end;
            search_from = if search_from + 1 > end { search_from + 1 } else { end };
        }
        output.extend(&value[last_match_end..]);
        output
    }
}

/// Go's `Regexp.Expand` for a pattern with no capture groups: `$$` is `$`, `$0`/`${0}` is the
/// whole match, any other well-formed `$name` / `${name}` is empty, and a malformed `$` stays.
fn expand_go_template(template: &str, matched: &str, output: &mut String) {
    let mut rest = template;
    while let Some(dollar) = rest.find('$') {
        output.push_str(&rest[..dollar]);
        rest = &rest[dollar + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            output.push('$');
            rest = after;
            continue;
        }
        let (braced, body) = match rest.strip_prefix('{') {
            Some(body) => (true, body),
            None => (false, rest),
        };
        let name_length: usize =
            body.chars().take_while(|character| character.is_alphanumeric() || *character == '_').map(char::len_utf8).sum();
        let name = &body[..name_length];
        let after_name = &body[name_length..];
        let remainder = if name.is_empty() {
            None
        } else if braced {
            after_name.strip_prefix('}')
        } else {
            Some(after_name)
        };
        let Some(remainder) = remainder else {
            output.push('$');
            continue;
        };
        if name.bytes().all(|byte| byte == b'0') {
            output.push_str(matched);
        }
        rest = remainder;
    }
    output.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_pattern_keeps_escape_pairs() {
        let cases = [("a\\*c", "c\\*a"), ("\\\\\\ab", "b\\a\\\\"), ("ab\\", "\\ba"), ("👽\\🚀🖖", "🖖\\🚀👽"), ("\\\\b", "b\\\\")];
        for (pattern, expected) in cases {
            assert_eq!(reverse_pattern(pattern), expected, "{pattern}");
        }
    }

    #[test]
    fn pattern_parse_rejects_unknown_escapes() {
        for invalid in ["\\", "\\x", "\\\\\\"] {
            assert!(Pattern::parse(invalid).is_err(), "{invalid}");
        }
        assert_eq!(
            Pattern::parse("\\*?*").map(|pattern| pattern.tokens),
            Ok(vec![PatternToken::Literal('*'), PatternToken::AnyCharacter, PatternToken::AnyRun])
        );
    }
}
