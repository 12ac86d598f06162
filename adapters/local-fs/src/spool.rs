//! The spool's scratch files: one unlinked temporary file per download in a directory (an
//! `emptyDir` in the Deployment), so nothing of a download's spool survives it, a crash
//! included; ranges read back are punched out, so the file holds only what still waits.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use packetcapture_domain::{SpoolFile, SpoolStorage};

/// Spool files in `dir`, each without a name from the moment it exists.
#[derive(Debug, Clone)]
pub struct TempSpool {
    dir: PathBuf,
}

impl TempSpool {
    /// Spools into `dir` (the system's temporary directory when `None`).
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self {
            dir: dir.unwrap_or_else(std::env::temp_dir),
        }
    }

    /// Checks a spool file can be made there (at start-up, so a bad directory stops the
    /// binary rather than the first download).
    pub fn check(&self) -> std::io::Result<()> {
        self.create().map(drop)
    }

    /// The directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

impl SpoolStorage for TempSpool {
    fn create(&self) -> std::io::Result<Box<dyn SpoolFile>> {
        // O_TMPFILE where the file system has it (the file never has a name), else created
        // and unlinked at once.
        let dir = Arc::new(self.dir.clone());
        let file = tempfile::tempfile_in(&self.dir).map_err(|e| in_dir(&dir, e))?;
        Ok(Box::new(Scratch { file, dir }))
    }
}

/// `e`, naming the spool directory (and what to do when it is full).
fn in_dir(dir: &Path, e: std::io::Error) -> std::io::Error {
    let advice = if e.kind() == std::io::ErrorKind::StorageFull {
        " (the spool directory is full: give SPOOL_DIR more room, or set SPOOL_LIMIT below its free space)"
    } else {
        ""
    };
    std::io::Error::new(e.kind(), format!("{}: {e}{advice}", dir.display()))
}

struct Scratch {
    file: File,
    dir: Arc<PathBuf>,
}

impl SpoolFile for Scratch {
    fn write_at(&self, data: &[u8], offset: u64) -> std::io::Result<()> {
        self.file
            .write_all_at(data, offset)
            .map_err(|e| in_dir(&self.dir, e))
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        FileExt::read_at(&self.file, buf, offset).map_err(|e| in_dir(&self.dir, e))
    }

    /// Punches a hole: the range's blocks go back to the file system at once (where it can;
    /// elsewhere they go when the download ends and the file is closed).
    fn discard(&self, offset: u64, len: u64) -> std::io::Result<()> {
        use rustix::fs::FallocateFlags;
        rustix::fs::fallocate(
            &self.file,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            offset,
            len,
        )
        .map_err(|e| in_dir(&self.dir, e.into()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn spool_files_round_trip_and_leave_no_name_behind() {
        let dir = tempfile::tempdir().unwrap();
        let spool = TempSpool::new(Some(dir.path().to_owned()));
        spool.check().unwrap();
        let file = spool.create().unwrap();
        file.write_at(b"hello world", 0).unwrap();
        file.write_at(b"!", 11).unwrap();
        let mut buf = [0u8; 32];
        let n = file.read_at(&mut buf, 6).unwrap();
        assert_eq!(&buf[..n], b"world!");
        file.discard(0, 6).unwrap();
        let n = file.read_at(&mut buf, 0).unwrap();
        assert_eq!(
            &buf[..n],
            b"\0\0\0\0\0\0world!",
            "a discarded range reads as a hole"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "a spool file has no name in the directory"
        );
        assert!(
            TempSpool::new(Some("/nonexistent/spool".into()))
                .check()
                .is_err()
        );
    }
}
