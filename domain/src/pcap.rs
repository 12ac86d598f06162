//! Capture files: a push reader of classic pcap (micro- and nanosecond, either byte order),
//! a pcapng writer (one section, an interface per stream, nanosecond timestamps), and the
//! file names Felix gives a capture's files (`{pod}_{iface}.pcap`, rotated
//! `{pod}_{iface}-{unix micros}.pcap`).
//!
//! The reader keeps every whole record and drops a cut last one (Felix writes a record's
//! header and data in two writes, so an active file may end between them), counting the
//! bytes it dropped; bytes that are not a pcap at all are an error.

use bytes::{BufMut, Bytes, BytesMut};

/// The largest record accepted whatever the file's snap length says (Wireshark's limit).
const MAX_RECORD: u32 = 256 * 1024;
/// The global header's size.
const HEADER: usize = 24;
/// A record header's size.
const RECORD: usize = 16;

/// A classic pcap file's global header, as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcapHeader {
    /// The link-layer type (1: Ethernet).
    pub link_type: u32,
    /// The snap length.
    pub snaplen: u32,
    /// True when timestamps are in nanoseconds (magic `0xA1B23C4D`).
    pub nanos: bool,
}

/// Ethernet's link type, Calico's captures'.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// The snap length tcpdump and Felix use when none is set.
pub const DEFAULT_SNAPLEN: u32 = 262_144;

/// One packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Nanoseconds since the Unix epoch.
    pub ts: u64,
    /// Its length on the wire.
    pub orig_len: u32,
    /// The bytes captured.
    pub data: Bytes,
}

/// Why bytes cannot be read as pcap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PcapError {
    /// The file does not start with a pcap magic number.
    #[error("not a pcap file (magic {0:#010x})")]
    NotPcap(u32),
    /// A record header claims an impossible length.
    #[error("a record at byte {offset} claims {len} bytes (the snap length is {snaplen})")]
    BadRecord {
        /// Where the record starts in the file.
        offset: u64,
        /// Its captured length.
        len: u32,
        /// The file's snap length.
        snaplen: u32,
    },
}

/// A push reader of one pcap file; see the module documentation. It keeps the pieces pushed
/// as they are (no copy): a packet is a slice of its piece, and only a record that spans two
/// pieces is copied out whole.
#[derive(Debug, Default)]
pub struct PcapReader {
    /// What was pushed and not read yet, in order.
    pieces: std::collections::VecDeque<Bytes>,
    /// Their bytes.
    len: usize,
    header: Option<(PcapHeader, bool)>,
    /// Offset in the file of the first byte not read yet.
    offset: u64,
}

impl PcapReader {
    /// A reader at the start of a file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the file's next bytes.
    pub fn push(&mut self, data: Bytes) {
        if !data.is_empty() {
            self.len += data.len();
            self.pieces.push_back(data);
        }
    }

    /// The global header, once read.
    pub fn header(&self) -> Option<PcapHeader> {
        self.header.map(|(h, _)| h)
    }

    /// Copies the next `out.len()` bytes (there must be that many) without taking them.
    fn peek(&self, out: &mut [u8]) {
        let mut at = 0;
        for piece in &self.pieces {
            let n = piece.len().min(out.len() - at);
            out[at..at + n].copy_from_slice(&piece[..n]);
            at += n;
            if at == out.len() {
                return;
            }
        }
    }

    /// Takes the next `n` bytes (there must be that many): a slice of one piece when they
    /// are in one, else a copy of them.
    fn take(&mut self, n: usize) -> Bytes {
        self.len -= n;
        self.offset += n as u64;
        if let Some(front) = self.pieces.front_mut()
            && front.len() >= n
        {
            let taken = front.split_to(n);
            if front.is_empty() {
                self.pieces.pop_front();
            }
            return taken;
        }
        let mut out = BytesMut::with_capacity(n);
        while out.len() < n {
            let Some(front) = self.pieces.front_mut() else {
                break;
            };
            let part = front.split_to(front.len().min(n - out.len()));
            out.extend_from_slice(&part);
            if front.is_empty() {
                self.pieces.pop_front();
            }
        }
        out.freeze()
    }

