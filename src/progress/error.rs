//! How a failure is said. BuildKit says a failure twice, on the failed vertex
//! (`#5 ERROR: TEXT`, the live view's and rawjson's error) and as the build's last line
//! (`ERROR: failed to solve: TEXT`), and the two say the same TEXT. Both come from
//! [`error_text`] (`oci::error_text`, which the sandbox's runner uses too): a failed
//! [`Task`](super::Task) sends it, and `cli::build` prints the last line with
//! [`failed_to_solve`] from the same error, so they cannot drift apart.

pub(crate) use crate::oci::error_text;

/// The last line of a failed build, for `text` from [`error_text`] (or an error that is text
/// already, said the same on its vertex).
pub(crate) fn failed_to_solve(text: &str) -> String {
    format!("ERROR: failed to solve: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("failed to write `x`")]
        Write(#[source] std::io::Error),
        #[error("{0}")]
        Repeats(#[from] std::io::Error),
    }

    #[test]
    fn causes_are_joined_and_said_once() {
        let write = Outer::Write(std::io::Error::other("disk full"));
        assert_eq!(error_text(&write), "failed to write `x`: disk full");
        let repeats = Outer::Repeats(std::io::Error::other("not found"));
        assert_eq!(error_text(&repeats), "not found");
        assert_eq!(failed_to_solve(&error_text(&write)), "ERROR: failed to solve: failed to write `x`: disk full");
    }
}
