//! Records the build's git commit, tag and date for `/version` and `--version`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

fn main() {
    let commit = std::env::var("PACKETCAPTURE_GIT_COMMIT")
        .ok()
        .or_else(|| git(&["rev-parse", "HEAD"]));
    let tag = std::env::var("PACKETCAPTURE_GIT_TAG")
        .ok()
        .or_else(|| git(&["describe", "--tags", "--always", "--dirty"]));
    let date = std::env::var("PACKETCAPTURE_BUILD_DATE")
        .ok()
        .or_else(|| git(&["log", "-1", "--format=%cI"]));
    println!(
        "cargo:rustc-env=PCAPI_GIT_COMMIT={}",
        commit.unwrap_or_else(|| "unknown".into())
    );
    println!(
        "cargo:rustc-env=PCAPI_GIT_TAG={}",
        tag.unwrap_or_else(|| "unknown".into())
    );
    println!(
        "cargo:rustc-env=PCAPI_BUILD_DATE={}",
        date.unwrap_or_else(|| "unknown".into())
    );
    for var in [
        "PACKETCAPTURE_GIT_COMMIT",
        "PACKETCAPTURE_GIT_TAG",
        "PACKETCAPTURE_BUILD_DATE",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        println!("cargo:rerun-if-changed={dir}/refs");
    }
}
