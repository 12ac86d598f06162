//! The local-fs adapter: the local file system, for two ports. [`LocalFetcher`] serves node
//! files from `{root}/{node}/{directory}/{ns}/{name}` (deployments and tests where node files
//! are mounted rather than reached by exec); [`TempSpool`] holds a download's spool in
//! unlinked temporary files.

mod fetcher;
mod spool;

pub use fetcher::{Error, LocalFetcher};
pub use spool::TempSpool;
