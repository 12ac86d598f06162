//! The merge side of the engine: every stream's pcap files, read at once, become one pcapng
//! in timestamp order.
//!
//! A stream is one node's `{pod}_{iface}` file series, read by one tar of its files in time
//! order (rotated oldest first, then the active file), so a stream's packets come in time
//! order and a heap over the streams' next packets gives the merged order; ties go to the
//! stream earlier in the list (status order, then stream name), so the same capture gives
//! the same file. Live, every stream is read at once into a small direct pipe: memory is
//! bounded by the streams' windows, whatever their size; beyond what may be open at once,
//! the streams are read into the spool and merged from there.
//!
//! The file: a Section Header Block, one Interface Description Block per stream (its
//! `if_name` says node and interface, nanosecond timestamps), then Enhanced Packet Blocks.
//! Invariants: nothing is sent before the first packet is known (no packet: nothing at all,
//! the caller answers 204); a cut last record ends its file cleanly (dropped, counted in the
//! log); bytes that are not pcap fail the download.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use super::fetch::{Failure, NodeSource, next_chunk};
use super::output::{CHUNK_SIZE, Msg, Summary, base_name, send, tar_error};
use super::spool::Pipe;
use super::tar::{TarEvent, TarParser};
use crate::bpf::{Filter, Program};
use crate::error::{Error, Result};
use crate::pcap::{self, Interface, Packet, PcapHeader, PcapReader, Window};
use crate::types::NodeName;

/// Bytes each stream's pipe may hold ahead of the merge: one frame of kube-apiserver's
/// (32 KiB; the pump reads the next one only once it is taken).
pub(crate) const STREAM_WINDOW: u64 = 32 * 1024;
/// The most a stream merged from the spool reads back at once.
pub(crate) const READ_BACK: u64 = 32 * 1024;
/// The application named in the section header.
const APPLICATION: &str = concat!("packetcapture-api ", env!("CARGO_PKG_VERSION"));

/// One stream to merge.
#[derive(Clone, Debug)]
pub struct StreamSource {
    /// The node's read of the stream's files, in time order.
    pub source: NodeSource,
    /// The interface's name: `{node}/{iface}`.
    pub name: String,
    /// The interface's description: namespace, capture, pod and node.
    pub description: String,
}

/// Reads one stream's tar of pcap files as packets.
struct Reader {
    node: NodeName,
    pipe: Arc<Pipe>,
    tar: TarParser,
    chunk: Bytes,
    /// The file being read.
    file: Option<(String, PcapReader)>,
    /// The header of the stream's first file that had one.
    first: Option<PcapHeader>,
    ended: bool,
    /// The filter's program for the current file's link type and snap length.
    program: Option<(PcapHeader, Arc<Program>)>,
    /// Packets read in the window (kept or not).
    read: u64,
}

/// Which packets a merge keeps: those in the window that its filter (if any) matches.
#[derive(Clone, Debug, Default)]
pub struct Choice {
    /// The time window.
    pub window: Window,
    /// The request's filter.
    pub filter: Option<Arc<Filter>>,
}

impl Reader {
    fn new(node: NodeName, pipe: Arc<Pipe>) -> Self {
        Self {
            node,
            pipe,
            tar: TarParser::new(),
            chunk: Bytes::new(),
            file: None,
            first: None,
            ended: false,
            program: None,
            read: 0,
        }
    }

    /// True when `filter` keeps `packet` of a file with `header` (compiling its program for
    /// a link type it has not seen).
    async fn keeps(
        &mut self,
        filter: Option<&Filter>,
        header: PcapHeader,
        packet: &Packet,
    ) -> Result<bool> {
        let Some(filter) = filter else {
            return Ok(true);
        };
        let program = match &self.program {
            Some((h, p)) if (h.link_type, h.snaplen) == (header.link_type, header.snaplen) => {
                p.clone()
            }
            _ => {
                let p = filter.program(header.link_type, header.snaplen).await?;
                self.program = Some((header, p.clone()));
                p
            }
        };
        Ok(program.matches(&packet.data, packet.orig_len))
    }

