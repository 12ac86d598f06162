//! The zip side of the engine: tar events of each node, in order, become zip entries written
//! into an in-memory sink that is handed out in chunks. Stored entries are written on the
//! async side (CRC and a copy); Deflate runs on a blocking thread, one chunk at a time.
//!
//! Invariants: nothing is handed out before the first regular file's header; after a failure
//! nothing more is handed out, so the central directory that dropping a `ZipWriter` writes
//! never reaches the client.

use std::collections::HashSet;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use zip::write::{FullFileOptions, StreamWriter, ZipWriter};

use super::fetch::{Failure, NodeSource, next_chunk};
use super::output::{CHUNK_SIZE, Msg, Summary, base_name, send, tar_error};
use super::spool::Pipe;
use super::tar::{TarEvent, TarParser};
use crate::error::{Error, Result};
use crate::types::{Compression, NodeFiles, NodeName};

/// The zip writer's output, drained by the engine. File data that comes from the chunk being
/// written (`current`) is kept as slices of it, not copied (the zip writer hands Stored data
/// through unchanged); everything else (headers, descriptors, deflated data, the central
/// directory) is copied into a small buffer.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Output>>);

#[derive(Default)]
struct Output {
    current: Option<Bytes>,
    ready: Vec<Bytes>,
    scratch: BytesMut,
    len: usize,
}

impl Output {
    fn seal_scratch(&mut self) {
        if !self.scratch.is_empty() {
            let copied = self.scratch.split().freeze();
            self.ready.push(copied);
        }
    }
}

impl Sink {
    fn lock(&self) -> MutexGuard<'_, Output> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn len(&self) -> usize {
        self.lock().len
    }

    /// Everything written so far, in order.
    fn take(&self) -> Vec<Bytes> {
        let mut out = self.lock();
        out.seal_scratch();
        out.len = 0;
        std::mem::take(&mut out.ready)
    }

    /// Data written while `chunk` is current may be kept as slices of it.
    fn set_current(&self, chunk: Option<Bytes>) {
        self.lock().current = chunk;
    }
}

