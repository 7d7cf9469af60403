//! Docker's go-units, as buildx and BuildKit read and print sizes and ages: `RAMInBytes` for
//! every size a user writes (`--shm-size`, `cache prune --max-used-space`, `RUN --mount=type=tmpfs,size=`),
//! `HumanSize` and `HumanDuration` for what `cache du` prints.
//!
//! Invariant: one parser for sizes, so `1.5g` and `64MiB` mean the same on the command line and
//! in a Dockerfile, as they do for BuildKit.

/// go-units' `HumanSize`: decimal units, four significant digits (`19.41MB`, `0B`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{}{}", format_significant(value, 4), UNITS[unit])
}

/// `%.4g` of Go: up to `digits` significant digits, no trailing zeros.
fn format_significant(value: f64, digits: usize) -> String {
    if value == 0.0 {
        return "0".into();
    }
    let magnitude = value.abs().log10().floor() as i32;
    let decimals = (digits as i32 - 1 - magnitude).max(0) as usize;
    let text = format!("{value:.decimals$}");
    if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_string() } else { text }
}

/// go-units' `RAMInBytes`, which docker's `MemBytes` flags (buildx's `--reserved-space`,
/// `--max-used-space`, `--min-free-space`, `--shm-size`) parse with: a decimal number, an
/// optional space, then `b`, or one of `k m g t p` optionally followed by `i`, `b` or `ib`,
/// any case; binary multipliers (`10GB` is 10 × 2³⁰, as `10gib`). The error is go-units' text.
pub fn ram_in_bytes(text: &str) -> Result<u64, String> {
    let Some(separator) = text.rfind(|c: char| c.is_ascii_digit() || c == '.' || c == ' ') else {
        return Err(format!("invalid size: '{text}'"));
    };
    let (number, suffix) =
        if text.as_bytes()[separator] == b' ' { (&text[..separator], &text[separator + 1..]) } else { text.split_at(separator + 1) };
    let size: f64 = number.parse().map_err(|_| format!("strconv.ParseFloat: parsing \"{number}\": invalid syntax"))?;
    if size < 0.0 || size.is_nan() {
        return Err(format!("invalid size: '{text}'"));
    }
    let suffix = suffix.to_ascii_lowercase();
    let bad_suffix = || format!("invalid suffix: '{suffix}'");
    let multiplier: f64 = match suffix.as_bytes() {
        [] | [b'b'] => 1.0,
        [unit, rest @ ..] => {
            let power = match unit {
                b'k' => 1,
                b'm' => 2,
                b'g' => 3,
                b't' => 4,
                b'p' => 5,
                _ => return Err(bad_suffix()),
            };
            if !matches!(rest, [] | [b'i'] | [b'b'] | [b'i', b'b']) {
                return Err(bad_suffix());
            }
            1024f64.powi(power)
        }
    };
    Ok((size * multiplier) as u64)
}

/// go-units' `HumanDuration` followed by ` ago`, as buildx shows "last accessed".
pub fn human_age(seconds: i64) -> String {
    let seconds = seconds.max(0);
    let minutes = seconds / 60;
    let hours = (seconds as f64 / 3600.0 + 0.5) as i64;
    let text = if seconds < 1 {
        "Less than a second".to_string()
    } else if seconds == 1 {
        "1 second".to_string()
    } else if seconds < 60 {
        format!("{seconds} seconds")
    } else if minutes == 1 {
        "About a minute".to_string()
    } else if minutes < 60 {
        format!("{minutes} minutes")
    } else if hours == 1 {
        "About an hour".to_string()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", hours / 24 / 365)
    };
    format!("{text} ago")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_like_go_units() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(19_414_000), "19.41MB");
        assert_eq!(human_size(1_234_567_890), "1.235GB");
        assert_eq!(ram_in_bytes("10GB"), Ok(10 << 30));
        assert_eq!(ram_in_bytes("512m"), Ok(512 << 20));
        assert_eq!(ram_in_bytes("100"), Ok(100));
        assert_eq!(ram_in_bytes("1.5m"), Ok(3 << 19));
        assert_eq!(ram_in_bytes("64MiB"), Ok(64 << 20));
        assert!(ram_in_bytes("ten").is_err());
        // go-units' RAMInBytes, case by case.
        assert_eq!(ram_in_bytes("1.5gib"), Ok(3 << 29));
        assert_eq!(ram_in_bytes("2 KB"), Ok(2048));
        assert_eq!(ram_in_bytes("7b"), Ok(7));
        assert_eq!(ram_in_bytes("1e3"), Ok(1000));
        assert_eq!(ram_in_bytes("10XB"), Err("invalid suffix: 'xb'".into()));
        assert_eq!(ram_in_bytes("10kbi"), Err("invalid suffix: 'kbi'".into()));
        assert_eq!(ram_in_bytes("10bb"), Err("invalid suffix: 'bb'".into()));
        assert_eq!(ram_in_bytes("GB"), Err("invalid size: 'GB'".into()));
        assert_eq!(ram_in_bytes("-1"), Err("invalid size: '-1'".into()));
        assert_eq!(ram_in_bytes("1.2.3m"), Err("strconv.ParseFloat: parsing \"1.2.3\": invalid syntax".into()));
        assert_eq!(human_age(0), "Less than a second ago");
        assert_eq!(human_age(90), "About a minute ago");
        assert_eq!(human_age(3 * 86400), "3 days ago");
    }
}
