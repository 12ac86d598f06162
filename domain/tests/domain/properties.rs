//! Properties of the archive engine, over generated tar streams: whatever the files, the
//! chunking, the concurrency, the spool (its storage, its memory budget, its limit), and
//! wherever a stream is cut or its producer fails, a download is either whole (entries
//! byte-identical to the files, named as the service names them) or fails with no zip that
//! opens. The strategies are checked to reach what matters: spooling to the storage,
//! producers waiting for room, the concurrency bound, names on several nodes.

use std::sync::Arc;

use futures_util::StreamExt;
use packetcapture_domain::archive::{
    Engine, EntryNamer, FetchOptions, MemorySpool, NodeSource, SpoolLimits, stream_zip,
};
use packetcapture_domain::testing::{Script, ScriptEnd, ScriptedFetcher};
use packetcapture_domain::{
    CaptureDir, CaptureRef, Compression, EntryPoint, NodeFiles, NodeName, SpoolStorage,
};
use packetcapture_local_fs::TempSpool;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::support::{tar_of, unzip};

/// A node's files: names unique per node from a small alphabet (so names often repeat
/// across nodes), sizes around the 512-byte block edges and some past the spool budgets.
fn node_files() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    proptest::collection::btree_map(
        "[a-c]{1,2}\\.pcap",
        (
            prop_oneof![
                3 => 0usize..3,
                3 => 510usize..515,
                3 => 1000usize..5000,
                2 => 20_000usize..70_000,
            ],
            any::<u8>(),
        )
            .prop_map(|(len, seed)| (0..len).map(|i| seed.wrapping_add(i as u8)).collect()),
        0..4,
    )
    .prop_map(|files| files.into_iter().collect())
}

/// How the engine runs: nodes read at once, the spool's storage, its memory budget and its
/// limit (small enough that producers wait for room).
#[derive(Clone, Debug)]
struct Setup {
    concurrency: usize,
    files: bool,
    memory: u64,
    total: u64,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        1usize..=3,
        any::<bool>(),
        prop_oneof![Just(0u64), 512u64..4096, Just(1 << 20)],
        prop_oneof![2_000u64..40_000, Just(SpoolLimits::DEFAULT_TOTAL)],
    )
        .prop_map(|(concurrency, files, memory, total)| Setup {
            concurrency,
            files,
            memory,
            total,
        })
}

fn tar(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let refs: Vec<(&str, &[u8], u64)> = files
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice(), 1_700_000_000))
        .collect();
    tar_of(&refs)
}

/// What a download came to.
struct Run {
    bytes: Vec<u8>,
    whole: bool,
    /// Bytes ever held by the spool's storage at once.
    peak_disk: u64,
    /// Times a producer waited for room.
    waits: u64,
    /// The most node streams open at once.
    max_open: usize,
}

/// Downloads the nodes' scripted streams with `setup`, the entry names decided from the
/// nodes' file lists (as the service does from the capture's status).
fn download(scripts: Vec<Script>, names: &[Vec<String>], setup: &Setup) -> Run {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut fetcher = ScriptedFetcher::default();
        let reference = CaptureRef::parse("dev", "cap").unwrap();
        let mut sources = Vec::new();
        let mut status = Vec::new();
        for (i, script) in scripts.into_iter().enumerate() {
            let node = format!("node-{i}");
            fetcher = fetcher.with(&node, script);
            sources.push(NodeSource {
                entry: EntryPoint {
                    node: NodeName::new(&node).unwrap(),
                    handle: String::new(),
                },
                dir: CaptureDir::new(&node, "/pcap", &reference).unwrap(),
                files: None,
            });
            status.push(NodeFiles {
                node,
                directory: "/pcap".into(),
                file_names: names.get(i).cloned().unwrap_or_default(),
                state: None,
            });
        }
        let storage: Arc<dyn SpoolStorage> = if setup.files {
            Arc::new(TempSpool::new(None))
        } else {
            Arc::new(MemorySpool::default())
        };
        let engine = Engine {
            fetch: FetchOptions {
                concurrency: std::num::NonZeroUsize::new(setup.concurrency).unwrap(),
                ..FetchOptions::default()
            },
            spool: SpoolLimits {
                memory: setup.memory,
                total: setup.total,
            },
            storage,
            ..Engine::default()
        };
        let fetcher = Arc::new(fetcher);
        let started = stream_zip(
            fetcher.clone(),
            sources,
            EntryNamer::from_status(&status),
            Compression::Stored,
            &engine,
            "tester",
        )
        .await;
        let mut bytes = Vec::new();
        let whole = match started {
            Ok(Some(mut stream)) => loop {
                match stream.next().await {
                    Some(Ok(chunk)) => bytes.extend_from_slice(&chunk),
                    Some(Err(_)) => break false,
                    None => break true,
                }
            },
            Ok(None) => true,
            Err(_) => false,
        };
        Run {
            bytes,
            whole,
            peak_disk: engine.stats.peak_disk(),
            waits: engine.stats.waits(),
            max_open: fetcher.max_open(),
        }
    })
}

