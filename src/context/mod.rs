//! The build context: `.dockerignore` rules, the walk of the context's directories, the
//! selection and hashing of the files a `COPY` or `ADD` uses, and the size BuildKit's transfer
//! of them would have. Nothing here
//! knows about the store; file hashes are remembered through the [`content_hash::HashCache`]
//! the caller gives.

pub mod content_hash;
pub mod dockerignore;
pub mod in_root;
pub mod selection;
pub mod transfer;
pub mod walk;
