//! `packetcapture-api`: serves the PacketCapture download API over HTTPS.

use std::process::ExitCode;

use packetcapture_api::config::Config;
use packetcapture_api::version::VersionInfo;

use packetcapture_api::EXIT_CONFIG;

fn main() -> ExitCode {
    if std::env::args()
        .skip(1)
        .any(|a| a == "--version" || a == "-V")
    {
        println!("{}", VersionInfo::current());
        return ExitCode::SUCCESS;
    }
    if let Some(arg) = std::env::args().nth(1) {
        eprintln!(
            "packetcapture-api: unknown argument {arg:?}; configuration comes from PACKETCAPTURE_API_* variables; --version prints the version"
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("packetcapture-api: invalid configuration: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    packetcapture_api::run(config)
}
