//! Generates valid pcap files of plausible packets (Ethernet, IPv4, TCP or UDP), deterministic
//! for a given seed, of about a given size, written in large blocks.

use std::io::{self, Write};

/// A small deterministic generator (xorshift64*), enough for plausible traffic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Writes a pcap (microsecond timestamps, Ethernet link type) of at least `size` bytes and
/// returns how many packets it holds. Timestamps start at `start_secs` and grow.
pub fn write_pcap(mut out: impl Write, size: u64, seed: u64, start_secs: u32) -> io::Result<u64> {
    let mut rng = Rng(seed | 1);
    let mut block = Vec::with_capacity(1 << 20);
    // Global header: magic, version 2.4, zone 0, sigfigs 0, snaplen 65535, linktype 1.
    block.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    block.extend_from_slice(&2u16.to_le_bytes());
    block.extend_from_slice(&4u16.to_le_bytes());
    block.extend_from_slice(&[0; 8]);
    block.extend_from_slice(&65535u32.to_le_bytes());
    block.extend_from_slice(&1u32.to_le_bytes());
    let mut written = 0u64;
    let mut packets = 0u64;
    let (mut secs, mut micros) = (start_secs, 0u32);
    let client = [10, 65, (seed % 200) as u8 + 1, 7];
    let server = [10, 96, 0, 10];
    let mut seq: u32 = rng.next() as u32;
    while written + (block.len() as u64) < size.max(24) {
        let udp = rng.next().is_multiple_of(4);
        let payload_len = if udp {
            40 + (rng.next() % 200) as usize
        } else {
            (rng.next() % 1400) as usize
        };
        let l4_len = if udp { 8 } else { 20 };
        let ip_len = 20 + l4_len + payload_len;
        let frame_len = 14 + ip_len;
        micros += 50 + (rng.next() % 2000) as u32;
        if micros >= 1_000_000 {
            secs += 1;
            micros -= 1_000_000;
        }
        let outbound = rng.next().is_multiple_of(2);
        let (src, dst) = if outbound {
            (client, server)
        } else {
            (server, client)
        };
        let (sport, dport) = if udp {
            if outbound {
                (40000 + (seed % 20000) as u16, 53)
            } else {
                (53, 40000 + (seed % 20000) as u16)
            }
        } else if outbound {
            (50000 + (seed % 10000) as u16, 8080)
        } else {
            (8080, 50000 + (seed % 10000) as u16)
        };
        // Record header.
        block.extend_from_slice(&secs.to_le_bytes());
        block.extend_from_slice(&micros.to_le_bytes());
        block.extend_from_slice(&(frame_len as u32).to_le_bytes());
        block.extend_from_slice(&(frame_len as u32).to_le_bytes());
        // Ethernet.
        block.extend_from_slice(&[
            0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0x08, 0x00,
        ]);
        // IPv4.
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&(packets as u16).to_be_bytes());
        ip[6] = 0x40;
        ip[8] = 64;
        ip[9] = if udp { 17 } else { 6 };
        ip[12..16].copy_from_slice(&src);
        ip[16..20].copy_from_slice(&dst);
        let c = checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        block.extend_from_slice(&ip);
        if udp {
            block.extend_from_slice(&sport.to_be_bytes());
            block.extend_from_slice(&dport.to_be_bytes());
            block.extend_from_slice(&((8 + payload_len) as u16).to_be_bytes());
            block.extend_from_slice(&[0, 0]);
        } else {
            block.extend_from_slice(&sport.to_be_bytes());
            block.extend_from_slice(&dport.to_be_bytes());
            block.extend_from_slice(&seq.to_be_bytes());
            block.extend_from_slice(&(seq ^ 0x5a5a).to_be_bytes());
            block.extend_from_slice(&[0x50, 0x18, 0x01, 0xf5, 0, 0, 0, 0]);
            seq = seq.wrapping_add(payload_len as u32);
        }
        let fill = (rng.next() & 0xff) as u8;
        block.extend(std::iter::repeat_n(fill, payload_len));
        packets += 1;
        if block.len() >= (1 << 20) - 2048 {
            out.write_all(&block)?;
            written += block.len() as u64;
            block.clear();
        }
    }
    out.write_all(&block)?;
    Ok(packets)
}

/// Counts the packets of a pcap, checking its structure; `None` if it is not a valid pcap.
pub fn count_packets(data: &[u8]) -> Option<u64> {
    match inspect(data)? {
        (n, 0) => Some(n),
        _ => None,
    }
}

/// The whole packets of a pcap and the bytes of a cut last record after them (what Felix's
/// active file can end with), or `None` when the data is not a little-endian pcap.
pub fn inspect(data: &[u8]) -> Option<(u64, usize)> {
    if data.len() < 24 || data[..4] != 0xa1b2_c3d4u32.to_le_bytes() {
        return None;
    }
    let mut at = 24;
    let mut n = 0;
    while at < data.len() {
        let whole = data.get(at..at + 16).and_then(|header| {
            let incl = u32::from_le_bytes(header[8..12].try_into().ok()?) as usize;
            Some(at + 16 + incl).filter(|end| *end <= data.len())
        });
        match whole {
            Some(end) => at = end,
            None => return Some((n, data.len() - at)),
        }
        n += 1;
    }
    Some((n, 0))
}

/// The Enhanced Packet Blocks of a little-endian pcapng, or `None` when the blocks do not
/// chain to the end of the data.
pub fn count_pcapng_packets(data: &[u8]) -> Option<u64> {
    if data.get(..4)? != 0x0A0D_0D0Au32.to_le_bytes() {
        return None;
    }
    let (mut at, mut n) = (0usize, 0u64);
    while at < data.len() {
        let kind = u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?);
        let len = u32::from_le_bytes(data.get(at + 4..at + 8)?.try_into().ok()?) as usize;
        if len < 12 || !len.is_multiple_of(4) || at + len > data.len() {
            return None;
        }
        n += u64::from(kind == 6);
        at += len;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_pcap_is_well_formed_and_about_the_size_asked() {
        let mut out = Vec::new();
        let packets = write_pcap(&mut out, 200_000, 7, 1_700_000_000).unwrap();
        assert!(out.len() >= 200_000 && out.len() < 202_000, "{}", out.len());
        assert_eq!(count_packets(&out), Some(packets));
        let mut again = Vec::new();
        write_pcap(&mut again, 200_000, 7, 1_700_000_000).unwrap();
        assert_eq!(out, again, "deterministic for a seed");
        assert_eq!(count_packets(&out[..out.len() - 3]), None);
        let (whole, cut) = inspect(&out[..out.len() - 3]).unwrap();
        assert_eq!(whole, packets - 1);
        assert!(cut > 0);
        assert_eq!(inspect(b"not a pcap at all, not at all"), None);
    }
}
