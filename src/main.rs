//! The `rbuild` binary: parse arguments, run, map the outcome to an exit code.

// Errors and warnings from before `cli` runs (a habit refused, namespaces not entered) go to
// stderr; a write that fails (stderr closed) is dropped: the exit code tells the outcome.

use std::io::Write as _;

use clap::Parser;

fn main() {
    rbuild::cli::memory::limit_allocator_arenas();
    let raw: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // Before any thread exists: the hidden step runner never returns; otherwise rbuild enters
    // its own user and mount namespace (re-exec when not root).
    rbuild::sandbox::maybe_run_step_child(&raw);
    if let Some(code) = rbuild::cli::completion::maybe_list_stages(&raw) {
        std::process::exit(code);
    }
    // A buildx habit is a usage error: said before entering any namespace (rootless, that is a
    // fork, newuidmap and a re-exec for nothing).
    if let Some(sentence) = rbuild::cli::habits::check(&raw) {
        let _ = writeln!(std::io::stderr(), "ERROR: {sentence}");
        std::process::exit(rbuild::cli::EXIT_USAGE);
    }
    if rbuild::cli::needs_sandbox(&raw)
        && let Err(error) = rbuild::sandbox::enter(&raw)
    {
        let _ = writeln!(std::io::stderr(), "ERROR: {error}");
        std::process::exit(rbuild::cli::EXIT_FAILED);
    }
    // Still single-threaded, in rbuild's namespaces: the process that forks step runners.
    if rbuild::cli::may_run_steps(&raw) {
        rbuild::sandbox::start_fork_server();
    }
    let (raw, ignored) = rbuild::cli::habits::strip_ignored(raw);
    for warning in ignored {
        let _ = writeln!(std::io::stderr(), "WARNING: {warning}");
    }
    let args = rbuild::cli::with_default_subcommand(raw);
    let cli = match rbuild::cli::Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() { rbuild::cli::EXIT_USAGE } else { 0 };
            let _ = error.print();
            std::process::exit(code);
        }
    };
    let code = rbuild::cli::run(cli);
    rbuild::sandbox::stop_fork_server();
    std::process::exit(code);
}
