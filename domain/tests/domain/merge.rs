//! The merged pcapng, selection, the manifest and one-file reads, over the in-memory fakes.
//! The pcapng is read back by a small block reader written here from the format's
//! specification, not by the writer's code.

use std::sync::Arc;

use futures_util::StreamExt;
use packetcapture_domain::pcap::Window;
use packetcapture_domain::testing::{
    CaptureTable, FakeCluster, NodeFileTable, RbacTable, StaticRouter, TokenTable,
};
use packetcapture_domain::{
    BaseName, BearerToken, CaptureRef, CaptureService, CaptureState, ClusterTarget, Compression,
    Download, Error, Impersonation, NodeName, Request, Selection, User, Verb, ZipAsk,
};

use crate::support::{capture, unzip, unzip_all};

pub const DIR: &str = "/var/log/calico/pcap/dev/cap";

/// A classic pcap file: `(seconds, fraction, data)` records, fraction in micro- or
/// nanoseconds.
pub fn pcap_file(nanos: bool, records: &[(u32, u32, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let magic: u32 = if nanos { 0xA1B2_3C4D } else { 0xA1B2_C3D4 };
    out.extend_from_slice(&magic.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for (secs, frac, data) in records {
        out.extend_from_slice(&secs.to_le_bytes());
        out.extend_from_slice(&frac.to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
    }
    out
}

/// What a pcapng holds: interfaces `(name, description, tsresol)` and packets
/// `(interface, ns timestamp, data)`.
#[derive(Debug, Default)]
pub struct Pcapng {
    pub interfaces: Vec<(String, String, u8)>,
    pub packets: Vec<(u32, u64, Vec<u8>)>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Reads a little-endian pcapng, checking block framing.
pub fn read_pcapng(bytes: &[u8]) -> Pcapng {
    let mut out = Pcapng::default();
    let mut at = 0;
    let mut first = true;
    while at < bytes.len() {
        let kind = u32_at(bytes, at);
        let len = u32_at(bytes, at + 4) as usize;
        assert_eq!(len % 4, 0, "block at {at} is not 32-bit aligned");
        assert_eq!(
            u32_at(bytes, at + len - 4) as usize,
            len,
            "trailing length at {at}"
        );
        let body = &bytes[at + 8..at + len - 4];
        if first {
            assert_eq!(kind, 0x0A0D_0D0A, "the first block is a section header");
            assert_eq!(u32_at(body, 0), 0x1A2B_3C4D);
            first = false;
        }
        match kind {
            1 => {
                let mut name = String::new();
                let mut description = String::new();
                let mut tsresol = 6;
                let mut o = 8;
                while o + 4 <= body.len() {
                    let code = u16::from_le_bytes([body[o], body[o + 1]]);
                    let l = u16::from_le_bytes([body[o + 2], body[o + 3]]) as usize;
                    let value = &body[o + 4..o + 4 + l];
                    match code {
                        0 => break,
                        2 => name = String::from_utf8(value.to_vec()).unwrap(),
                        3 => description = String::from_utf8(value.to_vec()).unwrap(),
                        9 => tsresol = value[0],
                        _ => {}
                    }
                    o += 4 + l + (4 - l % 4) % 4;
                }
                out.interfaces.push((name, description, tsresol));
            }
            6 => {
                let id = u32_at(body, 0);
                assert!(
                    (id as usize) < out.interfaces.len(),
                    "interface described first"
                );
                let ts = (u64::from(u32_at(body, 4)) << 32) | u64::from(u32_at(body, 8));
                let captured = u32_at(body, 12) as usize;
                out.packets.push((id, ts, body[20..20 + captured].to_vec()));
            }
            _ => {}
        }
        at += len;
    }
    out
}

pub fn world(files: &[(&str, &str, Vec<u8>)], states: CaptureState) -> FakeCluster {
    let mut nodes: Vec<(&str, Vec<&str>)> = Vec::new();
    let mut table = NodeFileTable::default();
    for (node, name, data) in files {
        table = table.with_file(node, DIR, name, data, 1_700_000_000);
        match nodes.iter_mut().find(|(n, _)| n == node) {
            Some((_, names)) => names.push(name),
            None => nodes.push((node, vec![name])),
        }
    }
    let status: Vec<(&str, Vec<&str>, Option<CaptureState>)> = nodes
        .into_iter()
        .map(|(n, names)| (n, names, Some(states.clone())))
        .collect();
    let borrowed: Vec<(&str, &[&str], Option<CaptureState>)> = status
        .iter()
        .map(|(n, names, s)| (*n, names.as_slice(), s.clone()))
        .collect();
    FakeCluster::new(
        RbacTable::default().allow("jane", Verb::Get, "packetcaptures/files", "dev"),
        CaptureTable::default().with(capture(&borrowed)),
        table,
    )
}

pub fn service(local: &FakeCluster) -> CaptureService {
    let tokens = TokenTable::default().with("jane-token", User::named("jane"));
    CaptureService::new(
        Arc::new(tokens),
        Arc::new(StaticRouter::local(local.ports())),
    )
}

pub fn request() -> Request {
    Request {
        token: BearerToken::new("jane-token").unwrap(),
        impersonation: Impersonation::default(),
        cluster: ClusterTarget::Local,
        capture: CaptureRef::parse("dev", "cap").unwrap(),
    }
}

pub async fn body(download: Download) -> Option<Vec<u8>> {
    let stream = match download {
        Download::Empty => return None,
        Download::Zip(s) | Download::Pcapng(s) => s,
        Download::Planned(mut zip) => zip.stream(None).await.unwrap(),
        Download::Unstarted => panic!("a GET starts its download"),
    };
    Some(
        stream
            .map(|c| c.unwrap())
            .collect::<Vec<_>>()
            .await
            .concat(),
    )
}

fn packet(tag: &str, n: u32) -> Vec<u8> {
    format!("{tag}-{n:04}").into_bytes()
}

fn three_nodes() -> FakeCluster {
    // node-1: a rotated file then the active one, whose last record is cut in two.
    let rotated = pcap_file(
        false,
        &[(100, 10, packet("a", 1)), (102, 0, packet("a", 2))],
    );
    let mut active = pcap_file(
        false,
        &[(104, 0, packet("a", 3)), (106, 500, packet("a", 4))],
    );
    active.truncate(active.len() - 3);
    // node-2: nanosecond timestamps, one tie with node-1.
    let nanos = pcap_file(
        true,
        &[
            (101, 999_999_999, packet("b", 1)),
            (104, 0, packet("b", 2)),
            (105, 1, packet("b", 3)),
        ],
    );
    // node-3: two interfaces of one pod.
    let eth = pcap_file(false, &[(103, 0, packet("c", 1))]);
    let other = pcap_file(false, &[(99, 0, packet("d", 1))]);
    world(
        &[
            ("node-1", "web-1_cali1-102000000.pcap", rotated),
            ("node-1", "web-1_cali1.pcap", active),
            ("node-2", "web-2_cali2.pcap", nanos),
            ("node-3", "web-3_cali3.pcap", eth),
            ("node-3", "web-3_cali9.pcap", other),
        ],
        CaptureState::Finished,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_packet_of_every_stream_comes_once_in_time_order_with_an_interface_per_stream() {
    let local = three_nodes();
    let merged = service(&local)
        .merged(&request(), &Selection::default())
        .await
        .unwrap();
    assert!(matches!(merged, Download::Pcapng(_)));
    let file = read_pcapng(&body(merged).await.unwrap());
    let names: Vec<&str> = file.interfaces.iter().map(|i| i.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "node-1/cali1",
            "node-2/cali2",
            "node-3/cali3",
            "node-3/cali9"
        ]
    );
    assert!(
        file.interfaces.iter().all(|i| i.2 == 9),
        "nanosecond timestamps"
    );
    assert!(
        file.interfaces[0]
            .1
            .contains("packetcapture dev/cap, pod web-1, interface cali1, node node-1"),
        "{:?}",
        file.interfaces[0]
    );
    let order: Vec<(String, u64)> = file
        .packets
        .iter()
        .map(|(_, ts, data)| (String::from_utf8(data.clone()).unwrap(), *ts))
        .collect();
    let s = 1_000_000_000u64;
    assert_eq!(
        order,
        [
            ("d-0001".to_owned(), 99 * s),
            ("a-0001".to_owned(), 100 * s + 10_000),
            ("b-0001".to_owned(), 101 * s + 999_999_999),
            ("a-0002".to_owned(), 102 * s),
            ("c-0001".to_owned(), 103 * s),
            // A tie: the stream earlier in status order first.
            ("a-0003".to_owned(), 104 * s),
            ("b-0002".to_owned(), 104 * s),
            ("b-0003".to_owned(), 105 * s + 1),
        ],
        "a-0004 was cut and is dropped"
    );
    let interface_of = |tag: &str| {
        file.packets
            .iter()
            .find(|(_, _, d)| d.starts_with(tag.as_bytes()))
            .map(|(id, _, _)| *id)
            .unwrap()
    };
    assert_eq!(interface_of("a-"), 0);
    assert_eq!(interface_of("b-"), 1);
    assert_eq!(interface_of("d-"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selection_keeps_the_nodes_and_exactly_the_packets_of_the_window() {
    let local = three_nodes();
    let s = 1_000_000_000u64;
    let selection = Selection {
        nodes: vec![
            NodeName::new("node-1").unwrap(),
            NodeName::new("node-2").unwrap(),
        ],
        window: Window {
            since: Some(102 * s),
            until: Some(104 * s),
        },
        filter: None,
    };
    let merged = service(&local)
        .merged(&request(), &selection)
        .await
        .unwrap();
    let file = read_pcapng(&body(merged).await.unwrap());
    let tags: Vec<String> = file
        .packets
        .iter()
        .map(|(_, _, d)| String::from_utf8(d.clone()).unwrap())
        .collect();
    assert_eq!(tags, ["a-0002"], "since inclusive, until exclusive");
    assert_eq!(
        file.interfaces.len(),
        2,
        "node-2's stream is described though none of its packets is in the window"
    );

    let nothing = Selection {
        nodes: Vec::new(),
        window: Window {
            since: Some(200 * s),
            until: None,
        },
        filter: None,
    };
    assert!(matches!(
        service(&local).merged(&request(), &nothing).await.unwrap(),
        Download::Empty
    ));

    let unknown = Selection {
        nodes: vec![NodeName::new("node-9").unwrap()],
        window: Window::default(),
        filter: None,
    };
    for merged in [true, false] {
        let err = if merged {
            service(&local)
                .merged(&request(), &unknown)
                .await
                .unwrap_err()
        } else {
            service(&local)
                .download(&request(), Compression::Stored, &unknown, ZipAsk::Whole)
                .await
                .unwrap_err()
        };
        assert!(
            matches!(&err, Error::NodeNotInCapture { node, .. } if node == "node-9"),
            "{err:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_zip_keeps_the_selected_nodes_and_the_files_that_may_hold_the_window() {
    let local = three_nodes();
    let s = 1_000_000_000u64;
    let names = |download: Download| async {
        let bytes = body(download).await.unwrap();
        unzip(&bytes)
            .unwrap()
            .into_iter()
            .map(|e| e.0)
            .collect::<Vec<_>>()
    };
    let after_rotation = Selection {
        nodes: vec![NodeName::new("node-1").unwrap()],
        window: Window {
            since: Some(103 * s),
            until: None,
        },
        filter: None,
    };
    let zip = service(&local)
        .download(
            &request(),
            Compression::Stored,
            &after_rotation,
            ZipAsk::Whole,
        )
        .await
        .unwrap();
    assert_eq!(names(zip).await, ["web-1_cali1.pcap"]);
    let before_rotation = Selection {
        nodes: Vec::new(),
        window: Window {
            since: None,
            until: Some(101 * s),
        },
        filter: None,
    };
    let zip = service(&local)
        .download(
            &request(),
            Compression::Stored,
            &before_rotation,
            ZipAsk::Whole,
        )
        .await
        .unwrap();
    assert_eq!(
        names(zip).await,
        [
            "web-1_cali1-102000000.pcap",
            "web-2_cali2.pcap",
            "web-3_cali3.pcap",
            "web-3_cali9.pcap"
        ],
        "active files without a rotation may hold anything"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_pcap_fails_the_merge_naming_it() {
    let local = world(
        &[
            (
                "node-1",
                "web-1_cali1.pcap",
                pcap_file(false, &[(1, 0, packet("a", 1))]),
            ),
            (
                "node-2",
                "web-2_cali2.pcap",
                b"this is not a capture".to_vec(),
            ),
        ],
        CaptureState::Finished,
    );
    let err = service(&local)
        .merged(&request(), &Selection::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::NotACapture { node, file, .. } if node == "node-2" && file == "web-2_cali2.pcap"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifest_is_last_and_a_node_file_of_its_name_is_kept_apart() {
    let local = world(
        &[
            ("node-1", "a.pcap", b"alpha".to_vec()),
            ("node-1", "SHA256SUMS", b"a node's own file".to_vec()),
            ("node-2", "back\\slash.pcap", b"beta".to_vec()),
        ],
        CaptureState::Finished,
    );
    let bytes = body(
        service(&local)
            .download(
                &request(),
                Compression::Stored,
                &Selection::default(),
                ZipAsk::Whole,
            )
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    let all = unzip_all(&bytes).unwrap();
    let names: Vec<&str> = all.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        names,
        ["SHA256SUMS", "a.pcap", "back\\slash.pcap", "SHA256SUMS"]
            .iter()
            .enumerate()
            .map(|(i, n)| if i == 0 { "node-1/SHA256SUMS" } else { n })
            .collect::<Vec<_>>()
    );
    let manifest = String::from_utf8(all[3].1.clone()).unwrap();
    let lines: Vec<&str> = manifest.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0].ends_with("  node-1/SHA256SUMS"));
    assert!(
        lines[2].starts_with('\\') && lines[2].ends_with("  back\\\\slash.pcap"),
        "a backslash is escaped as sha256sum does: {}",
        lines[2]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_file_reads_whole_or_in_part_and_a_short_read_is_an_error() {
    let local = world(
        &[("node-1", "a.pcap", b"0123456789".to_vec())],
        CaptureState::Capturing,
    );
    let svc = service(&local);
    let node = NodeName::new("node-1").unwrap();
    let file = svc
        .file(&request(), &node, &BaseName::new("a.pcap").unwrap())
        .await
        .unwrap();
    assert_eq!(file.info.size, 10);
    assert!(!file.finished);
    let read = |start, len| {
        let file = &file;
        async move {
            file.read(start, len)
                .await
                .unwrap()
                .collect::<Vec<_>>()
                .await
        }
    };
    let part: Vec<u8> = read(3, 4)
        .await
        .into_iter()
        .map(|c| c.unwrap())
        .collect::<Vec<_>>()
        .concat();
    assert_eq!(part, b"3456");
    // Past the end: what the node had, then an error, never a short clean end.
    let short = read(8, 5).await;
    assert_eq!(short[0].as_ref().unwrap().as_ref(), b"89");
    assert!(short.last().unwrap().is_err());
    for missing in ["b.pcap", "a.pca"] {
        let err = svc
            .file(&request(), &node, &BaseName::new(missing).unwrap())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::FileNotFound { .. }), "{err:?}");
    }
    let err = svc
        .file(
            &request(),
            &NodeName::new("node-2").unwrap(),
            &BaseName::new("a.pcap").unwrap(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::FileNotFound { .. }), "{err:?}");
    for bad in ["", ".", "..", "a/b", "nul\0", "new\nline"] {
        assert!(BaseName::new(bad).is_err(), "{bad:?}");
    }
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// One stream: its node (0..3), its interface number, packet times in microseconds
    /// (sorted), where files rotate (indexes into the packets), nanosecond files or not, and
    /// where the active file's last record is cut, if it is (anywhere in its 16-byte header
    /// or its data).
    #[derive(Clone, Debug)]
    struct StreamSpec {
        node: usize,
        iface: usize,
        micros: Vec<u64>,
        rotations: Vec<usize>,
        nanos: bool,
        cut: Option<proptest::sample::Index>,
    }

    fn stream() -> impl Strategy<Value = StreamSpec> {
        (
            0usize..3,
            0usize..3,
            proptest::collection::vec(0u64..5_000_000, 0..25),
            proptest::collection::vec(0usize..25, 0..3),
            any::<bool>(),
            proptest::option::of(any::<proptest::sample::Index>()),
        )
            .prop_map(|(node, iface, mut micros, mut rotations, nanos, cut)| {
                micros.sort_unstable();
                rotations.retain(|r| *r > 0 && *r < micros.len());
                rotations.sort_unstable();
                rotations.dedup();
                StreamSpec {
                    node,
                    iface,
                    micros,
                    rotations,
                    nanos,
                    cut,
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn the_merge_is_every_whole_packet_in_time_order_ties_by_stream(
            specs in proptest::collection::vec(stream(), 1..6)
        ) {
            // One spec per (node, iface): later duplicates are dropped.
            let mut seen = std::collections::HashSet::new();
            let specs: Vec<StreamSpec> = specs.into_iter().filter(|s| seen.insert((s.node, s.iface))).collect();
            let base = 1_700_000_000u64;
            let mut files: Vec<(String, String, Vec<u8>)> = Vec::new();
            let mut expected: Vec<(usize, String, u64, Vec<u8>)> = Vec::new();
            for s in &specs {
                let node = format!("node-{}", s.node);
                let stem = format!("pod-{}_cali{}", s.node, s.iface);
                let mut bounds = s.rotations.clone();
                bounds.push(s.micros.len());
                let mut start = 0;
                for (f, end) in bounds.iter().enumerate() {
                    let active = f == bounds.len() - 1;
                    let records: Vec<(u32, u32, Vec<u8>)> = s.micros[start..*end]
                        .iter()
                        .enumerate()
                        .map(|(k, m)| {
                            let secs = (base + m / 1_000_000) as u32;
                            let micro = (m % 1_000_000) as u32;
                            let frac = if s.nanos { micro * 1_000 } else { micro };
                            (secs, frac, format!("{stem}#{}", start + k).into_bytes())
                        })
                        .collect();
                    let mut data = pcap_file(s.nanos, &records);
                    let mut kept = records.len();
                    if let (true, Some(cut), Some(last)) = (active, s.cut, records.last()) {
                        // Keep 0..record bytes of the last record: none, part of its header,
                        // the header and part of its data.
                        let record = 16 + last.2.len();
                        data.truncate(data.len() - record + cut.index(record));
                        kept -= 1;
                    }
                    for (k, m) in s.micros[start..start + kept].iter().enumerate() {
                        expected.push((
                            s.node,
                            stem.clone(),
                            (base * 1_000_000 + m) * 1_000,
                            format!("{stem}#{}", start + k).into_bytes(),
                        ));
                    }
                    let name = if active {
                        format!("{stem}.pcap")
                    } else {
                        // Rotated at its last packet's time (or its start when empty).
                        let at = s.micros[..*end].last().copied().unwrap_or(0) + base * 1_000_000 + f as u64;
                        format!("{stem}-{at}.pcap")
                    };
                    files.push((node.clone(), name, data));
                    start = *end;
                }
            }
            // Status order: nodes as first met; streams by name within a node.
            let mut node_order: Vec<usize> = Vec::new();
            for s in &specs {
                if !node_order.contains(&s.node) {
                    node_order.push(s.node);
                }
            }
            expected.sort_by_key(|(node, stem, ts, _)| {
                (*ts, node_order.iter().position(|n| n == node), stem.clone())
            });
            let refs: Vec<(&str, &str, Vec<u8>)> = files
                .iter()
                .map(|(n, f, d)| (n.as_str(), f.as_str(), d.clone()))
                .collect();
            let local = world(&refs, CaptureState::Finished);
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let merged = runtime.block_on(async {
                let download = service(&local).merged(&request(), &Selection::default()).await.unwrap();
                body(download).await
            });
            match merged {
                None => prop_assert!(expected.is_empty(), "empty only without packets"),
                Some(bytes) => {
                    let file = read_pcapng(&bytes);
                    // Each packet under its own stream's interface, named `{node}/{iface}`.
                    let got: Vec<(String, u64, Vec<u8>)> = file
                        .packets
                        .iter()
                        .map(|(id, ts, d)| (file.interfaces[*id as usize].0.clone(), *ts, d.clone()))
                        .collect();
                    let want: Vec<(String, u64, Vec<u8>)> = expected
                        .iter()
                        .map(|(node, stem, ts, d)| {
                            let iface = stem.split_once('_').unwrap().1;
                            (format!("node-{node}/{iface}"), *ts, d.clone())
                        })
                        .collect();
                    prop_assert_eq!(got, want);
                    prop_assert_eq!(file.interfaces.len(), specs.len());
                }
            }
        }
    }
}

mod filters {
    use packetcapture_domain::FilterCompiler;
    use packetcapture_domain::bpf::{FilterExpression, Instruction, Program};

    use super::*;

    /// Compiles `tag X` (the packet's first byte is X) for Ethernet only.
    struct FirstByte;

    impl FilterCompiler for FirstByte {
        fn compile(
            &self,
            expression: &str,
            link_type: u32,
            _snaplen: u32,
        ) -> Result<Program, String> {
            if link_type != 1 {
                return Err(format!("link type {link_type} is not Ethernet"));
            }
            let tag = expression
                .strip_prefix("tag ")
                .and_then(|t| t.bytes().next())
                .ok_or_else(|| format!("cannot read {expression:?}"))?;
            Program::new(vec![
                Instruction::new(0x30, 0, 0, 0),
                Instruction::new(0x15, 0, 1, u32::from(tag)),
                Instruction::new(0x06, 0, 0, 1),
                Instruction::new(0x06, 0, 0, 0),
            ])
        }
    }

    fn filtered(expression: &str) -> Selection {
        Selection {
            filter: Some(FilterExpression::new(expression).unwrap()),
            ..Selection::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_filter_keeps_its_packets_in_order_and_every_interface() {
        let local = three_nodes();
        let service = service(&local).with_filters(Arc::new(FirstByte));
        let merged = service
            .merged(&request(), &filtered("tag b"))
            .await
            .unwrap();
        let file = read_pcapng(&body(merged).await.unwrap());
        let tags: Vec<String> = file
            .packets
            .iter()
            .map(|(_, _, d)| String::from_utf8(d.clone()).unwrap())
            .collect();
        assert_eq!(tags, ["b-0001", "b-0002", "b-0003"]);
        assert_eq!(file.interfaces.len(), 4, "every stream keeps its interface");
        let none = service
            .merged(&request(), &filtered("tag z"))
            .await
            .unwrap();
        assert!(matches!(none, Download::Empty), "nothing kept: no content");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_filter_that_does_not_compile_is_refused_before_the_first_byte() {
        let local = three_nodes();
        let service = service(&local).with_filters(Arc::new(FirstByte));
        let refused = |r: Result<Download, Error>| match r {
            Err(Error::BadFilter { message }) => message,
            other => panic!("expected BadFilter, got {:?}", other.map(|_| ())),
        };
        assert_eq!(
            refused(service.merged(&request(), &filtered("what")).await),
            "cannot read \"what\""
        );
        // A stream of another link type: its program does not compile either.
        let mut other = pcap_file(false, &[(100, 0, packet("x", 1))]);
        other[20..24].copy_from_slice(&105u32.to_le_bytes());
        let wifi = world(
            &[("node-1", "w-1_wlan0.pcap", other)],
            CaptureState::Finished,
        );
        let service_wifi = super::service(&wifi).with_filters(Arc::new(FirstByte));
        assert_eq!(
            refused(service_wifi.merged(&request(), &filtered("tag x")).await),
            "link type 105 is not Ethernet"
        );
        // Without a compiler, and on the zip.
        assert!(
            refused(
                super::service(&local)
                    .merged(&request(), &filtered("tag b"))
                    .await
            )
            .contains("cannot filter")
        );
        assert!(
            refused(
                service
                    .download(
                        &request(),
                        Compression::Stored,
                        &filtered("tag b"),
                        ZipAsk::Whole
                    )
                    .await
            )
            .contains("merged.pcapng")
        );
    }
}
