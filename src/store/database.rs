//! The SQLite database of the state root: cache records, layers, blobs, file hashes.
//!
//! WAL mode, a 30 s busy timeout, and every write in a short `BEGIN IMMEDIATE` transaction, so
//! several rbuild processes can share one root. No transaction is ever held across a step or a
//! download: callers do their slow work first and then write a row.
//! A row whose file is missing is a cache miss (the caller checks); a file without a row is
//! garbage that `prune` collects.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::oci::FileStamp;

/// Never edit, reorder or remove an entry: `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
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
];

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("failed to open the cache database `{path}`")]
    Open { path: String, source: rusqlite::Error },
    #[error("failed to migrate the cache database to version {version}")]
    Migrate { version: usize, source: rusqlite::Error },
    #[error("cache database is version {found}, newer than this rbuild understands ({known})")]
    TooNew { found: usize, known: usize },
    #[error("cache database query failed")]
    Query(#[from] rusqlite::Error),
    #[error("the cache database `{path}` is damaged: {reason}")]
    Damaged { path: String, reason: String },
}

/// Whether SQLite says the file is not a sound database (as opposed to busy, full, or denied).
fn is_damage(error: &rusqlite::Error) -> bool {
    matches!(error.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase))
}

/// A cache record: the result of one vertex, by cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRow {
    pub cache_key: String,
    pub description: String,
    /// The diff ids of the result's layers, bottom first.
    pub layers: Vec<String>,
    /// What went into the key, by name, for `cache why`.
    pub inputs: Vec<(String, String)>,
    pub created_at: i64,
    pub last_used_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRow {
    pub diff_id: String,
    pub size: u64,
    pub created_at: i64,
    pub last_used_at: i64,
    pub from_image: bool,
    /// The step that made it, for `cache du --verbose`.
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRow {
    pub digest: String,
    pub diff_id: String,
    pub compression: String,
    pub level: i64,
    pub media_type: String,
    pub size: u64,
    pub last_used_at: i64,
}

impl BlobRow {
    /// A manifest's or config's row: a blob that is no layer (no diff id, not compressed).
    pub fn metadata(digest: String, size: u64, media_type: &str, now: i64) -> BlobRow {
        BlobRow {
            digest,
            diff_id: String::new(),
            compression: "none".into(),
            level: 0,
            media_type: media_type.into(),
            size,
            last_used_at: now,
        }
    }
}

/// A file downloaded for `ADD <url>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSourceRow {
    pub url: String,
    /// The server's `ETag`, to revalidate with `If-None-Match`.
    pub etag: Option<String>,
    /// The server's `Last-Modified`, as sent.
    pub last_modified: Option<String>,
    /// `sha256:` of the content.
    pub digest: String,
    /// The layer holding the file.
    pub diff_id: String,
    pub fetched_at: i64,
}

/// An archive rbuild wrote, as it was right after the write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFileRow {
    /// What was written: the exporter's identity of the archive's content.
    pub identity: String,
    pub stamp: FileStamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHashRow {
    pub stamp: FileStamp,
    pub digest: String,
}

