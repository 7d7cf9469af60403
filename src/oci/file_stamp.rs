//! What tells an unchanged file from a changed one without reading it: size, mtime and ctime
//! in nanoseconds, inode and device. ctime moves on every write, chmod or `touch -d` and no
//! program can set it back, so a file with the same stamp has not been written since.
//!
//! Used by the context's hash cache (a file hashed before is not read again) and by the
//! exporter (an archive written before and untouched is not written again).

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileStamp {
    pub size: u64,
    pub mtime_nanos: i128,
    pub ctime_nanos: i128,
    pub inode: u64,
    pub device: u64,
}

impl FileStamp {
    pub fn of(metadata: &Metadata) -> FileStamp {
        FileStamp {
            size: metadata.size(),
            mtime_nanos: nanos(metadata.mtime(), metadata.mtime_nsec()),
            ctime_nanos: nanos(metadata.ctime(), metadata.ctime_nsec()),
            inode: metadata.ino(),
            device: metadata.dev(),
        }
    }

    /// The stamp of an `lstat` made by rbuild itself (the context walk's, relative to an open
    /// directory).
    pub fn of_stat(stat: &libc::stat) -> FileStamp {
        FileStamp {
            size: u64::try_from(stat.st_size).unwrap_or(0),
            mtime_nanos: nanos(stat.st_mtime, stat.st_mtime_nsec),
            ctime_nanos: nanos(stat.st_ctime, stat.st_ctime_nsec),
            inode: stat.st_ino,
            device: stat.st_dev,
        }
    }
}

fn nanos(seconds: i64, nanos: i64) -> i128 {
    i128::from(seconds) * 1_000_000_000 + i128::from(nanos)
}
