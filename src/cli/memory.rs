//! How the process allocates: at most two malloc arenas.
//!
//! glibc gives each thread that allocates concurrently an arena of its own (up to eight per
//! core), and memory freed into one arena is not reused by another. A build allocates on many
//! threads at once (the context walk's, the solver's workers, rayon's), each arena keeps its
//! freed pages, and the resident size grows past what is in use: on the benchmark's
//! 50,000-file context (a one-file edit, OCI export) the heap peaked at 50 MB while the
//! process held 105 MB. With two arenas it held 75 to 88 MB, in the same time (measured
//! alternating, three rounds each); with one, 74 MB, but every thread then waits on one lock.

/// Caps the malloc arenas at two. Call before any thread exists.
pub fn limit_allocator_arenas() {
    // SAFETY: `mallopt` only sets a parameter of glibc's allocator; with no other thread yet,
    // nothing allocates meanwhile. A refusal (0) leaves the default, which is only bigger.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
