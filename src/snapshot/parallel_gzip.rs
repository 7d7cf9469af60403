//! Gzip on every core: the stream is cut into chunks, each compressed as its own gzip member on
//! the rayon pool by libdeflate (one call for the whole chunk), members written in order. A multi-member gzip file is one valid gzip stream
//! for every reader (RFC 1952; Go's reader, used by containerd and registries, reads all members
//! by default). The output depends only on the input and the level, never on the number of
//! threads, so layer digests stay deterministic. Trade-off: each chunk starts with an empty
//! dictionary, which costs well under 1 % of size.
//!
//! **Chunks are cut by content**, not by offset: a rolling (gear) hash over the stream cuts where
//! its top bits are zero, at least 256 KiB and at most 4 MiB apart (about 768 KiB on average).
//! An edit moves only the cuts near it, so the chunks before and after it are the same bytes as
//! in the layer before the edit, wherever they now lie in the tar.
//!
//! **Chunks seen before are not compressed again.** With the store as [`MemberCache`], a chunk
//! whose digest names a member of an earlier blob (written at the same level by the same
//! compressor, see the store's `gzip_member` table) is copied from that blob, once inflating it
//! gave exactly the chunk, or without inflating it when the blob's bytes were checked and its
//! stat has not changed since (the store's cheap check, as on export): a damaged blob is never
//! copied on. The member is what compressing would write, because the compressor is the same:
//! its name ([`COMPRESSOR`]) includes rbuild's version, and a new version starts afresh. A one-file edit in a 200 MB layer compresses one or
//! two chunks instead of all of them.
//!
//! **libdeflate, not zlib.** Chunks are whole in memory, which is what libdeflate compresses.
//! Measured here, one core, 1 MiB chunks, libdeflate against zlib-rs (flate2's backend) at level
//! 6: shared libraries 92 against 64 MB/s, to 0.358 against 0.371 of their size; Python 104
//! against 70 MB/s, 0.289 against 0.297; Perl 101 against 78 MB/s, 0.236 against 0.246; the
//! benchmark's generated text 98 against 47 MB/s, 0.606 against 0.602. Faster and as small,
//! and still standard gzip (BuildKit's default blob for the 50,000-file benchmark context was
//! 2.6 % larger than zlib-rs level 6's).
//!
//! **Incompressible chunks are stored.** Deflate spends as much time on random bytes (already
//! compressed files, encrypted data) as on text, for nothing: libdeflate level 6 runs at about
//! 100 MB/s a core on random bytes (zlib-rs at 50) and saves 0 %. Before a chunk is compressed,
//! four samples of it (16 KiB each, spread over the chunk) are, at libdeflate's fastest level;
//! when they save less than 2 %, the chunk is written as stored deflate blocks (level 0, at
//! memory speed), which is still standard gzip. A chunk of mixed content whose samples all fell
//! on incompressible parts loses at most those 2 % of its size. The decision depends only on
//! the chunk's bytes, so the output stays deterministic. A stored chunk is not looked up among
//! the members seen before, nor remembered: storing it again costs less than its digest. On the
//! benchmark's 1 GiB random layer, the samples at level 6 and the stored chunks' digests took
//! 1.2 of the one pass's 5.2 CPU-seconds.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use rayon::prelude::*;

use super::layer_tar::{LayerTarError, LayerTarOptions, LayerTarSummary, write_layer_tar_unhashed};
use crate::oci::stage_cpu::{Stage, measure};
use crate::oci::{Cancellable, DiffId, Digest, DigestHasher, FileStamp};
use crate::store::{Store, StoreError};

/// The smallest and the largest chunk, and the hash bits that must be zero for a cut.
const MIN_CHUNK: usize = 256 << 10;
const MAX_CHUNK: usize = 4 << 20;
const CUT_BITS: u32 = 19;
/// How many bytes wait before the pool compresses them, per thread.
const BATCH_PER_THREAD: usize = 2 << 20;
/// The level when none is asked for (the export's, and the one pass's): 6, BuildKit's default.
pub(crate) const DEFAULT_GZIP_LEVEL: u32 = 6;
/// The samples taken of a chunk to judge it, and each one's size.
const SAMPLES: usize = 4;
const SAMPLE: usize = 16 << 10;
/// A chunk whose samples compress to more than this share of their size is stored.
const STORE_ABOVE: f64 = 0.98;
/// The level the samples are compressed at, whatever the blob's: libdeflate's fastest, which
/// finds what makes a chunk worth compressing at any level (repeats and a skewed alphabet) in a
/// fraction of level 6's time on the random bytes it is there to catch.
const SAMPLE_LEVEL: u32 = 1;
/// What wrote a member, beside its level: a member is reused only by the compressor that would
/// write the same bytes, so the name says everything that decides them (which chunks are stored
/// is one).
pub(crate) const COMPRESSOR: &str = concat!("rbuild ", env!("CARGO_PKG_VERSION"), " libdeflate gear-chunks stored-by-level-1-samples");

