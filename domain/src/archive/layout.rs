//! The byte layout of a stored zip whose entries are all known before any is read (names,
//! sizes, times): where each piece lies, and the bytes of every piece but the files' data.
//! A finished capture's zip is a pure function of its files, so its size and any range of it
//! are known without reading ahead.
//!
//! The format is ours, written from PKWARE's APPNOTE (not a crate's writer, whose layout could
//! change with an update and move every offset): per entry a local header (sizes and CRC left
//! to the data descriptor, bit 3; UTF-8 names, bit 11; an extended timestamp), the data
//! stored, a data descriptor; the manifest [`MANIFEST`] last; then the central directory and
//! its end record, in Zip64 form when a size, an offset or the count needs it.

use std::ops::Range;

use super::zip::MANIFEST;

/// Local file header signature.
const LOCAL: u32 = 0x0403_4b50;
/// Data descriptor signature.
const DESCRIPTOR: u32 = 0x0807_4b50;
/// Central directory header signature.
const CENTRAL: u32 = 0x0201_4b50;
/// Zip64 end of central directory record signature.
const ZIP64_END: u32 = 0x0606_4b50;
/// Zip64 end of central directory locator signature.
const ZIP64_LOCATOR: u32 = 0x0706_4b50;
/// End of central directory record signature.
const END: u32 = 0x0605_4b50;
/// Sizes and offsets from here on live in Zip64 fields.
const ZIP64_FROM: u64 = 0xFFFF_FFFF;
/// Bit 3 (sizes and CRC in the data descriptor) and bit 11 (the name is UTF-8).
const FLAGS: u16 = 0x0808;
/// "Made by" Unix (3), so the external attributes are a Unix mode.
const MADE_BY_UNIX: u16 = 3 << 8;
/// A regular file, `rw-r--r--`, in the external attributes' high half.
const UNIX_FILE: u32 = 0o100_644 << 16;

/// One entry of the zip, as planned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedEntry {
    /// The entry's name in the zip.
    pub name: String,
    /// The file's size in bytes.
    pub size: u64,
    /// The file's modification time, seconds since the Unix epoch.
    pub mtime: u64,
}

/// Where one entry lies.
#[derive(Clone, Debug)]
struct Placed {
    entry: PlannedEntry,
    /// The offset of its local header.
    offset: u64,
    /// Its local header, whole.
    header: Vec<u8>,
}

impl Placed {
    fn zip64(&self) -> bool {
        self.entry.size >= ZIP64_FROM
    }

    fn data_start(&self) -> u64 {
        self.offset + self.header.len() as u64
    }

    fn descriptor_len(&self) -> u64 {
        if self.zip64() { 24 } else { 16 }
    }

    fn end(&self) -> u64 {
        self.data_start() + self.entry.size + self.descriptor_len()
    }
}

/// The layout of a stored zip of known files, the manifest (`SHA256SUMS`) last.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The files, then the manifest.
    placed: Vec<Placed>,
    /// Where the central directory starts, and its length.
    directory: Range<u64>,
    /// The zip's length.
    len: u64,
}

impl Layout {
    /// The layout of `files` (at least one), in this order, followed by the manifest, whose
    /// time is the newest file's.
    pub fn new(files: Vec<PlannedEntry>) -> Self {
        let newest = files.iter().map(|f| f.mtime).max().unwrap_or(0);
        // Every line has the same length whatever the digest: written with zeros, it is sized.
        let mut lines = String::new();
        for f in &files {
            super::zip::manifest_line(&mut lines, &[0; 32], &f.name);
        }
        let manifest_size = lines.len() as u64;
        let manifest = PlannedEntry {
            name: MANIFEST.to_owned(),
            size: manifest_size,
            mtime: newest,
        };
        let mut placed = Vec::with_capacity(files.len() + 1);
        let mut offset = 0;
        for entry in files.into_iter().chain([manifest]) {
            let header = local_header(&entry);
            let p = Placed {
                entry,
                offset,
                header,
            };
            offset = p.end();
            placed.push(p);
        }
        let directory_len: u64 = placed
            .iter()
            .map(|p| central_header(p, 0).len() as u64)
            .sum();
        let directory = offset..offset + directory_len;
        let end_len = end_records(placed.len() as u64, directory.clone()).len() as u64;
        Self {
            placed,
            len: directory.end + end_len,
            directory,
        }
    }

    /// The zip's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Always false: a layout has at least its manifest.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The number of entries, the manifest included (the last).
    pub fn entries(&self) -> usize {
        self.placed.len()
    }

    /// The index of the manifest entry.
    pub fn manifest_index(&self) -> usize {
        self.placed.len() - 1
    }

    /// Entry `i` as planned.
    pub fn entry(&self, i: usize) -> &PlannedEntry {
        &self.placed[i].entry
    }

