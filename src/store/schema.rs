//! The database's schema, as the migrations that make it: `Database::open` applies, in order,
//! those a database has not had yet (`PRAGMA user_version` counts them), so every root, however
//! old, ends with the same tables.

/// Never edit, reorder or remove an entry: `PRAGMA user_version` counts those applied.
pub(super) const MIGRATIONS: &[&str] = &[
    "CREATE TABLE layer (
        diff_id TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        last_used_at INTEGER NOT NULL,
        from_image INTEGER NOT NULL,
        description TEXT NOT NULL
    );
    CREATE TABLE blob (
        digest TEXT PRIMARY KEY,
        diff_id TEXT NOT NULL,
        compression TEXT NOT NULL,
        level INTEGER NOT NULL,
        media_type TEXT NOT NULL,
        size INTEGER NOT NULL,
        last_used_at INTEGER NOT NULL
    );
    CREATE INDEX blob_by_diff_id ON blob (diff_id, compression, level);
    CREATE TABLE record (
        cache_key TEXT PRIMARY KEY,
        description TEXT NOT NULL,
        layers TEXT NOT NULL,
        inputs TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        last_used_at INTEGER NOT NULL
    );
    CREATE TABLE file_hash (
        path TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        mtime_nanos TEXT NOT NULL,
        ctime_nanos TEXT NOT NULL,
        inode INTEGER NOT NULL,
        device INTEGER NOT NULL,
        digest TEXT NOT NULL
    );",
    // Registry tags resolved to manifest digests: a second build needs no network, `--pull`
    // resolves again. The manifest and config are blobs in the store.
    "CREATE TABLE image_tag (
        reference TEXT PRIMARY KEY,
        manifest_digest TEXT NOT NULL,
        config_digest TEXT NOT NULL,
        resolved_at INTEGER NOT NULL
    );",
    // `ADD <url>` downloads: the validators to ask the server whether the file changed, the
    // content's digest (the step's cache key) and the layer holding the file.
    "CREATE TABLE http_source (
        url TEXT PRIMARY KEY,
        etag TEXT,
        last_modified TEXT,
        digest TEXT NOT NULL,
        diff_id TEXT NOT NULL,
        fetched_at INTEGER NOT NULL
    );",
    // Archives written for `-o type=oci|docker`: what was written (an identity of the layout)
    // and the file's stat right after, so an identical export to an untouched file is skipped.
    "CREATE TABLE output_file (
        path TEXT PRIMARY KEY,
        identity TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime_nanos TEXT NOT NULL,
        ctime_nanos TEXT NOT NULL,
        inode INTEGER NOT NULL,
        device INTEGER NOT NULL
    );",
    // What made a layer, when `cache du` names it apart from `regular` and `source.image`
    // (`source.git.checkout`); empty for the others, so the rows from before need nothing.
    "ALTER TABLE layer ADD COLUMN kind TEXT NOT NULL DEFAULT '';",
    // The gzip members of blobs this store wrote, by the digest of the bytes each holds, the
    // level and the compressor (`snapshot::parallel_gzip`): a chunk seen before is copied from
    // the blob that has it instead of being compressed again.
    "CREATE TABLE gzip_member (
        chunk TEXT NOT NULL,
        level INTEGER NOT NULL,
        compressor TEXT NOT NULL,
        blob TEXT NOT NULL,
        offset INTEGER NOT NULL,
        length INTEGER NOT NULL,
        PRIMARY KEY (chunk, level, compressor)
    );",
    // The last layer each COPY step made (by vertex digest) and the content digests of the
    // context files it wrote there (`ops::incremental_copy`): the step's next run links the files
    // that did not change instead of copying them.
    "CREATE TABLE copy_snapshot (
        step TEXT PRIMARY KEY,
        diff_id TEXT NOT NULL,
        files BLOB NOT NULL
    );",
    // Blob files whose bytes matched their digest when they were written or last read whole,
    // with their stat then (`Store::open_blob`): an export copies such a blob without hashing it
    // again while its stat is the same.
    "CREATE TABLE blob_check (
        digest TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        mtime_nanos TEXT NOT NULL,
        ctime_nanos TEXT NOT NULL,
        inode INTEGER NOT NULL,
        device INTEGER NOT NULL
    );",
    // The remembered digests of context files moved to a file of their own (`file_hashes`):
    // read whole by every build, as rows they cost a no-op rebuild of a 50,000-file context
    // 60 ms of CPU, and their 16 MB the check at every open. A root that had them reads its
    // context files once more.
    "DROP TABLE file_hash;",
];
