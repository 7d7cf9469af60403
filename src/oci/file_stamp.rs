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
        let nanos = |seconds: i64, nanos: i64| i128::from(seconds) * 1_000_000_000 + i128::from(nanos);
        FileStamp {
            size: metadata.size(),
            mtime_nanos: nanos(metadata.mtime(), metadata.mtime_nsec()),
            ctime_nanos: nanos(metadata.ctime(), metadata.ctime_nsec()),
            inode: metadata.ino(),
            device: metadata.dev(),
        }
    }
}