/// True when `part` lies within `whole`'s memory.
fn within(whole: &Bytes, part: &[u8]) -> bool {
    let start = whole.as_ptr() as usize;
    let at = part.as_ptr() as usize;
    at >= start && at + part.len() <= start + whole.len()
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut out = self.lock();
        out.len += data.len();
        match out
            .current
            .as_ref()
            .filter(|c| !data.is_empty() && within(c, data))
        {
            Some(current) => {
                let slice = current.slice_ref(data);
                out.seal_scratch();
                out.ready.push(slice);
            }
            None => out.scratch.extend_from_slice(data),
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

type Writer = ZipWriter<StreamWriter<Sink>>;

/// The name of the manifest entry, the zip's last.
pub const MANIFEST: &str = "SHA256SUMS";

/// Decides each zip entry's name: the file's base name, or `{node}/{name}` when the name
/// occurs on more than one node (or is the manifest's, [`MANIFEST`]).
#[derive(Clone, Debug, Default)]
pub struct EntryNamer {
    colliding: HashSet<String>,
    used: HashSet<String>,
}

impl EntryNamer {
    /// Names reported by more than one node (from the capture's status) get the node prefix
    /// on every node; a collision the status did not predict prefixes the later file.
    pub fn from_status(files: &[NodeFiles]) -> Self {
        let mut seen: HashSet<&str> = HashSet::new();
        let mut colliding = HashSet::new();
        for node in files {
            let unique: HashSet<&str> = node.file_names.iter().map(String::as_str).collect();
            for name in unique {
                if !seen.insert(name) {
                    colliding.insert(name.to_owned());
                }
            }
        }
        Self {
            colliding,
            // The manifest's name is taken: a node file of that name gets its node in front.
            used: HashSet::from([MANIFEST.to_owned()]),
        }
    }

    /// The entry name for `base` from `node`; never returns a name twice.
    pub fn name(&mut self, node: &NodeName, base: &str) -> String {
        let mut name = if self.colliding.contains(base) || self.used.contains(base) {
            format!("{node}/{base}")
        } else {
            base.to_owned()
        };
        let stem = name.clone();
        let mut n = 1;
        while self.used.contains(&name) {
            n += 1;
            name = format!("{stem}~{n}");
        }
        self.used.insert(name.clone());
        name
    }
}

/// The zip being written.
struct Assembly {
    writer: Option<Writer>,
    sink: Sink,
    compression: Compression,
    started: bool,
    summary: Summary,
    /// The entry being written and the digest of its data so far.
    hashing: Option<(String, Sha256)>,
    /// `sha256sum` lines of the entries written.
    manifest: String,
    /// The newest entry's modification time (the manifest's).
    newest: u64,
}

impl Assembly {
    fn new(compression: Compression) -> Self {
        let sink = Sink::default();
        Self {
            writer: Some(ZipWriter::new_stream(sink.clone())),
            sink,
            compression,
            started: false,
            summary: Summary::default(),
            hashing: None,
            manifest: String::new(),
            newest: 0,
        }
    }

    fn writer(&mut self) -> Result<&mut Writer> {
        self.writer
            .as_mut()
            .ok_or_else(|| Error::Internal("the zip writer is gone".into()))
    }

    fn start_file(&mut self, name: &str, size: u64, mtime: u64) -> Result<()> {
        let options = entry_options(self.compression, size, mtime);
        self.writer()?.start_file(name, options).map_err(zip_err)?;
        self.started = true;
        self.hashing = Some((name.to_owned(), Sha256::new()));
        self.newest = self.newest.max(mtime);
        Ok(())
    }

    /// The current entry is complete: its line goes into the manifest.
    fn end_file(&mut self) {
        self.summary.files += 1;
        if let Some((name, digest)) = self.hashing.take() {
            manifest_line(&mut self.manifest, &digest.finalize(), &name);
        }
    }

    async fn write(&mut self, data: Bytes) -> Result<()> {
        self.summary.bytes += data.len() as u64;
        if let Some((_, digest)) = &mut self.hashing {
            digest.update(&data);
        }
        match self.compression {
            Compression::Stored => {
                self.sink.set_current(Some(data.clone()));
                let written = self.writer()?.write_all(&data);
                self.sink.set_current(None);
                written.map_err(|source| Error::ZipWrite { source })
            }
            Compression::Deflate => {
                let mut writer = self
                    .writer
                    .take()
                    .ok_or_else(|| Error::Internal("the zip writer is gone".into()))?;
                let (writer, written) = tokio::task::spawn_blocking(move || {
                    let written = writer.write_all(&data);
                    (writer, written)
                })
                .await
                .map_err(|e| Error::Internal(format!("the deflate thread failed: {e}")))?;
                self.writer = Some(writer);
                written.map_err(|source| Error::ZipWrite { source })
            }
        }
    }

    /// Output ready to hand out: all of it once the first file started (`eager`), else
    /// once there is at least a chunk's worth.
    fn ready(&self, eager: bool) -> Vec<Bytes> {
        let len = self.sink.len();
        if self.started && len > 0 && (eager || len >= CHUNK_SIZE) {
            self.sink.take()
        } else {
            Vec::new()
        }
    }

    /// Writes the manifest entry, then the central directory; the last of the output.
    fn finish(mut self) -> Result<Vec<Bytes>> {
        if self.started {
            let manifest = std::mem::take(&mut self.manifest).into_bytes();
            let options = entry_options(Compression::Stored, manifest.len() as u64, self.newest);
            let writer = self.writer()?;
            writer.start_file(MANIFEST, options).map_err(zip_err)?;
            writer
                .write_all(&manifest)
                .map_err(|source| Error::ZipWrite { source })?;
        }
        if let Some(writer) = self.writer.take()
            && self.started
        {
            writer.finish().map_err(zip_err)?;
        }
        Ok(self.sink.take())
    }
}

/// Writes every node's files into the zip, node after node in order, handing out chunks on
/// `tx`. Ends at the first failure (a node's, announced on `failure`; or the client leaving).
pub(crate) async fn assemble(
    nodes: Vec<(NodeSource, Arc<Pipe>)>,
    mut namer: EntryNamer,
    compression: Compression,
    failure: &Failure,
    tx: &mpsc::Sender<Msg>,
) -> Result<Summary> {
    let mut zip = Assembly::new(compression);
    for (source, pipe) in nodes {
        pipe.make_direct();
        let node = source.dir.node();
        let mut tar = TarParser::new();
        let mut skipping = false;
        loop {
            let Some(mut chunk) = next_chunk(&pipe, failure, tx).await? else {
                break;
            };
            while let Some(event) = tar.next(&mut chunk).map_err(|e| tar_error(node, e))? {
                let first = !zip.started;
                match event {
                    TarEvent::File { path, size, mtime } => match base_name(&path) {
                        Some(base) => {
                            let name = namer.name(node, base);
                            zip.start_file(&name, size, mtime)?;
                            skipping = false;
                        }
                        None => {
                            tracing::warn!(node = %node, path = %String::from_utf8_lossy(&path), "skipping a file whose name is not UTF-8");
                            skipping = true;
                        }
                    },
                    TarEvent::Data(data) if !skipping => zip.write(data).await?,
                    TarEvent::FileEnd if !skipping => zip.end_file(),
                    TarEvent::Data(_) | TarEvent::FileEnd | TarEvent::End => {}
                }
                let out = zip.ready(first);
                if !out.is_empty() {
                    send(tx, Msg::Data(out)).await?;
                }
            }
        }
        tar.finish().map_err(|e| tar_error(node, e))?;
    }
    let summary = zip.summary;
    let started = zip.started;
    if started {
        send(tx, Msg::Data(zip.finish()?)).await?;
    }
    Ok(summary)
}

/// One `sha256sum` line: `{hex}  {name}`; a name with a backslash or a newline is escaped
/// and the line starts with a backslash, as GNU `sha256sum` writes and `-c` reads.
pub(crate) fn manifest_line(out: &mut String, digest: &[u8], name: &str) {
    use std::fmt::Write as _;
    let escaped = name.contains(['\\', '\n', '\r']);
    if escaped {
        out.push('\\');
    }
    for byte in digest {
        let _ = write!(out, "{byte:02x}");
    }
    out.push_str("  ");
    if escaped {
        for c in name.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c => out.push(c),
            }
        }
    } else {
        out.push_str(name);
    }
    out.push('\n');
}

