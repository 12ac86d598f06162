//! The archive engine: naming, completeness, abort-before-central-directory, streaming,
//! concurrency, spooling. Each runs on both spool storages: in memory (the default of tests
//! and tools) and unlinked files (the service's `TempSpool`).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use packetcapture_domain::archive::{
    Engine, EntryNamer, FetchOptions, MemorySpool, NodeSource, SpoolLimits, stream_zip,
};
use packetcapture_domain::testing::{NodeFileTable, Script, ScriptEnd, ScriptedFetcher};
use packetcapture_domain::{
    CaptureDir, CaptureRef, Compression, EntryPoint, Error, FileFetcher, NodeName, SpoolStorage,
};
use packetcapture_local_fs::TempSpool;

use crate::support::{capture, tar_of, unzip};

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

/// What a download gave: the bytes received, and how it ended (`Ok(None)` when there was no
/// file, so no byte at all).
struct Outcome {
    bytes: Vec<u8>,
    result: Result<Option<()>, Error>,
}

async fn download(
    fetcher: Arc<dyn FileFetcher>,
    nodes: &[&str],
    namer: EntryNamer,
    compression: Compression,
    engine: &Engine,
) -> Outcome {
    let sources = nodes.iter().map(|n| source(n)).collect();
    let mut bytes = Vec::new();
    let stream = match stream_zip(fetcher, sources, namer, compression, engine, "tester").await {
        Ok(Some(stream)) => stream,
        Ok(None) => {
            return Outcome {
                bytes,
                result: Ok(None),
            };
        }
        Err(e) => {
            return Outcome {
                bytes,
                result: Err(e),
            };
        }
    };
    tokio::pin!(stream);
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(e) => {
                return Outcome {
                    bytes,
                    result: Err(e),
                };
            }
        }
    }
    Outcome {
        bytes,
        result: Ok(Some(())),
    }
}