    /// Reads the global header if it is complete.
    fn read_header(&mut self) -> Result<bool, PcapError> {
        if self.header.is_some() {
            return Ok(true);
        }
        if self.len < 4 {
            return Ok(false);
        }
        let mut m = [0u8; 4];
        self.peek(&mut m);
        let (nanos, big) = match u32::from_le_bytes(m) {
            0xA1B2_C3D4 => (false, false),
            0xA1B2_3C4D => (true, false),
            0xD4C3_B2A1 => (false, true),
            0x4D3C_B2A1 => (true, true),
            other => return Err(PcapError::NotPcap(other)),
        };
        if self.len < HEADER {
            return Ok(false);
        }
        let mut h = [0u8; HEADER];
        self.peek(&mut h);
        self.take(HEADER);
        let word = |i: usize| {
            let b = [h[i], h[i + 1], h[i + 2], h[i + 3]];
            if big {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        let (snaplen, link_type) = (word(16), word(20));
        self.header = Some((
            PcapHeader {
                link_type: link_type & 0x0FFF_FFFF,
                snaplen,
                nanos,
            },
            big,
        ));
        Ok(true)
    }

    /// The next whole packet, or `None` until more bytes come.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, PcapError> {
        if !self.read_header()? {
            return Ok(None);
        }
        let Some((header, big)) = self.header else {
            return Ok(None);
        };
        if self.len < RECORD {
            return Ok(None);
        }
        let mut r = [0u8; RECORD];
        self.peek(&mut r);
        let field = |i: usize| {
            let b = [r[i * 4], r[i * 4 + 1], r[i * 4 + 2], r[i * 4 + 3]];
            if big {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        let (secs, frac, incl, orig) = (field(0), field(1), field(2), field(3));
        if incl > header.snaplen.max(MAX_RECORD) {
            return Err(PcapError::BadRecord {
                offset: self.offset,
                len: incl,
                snaplen: header.snaplen,
            });
        }
        if self.len < RECORD + incl as usize {
            return Ok(None);
        }
        self.take(RECORD);
        let data = self.take(incl as usize);
        let frac = if header.nanos {
            u64::from(frac)
        } else {
            u64::from(frac) * 1_000
        };
        Ok(Some(Packet {
            ts: u64::from(secs) * 1_000_000_000 + frac,
            orig_len: orig,
            data,
        }))
    }

    /// The file ended: the bytes of a cut last record (or header) that are dropped.
    pub fn finish(self) -> u64 {
        self.len as u64
    }
}

/// Interface description of one stream in the merged file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// `if_name`.
    pub name: String,
    /// `if_description`.
    pub description: String,
    /// The link-layer type.
    pub link_type: u32,
    /// The snap length.
    pub snaplen: u32,
}

fn pad4(n: usize) -> usize {
    (4 - n % 4) % 4
}

fn option(out: &mut BytesMut, code: u16, value: &[u8]) {
    let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
    out.put_u16_le(code);
    out.put_u16_le(len);
    out.put_slice(&value[..usize::from(len)]);
    out.put_bytes(0, pad4(usize::from(len)));
}

/// Wraps a block body: type, total length, body, total length.
fn block(out: &mut BytesMut, kind: u32, body: &[u8]) {
    let total = u32::try_from(12 + body.len()).unwrap_or(u32::MAX);
    out.put_u32_le(kind);
    out.put_u32_le(total);
    out.put_slice(body);
    out.put_u32_le(total);
}

/// The Section Header Block (little-endian, version 1.0, length unknown) naming the writer.
pub fn section_header(out: &mut BytesMut, application: &str) {
    let mut body = BytesMut::new();
    body.put_u32_le(0x1A2B_3C4D);
    body.put_u16_le(1);
    body.put_u16_le(0);
    body.put_i64_le(-1);
    option(&mut body, 4, application.as_bytes());
    option(&mut body, 0, &[]);
    block(out, 0x0A0D_0D0A, &body);
}

/// An Interface Description Block with nanosecond timestamps.
pub fn interface(out: &mut BytesMut, i: &Interface) {
    let mut body = BytesMut::new();
    body.put_u16_le(u16::try_from(i.link_type).unwrap_or(u16::MAX));
    body.put_u16_le(0);
    body.put_u32_le(i.snaplen);
    option(&mut body, 2, i.name.as_bytes());
    option(&mut body, 3, i.description.as_bytes());
    option(&mut body, 9, &[9]);
    option(&mut body, 0, &[]);
    block(out, 1, &body);
}

/// An Enhanced Packet Block on interface `id`.
pub fn packet(out: &mut BytesMut, id: u32, p: &Packet) {
    let len = p.data.len();
    let total = u32::try_from(32 + len + pad4(len)).unwrap_or(u32::MAX);
    out.reserve(total as usize);
    out.put_u32_le(6);
    out.put_u32_le(total);
    out.put_u32_le(id);
    out.put_u32_le((p.ts >> 32) as u32);
    out.put_u32_le(p.ts as u32);
    out.put_u32_le(u32::try_from(len).unwrap_or(u32::MAX));
    out.put_u32_le(p.orig_len);
    out.put_slice(&p.data);
    out.put_bytes(0, pad4(len));
    out.put_u32_le(total);
}

/// What a capture file's name says: its stream (`{pod}_{iface}`) and, for a rotated file,
/// when it was rotated.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FileName {
    /// `{pod}_{iface}`, or the whole name of a file that does not follow Felix's pattern.
    pub stream: String,
    /// The rotation time of a rotated file, microseconds since the epoch; `None` for the
    /// active file.
    pub rotated: Option<u64>,
}

impl FileName {
    /// Reads a file's base name.
    pub fn parse(name: &str) -> Self {
        let Some(stem) = name.strip_suffix(".pcap") else {
            return Self {
                stream: name.to_owned(),
                rotated: None,
            };
        };
        if let Some((stream, micros)) = stem.rsplit_once('-')
            && !micros.is_empty()
            && micros.bytes().all(|b| b.is_ascii_digit())
            && let Ok(micros) = micros.parse::<u64>()
            && stream.contains('_')
        {
            return Self {
                stream: stream.to_owned(),
                rotated: Some(micros),
            };
        }
        Self {
            stream: stem.to_owned(),
            rotated: None,
        }
    }

