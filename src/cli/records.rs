//! How `cache du` and `cache prune` print records, byte for byte as buildx does.
//!
//! `du` goes through docker's formatter (buildx `commands/diskusage.go`): `table` is
//! `{{.ID}}\t{{.Reclaimable}}\t{{.Size}}\t{{.LastUsedAt}}` aligned by a tabwriter padding with
//! three spaces (an `*` after the id of a mutable record); `pretty` (`--verbose`) is one block
//! per record; `json` is one JSON object per line (not an array) whose keys are the formatter's
//! methods, sizes and times as the text the table shows. The summary (`Reclaimable:`, `Total:`)
//! follows `table` and `pretty` when no filter was given. `prune` (buildx `commands/prune.go`)
//! prints its own table with tabs, flushed after every row, then `Total:`.
//! Times are UTC, as BuildKit's timestamps reach buildx.

use std::io::{self, Write};

use crate::oci::units::{human_age, human_size};
use crate::store::usage::Item;

/// `du --format`: docker's formatter keys buildx accepts here (a Go template is not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DuFormat {
    Table,
    Pretty,
    Json,
}

impl DuFormat {
    /// buildx's choice: `--verbose` is `pretty`, and may not come with `--format`.
    pub(super) fn choose(format: Option<&str>, verbose: bool) -> Result<DuFormat, String> {
        match (format, verbose) {
            (Some(_), true) => Err("--format and --verbose cannot be used together".into()),
            (None, true) => Ok(DuFormat::Pretty),
            (None, false) | (Some("table"), false) => Ok(DuFormat::Table),
            (Some("pretty"), false) => Ok(DuFormat::Pretty),
            (Some("json"), false) => Ok(DuFormat::Json),
            (Some(other), false) => {
                Err(format!("unsupported format `{other}` (supported: table, pretty, json; rbuild has no Go templates)"))
            }
        }
    }
}

/// Go's `time.Time.String()` of a UTC time in seconds: `2023-11-14 22:13:20 +0000 UTC`.
pub(super) fn go_time(seconds: i64) -> String {
    let rfc3339 = crate::oci::time::rfc3339(seconds);
    format!("{} +0000 UTC", rfc3339.trim_end_matches('Z').replacen('T', " ", 1))
}

/// The `du` listing of `items` in `format`; `summary` adds the totals.
pub(super) fn write_du(out: &mut impl Write, items: &[Item], format: DuFormat, summary: bool, now: i64) -> io::Result<()> {
    match format {
        DuFormat::Table => {
            let mut lines = vec![cells(&["ID", "RECLAIMABLE", "SIZE", "LAST ACCESSED"])];
            for item in items {
                let id = if item.mutable() { format!("{}*", item.display_id()) } else { item.display_id().to_string() };
                lines.push(vec![id, "true".into(), human_size(item.size), human_age(now - item.last_used_at)]);
            }
            out.write_all(tabwrite(&lines, 10, 1, 3, Padding::Spaces).as_bytes())?;
        }
        DuFormat::Pretty => {
            for item in items {
                let mut block = String::new();
                let mut line = |key: &str, value: &str| block.push_str(&format!("{key:<14}{value}\n"));
                line("ID:", item.display_id());
                line("Created at:", &go_time(item.created_at));
                line("Mutable:", &item.mutable().to_string());
                line("Reclaimable:", "true");
                line("Shared:", "false");
                line("Size:", &human_size(item.size));
                if !item.description.is_empty() {
                    line("Description:", &item.description);
                }
                line("Usage count:", "0");
                line("Last used:", &human_age(now - item.last_used_at));
                line("Type:", item.kind);
                writeln!(out, "{block}")?;
            }
        }
        DuFormat::Json => {
            for item in items {
                writeln!(out, "{}", json_line(item, now))?;
            }
        }
    }
    if summary && format != DuFormat::Json {
        // rbuild shares no storage with anything, so there is never a `Shared:`/`Private:` pair.
        let total = human_size(items.iter().map(|item| item.size).sum());
        let lines = [cells(&["Reclaimable:", &total]), cells(&["Total:", &total])];
        out.write_all(tabwrite(&lines, 1, 8, 1, Padding::Tabs).as_bytes())?;
    }
    Ok(())
}

