//! The planned zip of a finished capture: its length, and any range of it equal to the same
//! bytes of the whole zip, from a replica that kept no digest and from one that did; a file
//! changed after the plan stops the download, and so do other bytes under a kept file's size
//! and time.

use std::sync::Arc;

use futures_util::StreamExt;
use packetcapture_domain::testing::{
    CaptureTable, FakeCluster, NodeFileTable, RbacTable, StaticRouter, TokenTable,
};
use packetcapture_domain::{
    CaptureService, CaptureState, Compression, Download, Engine, Error, PlannedZip, Selection,
    User, Verb, ZipAsk,
};

use crate::merge::request;
use crate::support::{capture, unzip};

const DIR: &str = "/var/log/calico/pcap/dev/cap";

fn cluster() -> FakeCluster {
    let data = |seed: u8, len: usize| -> Vec<u8> {
        (0..len)
            .map(|i| seed.wrapping_mul(31).wrapping_add(i as u8))
            .collect()
    };
    FakeCluster::new(
        RbacTable::default().allow("jane", Verb::Get, "packetcaptures/files", "dev"),
        CaptureTable::default().with(capture(&[
            ("n1", &["a.pcap", "b.pcap"], Some(CaptureState::Finished)),
            ("n2", &["a.pcap"], Some(CaptureState::Finished)),
            (
                "n3",
                &["empty.pcap", "c.pcap"],
                Some(CaptureState::Finished),
            ),
        ])),
        NodeFileTable::default()
            .with_file("n1", DIR, "b.pcap", &data(1, 70_000), 1_700_000_100)
            .with_file("n1", DIR, "a.pcap", &data(2, 3_000), 1_700_000_000)
            .with_file("n2", DIR, "a.pcap", &data(3, 5_000), 1_700_000_050)
            .with_file("n3", DIR, "empty.pcap", b"", 1_700_000_010)
            .with_file("n3", DIR, "c.pcap", &data(4, 300_000), 1_700_000_200),
    )
}

fn service(local: &FakeCluster) -> CaptureService {
    CaptureService::new(
        Arc::new(TokenTable::default().with("jane-token", User::named("jane"))),
        Arc::new(StaticRouter::local(local.ports())),
    )
    .with_engine(Engine::default())
}

async fn plan(service: &CaptureService) -> PlannedZip {
    let download = service
        .download(
            &request(),
            Compression::Stored,
            &Selection::default(),
            ZipAsk::Head,
        )
        .await
        .unwrap();
    let Download::Planned(zip) = download else {
        panic!("a finished, stored capture is planned: {download:?}")
    };
    zip
}

