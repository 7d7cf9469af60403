//! The vocabulary every other module shares about images: references, media types (and, as
//! issue 11 goes on, digests, platforms, descriptors, manifests, the image config and OCI
//! layouts). Plain data and pure functions; imports nothing of the crate, so every module may
//! use it.
//!
//! | file             | concept                                                       |
//! |------------------|---------------------------------------------------------------|
//! | `reference.rs`   | `busybox` → `docker.io/library/busybox:latest`, one parser    |
//! | `media_types.rs` | the media types of manifests, indexes, configs and layers     |

pub mod media_types;
pub mod reference;

pub use reference::{DOCKER_HUB, Reference, ReferenceError};
