//! The SQLite database of the state root: cache records, layers, blobs.
//!
//! WAL mode, a 30 s busy timeout, and every write in a short `BEGIN IMMEDIATE` transaction, so
//! several rbuild processes can share one root. No transaction is ever held across a step or a
//! download: callers do their slow work first and then write a row.
//! A row whose file is missing is a cache miss (the caller checks); a file without a row is
//! garbage that `prune` collects.

use std::path::Path;
use std::time::Duration;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::CacheKey;
use super::durable_rows::PendingRow;
pub use super::rows::{BlobRow, HttpSourceRow, LayerKind, LayerRow, OutputFileRow, RecordRow};
use super::rows::{blob_from_row, diff_id_text, layer_from_row, record_from_row, stamp_at, stamp_columns};
use super::schema::MIGRATIONS;
use crate::oci::{DiffId, Digest, FileStamp};

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("failed to open the cache database `{path}`")]
    Open { path: String, source: rusqlite::Error },
    #[error("failed to migrate the cache database to version {version}")]
    Migrate { version: usize, source: rusqlite::Error },
    #[error("cache database is version {found}, newer than this rbuild understands ({known})")]
    TooNew { found: usize, known: usize },
    #[error("cache database query failed")]
    Query(#[source] rusqlite::Error),
    /// A digest, diff id or cache key column holding text that is none: the file was edited or
    /// damaged by something other than rbuild, which writes only checked values.
    #[error("the cache database holds a damaged value")]
    Value(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the cache database `{path}` is damaged: {reason}")]
    Damaged { path: String, reason: String },
}

impl From<rusqlite::Error> for DatabaseError {
    fn from(error: rusqlite::Error) -> DatabaseError {
        match error {
            rusqlite::Error::FromSqlConversionFailure(_, _, source) => DatabaseError::Value(source),
            other => DatabaseError::Query(other),
        }
    }
}

/// Digests, diff ids and cache keys are stored as their text and checked when read back.
macro_rules! digest_column {
    ($($kind:ty),*) => {$(
        impl ToSql for $kind {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::Borrowed(ValueRef::Text(self.as_str().as_bytes())))
            }
        }

        impl FromSql for $kind {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<$kind> {
                <$kind>::parse(value.as_str()?).map_err(|error| FromSqlError::Other(Box::new(error)))
            }
        }
    )*};
}

digest_column!(Digest, DiffId, CacheKey);

/// Whether SQLite says the file is not a sound database (as opposed to busy, full, or denied).
fn is_damage(error: &rusqlite::Error) -> bool {
    matches!(error.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase))
}

pub struct Database {
    connection: Connection,
}

impl Database {
    /// Opens (or creates) the database and checks it: a damaged file is
    /// [`DatabaseError::Damaged`], for the store to move aside. The check (`quick_check`) reads
    /// every page; the database holds no per-file rows (context file digests are in
    /// `file_hashes`), so that is a few milliseconds.
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