/// One record of `du --format json`: docker's `formatter.MarshalJSON` of buildx's
/// `diskusageContext`, keys sorted as Go's `encoding/json` sorts a map, HTML characters escaped
/// as it escapes them.
fn json_line(item: &Item, now: i64) -> String {
    #[derive(serde::Serialize)]
    #[allow(non_snake_case)]
    struct Record<'a> {
        CreatedAt: String,
        Description: &'a str,
        ID: &'a str,
        LastUsedAt: String,
        Mutable: bool,
        Parents: Option<Vec<String>>,
        Reclaimable: bool,
        Shared: bool,
        Size: String,
        Type: &'a str,
        UsageCount: u64,
    }
    let record = Record {
        CreatedAt: go_time(item.created_at),
        Description: &item.description,
        ID: item.display_id(),
        LastUsedAt: human_age(now - item.last_used_at),
        Mutable: item.mutable(),
        Parents: None,
        Reclaimable: true,
        Shared: false,
        Size: human_size(item.size),
        Type: item.kind,
        UsageCount: 0,
    };
    let text = serde_json::to_string(&record).unwrap_or_default();
    text.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// The `prune` listing of the removed `items` (buildx's `printTableRow`/`printVerbose`), then
/// `Total:`.
pub(super) fn write_pruned(out: &mut impl Write, items: &[Item], verbose: bool, now: i64) -> io::Result<()> {
    for (index, item) in items.iter().enumerate() {
        if verbose {
            // BuildKit sends a pruned record without its type.
            let mut lines = vec![
                cells(&["ID:", item.display_id()]),
                cells(&["Created at:", &go_time(item.created_at)]),
                cells(&["Mutable:", &item.mutable().to_string()]),
                cells(&["Reclaimable:", "true"]),
                cells(&["Shared:", "false"]),
                cells(&["Size:", &human_size(item.size)]),
            ];
            if !item.description.is_empty() {
                lines.push(cells(&["Description:", &item.description]));
            }
            lines.push(cells(&["Usage count:", "0"]));
            lines.push(cells(&["Last used:", &human_age(now - item.last_used_at)]));
            out.write_all(tabwrite(&lines, 1, 8, 1, Padding::Tabs).as_bytes())?;
            writeln!(out)?;
            continue;
        }
        let id = if item.mutable() { format!("{}*", item.display_id()) } else { item.display_id().to_string() };
        let row = vec![
            format!("{id:<40}"),
            format!("{:<5}", "true"),
            format!("{:<10}", human_size(item.size)),
            human_age(now - item.last_used_at),
        ];
        // buildx flushes its tabwriter after each row: the header aligns with the first row
        // only, and every later row is aligned on its own.
        let lines = if index == 0 { vec![cells(&["ID", "RECLAIMABLE", "SIZE", "LAST ACCESSED"]), row] } else { vec![row] };
        out.write_all(tabwrite(&lines, 1, 8, 1, Padding::Tabs).as_bytes())?;
    }
    let total = human_size(items.iter().map(|item| item.size).sum());
    out.write_all(tabwrite(&[cells(&["Total:", &total])], 1, 8, 1, Padding::Tabs).as_bytes())
}

