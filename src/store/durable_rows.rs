//! Rows that stand for files: written only once those files are on disk, on a thread of their
//! own while a solve runs.
//!
//! A snapshot gets its row only after its files were synced (the root's invariant, `super`):
//! a crash must never leave a row for a half-written snapshot. Synced on the step's path, that
//! was a `syncfs` and a transaction or three for every step (0.8 ms of a trivial one, measured);
//! while a solve runs, [`DurableRows`] takes the rows instead, and its writer
//! ([`super::Store::write_durable_rows`], a thread of the solve) syncs the root's filesystem once
//! for everything that came meanwhile and then writes the rows in one transaction. The snapshot
//! is in place at once (renamed, not yet synced): the next step mounts it; only the rows wait.
//!
//! Invariants: rows are written in the order they came (a record after its layers); a layer
//! whose row waits here is known to this process as if the row were written
//! ([`super::Store::layer_row`]) and its snapshot trusted (another process sees a snapshot
//! without a row, which it does not trust: a kill loses only the rows, and the snapshot is
//! garbage); the solve ends only after its writer wrote everything.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};

use super::{BlobRow, DatabaseError, LayerRow, RecordRow};
use crate::oci::DiffId;

/// A row to write once its files are synced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingRow {
    Layer(LayerRow),
    Blob(BlobRow),
    Record(RecordRow),
}

#[derive(Default)]
struct State {
    /// A writer is running: rows wait here.
    deferring: bool,
    /// The writer is to write what is left and stop.
    closing: bool,
    waiting: Vec<PendingRow>,
    /// The layers among the rows waiting or being written: how many such rows each has, and
    /// the first of them.
    pending_layers: HashMap<DiffId, (usize, LayerRow)>,
}

/// The rows waiting for their files' sync; see the module docs.
#[derive(Default)]
pub struct DurableRows {
    state: Mutex<State>,
    changed: Condvar,
}

impl DurableRows {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes `rows` when a writer runs; else gives them back, to be written now.
    pub(super) fn take(&self, rows: Vec<PendingRow>) -> Option<Vec<PendingRow>> {
        let mut state = self.state();
        if !state.deferring {
            return Some(rows);
        }
        for row in &rows {
            if let PendingRow::Layer(layer) = row {
                state.pending_layers.entry(layer.diff_id.clone()).or_insert_with(|| (0, layer.clone())).0 += 1;
            }
        }
        state.waiting.extend(rows);
        self.changed.notify_all();
        None
    }

    /// Whether rows wait for a writer now.
    pub(super) fn deferring(&self) -> bool {
        self.state().deferring
    }

    /// The row of the layer `diff_id` that waits here, if one does.
    pub(super) fn layer(&self, diff_id: &DiffId) -> Option<LayerRow> {
        self.state().pending_layers.get(diff_id).map(|(_, row)| row.clone())
    }

    /// From now on, rows wait for the writer.
    pub(super) fn start(&self) {
        let mut state = self.state();
        state.deferring = true;
        state.closing = false;
    }

    /// Asks the writer to write what is left and stop.
    pub(super) fn close(&self) {
        self.state().closing = true;
        self.changed.notify_all();
    }

    /// The writer's loop: waits for rows, then has `write` sync and write them (all that came
    /// meanwhile at once), until [`DurableRows::close`]; then rows are written at once again.
    /// The first error is returned at the end; the rows of a failed write are dropped (their
    /// snapshots are garbage, a cache miss next time).
    pub(super) fn write_until_closed(
        &self,
        mut write: impl FnMut(&[PendingRow]) -> Result<(), DatabaseError>,
    ) -> Result<(), DatabaseError> {
        let mut first_error = None;
        loop {
            let rows = {
                let mut state = self.state();
                while state.waiting.is_empty() && !state.closing {
                    state = self.changed.wait(state).unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                if state.waiting.is_empty() {
                    state.deferring = false;
                    break;
                }
                std::mem::take(&mut state.waiting)
            };
            if let Err(error) = write(&rows) {
                first_error.get_or_insert(error);
            }
            let mut state = self.state();
            for row in &rows {
                if let PendingRow::Layer(layer) = row
                    && let Some((count, _)) = state.pending_layers.get_mut(&layer.diff_id)
                {
                    *count -= 1;
                    if *count == 0 {
                        state.pending_layers.remove(&layer.diff_id);
                    }
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(hex: char) -> LayerRow {
        LayerRow::example(DiffId::parse(&format!("sha256:{}", hex.to_string().repeat(64))).unwrap())
    }

    #[test]
    fn without_a_writer_rows_are_given_back() {
        let rows = DurableRows::default();
        let given = vec![PendingRow::Layer(layer('a'))];
        assert_eq!(rows.take(given.clone()), Some(given));
        assert_eq!(rows.layer(&layer('a').diff_id), None);
    }

    #[test]
    fn a_writer_gets_every_row_in_order_and_the_layers_wait_until_written() {
        let rows = DurableRows::default();
        rows.start();
        let written = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            let writer = scope.spawn(|| {
                rows.write_until_closed(|batch| {
                    written.lock().unwrap().extend(batch.iter().cloned());
                    Ok(())
                })
            });
            assert_eq!(rows.take(vec![PendingRow::Layer(layer('a')), PendingRow::Layer(layer('b'))]), None);
            assert_eq!(rows.take(vec![PendingRow::Layer(layer('c'))]), None);
            rows.close();
            writer.join().unwrap().unwrap();
        });
        let written = written.into_inner().unwrap();
        assert_eq!(written, ['a', 'b', 'c'].map(|hex| PendingRow::Layer(layer(hex))));
        for hex in ['a', 'b', 'c'] {
            assert_eq!(rows.layer(&layer(hex).diff_id), None);
        }
        // Closed: rows are written at once again.
        assert!(rows.take(vec![PendingRow::Layer(layer('d'))]).is_some());
    }

    #[test]
    fn a_waiting_layer_is_known_and_an_error_is_returned_at_the_end() {
        let rows = DurableRows::default();
        rows.start();
        assert_eq!(rows.take(vec![PendingRow::Layer(layer('a'))]), None);
        assert_eq!(rows.layer(&layer('a').diff_id), Some(layer('a')));
        rows.close();
        let error = rows.write_until_closed(|_| Err(DatabaseError::TooNew { found: 9, known: 1 })).unwrap_err();
        assert!(matches!(error, DatabaseError::TooNew { .. }));
        assert_eq!(rows.layer(&layer('a').diff_id), None);
    }
}
