//! The vocabulary every other module shares about images: references, media types, platforms,
//! digests, descriptors, manifests, the image config and OCI layouts. Plain data and pure
//! functions, but for reading a layout's files (and the in-root resolver, which reads through
//! the tree its caller gives); imports nothing of the crate, so every module may use it.
//!
//! | file             | concept                                                       |
//! |------------------|---------------------------------------------------------------|
//! | `reference.rs`   | `busybox` → `docker.io/library/busybox:latest`, one parser    |
//! | `cancellable.rs` | a writer that stops when the build is canceled                 |
//! | `compression.rs` | a layer's compression: its name, its media type               |
//! | `error_text.rs`  | an error and its causes in one line, as every `ERROR:` says it |
//! | `go_quote.rs`    | Go's `%q`, as BuildKit quotes values in configs and messages  |
//! | `file_stamp.rs`  | size, times, inode: a file unchanged since, without reading it  |
//! | `image_config.rs`| the image config, in the shape BuildKit writes it               |
//! | `digest.rs`      | `sha256:<hex>`: checked digests, diff ids, the hasher         |
//! | `descriptor.rs`  | media type, digest, size (checked when read), platform       |
//! | `manifest.rs`    | image manifests and indexes (OCI's and Docker's), as written  |
//! | `layout.rs`      | OCI layouts: `index.json`, blob paths that stay inside, reads |
//! | `media_types.rs` | the media types of manifests, indexes, configs and layers     |
//! | `passwd.rs`      | `/etc/passwd` and `/etc/group` as runc reads them (USER, --chown) |
//! | `path.rs`        | slash paths cleaned as Go's `path.Clean`, in a root or absolute |
//! | `root_path.rs`   | paths resolved in a root, symlinks followed inside it: one walk |
//! | `time.rs`        | times as Go's RFC 3339, dates from days                         |
//! | `platform.rs`    | `os/arch[/variant]`: one type, normaliser and matcher         |
//! | `stream.rs`      | a process's stdout or stderr, as the sandbox and progress say |
//! | `stage_cpu.rs`   | the CPU a layer's one pass spends in each stage, when asked    |
//! | `units.rs`       | sizes and ages as Docker's go-units reads and prints them     |

mod cancellable;
pub mod compression;
pub mod descriptor;
pub mod digest;
mod error_text;
pub mod file_stamp;
mod go_quote;
pub mod image_config;
pub mod layout;
pub mod manifest;
pub mod media_types;
pub mod passwd;
pub mod path;
pub mod platform;
pub mod reference;
pub mod root_path;
pub mod stage_cpu;
mod stream;
pub mod time;
pub mod units;

pub use cancellable::Cancellable;
pub use compression::Compression;
pub use descriptor::Descriptor;
pub use digest::{DiffId, Digest, DigestHasher, Hashing, InvalidDigest};
pub use error_text::error_text;
pub use file_stamp::FileStamp;
pub use go_quote::go_quote;
pub use platform::Platform;
pub use reference::{DOCKER_HUB, Reference, ReferenceError};
pub use stream::Stream;
