//! How the process allocates: at most two malloc arenas, and large blocks always mapped.
//!
//! glibc gives each thread that allocates concurrently an arena of its own (up to eight per
//! core), and memory freed into one arena is not reused by another. A build allocates on many
//! threads at once (the context walk's, the solver's workers, rayon's), each arena keeps its
//! freed pages, and the resident size grows past what is in use: on the benchmark's
//! 50,000-file context (a one-file edit, OCI export) the heap peaked at 50 MB while the
//! process held 105 MB. With two arenas it held 75 to 88 MB, in the same time (measured
//! alternating, three rounds each); with one, 74 MB, but every thread then waits on one lock.
//!
//! Blocks of 512 KiB and more (the one pass's chunks, 256 KiB to 4 MiB, and its gzip members)
//! are always mapped, so freeing one gives its pages back. glibc's default threshold starts at
//! 128 KiB but rises to the size of each mapped block freed, after which chunks come from the
//! heap and their pages stay: a one-file edit in the 50,000-file context held 113 to 116 MB,
//! with the fixed threshold 100 to 105 MB (same time, measured alternating).

/// Blocks from this size on are mapped on their own.
const MMAP_THRESHOLD: i32 = 512 << 10;

/// Caps the malloc arenas at two and fixes the mapping threshold. Call before any thread exists.
pub fn limit_allocator_arenas() {
    // SAFETY: `mallopt` only sets a parameter of glibc's allocator; with no other thread yet,
    // nothing allocates meanwhile. A refusal (0) leaves the default, which is only bigger.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}
