//! What a finished command's exit and stderr mean, per command, decided from what GNU and
//! BusyBox tools really report (run with `LC_ALL=C`, so the messages are the C locale's).
//!
//! `tar -c` (GNU tar 1.34, BusyBox 1.35), for the cases that matter:
//! | case | GNU tar | BusyBox tar | verdict |
//! | --- | --- | --- | --- |
//! | all read | exit 0 | exit 0 | whole |
//! | a file grew while read | exit 1, `F: file changed as we read it` (archived up to its size at open) | exit 0 | whole: a consistent prefix |
//! | a file shrank while read | exit 1, `F: File shrank by N bytes; padding with zeros` | exit 1, `short read`, the stream cut | the file could not be read whole |
//! | a file cannot be opened | exit 2, `F: Cannot open: Permission denied` (skipped) | exit 1, `can't open 'F': Permission denied` (skipped) | the file could not be read whole |
//! | the directory is gone | exit 2, `D: Cannot stat: No such file or directory` | exit 1, `D: No such file or directory` | whole: no file on that node |
//! | a file is gone (named, or removed while the directory was read) | exit 2, `F: Cannot stat: No such file or directory`, or exit 1, `F: File removed before we read it` | exit 1, `F: No such file or directory` or `can't open 'F': No such file or directory` | whole without it: left out |
//! | anything else non-zero | | | failed, with the exit code and stderr |
//!
//! `find D -type f -exec stat -c '%s %Y %n' {} +`: a missing D is `find: 'D': No such file or
//! directory` (GNU) or `find: D: No such file or directory` (BusyBox), exit 1: no files; a file
//! gone between find and stat (`stat: cannot statx 'F': …` / `stat: can't stat 'F': …`) is left
//! out of the listing. `rm -rf`: only exit 0 is success.

/// How a command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Status Success (exit 0).
    Success,
    /// A non-zero exit code.
    Code(i32),
    /// No exit code: the exec failed otherwise, or ended without a status (lost connection).
    Failed(String),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Success => f.write_str("success"),
            Self::Code(code) => write!(f, "exit code {code}"),
            Self::Failed(reason) => f.write_str(reason),
        }
    }
}

/// What the output of a finished command is worth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Everything it wrote is whole and may be used.
    Whole,
    /// Whole, but these files (paths as the tool printed them) were not there: removed after
    /// the capture's status listed them. They are left out.
    LeftOut(Vec<String>),
    /// A file could not be read whole: its name (as the tool printed it) and why.
    FileUnreadable { file: String, reason: String },
    /// A file shrank while it was read, and the tool did not say which: the one the stream
    /// was cut in (BusyBox tar's `short read`).
    ShortRead,
    /// The command failed.
    Failed { reason: String },
}

/// Stderr's lines, trimmed, empty ones left out.
fn lines(stderr: &str) -> impl Iterator<Item = &str> {
    stderr.lines().map(str::trim).filter(|l| !l.is_empty())
}

fn failed(exit: &Exit, stderr: &str) -> Verdict {
    let stderr = stderr.trim();
    let reason = if stderr.is_empty() {
        exit.to_string()
    } else {
        format!("{exit} (stderr: {stderr})")
    };
    Verdict::Failed { reason }
}

/// `tar -c -f - -C / -- {dir}` or `... -- {dir}/{name}...` (`dir` relative, as tar prints
/// it): a directory that is gone holds no file, a file that is gone is left out.
pub(crate) fn archive(dir: &str, exit: &Exit, stderr: &str) -> Verdict {
    let dir_gone = [
        format!("{dir}: Cannot stat: No such file or directory"),
        format!("{dir}: No such file or directory"),
    ];
    let in_dir = |file: &str| file.starts_with(dir) && file.len() > dir.len();
    let mut harmless = 0;
    let mut gone = Vec::new();
    let mut other = false;
    for line in lines(stderr) {
        let line = line.strip_prefix("tar: ").unwrap_or(line);
        if let Some((file, rest)) = line.split_once(": File shrank by ") {
            let bytes = rest.split(' ').next().unwrap_or("some");
            return Verdict::FileUnreadable {
                file: file.to_owned(),
                reason: format!("it shrank by {bytes} bytes while it was read"),
            };
        }
        let cannot_open = line.split_once(": Cannot open: ").or_else(|| {
            line.strip_prefix("can't open '")
                .and_then(|rest| rest.split_once("': "))
        });
        if let Some((file, reason)) = cannot_open {
            if reason == "No such file or directory" && in_dir(file) {
                gone.push(file.to_owned());
                continue;
            }
            return Verdict::FileUnreadable {
                file: file.to_owned(),
                reason: format!("it cannot be opened: {reason}"),
            };
        }
        if line == "short read" {
            // BusyBox names no file; the cut tar stream tells which one was being read.
            return Verdict::ShortRead;
        }
        let vanished = line
            .strip_suffix(": Cannot stat: No such file or directory")
            .or_else(|| line.strip_suffix(": No such file or directory"))
            .or_else(|| line.strip_suffix(": File removed before we read it"));
        if dir_gone.iter().any(|m| m == line) || line.ends_with(": file changed as we read it") {
            harmless += 1;
        } else if let Some(file) = vanished.filter(|f| in_dir(f)) {
            gone.push(file.to_owned());
        } else if line != "Exiting with failure status due to previous errors"
            && line != "error exit delayed from previous errors"
        {
            other = true;
        }
    }
    let whole = || {
        if gone.is_empty() {
            Verdict::Whole
        } else {
            Verdict::LeftOut(gone.clone())
        }
    };
    match exit {
        Exit::Success => whole(),
        Exit::Code(1 | 2) if (harmless > 0 || !gone.is_empty()) && !other => whole(),
        _ => failed(exit, stderr),
    }
}

