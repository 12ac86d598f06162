//! `packetcapture-sim [--scenario FILE] --out DIR`: runs a simulated cluster until killed,
//! writing `DIR/execs` (`running peak started` of the local cluster's execs) every 50 ms; creating
//! `DIR/reset-peak-execs` starts the peak anew.
//! `packetcapture-sim pcap-info FILE...`: checks pcap files and prints their packet
//! counts (and the bytes of a cut last record).
//! `packetcapture-sim pcapng-count FILE`: prints the packets of a pcapng (`make bench`).

use std::path::PathBuf;
use std::process::ExitCode;

use packetcapture_tests::{Scenario, Sim};

fn usage() -> ExitCode {
    eprintln!(
        "usage: packetcapture-sim [--scenario FILE] --out DIR\n       packetcapture-sim pcap-info FILE...\n       packetcapture-sim pcapng-count FILE"
    );
    ExitCode::from(64)
}

fn pcap_info(files: impl Iterator<Item = String>) -> ExitCode {
    let mut ok = true;
    for f in files {
        match std::fs::read(&f) {
            Ok(data) => match packetcapture_tests::pcap::inspect(&data) {
                Some((n, 0)) => println!("{n:>8} packets  {:>10} bytes  {f}", data.len()),
                Some((n, cut)) => println!(
                    "{n:>8} packets  {:>10} bytes  {f} (ends with {cut} bytes of a cut record, as an active file can)",
                    data.len()
                ),
                None => {
                    println!(
                        "{:>8}  {:>10} bytes  {f}: not a valid pcap",
                        "-",
                        data.len()
                    );
                    ok = false;
                }
            },
            Err(e) => {
                eprintln!("{f}: {e}");
                ok = false;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("pcap-info") {
        args.next();
        return pcap_info(args);
    }
    if args.peek().map(String::as_str) == Some("pcapng-count") {
        args.next();
        let counted = args
            .next()
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|d| packetcapture_tests::pcap::count_pcapng_packets(&d));
        return match counted {
            Some(n) => {
                println!("{n}");
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("pcapng-count FILE: not a readable pcapng");
                ExitCode::FAILURE
            }
        };
    }
    let (mut scenario_file, mut out) = (None::<PathBuf>, None::<PathBuf>);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--scenario" => scenario_file = args.next().map(PathBuf::from),
            "--out" => out = args.next().map(PathBuf::from),
            "-h" | "--help" => {
                usage();
                return ExitCode::SUCCESS;
            }
            _ => return usage(),
        }
    }
    let Some(out) = out else { return usage() };
    let scenario = match scenario_file {
        None => Scenario::demo_scenario(),
        Some(f) => match std::fs::read_to_string(&f)
            .map_err(|e| e.to_string())
            .and_then(|t| Scenario::from_yaml(&t))
        {
            Ok(s) => s,
            Err(e) => {
                eprintln!("packetcapture-sim: scenario {}: {e}", f.display());
                return ExitCode::from(64);
            }
        },
    };
    let sim = match Sim::start(&scenario, &out).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("packetcapture-sim: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    for (name, addr) in &sim.api_servers {
        eprintln!("packetcapture-sim: cluster {name}: API server https://{addr}");
    }
    eprintln!("packetcapture-sim: Voltron https://{}", sim.voltron_addr);
    eprintln!("packetcapture-sim: ready; files in {}", sim.out.display());
    let cluster = sim.local().clone();
    let (execs, reset) = (sim.out.join("execs"), sim.out.join("reset-peak-execs"));
    tokio::spawn(async move {
        loop {
            if std::fs::remove_file(&reset).is_ok() {
                cluster.reset_peak_execs();
            }
            let running = cluster
                .running_execs
                .load(std::sync::atomic::Ordering::SeqCst);
            let peak = cluster.peak_execs.load(std::sync::atomic::Ordering::SeqCst);
            let started = cluster
                .execs_started
                .load(std::sync::atomic::Ordering::SeqCst);
            let _ = std::fs::write(&execs, format!("{running} {peak} {started}\n"));
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    });
    let _ = tokio::signal::ctrl_c().await;
    ExitCode::SUCCESS
}