async fn read(zip: &mut PlannedZip, range: Option<std::ops::Range<u64>>) -> Result<Vec<u8>, Error> {
    let mut stream = zip.stream(range).await?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

/// Offsets at and around every boundary between the zip's pieces.
fn boundaries(zip: &PlannedZip) -> Vec<u64> {
    let layout = zip.plan().layout();
    let mut at = vec![0, layout.len()];
    for i in 0..layout.entries() {
        let (header, bytes) = layout.header(i);
        at.extend([header, header + bytes.len() as u64 / 2]);
        let data = layout.data(i);
        at.extend([
            data.start,
            data.start + (data.end - data.start) / 2,
            data.end,
        ]);
        at.push(layout.descriptor_range(i).end);
    }
    let tail = layout.tail_range();
    at.extend([
        tail.start,
        tail.start + (tail.end - tail.start) / 2,
        tail.end - 22,
    ]);
    let mut near: Vec<u64> = at
        .iter()
        .flat_map(|a| [a.saturating_sub(1), *a, a + 1])
        .filter(|a| *a < layout.len())
        .collect();
    near.sort_unstable();
    near.dedup();
    near
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_s_length_is_the_zip_s_and_the_zip_reads_back_whole() {
    let local = cluster();
    let mut zip = plan(&service(&local)).await;
    let whole = read(&mut zip, None).await.unwrap();
    assert_eq!(whole.len() as u64, zip.plan().len());
    let entries = unzip(&whole).unwrap();
    let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        names,
        ["n1/a.pcap", "b.pcap", "n2/a.pcap", "c.pcap", "empty.pcap"],
        "nodes in status order, files by name (then the manifest, checked by unzip)"
    );
    let times: Vec<Option<i64>> = entries.iter().map(|e| e.2).collect();
    assert_eq!(
        times,
        [
            1_700_000_000,
            1_700_000_100,
            1_700_000_050,
            1_700_000_200,
            1_700_000_010
        ]
        .map(Some)
    );
    assert_eq!(zip.plan().files(), 5);
    assert_eq!(zip.plan().last_modified(), 1_700_000_200);
    // The same capture gives the same zip and the same tag.
    let mut again = plan(&service(&local)).await;
    assert_eq!(again.plan().etag(), zip.plan().etag());
    assert_eq!(read(&mut again, None).await.unwrap(), whole);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_range_is_the_same_bytes_as_the_whole_zip_with_or_without_kept_digests() {
    let local = cluster();
    let warm = service(&local);
    let mut zip = plan(&warm).await;
    let whole = read(&mut zip, None).await.unwrap();
    // A replica that never read the whole zip: the digests its ranges computed serve its
    // later ranges.
    let mut ranges_only = plan(&service(&local)).await;
    let offsets = boundaries(&zip);
    for (k, start) in offsets.iter().enumerate() {
        // To the end (a resume), and to a later boundary.
        let ends = [
            zip.plan().len(),
            offsets[(k + 3).min(offsets.len() - 1)].max(start + 1),
        ];
        for end in ends {
            let range = *start..end;
            let expected =
                &whole[usize::try_from(range.start).unwrap()..usize::try_from(end).unwrap()];
            let hot = read(&mut zip, Some(range.clone())).await.unwrap();
            assert!(
                hot == expected,
                "{range:?} from the replica that read every file"
            );
            // A replica that kept no digest reads what it needs.
            let mut cold = plan(&service(&local)).await;
            let cold = read(&mut cold, Some(range.clone())).await.unwrap();
            assert!(
                cold == expected,
                "{range:?} from a replica that read nothing yet"
            );
            let kept = read(&mut ranges_only, Some(range.clone())).await.unwrap();
            assert!(
                kept == expected,
                "{range:?} from the digests earlier ranges kept"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_changed_after_the_plan_stops_the_download_and_changes_the_tag() {
    let local = cluster();
    let svc = service(&local);
    let mut zip = plan(&svc).await;
    local
        .files
        .put_file("n2", DIR, "a.pcap", &[9; 5_001], 1_700_000_050);
    match read(&mut zip, None).await {
        Err(Error::FileChanged { node, file, reason }) => {
            assert_eq!((node.as_str(), file.as_str()), ("n2", "a.pcap"));
            assert!(reason.contains("5001 bytes"), "{reason}");
        }
        other => panic!("expected FileChanged, got {:?}", other.map(|b| b.len())),
    }
    let mut replanned = plan(&svc).await;
    assert_ne!(replanned.plan().etag(), zip.plan().etag());
    assert_eq!(
        read(&mut replanned, None).await.unwrap().len() as u64,
        replanned.plan().len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_kept_the_digests_checks_the_bytes_against_them() {
    let local = cluster();
    let svc = service(&local);
    let first = read(&mut plan(&svc).await, None).await.unwrap();
    // Read again on the replica that kept every file's digests: the same zip, its manifest
    // still the files' SHA-256s (unzip checks them).
    let again = read(&mut plan(&svc).await, None).await.unwrap();
    assert!(again == first, "the same zip from kept digests");
    unzip(&again).unwrap();
    // Other bytes under the same size and time: a fresh replica zips them, the one that kept
    // the old bytes' digests stops rather than give the old SHA-256 for them.
    local
        .files
        .put_file("n2", DIR, "a.pcap", &[9; 5_000], 1_700_000_050);
    let fresh = read(&mut plan(&service(&local)).await, None).await.unwrap();
    let entries = unzip(&fresh).unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e.0 == "n2/a.pcap" && e.1 == [9; 5_000])
    );
    match read(&mut plan(&svc).await, None).await {
        Err(Error::FileChanged { node, file, reason }) => {
            assert_eq!((node.as_str(), file.as_str()), ("n2", "a.pcap"));
            assert!(reason.contains("not those read earlier"), "{reason}");
        }
        other => panic!("expected FileChanged, got {:?}", other.map(|b| b.len())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_on_the_replica_of_the_cut_download_reads_only_what_is_missing() {
    // One 8 MiB file: a whole download is cut in its middle, far beyond what the service buffers.
    let size = 8 * 1024 * 1024;
    let big: Vec<u8> = (0..size)
        .map(|i| u8::try_from(i * 7 % 251).unwrap())
        .collect();
    let local = FakeCluster::new(
        RbacTable::default().allow("jane", Verb::Get, "packetcaptures/files", "dev"),
        CaptureTable::default().with(capture(&[(
            "n1",
            &["big.pcap"],
            Some(CaptureState::Finished),
        )])),
        NodeFileTable::default().with_file("n1", DIR, "big.pcap", &big, 1_700_000_000),
    );
    let expected = read(&mut plan(&service(&local)).await, None).await.unwrap();
    let svc = service(&local);
    let mut cut = plan(&svc).await;
    let mut stream = cut.stream(None).await.unwrap();
    let mut received = Vec::new();
    while received.len() < 2 * 1024 * 1024 {
        received.extend_from_slice(&stream.next().await.unwrap().unwrap());
    }
    drop(stream);
    for _ in 0..500 {
        if svc.engine().digests.checkpoints() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        svc.engine().digests.checkpoints(),
        1,
        "the cut file's digests are kept part-way"
    );
    local.files.reads.lock().unwrap().clear();
    let mut resume = plan(&svc).await;
    let from = received.len() as u64;
    let len = resume.plan().len();
    let rest = read(&mut resume, Some(from..len)).await.unwrap();
    assert!(
        rest == expected[received.len()..],
        "the resumed bytes are the whole zip's"
    );
    let data_start = resume.plan().layout().data(0).start;
    let reads = local.files.reads.lock().unwrap().clone();
    assert_eq!(
        reads,
        [(
            "n1".into(),
            "big.pcap".into(),
            from - data_start,
            size as u64 - (from - data_start)
        )],
        "the file is read from where the client stopped, not from its start"
    );
}
