//! Times as images and BuildKit write them: Go's RFC 3339 in UTC (`2024-01-02T03:04:05Z`), with
//! the fraction of `RFC3339Nano` where one is wanted. Dates from days since the epoch by Howard
//! Hinnant's `civil_from_days` (proleptic Gregorian), so no time crate is needed. HTTP dates
//! (`Last-Modified`) read as Go's `http.ParseTime` reads them.

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

/// (year, month, day) to days since 1970-01-01, the inverse of [`civil_from_days`].
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month = i64::from(month);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Seconds since the epoch of an HTTP date in any of the three forms HTTP/1.1 allows (as Go's
/// `http.ParseTime`): `Sun, 06 Nov 1994 08:49:37 GMT`, `Sunday, 06-Nov-94 08:49:37 GMT`,
/// `Sun Nov  6 08:49:37 1994`. `None` for anything else.
pub fn parse_http_date(text: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month_number = |name: &str| MONTHS.iter().position(|month| *month == name).map(|index| index as u32 + 1);
    let words: Vec<&str> = text.split_whitespace().collect();
    let (year, month, day, clock) = match words.as_slice() {
        // IMF-fixdate.
        [_, day, month, year, clock, "GMT"] => (year.parse().ok()?, month_number(month)?, day.parse().ok()?, *clock),
        // RFC 850: a two-digit year is 19xx from 69 on, else 20xx (Go's `06`).
        [_, date, clock, "GMT"] => {
            let mut parts = date.split('-');
            let (day, month, year) = (parts.next()?, parts.next()?, parts.next()?);
            let year: i64 = year.parse().ok()?;
            let year = if year < 69 { 2000 + year } else { 1900 + year };
            (year, month_number(month)?, day.parse().ok()?, *clock)
        }
        // ANSI C's asctime().
        [_, month, day, clock, year] => (year.parse().ok()?, month_number(month)?, day.parse().ok()?, *clock),
        _ => return None,
    };
    let mut clock = clock.split(':').map(|part| part.parse::<i64>().ok());
    let (hour, minute, second) = (clock.next()??, clock.next()??, clock.next()??);
    // Go's layouts take a four-digit year; a longer one (from a hostile server) is no date.
    if !(1..=9999).contains(&year) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
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

    #[test]
    fn http_dates_read_in_all_three_forms() {
        assert_eq!(parse_http_date("Tue, 14 Nov 2023 22:13:20 GMT"), Some(1_700_000_000));
        assert_eq!(parse_http_date("Tuesday, 14-Nov-23 22:13:20 GMT"), Some(1_700_000_000));
        assert_eq!(parse_http_date("Tue Nov 14 22:13:20 2023"), Some(1_700_000_000));
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(parse_http_date("Thu, 29 Feb 2024 00:00:00 GMT"), Some(1_709_164_800));
        for bad in [
            "Tue, 14 Nov 999999999999 22:13:20 GMT",
            "",
            "yesterday",
            "Tue, 14 Nov 2023 22:13:20 CET",
            "Tue, 32 Nov 2023 22:13:20 GMT",
            "Tue, 14 Foo 2023 22:13:20 GMT",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad}");
        }
        for days in [-1000, 0, 11_016, 19_782, 100_000] {
            let (year, month, day) = civil_from_days(days);
            assert_eq!(days_from_civil(year, month, day), days);
        }
    }
}