/// A stamp from the columns `size, mtime_nanos, ctime_nanos, inode, device` starting at `first`
/// (times as decimal text: i128 does not fit SQLite's integers).
fn stamp_at(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<FileStamp> {
    let (mtime, ctime): (String, String) = (row.get(first + 1)?, row.get(first + 2)?);
    Ok(FileStamp {
        size: row.get::<_, i64>(first)? as u64,
        mtime_nanos: mtime.parse().unwrap_or(-1),
        ctime_nanos: ctime.parse().unwrap_or(-1),
        inode: row.get::<_, i64>(first + 3)? as u64,
        device: row.get::<_, i64>(first + 4)? as u64,
    })
}

pub struct Database {
    connection: Connection,
}

impl Database {
    /// Opens (or creates) the database and checks it: a damaged file is
    /// [`DatabaseError::Damaged`], for the store to move aside. The check (`quick_check`) reads
    /// every page: about 50 ms for 200,000 file hashes, far less for usual roots.
    pub fn open(path: &Path) -> Result<Database, DatabaseError> {
        let damaged = |reason: String| DatabaseError::Damaged { path: path.display().to_string(), reason };
        let open_error = |source: rusqlite::Error| {
            if is_damage(&source) { damaged(source.to_string()) } else { DatabaseError::Open { path: path.display().to_string(), source } }
        };
        let connection = Connection::open(path).map_err(open_error)?;
        connection.busy_timeout(Duration::from_secs(30)).map_err(open_error)?;
        connection.pragma_update(None, "journal_mode", "WAL").map_err(open_error)?;
        connection.pragma_update(None, "synchronous", "NORMAL").map_err(open_error)?;
        let problems: Vec<String> = {
            let mut statement = connection.prepare("PRAGMA quick_check(3)").map_err(open_error)?;
            let rows = statement.query_map([], |row| row.get::<_, String>(0)).map_err(open_error)?;
            rows.collect::<Result<_, _>>().map_err(open_error)?
        };
        if problems != ["ok"] {
            return Err(damaged(problems.join("; ")));
        }
        let mut database = Database { connection };
        database.migrate().map_err(|error| match error {
            DatabaseError::Migrate { source, .. } | DatabaseError::Query(source) if is_damage(&source) => damaged(source.to_string()),
            other => other,
        })?;
        Ok(database)
    }

    fn migrate(&mut self) -> Result<(), DatabaseError> {
        let transaction = self.connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let applied = transaction.pragma_query_value(None, "user_version", |row| row.get::<_, i64>(0))? as usize;
        if applied > MIGRATIONS.len() {
            return Err(DatabaseError::TooNew { found: applied, known: MIGRATIONS.len() });
        }
        for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
            let version = index + 1;
            let version_number = version as i64;
            transaction.execute_batch(migration).map_err(|source| DatabaseError::Migrate { version, source })?;
            transaction.pragma_update(None, "user_version", version_number).map_err(|source| DatabaseError::Migrate { version, source })?;
        }
        transaction.commit()?;
        Ok(())
    }

    fn write<T>(&mut self, body: impl FnOnce(&rusqlite::Transaction) -> rusqlite::Result<T>) -> Result<T, DatabaseError> {
        let transaction = self.connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = body(&transaction)?;
        transaction.commit()?;
        Ok(value)
    }

    pub fn record(&self, cache_key: &str) -> Result<Option<RecordRow>, DatabaseError> {
        let row = self
            .connection
            .query_row(
                "SELECT cache_key, description, layers, inputs, created_at, last_used_at
                 FROM record WHERE cache_key = ?1",
                params![cache_key],
                record_from_row,
            )
            .optional()?;
        Ok(row)
    }

    pub fn records(&self) -> Result<Vec<RecordRow>, DatabaseError> {
        let mut statement = self.connection.prepare(
            "SELECT cache_key, description, layers, inputs, created_at, last_used_at
             FROM record ORDER BY last_used_at DESC, cache_key",
        )?;
        let rows = statement.query_map([], record_from_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Records with the same description (the same Dockerfile step), newest first: the
    /// candidates `cache why` compares a miss against.
    pub fn records_described(&self, description: &str) -> Result<Vec<RecordRow>, DatabaseError> {
        let mut statement = self.connection.prepare(
            "SELECT cache_key, description, layers, inputs, created_at, last_used_at
             FROM record WHERE description = ?1 ORDER BY created_at DESC LIMIT 5",
        )?;
        let rows = statement.query_map(params![description], record_from_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn put_record(&mut self, record: &RecordRow) -> Result<(), DatabaseError> {
        let layers = serde_json::to_string(&record.layers).unwrap_or_default();
        let inputs = serde_json::to_string(&record.inputs).unwrap_or_default();
        self.write(|transaction| {
            transaction.execute(
                "INSERT INTO record (cache_key, description, layers, inputs, created_at, last_used_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (cache_key) DO UPDATE SET last_used_at = excluded.last_used_at",
                params![record.cache_key, record.description, layers, inputs, record.created_at, record.last_used_at],
            )
        })?;
        Ok(())
    }

    pub fn touch_record(&mut self, cache_key: &str, now: i64) -> Result<(), DatabaseError> {
        self.write(|transaction| {
            transaction.execute("UPDATE record SET last_used_at = ?2 WHERE cache_key = ?1", params![cache_key, now])?;
            transaction.execute(
                "UPDATE layer SET last_used_at = ?2 WHERE diff_id IN
                 (SELECT value FROM json_each((SELECT layers FROM record WHERE cache_key = ?1)))",
                params![cache_key, now],
            )
        })?;
        Ok(())
    }

    /// Drops the rows that stand for nothing in the store: records naming a layer the store
    /// does not have (an imported cache hit whose layers were never fetched), and layer blobs
    /// whose layer is gone (a lazy layer's blob fetched for an export).
    pub fn delete_unbacked(&mut self) -> Result<(), DatabaseError> {
        self.write(|transaction| {
            transaction.execute(
                "DELETE FROM record WHERE EXISTS (SELECT 1 FROM json_each(record.layers)
                 WHERE value NOT IN (SELECT diff_id FROM layer))",
                [],
            )?;
            transaction.execute("DELETE FROM blob WHERE diff_id != '' AND diff_id NOT IN (SELECT diff_id FROM layer)", [])
        })?;
        Ok(())
    }

    pub fn delete_record(&mut self, cache_key: &str) -> Result<(), DatabaseError> {
        self.write(|transaction| transaction.execute("DELETE FROM record WHERE cache_key = ?1", params![cache_key]))?;
        Ok(())
    }

    pub fn layer(&self, diff_id: &str) -> Result<Option<LayerRow>, DatabaseError> {
        let row = self
            .connection
            .query_row(
                "SELECT diff_id, size, created_at, last_used_at, from_image, description FROM layer WHERE diff_id = ?1",
                params![diff_id],
                layer_from_row,
            )
            .optional()?;
        Ok(row)
    }

    pub fn layers(&self) -> Result<Vec<LayerRow>, DatabaseError> {
        let mut statement = self.connection.prepare(
            "SELECT diff_id, size, created_at, last_used_at, from_image, description FROM layer
             ORDER BY last_used_at DESC, diff_id",
        )?;
        let rows = statement.query_map([], layer_from_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Inserts a layer, or refreshes its use time when it is already known (the first
    /// creation time wins: it is the layer's history timestamp).
    pub fn put_layer(&mut self, layer: &LayerRow) -> Result<(), DatabaseError> {
        self.write(|transaction| {
            transaction.execute(
                "INSERT INTO layer (diff_id, size, created_at, last_used_at, from_image, description)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (diff_id) DO UPDATE SET last_used_at = excluded.last_used_at,
                   from_image = max(from_image, excluded.from_image)",
                params![layer.diff_id, layer.size as i64, layer.created_at, layer.last_used_at, layer.from_image, layer.description],
            )
        })?;
        Ok(())
    }

    pub fn delete_layer(&mut self, diff_id: &str) -> Result<(), DatabaseError> {
        self.write(|transaction| {
            transaction
                .execute("DELETE FROM record WHERE EXISTS (SELECT 1 FROM json_each(record.layers) WHERE value = ?1)", params![diff_id])?;
            transaction.execute("DELETE FROM layer WHERE diff_id = ?1", params![diff_id])
        })?;
        Ok(())
    }

    /// The blob of a layer in a given compression, if one was made before: a layer is never
    /// recompressed to a new digest.
    pub fn blob(&self, digest: &str) -> Result<Option<BlobRow>, DatabaseError> {
        let row = self
            .connection
            .query_row(
                "SELECT digest, diff_id, compression, level, media_type, size, last_used_at FROM blob WHERE digest = ?1",
                params![digest],
                blob_from_row,
            )
            .optional()?;
        Ok(row)
    }

    pub fn blob_for(&self, diff_id: &str, compression: &str, level: i64) -> Result<Option<BlobRow>, DatabaseError> {
        let row = self
            .connection
            .query_row(
                "SELECT digest, diff_id, compression, level, media_type, size, last_used_at FROM blob
                 WHERE diff_id = ?1 AND compression = ?2 AND level = ?3
                 ORDER BY digest LIMIT 1",
                params![diff_id, compression, level],
                blob_from_row,
            )
            .optional()?;
        Ok(row)
    }

    pub fn blobs(&self) -> Result<Vec<BlobRow>, DatabaseError> {
        let mut statement = self.connection.prepare(
            "SELECT digest, diff_id, compression, level, media_type, size, last_used_at FROM blob
             ORDER BY last_used_at DESC, digest",
        )?;
        let rows = statement.query_map([], blob_from_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn put_blob(&mut self, blob: &BlobRow) -> Result<(), DatabaseError> {
        self.write(|transaction| {
            transaction.execute(
                "INSERT INTO blob (digest, diff_id, compression, level, media_type, size, last_used_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (digest) DO UPDATE SET last_used_at = excluded.last_used_at",
                params![blob.digest, blob.diff_id, blob.compression, blob.level, blob.media_type, blob.size as i64, blob.last_used_at],
            )
        })?;
        Ok(())
    }

    pub fn delete_blob(&mut self, digest: &str) -> Result<(), DatabaseError> {
        self.write(|transaction| transaction.execute("DELETE FROM blob WHERE digest = ?1", params![digest]))?;
        Ok(())
    }

    /// The manifest and config digests a registry reference resolved to, and when.
    pub fn image_tag(&self, reference: &str) -> Result<Option<(String, String, i64)>, DatabaseError> {
        let row = self
            .connection
            .query_row(
                "SELECT manifest_digest, config_digest, resolved_at FROM image_tag WHERE reference = ?1",
                params![reference],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()?;
        Ok(row)
    }

    /// Every resolved registry reference with its manifest digest.
    pub fn image_tags(&self) -> Result<Vec<(String, String)>, DatabaseError> {
        let mut statement = self.connection.prepare("SELECT reference, manifest_digest FROM image_tag ORDER BY reference")?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The manifests and configs of resolved registry references: what a build needs to start
    /// from those images without a registry.
    pub fn image_tag_blobs(&self) -> Result<std::collections::HashSet<String>, DatabaseError> {
        let mut statement = self.connection.prepare("SELECT manifest_digest, config_digest FROM image_tag")?;
        let mut digests = std::collections::HashSet::new();
        for row in statement.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))? {
            let (manifest, config) = row?;
            digests.insert(manifest);
            digests.insert(config);
        }
        Ok(digests)
    }

    /// Forgets the references resolved to a manifest or config that is being removed.
    pub fn delete_image_tags_using(&mut self, digest: &str) -> Result<(), DatabaseError> {
        self.write(|transaction| {
            transaction.execute("DELETE FROM image_tag WHERE manifest_digest = ?1 OR config_digest = ?1", params![digest])
        })?;
        Ok(())
    }

    pub fn put_image_tag(&mut self, reference: &str, manifest_digest: &str, config_digest: &str, now: i64) -> Result<(), DatabaseError> {
        self.write(|transaction| {
            transaction.execute(
                "INSERT OR REPLACE INTO image_tag (reference, manifest_digest, config_digest, resolved_at) VALUES (?1, ?2, ?3, ?4)",
                params![reference, manifest_digest, config_digest, now],
            )
        })?;
        Ok(())
    }

    pub fn http_source(&self, url: &str) -> Result<Option<HttpSourceRow>, DatabaseError> {
        Ok(self
            .connection
            .query_row(
                "SELECT url, etag, last_modified, digest, diff_id, fetched_at FROM http_source WHERE url = ?1",
                params![url],
                |row| {
                    Ok(HttpSourceRow {
                        url: row.get(0)?,
                        etag: row.get(1)?,
                        last_modified: row.get(2)?,
                        digest: row.get(3)?,
                        diff_id: row.get(4)?,
                        fetched_at: row.get(5)?,
                    })
                },
            )
            .optional()?)
    }

    pub fn put_http_source(&mut self, row: &HttpSourceRow) -> Result<(), DatabaseError> {
        self.write(|transaction| {
            transaction.execute(
                "INSERT OR REPLACE INTO http_source (url, etag, last_modified, digest, diff_id, fetched_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![row.url, row.etag, row.last_modified, row.digest, row.diff_id, row.fetched_at],
            )
        })?;
        Ok(())
    }

    pub fn output_file(&self, path: &str) -> Result<Option<OutputFileRow>, DatabaseError> {
        Ok(self
            .connection
            .query_row(
                "SELECT identity, size, mtime_nanos, ctime_nanos, inode, device FROM output_file WHERE path = ?1",
                params![path],
                |row| Ok(OutputFileRow { identity: row.get(0)?, stamp: stamp_at(row, 1)? }),
            )
            .optional()?)
    }

    /// Remembers what was written at `path`; `None` forgets it (the file is being replaced).
    pub fn put_output_file(&mut self, path: &str, row: Option<&OutputFileRow>) -> Result<(), DatabaseError> {
        self.write(|transaction| match row {
            Some(row) => transaction.execute(
                "INSERT OR REPLACE INTO output_file (path, identity, size, mtime_nanos, ctime_nanos, inode, device)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    path,
                    row.identity,
                    row.stamp.size as i64,
                    row.stamp.mtime_nanos.to_string(),
                    row.stamp.ctime_nanos.to_string(),
                    row.stamp.inode as i64,
                    row.stamp.device as i64
                ],
            ),
            None => transaction.execute("DELETE FROM output_file WHERE path = ?1", params![path]),
        })?;
        Ok(())
    }

    /// Every remembered file hash, by absolute path.
    pub fn all_file_hashes(&self) -> Result<std::collections::HashMap<String, FileHashRow>, DatabaseError> {
        let mut statement = self.connection.prepare("SELECT path, size, mtime_nanos, ctime_nanos, inode, device, digest FROM file_hash")?;
        let rows =
            statement.query_map([], |row| Ok((row.get::<_, String>(0)?, FileHashRow { stamp: stamp_at(row, 1)?, digest: row.get(6)? })))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Stores many file hashes in one transaction (one per build, after hashing).
    pub fn put_file_hashes(&mut self, rows: &[(String, FileHashRow)]) -> Result<(), DatabaseError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.write(|transaction| {
            let mut statement = transaction.prepare(
                "INSERT OR REPLACE INTO file_hash (path, size, mtime_nanos, ctime_nanos, inode, device, digest)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for (path, row) in rows {
                statement.execute(params![
                    path,
                    row.stamp.size as i64,
                    row.stamp.mtime_nanos.to_string(),
                    row.stamp.ctime_nanos.to_string(),
                    row.stamp.inode as i64,
                    row.stamp.device as i64,
                    row.digest
                ])?;
            }
            Ok(())
        })
    }

    pub fn clear_file_hashes(&mut self) -> Result<(), DatabaseError> {
        self.write(|transaction| transaction.execute("DELETE FROM file_hash", []))?;
        Ok(())
    }
}

fn record_from_row(row: &rusqlite::Row) -> rusqlite::Result<RecordRow> {
    let layers: String = row.get(2)?;
    let inputs: String = row.get(3)?;
    Ok(RecordRow {
        cache_key: row.get(0)?,
        description: row.get(1)?,
        layers: serde_json::from_str(&layers).unwrap_or_default(),
        inputs: serde_json::from_str(&inputs).unwrap_or_default(),
        created_at: row.get(4)?,
        last_used_at: row.get(5)?,
    })
}

fn layer_from_row(row: &rusqlite::Row) -> rusqlite::Result<LayerRow> {
    Ok(LayerRow {
        diff_id: row.get(0)?,
        size: row.get::<_, i64>(1)? as u64,
        created_at: row.get(2)?,
        last_used_at: row.get(3)?,
        from_image: row.get(4)?,
        description: row.get(5)?,
    })
}

fn blob_from_row(row: &rusqlite::Row) -> rusqlite::Result<BlobRow> {
    Ok(BlobRow {
        digest: row.get(0)?,
        diff_id: row.get(1)?,
        compression: row.get(2)?,
        level: row.get(3)?,
        media_type: row.get(4)?,
        size: row.get::<_, i64>(5)? as u64,
        last_used_at: row.get(6)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record of `key` on `layers`, with nothing else to say.
    fn record_of(key: &str, layers: &[&str]) -> RecordRow {
        RecordRow {
            cache_key: key.into(),
            description: String::new(),
            layers: layers.iter().map(|layer| layer.to_string()).collect(),
            inputs: vec![],
            created_at: 0,
            last_used_at: 0,
        }
    }

    #[test]
    fn migrations_apply_once_and_records_round_trip() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("db.sqlite");
        let mut database = Database::open(&path).unwrap();
        let record = RecordRow {
            cache_key: "sha256:k".into(),
            description: "COPY a /b".into(),
            layers: vec!["sha256:l1".into(), "sha256:l2".into()],
            inputs: vec![("source".into(), "sha256:c".into())],
            created_at: 10,
            last_used_at: 10,
        };
        database.put_record(&record).unwrap();
        drop(database);
        let database = Database::open(&path).unwrap();
        let version: i64 = database.connection.pragma_query_value(None, "user_version", |row| row.get(0)).unwrap();
        assert_eq!(version as usize, MIGRATIONS.len());
        assert_eq!(database.record("sha256:k").unwrap(), Some(record));
        assert_eq!(database.record("sha256:other").unwrap(), None);
    }

    #[test]
    fn http_sources_round_trip() {
        let directory = tempfile::tempdir().unwrap();
        let mut database = Database::open(&directory.path().join("db.sqlite")).unwrap();
        assert_eq!(database.http_source("http://h/f").unwrap(), None);
        let mut row = HttpSourceRow {
            url: "http://h/f".into(),
            etag: Some("\"1\"".into()),
            last_modified: None,
            digest: "sha256:a".into(),
            diff_id: "sha256:b".into(),
            fetched_at: 5,
        };
        database.put_http_source(&row).unwrap();
        row.etag = None;
        row.digest = "sha256:c".into();
        database.put_http_source(&row).unwrap();
        assert_eq!(database.http_source("http://h/f").unwrap(), Some(row));
    }

    #[test]
    fn image_tags_round_trip() {
        let directory = tempfile::tempdir().unwrap();
        let mut database = Database::open(&directory.path().join("db.sqlite")).unwrap();
        assert_eq!(database.image_tag("docker.io/library/busybox:latest").unwrap(), None);
        database.put_image_tag("docker.io/library/busybox:latest", "sha256:m", "sha256:c", 5).unwrap();
        database.put_image_tag("docker.io/library/busybox:latest", "sha256:m2", "sha256:c2", 6).unwrap();
        assert_eq!(
            database.image_tag("docker.io/library/busybox:latest").unwrap(),
            Some(("sha256:m2".to_string(), "sha256:c2".to_string(), 6))
        );
    }

    #[test]
    fn rows_without_their_layers_are_dropped() {
        let directory = tempfile::tempdir().unwrap();
        let mut database = Database::open(&directory.path().join("db.sqlite")).unwrap();
        let layer = |diff_id: &str| LayerRow {
            diff_id: diff_id.into(),
            size: 1,
            created_at: 0,
            last_used_at: 0,
            from_image: false,
            description: String::new(),
        };
        database.put_layer(&layer("l1")).unwrap();
        for (key, layers) in [("kept", vec!["l1"]), ("lazy", vec!["l1", "l2"])] {
            database.put_record(&record_of(key, &layers)).unwrap();
        }
        for (digest, diff_id) in [("sha256:b1", "l1"), ("sha256:b2", "l2"), ("sha256:config", "")] {
            database
                .put_blob(&BlobRow {
                    digest: digest.into(),
                    diff_id: diff_id.into(),
                    compression: "gzip".into(),
                    level: -1,
                    media_type: String::new(),
                    size: 1,
                    last_used_at: 0,
                })
                .unwrap();
        }
        database.delete_unbacked().unwrap();
        let records: Vec<String> = database.records().unwrap().into_iter().map(|record| record.cache_key).collect();
        assert_eq!(records, vec!["kept".to_string()]);
        let blobs: Vec<String> = database.blobs().unwrap().into_iter().map(|blob| blob.digest).collect();
        assert_eq!(blobs, vec!["sha256:b1".to_string(), "sha256:config".to_string()]);
    }

    #[test]
    fn deleting_a_layer_drops_the_records_that_use_it() {
        let directory = tempfile::tempdir().unwrap();
        let mut database = Database::open(&directory.path().join("db.sqlite")).unwrap();
        for (key, layers) in [("a", vec!["l1"]), ("b", vec!["l1", "l2"]), ("c", vec!["l3"])] {
            database.put_record(&record_of(key, &layers)).unwrap();
        }
        database.delete_layer("l1").unwrap();
        let left: Vec<String> = database.records().unwrap().into_iter().map(|r| r.cache_key).collect();
        assert_eq!(left, vec!["c".to_string()]);
    }

    #[test]
    fn a_newer_database_is_refused() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("db.sqlite");
        let connection = Connection::open(&path).unwrap();
        connection.pragma_update(None, "user_version", 99).unwrap();
        drop(connection);
        assert!(matches!(Database::open(&path), Err(DatabaseError::TooNew { found: 99, .. })));
    }
}
