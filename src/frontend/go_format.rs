//! Go formatting that BuildKit's history strings and config values are made of: `%q` of a
//! string slice and `time.Duration.String()`. Matching them byte for byte keeps our
//! image configs (and so digests) equal to BuildKit's for the same Dockerfile.

/// Go's `fmt.Sprintf("%q", []string{...})`: `["a" "b"]`.
pub(super) fn quote_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|item| quote(item)).collect();
    format!("[{}]", quoted.join(" "))
}

/// Go's `strconv.Quote`: the graph's one copy.
pub(super) use crate::oci::go_quote as quote;

/// Go's `%v` of a string slice: `[a b]`.
pub(super) fn plain_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// Go's `time.Duration.String()`: `0s`, `1.5s`, `500ms`, `1m30s`, `1h0m0s`.
pub(super) fn duration_string(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let negative = nanos < 0;
    let value = nanos.unsigned_abs();
    let sign = if negative { "-" } else { "" };
    if value < 1_000_000_000 {
        let (unit, scale) = if value < 1_000 {
            ("ns", 1)
        } else if value < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{sign}{}{unit}", fraction(value, scale));
    }
    let hours = value / 3_600_000_000_000;
    let minutes = value / 60_000_000_000 % 60;
    let seconds_nanos = value % 60_000_000_000;
    let seconds = fraction(seconds_nanos, 1_000_000_000);
    if hours > 0 {
        format!("{sign}{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{sign}{minutes}m{seconds}s")
    } else {
        format!("{sign}{seconds}s")
    }
}

/// `value / scale` with the fraction's trailing zeros removed.
fn fraction(value: u64, scale: u64) -> String {
    let whole = value / scale;
    let rest = value % scale;
    if rest == 0 {
        return whole.to_string();
    }
    let digits = scale.to_string().len() - 1;
    let text = format!("{rest:0digits$}");
    format!("{whole}.{}", text.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_matches_go() {
        assert_eq!(quote_list(&["/bin/sh".into(), "-c".into(), "echo \"hi\"\n".into()]), r#"["/bin/sh" "-c" "echo \"hi\"\n"]"#);
        assert_eq!(plain_list(&["/bin/bash".into(), "-c".into()]), "[/bin/bash -c]");
    }

    #[test]
    fn durations_match_go() {
        assert_eq!(duration_string(0), "0s");
        assert_eq!(duration_string(30_000_000_000), "30s");
        assert_eq!(duration_string(90_000_000_000), "1m30s");
        assert_eq!(duration_string(3_600_000_000_000), "1h0m0s");
        assert_eq!(duration_string(1_500_000_000), "1.5s");
        assert_eq!(duration_string(500_000_000), "500ms");
    }
}
