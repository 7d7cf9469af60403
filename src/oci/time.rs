//! Times as images and BuildKit write them: Go's RFC 3339 in UTC (`2024-01-02T03:04:05Z`), with
//! the fraction of `RFC3339Nano` where one is wanted. Dates from days since the epoch by Howard
//! Hinnant's `civil_from_days` (proleptic Gregorian), so no time crate is needed.

/// Days since 1970-01-01 to (year, month, day).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Seconds since the epoch as Go's RFC 3339 (`2024-01-02T03:04:05Z`), as image configs hold
/// their times.
pub fn rfc3339(seconds: i64) -> String {
    rfc3339_nano(seconds, 0)
}

/// Go's `time.RFC3339Nano`: the fraction's trailing zeros dropped, none on a whole second.
pub fn rfc3339_nano(seconds: i64, nanos: u32) -> String {
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let second_of_day = seconds.rem_euclid(86_400);
    let mut text =
        format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}", second_of_day / 3600, second_of_day / 60 % 60, second_of_day % 60);
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text.push('Z');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_go_prints_them() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339_nano(1_700_000_000, 120_000_000), "2023-11-14T22:13:20.12Z");
        assert_eq!(rfc3339_nano(1_700_000_000, 5), "2023-11-14T22:13:20.000000005Z");
    }
}
