//! A file over 4 GiB, generated on the fly (never stored as input), goes through the engine
//! as ZIP64 and reads back whole with a zip reader (which checks the CRC); a small file after
//! it starts past 4 GiB, so its offset needs ZIP64 too.

use std::io::{self, BufWriter, Read, Seek};

use packetcapture_domain::archive::{EntryNamer, write_zip};
use packetcapture_domain::{Compression, NodeName};

const SIZE: u64 = (1 << 32) + 123_457; // just past 4 GiB, and not a multiple of 512

/// A tar stream of one file of `SIZE` bytes: header, patterned data, padding, end blocks.
struct GeneratedTar {
    pos: u64,
    header: [u8; 512],
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
        Self {
            pos: 0,
            header: *h.as_bytes(),
        }
    }

    /// Header, data and padding; the end-of-archive blocks come from the stream chained after.
    fn total() -> u64 {
        512 + SIZE.div_ceil(512) * 512
    }
}

fn pattern(offset: u64) -> u8 {
    (offset % 251) as u8
}

impl Read for GeneratedTar {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let remaining = Self::total() - self.pos;
        let n = (buf.len() as u64).min(remaining) as usize;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            let p = self.pos + i as u64;
            *b = if p < 512 {
                self.header[p as usize]
            } else if p - 512 < SIZE {
                pattern(p - 512)
            } else {
                0
            };
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[test]
fn a_file_over_4_gib_is_written_as_zip64_and_reads_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.zip");
    let file = std::fs::File::create(&path).unwrap();
    let node = NodeName::new("node-a").unwrap();
    let summary = write_zip(
        [Ok((
            node,
            io::BufReader::with_capacity(1 << 20, GeneratedTar::new()).chain(io::Cursor::new(
                crate::support::tar_of(&[("after.pcap", b"after", 7)]),
            )),
        ))],
        EntryNamer::default(),
        Compression::Stored,
        BufWriter::with_capacity(1 << 20, file),
    )
    .unwrap();
    assert_eq!((summary.files, summary.bytes), (2, SIZE + 5));

    let mut zip = zip::ZipArchive::new(std::fs::File::open(&path).unwrap()).unwrap();
    assert_eq!(zip.len(), 2);
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
}