/// The entries the service must write for these nodes' files, in order: a name on more
/// than one node gets its node in front, on every node.
fn expected_entries(nodes: &[Vec<(String, Vec<u8>)>]) -> Vec<(String, Vec<u8>)> {
    let on_nodes = |name: &str| {
        nodes
            .iter()
            .filter(|files| files.iter().any(|(n, _)| n == name))
            .count()
    };
    nodes
        .iter()
        .enumerate()
        .flat_map(|(i, files)| {
            files.iter().map(move |(name, data)| {
                let entry = if on_nodes(name) > 1 {
                    format!("node-{i}/{name}")
                } else {
                    name.clone()
                };
                (entry, data.clone())
            })
        })
        .collect()
}

fn names_of(nodes: &[Vec<(String, Vec<u8>)>]) -> Vec<Vec<String>> {
    nodes
        .iter()
        .map(|files| files.iter().map(|(n, _)| n.clone()).collect())
        .collect()
}

/// What the whole-download property's cases reached.
#[derive(Debug, Default)]
struct Reached {
    cases: usize,
    spooled_to_storage: usize,
    waited: usize,
    bound_by_concurrency: usize,
    prefixed: usize,
}

#[test]
fn whole_streams_give_entries_byte_identical_to_the_files_and_named_as_the_service_does() {
    let reached = std::cell::RefCell::new(Reached::default());
    let mut runner = TestRunner::new(Config {
        cases: 96,
        ..Config::default()
    });
    let strategy = (
        proptest::collection::vec(node_files(), 1..6),
        1usize..3000,
        setup(),
    );
    runner
        .run(&strategy, |(nodes, chunk, setup)| {
            let scripts = nodes
                .iter()
                .map(|files| Script {
                    chunk,
                    ..Script::clean(tar(files))
                })
                .collect();
            let run = download(scripts, &names_of(&nodes), &setup);
            prop_assert!(run.whole, "{setup:?}");
            let expected = expected_entries(&nodes);
            if expected.is_empty() {
                prop_assert!(run.bytes.is_empty(), "no file: no byte");
            } else {
                let got: Vec<(String, Vec<u8>)> = unzip(&run.bytes)
                    .map_err(|e| TestCaseError::fail(format!("{e}")))?
                    .into_iter()
                    .map(|e| (e.0, e.1))
                    .collect();
                prop_assert_eq!(&got, &expected, "{:?}", setup);
            }
            prop_assert!(run.max_open <= setup.concurrency);
            let mut r = reached.borrow_mut();
            r.cases += 1;
            r.spooled_to_storage += usize::from(run.peak_disk > 0);
            r.waited += usize::from(run.waits > 0);
            r.bound_by_concurrency +=
                usize::from(nodes.len() > setup.concurrency && run.max_open == setup.concurrency);
            r.prefixed += usize::from(expected.iter().any(|(n, _)| n.contains('/')));
            Ok(())
        })
        .unwrap();
    let r = reached.into_inner();
    eprintln!("REACHED {r:?}");
    // Each interesting case in at least a tenth of the cases that ran.
    let tenth = r.cases / 10;
    assert!(
        r.spooled_to_storage >= tenth
            && r.waited >= tenth
            && r.bound_by_concurrency >= tenth
            && r.prefixed >= tenth,
        "the strategy reaches too few interesting cases: {r:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn a_stream_cut_anywhere_before_its_end_block_never_gives_a_zip_that_opens(
        nodes in proptest::collection::vec(node_files(), 1..5),
        which in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
        chunk in 1usize..3000,
        setup in setup(),
    ) {
        let mut streams: Vec<Vec<u8>> = nodes.iter().map(|f| tar(f)).collect();
        let victim = which.index(streams.len());
        let full = streams[victim].len();
        // The stream counts as ended once its first zero block is in.
        let end = full - 1024 + 512;
        let at = cut.index(full + 1);
        streams[victim].truncate(at);
        let scripts = streams
            .into_iter()
            .map(|data| Script { chunk, ..Script::clean(data) })
            .collect();
        let run = download(scripts, &names_of(&nodes), &setup);
        if at >= end {
            prop_assert!(run.whole, "cut at {at} of {full}, past the end block");
        } else {
            prop_assert!(!run.whole, "cut at {at} of {full} must fail the download");
            prop_assert!(unzip(&run.bytes).is_err(), "and leave no zip that opens");
        }
    }

    #[test]
    fn a_producer_failing_at_any_read_fails_the_download_with_no_zip_that_opens(
        nodes in proptest::collection::vec(node_files(), 1..5),
        which in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
        chunk in 1usize..3000,
        setup in setup(),
    ) {
        let mut streams: Vec<Vec<u8>> = nodes.iter().map(|f| tar(f)).collect();
        let victim = which.index(streams.len());
        let at = cut.index(streams[victim].len() + 1);
        streams[victim].truncate(at);
        let scripts = streams
            .into_iter()
            .enumerate()
            .map(|(i, data)| {
                let end = if i == victim {
                    ScriptEnd::Fail("command terminated with exit code 1".into())
                } else {
                    ScriptEnd::Clean
                };
                Script { chunk, end, ..Script::clean(data) }
            })
            .collect();
        let run = download(scripts, &names_of(&nodes), &setup);
        prop_assert!(!run.whole, "a producer that failed (after {at} bytes) fails the download");
        prop_assert!(unzip(&run.bytes).is_err());
    }
}
