//! A file over 4 GiB, generated on the fly (never stored as input), goes through the engine
//! as ZIP64 and reads back whole with a zip reader (which checks the CRC); a small file after
//! it starts past 4 GiB, so its offset needs ZIP64 too.

use std::io::{self, Read, Seek, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use futures_util::StreamExt;
use packetcapture_domain::archive::{Engine, EntryNamer, NodeSource, stream_zip};
use packetcapture_domain::{
    CaptureDir, CaptureRef, Compression, EntryPoint, Error, FileFetcher, FileInfo, FileSet,
    FileSlice, NodeName, Result, TarStream,
};
use tokio::io::{AsyncRead, ReadBuf};

const SIZE: u64 = (1 << 32) + 123_457; // just past 4 GiB, and not a multiple of 512

/// A tar stream of one file of `SIZE` bytes: header, patterned data, padding, end blocks.
struct GeneratedTar {
    pos: u64,
    header: [u8; 512],
    /// A second, small file and the end-of-archive blocks, after the big file.
    tail: Vec<u8>,
}

impl GeneratedTar {
    fn new() -> Self {
        let mut h = tar::Header::new_gnu();
        h.set_size(SIZE);
        h.set_mode(0o644);
        h.set_mtime(1_760_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_path("big.pcap").unwrap();
        h.set_cksum();
        let mut tail = crate::support::tar_of(&[("after.pcap", b"after", 7)]);
        tail.drain(..512); // the directory entry tar_of puts first
        Self {
            pos: 0,
            header: *h.as_bytes(),
            tail,
        }
    }

    /// Header, data and padding of the big file; `tail` follows.
    fn total() -> u64 {
        512 + SIZE.div_ceil(512) * 512
    }
}

/// The pattern, many times over, for copying.
static CYCLE: std::sync::LazyLock<Vec<u8>> =
    std::sync::LazyLock::new(|| (0..251 * 4096u64).map(pattern).collect());

fn pattern(offset: u64) -> u8 {
    (offset % 251) as u8
}

impl AsyncRead for GeneratedTar {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let remaining = Self::total() + self.tail.len() as u64 - self.pos;
        let n = (buf.remaining() as u64).min(remaining).min(1 << 20) as usize;
        let out = buf.initialize_unfilled_to(n);
        let mut i = 0;
        while i < n {
            let p = self.pos + i as u64;
            let run = if p < 512 {
                out[i] = self.header[p as usize];
                1
            } else if p - 512 < SIZE {
                // The pattern repeats every 251 bytes: copy whole runs of it.
                let start = ((p - 512) % 251) as usize;
                let run = (n - i)
                    .min((SIZE - (p - 512)) as usize)
                    .min(CYCLE.len() - start);
                out[i..i + run].copy_from_slice(&CYCLE[start..start + run]);
                run
            } else if p < Self::total() {
                out[i] = 0;
                1
            } else {
                out[i] = self.tail[(p - Self::total()) as usize];
                1
            };
            i += run;
        }
        buf.advance(n);
        self.pos += n as u64;
        Poll::Ready(Ok(()))
    }
}

struct Generating;

#[async_trait]
impl FileFetcher for Generating {
    async fn entry_point(&self, node: &NodeName) -> Result<EntryPoint> {
        Ok(EntryPoint {
            node: node.clone(),
            handle: String::new(),
        })
    }
    async fn archive(&self, _: &EntryPoint, _: &FileSet) -> Result<TarStream> {
        let stream = tokio_util::io::ReaderStream::with_capacity(GeneratedTar::new(), 1 << 20)
            .map(|chunk| chunk.map_err(|e| packetcapture_domain::Error::Internal(e.to_string())));
        Ok(Box::pin(stream))
    }
    async fn read_file(&self, _: &EntryPoint, _: &FileSlice) -> Result<TarStream> {
        Err(Error::Internal(
            "the generator serves whole directories only".into(),
        ))
    }
    async fn list(&self, _: &EntryPoint, _: &CaptureDir) -> Result<Vec<FileInfo>> {
        Ok(Vec::new())
    }
    async fn remove(&self, _: &EntryPoint, _: &CaptureDir) -> Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_over_4_gib_is_written_as_zip64_and_reads_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.zip");
    let mut file = io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path).unwrap());
    let reference = CaptureRef::parse("dev", "big").unwrap();
    let source = NodeSource {
        entry: EntryPoint {
            node: NodeName::new("node-a").unwrap(),
            handle: String::new(),
        },
        dir: CaptureDir::new("node-a", "/pcap", &reference).unwrap(),
        files: None,
    };
    let mut stream = stream_zip(
        Arc::new(Generating),
        vec![source],
        EntryNamer::default(),
        Compression::Stored,
        &Engine::default(),
        "tester",
    )
    .await
    .unwrap()
    .unwrap();
    while let Some(chunk) = stream.next().await {
        file.write_all(&chunk.unwrap()).unwrap();
    }
    file.flush().unwrap();
    drop(file);

    let mut zip = zip::ZipArchive::new(std::fs::File::open(&path).unwrap()).unwrap();
    assert_eq!(zip.len(), 3, "two files and the manifest");
    let mut entry = zip.by_index(0).unwrap();
    assert_eq!(entry.name().unwrap(), "big.pcap");
    assert_eq!(entry.size(), SIZE);
    // Check the pattern at a few offsets and read everything (the reader checks the CRC).
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        let n = entry.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert_eq!(buf[0], pattern(offset), "byte at offset {offset}");
        assert_eq!(buf[n - 1], pattern(offset + n as u64 - 1));
        offset += n as u64;
    }
    assert_eq!(offset, SIZE);
    drop(entry);
    let mut after = zip.by_index(1).unwrap();
    assert_eq!(after.name().unwrap(), "after.pcap");
    assert!(
        after.header_start() > u64::from(u32::MAX),
        "the second entry starts past 4 GiB"
    );
    let mut data = Vec::new();
    after.read_to_end(&mut data).unwrap();
    assert_eq!(data, b"after");
    drop(after);
    let mut file = zip.into_inner();
    assert!(file.stream_position().unwrap() > SIZE);

    // A reader that is not the crate that wrote it: Python's zipfile checks every CRC and
    // the ZIP64 records; hashlib checks the manifest.
    let check = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile, hashlib\nz = zipfile.ZipFile(sys.argv[1])\nbad = z.testzip()\nassert bad is None, bad\n\
             sums = {}\nfor i in z.infolist()[:-1]:\n    h = hashlib.sha256()\n    with z.open(i) as f:\n        for block in iter(lambda: f.read(1 << 20), b''):\n            h.update(block)\n    sums[i.filename] = h.hexdigest()\n\
             listed = dict(reversed(l.split('  ', 1)) for l in z.read('SHA256SUMS').decode().splitlines())\nassert listed == sums, (listed, sums)\n\
             print(' '.join(f'{i.filename}:{i.file_size}' for i in z.infolist()))",
        ])
        .arg(&path)
        .output()
        .expect("python3 is on this machine (.ci/run installs it)");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&check.stdout).trim(),
        format!("big.pcap:{SIZE} after.pcap:5 SHA256SUMS:152")
    );
}
