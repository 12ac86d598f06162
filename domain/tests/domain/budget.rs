//! The process's budget in the engine: a merge beyond the streams that may be open at once is
//! read from the spool (the same file, with fewer execs), a zip reads more nodes at once only
//! while streams are spare, requests wait their turn or are refused, and nothing is left
//! reserved after a download.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use packetcapture_domain::archive::{
    Choice, Engine, EntryNamer, FetchOptions, NodeSource, SpoolLimits, StreamSource, stream_pcapng,
    stream_zip,
};

use packetcapture_domain::testing::{Script, ScriptedFetcher};
use packetcapture_domain::{
    Budget, BudgetLimits, CaptureDir, CaptureRef, Compression, EntryPoint, Error, NodeName,
};

use crate::merge::{pcap_file, read_pcapng};
use crate::support::tar_of;

fn source(n: &str) -> NodeSource {
    let reference = CaptureRef::parse("dev", "cap").unwrap();
    NodeSource {
        entry: EntryPoint {
            node: NodeName::new(n).unwrap(),
            handle: format!("mem-{n}"),
        },
        dir: CaptureDir::new(n, "/pcap", &reference).unwrap(),
        files: None,
    }
}

/// `nodes` nodes, each one pcap of `packets` packets whose times interleave across nodes.
fn capture(nodes: usize, packets: u32) -> Arc<ScriptedFetcher> {
    let mut fetcher = ScriptedFetcher::default();
    for n in 0..nodes {
        let records: Vec<(u32, u32, Vec<u8>)> = (0..packets)
            .map(|i| {
                let at = i * nodes as u32 + n as u32;
                (1_700_000_000 + at / 1000, at % 1000, vec![n as u8; 200])
            })
            .collect();
        let tar = tar_of(&[(&format!("web_cali{n}.pcap"), &pcap_file(false, &records), 1)]);
        fetcher = fetcher.with(
            &format!("n{n}"),
            Script {
                chunk: 4096,
                pause: Duration::from_millis(1),
                ..Script::clean(tar)
            },
        );
    }
    Arc::new(fetcher)
}

fn streams(nodes: usize) -> Vec<StreamSource> {
    (0..nodes)
        .map(|n| StreamSource {
            source: source(&format!("n{n}")),
            name: format!("n{n}/cali{n}"),
            description: String::new(),
        })
        .collect()
}

fn engine(streams: usize, memory: u64, queue: usize, wait_ms: u64) -> Engine {
    Engine {
        fetch: FetchOptions {
            concurrency: NonZeroUsize::new(4).unwrap(),
            ..FetchOptions::default()
        },
        budget: Arc::new(Budget::new(BudgetLimits {
            streams: NonZeroUsize::new(streams).unwrap(),
            memory,
            queue,
            wait: Duration::from_millis(wait_ms),
        })),
        ..Engine::default()
    }
}

