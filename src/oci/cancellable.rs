//! A writer that fails once the build is canceled, so long writes (layer tars, compression,
//! archives) stop promptly on Ctrl-C or a failure elsewhere. Ops and the exporter both write
//! through it.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

pub struct Cancellable<'a, W> {
    pub inner: W,
    pub cancel: &'a AtomicBool,
}

impl<W: io::Write> io::Write for Cancellable<'_, W> {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        if self.cancel.load(Ordering::Relaxed) {
            // Not `Interrupted`: `write_all` retries that kind forever.
            return Err(io::Error::other("canceled"));
        }
        self.inner.write(buffer)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