/// The gear hash's table: 256 fixed pseudo-random words (splitmix64), the same in every build.
const GEAR: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut state: u64 = 0;
    let mut index = 0;
    while index < 256 {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut word = state;
        word = (word ^ (word >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        word = (word ^ (word >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        table[index] = word ^ (word >> 31);
        index += 1;
    }
    table
};

/// Members written before, by the digest of the chunk each holds.
pub(crate) trait MemberCache: Sync {
    /// A member that holds a chunk with this digest at this level, if the cache knows one.
    fn member(&self, chunk: &Digest, level: u32) -> Option<CachedMember>;
}

/// A member from a [`MemberCache`].
pub(crate) struct CachedMember {
    pub bytes: Vec<u8>,
    /// Whether the bytes are known to be the ones written: the store's blob that holds them was
    /// checked against its digest and has the same stat since ([`Store::blob_was_checked`]).
    /// Other members are inflated and compared with the chunk before use.
    pub checked: bool,
}

impl MemberCache for Store {
    fn member(&self, chunk: &Digest, level: u32) -> Option<CachedMember> {
        let (blob, offset, length) = self.database().gzip_member(chunk, level, COMPRESSOR).ok()??;
        // A member is at most a stored chunk: anything larger is no member of ours.
        if length > (MAX_CHUNK + MAX_CHUNK / 16) as u64 {
            return None;
        }
        let file = File::open(self.blob_path(&blob)).ok()?;
        let checked = file.metadata().is_ok_and(|metadata| self.blob_was_checked(&blob, &FileStamp::of(&metadata)));
        let mut bytes = vec![0; length as usize];
        file.read_exact_at(&mut bytes, offset).ok()?;
        Some(CachedMember { bytes, checked })
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum GzipLayerError {
    #[error(transparent)]
    Tar(LayerTarError),
    #[error("gzip failed")]
    Compress(#[source] io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The layer tar of `tree` as a new gzip blob of the store, in one pass: chunks the store has
/// compressed before are copied, and where this blob's members are is recorded for later
/// compressions (a failure to record costs only that reuse, so it is logged). The tar's
/// summary, the blob's digest and size.
///
/// Two threads and the pool: this one walks the tree, reads the files and cuts the tar into
/// chunks; a second one takes the chunks in order, hashes them (the diff id), has the pool
/// compress them a batch at a time, and hashes and writes the members. The walk goes on while a
/// batch is compressed, where one thread did one and then the other. A few chunks wait between
/// them at most. The diff id was the walk's thread's to hash until a one-file edit in the
/// 50,000-file context showed that thread busy and the pool idle.
pub(crate) fn write_gzip_layer(
    store: &Store,
    tree: &Path,
    options: &LayerTarOptions,
    level: u32,
    cancel: &AtomicBool,
) -> Result<(LayerTarSummary, Digest, u64), GzipLayerError> {
    let blob = Cancellable { inner: store.blob_writer()?, cancel };
    let (tarred, compressed) = compress_stream(blob, level, Some(store), |chunks| write_layer_tar_unhashed(tree, chunks, options));
    // The writer's own error says more than the tar's "the compressor stopped".
    let compressed = compressed.map_err(GzipLayerError::Compress)?;
    let summary = tarred.map_err(GzipLayerError::Tar)?.summary(compressed.input_bytes, DiffId::new(compressed.input));
    let (digest, size) = compressed.output.inner.finish()?;
    if let Err(error) = store.database().put_gzip_members(&digest, level, COMPRESSOR, &compressed.members) {
        tracing::warn!(blob = %digest, "failed to record the gzip members of a blob: {error}");
    }
    Ok((summary, digest, size))
}

/// Gzip of what `produce` writes, into `inner`: `produce` runs on this thread and its bytes are
/// cut into chunks here; a second thread takes them in order, has the pool compress them a batch
/// at a time (or copies members of `cache`) and writes the members. What `produce` returned, and
/// the inner writer with the members written (or the writer thread's error).
pub(crate) fn compress_stream<W: Write + Send, T, E>(
    inner: W,
    level: u32,
    cache: Option<&dyn MemberCache>,
    produce: impl FnOnce(&mut dyn Write) -> Result<T, E>,
) -> (Result<T, E>, io::Result<Compressed<W>>) {
    let spare = Spare::default();
    let mut members = MemberWriter::new(inner, level, &spare);
    members.cache = cache;
    std::thread::scope(|scope| {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Vec<u8>>(CHUNKS_IN_FLIGHT);
        let compressing = scope.spawn(move || -> io::Result<_> {
            for chunk in receiver {
                members.push(chunk)?;
            }
            measure(Stage::Compress, || members.finish())
        });
        let mut chunks = ChunkSender { chunker: Chunker::new(&spare), sender };
        let produced = produce(&mut chunks);
        let ChunkSender { chunker, sender } = chunks;
        if let Some(last) = chunker.finish()
            && produced.is_ok()
        {
            // A failed send means the writer stopped: its error is what it returns.
            let _ = sender.send(last);
        }
        // Closing the channel ends the writer's loop.
        drop(sender);
        let compressed = compressing.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (produced, compressed)
    })
}

/// Chunks cut and not yet taken by the writer thread, at most.
const CHUNKS_IN_FLIGHT: usize = 4;

fn compressor_stopped() -> io::Error {
    io::Error::other("the compressor stopped")
}

/// A member written: the digest of the chunk it holds, its offset and length in the output.
pub(crate) type Member = (Digest, u64, u64);

/// What a compression wrote.
pub(crate) struct Compressed<W> {
    /// The output it wrote to.
    pub output: W,
    pub members: Vec<Member>,
    /// The sha256 of the input and its length, taken on the writer thread as the chunks came.
    pub input: Digest,
    pub input_bytes: u64,
}

/// A stream's chunks, each sent to the writer thread as it is cut.
struct ChunkSender<'a> {
    chunker: Chunker<'a>,
    sender: std::sync::mpsc::SyncSender<Vec<u8>>,
}

impl Write for ChunkSender<'_> {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        let sender = &self.sender;
        measure(Stage::Compress, || self.chunker.take(buffer, &mut |chunk| sender.send(chunk).map_err(|_| compressor_stopped())))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Buffers given back after use, for the next chunks and members. A new buffer of a megabyte
/// or more is mapped afresh (see `cli::memory`), and its first touch costs a page fault and a
/// zeroed page every 4 KiB: a tenth of the one pass's CPU on the benchmark's 1 GiB layer.
#[derive(Default)]
struct Spare {
    kept: std::sync::Mutex<Vec<Vec<u8>>>,
}

/// The capacity kept at most: about the chunks in flight of an incompressible layer (the 1 GiB
/// layer's pass took 1.2 CPU-seconds with 16 buffers kept, 1.5 with 8, 2.3 with none). Every
/// byte kept is resident: 12 buffers whatever their size raised the peak RSS of the 50,000-file
/// context's cold build from 76 to 100 MB.
const SPARE_BYTES: usize = 12 << 20;

impl Spare {
    /// An empty buffer, with room for a chunk when it is a new one.
    fn take(&self) -> Vec<u8> {
        let spare = self.kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop();
        spare.unwrap_or_else(|| Vec::with_capacity(MIN_CHUNK * 4))
    }

    fn give(&self, mut buffer: Vec<u8>) {
        let mut kept = self.kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // A dozen buffers at most: summed each time rather than counted beside them.
        if kept.iter().map(Vec::capacity).sum::<usize>() + buffer.capacity() <= SPARE_BYTES {
            buffer.clear();
            kept.push(buffer);
        }
    }
}

/// Cuts a stream into chunks where the gear hash says (see the module docs).
struct Chunker<'a> {
    /// The chunk being filled.
    current: Vec<u8>,
    /// The gear hash of the current chunk's bytes after its first `MIN_CHUNK`.
    hash: u64,
    spare: &'a Spare,
}

impl<'a> Chunker<'a> {
    fn new(spare: &'a Spare) -> Chunker<'a> {
        Chunker { current: spare.take(), hash: 0, spare }
    }

    /// Takes all of `buffer`, handing each chunk it completes to `cut`.
    fn take(&mut self, buffer: &[u8], cut: &mut dyn FnMut(Vec<u8>) -> io::Result<()>) -> io::Result<usize> {
        let mut rest = buffer;
        while !rest.is_empty() {
            // A chunk's first bytes are taken without looking: no cut comes before `MIN_CHUNK`.
            if self.current.len() < MIN_CHUNK {
                let taken = (MIN_CHUNK - self.current.len()).min(rest.len());
                self.current.extend_from_slice(&rest[..taken]);
                rest = &rest[taken..];
                continue;
            }
            let window = &rest[..(MAX_CHUNK - self.current.len()).min(rest.len())];
            let mut hash = self.hash;
            let mut end = None;
            for (index, byte) in window.iter().enumerate() {
                hash = (hash << 1).wrapping_add(GEAR[*byte as usize]);
                if hash >> (64 - CUT_BITS) == 0 {
                    end = Some(index + 1);
                    break;
                }
            }
            let taken = end.unwrap_or(window.len());
            self.current.extend_from_slice(&window[..taken]);
            rest = &rest[taken..];
            self.hash = hash;
            if end.is_some() || self.current.len() == MAX_CHUNK {
                self.hash = 0;
                cut(std::mem::replace(&mut self.current, self.spare.take()))?;
            }
        }
        Ok(buffer.len())
    }

    /// The last chunk, if the stream ended inside one.
    fn finish(self) -> Option<Vec<u8>> {
        (!self.current.is_empty()).then_some(self.current)
    }
}

/// Compresses chunks a batch at a time on the pool and writes the members in order.
struct MemberWriter<'a, W: Write> {
    inner: W,
    level: u32,
    cache: Option<&'a dyn MemberCache>,
    spare: &'a Spare,
    /// Chunks waiting to be compressed and their total size.
    pending: Vec<Vec<u8>>,
    pending_bytes: usize,
    batch_bytes: usize,
    /// Bytes written to `inner`, and the members so far.
    written: u64,
    members: Vec<Member>,
    /// The hash of the chunks taken so far, in order, and their length.
    input: DigestHasher,
    input_bytes: u64,
}

impl<'a, W: Write> MemberWriter<'a, W> {
    fn new(inner: W, level: u32, spare: &'a Spare) -> MemberWriter<'a, W> {
        let batch_bytes = rayon::current_num_threads().max(1) * BATCH_PER_THREAD;
        MemberWriter {
            inner,
            level,
            cache: None,
            spare,
            pending: Vec::new(),
            pending_bytes: 0,
            batch_bytes,
            written: 0,
            members: Vec::new(),
            input: DigestHasher::sha256(),
            input_bytes: 0,
        }
    }

    fn push(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        measure(Stage::Hash, || self.input.update(&chunk));
        self.input_bytes += chunk.len() as u64;
        self.pending_bytes += chunk.len();
        self.pending.push(chunk);
        if self.pending_bytes >= self.batch_bytes {
            self.compress_pending()?;
        }
        Ok(())
    }

    fn compress_pending(&mut self) -> io::Result<()> {
        let (level, cache, spare) = (self.level, self.cache, self.spare);
        let encoded: Vec<io::Result<Encoded>> = self
            .pending
            .par_iter()
            .map(|chunk| {
                // A stored chunk is written at memory speed: it is neither looked up nor
                // remembered, and its digest is not taken (a third of the one pass's hashing on
                // incompressible layers).
                if level == 0 || measure(Stage::Compress, || incompressible(chunk)) {
                    return Ok(Encoded::Stored(measure(Stage::Compress, || libdeflater::crc32(chunk))));
                }
                let digest = measure(Stage::Hash, || Digest::sha256_of(chunk));
                measure(Stage::Compress, || {
                    let cached = cache.and_then(|cache| cache.member(&digest, level));
                    if let Some(member) = cached.filter(|member| member.checked || holds(&member.bytes, chunk, spare)) {
                        return Ok(Encoded::Member(digest, member.bytes));
                    }
                    Ok(Encoded::Member(digest, gzip_member(chunk, level, spare.take())?))
                })
            })
            .collect();
        self.pending_bytes = 0;
        let pending = std::mem::take(&mut self.pending);
        for (chunk, encoded) in pending.into_iter().zip(encoded) {
            let length = match encoded? {
                Encoded::Stored(crc) => write_stored_member(&mut self.inner, &chunk, crc)?,
                Encoded::Member(digest, bytes) => {
                    self.inner.write_all(&bytes)?;
                    self.members.push((digest, self.written, bytes.len() as u64));
                    let length = bytes.len() as u64;
                    self.spare.give(bytes);
                    length
                }
            };
            self.written += length;
            self.spare.give(chunk);
        }
        Ok(())
    }

    /// Compresses what is left; the inner writer and the members written. An empty input
    /// still makes one (empty) member: a valid gzip file.
    fn finish(mut self) -> io::Result<Compressed<W>> {
        if self.pending.is_empty() && self.written == 0 {
            self.pending.push(Vec::new());
        }
        self.compress_pending()?;
        self.inner.flush()?;
        Ok(Compressed { output: self.inner, members: self.members, input: self.input.finish(), input_bytes: self.input_bytes })
    }
}

/// A chunk as the pool left it for the writer: stored (its CRC-32 taken), or a member.
enum Encoded {
    Stored(u32),
    /// The digest of the chunk and the member's bytes.
    Member(Digest, Vec<u8>),
}

/// The gzip header libdeflate writes at level 0: no name, no time, "fastest" (4), OS unknown.
const STORED_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 0xff];

/// Writes `chunk` (whose CRC-32 is `crc`) as a gzip member of stored deflate blocks, around the
/// chunk's own bytes: byte for byte what libdeflate writes at level 0 (blocks of 65,535 bytes,
/// the last one final; an empty chunk is one empty final block), without copying the chunk
/// into a member first. The member's length.
fn write_stored_member(out: &mut dyn Write, chunk: &[u8], crc: u32) -> io::Result<u64> {
    const BLOCK: usize = u16::MAX as usize;
    let blocks = chunk.len().div_ceil(BLOCK).max(1);
    out.write_all(&STORED_HEADER)?;
    for index in 0..blocks {
        let block = &chunk[index * BLOCK..chunk.len().min((index + 1) * BLOCK)];
        let size = block.len() as u16;
        let [low, high] = size.to_le_bytes();
        let [not_low, not_high] = (!size).to_le_bytes();
        out.write_all(&[u8::from(index + 1 == blocks), low, high, not_low, not_high])?;
        out.write_all(block)?;
    }
    out.write_all(&crc.to_le_bytes())?;
    out.write_all(&(chunk.len() as u32).to_le_bytes())?;
    // Header, a 5-byte head per block, the bytes, CRC and size.
    Ok((STORED_HEADER.len() + 5 * blocks + chunk.len() + 8) as u64)
}

/// libdeflate at `level` (0 to 12; 0 stores).
fn compressor(level: u32) -> io::Result<libdeflater::Compressor> {
    let level = libdeflater::CompressionLvl::new(level as i32)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("gzip level {level} is not 0 to 12")))?;
    Ok(libdeflater::Compressor::new(level))
}

/// `chunk` as one gzip member (header, deflate stream, CRC and size), in one call, written
/// into `member` (emptied first).
fn gzip_member(chunk: &[u8], level: u32, mut member: Vec<u8>) -> io::Result<Vec<u8>> {
    let mut compressor = compressor(level)?;
    member.clear();
    member.resize(compressor.gzip_compress_bound(chunk.len()), 0);
    let length = compressor.gzip_compress(chunk, &mut member).map_err(|error| io::Error::other(format!("gzip: {error}")))?;
    member.truncate(length);
    Ok(member)
}

/// Whether `member` inflates to exactly `chunk` (inflated into a spare buffer).
fn holds(member: &[u8], chunk: &[u8], spare: &Spare) -> bool {
    let mut inflated = spare.take();
    inflated.resize(chunk.len(), 0);
    let mut decompressor = libdeflater::Decompressor::new();
    let holds = decompressor.gzip_decompress(member, &mut inflated).is_ok_and(|length| length == chunk.len()) && inflated == chunk;
    spare.give(inflated);
    holds
}

/// Whether deflate would save less than 2 % of `chunk`, judged from samples spread over it
/// (a chunk too small to sample is compressed).
fn incompressible(chunk: &[u8]) -> bool {
    if chunk.len() < SAMPLES * SAMPLE * 4 {
        return false;
    }
    let Ok(mut compressor) = compressor(SAMPLE_LEVEL) else { return false };
    let mut output = vec![0; compressor.deflate_compress_bound(SAMPLE)];
    let stride = chunk.len() / SAMPLES;
    let mut compressed = 0;
    for index in 0..SAMPLES {
        let sample = &chunk[index * stride..index * stride + SAMPLE];
        match compressor.deflate_compress(sample, &mut output) {
            Ok(length) => compressed += length,
            Err(_) => return false,
        }
    }
    compressed as f64 > (SAMPLES * SAMPLE) as f64 * STORE_ABOVE
}

#[cfg(test)]
#[path = "parallel_gzip_tests.rs"]
mod tests;