    /// The newest time of any entry (the manifest's).
    pub fn newest(&self) -> u64 {
        self.placed.last().map_or(0, |p| p.entry.mtime)
    }

    /// Entry `i`'s local header: where it lies and its bytes.
    pub fn header(&self, i: usize) -> (u64, &[u8]) {
        let p = &self.placed[i];
        (p.offset, &p.header)
    }

    /// Where entry `i`'s data lies.
    pub fn data(&self, i: usize) -> Range<u64> {
        let p = &self.placed[i];
        p.data_start()..p.data_start() + p.entry.size
    }

    /// Where entry `i`'s data descriptor lies.
    pub fn descriptor_range(&self, i: usize) -> Range<u64> {
        let p = &self.placed[i];
        p.data_start() + p.entry.size..p.end()
    }

    /// Entry `i`'s data descriptor, for data whose CRC-32 is `crc`.
    pub fn descriptor(&self, i: usize, crc: u32) -> Vec<u8> {
        let p = &self.placed[i];
        let mut out = Vec::with_capacity(24);
        put32(&mut out, DESCRIPTOR);
        put32(&mut out, crc);
        if p.zip64() {
            put64(&mut out, p.entry.size);
            put64(&mut out, p.entry.size);
        } else {
            put32(&mut out, low32(p.entry.size));
            put32(&mut out, low32(p.entry.size));
        }
        out
    }

    /// Where the central directory and the end records lie (to the zip's end).
    pub fn tail_range(&self) -> Range<u64> {
        self.directory.start..self.len
    }

    /// The central directory and the end records, given every entry's CRC-32 in order (the
    /// manifest's last).
    pub fn tail(&self, crcs: &[u32]) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(usize::try_from(self.len - self.directory.start).unwrap_or(0));
        for (p, crc) in self.placed.iter().zip(crcs) {
            out.extend_from_slice(&central_header(p, *crc));
        }
        out.extend_from_slice(&end_records(
            self.placed.len() as u64,
            self.directory.clone(),
        ));
        out
    }
}

/// The manifest's bytes: one `sha256sum` line per file, given each file's digest in order.
pub fn manifest(layout: &Layout, digests: &[[u8; 32]]) -> Vec<u8> {
    let mut text = String::new();
    for (i, digest) in digests.iter().enumerate() {
        super::zip::manifest_line(&mut text, digest, &layout.entry(i).name);
    }
    text.into_bytes()
}

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// `v`, or the Zip64 marker when it does not fit 32 bits.
fn low32(v: u64) -> u32 {
    u32::try_from(v)
        .ok()
        .filter(|v| u64::from(*v) < ZIP64_FROM)
        .unwrap_or(u32::MAX)
}

/// An entry's name, cut to what a 16-bit length can say (names are file names: far shorter).
fn name_bytes(entry: &PlannedEntry) -> &[u8] {
    let bytes = entry.name.as_bytes();
    &bytes[..bytes.len().min(usize::from(u16::MAX))]
}

/// The extended timestamp extra field (0x5455) with the modification time, when it fits.
fn timestamp_extra(mtime: u64) -> Vec<u8> {
    let Ok(secs) = u32::try_from(mtime) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(9);
    put16(&mut out, 0x5455);
    put16(&mut out, 5);
    out.push(1);
    put32(&mut out, secs);
    out
}

/// The time and date fields of MS-DOS format, in UTC; 1980-01-01 00:00 outside their range.
fn dos_time(mtime: u64) -> (u16, u16) {
    let civil = i64::try_from(mtime)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map(|t| t.to_zoned(jiff::tz::TimeZone::UTC).datetime());
    match civil {
        Some(c) if (1980..=2107).contains(&c.year()) => {
            let field = |v: i8| u16::try_from(v).unwrap_or(0);
            let year = u16::try_from(c.year() - 1980).unwrap_or(0);
            let time = (field(c.hour()) << 11) | (field(c.minute()) << 5) | (field(c.second()) / 2);
            let date = (year << 9) | (field(c.month()) << 5) | field(c.day());
            (time, date)
        }
        _ => (0, (1 << 5) | 1),
    }
}

fn version(zip64: bool) -> u16 {
    if zip64 { 45 } else { 20 }
}

