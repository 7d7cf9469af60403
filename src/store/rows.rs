//! The rows of the database, one type per table, and how a row is read back from SQLite
//! (`Database`'s queries select the columns in the order these readers take them).

use super::CacheKey;
use crate::oci::{DiffId, Digest, FileStamp};

/// A cache record: the result of one vertex, by cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRow {
    pub cache_key: CacheKey,
    pub description: String,
    /// The diff ids of the result's layers, bottom first.
    pub layers: Vec<DiffId>,
    /// What went into the key, by name, for `cache why`.
    pub inputs: Vec<(String, String)>,
    pub created_at: i64,
    pub last_used_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRow {
    pub diff_id: DiffId,
    pub size: u64,
    pub created_at: i64,
    pub last_used_at: i64,
    pub from_image: bool,
    /// The step that made it, for `cache du --verbose`.
    pub description: String,
    pub kind: LayerKind,
}

#[cfg(test)]
impl LayerRow {
    /// A regular layer row of `diff_id` made and used at time 1: for tests.
    pub(crate) fn example(diff_id: DiffId) -> LayerRow {
        LayerRow {
            diff_id,
            size: 1,
            created_at: 1,
            last_used_at: 1,
            from_image: false,
            description: String::new(),
            kind: LayerKind::Regular,
        }
    }
}

/// What made a layer that is not an image's, as BuildKit's `du` types a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayerKind {
    /// A step's result or a download (`regular`).
    #[default]
    Regular,
    /// `ADD <git URL>`'s files (`source.git.checkout`).
    GitCheckout,
}

impl LayerKind {
    /// The `kind` column's text.
    pub(super) fn column(self) -> &'static str {
        match self {
            LayerKind::Regular => "",
            LayerKind::GitCheckout => "source.git.checkout",
        }
    }

    fn from_column(text: &str) -> LayerKind {
        if text == LayerKind::GitCheckout.column() { LayerKind::GitCheckout } else { LayerKind::Regular }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRow {
    pub digest: Digest,
    /// The layer this blob is a compression of; `None` for a manifest or config.
    pub diff_id: Option<DiffId>,
    pub compression: String,
    pub level: i64,
    pub media_type: String,
    pub size: u64,
    pub last_used_at: i64,
}

impl BlobRow {
    /// A manifest's or config's row: a blob that is no layer (no diff id, not compressed).
    pub fn metadata(digest: Digest, size: u64, media_type: &str, now: i64) -> BlobRow {
        BlobRow { digest, diff_id: None, compression: "none".into(), level: 0, media_type: media_type.into(), size, last_used_at: now }
    }

    /// A layer's blob: its compression is what its media type names; `level` is the one asked
    /// for, or -1 for the default and for a blob that came as it is (a base image's).
    pub fn layer(digest: Digest, diff_id: DiffId, media_type: &str, level: i64, size: u64, now: i64) -> BlobRow {
        let compression = crate::oci::Compression::of_media_type(media_type).name().into();
        BlobRow { digest, diff_id: Some(diff_id), compression, level, media_type: media_type.into(), size, last_used_at: now }
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
    pub digest: Digest,
    /// The layer holding the file.
    pub diff_id: DiffId,
    pub fetched_at: i64,
}

/// An archive rbuild wrote, as it was right after the write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFileRow {
    /// What was written: the exporter's identity of the archive's content.
    pub identity: Digest,
    pub stamp: FileStamp,
}

/// A stamp from the columns `size, mtime_nanos, ctime_nanos, inode, device` starting at `first`
/// (times as decimal text: i128 does not fit SQLite's integers).
pub(super) fn stamp_at(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<FileStamp> {
    let (mtime, ctime): (String, String) = (row.get(first + 1)?, row.get(first + 2)?);
    Ok(FileStamp {
        size: row.get::<_, i64>(first)? as u64,
        mtime_nanos: mtime.parse().unwrap_or(-1),
        ctime_nanos: ctime.parse().unwrap_or(-1),
        inode: row.get::<_, i64>(first + 3)? as u64,
        device: row.get::<_, i64>(first + 4)? as u64,
    })
}

/// The five columns [`stamp_at`] reads (size, mtime, ctime, inode, device), as they are stored:
/// the times as decimal text (they do not fit SQLite's integers).
pub(super) fn stamp_columns(stamp: &FileStamp) -> (i64, String, String, i64, i64) {
    (stamp.size as i64, stamp.mtime_nanos.to_string(), stamp.ctime_nanos.to_string(), stamp.inode as i64, stamp.device as i64)
}

/// A blob's diff id column: empty for a blob that is no layer (a manifest, a config).
pub(super) fn optional_diff_id(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<Option<DiffId>> {
    let text: String = row.get(index)?;
    if text.is_empty() {
        return Ok(None);
    }
    DiffId::parse(&text)
        .map(Some)
        .map_err(|error| rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(error)))
}

/// The text of a blob's diff id column (see [`optional_diff_id`]).
pub(super) fn diff_id_text(diff_id: &Option<DiffId>) -> &str {
    diff_id.as_ref().map_or("", DiffId::as_str)
}

pub(super) fn record_from_row(row: &rusqlite::Row) -> rusqlite::Result<RecordRow> {
    let json = |index: usize| -> rusqlite::Result<String> { row.get(index) };
    let damaged = |index: usize, error: serde_json::Error| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(error))
    };
    Ok(RecordRow {
        cache_key: row.get(0)?,
        description: row.get(1)?,
        // A record whose layers cannot be read would be a hit without them: an error, not empty.
        layers: serde_json::from_str(&json(2)?).map_err(|error| damaged(2, error))?,
        inputs: serde_json::from_str(&json(3)?).map_err(|error| damaged(3, error))?,
        created_at: row.get(4)?,
        last_used_at: row.get(5)?,
    })
}

pub(super) fn layer_from_row(row: &rusqlite::Row) -> rusqlite::Result<LayerRow> {
    Ok(LayerRow {
        diff_id: row.get(0)?,
        size: row.get::<_, i64>(1)? as u64,
        created_at: row.get(2)?,
        last_used_at: row.get(3)?,
        from_image: row.get(4)?,
        description: row.get(5)?,
        kind: LayerKind::from_column(&row.get::<_, String>(6)?),
    })
}

pub(super) fn blob_from_row(row: &rusqlite::Row) -> rusqlite::Result<BlobRow> {
    Ok(BlobRow {
        digest: row.get(0)?,
        diff_id: optional_diff_id(row, 1)?,
        compression: row.get(2)?,
        level: row.get(3)?,
        media_type: row.get(4)?,
        size: row.get::<_, i64>(5)? as u64,
        last_used_at: row.get(6)?,
    })
}
