//! Layers on disk. Snapshot directories are unpacked layers in overlay format (whiteouts as
//! character devices 0/0, opaque directories marked with `user.overlay.opaque`), so they can be
//! overlay lower directories as they are. This module turns them into deterministic tars
//! ([`layer_tar`]), compresses those on every core ([`parallel_gzip`]), unpacks tars into them safely ([`extract`], over the tar stream reader of
//! `tar_stream`), reads a stack of them as one tree ([`view`]), materializes such a tree
//! ([`flatten`]) and, where overlay is not possible, computes a step's changes as an
//! overlay-style upper directory ([`tree_diff`]).

pub mod extract;
pub mod flatten;
pub mod layer_tar;
pub(crate) mod parallel_gzip;
mod tar_stream;
pub mod tree_diff;
pub mod view;