fn local_header(entry: &PlannedEntry) -> Vec<u8> {
    let name = name_bytes(entry);
    let zip64 = entry.size >= ZIP64_FROM;
    let mut extra = Vec::new();
    if zip64 {
        // With bit 3 the sizes are in the descriptor; the Zip64 field says they are 8 bytes
        // there, and holds zeros here.
        put16(&mut extra, 0x0001);
        put16(&mut extra, 16);
        put64(&mut extra, 0);
        put64(&mut extra, 0);
    }
    extra.extend_from_slice(&timestamp_extra(entry.mtime));
    let (time, date) = dos_time(entry.mtime);
    let mut out = Vec::with_capacity(30 + name.len() + extra.len());
    put32(&mut out, LOCAL);
    put16(&mut out, version(zip64));
    put16(&mut out, FLAGS);
    put16(&mut out, 0);
    put16(&mut out, time);
    put16(&mut out, date);
    put32(&mut out, 0);
    let size = if zip64 { u32::MAX } else { 0 };
    put32(&mut out, size);
    put32(&mut out, size);
    put16(&mut out, u16::try_from(name.len()).unwrap_or(u16::MAX));
    put16(&mut out, u16::try_from(extra.len()).unwrap_or(u16::MAX));
    out.extend_from_slice(name);
    out.extend_from_slice(&extra);
    out
}

fn central_header(p: &Placed, crc: u32) -> Vec<u8> {
    let name = name_bytes(&p.entry);
    let size = p.entry.size;
    let mut zip64 = Vec::new();
    if size >= ZIP64_FROM {
        put64(&mut zip64, size);
        put64(&mut zip64, size);
    }
    if p.offset >= ZIP64_FROM {
        put64(&mut zip64, p.offset);
    }
    let mut extra = Vec::new();
    if !zip64.is_empty() {
        put16(&mut extra, 0x0001);
        put16(&mut extra, u16::try_from(zip64.len()).unwrap_or(0));
        extra.extend_from_slice(&zip64);
    }
    extra.extend_from_slice(&timestamp_extra(p.entry.mtime));
    let needs64 = !zip64.is_empty();
    let (time, date) = dos_time(p.entry.mtime);
    let mut out = Vec::with_capacity(46 + name.len() + extra.len());
    put32(&mut out, CENTRAL);
    put16(&mut out, MADE_BY_UNIX | version(needs64));
    put16(&mut out, version(needs64));
    put16(&mut out, FLAGS);
    put16(&mut out, 0);
    put16(&mut out, time);
    put16(&mut out, date);
    put32(&mut out, crc);
    put32(&mut out, low32(size));
    put32(&mut out, low32(size));
    put16(&mut out, u16::try_from(name.len()).unwrap_or(u16::MAX));
    put16(&mut out, u16::try_from(extra.len()).unwrap_or(u16::MAX));
    put16(&mut out, 0); // comment
    put16(&mut out, 0); // disk
    put16(&mut out, 0); // internal attributes
    put32(&mut out, UNIX_FILE);
    put32(&mut out, low32(p.offset));
    out.extend_from_slice(name);
    out.extend_from_slice(&extra);
    out
}

