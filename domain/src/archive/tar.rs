//! A push tar parser: chunks of a tar stream in, file events out, without copying file data.
//!
//! It frames the stream itself (512-byte blocks, sizes, padding, GNU long names, PAX `path`
//! and `size`) and leans on the `tar` crate only to decode a header's fields. A stream counts
//! as whole only once its end-of-archive block was seen ([`TarParser::finish`]); a header whose
//! checksum does not match, an entry kind it cannot represent (GNU sparse files), or metadata
//! past [`MAX_META`] is an error, never a guess.

use bytes::{Bytes, BytesMut};

/// A tar block.
const BLOCK: u64 = 512;
/// The largest GNU long name or PAX record set accepted.
pub const MAX_META: u64 = 64 * 1024;

/// What a tar stream holds, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TarEvent {
    /// A regular file starts; its data follows as [`TarEvent::Data`], then [`TarEvent::FileEnd`].
    File {
        /// Its path in the archive (bytes as stored: usually UTF-8).
        path: Vec<u8>,
        /// Its size in bytes.
        size: u64,
        /// Modification time, seconds since the Unix epoch.
        mtime: u64,
    },
    /// A piece of the current file's data.
    Data(Bytes),
    /// The current file's data is complete.
    FileEnd,
    /// The end-of-archive block.
    End,
}

/// Why a tar stream cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TarError {
    /// A header block is not a tar header.
    #[error("a tar header is malformed: {0}")]
    Malformed(String),
    /// An entry this service cannot represent faithfully.
    #[error("unsupported tar entry: {0}")]
    Unsupported(String),
    /// The stream ended before the end-of-archive block.
    #[error("the tar stream ended {0}")]
    Truncated(String),
}

#[derive(Debug)]
enum State {
    /// Collecting a 512-byte header.
    Header,
    /// The current file's data: bytes left, then padding.
    Data { left: u64, padding: u64 },
    /// Bytes to pass over (padding, data of entries that are not files).
    Skip { left: u64 },
    /// Collecting the data of a GNU long name or PAX header (then its padding).
    Meta { kind: Meta, left: u64, padding: u64 },
    /// After the end-of-archive block: the rest (zero padding) is ignored.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Meta {
    LongName,
    Pax,
}

/// The parser; see the module documentation.
#[derive(Debug)]
pub struct TarParser {
    state: State,
    buf: BytesMut,
    long_name: Option<Vec<u8>>,
    pax_path: Option<Vec<u8>>,
    pax_size: Option<u64>,
    /// The current file's path, for messages.
    current: Vec<u8>,
    /// Offset of the next byte in the stream, for messages.
    offset: u64,
}

impl Default for TarParser {
    fn default() -> Self {
        Self {
            state: State::Header,
            buf: BytesMut::with_capacity(BLOCK as usize),
            long_name: None,
            pax_path: None,
            pax_size: None,
            current: Vec::new(),
            offset: 0,
        }
    }
}

fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

fn take(input: &mut Bytes, at_most: u64) -> Bytes {
    let n = usize::try_from(at_most)
        .unwrap_or(usize::MAX)
        .min(input.len());
    input.split_to(n)
}

