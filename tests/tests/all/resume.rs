//! The zip of a finished capture served like a static file, end to end: its length before
//! the first byte, HEAD without reading a file, ranges equal to the same bytes of a whole
//! download wherever they fall, `curl -C -` resuming a cut zip into the uncut one, `If-Range`,
//! and files that change between or during downloads.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::support::*;

const ZIP: &str = "/download/dev/web-traffic/files.zip";

/// Execs on the nodes that read file contents (`tar`, `dd`) so far.
fn file_reads(sim: &TestSim) -> usize {
    sim.local()
        .requests()
        .iter()
        .filter(|r| r.uri.contains("&command=tar&") || r.uri.contains("&command=dd&"))
        .count()
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// One offset inside each region of the zip: a local header, file data, a data descriptor,
/// the manifest, the central directory, the end record.
fn regions(whole: &[u8]) -> Vec<(&'static str, usize)> {
    let mut zip = zip::ZipArchive::new(Cursor::new(whole)).unwrap();
    let directory = usize::try_from(zip.central_directory_start()).unwrap();
    let last = zip.len() - 1;
    let (header, data, size) = {
        let f = zip.by_index_raw(1).unwrap();
        (
            f.header_start(),
            f.data_start().unwrap(),
            f.compressed_size(),
        )
    };
    let manifest = zip.by_index_raw(last).unwrap().data_start().unwrap();
    let at = |v: u64| usize::try_from(v).unwrap();
    vec![
        ("a local header", at(header) + 7),
        ("file data", at(data + size / 2)),
        ("a data descriptor", at(data + size) + 5),
        ("the manifest", at(manifest) + 40),
        ("the central directory", directory + 30),
        ("the end record", whole.len() - 9),
    ]
}

fn sha256(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

/// `curl -C -` into `part` (which holds the first bytes of the zip), with `extra` arguments:
/// curl's exit code and the HTTP status it printed.
fn curl_resume(sim: &TestSim, api: &ApiProcess, part: &Path, extra: &[&str]) -> (i32, String) {
    let url = format!("{}{ZIP}", api.url);
    let mut args = vec![
        "-sS",
        "--fail",
        "--cacert",
        sim.out.join("ca.crt").to_str().unwrap(),
    ]
    .into_iter()
    .map(str::to_owned)
    .collect::<Vec<_>>();
    args.extend(
        [
            "-H",
            "Authorization: Bearer jane-token",
            "-C",
            "-",
            "-o",
            part.to_str().unwrap(),
            "-w",
            "%{http_code}",
        ]
        .map(str::to_owned),
    );
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args.push(url);
    let out = std::process::Command::new("curl")
        .args(&args)
        .output()
        .expect("curl is installed (make tools installs it)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_capture_s_zip_has_its_length_ranges_and_resumes_wherever_it_was_cut() {
    let sim = start_default().await;
    let api = start_api(&sim, &[]).await;
    let jane = sim.token("jane");
    // HEAD: the headers a GET has, and no file read on any node.
    let head = head(&api, ZIP, Some(&jane), &[]).await;
    assert_eq!(head.status(), 200);
    let length: usize = header(&head, "content-length").parse().unwrap();
    let etag = header(&head, "etag");
    assert!(etag.starts_with("\"z-"), "a strong entity tag: {etag}");
    assert_eq!(header(&head, "accept-ranges"), "bytes");
    assert!(!header(&head, "last-modified").is_empty());
    assert_eq!(file_reads(&sim), 0, "HEAD reads no file");
    // The end of the zip, before any whole download: this replica knows no digest yet, so it
    // reads every file (for the central directory's CRCs and the manifest), sending 100 bytes.
    let tail = get(&api, ZIP, Some(&jane), &[("range", "bytes=-100")]).await;
    assert_eq!(tail.status(), 206);
    assert_eq!(
        header(&tail, "content-range"),
        format!("bytes {}-{}/{length}", length - 100, length - 1)
    );
    let tail = tail.bytes().await.unwrap();
    assert_eq!(file_reads(&sim), 6, "every file of the capture read once");
    let whole = get(&api, ZIP, Some(&jane), &[]).await;
    assert_eq!(whole.status(), 200);
    assert_eq!(header(&whole, "content-length"), length.to_string());
    assert_eq!(
        header(&whole, "etag"),
        etag,
        "the same capture, the same tag"
    );
    let whole = whole.bytes().await.unwrap().to_vec();
    assert_eq!(whole.len(), length, "Content-Length is the zip's length");
    assert_eq!(&whole[length - 100..], &tail[..]);
    assert_eq!(
        zip_digests(&whole),
        capture_dir(&sim, "cluster", "dev", "web-traffic")
    );
    // The replica that served the whole zip kept every file's digests: the end of the zip
    // (central directory) reads no file now.
    let reads = file_reads(&sim);
    let again = get(&api, ZIP, Some(&jane), &[("range", "bytes=-100")]).await;
    assert_eq!(again.bytes().await.unwrap(), tail);
    assert_eq!(
        file_reads(&sim),
        reads,
        "digests kept: no file read for the tail"
    );
    // Every region, as a closed range and to the end, is the same bytes as the whole zip's.
    for (region, at) in regions(&whole) {
        let end = (at + 9).min(length - 1);
        for (range, expected) in [
            (format!("bytes={at}-{end}"), &whole[at..=end]),
            (format!("bytes={at}-"), &whole[at..]),
        ] {
            let r = get(&api, ZIP, Some(&jane), &[("range", &range)]).await;
            assert_eq!(r.status(), 206, "{region}: {range}");
            assert!(r.bytes().await.unwrap() == expected, "{region}: {range}");
        }
    }
    // Past the end: 416 with the length.
    let past = get(
        &api,
        ZIP,
        Some(&jane),
        &[("range", &format!("bytes={length}-"))],
    )
    .await;
    assert_eq!(past.status(), 416);
    assert_eq!(header(&past, "content-range"), format!("bytes */{length}"));
    // If-Range: the tag (or the date) that matches keeps the range; another gives it all.
    let modified = header(&head, "last-modified");
    for (condition, status) in [
        (etag.as_str(), 206),
        (modified.as_str(), 206),
        ("\"z-00000000000000000000000000000000\"", 200),
        ("Thu, 01 Jan 1970 00:00:00 GMT", 200),
    ] {
        let r = get(
            &api,
            ZIP,
            Some(&jane),
            &[("range", "bytes=100-"), ("if-range", condition)],
        )
        .await;
        assert_eq!(r.status(), status, "If-Range: {condition}");
        let body = r.bytes().await.unwrap();
        assert!(
            body == whole[if status == 206 { 100 } else { 0 }..],
            "If-Range: {condition}"
        );
    }
    // curl -C - after a cut in each region: the uncut zip, and unzip tests it whole.
    let dir = sim.dir.path().join("resumed");
    std::fs::create_dir_all(&dir).unwrap();
    for (region, cut) in regions(&whole) {
        let part = dir.join(format!("cut-{cut}.zip"));
        std::fs::write(&part, &whole[..cut]).unwrap();
        let code = curl_resume(&sim, &api, &part, &["-H", &format!("If-Range: {etag}")]);
        assert_eq!(code, (0, "206".into()), "{region}");
        let resumed = std::fs::read(&part).unwrap();
        assert_eq!(
            sha256(&resumed),
            sha256(&whole),
            "resumed after a cut in {region}"
        );
        run("unzip", &["-tq", part.to_str().unwrap()]);
    }
}

/// `file`'s path in the simulation: the first file of `node` in `dev/web-traffic`.
fn first_file(sim: &TestSim, node: &str) -> PathBuf {
    let dir = sim
        .node_dir("cluster", node)
        .join("var/log/calico/pcap/dev/web-traffic");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.remove(0)
}

/// Makes `file` a different file: 1,000 bytes longer, modified a minute later.
fn change(file: &Path) {
    let mut data = std::fs::read(file).unwrap();
    data.extend_from_slice(&[0x55; 1000]);
    std::fs::write(file, data).unwrap();
    let later =
        std::fs::metadata(file).unwrap().modified().unwrap() + std::time::Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(file)
        .unwrap()
        .set_modified(later)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_changed_between_attempts_restarts_the_zip_and_one_changed_during_it_cuts_it() {
    let sim = start_default().await;
    // One node at a time, node-1 slow: node-3 is read well after the plan was made.
    let api = start_api(&sim, &[("PACKETCAPTURE_API_FETCH_CONCURRENCY", "1")]).await;
    let jane = sim.token("jane");
    let first = get(&api, ZIP, Some(&jane), &[]).await;
    let etag = header(&first, "etag");
    let whole = first.bytes().await.unwrap().to_vec();
    let dir = sim.dir.path().join("changed");
    std::fs::create_dir_all(&dir).unwrap();
    let part = dir.join("files.zip");
    std::fs::write(&part, &whole[..whole.len() / 2]).unwrap();
    change(&first_file(&sim, "node-2"));
    // Between the attempts: a new tag, and a resume that names the old one gets the new zip
    // whole, which curl refuses to append (exit 33): the cut file is never spliced.
    let now = get(&api, ZIP, Some(&jane), &[]).await;
    let new_etag = header(&now, "etag");
    assert_ne!(new_etag, etag, "a changed file changes the tag");
    let new_whole = now.bytes().await.unwrap().to_vec();
    assert_eq!(new_whole.len(), whole.len() + 1000);
    let code = curl_resume(&sim, &api, &part, &["-H", &format!("If-Range: {etag}")]);
    assert_eq!(
        code,
        (33, "200".into()),
        "a stale If-Range gets the whole zip"
    );
    assert_eq!(
        std::fs::read(&part).unwrap(),
        whole[..whole.len() / 2],
        "left as it was"
    );
    assert_eq!(
        zip_digests(&new_whole),
        capture_dir(&sim, "cluster", "dev", "web-traffic")
    );
    // During a download: node-3 changes while node-1 is still being sent. The transfer fails
    // (never a zip whose bytes disagree with its headers) and the log says which file.
    sim.local().set_faults(|f| f.exec_bandwidth = Some(300_000));
    let mut r = get(&api, ZIP, Some(&jane), &[]).await;
    assert_eq!(r.status(), 200);
    let length: usize = header(&r, "content-length").parse().unwrap();
    let mut received = r.chunk().await.unwrap().unwrap().len();
    let victim = first_file(&sim, "node-3");
    change(&victim);
    let failed = loop {
        match r.chunk().await {
            Ok(Some(chunk)) => received += chunk.len(),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert!(failed, "the transfer fails");
    assert!(received < length, "{received} of {length} bytes");
    let name = victim.file_name().unwrap().to_str().unwrap().to_owned();
    let log = api.log_text();
    assert!(
        log.lines().any(|l| l.contains("download aborted")
            && l.contains(&name)
            && l.contains("changed since the download was planned")),
        "the abort names the changed file"
    );
    assert_execs_end_within_a_second(sim.local()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_still_running_or_deflated_streams_without_a_length_and_ignores_ranges() {
    let sim = start_default().await;
    let api = start_api(&sim, &[]).await;
    let admin = sim.token("ops-admin");
    for path in [
        "/download/dev/dns-live/files.zip",
        "/download/dev/web-traffic/files.zip?compression=deflate",
    ] {
        let r = get(&api, path, Some(&admin), &[("range", "bytes=10-19")]).await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(header(&r, "content-length"), "", "{path}");
        assert_eq!(header(&r, "etag"), "", "{path}");
        assert_eq!(header(&r, "accept-ranges"), "", "{path}");
        let body = r.bytes().await.unwrap();
        assert!(body.len() > 100, "{path}: the whole zip");
        zip::ZipArchive::new(Cursor::new(&body)).unwrap();
        let before = file_reads(&sim);
        let head = head(&api, path, Some(&admin), &[]).await;
        assert_eq!(head.status(), 200, "{path}");
        assert_eq!(header(&head, "content-type"), "application/zip");
        assert_eq!(header(&head, "etag"), "", "{path}");
        assert_eq!(file_reads(&sim), before, "{path}: HEAD reads no file");
    }
}