/// `dd if={path} iflag=skip_bytes,count_bytes ...`: exit 0 is whole (the caller counts the
/// bytes); a file that cannot be opened (`dd: failed to open 'F': R` from GNU,
/// `dd: can't open 'F': R` from BusyBox) is named.
pub(crate) fn read(exit: &Exit, stderr: &str) -> Verdict {
    if *exit == Exit::Success {
        return Verdict::Whole;
    }
    for line in lines(stderr) {
        let opened = line
            .strip_prefix("dd: failed to open '")
            .or_else(|| line.strip_prefix("dd: can't open '"));
        if let Some((file, reason)) = opened.and_then(|rest| rest.split_once("': ")) {
            return Verdict::FileUnreadable {
                file: file.to_owned(),
                reason: format!("it cannot be opened: {reason}"),
            };
        }
    }
    failed(exit, stderr)
}

/// `find {dir} -mindepth 1 -maxdepth 1 -type f -exec stat -c '%s %Y %n' {} +`.
pub(crate) fn listing(dir: &str, exit: &Exit, stderr: &str) -> Verdict {
    // The path is matched by its end: a pod prints it as given, a pod whose tools see the
    // node's files under a mount prefix (the simulation) prints it with that prefix.
    let missing_dir = |line: &str| {
        let path = line
            .strip_prefix("find: ")
            .and_then(|l| l.strip_suffix(": No such file or directory"))
            .map(|p| p.trim_matches('\''));
        path.is_some_and(|p| p.ends_with(dir))
    };
    let vanished_file = |line: &str| {
        (line.starts_with("stat: cannot statx '") || line.starts_with("stat: can't stat '"))
            && line.ends_with("': No such file or directory")
    };
    let harmless = |line: &str| missing_dir(line) || vanished_file(line);
    let lines: Vec<&str> = lines(stderr).collect();
    match exit {
        Exit::Success => Verdict::Whole,
        Exit::Code(1) if !lines.is_empty() && lines.iter().all(|l| harmless(l)) => Verdict::Whole,
        _ => failed(exit, stderr),
    }
}

