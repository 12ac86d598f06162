//! The archive engine: naming, completeness, abort-before-central-directory, streaming.

use std::io::{self, Cursor, Read};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures_util::StreamExt;
use packetcapture_domain::archive::{EntryNamer, NodeSource, stream_zip, write_zip};
use packetcapture_domain::testing::NodeFileTable;
use packetcapture_domain::{
    CaptureDir, CaptureRef, CaptureState, Compression, Error, FileFetcher, NodeName,
};
use tokio::io::{AsyncRead, ReadBuf};

use crate::support::{capture, tar_of, unzip};

fn node(n: &str) -> NodeName {
    NodeName::new(n).unwrap()
}

fn run(
    nodes: Vec<(&str, Vec<u8>)>,
    namer: EntryNamer,
    compression: Compression,
) -> (Result<u64, Error>, Vec<u8>) {
    let mut out = Vec::new();
    let inputs = nodes
        .into_iter()
        .map(|(n, bytes)| Ok((node(n), Cursor::new(bytes))));
    let result = write_zip(inputs, namer, compression, &mut out).map(|s| s.files);
    (result, out)
}

#[test]
fn files_of_several_nodes_become_flat_entries_with_their_bytes_and_times() {
    let (result, zip) = run(
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
    );
    assert_eq!(result.unwrap(), 3);
    let entries = unzip(&zip).unwrap();
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

#[test]
fn a_name_on_two_nodes_gets_the_node_in_front_on_both() {
    let status = capture(&[
        ("node-a", &["x.pcap", "a.pcap"], None),
        ("node-b", &["x.pcap"], None),
    ]);
    let (result, zip) = run(
        vec![
            (
                "node-a",
                tar_of(&[("x.pcap", b"from a", 1), ("a.pcap", b"only a", 1)]),
            ),
            ("node-b", tar_of(&[("x.pcap", b"from b", 1)])),
        ],
        EntryNamer::from_status(&status.files),
        Compression::Stored,
    );
    assert_eq!(result.unwrap(), 3);
    let names: Vec<_> = unzip(&zip)
        .unwrap()
        .into_iter()
        .map(|e| (e.0, e.1))
        .collect();
    assert_eq!(
        names,
        [
            ("node-a/x.pcap".to_owned(), b"from a".to_vec()),
            ("a.pcap".to_owned(), b"only a".to_vec()),
            ("node-b/x.pcap".to_owned(), b"from b".to_vec())
        ]
    );
}

#[test]
fn a_collision_the_status_did_not_predict_still_gives_unique_names() {
    let (result, zip) = run(
        vec![
            ("node-a", tar_of(&[("y.pcap", b"1", 1)])),
            (
                "node-b",
                tar_of(&[("y.pcap", b"2", 1), ("sub/y.pcap", b"3", 1)]),
            ),
        ],
        EntryNamer::default(),
        Compression::Stored,
    );
    assert_eq!(result.unwrap(), 3);
    let names: Vec<_> = unzip(&zip).unwrap().into_iter().map(|e| e.0).collect();
    assert_eq!(names, ["y.pcap", "node-b/y.pcap", "node-b/y.pcap~2"]);
}

#[test]
fn nodes_without_files_write_nothing_at_all() {
    let (result, zip) = run(
        vec![("node-a", tar_of(&[])), ("node-b", tar_of(&[]))],
        EntryNamer::default(),
        Compression::Stored,
    );
    assert_eq!(result.unwrap(), 0);
    assert!(
        zip.is_empty(),
        "no byte may be written when there is no file"
    );
}

#[test]
fn a_zero_byte_file_is_an_entry() {
    let (result, zip) = run(
        vec![("node-a", tar_of(&[("empty.pcap", b"", 9)]))],
        EntryNamer::default(),
        Compression::Stored,
    );
    assert_eq!(result.unwrap(), 1);
    let entries = unzip(&zip).unwrap();
    assert_eq!(
        (entries[0].0.as_str(), entries[0].1.len()),
        ("empty.pcap", 0)
    );
}

#[test]
fn deflate_round_trips_and_is_smaller_on_repetitive_data() {
    let data = b"0123456789".repeat(10_000);
    let (stored_r, stored) = run(
        vec![("n", tar_of(&[("f.pcap", &data, 1)]))],
        EntryNamer::default(),
        Compression::Stored,
    );
    let (deflate_r, deflated) = run(
        vec![("n", tar_of(&[("f.pcap", &data, 1)]))],
        EntryNamer::default(),
        Compression::Deflate,
    );
    stored_r.unwrap();
    deflate_r.unwrap();
    assert!(deflated.len() * 10 < stored.len());
    assert_eq!(unzip(&deflated).unwrap()[0].1, data);
}

#[test]
fn a_tar_cut_inside_a_file_is_truncated_and_leaves_no_readable_zip() {
    let full = tar_of(&[("a.pcap", &[7u8; 4096], 1), ("b.pcap", &[8u8; 4096], 1)]);
    let cut = full[..512 * 2 + 4096 + 512 + 1000].to_vec(); // inside b.pcap's data
    let (result, zip) = run(
        vec![("node-a", cut)],
        EntryNamer::default(),
        Compression::Stored,
    );
    match result {
        Err(Error::TruncatedArchive { node, .. }) | Err(Error::NodeFiles { node, .. }) => {
            assert_eq!(node, "node-a")
        }
        other => panic!("expected a truncation error, got {other:?}"),
    }
    assert!(!zip.is_empty(), "the first file was already streamed");
    assert!(
        unzip(&zip).is_err(),
        "a failed archive must never open as a whole zip"
    );
}

#[test]
fn a_tar_without_its_end_block_is_truncated() {
    let full = tar_of(&[("a.pcap", &[7u8; 512], 1)]);
    let cut = full[..512 * 3].to_vec(); // dir header, file header, data: then nothing
    let (result, zip) = run(
        vec![("node-a", cut)],
        EntryNamer::default(),
        Compression::Stored,
    );
    assert!(
        matches!(result, Err(Error::TruncatedArchive { .. })),
        "{result:?}"
    );
    assert!(unzip(&zip).is_err());
}

#[test]
fn an_empty_stream_is_not_an_empty_archive() {
    let (result, _) = run(
        vec![("node-a", Vec::new())],
        EntryNamer::default(),
        Compression::Stored,
    );
    assert!(
        matches!(result, Err(Error::TruncatedArchive { .. })),
        "{result:?}"
    );
}

/// A reader that gives `data`, then fails, as an exec whose status says failure.
struct FailingAtEnd(Cursor<Vec<u8>>);

impl Read for FailingAtEnd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.0.read(buf)? {
            0 => Err(io::Error::other("command terminated with exit code 2")),
            n => Ok(n),
        }
    }
}

