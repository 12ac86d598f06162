//! Validated domain values; hostile input stops here. Three families: names (`names`),
//! identities and access checks (`identity`), captures and their files (`capture`).

mod capture;
mod identity;
mod names;

pub use capture::*;
pub use identity::*;
pub use names::*;
