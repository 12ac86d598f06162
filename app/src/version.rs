//! Build information, as `/version` and `--version` report it.

use serde::Serialize;

/// What this binary was built from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    /// Date of the commit built (ISO 8601).
    pub build_date: String,
    /// Git commit.
    pub git_commit: String,
    /// `git describe` of the commit.
    pub git_tag: String,
    /// The crate version.
    pub build_version: String,
}

impl VersionInfo {
    /// This binary's.
    pub fn current() -> Self {
        Self {
            build_date: env!("PCAPI_BUILD_DATE").to_owned(),
            git_commit: env!("PCAPI_GIT_COMMIT").to_owned(),
            git_tag: env!("PCAPI_GIT_TAG").to_owned(),
            build_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

impl std::fmt::Display for VersionInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "packetcapture-api {} (commit {}, tag {}, built {})",
            self.build_version, self.git_commit, self.git_tag, self.build_date
        )
    }
}