    /// Rotated files (oldest first), then the active file.
    pub fn order_key(&self) -> (u64, u64) {
        match self.rotated {
            Some(micros) => (0, micros),
            None => (1, 0),
        }
    }

    /// The pod and the interface, when the name follows the pattern.
    pub fn pod_and_interface(&self) -> Option<(&str, &str)> {
        self.stream.split_once('_')
    }
}

/// A time window, nanoseconds since the epoch: `since` inclusive, `until` exclusive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    /// The first instant kept.
    pub since: Option<u64>,
    /// The first instant no longer kept.
    pub until: Option<u64>,
}

impl Window {
    /// True when there is no bound.
    pub fn is_all(&self) -> bool {
        self.since.is_none() && self.until.is_none()
    }

    /// True when a packet at `ts` is in the window.
    pub fn contains(&self, ts: u64) -> bool {
        self.since.is_none_or(|s| ts >= s) && self.until.is_none_or(|u| ts < u)
    }

    /// True when packets between `start` (exclusive; `None`: any time before) and `end`
    /// (inclusive; `None`: up to now) may fall in the window.
    pub fn overlaps(&self, start: Option<u64>, end: Option<u64>) -> bool {
        let after_since = match (self.since, end) {
            (Some(since), Some(end)) => end >= since,
            _ => true,
        };
        let before_until = match (self.until, start) {
            (Some(until), Some(start)) => start < until,
            _ => true,
        };
        after_since && before_until
    }
}