async fn merge(fetcher: Arc<ScriptedFetcher>, n: usize, engine: &Engine) -> Result<Vec<u8>, Error> {
    let stream = stream_pcapng(fetcher, streams(n), Choice::default(), engine, "jane")
        .await?
        .expect("packets");
    let chunks: Vec<_> = stream.collect().await;
    chunks
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map(|c| c.concat())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_beyond_the_open_streams_comes_from_the_spool_and_equals_the_live_one() {
    let live_engine = engine(64, 1 << 30, 8, 1000);
    let fetcher = capture(40, 250);
    let live = merge(fetcher.clone(), 40, &live_engine).await.unwrap();
    assert_eq!(fetcher.max_open(), 40, "live: every stream at once");
    assert_eq!(
        live_engine.budget.stats().streams(),
        0,
        "nothing left reserved"
    );

    // Eight streams may be open: the 40 are read four at a time into the spool.
    let spooled_engine = engine(8, 1 << 30, 8, 1000);
    let fetcher = capture(40, 250);
    let spooled = merge(fetcher.clone(), 40, &spooled_engine).await.unwrap();
    assert_eq!(
        fetcher.max_open(),
        4,
        "the fetch concurrency, within the budget"
    );
    assert_eq!(spooled, live, "the same file, byte for byte");
    let file = read_pcapng(&spooled);
    assert_eq!(file.packets.len(), 40 * 250);
    assert!(file.packets.windows(2).all(|w| w[0].1 <= w[1].1));
    assert_eq!(spooled_engine.budget.stats().streams(), 0);
    assert_eq!(spooled_engine.budget.stats().memory(), 0);

    // A spool too small for what must be read before the first packet: refused, not wedged.
    let small = Engine {
        spool: SpoolLimits {
            memory: 16 * 1024,
            total: 64 * 1024,
        },
        ..engine(8, 1 << 30, 8, 1000)
    };
    let refused =
        tokio::time::timeout(Duration::from_secs(10), merge(capture(40, 250), 40, &small))
            .await
            .expect("no wait for room that never comes");
    assert!(
        matches!(refused, Err(Error::SpoolExhausted { streams: 40, .. })),
        "{refused:?}"
    );
    // And a merge the whole budget cannot hold even so.
    let tiny = engine(8, 64 * 1024, 8, 1000);
    assert!(matches!(
        merge(capture(40, 5), 40, &tiny).await,
        Err(Error::TooManyStreams { streams: 40, .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zip_reads_more_nodes_at_once_only_while_streams_are_spare() {
    let engine = Engine {
        fetch: FetchOptions {
            concurrency: NonZeroUsize::new(16).unwrap(),
            ..FetchOptions::default()
        },
        ..engine(3, 1 << 30, 8, 1000)
    };
    for (held, expected) in [(0, 3), (2, 1)] {
        let elsewhere = engine.budget.try_reserve(held, 0).unwrap();
        let mut fetcher = ScriptedFetcher::default();
        for n in 0..8 {
            let data = vec![n as u8; 200_000];
            let script = Script {
                chunk: 4096,
                pause: Duration::from_millis(1),
                ..Script::clean(tar_of(&[(&format!("f{n}.pcap"), &data, 1)]))
            };
            fetcher = fetcher.with(&format!("n{n}"), script);
        }
        let fetcher = Arc::new(fetcher);
        let sources = (0..8).map(|n| source(&format!("n{n}"))).collect();
        let zip = stream_zip(
            fetcher.clone(),
            sources,
            EntryNamer::default(),
            Compression::Stored,
            &engine,
            "jane",
        )
        .await
        .unwrap()
        .unwrap();
        let bytes: Vec<_> = zip.collect().await;
        assert!(bytes.iter().all(Result::is_ok));
        assert_eq!(
            fetcher.max_open(),
            expected,
            "{held} of 3 streams held elsewhere"
        );
        drop(elsewhere);
        assert_eq!(engine.budget.stats().streams(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_waits_its_turn_and_is_refused_when_the_queue_is_full_or_the_wait_too_long() {
    // Ten streams, a queue of four (one place per user), 300 ms of patience.
    let engine = Arc::new(engine(10, 1 << 30, 4, 300));
    let everything = engine.budget.try_reserve(10, 0).unwrap();
    let e = engine.clone();
    let first = tokio::spawn(async move { merge(capture(5, 5), 5, &e).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        engine.budget.stats().queued(),
        1,
        "jane's first merge waits"
    );
    // jane's second cannot even wait; bob's can.
    let second = merge(capture(5, 5), 5, &engine).await;
    assert!(
        matches!(&second, Err(Error::Busy { reason, retry_after }) if reason.contains("jane already has 1") && !retry_after.is_zero()),
        "{second:?}"
    );
    let first = first.await.unwrap();
    assert!(
        matches!(&first, Err(Error::Busy { reason, .. }) if reason.contains("waited")),
        "{first:?}"
    );
    assert_eq!(engine.budget.stats().refused(), 2);
    // Once the streams are free, it goes through.
    drop(everything);
    let e = engine.clone();
    let waiting = tokio::spawn(async move { merge(capture(5, 5), 5, &e).await });
    let out = waiting.await.unwrap().unwrap();
    assert_eq!(read_pcapng(&out).packets.len(), 25);
    assert_eq!(engine.budget.stats().streams(), 0);
}