#[test]
fn a_producer_failing_after_the_first_bytes_fails_the_archive() {
    let mut out = Vec::new();
    let inputs = vec![
        Ok((
            node("node-a"),
            Box::new(Cursor::new(tar_of(&[("a.pcap", b"fine", 1)]))) as Box<dyn Read>,
        )),
        Ok((
            node("node-b"),
            Box::new(FailingAtEnd(Cursor::new(tar_of(&[("b.pcap", b"cut", 1)])))),
        )),
    ];
    let result = write_zip(inputs, EntryNamer::default(), Compression::Stored, &mut out);
    match result {
        Err(Error::NodeFiles { node, source, .. }) => {
            assert_eq!(node, "node-b");
            assert!(source.to_string().contains("exit code 2"));
        }
        other => panic!("expected a node failure, got {other:?}"),
    }
    assert!(unzip(&out).is_err(), "no central directory after a failure");
}

fn source(files: &NodeFileTable, n: &str) -> NodeSource {
    let _ = files;
    let reference = CaptureRef::parse("dev", "cap").unwrap();
    NodeSource {
        entry: packetcapture_domain::EntryPoint {
            node: node(n),
            handle: format!("mem-{n}"),
        },
        dir: CaptureDir::new(n, "/pcap", &reference).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_zip_yields_the_whole_archive_or_none_for_no_file() {
    let files = Arc::new(
        NodeFileTable::default()
            .with_file("n1", "/pcap/dev/cap", "a.pcap", &[1; 200_000], 10)
            .with_file("n2", "/pcap/dev/cap", "b.pcap", &[2; 10], 20),
    );
    let sources = vec![source(&files, "n1"), source(&files, "n2")];
    let stream = stream_zip(
        files.clone(),
        sources,
        EntryNamer::default(),
        Compression::Stored,
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
        files.clone(),
        vec![source(&files, "n3")],
        EntryNamer::default(),
        Compression::Stored,
    )
    .await
    .unwrap();
    assert!(empty.is_none());
    let _ = CaptureState::Finished;
}

/// A tar stream that never ends, and says when it was dropped.
struct Endless {
    header_sent: bool,
    dropped: Arc<AtomicBool>,
}

impl AsyncRead for Endless {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.header_sent {
            self.header_sent = true;
            let mut h = tar::Header::new_gnu();
            h.set_size(1 << 40);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_path("huge.pcap").unwrap();
            h.set_cksum();
            buf.put_slice(h.as_bytes());
        } else {
            let n = buf.remaining().min(8192);
            buf.put_slice(&vec![0xab; n]);
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for Endless {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

struct EndlessFetcher(Arc<AtomicBool>);

#[async_trait::async_trait]
impl FileFetcher for EndlessFetcher {
    async fn entry_point(
        &self,
        node: &NodeName,
    ) -> packetcapture_domain::Result<packetcapture_domain::EntryPoint> {
        Ok(packetcapture_domain::EntryPoint {
            node: node.clone(),
            handle: String::new(),
        })
    }
    async fn archive(
        &self,
        _: &packetcapture_domain::EntryPoint,
        _: &CaptureDir,
    ) -> packetcapture_domain::Result<packetcapture_domain::TarStream> {
        Ok(Box::pin(Endless {
            header_sent: false,
            dropped: self.0.clone(),
        }))
    }
    async fn list(
        &self,
        _: &packetcapture_domain::EntryPoint,
        _: &CaptureDir,
    ) -> packetcapture_domain::Result<Vec<packetcapture_domain::FileInfo>> {
        Ok(vec![])
    }
    async fn remove(
        &self,
        _: &packetcapture_domain::EntryPoint,
        _: &CaptureDir,
    ) -> packetcapture_domain::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_goes_away_ends_the_node_stream() {
    let dropped = Arc::new(AtomicBool::new(false));
    let fetcher = Arc::new(EndlessFetcher(dropped.clone()));
    let files = NodeFileTable::default();
    let mut stream = stream_zip(
        fetcher,
        vec![source(&files, "n1")],
        EntryNamer::default(),
        Compression::Stored,
    )
    .await
    .unwrap()
    .unwrap();
    for _ in 0..10 {
        stream.next().await.unwrap().unwrap();
    }
    drop(stream);
    for _ in 0..100 {
        if dropped.load(Ordering::SeqCst) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the node's stream was still open a second after the reader left");
}