fn cells(texts: &[&str]) -> Vec<String> {
    texts.iter().map(|text| text.to_string()).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Padding {
    Tabs,
    Spaces,
}

/// Go's `text/tabwriter` over lines of cells, each line ended by a newline: every cell but the
/// last of a line is a column cell, as wide as the widest in its column plus `padding` (at least
/// `min_width`). With tabs, the width is rounded up to `tab_width` and filled with tabs.
/// One block per call: all lines share their columns (the callers' lines all have the same
/// number of cells, where Go's block rule and this agree).
fn tabwrite(lines: &[Vec<String>], min_width: usize, tab_width: usize, padding: usize, padding_kind: Padding) -> String {
    let columns = lines.iter().map(|line| line.len().saturating_sub(1)).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            lines
                .iter()
                .filter(|line| column + 1 < line.len())
                .map(|line| line[column].chars().count() + padding)
                .fold(min_width, usize::max)
        })
        .collect();
    let mut text = String::new();
    for line in lines {
        for (column, cell) in line.iter().enumerate() {
            text.push_str(cell);
            if column + 1 == line.len() {
                break;
            }
            let used = cell.chars().count();
            match padding_kind {
                Padding::Spaces => text.push_str(&" ".repeat(widths[column] - used)),
                Padding::Tabs => {
                    let width = widths[column].div_ceil(tab_width) * tab_width;
                    text.push_str(&"\t".repeat((width - used).div_ceil(tab_width)));
                }
            }
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, kind: &'static str, size: u64, description: &str) -> Item {
        Item {
            id: format!("sha256:{id}"),
            kind,
            description: description.into(),
            size,
            created_at: 1_700_000_000,
            last_used_at: 1_700_000_000,
        }
    }

    #[test]
    fn go_times() {
        assert_eq!(go_time(1_700_000_000), "2023-11-14 22:13:20 +0000 UTC");
    }

    /// Go's own tabwriter output, recorded: `buildctl du` pads with tabs, as buildx's `prune`
    /// table and summaries do. Cut into cells at runs of tabs, the blocks come out the same.
    #[test]
    fn tabs_as_go_writes_them() {
        let recorded = include_str!("../../testdata/cache/buildctl-du.txt");
        let (table, summary) = recorded.split_at(recorded.find("Reclaimable:").expect("a summary"));
        for block in [table, summary] {
            let lines: Vec<Vec<String>> = block
                .lines()
                .map(|line| {
                    line.split('\t')
                        .filter(|cell| !cell.is_empty())
                        .map(String::from)
                        .chain(line.ends_with('\t').then(String::new))
                        .collect()
                })
                .collect();
            assert_eq!(tabwrite(&lines, 1, 8, 1, Padding::Tabs), block);
        }
    }

    #[test]
    fn summary_and_prune_tables_pad_with_tabs() {
        let mut out = Vec::new();
        write_du(&mut out, &[], DuFormat::Table, true, 0).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "ID        RECLAIMABLE   SIZE      LAST ACCESSED\nReclaimable:\t0B\nTotal:\t\t0B\n");

        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let items = [item(&a, "regular", 1234, "x"), item(&b, "exec.cachemount", 5, "y")];
        let mut out = Vec::new();
        write_pruned(&mut out, &items, false, 1_700_000_000).unwrap();
        let expected = format!(
            "ID\t\t\t\t\t\t\t\t\tRECLAIMABLE\tSIZE\t\tLAST ACCESSED\n{a}\ttrue \t\t1.234kB   \tLess than a second ago\n{b}*\ttrue \t5B        \tLess than a second ago\nTotal:\t1.239kB\n"
        );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn du_table_pads_with_three_spaces_and_marks_mutable() {
        let a = "a".repeat(64);
        let mut out = Vec::new();
        write_du(&mut out, &[item(&a, "exec.cachemount", 1234, "x")], DuFormat::Table, false, 1_700_000_090).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            format!("ID{}RECLAIMABLE   SIZE      LAST ACCESSED\n{a}*   true          1.234kB   About a minute ago\n", " ".repeat(66))
        );
    }

    #[test]
    fn json_is_one_object_a_line_with_go_escapes() {
        let mut out = Vec::new();
        let items = [item("ab", "regular", 999, "RUN a > b && c"), item("cd", "internal", 1000, "")];
        write_du(&mut out, &items, DuFormat::Json, true, 1_700_000_000 + 3 * 86_400).unwrap();
        let text = String::from_utf8(out).unwrap();
        let first = text.lines().next().unwrap();
        assert_eq!(
            first,
            r#"{"CreatedAt":"2023-11-14 22:13:20 +0000 UTC","Description":"RUN a \u003e b \u0026\u0026 c","ID":"ab","LastUsedAt":"3 days ago","Mutable":false,"Parents":null,"Reclaimable":true,"Shared":false,"Size":"999B","Type":"regular","UsageCount":0}"#
        );
        assert_eq!(text.lines().count(), 2, "no summary after JSON:\n{text}");
    }

    #[test]
    fn format_choice_is_buildx_s() {
        assert_eq!(DuFormat::choose(None, false), Ok(DuFormat::Table));
        assert_eq!(DuFormat::choose(None, true), Ok(DuFormat::Pretty));
        assert_eq!(DuFormat::choose(Some("json"), false), Ok(DuFormat::Json));
        assert_eq!(DuFormat::choose(Some("json"), true), Err("--format and --verbose cannot be used together".into()));
        assert!(DuFormat::choose(Some("{{.ID}}"), false).is_err());
    }
}
