//! `packetcapture-load --url URL --token T --cacert FILE [--concurrency N] [--requests M]`:
//! a small load generator for `make bench`. Prints time to first byte (response headers) and
//! whole-request time, p50 and p99, and requests per second, as `key=value` lines.

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
    let ca = reqwest::Certificate::from_pem(&std::fs::read(cacert)?)?;
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
