//! Go's `strconv.Quote` (`%q`), the one copy: BuildKit quotes with it where users see a value
//! (the failed command of a `RUN`, history strings of an image config, the Dockerfile reader's
//! messages), and matching it byte for byte is what makes those lines BuildKit's.
//!
//! Printability, as Go decides it, is approximated: control, white-space (other than a space),
//! format and private-use characters are escaped; unassigned code points are not recognised.

use std::fmt::Write as _;

/// `text` in double quotes with Go's escapes: `echo "a b"` becomes `"echo \"a b\""`.
pub fn go_quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for character in text.chars() {
        match character {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\u{7}' => quoted.push_str("\\a"),
            '\u{8}' => quoted.push_str("\\b"),
            '\u{c}' => quoted.push_str("\\f"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            '\u{b}' => quoted.push_str("\\v"),
            printable if is_go_printable(printable) => quoted.push(printable),
            // Writing to a String cannot fail.
            low if (low as u32) < 0x20 || low == '\u{7f}' => {
                let _ = write!(quoted, "\\x{:02x}", low as u32);
            }
            bmp if (bmp as u32) < 0x10000 => {
                let _ = write!(quoted, "\\u{:04x}", bmp as u32);
            }
            other => {
                let _ = write!(quoted, "\\U{:08x}", other as u32);
            }
        }
    }
    quoted.push('"');
    quoted
}

fn is_go_printable(character: char) -> bool {
    if character == ' ' {
        return true;
    }
    let code = character as u32;
    let is_format = matches!(
        code,
        0xad | 0x600..=0x605
            | 0x61c
            | 0x6dd
            | 0x70f
            | 0x8e2
            | 0x180e
            | 0x200b..=0x200f
            | 0x202a..=0x202e
            | 0x2060..=0x2064
            | 0x2066..=0x206f
            | 0xfeff
            | 0xfff9..=0xfffb
            | 0x110bd
            | 0x1bca0..=0x1bca3
            | 0x1d173..=0x1d17a
            | 0xe0001
            | 0xe0020..=0xe007f
    );
    let is_private_use = matches!(code, 0xe000..=0xf8ff | 0xf0000..=0xffffd | 0x100000..=0x10fffd);
    !character.is_control() && !character.is_whitespace() && !is_format && !is_private_use
}

#[cfg(test)]
mod tests {
    use super::go_quote;

    #[test]
    fn quotes_as_go_strconv_quote() {
        // Each pair checked with Go's fmt.Sprintf("%q", ...).
        let cases = [
            ("/bin/sh -c echo \"a b\" && exit 3", r#""/bin/sh -c echo \"a b\" && exit 3""#),
            ("back\\slash", r#""back\\slash""#),
            ("tab\there\nnew", r#""tab\there\nnew""#),
            ("\u{1b}[1m\u{7f}", r#""\x1b[1m\x7f""#),
            ("é ü 日本", "\"é ü 日本\""),
            ("\u{200b}\u{a0}", r#""\u200b\u00a0""#),
        ];
        for (text, expected) in cases {
            assert_eq!(go_quote(text), expected, "{text:?}");
        }
    }
}