fn zip_err(e: zip::result::ZipError) -> Error {
    match e {
        zip::result::ZipError::Io(source) => Error::ZipWrite { source },
        other => Error::ZipWrite {
            source: io::Error::other(other),
        },
    }
}

fn entry_options(
    compression: Compression,
    size: u64,
    mtime: u64,
) -> FullFileOptions<'static, 'static> {
    let method = match compression {
        Compression::Stored => zip::CompressionMethod::Stored,
        Compression::Deflate => zip::CompressionMethod::Deflated,
    };
    let mut options = FullFileOptions::default()
        .compression_method(method)
        .large_file(size >= u64::from(u32::MAX))
        .unix_permissions(0o644);
    if let Some(dos) = dos_time(mtime) {
        options = options.last_modified_time(dos);
    }
    if let Ok(secs) = u32::try_from(mtime) {
        // The Unix timestamp too, exact and free of time zones, for unzip and friends.
        match options
            .clone()
            .with_extended_timestamp(Some(secs), None, None)
        {
            Ok(with_ts) => options = with_ts,
            Err(e) => tracing::debug!(error = %e, "extended timestamp not added"),
        }
    }
    options
}

fn dos_time(mtime: u64) -> Option<zip::DateTime> {
    let ts = jiff::Timestamp::from_second(i64::try_from(mtime).ok()?).ok()?;
    let civil = ts.to_zoned(jiff::tz::TimeZone::UTC).datetime();
    zip::DateTime::try_from(civil).ok()
}
