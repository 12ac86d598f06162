//! `packetcapture-load --url URL --token T --cacert FILE [--concurrency N] [--requests M]`:
//! a small load generator for `make bench`. Prints time to first byte (response headers) and
//! whole-request time, p50 and p99, and requests per second, as `key=value` lines.
//!
//! With `--follow-seconds S` it reads one followed `merged.pcapng` (the URL's `follow=true`)
//! for S seconds instead and prints the packets received and their delay (arrival here minus
//! the packet's timestamp, which the simulation's live writer sets to when it wrote it): p50,
//! p99 and max, and how many came after a later one.

use std::sync::Arc;
use std::time::{Duration, Instant};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(url), Some(token), Some(cacert)) = (
        arg(&args, "--url"),
        arg(&args, "--token"),
        arg(&args, "--cacert"),
    ) else {
        eprintln!(
            "usage: packetcapture-load --url URL --token T --cacert FILE [--concurrency N] [--requests M]"
        );
        std::process::exit(64);
    };
    let concurrency: usize = arg(&args, "--concurrency")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1);
    let requests: usize = arg(&args, "--requests")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(200);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&cacert)?)?;
    if let Some(seconds) = arg(&args, "--follow-seconds") {
        let client = reqwest::Client::builder()
            .tls_certs_only([ca])
            .http1_only()
            .build()?;
        return follow(&client, &url, &token, Duration::from_secs(seconds.parse()?)).await;
    }
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .http1_only()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    // Warm up: connections, caches of the service.
    for _ in 0..concurrency.max(3) {
        client
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await?
            .bytes()
            .await?;
    }
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, token, next) = (client.clone(), url.clone(), token.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < requests {
                let t = Instant::now();
                let r = client.get(&url).bearer_auth(&token).send().await?;
                let ttfb = t.elapsed();
                let ok = r.status().is_success();
                r.bytes().await?;
                if !ok {
                    return Err("a request failed".into());
                }
                samples.push((ttfb, t.elapsed()));
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(samples)
        }));
    }
    let mut ttfb = Vec::new();
    let mut total = Vec::new();
    for t in tasks {
        for (a, b) in t.await?.map_err(|e| e.to_string())? {
            ttfb.push(a);
            total.push(b);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    ttfb.sort();
    total.sort();
    println!("requests={}", total.len());
    println!("ttfb_p50_ms={:.2}", percentile(&ttfb, 0.50));
    println!("ttfb_p99_ms={:.2}", percentile(&ttfb, 0.99));
    println!("total_p50_ms={:.2}", percentile(&total, 0.50));
    println!("total_p99_ms={:.2}", percentile(&total, 0.99));
    println!("rps={:.1}", total.len() as f64 / elapsed);
    Ok(())
}

fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Reads a followed pcapng for `span`, timing each Enhanced Packet Block's arrival against its
/// timestamp (nanoseconds: the service writes `if_tsresol` 9; other resolutions are read too).
async fn follow(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    span: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut r = client.get(url).bearer_auth(token).send().await?;
    if !r.status().is_success() {
        return Err(format!("{url}: {}", r.status()).into());
    }
    let end = tokio::time::Instant::now() + span;
    let mut held: Vec<u8> = Vec::new();
    let mut units: Vec<u64> = Vec::new(); // per interface: nanoseconds per tick
    let mut delays: Vec<Duration> = Vec::new();
    let (mut latest, mut late) = (0u64, 0u64);
    while let Ok(chunk) = tokio::time::timeout_at(end, r.chunk()).await {
        let Some(chunk) = chunk? else { break };
        let arrived = wall_ns();
        held.extend_from_slice(&chunk);
        let mut at = 0;
        while held.len() - at >= 12 {
            let word = |o: usize| {
                let b = &held[at + o..at + o + 4];
                u32::from_le_bytes([b[0], b[1], b[2], b[3]])
            };
            let (kind, len) = (word(0), word(4) as usize);
            if len < 12 || held.len() - at < len {
                break;
            }
            match kind {
                1 => {
                    // Interface Description: options from byte 16; if_tsresol is option 9.
                    let mut unit = 1_000u64;
                    let mut o = 16;
                    while o + 4 <= len - 4 {
                        let code = u16::from_le_bytes([held[at + o], held[at + o + 1]]);
                        let olen =
                            u16::from_le_bytes([held[at + o + 2], held[at + o + 3]]) as usize;
                        if code == 0 {
                            break;
                        }
                        if code == 9 && olen == 1 {
                            let v = held[at + o + 4];
                            unit = if v & 0x80 == 0 {
                                1_000_000_000 / 10u64.pow(u32::from(v)).max(1)
                            } else {
                                (1_000_000_000u64 >> (v & 0x7f)).max(1)
                            };
                        }
                        o += 4 + olen.div_ceil(4) * 4;
                    }
                    units.push(unit);
                }
                6 => {
                    let id = word(8) as usize;
                    let ticks = (u64::from(word(12)) << 32) | u64::from(word(16));
                    let ts = ticks * units.get(id).copied().unwrap_or(1_000);
                    delays.push(Duration::from_nanos(arrived.saturating_sub(ts)));
                    if ts < latest {
                        late += 1;
                    }
                    latest = latest.max(ts);
                }
                _ => {}
            }
            at += len;
        }
        held.drain(..at);
    }
    delays.sort();
    println!("packets={}", delays.len());
    println!("delay_p50_ms={:.1}", percentile(&delays, 0.50));
    println!("delay_p99_ms={:.1}", percentile(&delays, 0.99));
    println!("delay_max_ms={:.1}", percentile(&delays, 1.0));
    println!("after_a_later_one={late}");
    Ok(())
}
