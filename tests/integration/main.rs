//! End-to-end tests: the real `rbuild` binary, a fresh state root per test, outputs checked with
//! independent tools (skopeo, umoci, GNU tar, podman). One binary, one module per topic.

#![allow(clippy::disallowed_methods)] // fixtures are written directly; the rule is for rbuild's own writes
#![allow(clippy::print_stderr)] // what a test skipped or saw goes to the harness's captured stderr

mod cache;
mod cli;
mod conformance;
mod context;
mod dockerfile;
mod errors;
mod examples;
mod git_https;
mod git_source;
mod git_ssh;
mod git_submodules;
mod http_source;
mod images;
mod incremental_copy;
mod outputs;
mod progress;
mod registry;
mod registry_client;
mod remote_cache;
mod run;
mod support;