/// The end records: Zip64's record and locator when the count, the directory's size or its
/// offset needs them, then the classic end record.
fn end_records(count: u64, directory: Range<u64>) -> Vec<u8> {
    let size = directory.end - directory.start;
    let zip64 = count >= 0xFFFF || size >= ZIP64_FROM || directory.start >= ZIP64_FROM;
    let mut out = Vec::with_capacity(98);
    if zip64 {
        let record_at = directory.end;
        put32(&mut out, ZIP64_END);
        put64(&mut out, 44);
        put16(&mut out, MADE_BY_UNIX | 45);
        put16(&mut out, 45);
        put32(&mut out, 0);
        put32(&mut out, 0);
        put64(&mut out, count);
        put64(&mut out, count);
        put64(&mut out, size);
        put64(&mut out, directory.start);
        put32(&mut out, ZIP64_LOCATOR);
        put32(&mut out, 0);
        put64(&mut out, record_at);
        put32(&mut out, 1);
    }
    let count16 = u16::try_from(count)
        .ok()
        .filter(|c| *c < u16::MAX)
        .unwrap_or(u16::MAX);
    put32(&mut out, END);
    put16(&mut out, 0);
    put16(&mut out, 0);
    put16(&mut out, count16);
    put16(&mut out, count16);
    put32(&mut out, low32(size));
    put32(&mut out, low32(directory.start));
    put16(&mut out, 0);
    out
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use sha2::{Digest, Sha256};

    use super::*;

    /// The whole zip of `files` (name, content, time), written from the layout.
    fn write(files: &[(&str, Vec<u8>, u64)]) -> (Layout, Vec<u8>) {
        let layout = Layout::new(
            files
                .iter()
                .map(|(name, data, mtime)| PlannedEntry {
                    name: (*name).to_owned(),
                    size: data.len() as u64,
                    mtime: *mtime,
                })
                .collect(),
        );
        let mut out = Vec::new();
        let mut crcs = Vec::new();
        let mut digests = Vec::new();
        for (i, (_, data, _)) in files.iter().enumerate() {
            let (at, header) = layout.header(i);
            assert_eq!(at, out.len() as u64);
            out.extend_from_slice(header);
            assert_eq!(layout.data(i).start, out.len() as u64);
            out.extend_from_slice(data);
            let crc = crc32fast::hash(data);
            crcs.push(crc);
            digests.push(<[u8; 32]>::from(Sha256::digest(data)));
            assert_eq!(layout.descriptor_range(i).start, out.len() as u64);
            out.extend_from_slice(&layout.descriptor(i, crc));
        }
        let m = layout.manifest_index();
        let text = manifest(&layout, &digests);
        assert_eq!(
            text.len() as u64,
            layout.entry(m).size,
            "the manifest's planned size"
        );
        out.extend_from_slice(layout.header(m).1);
        out.extend_from_slice(&text);
        let crc = crc32fast::hash(&text);
        crcs.push(crc);
        out.extend_from_slice(&layout.descriptor(m, crc));
        assert_eq!(layout.tail_range().start, out.len() as u64);
        out.extend_from_slice(&layout.tail(&crcs));
        assert_eq!(layout.len(), out.len() as u64, "the planned length");
        (layout, out)
    }

    #[test]
    fn a_planned_zip_reads_back_with_its_names_times_and_manifest() {
        let files = [
            ("a.pcap", vec![1u8; 1000], 1_700_000_000),
            ("node-2/a.pcap", vec![2u8; 10], 1_700_000_100),
            ("empty.pcap", Vec::new(), 1_700_000_050),
            ("odd\\name", vec![3u8; 5], 1_700_000_001),
        ];
        let (_, bytes) = write(&files);
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(&bytes)).unwrap();
        assert_eq!(zip.len(), 5);
        for (i, (name, data, mtime)) in files.iter().enumerate() {
            let mut entry = zip.by_index(i).unwrap();
            assert_eq!(entry.name().unwrap(), *name);
            assert_eq!(entry.compression(), zip::CompressionMethod::Stored);
            assert_eq!(entry.unix_mode(), Some(0o100_644));
            let when = entry.last_modified().unwrap();
            let expected = jiff::Timestamp::from_second(i64::try_from(*mtime).unwrap())
                .unwrap()
                .to_zoned(jiff::tz::TimeZone::UTC);
            assert_eq!(
                (
                    when.year(),
                    when.month(),
                    when.day(),
                    when.hour(),
                    when.minute()
                ),
                (
                    u16::try_from(expected.year()).unwrap(),
                    u8::try_from(expected.month()).unwrap(),
                    u8::try_from(expected.day()).unwrap(),
                    u8::try_from(expected.hour()).unwrap(),
                    u8::try_from(expected.minute()).unwrap()
                )
            );
            let mut read = Vec::new();
            entry.read_to_end(&mut read).unwrap();
            assert_eq!(&read, data, "{name}");
        }
        let mut manifest = String::new();
        zip.by_name(MANIFEST)
            .unwrap()
            .read_to_string(&mut manifest)
            .unwrap();
        let lines: Vec<&str> = manifest.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].ends_with("  a.pcap"));
        assert_eq!(lines[0][..64], format!("{:x}", Sha256::digest(&files[0].1)));
        assert!(lines[3].starts_with('\\') && lines[3].ends_with("  odd\\\\name"));
    }

    #[test]
    fn sizes_and_offsets_past_4_gib_take_zip64_fields() {
        // Only the layout is built for sizes this large: no data is written.
        let big = 5 * 1024 * 1024 * 1024;
        let layout = Layout::new(vec![
            PlannedEntry {
                name: "big.pcap".into(),
                size: big,
                mtime: 1,
            },
            PlannedEntry {
                name: "after.pcap".into(),
                size: 10,
                mtime: 1,
            },
        ]);
        let header = layout.header(0).1;
        assert_eq!(u16::from_le_bytes([header[4], header[5]]), 45);
        assert_eq!(&header[18..26], &[0xFF; 8], "sizes in the Zip64 field");
        assert_eq!(layout.descriptor(0, 7).len(), 24);
        assert_eq!(layout.descriptor(1, 7).len(), 16);
        assert!(layout.header(1).0 > big);
        let tail = layout.tail(&[1, 2, 3]);
        assert_eq!(
            tail.len() as u64,
            layout.tail_range().end - layout.tail_range().start
        );
        // The second entry's offset is past 4 GiB: its central header carries it in Zip64.
        let second = &tail[tail
            .windows(4)
            .skip(4)
            .position(|w| w == CENTRAL.to_le_bytes())
            .unwrap()
            + 4..];
        assert_eq!(&second[42..46], &[0xFF; 4]);
        assert!(
            tail.windows(4).any(|w| w == ZIP64_END.to_le_bytes()),
            "a Zip64 end record"
        );
    }
}
