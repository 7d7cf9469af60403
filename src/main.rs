//! The `rbuild` binary: parse arguments, run, map the outcome to an exit code.

use clap::Parser;

fn main() {
    let args = rbuild::cli::with_default_subcommand(std::env::args_os().collect());
    let cli = match rbuild::cli::Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() { rbuild::cli::EXIT_USAGE } else { 0 };
            let _ = error.print();
            std::process::exit(code);
        }
    };
    std::process::exit(rbuild::cli::run(cli));
}