    /// A second connection, for reading on another thread, to the database a [`Database::open`]
    /// of this process has checked and migrated (so neither is done again).
    pub fn open_reader(path: &Path) -> Result<Database, DatabaseError> {
        let open_error = |source: rusqlite::Error| DatabaseError::Open { path: path.display().to_string(), source };
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = Connection::open_with_flags(path, flags).map_err(open_error)?;
        connection.busy_timeout(Duration::from_secs(30)).map_err(open_error)?;
        Ok(Database { connection })
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

    pub fn record(&self, cache_key: &CacheKey) -> Result<Option<RecordRow>, DatabaseError> {
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

    /// Writes `rows` in one transaction, in order: the one way layers and records are written
    /// (blobs also one at a time, [`Database::put_blob`]).
    pub fn put_rows(&mut self, rows: &[PendingRow]) -> Result<(), DatabaseError> {
        self.write(|transaction| {
            for row in rows {
                match row {
                    PendingRow::Layer(layer) => insert_layer(transaction, layer)?,
                    PendingRow::Blob(blob) => insert_blob(transaction, blob)?,
                    PendingRow::Record(record) => insert_record(transaction, record)?,
                }
            }
            Ok(())
        })
    }

    pub fn touch_record(&mut self, cache_key: &CacheKey, now: i64) -> Result<(), DatabaseError> {
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
    /// does not have (an imported cache hit whose layers were never fetched), layer blobs
    /// whose layer is gone (a lazy layer's blob fetched for an export) and copy steps' last
    /// snapshots that are gone.
    pub fn delete_unbacked(&mut self) -> Result<(), DatabaseError> {
        self.write(|transaction| {
            transaction.execute(
                "DELETE FROM record WHERE EXISTS (SELECT 1 FROM json_each(record.layers)
                 WHERE value NOT IN (SELECT diff_id FROM layer))",
                [],
            )?;
            transaction.execute("DELETE FROM blob WHERE diff_id != '' AND diff_id NOT IN (SELECT diff_id FROM layer)", [])?;
            transaction.execute("DELETE FROM copy_snapshot WHERE diff_id NOT IN (SELECT diff_id FROM layer)", [])?;
            transaction.execute("DELETE FROM gzip_member WHERE blob NOT IN (SELECT digest FROM blob)", [])?;
            transaction.execute("DELETE FROM blob_check WHERE digest NOT IN (SELECT digest FROM blob)", [])
        })?;
        Ok(())
    }

    pub fn delete_record(&mut self, cache_key: &CacheKey) -> Result<(), DatabaseError> {
        self.write(|transaction| transaction.execute("DELETE FROM record WHERE cache_key = ?1", params![cache_key]))?;
        Ok(())
    }

    pub fn layer(&self, diff_id: &DiffId) -> Result<Option<LayerRow>, DatabaseError> {
        let row = self
            .connection
            .query_row(
                "SELECT diff_id, size, created_at, last_used_at, from_image, description, kind FROM layer WHERE diff_id = ?1",
                params![diff_id],
                layer_from_row,
            )
            .optional()?;
        Ok(row)
    }

    pub fn layers(&self) -> Result<Vec<LayerRow>, DatabaseError> {
        let mut statement = self.connection.prepare(
            "SELECT diff_id, size, created_at, last_used_at, from_image, description, kind FROM layer
             ORDER BY last_used_at DESC, diff_id",
        )?;
        let rows = statement.query_map([], layer_from_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn delete_layer(&mut self, diff_id: &DiffId) -> Result<(), DatabaseError> {
        self.write(|transaction| {
            transaction
                .execute("DELETE FROM record WHERE EXISTS (SELECT 1 FROM json_each(record.layers) WHERE value = ?1)", params![diff_id])?;
            transaction.execute("DELETE FROM layer WHERE diff_id = ?1", params![diff_id])
        })?;
        Ok(())
    }

    /// The blob of a layer in a given compression, if one was made before: a layer is never
    /// recompressed to a new digest.
    pub fn blob(&self, digest: &Digest) -> Result<Option<BlobRow>, DatabaseError> {
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

    pub fn blob_for(&self, diff_id: &DiffId, compression: &str, level: i64) -> Result<Option<BlobRow>, DatabaseError> {
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
        self.write(|transaction| insert_blob(transaction, blob))
    }

    pub fn delete_blob(&mut self, digest: &Digest) -> Result<(), DatabaseError> {
        self.write(|transaction| {
            transaction.execute("DELETE FROM gzip_member WHERE blob = ?1", params![digest])?;
            transaction.execute("DELETE FROM blob_check WHERE digest = ?1", params![digest])?;
            transaction.execute("DELETE FROM blob WHERE digest = ?1", params![digest])
        })?;
        Ok(())
    }

    /// Where a gzip member holding `chunk` (compressed at `level` by `compressor`) is: a blob
    /// the store still has a row for, the member's offset and length in it.
    pub fn gzip_member(&self, chunk: &Digest, level: u32, compressor: &str) -> Result<Option<(Digest, u64, u64)>, DatabaseError> {
        let row = self
            .connection
            .query_row(
                "SELECT member.blob, member.offset, member.length FROM gzip_member AS member
                 JOIN blob ON blob.digest = member.blob
                 WHERE member.chunk = ?1 AND member.level = ?2 AND member.compressor = ?3",
                params![chunk, level, compressor],
                |row| Ok((row.get::<_, Digest>(0)?, row.get::<_, i64>(1)? as u64, row.get::<_, i64>(2)? as u64)),
            )
            .optional()?;
        Ok(row)
    }

    /// Records the members of `blob` (chunk digest, offset, length), replacing older places of
    /// the same chunks.
    pub fn put_gzip_members(
        &mut self,
        blob: &Digest,
        level: u32,
        compressor: &str,
        members: &[(Digest, u64, u64)],
    ) -> Result<(), DatabaseError> {
        self.write(|transaction| {
            let mut statement = transaction.prepare(
                "INSERT INTO gzip_member (chunk, level, compressor, blob, offset, length) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (chunk, level, compressor) DO UPDATE SET blob = excluded.blob, offset = excluded.offset, length = excluded.length",
            )?;
            for (chunk, offset, length) in members {
                statement.execute(params![chunk, level, compressor, blob, *offset as i64, *length as i64])?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// The manifest and config digests a registry reference resolved to, and when.
    pub fn image_tag(&self, reference: &str) -> Result<Option<(Digest, Digest, i64)>, DatabaseError> {
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
    pub fn image_tags(&self) -> Result<Vec<(String, Digest)>, DatabaseError> {
        let mut statement = self.connection.prepare("SELECT reference, manifest_digest FROM image_tag ORDER BY reference")?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The manifests and configs of resolved registry references: what a build needs to start
    /// from those images without a registry.
    pub fn image_tag_blobs(&self) -> Result<std::collections::HashSet<Digest>, DatabaseError> {
        let mut statement = self.connection.prepare("SELECT manifest_digest, config_digest FROM image_tag")?;
        let mut digests = std::collections::HashSet::new();
        for row in statement.query_map([], |row| Ok((row.get::<_, Digest>(0)?, row.get::<_, Digest>(1)?)))? {
            let (manifest, config) = row?;
            digests.insert(manifest);
            digests.insert(config);
        }
        Ok(digests)
    }

    /// Forgets the references resolved to a manifest or config that is being removed.
    pub fn delete_image_tags_using(&mut self, digest: &Digest) -> Result<(), DatabaseError> {
        self.write(|transaction| {
            transaction.execute("DELETE FROM image_tag WHERE manifest_digest = ?1 OR config_digest = ?1", params![digest])
        })?;
        Ok(())
    }

    pub fn put_image_tag(
        &mut self,
        reference: &str,
        manifest_digest: &Digest,
        config_digest: &Digest,
        now: i64,
    ) -> Result<(), DatabaseError> {
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

    /// The layer the last run of copy step `step` made and the files it copied (encoded by
    /// `ops::incremental_copy`).
    pub fn copy_snapshot(&self, step: &Digest) -> Result<Option<(DiffId, Vec<u8>)>, DatabaseError> {
        Ok(self
            .connection
            .query_row("SELECT diff_id, files FROM copy_snapshot WHERE step = ?1", params![step], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?)
    }

    pub fn put_copy_snapshot(&mut self, step: &Digest, diff_id: &DiffId, files: &[u8]) -> Result<(), DatabaseError> {
        self.write(|transaction| {
            transaction
                .execute("INSERT OR REPLACE INTO copy_snapshot (step, diff_id, files) VALUES (?1, ?2, ?3)", params![step, diff_id, files])
        })?;
        Ok(())
    }

    /// The stat of the blob file `digest` when its bytes last matched the digest.
    pub fn blob_check(&self, digest: &Digest) -> Result<Option<FileStamp>, DatabaseError> {
        Ok(self
            .connection
            .query_row("SELECT size, mtime_nanos, ctime_nanos, inode, device FROM blob_check WHERE digest = ?1", params![digest], |row| {
                stamp_at(row, 0)
            })
            .optional()?)
    }

    pub fn put_blob_check(&mut self, digest: &Digest, stamp: &FileStamp) -> Result<(), DatabaseError> {
        let (size, mtime, ctime, inode, device) = stamp_columns(stamp);
        self.write(|transaction| {
            transaction.execute(
                "INSERT OR REPLACE INTO blob_check (digest, size, mtime_nanos, ctime_nanos, inode, device) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![digest, size, mtime, ctime, inode, device],
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
            Some(row) => {
                let (size, mtime, ctime, inode, device) = stamp_columns(&row.stamp);
                transaction.execute(
                    "INSERT OR REPLACE INTO output_file (path, identity, size, mtime_nanos, ctime_nanos, inode, device)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![path, row.identity, size, mtime, ctime, inode, device],
                )
            }
            None => transaction.execute("DELETE FROM output_file WHERE path = ?1", params![path]),
        })?;
        Ok(())
    }
}

fn insert_record(transaction: &rusqlite::Transaction, record: &RecordRow) -> rusqlite::Result<()> {
    // Plain data: serializing to a string cannot fail.
    let layers = serde_json::to_string(&record.layers).unwrap_or_default();
    let inputs = serde_json::to_string(&record.inputs).unwrap_or_default();
    transaction.execute(
        "INSERT INTO record (cache_key, description, layers, inputs, created_at, last_used_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (cache_key) DO UPDATE SET last_used_at = excluded.last_used_at",
        params![record.cache_key, record.description, layers, inputs, record.created_at, record.last_used_at],
    )?;
    Ok(())
}

/// Inserts a layer, or refreshes its use time when it is already known (the first creation time
/// wins: it is the layer's history timestamp).
fn insert_layer(transaction: &rusqlite::Transaction, layer: &LayerRow) -> rusqlite::Result<()> {
    transaction.execute(
        "INSERT INTO layer (diff_id, size, created_at, last_used_at, from_image, description, kind)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (diff_id) DO UPDATE SET last_used_at = excluded.last_used_at,
           from_image = max(from_image, excluded.from_image), kind = max(kind, excluded.kind)",
        params![
            layer.diff_id,
            layer.size as i64,
            layer.created_at,
            layer.last_used_at,
            layer.from_image,
            layer.description,
            layer.kind.column()
        ],
    )?;
    Ok(())
}

fn insert_blob(transaction: &rusqlite::Transaction, blob: &BlobRow) -> rusqlite::Result<()> {
    transaction.execute(
        "INSERT INTO blob (digest, diff_id, compression, level, media_type, size, last_used_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (digest) DO UPDATE SET last_used_at = excluded.last_used_at",
        params![
            blob.digest,
            diff_id_text(&blob.diff_id),
            blob.compression,
            blob.level,
            blob.media_type,
            blob.size as i64,
            blob.last_used_at
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::cache_key::test_names::{diff_id, digest, key};

    /// A record of `key` on `layers`, with nothing else to say.
    fn record_of(name: &str, layers: &[&str]) -> RecordRow {
        RecordRow {
            cache_key: key(name),
            description: String::new(),
            layers: layers.iter().map(|layer| diff_id(layer)).collect(),
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
            cache_key: key("k"),
            description: "COPY a /b".into(),
            layers: vec![diff_id("l1"), diff_id("l2")],
            inputs: vec![("source".into(), "sha256:c".into())],
            created_at: 10,
            last_used_at: 10,
        };
        database.put_rows(&[PendingRow::Record(record.clone())]).unwrap();
        drop(database);
        let database = Database::open(&path).unwrap();
        let version: i64 = database.connection.pragma_query_value(None, "user_version", |row| row.get(0)).unwrap();
        assert_eq!(version as usize, MIGRATIONS.len());
        assert_eq!(database.record(&key("k")).unwrap(), Some(record));
        assert_eq!(database.record(&key("other")).unwrap(), None);
    }

    /// The columns hold the digests' text, as before they had types: existing roots read the
    /// same, and a value that is no digest is an error naming it, not a silent miss.
    #[test]
    fn digests_are_stored_as_text_and_checked_when_read() {
        let directory = tempfile::tempdir().unwrap();
        let mut database = Database::open(&directory.path().join("db.sqlite")).unwrap();
        database.put_rows(&[PendingRow::Record(record_of("k", &["l1"]))]).unwrap();
        database.put_blob(&BlobRow::metadata(digest("config"), 1, "m", 0)).unwrap();
        let (stored_key, layers): (String, String) =
            database.connection.query_row("SELECT cache_key, layers FROM record", [], |row| Ok((row.get(0)?, row.get(1)?))).unwrap();
        assert_eq!(stored_key, key("k").to_string());
        assert_eq!(layers, format!("[\"{}\"]", diff_id("l1")));
        let blob_diff_id: String = database.connection.query_row("SELECT diff_id FROM blob", [], |row| row.get(0)).unwrap();
        assert_eq!(blob_diff_id, "", "a metadata blob has no diff id");
        assert_eq!(database.blobs().unwrap()[0].diff_id, None);

        database.connection.execute("UPDATE record SET layers = '[\"sha256:../x\"]'", []).unwrap();
        let error = database.record(&key("k")).unwrap_err();
        assert!(matches!(error, DatabaseError::Value(_)), "{error:?}");
        assert_eq!(error.to_string(), "the cache database holds a damaged value");
        assert!(std::error::Error::source(&error).unwrap().to_string().starts_with("invalid digest `sha256:../x`"));
        database.connection.execute("UPDATE blob SET digest = 'sha256:short'", []).unwrap();
        let error = database.blobs().unwrap_err();
        assert_eq!(std::error::Error::source(&error).unwrap().to_string(), "invalid digest `sha256:short`");
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
            digest: digest("a"),
            diff_id: diff_id("b"),
            fetched_at: 5,
        };
        database.put_http_source(&row).unwrap();
        row.etag = None;
        row.digest = digest("c");
        database.put_http_source(&row).unwrap();
        assert_eq!(database.http_source("http://h/f").unwrap(), Some(row));
    }

    #[test]
    fn image_tags_round_trip() {
        let directory = tempfile::tempdir().unwrap();
        let mut database = Database::open(&directory.path().join("db.sqlite")).unwrap();
        assert_eq!(database.image_tag("docker.io/library/busybox:latest").unwrap(), None);
        database.put_image_tag("docker.io/library/busybox:latest", &digest("m"), &digest("c"), 5).unwrap();
        database.put_image_tag("docker.io/library/busybox:latest", &digest("m2"), &digest("c2"), 6).unwrap();
        assert_eq!(database.image_tag("docker.io/library/busybox:latest").unwrap(), Some((digest("m2"), digest("c2"), 6)));
    }

    #[test]
    fn rows_without_their_layers_are_dropped() {
        let directory = tempfile::tempdir().unwrap();
        let mut database = Database::open(&directory.path().join("db.sqlite")).unwrap();
        let layer = |name: &str| LayerRow {
            diff_id: diff_id(name),
            size: 1,
            created_at: 0,
            last_used_at: 0,
            from_image: false,
            description: String::new(),
            kind: LayerKind::Regular,
        };
        database.put_rows(&[PendingRow::Layer(layer("l1"))]).unwrap();
        for (name, layers) in [("kept", vec!["l1"]), ("lazy", vec!["l1", "l2"])] {
            database.put_rows(&[PendingRow::Record(record_of(name, &layers))]).unwrap();
        }
        for (blob, layer) in [("b1", Some("l1")), ("b2", Some("l2")), ("config", None)] {
            database
                .put_blob(&BlobRow {
                    digest: digest(blob),
                    diff_id: layer.map(diff_id),
                    compression: "gzip".into(),
                    level: -1,
                    media_type: String::new(),
                    size: 1,
                    last_used_at: 0,
                })
                .unwrap();
        }
        database.delete_unbacked().unwrap();
        let records: Vec<CacheKey> = database.records().unwrap().into_iter().map(|record| record.cache_key).collect();
        assert_eq!(records, vec![key("kept")]);
        let mut blobs: Vec<Digest> = database.blobs().unwrap().into_iter().map(|blob| blob.digest).collect();
        blobs.sort();
        let mut expected = vec![digest("b1"), digest("config")];
        expected.sort();
        assert_eq!(blobs, expected);
    }

    #[test]
    fn deleting_a_layer_drops_the_records_that_use_it() {
        let directory = tempfile::tempdir().unwrap();
        let mut database = Database::open(&directory.path().join("db.sqlite")).unwrap();
        for (name, layers) in [("a", vec!["l1"]), ("b", vec!["l1", "l2"]), ("c", vec!["l3"])] {
            database.put_rows(&[PendingRow::Record(record_of(name, &layers))]).unwrap();
        }
        database.delete_layer(&diff_id("l1")).unwrap();
        let left: Vec<CacheKey> = database.records().unwrap().into_iter().map(|r| r.cache_key).collect();
        assert_eq!(left, vec![key("c")]);
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
