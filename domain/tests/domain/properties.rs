//! Properties of the archive engine, over generated tar streams: whatever the files, the
//! chunking, and wherever a stream is cut or its producer fails, a download is either whole
//! (entries byte-identical to the files) or fails with no zip that opens.

use std::sync::Arc;

use futures_util::StreamExt;
use packetcapture_domain::archive::{Engine, EntryNamer, NodeSource, stream_zip};
use packetcapture_domain::testing::{Script, ScriptEnd, ScriptedFetcher};
use packetcapture_domain::{CaptureDir, CaptureRef, Compression, EntryPoint, NodeName};
use proptest::prelude::*;

use crate::support::{tar_of, unzip};

/// A node's files: names unique per node, sizes around the 512-byte block edges.
fn node_files() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    proptest::collection::btree_map(
        "[a-z]{1,12}\\.pcap",
        (
            prop_oneof![0usize..3, 510usize..515, 1000usize..5000],
            any::<u8>(),
        )
            .prop_map(|(len, seed)| (0..len).map(|i| seed.wrapping_add(i as u8)).collect()),
        0..4,
    )
    .prop_map(|files| files.into_iter().collect())
}

fn tar(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let refs: Vec<(&str, &[u8], u64)> = files
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice(), 1_700_000_000))
        .collect();
    tar_of(&refs)
}

/// Downloads the nodes' scripted streams: the bytes received, and whether it ended whole.
fn download(scripts: Vec<Script>) -> (Vec<u8>, bool) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut fetcher = ScriptedFetcher::default();
        let reference = CaptureRef::parse("dev", "cap").unwrap();
        let mut sources = Vec::new();
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
        }
        let started = stream_zip(
            Arc::new(fetcher),
            sources,
            EntryNamer::default(),
            Compression::Stored,
            &Engine::default(),
            "tester",
        )
        .await;
        let mut bytes = Vec::new();
        let mut stream = match started {
            Ok(Some(stream)) => stream,
            Ok(None) => return (bytes, true),
            Err(_) => return (bytes, false),
        };
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(_) => return (bytes, false),
            }
        }
        (bytes, true)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn whole_streams_give_entries_byte_identical_to_the_files(
        nodes in proptest::collection::vec(node_files(), 1..4),
        chunk in 1usize..3000,
    ) {
        let scripts = nodes
            .iter()
            .map(|files| Script { chunk, ..Script::clean(tar(files)) })
            .collect();
        let (bytes, whole) = download(scripts);
        prop_assert!(whole);
        let expected: Vec<(String, Vec<u8>)> = nodes.iter().flatten().cloned().collect();
        if expected.is_empty() {
            prop_assert!(bytes.is_empty(), "no file: no byte");
        } else {
            let got: Vec<(String, Vec<u8>)> =
                unzip(&bytes).unwrap().into_iter().map(|e| (e.0, e.1)).collect();
            // Names that repeat across nodes get the node in front; compare base names.
            let got: Vec<(String, Vec<u8>)> = got
                .into_iter()
                .map(|(n, d)| (n.rsplit('/').next().unwrap_or(&n).to_owned(), d))
                .collect();
            prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn a_stream_cut_anywhere_before_its_end_block_never_gives_a_zip_that_opens(
        nodes in proptest::collection::vec(node_files(), 1..4),
        which in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
        chunk in 1usize..3000,
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
        let (bytes, whole) = download(scripts);
        if at >= end {
            prop_assert!(whole, "cut at {at} of {full}, past the end block");
        } else {
            prop_assert!(!whole, "cut at {at} of {full} must fail the download");
            prop_assert!(unzip(&bytes).is_err(), "and leave no zip that opens");
        }
    }

    #[test]
    fn a_producer_failing_at_any_read_fails_the_download_with_no_zip_that_opens(
        nodes in proptest::collection::vec(node_files(), 1..4),
        which in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
        chunk in 1usize..3000,
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
        let (bytes, whole) = download(scripts);
        prop_assert!(!whole, "a producer that failed (after {at} bytes) fails the download");
        prop_assert!(unzip(&bytes).is_err());
    }
}
