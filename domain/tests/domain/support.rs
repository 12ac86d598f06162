//! Builders shared by the domain tests: tar streams, zip readers, captures.

use std::io::{Cursor, Read};

use packetcapture_domain::{Capture, CaptureRef, CaptureState, NodeFiles};
use sha2::{Digest, Sha256};

/// A tar stream (GNU format, as GNU tar writes it) holding `files` as `(path, data, mtime)`.
pub fn tar_of(files: &[(&str, &[u8], u64)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_size(0);
    dir.set_mode(0o755);
    b.append_data(&mut dir, "dev/cap/", std::io::empty())
        .unwrap();
    for (path, data, mtime) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(*mtime);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// One zip entry: name, data, Unix mtime from the extended timestamp.
pub type Entry = (String, Vec<u8>, Option<i64>);

/// Every entry of a zip but the manifest, which must come last and hold the SHA-256 of
/// each entry before it, in order, in `sha256sum` format (checked here).
pub fn unzip(bytes: &[u8]) -> zip::result::ZipResult<Vec<Entry>> {
    let mut entries = unzip_all(bytes)?;
    let (name, manifest, _) = entries.pop().expect("a zip with files has a manifest");
    assert_eq!(name, "SHA256SUMS", "the manifest is the last entry");
    let expected: String = entries
        .iter()
        .map(|(name, data, _)| format!("{}  {name}\n", hex(&Sha256::digest(data))))
        .collect();
    assert_eq!(String::from_utf8(manifest).unwrap(), expected);
    Ok(entries)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every entry of a zip, the manifest included.
pub fn unzip_all(bytes: &[u8]) -> zip::result::ZipResult<Vec<Entry>> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes))?;
    let mut out = Vec::new();
    for i in 0..zip.len() {
        let mut f = zip.by_index(i)?;
        let mut data = Vec::new();
        f.read_to_end(&mut data)?;
        let mtime = f.extra_data_fields().find_map(|x| match x {
            zip::ExtraField::ExtendedTimestamp(ts) => ts.mod_time().map(i64::from),
            _ => None,
        });
        out.push((f.name()?.into_owned(), data, mtime));
    }
    Ok(out)
}

/// A capture in `dev/cap` with one status entry per `(node, file names, state)`.
pub fn capture(nodes: &[(&str, &[&str], Option<CaptureState>)]) -> Capture {
    Capture {
        reference: CaptureRef::parse("dev", "cap").unwrap(),
        resource_version: "1".into(),
        files: nodes
            .iter()
            .map(|(node, names, state)| NodeFiles {
                node: (*node).into(),
                directory: "/var/log/calico/pcap".into(),
                file_names: names.iter().map(|s| (*s).to_owned()).collect(),
                state: state.clone(),
            })
            .collect(),
    }
}
