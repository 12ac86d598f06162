//! Domain tests, one binary: the archive engine and the use cases over the in-memory fakes.
#![allow(clippy::unwrap_used, missing_docs)]

mod archive;
mod budget;
mod large_file;
mod merge;
mod planned;
mod properties;
mod service;
mod support;
