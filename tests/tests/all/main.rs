//! Integration tests, one binary: the simulation itself, the port contracts, end to end.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod beyond;
mod cli;
mod contract;
mod deploy;
mod dex;
mod e2e;
mod engine;
mod faults;
mod filter;
mod follow;
mod load;
mod managed;
mod observe;
mod openapi;
mod realkube;
mod resume;
mod simulation;
mod support;
