//! The history of a stage's image, shared with the stages it builds on.
//!
//! Role: a stage built `FROM` another stage starts with that stage's history and adds its own
//! entries. Copying the whole history into every stage made a chain of n stages hold n²/2
//! entries (13,000 chained stages: 14 GB and 40 s). A [`HistoryChain`] is a persistent list of
//! per-stage segments instead: a stage keeps its own entries and a shared pointer to its
//! parent's chain, and the target stage's history is flattened once, at the end.
//!
//! Invariant: [`HistoryChain::flatten`] gives the entries oldest first, exactly as if each stage
//! had copied its parent's history and appended its own.

use std::sync::Arc;

use crate::oci::image_config::History;

/// Oldest-first history entries, as a chain of shared segments.
#[derive(Debug, Clone, Default)]
pub(super) struct HistoryChain {
    last: Option<Arc<Segment>>,
}

#[derive(Debug)]
struct Segment {
    entries: Vec<History>,
    earlier: HistoryChain,
}

impl HistoryChain {
    /// This chain followed by `entries` (a stage's own); the chain itself is shared, not copied.
    pub(super) fn extended(&self, entries: Vec<History>) -> HistoryChain {
        if entries.is_empty() {
            return self.clone();
        }
        HistoryChain { last: Some(Arc::new(Segment { entries, earlier: self.clone() })) }
    }

    /// Every entry, oldest first.
    pub(super) fn flatten(&self) -> Vec<History> {
        let mut segments = Vec::new();
        let mut current = self.last.as_ref();
        while let Some(segment) = current {
            segments.push(segment);
            current = segment.earlier.last.as_ref();
        }
        segments.iter().rev().flat_map(|segment| segment.entries.iter().cloned()).collect()
    }
}

impl Drop for Segment {
    /// Drops a long chain without recursing once per segment (13,000 stages would overflow).
    fn drop(&mut self) {
        let mut next = self.earlier.last.take();
        while let Some(segment) = next {
            next = match Arc::try_unwrap(segment) {
                Ok(mut only_owner) => only_owner.earlier.last.take(),
                Err(_) => None,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(text: &str) -> History {
        History { created_by: Some(text.into()), ..Default::default() }
    }

    #[test]
    fn chains_flatten_oldest_first_and_share_their_parents() {
        let base = HistoryChain::default().extended(vec![entry("a"), entry("b")]);
        let left = base.extended(vec![entry("c")]);
        let right = base.extended(vec![]).extended(vec![entry("d")]);
        let names = |chain: &HistoryChain| chain.flatten().into_iter().map(|entry| entry.created_by.unwrap()).collect::<Vec<_>>();
        assert_eq!(names(&left), ["a", "b", "c"]);
        assert_eq!(names(&right), ["a", "b", "d"]);
        assert_eq!(names(&base), ["a", "b"]);
    }

    #[test]
    fn a_long_chain_drops_without_deep_recursion() {
        let mut chain = HistoryChain::default();
        for index in 0..200_000 {
            chain = chain.extended(vec![entry(&index.to_string())]);
        }
        assert_eq!(chain.flatten().len(), 200_000);
        drop(chain);
    }
}
