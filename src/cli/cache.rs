//! `rbuild cache du` and `rbuild cache prune`, as `docker buildx du` and `docker buildx prune`:
//! the same flags, filters ([`crate::store::filter`]), output ([`super::records`]) and prompt.
//!
//! Two habits of buildx that a script may lean on: a closed stdout (`rbuild cache du | head -1`)
//! ends the command quietly, by SIGPIPE, as it ends a Go program (measured with `buildctl du`:
//! killed by SIGPIPE, status 141 in a shell, nothing on stderr); and `prune` without `-f` reads
//! one line from stdin whatever stdin is (`echo y | rbuild cache prune`): `y` or `Y` prunes,
//! anything else (or nothing) ends with status 0 and no pruning. The question goes to stderr,
//! not to stdout as buildx's does: stdout is for data here.

use std::io::{BufRead, Write};

use anyhow::{Context, anyhow};

use super::records::{self, DuFormat};
use super::{CacheCommand, DuArgs, EXIT_FAILED, EXIT_USAGE, PruneArgs, init_logging};
use crate::store::filter::RecordFilter;
use crate::store::usage::{Item, PrunePolicy, SpaceLimits, items, prune};
use crate::store::{LockMode, Store, now};

pub fn run(command: CacheCommand) -> i32 {
    // Rust starts with SIGPIPE ignored, which turns a closed stdout into an EPIPE error and a
    // "Broken pipe" message; these commands touch no socket, so the default (die quietly, as
    // buildx does) is safe here.
    die_on_sigpipe();
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
            message!("ERROR: {error:#}");
            if error.downcast_ref::<UsageError>().is_some() { EXIT_USAGE } else { EXIT_FAILED }
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

/// Puts SIGPIPE back to its default action (see [`run`]).
// Setting a disposition has no safe API (neither in std nor in nix).
#[allow(unsafe_code)]
fn die_on_sigpipe() {
    // SAFETY: SIG_DFL installs no handler, so no code of ours can run in a signal context.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

fn usage(message: impl ToString) -> anyhow::Error {
    anyhow!(UsageError(message.to_string()))
}

fn open(root: Option<std::path::PathBuf>, mode: LockMode) -> anyhow::Result<Store> {
    let root = root.unwrap_or_else(super::default_root);
    let store = Store::open(&root, mode).with_context(|| format!("failed to open the state root `{}`", root.display()))?;
    for warning in store.warnings() {
        message!("WARNING: {warning}");
    }
    Ok(store)
}

/// Whether `item` passes the filters. `until` counts here too, unlike buildx's `du` (which
/// parses it and then ignores it): `du --filter until=24h` shows what `prune --filter until=24h`
/// would take.
fn selected(filter: &RecordFilter, item: &Item, now: i64) -> bool {
    filter.unused_for.is_none_or(|age| now - item.last_used_at >= age) && filter.filter.matches(|path| item.field(path))
}

/// The `--filter` flags, with Go's durations for `until`.
fn record_filter(flags: &[String]) -> Result<RecordFilter, crate::store::filter::FilterError> {
    RecordFilter::from_flags(flags, crate::dockerfile::instruction::go_duration_nanoseconds)
}

fn du(args: DuArgs) -> anyhow::Result<()> {
    let format = DuFormat::choose(args.format.as_deref(), args.verbose).map_err(usage)?;
    let filter = record_filter(&args.filter).map_err(usage)?;
    let store = open(args.root.root, LockMode::Shared)?;
    let now = now();
    let listed: Vec<Item> = items(&store)?.into_iter().filter(|item| selected(&filter, item, now)).collect();
    let mut out = std::io::stdout().lock();
    records::write_du(&mut out, &listed, format, !filter.given, now)?;
    out.flush()?;
    Ok(())
}

fn prune_command(args: PruneArgs) -> anyhow::Result<()> {
    let filter = record_filter(&args.filter).map_err(usage)?;
    let mut reserved = args.reserved_space;
    if let Some(bytes) = args.keep_storage {
        message!("Flag --keep-storage has been deprecated, keep-storage flag has been changed to reserved-space");
        if reserved == 0 {
            reserved = bytes;
        }
    }
    if !args.force && !confirmed(args.all)? {
        return Ok(());
    }
    let store = open(args.root.root, LockMode::Exclusive)?;
    crate::sandbox::sweep_leftovers();
    let policy = PrunePolicy {
        all: args.all,
        unused_for: filter.unused_for,
        filter: filter.filter,
        space: SpaceLimits { reserved, max_used: args.max_used_space, min_free: args.min_free_space },
    };
    let removed = prune(&store, &policy, now())?;
    let mut out = std::io::stdout().lock();
    records::write_pruned(&mut out, &removed, args.verbose, now())?;
    out.flush()?;
    Ok(())
}

/// buildx's question and its reading of the answer: one line, `y` or `Y` and nothing else.
fn confirmed(all: bool) -> anyhow::Result<bool> {
    let what = if all { "all build cache" } else { "all dangling build cache" };
    {
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), "WARNING! This will remove {what}. Are you sure you want to continue? [y/N] ");
    }
    let mut answer = Vec::new();
    std::io::stdin().lock().read_until(b'\n', &mut answer).context("failed to read the answer from stdin")?;
    let line = answer.strip_suffix(b"\n").unwrap_or(&answer);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Ok(line.eq_ignore_ascii_case(b"y"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(list: &[&str]) -> Result<RecordFilter, crate::store::filter::FilterError> {
        record_filter(&list.iter().map(|flag| flag.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn until_is_a_go_duration_kept_apart() {
        let filter = flags(&["until=24h", "type=regular"]).unwrap();
        assert_eq!(filter.unused_for, Some(86_400));
        assert_eq!(filter.text, "type==regular");
        assert_eq!(flags(&["unused-for=1h30m"]).unwrap().unused_for, Some(5400));
        assert_eq!(flags(&["until=0"]).unwrap().unused_for, None);
        assert!(flags(&["until=0"]).unwrap().given);
        assert_eq!(
            flags(&["until=1d"]).unwrap_err().to_string(),
            "\"until\" filter expects a duration (e.g., '24h'): time: unknown unit \"d\" in duration \"1d\""
        );
        assert_eq!(
            flags(&["until=10"]).unwrap_err().to_string(),
            "\"until\" filter expects a duration (e.g., '24h'): time: missing unit in duration \"10\""
        );
        assert_eq!(flags(&["until=1h", "unused-for=2h"]).unwrap_err(), crate::store::filter::FilterError::ConflictingUntil);
        assert_eq!(flags(&["until=1h", "until=2h"]).unwrap_err(), crate::store::filter::FilterError::OneValue("until".into()));
    }
}
