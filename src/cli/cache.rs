//! `rbuild cache du` and `rbuild cache prune`, with buildx's flags and table layout.

use std::io::{IsTerminal, Write};

use anyhow::{Context, anyhow, bail};

use super::{CacheCommand, DuArgs, EXIT_FAILED, EXIT_USAGE, PruneArgs, init_logging};
use crate::store::usage::{Item, PrunePolicy, human_age, human_size, items, parse_size, prune};
use crate::store::{LockMode, Store, now};

pub fn run(command: CacheCommand) -> i32 {
    let result = match command {
        CacheCommand::Du(args) => {
            init_logging(args.root.debug);
            du(args)
        }
        CacheCommand::Prune(args) => {
            init_logging(args.root.debug);
            prune_command(args)
        }
    };
    match result {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("ERROR: {error:#}");
            if error.downcast_ref::<UsageError>().is_some() { EXIT_USAGE } else { EXIT_FAILED }
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

fn usage(message: String) -> anyhow::Error {
    anyhow!(UsageError(message))
}

/// `--filter` values: `type=`, `until=`, `id=`.
#[derive(Default)]
struct Filters {
    kinds: Vec<String>,
    unused_for: Option<i64>,
    id_prefixes: Vec<String>,
}

fn parse_filters(filters: &[String]) -> anyhow::Result<Filters> {
    let mut parsed = Filters::default();
    for filter in filters {
        let Some((key, value)) = filter.split_once('=') else {
            return Err(usage(format!("invalid filter `{filter}`: expected KEY=VALUE")));
        };
        match key {
            "type" => parsed.kinds.push(value.to_string()),
            "until" => {
                let duration = humantime::parse_duration(value)
                    .map_err(|_| usage(format!("invalid duration `{value}` in filter `{filter}`")))?;
                parsed.unused_for = Some(duration.as_secs() as i64);
            }
            "id" => parsed.id_prefixes.push(value.to_string()),
            _ => return Err(usage(format!("unsupported filter `{key}` (supported: type, until, id)"))),
        }
    }
    Ok(parsed)
}

impl Filters {
    fn keep(&self, item: &Item, now: i64) -> bool {
        (self.kinds.is_empty() || self.kinds.iter().any(|kind| kind == item.kind))
            && self.unused_for.is_none_or(|age| now - item.last_used_at >= age)
            && (self.id_prefixes.is_empty()
                || self.id_prefixes.iter().any(|prefix| short_id(&item.id).starts_with(prefix.as_str()) || item.id.starts_with(prefix.as_str())))
    }
}

fn short_id(id: &str) -> &str {
    id.strip_prefix("sha256:").unwrap_or(id)
}

fn open(root: Option<std::path::PathBuf>, mode: LockMode) -> anyhow::Result<Store> {
    let root = root.unwrap_or_else(super::default_root);
    let store = Store::open(&root, mode).with_context(|| format!("failed to open the state root `{}`", root.display()))?;
    for warning in store.warnings() {
        eprintln!("WARNING: {warning}");
    }
    Ok(store)
}

fn du(args: DuArgs) -> anyhow::Result<()> {
    let filters = parse_filters(&args.filter)?;
    if args.format != "table" && args.format != "json" {
        return Err(usage(format!("unsupported format `{}` (supported: table, json)", args.format)));
    }
    let store = open(args.root.root, LockMode::Shared)?;
    let now = now();
    let selected: Vec<Item> = items(&store)?.into_iter().filter(|item| filters.keep(item, now)).collect();
    let mut out = std::io::stdout().lock();
    if args.format == "json" {
        let records: Vec<serde_json::Value> = selected
            .iter()
            .map(|item| {
                serde_json::json!({
                    "ID": short_id(&item.id),
                    "CreatedAt": crate::frontend::image_config::rfc3339(item.created_at),
                    "Mutable": false,
                    "Reclaimable": true,
                    "Shared": false,
                    "Size": item.size,
                    "Description": item.description,
                    "LastUsedAt": crate::frontend::image_config::rfc3339(item.last_used_at),
                    "Type": item.kind,
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&records)?)?;
        return Ok(());
    }
    if args.verbose {
        for item in &selected {
            writeln!(out, "ID:\t\t{}", short_id(&item.id))?;
            writeln!(out, "Created at:\t{}", crate::frontend::image_config::rfc3339(item.created_at))?;
            writeln!(out, "Mutable:\tfalse")?;
            writeln!(out, "Reclaimable:\ttrue")?;
            writeln!(out, "Shared:\t\tfalse")?;
            writeln!(out, "Size:\t\t{}", human_size(item.size))?;
            writeln!(out, "Description:\t{}", item.description)?;
            writeln!(out, "Last used:\t{}", human_age(now - item.last_used_at))?;
            writeln!(out, "Type:\t\t{}", item.kind)?;
            writeln!(out)?;
        }
    } else if !selected.is_empty() {
        writeln!(out, "{:<72}{:<16}{:<16}{}", "ID", "RECLAIMABLE", "SIZE", "LAST ACCESSED")?;
        for item in &selected {
            writeln!(out, "{:<72}{:<16}{:<16}{}", short_id(&item.id), "true", human_size(item.size), human_age(now - item.last_used_at))?;
        }
    }
    let total: u64 = selected.iter().map(|item| item.size).sum();
    if !selected.is_empty() || args.verbose {
        writeln!(out, "Shared:\t\t0B")?;
        writeln!(out, "Private:\t{}", human_size(total))?;
    }
    writeln!(out, "Reclaimable:\t{}", human_size(total))?;
    writeln!(out, "Total:\t\t{}", human_size(total))?;
    Ok(())
}

fn prune_command(args: PruneArgs) -> anyhow::Result<()> {
    let filters = parse_filters(&args.filter)?;
    if !filters.kinds.is_empty() || !filters.id_prefixes.is_empty() {
        return Err(usage("prune supports only the `until` filter".into()));
    }
    let keep_bytes = match &args.keep_storage {
        Some(text) => Some(parse_size(text).ok_or_else(|| usage(format!("invalid size `{text}` for --keep-storage")))?),
        None => None,
    };
    if !args.force {
        let warning = if args.all {
            "WARNING! This will remove all build cache."
        } else {
            "WARNING! This will remove all dangling build cache."
        };
        eprint!("{warning} Are you sure you want to continue? [y/N] ");
        if !std::io::stdin().is_terminal() {
            eprintln!();
            bail!("refusing to prune without confirmation: stdin is not a terminal (use -f)");
        }
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(());
        }
    }
    let store = open(args.root.root, LockMode::Exclusive)?;
    crate::sandbox::sweep_leftovers();
    let policy = PrunePolicy { all: args.all, unused_for: filters.unused_for, keep_bytes };
    let removed = prune(&store, &policy, now())?;
    let mut out = std::io::stdout().lock();
    if args.verbose {
        for item in &removed {
            writeln!(out, "ID:\t\t{}\nSize:\t\t{}\nDescription:\t{}\n", short_id(&item.id), human_size(item.size), item.description)?;
        }
    } else if !removed.is_empty() {
        writeln!(out, "{:<72}{:<16}{}", "ID", "RECLAIMABLE", "SIZE")?;
        for item in &removed {
            writeln!(out, "{:<72}{:<16}{}", short_id(&item.id), "true", human_size(item.size))?;
        }
    }
    let total: u64 = removed.iter().map(|item| item.size).sum();
    writeln!(out, "Total:\t{}", human_size(total))?;
    Ok(())
}
