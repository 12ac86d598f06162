//! Links libpcap statically, so the binary needs no libpcap at run time (the image holds one
//! file): a directory holding only `libpcap.a` is searched first, and the D-Bus stubs stand in
//! for the capture source that needs libdbus.

use std::path::{Path, PathBuf};

/// Where Debian's libpcap-dev puts its archive, or `PCAP_STATIC_DIR`.
fn archive() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Ok(dir) = std::env::var("PCAP_STATIC_DIR") {
        dirs.push(dir.into());
    }
    let target = std::env::var("TARGET").unwrap_or_default();
    let multiarch = target.replace("-unknown-linux-gnu", "-linux-gnu");
    for base in ["/usr/lib", "/usr/local/lib", "/lib"] {
        dirs.push(Path::new(base).join(&multiarch));
        dirs.push(base.into());
    }
    dirs.into_iter()
        .map(|d| d.join("libpcap.a"))
        .find(|a| a.is_file())
}

fn main() {
    println!("cargo:rerun-if-env-changed=PCAP_STATIC_DIR");
    println!("cargo:rerun-if-changed=dbus-stubs.c");
    let Some(archive) = archive() else {
        panic!(
            "libpcap.a was not found: install Debian's libpcap-dev (`make tools` does), or set \
             PCAP_STATIC_DIR to the directory that holds it"
        );
    };
    println!("cargo:rerun-if-changed={}", archive.display());
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dir = out.join("static-libpcap");
    std::fs::create_dir_all(&dir).expect("create the static libpcap directory");
    let link = dir.join("libpcap.a");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&archive, &link).expect("link libpcap.a");
    println!("cargo:rustc-link-search=native={}", dir.display());
    cc::Build::new()
        .file("dbus-stubs.c")
        .link_lib_modifier("+whole-archive")
        .compile("pcap-dbus-stubs");
}
