//! Streams a generated capture of N GiB (default 2) through the archive engine's async path
//! (fetcher → tar → zip → bounded channel → consumer) and prints throughput; run it under
//! `/usr/bin/time -v` to read the peak RSS. `cargo run --release --example stream_rss -- 2`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use async_trait::async_trait;
use futures_util::StreamExt;
use packetcapture_domain::archive::{Engine, EntryNamer, NodeSource, stream_zip};
use packetcapture_domain::{
    CaptureDir, CaptureRef, Compression, EntryPoint, Error, FileFetcher, FileInfo, FileSet,
    FileSlice, NodeName, Result, TarStream,
};
use tokio::io::{AsyncRead, ReadBuf};

const FILE: u64 = 256 << 20; // files of 256 MiB, as rotated pcaps of a busy node

/// A tar stream of `files` files of `FILE` bytes each, produced on the fly.
struct Generated {
    files: u64,
    pos: u64,
    header: [u8; 512],
}

impl Generated {
    fn new(files: u64) -> Self {
        let mut h = tar::Header::new_gnu();
        h.set_size(FILE);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_path("x.pcap").unwrap_or_default();
        h.set_cksum();
        Self {
            files,
            pos: 0,
            header: *h.as_bytes(),
        }
    }
    fn total(&self) -> u64 {
        self.files * (512 + FILE) + 1024
    }
}

impl AsyncRead for Generated {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let remaining = self.total() - self.pos;
        let n = (buf.remaining() as u64).min(remaining) as usize;
        let unfilled = buf.initialize_unfilled_to(n);
        let mut i = 0;
        while i < n {
            let p = self.pos + i as u64;
            let in_file = p % (512 + FILE);
            if p >= self.files * (512 + FILE) {
                unfilled[i] = 0;
                i += 1;
            } else if in_file < 512 {
                // Give each file its own name: x.pcap, then rotated names.
                let mut h = self.header;
                let name = format!("x-{}.pcap", p / (512 + FILE));
                let mut header = tar::Header::from_byte_slice(&h).clone();
                header.set_path(&name).unwrap_or_default();
                header.set_cksum();
                h.copy_from_slice(header.as_bytes());
                let take = ((512 - in_file) as usize).min(n - i);
                unfilled[i..i + take]
                    .copy_from_slice(&h[in_file as usize..in_file as usize + take]);
                i += take;
            } else {
                let take = ((512 + FILE - in_file) as usize).min(n - i);
                unfilled[i..i + take].fill(0xa5);
                i += take;
            }
        }
        buf.advance(n);
        self.pos += n as u64;
        Poll::Ready(Ok(()))
    }
}

struct GeneratingFetcher {
    files: u64,
}

#[async_trait]
impl FileFetcher for GeneratingFetcher {
    async fn entry_point(&self, node: &NodeName) -> Result<EntryPoint> {
        Ok(EntryPoint {
            node: node.clone(),
            handle: String::new(),
        })
    }
    async fn archive(&self, _: &EntryPoint, _: &FileSet) -> Result<TarStream> {
        let stream =
            tokio_util::io::ReaderStream::with_capacity(Generated::new(self.files), 256 * 1024)
                .map(|chunk| {
                    chunk.map_err(|e| packetcapture_domain::Error::Internal(e.to_string()))
                });
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let gib: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(2);
    let files = gib * (1 << 30) / FILE;
    let node = NodeName::new("node-1")?;
    let capture = CaptureRef::parse("dev", "bench")?;
    let source = NodeSource {
        entry: EntryPoint {
            node: node.clone(),
            handle: String::new(),
        },
        dir: CaptureDir::new("node-1", "/var/log/calico/pcap", &capture)?,
        files: None,
    };
    let started = Instant::now();
    let fetcher = Arc::new(GeneratingFetcher { files });
    let mut stream = stream_zip(
        fetcher,
        vec![source],
        EntryNamer::default(),
        Compression::Stored,
        &Engine::default(),
        "tester",
    )
    .await?
    .ok_or("no file")?;
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        bytes += chunk?.len() as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "streamed {files} files, {:.2} GiB of data, {} bytes of zip in {secs:.2} s: {:.0} MB/s",
        (files * FILE) as f64 / (1u64 << 30) as f64,
        bytes,
        bytes as f64 / secs / 1e6
    );
    Ok(())
}