/// The spool storages the engine runs on: in memory, and the service's unlinked files.
fn storages() -> [(&'static str, Arc<dyn SpoolStorage>); 2] {
    [
        ("memory", Arc::new(MemorySpool::default())),
        ("files", Arc::new(TempSpool::new(None))),
    ]
}

/// Downloads raw tar streams, one per node: with default options, then with no memory
/// budget (every byte that waits goes to the storage) on each storage; the three must end
/// the same way, with the same bytes when whole. The first outcome.
async fn run(nodes: Vec<(&str, Vec<u8>)>, namer: EntryNamer, compression: Compression) -> Outcome {
    let names: Vec<&str> = nodes.iter().map(|(n, _)| *n).collect();
    let mut fetcher = ScriptedFetcher::default();
    for (n, data) in nodes {
        fetcher = fetcher.with(n, Script::clean(data));
    }
    let fetcher = Arc::new(fetcher);
    let mut engines = vec![("default", Engine::default())];
    for (name, storage) in storages() {
        engines.push((
            name,
            Engine {
                spool: SpoolLimits {
                    memory: 0,
                    ..SpoolLimits::default()
                },
                storage,
                ..Engine::default()
            },
        ));
    }
    let mut first: Option<Outcome> = None;
    for (name, engine) in engines {
        let out = download(fetcher.clone(), &names, namer.clone(), compression, &engine).await;
        match &first {
            None => first = Some(out),
            Some(f) => {
                assert_eq!(
                    format!("{:?}", out.result),
                    format!("{:?}", f.result),
                    "the {name} storage ends as the default does"
                );
                if f.result.is_ok() {
                    assert_eq!(
                        out.bytes, f.bytes,
                        "the {name} storage gives the same bytes"
                    );
                }
            }
        }
    }
    first.unwrap()
}

fn names_and_data(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    unzip(bytes)
        .unwrap()
        .into_iter()
        .map(|e| (e.0, e.1))
        .collect()
}

#[tokio::test]
async fn files_of_several_nodes_become_flat_entries_with_their_bytes_and_times() {
    let out = run(
        vec![
            (
                "node-a",
                tar_of(&[("dev/cap/web_eth0.pcap", b"aaaa", 1_700_000_000)]),
            ),
            (
                "node-b",
                tar_of(&[
                    ("dev/cap/db_eth0.pcap", b"bb", 1_700_000_100),
                    ("dev/cap/db_eth0-17.pcap", b"b", 5),
                ]),
            ),
        ],
        EntryNamer::default(),
        Compression::Stored,
    )
    .await;
    out.result.unwrap().unwrap();
    let entries = unzip(&out.bytes).unwrap();
    let names: Vec<_> = entries
        .iter()
        .map(|e| (e.0.as_str(), e.1.as_slice()))
        .collect();
    assert_eq!(
        names,
        [
            ("web_eth0.pcap", &b"aaaa"[..]),
            ("db_eth0.pcap", b"bb"),
            ("db_eth0-17.pcap", b"b")
        ]
    );
    assert_eq!(entries[0].2, Some(1_700_000_000));
    assert_eq!(entries[1].2, Some(1_700_000_100));
}

#[tokio::test]
async fn a_name_on_two_nodes_gets_the_node_in_front_on_both() {
    let status = capture(&[
        ("node-a", &["x.pcap", "a.pcap"], None),
        ("node-b", &["x.pcap"], None),
    ]);
    let out = run(
        vec![
            (
                "node-a",
                tar_of(&[("x.pcap", b"from a", 1), ("a.pcap", b"only a", 1)]),
            ),
            ("node-b", tar_of(&[("x.pcap", b"from b", 1)])),
        ],
        EntryNamer::from_status(&status.files),
        Compression::Stored,
    )
    .await;
    out.result.unwrap().unwrap();
    assert_eq!(
        names_and_data(&out.bytes),
        [
            ("node-a/x.pcap".to_owned(), b"from a".to_vec()),
            ("a.pcap".to_owned(), b"only a".to_vec()),
            ("node-b/x.pcap".to_owned(), b"from b".to_vec())
        ]
    );
}

#[tokio::test]
async fn a_collision_the_status_did_not_predict_still_gives_unique_names() {
    let out = run(
        vec![
            ("node-a", tar_of(&[("y.pcap", b"1", 1)])),
            (
                "node-b",
                tar_of(&[("y.pcap", b"2", 1), ("sub/y.pcap", b"3", 1)]),
            ),
        ],
        EntryNamer::default(),
        Compression::Stored,
    )
    .await;
    out.result.unwrap().unwrap();
    let names: Vec<_> = unzip(&out.bytes)
        .unwrap()
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(names, ["y.pcap", "node-b/y.pcap", "node-b/y.pcap~2"]);
}

#[tokio::test]
async fn nodes_without_files_send_nothing_at_all() {
    let out = run(
        vec![("node-a", tar_of(&[])), ("node-b", tar_of(&[]))],
        EntryNamer::default(),
        Compression::Stored,
    )
    .await;
    assert!(matches!(out.result, Ok(None)), "no file: no stream");
    assert!(out.bytes.is_empty());
}

#[tokio::test]
async fn a_zero_byte_file_is_an_entry() {
    let out = run(
        vec![("node-a", tar_of(&[("empty.pcap", b"", 9)]))],
        EntryNamer::default(),
        Compression::Stored,
    )
    .await;
    out.result.unwrap().unwrap();
    let entries = unzip(&out.bytes).unwrap();
    assert_eq!(
        (entries[0].0.as_str(), entries[0].1.len()),
        ("empty.pcap", 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deflate_round_trips_and_is_smaller_on_repetitive_data() {
    let data = b"0123456789".repeat(10_000);
    let stored = run(
        vec![("n", tar_of(&[("f.pcap", &data, 1)]))],
        EntryNamer::default(),
        Compression::Stored,
    )
    .await;
    let deflated = run(
        vec![("n", tar_of(&[("f.pcap", &data, 1)]))],
        EntryNamer::default(),
        Compression::Deflate,
    )
    .await;
    stored.result.unwrap().unwrap();
    deflated.result.unwrap().unwrap();
    assert!(deflated.bytes.len() * 10 < stored.bytes.len());
    assert_eq!(unzip(&deflated.bytes).unwrap()[0].1, data);
}

#[tokio::test]
async fn a_tar_cut_inside_a_file_is_truncated_and_leaves_no_readable_zip() {
    let full = tar_of(&[("a.pcap", &[7u8; 4096], 1), ("b.pcap", &[8u8; 4096], 1)]);
    let cut = full[..512 * 2 + 4096 + 512 + 1000].to_vec(); // inside b.pcap's data
    let out = run(
        vec![("node-a", cut)],
        EntryNamer::default(),
        Compression::Stored,
    )
    .await;
    match out.result {
        Err(Error::TruncatedArchive { node, reason }) => {
            assert_eq!(node, "node-a");
            assert!(reason.contains("b.pcap"), "{reason}");
        }
        other => panic!("expected a truncation error, got {other:?}"),
    }
    assert!(!out.bytes.is_empty(), "the first file was already streamed");
    assert!(
        unzip(&out.bytes).is_err(),
        "a failed archive must never open as a whole zip"
    );
}

#[tokio::test]
async fn a_tar_without_its_end_block_is_truncated() {
    let full = tar_of(&[("a.pcap", &[7u8; 512], 1)]);
    let cut = full[..512 * 3].to_vec(); // dir header, file header, data: then nothing
    let out = run(
        vec![("node-a", cut)],
        EntryNamer::default(),
        Compression::Stored,
    )
    .await;
    assert!(
        matches!(out.result, Err(Error::TruncatedArchive { .. })),
        "{:?}",
        out.result
    );
    assert!(unzip(&out.bytes).is_err());
}

#[tokio::test]
async fn an_empty_stream_is_not_an_empty_archive() {
    let out = run(
        vec![("node-a", Vec::new())],
        EntryNamer::default(),
        Compression::Stored,
    )
    .await;
    assert!(
        matches!(out.result, Err(Error::TruncatedArchive { .. })),
        "{:?}",
        out.result
    );
}

#[tokio::test]
async fn a_producer_failing_after_the_first_bytes_fails_the_archive() {
    let fetcher = ScriptedFetcher::default()
        .with("node-a", Script::clean(tar_of(&[("a.pcap", b"fine", 1)])))
        .with(
            "node-b",
            Script {
                end: ScriptEnd::Fail("command terminated with exit code 2".into()),
                ..Script::clean(tar_of(&[("b.pcap", b"cut", 1)]))
            },
        );
    let out = download(
        Arc::new(fetcher),
        &["node-a", "node-b"],
        EntryNamer::default(),
        Compression::Stored,
        &Engine::default(),
    )
    .await;
    match out.result {
        Err(Error::NodeFiles { node, source, .. }) => {
            assert_eq!(node, "node-b");
            assert!(source.to_string().contains("exit code 2"));
        }
        other => panic!("expected a node failure, got {other:?}"),
    }
    assert!(
        unzip(&out.bytes).is_err(),
        "no central directory after a failure"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_zip_yields_the_whole_archive_or_none_for_no_file() {
    let files = Arc::new(
        NodeFileTable::default()
            .with_file("n1", "/pcap/dev/cap", "a.pcap", &[1; 200_000], 10)
            .with_file("n2", "/pcap/dev/cap", "b.pcap", &[2; 10], 20),
    );
    let engine = Engine::default();
    let stream = stream_zip(
        files.clone(),
        vec![source("n1"), source("n2")],
        EntryNamer::default(),
        Compression::Stored,
        &engine,
        "tester",
    )
    .await
    .unwrap()
    .unwrap();
    let chunks: Vec<_> = stream.collect().await;
    assert!(chunks.len() > 2, "the archive arrives in several chunks");
    let bytes: Vec<u8> = chunks.into_iter().flat_map(|c| c.unwrap()).collect();
    let entries = unzip(&bytes).unwrap();
    assert_eq!(
        entries.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
        ["a.pcap", "b.pcap"]
    );
    let empty = stream_zip(
        files,
        vec![source("n3")],
        EntryNamer::default(),
        Compression::Stored,
        &engine,
        "tester",
    )
    .await
    .unwrap();
    assert!(empty.is_none());
}

/// `n` nodes, each with one file of `size` bytes named after the node, sent in `chunk`-byte
/// reads with `pause` before each.
fn nodes(n: usize, size: usize, chunk: usize, pause: Duration) -> (ScriptedFetcher, Vec<String>) {
    let mut fetcher = ScriptedFetcher::default();
    let mut names = Vec::new();
    for i in 0..n {
        let name = format!("node-{i}");
        let data = vec![i as u8; size];
        let script = Script {
            chunk,
            pause,
            ..Script::clean(tar_of(&[(&format!("{name}.pcap"), &data, 1)]))
        };
        fetcher = fetcher.with(&name, script);
        names.push(name);
    }
    (fetcher, names)
}

/// Reads `concurrency` nodes at once, spooling to `storage` past a 64 KiB memory budget.
fn engine(concurrency: usize, storage: Arc<dyn SpoolStorage>) -> Engine {
    Engine {
        fetch: FetchOptions {
            concurrency: std::num::NonZeroUsize::new(concurrency).unwrap(),
            ..FetchOptions::default()
        },
        spool: SpoolLimits {
            memory: 64 * 1024,
            ..SpoolLimits::default()
        },
        storage,
        ..Engine::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_are_read_at_once_up_to_the_concurrency_and_the_zip_keeps_status_order() {
    for ((concurrency, expected_max), (spool, storage)) in [(16, 8), (3, 3), (1, 1)]
        .into_iter()
        .flat_map(|c| storages().map(|s| (c, s)))
    {
        let (fetcher, names) = nodes(8, 40_000, 4096, Duration::from_millis(2));
        let fetcher = Arc::new(fetcher);
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let out = download(
            fetcher.clone(),
            &names,
            EntryNamer::default(),
            Compression::Stored,
            &engine(concurrency, storage),
        )
        .await;
        out.result.unwrap().unwrap();
        assert_eq!(
            fetcher.max_open(),
            expected_max,
            "concurrency {concurrency} ({spool})"
        );
        let entries = names_and_data(&out.bytes);
        let order: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        let expected: Vec<String> = names.iter().map(|n| format!("{n}.pcap")).collect();
        assert_eq!(
            order, expected,
            "status order, whatever order nodes finish in"
        );
        for (i, (_, data)) in entries.iter().enumerate() {
            assert_eq!(data, &vec![i as u8; 40_000], "entry {i} whole");
        }
        assert_eq!(fetcher.open(), 0, "every stream closed at the end");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_failing_while_others_stream_aborts_the_download_and_closes_every_stream() {
    for (spool, storage) in storages() {
        // node-0 streams slowly and is written first; node-3 fails while it does.
        let (fetcher, names) = nodes(6, 2_000_000, 8192, Duration::from_millis(5));
        let failing = Script {
            end: ScriptEnd::Fail("command terminated with exit code 2".into()),
            ..Script::clean(tar_of(&[("bad.pcap", &[9u8; 1000], 1)])[..1000].to_vec())
        };
        let fetcher = Arc::new(fetcher.with("node-3", failing));
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let out = download(
            fetcher.clone(),
            &names,
            EntryNamer::default(),
            Compression::Stored,
            &engine(16, storage),
        )
        .await;
        match &out.result {
            Err(Error::NodeFiles { node, .. }) => assert_eq!(node, "node-3", "{spool}"),
            other => panic!("expected node-3's failure, got {other:?} ({spool})"),
        }
        // At once: node-0, whose turn is first, had not sent its file when the download
        // ended.
        assert!(
            fetcher.sent("node-0") < 2_000_000,
            "the failure ends the download at once, not when node-3's turn comes ({spool})"
        );
        assert!(unzip(&out.bytes).is_err());
        let mut open = fetcher.open();
        for _ in 0..100 {
            if open == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            open = fetcher.open();
        }
        assert_eq!(
            open, 0,
            "streams still open a second after the failure ({spool})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_closes_every_node_stream() {
    for (spool, storage) in storages() {
        let (fetcher, names) = nodes(5, 5_000_000, 8192, Duration::from_millis(2));
        let fetcher = Arc::new(fetcher);
        let sources = names.iter().map(|n| source(n)).collect();
        let engine = engine(16, storage);
        let mut stream = stream_zip(
            fetcher.clone(),
            sources,
            EntryNamer::default(),
            Compression::Stored,
            &engine,
            "tester",
        )
        .await
        .unwrap()
        .unwrap();
        stream.next().await.unwrap().unwrap();
        assert_eq!(fetcher.open(), 5, "all nodes are being read ({spool})");
        drop(stream);
        let mut open = fetcher.open();
        for _ in 0..100 {
            if open == 0 && engine.stats.files() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            open = fetcher.open();
        }
        assert_eq!(
            open, 0,
            "streams still open a second after the client left ({spool})"
        );
        assert_eq!(engine.stats.files(), 0, "no spool file left open ({spool})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_much_faster_than_the_writer_is_held_by_the_spool_limit() {
    for (spool, storage) in storages() {
        // node-0 is written first and trickles; node-1 could send 32 MiB at once.
        let slow = Script {
            chunk: 4096,
            pause: Duration::from_millis(5),
            ..Script::clean(tar_of(&[("slow.pcap", &[1u8; 400_000], 1)]))
        };
        let big = vec![2u8; 32 << 20];
        let fast = Script::clean(tar_of(&[("fast.pcap", &big, 1)]));
        let fetcher = Arc::new(
            ScriptedFetcher::default()
                .with("node-0", slow)
                .with("node-1", fast),
        );
        let limits = SpoolLimits {
            memory: 1 << 20,
            total: 4 << 20,
        };
        let engine = Engine {
            spool: limits,
            ..engine(16, storage)
        };
        let sources = vec![source("node-0"), source("node-1")];
        let mut stream = stream_zip(
            fetcher.clone(),
            sources,
            EntryNamer::default(),
            Compression::Stored,
            &engine,
            "tester",
        )
        .await
        .unwrap()
        .unwrap();
        let mut bytes = Vec::new();
        let mut peak_files = 0;
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk.unwrap());
            peak_files = peak_files.max(engine.stats.files());
            if bytes.len() < 200_000 {
                // While node-0 is written, node-1 may only have sent what fits in the spool.
                let held = fetcher.sent("node-1");
                assert!(
                    held <= limits.total + 512 * 1024,
                    "node-1 sent {held} bytes while the spool holds at most {} ({spool})",
                    limits.total
                );
            }
        }
        let stats = &engine.stats;
        assert!(
            stats.peak_memory() <= limits.memory,
            "memory {} ({spool})",
            stats.peak_memory()
        );
        assert!(
            stats.peak_memory() + stats.peak_disk() <= limits.total + 256 * 1024,
            "memory {} + files {} over the limit {} ({spool})",
            stats.peak_memory(),
            stats.peak_disk(),
            limits.total
        );
        assert!(
            stats.peak_disk() > 0,
            "past the memory budget, node-1 spooled to the storage ({spool})"
        );
        assert!(stats.waits() > 0, "node-1 waited for room ({spool})");
        assert!(peak_files >= 1);
        assert_eq!(
            (stats.files(), stats.memory(), stats.disk()),
            (0, 0, 0),
            "no spool file left, nothing held ({spool})"
        );
        let entries = names_and_data(&bytes);
        assert_eq!(
            entries[1].1, big,
            "the spooled node arrives whole ({spool})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_files_are_gone_after_an_abort() {
    for (spool, storage) in storages() {
        let engine = engine(16, storage);
        let (fetcher, names) = nodes(4, 3_000_000, 65536, Duration::from_millis(1));
        let slow_first = Script {
            chunk: 1024,
            pause: Duration::from_millis(20),
            ..Script::clean(tar_of(&[("first.pcap", &[0u8; 100_000], 1)]))
        };
        let fetcher = Arc::new(fetcher.with("node-0", slow_first));
        let sources = names.iter().map(|n| source(n)).collect();
        let mut stream = stream_zip(
            fetcher.clone(),
            sources,
            EntryNamer::default(),
            Compression::Stored,
            &engine,
            "tester",
        )
        .await
        .unwrap()
        .unwrap();
        stream.next().await.unwrap().unwrap();
        for _ in 0..200 {
            if engine.stats.files() > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            engine.stats.files() > 0,
            "the other nodes spooled ({spool})"
        );
        drop(stream);
        for _ in 0..100 {
            if engine.stats.files() == 0 && fetcher.open() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            (engine.stats.files(), engine.stats.disk(), fetcher.open()),
            (0, 0, 0),
            "spool files, spooled bytes and streams left after the client went away ({spool})"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_node_that_sends_nothing_past_the_idle_timeout_fails_the_download() {
    let stalled = Script {
        end: ScriptEnd::Hang,
        ..Script::clean(tar_of(&[("a.pcap", &[1u8; 5000], 1)])[..3000].to_vec())
    };
    let fetcher = Arc::new(ScriptedFetcher::default().with("node-a", stalled));
    let engine = Engine {
        fetch: FetchOptions {
            idle_timeout: Duration::from_secs(60),
            ..FetchOptions::default()
        },
        ..Engine::default()
    };
    let out = download(
        fetcher.clone(),
        &["node-a"],
        EntryNamer::default(),
        Compression::Stored,
        &engine,
    )
    .await;
    match out.result {
        Err(Error::NodeStalled { node, seconds }) => {
            assert_eq!((node.as_str(), seconds), ("node-a", 60))
        }
        other => panic!("expected a stall, got {other:?}"),
    }
    assert!(unzip(&out.bytes).is_err());
    tokio::task::yield_now().await;
    assert_eq!(fetcher.open(), 0, "the stalled stream is closed");
}
