//! Live captures: what Felix does while a capture runs, for tests and the demo. Packets are
//! appended to each capturing stream's active file at a rate, with the wall clock's time; on a
//! period the active file is rotated as Felix rotates it (renamed `{stem}-{micros}.pcap`, a new
//! active file begun with a fresh pcap header, the status' `fileNames` updated); after a while
//! the capture's nodes become `Finished` and writing stops. Every packet written is recorded
//! (stream, sequence number, timestamp, when) so a test can check what a follower received.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::cluster::{Cluster, lock};

/// How a capture runs live (the scenario's `live:` on a capture).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LiveSpec {
    /// Packets per second appended to each stream of the capture's `Capturing` nodes.
    pub rate: u32,
    /// Milliseconds between rotations of each stream's active file; none: no rotation.
    #[serde(default)]
    pub rotate_ms: Option<u64>,
    /// Milliseconds after the start when the capturing nodes become `Finished` (and writing
    /// stops); none: the capture runs until the simulation stops.
    #[serde(default)]
    pub finish_ms: Option<u64>,
    /// Every tenth record is written in two writes (header, then data 30 ms later), as Felix
    /// can leave a record half written for a moment.
    #[serde(default)]
    pub split_records: bool,
}

/// One packet appended to a live stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// `{node}/{iface}`, the merged file's interface name.
    pub stream: String,
    /// Its number in the stream, from 0.
    pub seq: u64,
    /// Its timestamp, nanoseconds since the epoch (microsecond precision, as Felix writes).
    pub ts: u64,
}

/// The payload of a live packet: it names its stream and number, for a reader to recognize.
pub fn payload(stream: &str, seq: u64) -> String {
    format!("{stream}#{seq:08}")
}

struct Stream {
    node: String,
    stem: String,
    iface: String,
    dir: PathBuf,
    seq: u64,
    opened: Instant,
}

/// One live capture of a cluster.
pub struct Live {
    /// The capture's namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    spec: LiveSpec,
    streams: Mutex<Vec<Stream>>,
    /// Every packet written, in order.
    pub written: Mutex<Vec<Written>>,
    /// When its nodes turn `Finished` (from `finishMs`, or [`Live::finish_in`]).
    deadline: Mutex<Option<Instant>>,
    /// When writing began, and how many packets each stream has been given since: a step
    /// writes what is due by then, so the rate holds whatever the writer thread's pace.
    pace: Mutex<(Instant, u64)>,
    finished: AtomicBool,
}

impl Live {
    /// True once the capture's nodes are `Finished`.
    pub fn finished(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
    }

    /// The packets written so far.
    pub fn written(&self) -> Vec<Written> {
        lock(&self.written).clone()
    }

    /// Finishes the capture `after` from now instead of at `finishMs` (tests time the end from
    /// their own steps, not from the cluster's start, which a loaded machine delays).
    pub fn finish_in(&self, after: Duration) {
        *lock(&self.deadline) = Some(Instant::now() + after);
    }
}

/// A stream's active file name and its interface.
fn active(stem: &str) -> String {
    format!("{stem}.pcap")
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn pcap_header() -> Vec<u8> {
    let mut h = Vec::with_capacity(24);
    h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&[0; 8]);
    h.extend_from_slice(&65535u32.to_le_bytes());
    h.extend_from_slice(&1u32.to_le_bytes());
    h
}