/// `rm -rf -- {dir}`.
pub(crate) fn removal(exit: &Exit, stderr: &str) -> Verdict {
    match exit {
        Exit::Success => Verdict::Whole,
        _ => failed(exit, stderr),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: &str = "var/log/calico/pcap/dev/cap";

    #[test]
    fn a_file_that_is_gone_is_left_out_with_either_tar() {
        for (code, stderr) in [
            (
                2,
                "tar: var/log/calico/pcap/dev/cap/a.pcap: Cannot stat: No such file or directory\ntar: Exiting with failure status due to previous errors\n",
            ),
            (
                1,
                "tar: var/log/calico/pcap/dev/cap/a.pcap: File removed before we read it\n",
            ),
            (
                1,
                "tar: var/log/calico/pcap/dev/cap/a.pcap: No such file or directory\ntar: error exit delayed from previous errors\n",
            ),
            (
                1,
                "tar: can't open 'var/log/calico/pcap/dev/cap/a.pcap': No such file or directory\ntar: error exit delayed from previous errors\n",
            ),
        ] {
            assert_eq!(
                archive(DIR, &Exit::Code(code), stderr),
                Verdict::LeftOut(vec![format!("{DIR}/a.pcap")]),
                "{stderr}"
            );
        }
        assert_eq!(archive(DIR, &Exit::Success, ""), Verdict::Whole);
        // Gone and something else wrong: failed.
        assert!(matches!(
            archive(
                DIR,
                &Exit::Code(2),
                "tar: var/log/calico/pcap/dev/cap/a.pcap: Cannot stat: No such file or directory\ntar: -: Cannot write: Broken pipe\n"
            ),
            Verdict::Failed { .. }
        ));
    }

    #[test]
    fn dd_as_gnu_and_busybox_report() {
        assert_eq!(read(&Exit::Success, ""), Verdict::Whole);
        for stderr in [
            "dd: failed to open '/var/log/x/a.pcap': No such file or directory\n",
            "dd: can't open '/var/log/x/a.pcap': No such file or directory\n",
        ] {
            assert_eq!(
                read(&Exit::Code(1), stderr),
                Verdict::FileUnreadable {
                    file: "/var/log/x/a.pcap".into(),
                    reason: "it cannot be opened: No such file or directory".into()
                }
            );
        }
        assert!(matches!(
            read(
                &Exit::Code(1),
                "dd: error reading '/x': Input/output error\n"
            ),
            Verdict::Failed { .. }
        ));
    }

    #[test]
    fn gnu_tar_as_it_reports() {
        let whole = |exit, stderr| archive(DIR, &exit, stderr);
        assert_eq!(whole(Exit::Success, ""), Verdict::Whole);
        assert_eq!(
            whole(
                Exit::Code(1),
                "tar: var/log/calico/pcap/dev/cap/big.pcap: file changed as we read it\n"
            ),
            Verdict::Whole,
            "a growing file is a consistent prefix"
        );
        assert_eq!(
            whole(
                Exit::Code(1),
                "tar: var/log/calico/pcap/dev/cap/big.pcap: File shrank by 15000000 bytes; padding with zeros\n"
            ),
            Verdict::FileUnreadable {
                file: format!("{DIR}/big.pcap"),
                reason: "it shrank by 15000000 bytes while it was read".into()
            }
        );
        assert_eq!(
            whole(
                Exit::Code(2),
                "tar: var/log/calico/pcap/dev/cap/small.pcap: Cannot open: Permission denied\ntar: Exiting with failure status due to previous errors\n"
            ),
            Verdict::FileUnreadable {
                file: format!("{DIR}/small.pcap"),
                reason: "it cannot be opened: Permission denied".into()
            }
        );
        assert_eq!(
            whole(
                Exit::Code(2),
                "tar: var/log/calico/pcap/dev/cap: Cannot stat: No such file or directory\ntar: Exiting with failure status due to previous errors\n"
            ),
            Verdict::Whole,
            "a directory that is gone holds no file"
        );
        assert!(
            matches!(
                whole(
                    Exit::Code(2),
                    "tar: var/log/calico/pcap/dev/other: Cannot stat: No such file or directory\n"
                ),
                Verdict::Failed { .. }
            ),
            "only the capture's own directory may be missing"
        );
        assert!(matches!(
            whole(
                Exit::Code(2),
                "tar: Error is not recoverable: exiting now\n"
            ),
            Verdict::Failed { .. }
        ));
        assert!(
            matches!(whole(Exit::Code(1), ""), Verdict::Failed { .. }),
            "exit 1 with nothing said"
        );
        assert!(matches!(
            whole(Exit::Failed("the exec ended without a status".into()), ""),
            Verdict::Failed { .. }
        ));
    }

    #[test]
    fn busybox_tar_as_it_reports() {
        let whole = |exit, stderr| archive(DIR, &exit, stderr);
        assert_eq!(
            whole(
                Exit::Code(1),
                "tar: can't open 'var/log/calico/pcap/dev/cap/small.pcap': Permission denied\ntar: error exit delayed from previous errors\n"
            ),
            Verdict::FileUnreadable {
                file: format!("{DIR}/small.pcap"),
                reason: "it cannot be opened: Permission denied".into()
            }
        );
        assert_eq!(
            whole(Exit::Code(1), "tar: short read\n"),
            Verdict::ShortRead
        );
        assert_eq!(
            whole(
                Exit::Code(1),
                "tar: var/log/calico/pcap/dev/cap: No such file or directory\ntar: error exit delayed from previous errors\n"
            ),
            Verdict::Whole
        );
    }

    #[test]
    fn listings_and_removals_as_the_tools_report() {
        let dir = "/var/log/calico/pcap/dev/cap";
        assert_eq!(listing(dir, &Exit::Success, ""), Verdict::Whole);
        for missing in [
            "find: '/var/log/calico/pcap/dev/cap': No such file or directory\n",
            "find: /var/log/calico/pcap/dev/cap: No such file or directory\n",
            "stat: cannot statx '/var/log/calico/pcap/dev/cap/a.pcap': No such file or directory\n",
            "stat: can't stat '/var/log/calico/pcap/dev/cap/a.pcap': No such file or directory\n",
        ] {
            assert_eq!(
                listing(dir, &Exit::Code(1), missing),
                Verdict::Whole,
                "{missing}"
            );
        }
        assert!(matches!(
            listing(
                dir,
                &Exit::Code(1),
                "find: '/var/log/calico/pcap/dev/cap': Permission denied\n"
            ),
            Verdict::Failed { .. }
        ));
        assert!(matches!(
            listing(dir, &Exit::Code(1), ""),
            Verdict::Failed { .. }
        ));
        assert_eq!(removal(&Exit::Success, ""), Verdict::Whole);
        assert!(matches!(
            removal(&Exit::Code(1), "rm: cannot remove '/x': Read-only file system\n"),
            Verdict::Failed { reason } if reason.contains("Read-only")
        ));
    }
}