/// The files of one node that may hold packets in `window`, decided from their names: a
/// rotated file holds the packets after the previous rotation of its stream up to its own
/// rotation time; the active file those after the last rotation. A file whose name does not
/// follow the pattern is kept.
pub fn files_in_window<'a>(names: &'a [String], window: &Window) -> Vec<&'a String> {
    if window.is_all() {
        return names.iter().collect();
    }
    let parsed: Vec<FileName> = names.iter().map(|n| FileName::parse(n)).collect();
    names
        .iter()
        .zip(&parsed)
        .filter(|(_, file)| {
            if file.pod_and_interface().is_none() {
                return true;
            }
            let micros_to_nanos = |m: u64| m.saturating_mul(1_000);
            let previous = parsed
                .iter()
                .filter(|other| other.stream == file.stream)
                .filter_map(|other| other.rotated)
                .filter(|r| file.rotated.is_none_or(|mine| *r < mine))
                .max()
                .map(micros_to_nanos);
            window.overlaps(previous, file.rotated.map(micros_to_nanos))
        })
        .map(|(name, _)| name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcap(nanos: bool, big: bool, records: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let magic: u32 = if nanos { 0xA1B2_3C4D } else { 0xA1B2_C3D4 };
        let put = |out: &mut Vec<u8>, v: u32| {
            if big {
                out.extend_from_slice(&v.to_be_bytes())
            } else {
                out.extend_from_slice(&v.to_le_bytes())
            }
        };
        put(&mut out, magic);
        let (major, minor): (u16, u16) = (2, 4);
        if big {
            out.extend_from_slice(&major.to_be_bytes());
            out.extend_from_slice(&minor.to_be_bytes());
        } else {
            out.extend_from_slice(&major.to_le_bytes());
            out.extend_from_slice(&minor.to_le_bytes());
        }
        put(&mut out, 0);
        put(&mut out, 0);
        put(&mut out, 65535);
        put(&mut out, 1);
        for (secs, frac, data) in records {
            put(&mut out, *secs);
            put(&mut out, *frac);
            put(&mut out, data.len() as u32);
            put(&mut out, data.len() as u32 + 10);
            out.extend_from_slice(data);
        }
        out
    }

    fn read_all(bytes: &[u8], step: usize) -> (Vec<Packet>, u64) {
        let mut r = PcapReader::new();
        let mut out = Vec::new();
        for piece in bytes.chunks(step.max(1)) {
            r.push(Bytes::copy_from_slice(piece));
            while let Some(p) = r.next_packet().unwrap() {
                out.push(p);
            }
        }
        (out, r.finish())
    }

    #[test]
    fn both_resolutions_and_byte_orders_read_alike_in_any_chunking() {
        for nanos in [false, true] {
            for big in [false, true] {
                let file = pcap(nanos, big, &[(10, 5, b"abc"), (11, 7, b"defgh")]);
                for step in [1, 3, 16, 1000] {
                    let (packets, cut) = read_all(&file, step);
                    let unit = if nanos { 1 } else { 1_000 };
                    assert_eq!(cut, 0);
                    assert_eq!(packets.len(), 2, "nanos {nanos} big {big} step {step}");
                    assert_eq!(packets[0].ts, 10_000_000_000 + 5 * unit);
                    assert_eq!(&packets[1].data[..], b"defgh");
                    assert_eq!(packets[1].orig_len, 15);
                }
            }
        }
    }

    #[test]
    fn a_cut_last_record_is_dropped_and_counted() {
        let file = pcap(false, false, &[(1, 0, b"one"), (2, 0, b"twotwo")]);
        for cut in 1..(RECORD + 6) {
            let (packets, dropped) = read_all(&file[..file.len() - cut], 7);
            assert_eq!(packets.len(), 1);
            assert_eq!(dropped as usize, RECORD + 6 - cut);
        }
        let (packets, dropped) = read_all(&file[..10], 4);
        assert!(packets.is_empty());
        assert_eq!(dropped, 10, "a cut global header");
    }

    #[test]
    fn bytes_that_are_not_pcap_are_an_error() {
        let mut r = PcapReader::new();
        r.push(Bytes::from_static(b"PK\x03\x04 not a capture at all"));
        assert_eq!(r.next_packet(), Err(PcapError::NotPcap(0x0403_4B50)));
        let mut file = pcap(false, false, &[]);
        file.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0x7F, 0, 0, 0, 0]);
        let mut r = PcapReader::new();
        r.push(Bytes::from(file));
        assert!(matches!(
            r.next_packet(),
            Err(PcapError::BadRecord { offset: 24, .. })
        ));
    }

    #[test]
    fn file_names_give_the_stream_and_its_order() {
        let active = FileName::parse("web-7d9_cali1234.pcap");
        let rotated = FileName::parse("web-7d9_cali1234-1700000000123456.pcap");
        assert_eq!(active.stream, "web-7d9_cali1234");
        assert_eq!(rotated.stream, "web-7d9_cali1234");
        assert_eq!(rotated.rotated, Some(1_700_000_000_123_456));
        assert!(rotated.order_key() < active.order_key());
        assert_eq!(active.pod_and_interface(), Some(("web-7d9", "cali1234")));
        assert_eq!(FileName::parse("notes.txt").stream, "notes.txt");
        assert_eq!(
            FileName::parse("a-b.pcap").rotated,
            None,
            "no stream separator"
        );
    }

    #[test]
    fn files_are_kept_when_their_span_may_meet_the_window() {
        let names: Vec<String> = [
            "p_c-1000.pcap", // packets up to 1 ms
            "p_c-2000.pcap", // (1 ms, 2 ms]
            "p_c.pcap",      // after 2 ms
            "odd.bin",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let ms = |m: u64| Some(m * 1_000_000);
        let pick = |since, until| -> Vec<&str> {
            files_in_window(&names, &Window { since, until })
                .into_iter()
                .map(String::as_str)
                .collect()
        };
        assert_eq!(pick(None, None).len(), 4);
        assert_eq!(pick(ms(3), None), ["p_c.pcap", "odd.bin"]);
        assert_eq!(pick(ms(2), None), ["p_c-2000.pcap", "p_c.pcap", "odd.bin"]);
        assert_eq!(pick(None, ms(1)), ["p_c-1000.pcap", "odd.bin"]);
        assert_eq!(
            pick(ms(1), ms(2)),
            ["p_c-1000.pcap", "p_c-2000.pcap", "odd.bin"]
        );
        assert_eq!(
            pick(Some(1_500_000), Some(1_600_000)),
            ["p_c-2000.pcap", "odd.bin"]
        );
    }

    #[test]
    fn written_blocks_have_their_lengths_and_padding() {
        let mut out = BytesMut::new();
        section_header(&mut out, "test");
        let shb = out.len();
        assert_eq!(shb % 4, 0);
        assert_eq!(&out[4..8], &(shb as u32).to_le_bytes());
        interface(
            &mut out,
            &Interface {
                name: "node-1/cali1".into(),
                description: "x".into(),
                link_type: 1,
                snaplen: 65535,
            },
        );
        let idb = out.len() - shb;
        assert_eq!(idb % 4, 0);
        packet(
            &mut out,
            0,
            &Packet {
                ts: 1_700_000_000_123_456_789,
                orig_len: 60,
                data: Bytes::from_static(b"hello"),
            },
        );
        let epb = out.len() - shb - idb;
        assert_eq!(epb, 32 + 8);
        let epb_bytes = &out[shb + idb..];
        assert_eq!(&epb_bytes[epb - 4..], &(epb as u32).to_le_bytes());
    }
}