/// An Ethernet/IPv4/UDP frame carrying `text`.
fn frame(text: &str, port: u16) -> Vec<u8> {
    let payload = text.as_bytes();
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    let ip_len = 20 + 8 + payload.len();
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&(ip_len as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0, 10, 65, 0, 7, 10, 96, 0, 10]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&port.to_be_bytes());
    f.extend_from_slice(&9999u16.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

impl Cluster {
    /// Registers `namespace/name` as live with `spec`: every `Capturing` node's active files
    /// become streams.
    pub(crate) fn start_live(&self, namespace: &str, name: &str, spec: LiveSpec) {
        let deadline = spec
            .finish_ms
            .map(|ms| Instant::now() + Duration::from_millis(ms));
        let live = Arc::new(Live {
            namespace: namespace.into(),
            name: name.into(),
            spec,
            streams: Mutex::new(Vec::new()),
            written: Mutex::new(Vec::new()),
            deadline: Mutex::new(deadline),
            pace: Mutex::new((Instant::now(), 0)),
            finished: AtomicBool::new(false),
        });
        let files = lock(&self.captures)
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(|c| c["status"]["files"].clone())
            .unwrap_or(Value::Null);
        for entry in files.as_array().into_iter().flatten() {
            if entry["state"] != "Capturing" {
                continue;
            }
            let node = entry["node"].as_str().unwrap_or_default();
            let directory = entry["directory"].as_str().unwrap_or_default();
            for file in entry["fileNames"].as_array().into_iter().flatten() {
                let Some(stem) = file.as_str().and_then(|f| f.strip_suffix(".pcap")) else {
                    continue;
                };
                if stem.contains('-')
                    && stem
                        .rsplit('-')
                        .next()
                        .is_some_and(|s| s.chars().all(|c| c.is_ascii_digit()))
                {
                    continue; // a rotated file
                }
                lock(&live.streams).push(self.stream(node, directory, namespace, name, stem));
            }
        }
        lock(&self.live).push(live);
    }

    fn stream(
        &self,
        node: &str,
        directory: &str,
        namespace: &str,
        name: &str,
        stem: &str,
    ) -> Stream {
        Stream {
            node: node.into(),
            stem: stem.into(),
            iface: stem.split_once('_').map_or(stem, |(_, i)| i).into(),
            dir: self
                .node_root
                .join(node)
                .join(directory.trim_matches('/'))
                .join(namespace)
                .join(name),
            seq: 0,
            opened: Instant::now(),
        }
    }

    /// The live capture `namespace/name`, if it is one.
    pub fn live(&self, namespace: &str, name: &str) -> Option<Arc<Live>> {
        lock(&self.live)
            .iter()
            .find(|l| l.namespace == namespace && l.name == name)
            .cloned()
    }

    /// A new stream of the live capture on `node` (a node the status may not name yet), for
    /// pod `pod`: its active file (a pcap header) and the status name it, `Capturing`.
    pub fn add_live_stream(
        &self,
        namespace: &str,
        name: &str,
        node: &str,
        pod: &str,
    ) -> std::io::Result<()> {
        let Some(live) = self.live(namespace, name) else {
            return Err(std::io::Error::other(format!(
                "{namespace}/{name} is not live"
            )));
        };
        if live.finished() {
            return Err(std::io::Error::other(format!(
                "{namespace}/{name} has finished: no stream can join it"
            )));
        }
        let directory = "/var/log/calico/pcap";
        let stem = format!(
            "{pod}_cali{}",
            crate::cluster::short_hash(&format!("{node}{pod}"), 11)
        );
        let stream = self.stream(node, directory, namespace, name, &stem);
        std::fs::create_dir_all(&stream.dir)?;
        std::fs::write(stream.dir.join(active(&stem)), pcap_header())?;
        self.edit_status(namespace, name, node, |names| names.push(active(&stem)));
        lock(&live.streams).push(stream);
        Ok(())
    }

    /// Changes node `node`'s `fileNames` in the capture's status (adding the node, capturing,
    /// when it is not there yet).
    fn edit_status(
        &self,
        namespace: &str,
        name: &str,
        node: &str,
        change: impl FnOnce(&mut Vec<String>),
    ) {
        let version = self.next_version();
        let mut captures = lock(&self.captures);
        let Some(capture) = captures.get_mut(&(namespace.to_owned(), name.to_owned())) else {
            return;
        };
        let files = &mut capture["status"]["files"];
        if !files.is_array() {
            *files = json!([]);
        }
        let list = files.as_array_mut().expect("an array");
        if !list.iter().any(|e| e["node"] == node) {
            list.push(json!({"node": node, "directory": "/var/log/calico/pcap", "fileNames": [], "state": "Capturing"}));
        }
        let entry = list
            .iter_mut()
            .find(|e| e["node"] == node)
            .expect("just added");
        let mut names: Vec<String> = entry["fileNames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        change(&mut names);
        names.sort();
        entry["fileNames"] = json!(names);
        capture["metadata"]["resourceVersion"] = json!(version);
    }

    /// One step of every live capture: appends each stream's next packet, rotates what is due,
    /// finishes what is due. Returns false when nothing is live any more.
    pub(crate) fn live_step(&self) -> bool {
        let lives: Vec<Arc<Live>> = lock(&self.live).clone();
        let mut any = false;
        for live in lives {
            if live.finished() {
                continue;
            }
            any = true;
            if lock(&live.deadline).is_some_and(|at| Instant::now() >= at) {
                live.finished.store(true, Ordering::SeqCst);
                let nodes: Vec<String> =
                    lock(&live.streams).iter().map(|s| s.node.clone()).collect();
                let version = self.next_version();
                let mut captures = lock(&self.captures);
                if let Some(capture) =
                    captures.get_mut(&(live.namespace.clone(), live.name.clone()))
                {
                    for entry in capture["status"]["files"]
                        .as_array_mut()
                        .into_iter()
                        .flatten()
                    {
                        if nodes.iter().any(|n| entry["node"] == n.as_str()) {
                            entry["state"] = json!("Finished");
                        }
                    }
                    capture["metadata"]["resourceVersion"] = json!(version);
                }
                continue;
            }
            let due = {
                // Each capture at its own rate (the writer ticks at the fastest).
                let mut pace = lock(&live.pace);
                let target =
                    (pace.0.elapsed().as_secs_f64() * f64::from(live.spec.rate)) as u64 + 1;
                let due = target.saturating_sub(pace.1);
                pace.1 = target.max(pace.1);
                due
            };
            if due == 0 {
                continue;
            }
            let mut rotations = Vec::new();
            {
                let mut streams = lock(&live.streams);
                for (i, stream) in streams.iter_mut().enumerate() {
                    let label = format!("{}/{}", stream.node, stream.iface);
                    let path = stream.dir.join(active(&stream.stem));
                    let Ok(mut file) = std::fs::OpenOptions::new().append(true).open(&path) else {
                        continue;
                    };
                    let mut batch: Vec<u8> = Vec::new();
                    let mut batched: Vec<Written> = Vec::new();
                    for _ in 0..due {
                        let text = payload(&label, stream.seq);
                        let data = frame(&text, 40000 + i as u16);
                        let micros = now_micros();
                        let mut record = Vec::with_capacity(16 + data.len());
                        record.extend_from_slice(&((micros / 1_000_000) as u32).to_le_bytes());
                        record.extend_from_slice(&((micros % 1_000_000) as u32).to_le_bytes());
                        record.extend_from_slice(&(data.len() as u32).to_le_bytes());
                        record.extend_from_slice(&(data.len() as u32).to_le_bytes());
                        record.extend_from_slice(&data);
                        let written = Written {
                            stream: label.clone(),
                            seq: stream.seq,
                            ts: micros * 1_000,
                        };
                        if live.spec.split_records && stream.seq % 10 == 5 {
                            // What is batched goes first, then this record in two halves.
                            let ok = file.write_all(&batch).is_ok()
                                && file.write_all(&record[..16]).is_ok()
                                && {
                                    std::thread::sleep(Duration::from_millis(30));
                                    file.write_all(&record[16..]).is_ok()
                                };
                            batch.clear();
                            if !ok {
                                break;
                            }
                            batched.push(written);
                            lock(&live.written).append(&mut batched);
                        } else {
                            batch.extend_from_slice(&record);
                            batched.push(written);
                        }
                        stream.seq += 1;
                    }
                    if file.write_all(&batch).is_ok() {
                        lock(&live.written).append(&mut batched);
                    }
                    if live
                        .spec
                        .rotate_ms
                        .is_some_and(|ms| stream.opened.elapsed() >= Duration::from_millis(ms))
                    {
                        let rotated = format!("{}-{}.pcap", stream.stem, now_micros());
                        if std::fs::rename(&path, stream.dir.join(&rotated)).is_ok()
                            && std::fs::write(&path, pcap_header()).is_ok()
                        {
                            stream.opened = Instant::now();
                            rotations.push((stream.node.clone(), rotated));
                        }
                    }
                }
            }
            for (node, rotated) in rotations {
                self.edit_status(&live.namespace, &live.name, &node, |names| {
                    names.push(rotated)
                });
            }
        }
        any
    }

    /// Packets per second of the fastest live capture (the writer's pace), if any is live.
    pub(crate) fn live_rate(&self) -> Option<u32> {
        lock(&self.live)
            .iter()
            .filter(|l| !l.finished())
            .map(|l| l.spec.rate)
            .max()
    }
}

/// The writer of a simulation's live captures: one thread, stopped when dropped.
pub struct LiveWriter {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LiveWriter {
    /// Starts writing `clusters`' live captures.
    pub fn start(clusters: Vec<Arc<Cluster>>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                let rate = clusters.iter().filter_map(|c| c.live_rate()).max();
                let Some(rate) = rate else {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                let tick = Instant::now();
                for cluster in &clusters {
                    cluster.live_step();
                }
                // At most 500 steps a second: faster captures get several packets a step.
                let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)))
                    .max(Duration::from_millis(2));
                if let Some(rest) = period.checked_sub(tick.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for LiveWriter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
