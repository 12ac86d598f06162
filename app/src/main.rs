//! `packetcapture-api`: serves the PacketCapture download API over HTTPS.

use std::process::ExitCode;

use packetcapture_api::config::Config;
use packetcapture_api::error::StartupError;
use packetcapture_api::version::VersionInfo;

/// jemalloc rather than the system allocator: the engine frees and allocates buffers of a few
/// hundred KiB at the rate data flows, which glibc serves with mmap/munmap and page faults.
/// Its background threads give freed memory back to the system while the service is idle
/// (without them, pages are purged only when something allocates).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("--version" | "-V") => {
            println!("{}", VersionInfo::current());
            Ok(())
        }
        Some(arg) => Err(StartupError::setting(
            format!("argument {arg:?}"),
            "unknown; configuration comes from PACKETCAPTURE_API_* variables, --version prints the version",
        )),
        None => Config::from_env().and_then(packetcapture_api::run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("packetcapture-api: {}", e.report());
            ExitCode::from(e.exit_code())
        }
    }
}