impl TarParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next event, consuming from the front of `input`; `None` when `input` is used up
    /// and more is needed.
    pub fn next(&mut self, input: &mut Bytes) -> Result<Option<TarEvent>, TarError> {
        loop {
            match &mut self.state {
                State::Done => {
                    self.offset += input.len() as u64;
                    input.clear();
                    return Ok(None);
                }
                State::Skip { left } => {
                    let skipped = take(input, *left).len() as u64;
                    *left -= skipped;
                    self.offset += skipped;
                    if *left > 0 {
                        return Ok(None);
                    }
                    self.state = State::Header;
                }
                State::Data { left, padding } => {
                    if *left == 0 {
                        self.state = State::Skip { left: *padding };
                        return Ok(Some(TarEvent::FileEnd));
                    }
                    if input.is_empty() {
                        return Ok(None);
                    }
                    let data = take(input, *left);
                    *left -= data.len() as u64;
                    self.offset += data.len() as u64;
                    return Ok(Some(TarEvent::Data(data)));
                }
                State::Meta {
                    kind,
                    left,
                    padding,
                } => {
                    let part = take(input, *left);
                    *left -= part.len() as u64;
                    self.offset += part.len() as u64;
                    self.buf.extend_from_slice(&part);
                    if *left > 0 {
                        return Ok(None);
                    }
                    let (kind, padding) = (*kind, *padding);
                    let data = self.buf.split().freeze();
                    match kind {
                        Meta::LongName => {
                            let name = data.split(|b| *b == 0).next().unwrap_or_default();
                            self.long_name = Some(name.to_vec());
                        }
                        Meta::Pax => self.pax(&data)?,
                    }
                    self.state = State::Skip { left: padding };
                }
                State::Header => {
                    let want = BLOCK as usize - self.buf.len();
                    let part = take(input, want as u64);
                    self.offset += part.len() as u64;
                    self.buf.extend_from_slice(&part);
                    if self.buf.len() < BLOCK as usize {
                        return Ok(None);
                    }
                    let block = self.buf.split();
                    if let Some(event) = self.header(&block)? {
                        return Ok(Some(event));
                    }
                }
            }
        }
    }

    /// Checks the stream ended where a stream may end: after its end-of-archive block.
    pub fn finish(&self) -> Result<(), TarError> {
        match self.state {
            State::Done => Ok(()),
            State::Data { left, .. } if left > 0 => Err(TarError::Truncated(format!(
                "inside file {}, {left} bytes short",
                String::from_utf8_lossy(&self.current)
            ))),
            _ => Err(TarError::Truncated(format!(
                "after {} bytes, without an end-of-archive block",
                self.offset
            ))),
        }
    }

    fn header(&mut self, block: &[u8]) -> Result<Option<TarEvent>, TarError> {
        if block.iter().all(|b| *b == 0) {
            self.state = State::Done;
            return Ok(Some(TarEvent::End));
        }
        let header = tar::Header::from_byte_slice(block);
        let at = self.offset - BLOCK;
        let stored = header
            .cksum()
            .map_err(|e| TarError::Malformed(format!("at byte {at}: {e}")))?;
        let computed: u32 = block
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(*b)
                }
            })
            .sum();
        if stored != computed {
            return Err(TarError::Malformed(format!(
                "at byte {at}: checksum {stored} does not match {computed}"
            )));
        }
        let kind = header.entry_type();
        let size = header
            .entry_size()
            .map_err(|e| TarError::Malformed(format!("at byte {at}: {e}")))?;
        if kind.is_gnu_longname() || kind.is_pax_local_extensions() {
            if size > MAX_META {
                return Err(TarError::Unsupported(format!(
                    "{size} bytes of metadata at byte {at}"
                )));
            }
            let kind = if kind.is_gnu_longname() {
                Meta::LongName
            } else {
                Meta::Pax
            };
            self.state = State::Meta {
                kind,
                left: size,
                padding: padding(size),
            };
            return Ok(None);
        }
        if kind.is_gnu_sparse() {
            return Err(TarError::Unsupported(format!(
                "the sparse file {}",
                String::from_utf8_lossy(&header.path_bytes())
            )));
        }
        let long_name = self.long_name.take();
        let pax_path = self.pax_path.take();
        let pax_size = self.pax_size.take();
        if !(kind.is_file() || kind.is_contiguous()) {
            // Directories, links, devices, global PAX headers: nothing of ours, skipped.
            self.state = State::Skip {
                left: size + padding(size),
            };
            return Ok(None);
        }
        let size = pax_size.unwrap_or(size);
        let path = pax_path
            .or(long_name)
            .unwrap_or_else(|| header.path_bytes().into_owned());
        let mtime = header.mtime().unwrap_or(0);
        self.current.clone_from(&path);
        self.state = State::Data {
            left: size,
            padding: padding(size),
        };
        Ok(Some(TarEvent::File { path, size, mtime }))
    }

    /// Reads the PAX records that matter: `path` and `size`.
    fn pax(&mut self, data: &[u8]) -> Result<(), TarError> {
        for record in tar::PaxExtensions::new(data) {
            let record = record.map_err(|e| TarError::Malformed(format!("PAX record: {e}")))?;
            match record.key() {
                Ok("path") => self.pax_path = Some(record.value_bytes().to_vec()),
                Ok("size") => {
                    let size = record
                        .value()
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| TarError::Malformed("PAX size is not a number".into()))?;
                    self.pax_size = Some(size);
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Every event of a whole stream fed in chunks of `chunk` bytes (for tests).
#[cfg(test)]
pub(crate) fn events(stream: &[u8], chunk: usize) -> Result<Vec<TarEvent>, TarError> {
    let mut parser = TarParser::new();
    let mut out = Vec::new();
    for piece in stream.chunks(chunk.max(1)) {
        let mut input = Bytes::copy_from_slice(piece);
        while let Some(event) = parser.next(&mut input)? {
            out.push(event);
        }
        assert!(input.is_empty(), "a chunk is used up before more is asked");
    }
    parser.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mtime: u64) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(mtime);
        b.append_data(&mut h, path, data).unwrap();
    }

    /// Files as (path, data, mtime), joined from the events.
    fn files(events: &[TarEvent]) -> Vec<(String, Vec<u8>, u64)> {
        let mut out: Vec<(String, Vec<u8>, u64)> = Vec::new();
        for e in events {
            match e {
                TarEvent::File { path, mtime, .. } => {
                    out.push((String::from_utf8(path.clone()).unwrap(), Vec::new(), *mtime))
                }
                TarEvent::Data(d) => out.last_mut().unwrap().1.extend_from_slice(d),
                TarEvent::FileEnd | TarEvent::End => {}
            }
        }
        out
    }

    #[test]
    fn files_directories_and_long_names_come_out_whole_whatever_the_chunking() {
        let long = format!("{}/{}.pcap", "d".repeat(90), "f".repeat(120));
        let tar = archive(|b| {
            let mut dir = tar::Header::new_gnu();
            dir.set_entry_type(tar::EntryType::Directory);
            dir.set_size(0);
            dir.set_mode(0o755);
            b.append_data(&mut dir, "dev/cap/", std::io::empty())
                .unwrap();
            file(b, "dev/cap/a.pcap", b"hello", 7);
            file(b, "dev/cap/empty.pcap", b"", 8);
            file(b, &long, &[9u8; 1000], 9);
        });
        let expected = vec![
            ("dev/cap/a.pcap".to_owned(), b"hello".to_vec(), 7),
            ("dev/cap/empty.pcap".to_owned(), Vec::new(), 8),
            (long.clone(), vec![9u8; 1000], 9),
        ];
        for chunk in [1, 7, 511, 512, 513, 4096, tar.len()] {
            let events = events(&tar, chunk).unwrap();
            assert_eq!(files(&events), expected, "chunk {chunk}");
            assert_eq!(events.last(), Some(&TarEvent::End));
        }
    }

    #[test]
    fn pax_paths_and_sizes_apply_to_the_next_file() {
        let mut b = tar::Builder::new(Vec::new());
        let long = format!("{}.pcap", "p".repeat(200));
        let mut h = tar::Header::new_ustar();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_pax_extensions([("path", long.as_bytes())])
            .unwrap();
        b.append_data(&mut h, "short.pcap", &b"abc"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let events = events(&tar, 100).unwrap();
        assert_eq!(files(&events), vec![(long, b"abc".to_vec(), 0)]);
    }

    #[test]
    fn a_cut_stream_or_a_damaged_header_is_an_error() {
        let tar = archive(|b| file(b, "a.pcap", &[1u8; 2000], 1));
        let without_end = &tar[..512 + 2048];
        assert!(matches!(
            events(without_end, 100),
            Err(TarError::Truncated(_))
        ));
        let inside = &tar[..1000];
        let e = events(inside, 100).unwrap_err();
        assert!(e.to_string().contains("inside file a.pcap"), "{e}");
        let mut damaged = tar.clone();
        damaged[10] ^= 0x55;
        assert!(matches!(events(&damaged, 512), Err(TarError::Malformed(_))));
        assert!(matches!(events(&[], 1), Err(TarError::Truncated(_))));
    }

    #[test]
    fn a_sparse_file_is_refused_rather_than_misread() {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNUSparse);
        h.set_size(0);
        h.set_path("sparse.pcap").unwrap();
        h.set_cksum();
        let mut tar = h.as_bytes().to_vec();
        tar.extend_from_slice(&[0; 1024]);
        assert!(matches!(events(&tar, 512), Err(TarError::Unsupported(_))));
    }
}