    /// The stream's next packet of `choice`, with its file's header; `None` at its end.
    async fn next(
        &mut self,
        choice: &Choice,
        failure: &Failure,
        tx: &mpsc::Sender<Msg>,
    ) -> Result<Option<(Packet, PcapHeader)>> {
        loop {
            if let Some((name, file)) = &mut self.file {
                let next = file.next_packet().map_err(|e| Error::NotACapture {
                    node: self.node.to_string(),
                    file: name.clone(),
                    reason: e.to_string(),
                })?;
                if let Some(header) = file.header() {
                    self.first.get_or_insert(header);
                    if let Some(packet) = next {
                        if choice.window.contains(packet.ts) {
                            self.read += 1;
                            if self
                                .keeps(choice.filter.as_deref(), header, &packet)
                                .await?
                            {
                                return Ok(Some((packet, header)));
                            }
                        }
                        continue;
                    }
                }
            }
            if self.ended {
                return Ok(None);
            }
            if self.chunk.is_empty() {
                match next_chunk(&self.pipe, failure, tx).await? {
                    Some(chunk) => self.chunk = chunk,
                    None => {
                        self.tar.finish().map_err(|e| tar_error(&self.node, e))?;
                        self.ended = true;
                    }
                }
                continue;
            }
            match self
                .tar
                .next(&mut self.chunk)
                .map_err(|e| tar_error(&self.node, e))?
            {
                Some(TarEvent::File { path, .. }) => {
                    let name = base_name(&path)
                        .map(str::to_owned)
                        .unwrap_or_else(|| String::from_utf8_lossy(&path).into_owned());
                    self.file = Some((name, PcapReader::new()));
                }
                Some(TarEvent::Data(data)) => {
                    if let Some((_, file)) = &mut self.file {
                        file.push(data);
                    }
                }
                Some(TarEvent::FileEnd) => {
                    if let Some((name, file)) = self.file.take() {
                        let cut = file.finish();
                        if cut > 0 {
                            tracing::info!(node = %self.node, file = %name, bytes = cut, "dropped the cut last record of a capture file");
                        }
                    }
                }
                Some(TarEvent::End) | None => {}
            }
        }
    }
}

/// The interfaces written so far: per stream, `(link type, snap length, interface id)`.
pub(super) struct Interfaces {
    by_stream: Vec<Vec<(u32, u32, u32)>>,
    next: u32,
}

impl Interfaces {
    /// None written yet, for `streams` streams.
    pub(super) fn new(streams: usize) -> Self {
        Self {
            by_stream: vec![Vec::new(); streams],
            next: 0,
        }
    }

    /// One more stream (a followed capture's streams come as they appear).
    pub(super) fn add_stream(&mut self) {
        self.by_stream.push(Vec::new());
    }

    /// The id of `stream`'s interface for `header`, writing its description first if new.
    pub(super) fn id(
        &mut self,
        out: &mut BytesMut,
        stream: usize,
        source: &StreamSource,
        header: PcapHeader,
    ) -> u32 {
        let known = &mut self.by_stream[stream];
        if let Some((_, _, id)) = known
            .iter()
            .find(|(link, snap, _)| *link == header.link_type && *snap == header.snaplen)
        {
            return *id;
        }
        pcap::interface(
            out,
            &Interface {
                name: source.name.clone(),
                description: source.description.clone(),
                link_type: header.link_type,
                snaplen: header.snaplen,
            },
        );
        let id = self.next;
        self.next += 1;
        known.push((header.link_type, header.snaplen, id));
        id
    }
}

/// Merges every stream's packets into one pcapng, handing out chunks on `tx`. Ends at the
/// first failure (a stream's, announced on `failure`; or the client leaving).
pub(crate) async fn assemble(
    streams: Vec<(StreamSource, Arc<Pipe>)>,
    choice: Choice,
    live: bool,
    failure: &Failure,
    tx: &mpsc::Sender<Msg>,
) -> Result<Summary> {
    let mut readers = Vec::with_capacity(streams.len());
    let mut sources = Vec::with_capacity(streams.len());
    for (source, pipe) in streams {
        // Live, every stream passes through its small window; otherwise each spools.
        if live {
            pipe.make_direct();
        }
        readers.push(Reader::new(source.source.dir.node().clone(), pipe));
        sources.push(source);
    }
    // Every stream's first packet, before anything is sent.
    let mut heads = Vec::with_capacity(readers.len());
    for reader in &mut readers {
        heads.push(reader.next(&choice, failure, tx).await?);
    }
    let mut summary = Summary::default();
    if heads.iter().all(Option::is_none) {
        summary.read = readers.iter().map(|r| r.read).sum();
        return Ok(summary);
    }
    let mut out = BytesMut::with_capacity(CHUNK_SIZE * 2);
    pcap::section_header(&mut out, APPLICATION);
    let mut interfaces = Interfaces::new(readers.len());
    // One description per stream up front, in stream order.
    for (i, reader) in readers.iter().enumerate() {
        if let Some(header) = reader.first {
            interfaces.id(&mut out, i, &sources[i], header);
        }
    }
    let mut heap: BinaryHeap<Reverse<(u64, usize)>> = heads
        .iter()
        .enumerate()
        .filter_map(|(i, head)| head.as_ref().map(|(p, _)| Reverse((p.ts, i))))
        .collect();
    let mut first = true;
    while let Some(Reverse((_, i))) = heap.pop() {
        let Some((packet, header)) = heads[i].take() else {
            continue;
        };
        let id = interfaces.id(&mut out, i, &sources[i], header);
        pcap::packet(&mut out, id, &packet);
        summary.packets += 1;
        summary.bytes += packet.data.len() as u64;
        if first || out.len() >= CHUNK_SIZE {
            first = false;
            send(tx, Msg::Data(vec![out.split().freeze()])).await?;
        }
        if let Some(next) = readers[i].next(&choice, failure, tx).await? {
            heap.push(Reverse((next.0.ts, i)));
            heads[i] = Some(next);
        }
    }
    if !out.is_empty() {
        send(tx, Msg::Data(vec![out.split().freeze()])).await?;
    }
    summary.read = readers.iter().map(|r| r.read).sum();
    Ok(summary)
}
