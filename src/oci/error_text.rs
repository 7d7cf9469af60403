//! How an error is said in one line: the error and its causes, `: `-separated. BuildKit says a
//! failure twice, on the failed vertex (`#5 ERROR: TEXT`) and as the build's last line
//! (`ERROR: failed to solve: TEXT`), and the two say the same TEXT. A RUN step's failure is
//! said first by the sandbox's re-exec'd runner, whose text crosses the process boundary and
//! ends up in those lines. Both `progress` and `sandbox` say it with [`error_text`]; it lives
//! here because `sandbox` imports nothing of the crate but `oci` (its child pulls in nothing
//! else), so one rule serves both sides of the boundary.

use std::error::Error;

/// An error and its causes, `: `-separated, each said once: a message may already end with its
/// source's text (`{0}` over a `#[from]` source), and saying it twice reads as a stutter.
pub fn error_text(error: &dyn Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.ends_with(&text) {
            message = format!("{message}: {text}");
        }
        source = cause.source();
    }
    message
}
