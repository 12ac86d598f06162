//! `packetcapture-soak --api PATH [--minutes M]` (`make soak`): drives mixed traffic against
//! the real `packetcapture-api` binary and an in-process simulation for `M` minutes
//! (`SOAK_MINUTES`, default 10), with one fault toggled every 30 s and one SIGTERM and
//! restart of the service; checks every 200 zip against the node files and prints requests
//! by outcome, silent truncations, execs left open, and the service's RSS and descriptors.
//! Exits 1 when anything that must be zero is not, or memory or descriptors grew over 10%.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use packetcapture_tests::cluster::lock;
use packetcapture_tests::scenario::{Faults, Scenario};
use packetcapture_tests::sim::Sim;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::RwLock;

const SCENARIO: &str = r#"
users:
  - name: jane
    groups: [capture-readers]
  - name: bob
    groups: [developers]
  - name: dana@example.com
    kind: dex
    groups: [capture-readers]
clusters:
  - name: cluster
    nodes: [node-1, node-2, node-3, node-4]
    captures:
      - namespace: dev
        name: small
        nodes:
          - {node: node-1, state: Finished, files: 3, size: 50000}
      - namespace: dev
        name: medium
        nodes:
          - {node: node-1, state: Finished, files: 2, size: 500000}
          - {node: node-2, state: Finished, files: 2, size: 400000}
          - {node: node-3, state: Finished, files: 1, size: 300000}
      - namespace: dev
        name: large
        nodes:
          - {node: node-1, state: Finished, files: 2, size: 4000000}
          - {node: node-2, state: Finished, files: 2, size: 4000000}
          - {node: node-3, state: Finished, files: 2, size: 4000000}
          - {node: node-4, state: Finished, files: 2, size: 4000000}
      - namespace: dev
        name: scratch-1
        nodes:
          - {node: node-1, state: Finished, files: 2, size: 20000}
          - {node: node-3, state: Finished, files: 1, size: 20000}
      - namespace: dev
        name: scratch-2
        nodes:
          - {node: node-2, state: Finished, files: 2, size: 20000}
          - {node: node-4, state: Finished, files: 1, size: 20000}
    rbac:
      - subjects: [group:capture-readers]
        verbs: [get]
        apiGroups: [projectcalico.org]
        resources: [packetcaptures/files]
        namespaces: [dev]
      - subjects: [user:jane]
        verbs: [delete]
        apiGroups: [projectcalico.org]
        resources: [packetcaptures/files]
        namespaces: [dev]
  - name: east
    nodes: [east-node-1, east-node-2]
    captures:
      - namespace: dev
        name: medium
        nodes:
          - {node: east-node-1, state: Finished, files: 2, size: 300000}
          - {node: east-node-2, state: Finished, files: 1, size: 200000}
    rbac:
      - subjects: [group:capture-readers]
        verbs: [get]
        apiGroups: [projectcalico.org]
        resources: [packetcaptures/files]
        namespaces: [dev]
"#;

/// How long a client waits for the service to come up after a (re)start.
const HEALTHY_WITHIN: Duration = Duration::from_secs(15);
/// Slow-head connections kept open at once.
const SLOW_HEADS: usize = 40;
/// Workers sending requests.
const WORKERS: usize = 4;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Outcome counters, by name.
#[derive(Default)]
struct Tally(std::sync::Mutex<BTreeMap<String, u64>>);

impl Tally {
    fn add(&self, key: impl Into<String>) {
        *lock(&self.0).entry(key.into()).or_default() += 1;
    }

    fn get(&self, key: &str) -> u64 {
        lock(&self.0).get(key).copied().unwrap_or(0)
    }
}

/// A running service process.
struct Service {
    child: std::process::Child,
    log: PathBuf,
}

impl Service {
    fn start(bin: &Path, env: &[(String, String)], log: PathBuf) -> Result<Self, BoxError> {
        let file = std::fs::File::create(&log)?;
        let child = std::process::Command::new(bin)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()?;
        Ok(Self { child, log })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory in KiB and open descriptors.
    fn footprint(&self) -> (u64, usize) {
        let pid = self.pid();
        let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0);
        (rss, fds)
    }

    fn terminate(&self) -> Result<(), BoxError> {
        let pid = rustix::process::Pid::from_raw(i32::try_from(self.pid())?)
            .ok_or("the service has no pid")?;
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
        Ok(())
    }

    async fn exit_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let t = Instant::now();
        while t.elapsed() < within {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a capture's zip must hold: entry name to contents.
type Expected = BTreeMap<String, Vec<u8>>;

fn expected(sim: &Sim, cluster: &str, name: &str) -> Result<Expected, BoxError> {
    let mut out = Expected::new();
    for node in &sim.cluster(cluster).nodes {
        let dir = sim
            .node_dir(cluster, node)
            .join("var/log/calico/pcap/dev")
            .join(name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let entry = entry?;
            out.insert(
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read(entry.path())?,
            );
        }
    }
    Ok(out)
}

/// How a whole-looking zip compares with the node files.
fn verify(body: &[u8], expected: &Expected) -> &'static str {
    let Ok(mut zip) = zip::ZipArchive::new(std::io::Cursor::new(body)) else {
        return "silent truncation";
    };
    let mut got = Expected::new();
    for i in 0..zip.len() {
        let Ok(mut f) = zip.by_index(i) else {
            return "silent truncation";
        };
        let mut data = Vec::new();
        if f.read_to_end(&mut data).is_err() {
            return "silent truncation";
        }
        got.insert(f.name().unwrap_or_default().into_owned(), data);
    }
    // The manifest must list every file's digest (its lines are checked against the files).
    let Some(manifest) = got.remove("SHA256SUMS") else {
        return "silent corruption";
    };
    let listed: std::collections::BTreeSet<String> = String::from_utf8_lossy(&manifest)
        .lines()
        .map(str::to_owned)
        .collect();
    let computed: std::collections::BTreeSet<String> = got
        .iter()
        .map(|(name, data)| {
            use sha2::Digest;
            let digest: String = sha2::Sha256::digest(data)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            format!("{digest}  {name}")
        })
        .collect();
    if listed != computed {
        return "silent corruption";
    }
    if &got == expected {
        "verified"
    } else {
        "silent corruption"
    }
}

/// A deletable capture: its object and files, to put back after each delete.
struct Scratch {
    name: String,
    object: serde_json::Value,
    files: Vec<(PathBuf, Vec<u8>)>,
}

impl Scratch {
    fn take(sim: &Sim, name: &str) -> Result<Self, BoxError> {
        let cluster = sim.local();
        let object = lock(&cluster.captures)
            .get(&("dev".to_owned(), name.to_owned()))
            .cloned()
            .ok_or("no scratch capture")?;
        let mut files = Vec::new();
        for node in &cluster.nodes {
            let dir = sim
                .node_dir("cluster", node)
                .join("var/log/calico/pcap/dev")
                .join(name);
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for entry in entries {
                    let entry = entry?;
                    files.push((entry.path(), std::fs::read(entry.path())?));
                }
            }
        }
        Ok(Self {
            name: name.to_owned(),
            object,
            files,
        })
    }

    fn gone(&self) -> bool {
        self.files.iter().all(|(path, _)| !path.exists())
    }

    fn restore(&self, sim: &Sim) -> Result<(), BoxError> {
        for (path, data) in &self.files {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, data)?;
        }
        let cluster = sim.local();
        let mut object = self.object.clone();
        object["metadata"]["resourceVersion"] = cluster.next_version().into();
        lock(&cluster.captures).insert(("dev".to_owned(), self.name.clone()), object);
        Ok(())
    }
}

/// Shared by every task.
struct Run {
    sim: Sim,
    url: String,
    http: reqwest::Client,
    tally: Tally,
    /// Workers hold it shared for each request; taking it alone waits for quiet.
    gate: RwLock<()>,
    stop: AtomicBool,
    expected: BTreeMap<&'static str, Expected>,
    scratch: Vec<Scratch>,
    ca_pem: String,
    port: u16,
    /// Bumped at every fault change and around the restart.
    weather: std::sync::atomic::AtomicU64,
    /// No fault set and no restart under way.
    calm: AtomicBool,
    /// A 5xx came back: workers pause a little, as a client retrying would, rather than
    /// fill the table with instant refusals.
    backing_off: AtomicBool,
}

impl Run {
    /// The calm period now, if it is one.
    fn calm_period(&self) -> Option<u64> {
        let period = self.weather.load(Ordering::SeqCst);
        self.calm.load(Ordering::SeqCst).then_some(period)
    }

    /// Records `outcome` for `kind`; anything but `expected` during a calm period that lasted
    /// the whole request (`calm`, taken when it began) is also recorded as unexpected.
    fn outcome(&self, kind: &str, outcome: &str, expected: &str, calm: Option<u64>) {
        self.tally.add(format!("{kind}: {outcome}"));
        if outcome.starts_with('5') {
            self.backing_off.store(true, Ordering::SeqCst);
        }
        if outcome != expected && calm.is_some() && calm == self.calm_period() {
            self.tally.add(format!("UNEXPECTED {kind}: {outcome}"));
        }
    }

    /// Changes the weather.
    fn set_weather(&self, calm: bool) {
        self.calm.store(false, Ordering::SeqCst);
        self.weather.fetch_add(1, Ordering::SeqCst);
        self.calm.store(calm, Ordering::SeqCst);
    }
}

/// A small random number source for picking requests (xorshift, seeded from the system).
struct Dice(u64);

impl Dice {
    fn new() -> Self {
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        Self(u64::from_le_bytes(seed) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One download: reads to the end or a failure, then judges what arrived.
async fn download(run: &Run, kind: &'static str, token: &str, cluster: Option<&str>) {
    let calm = run.calm_period();
    let label = format!("download/{kind}");
    let capture = match kind {
        "managed" => "medium",
        k => k,
    };
    let mut request = run
        .http
        .get(format!("{}/download/dev/{capture}/files.zip", run.url))
        .bearer_auth(token);
    if let Some(c) = cluster {
        request = request.header("X-Cluster-ID", c);
    }
    let verdict = download_verdict(run, kind, request).await;
    run.outcome(&label, &verdict, "200, verified", calm);
}

/// What a download came to: a transport error, a status, a failed transfer, or the verdict
/// on what arrived (a silent truncation or corruption is also counted on its own).
async fn download_verdict(run: &Run, kind: &str, request: reqwest::RequestBuilder) -> String {
    let mut response = match request.send().await {
        Ok(r) => r,
        Err(e) => return transport(&e).to_owned(),
    };
    let status = response.status().as_u16();
    if status != 200 {
        return status.to_string();
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(_) => return "200, failed transfer".to_owned(),
        }
    }
    let verdict = verify(&body, &run.expected[kind]);
    if verdict != "verified" {
        run.tally.add(verdict);
    }
    format!("200, {verdict}")
}

fn transport(e: &reqwest::Error) -> &'static str {
    if e.is_connect() {
        "connection refused"
    } else if e.is_timeout() {
        "timed out"
    } else {
        "connection error"
    }
}

async fn status_of(run: &Run, kind: &str, expected: &str, request: reqwest::RequestBuilder) {
    let calm = run.calm_period();
    match request.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let outcome = match r.bytes().await {
                Ok(_) => status.to_string(),
                Err(_) => format!("{status}, failed transfer"),
            };
            run.outcome(kind, &outcome, expected, calm);
        }
        Err(e) => run.outcome(kind, transport(&e), expected, calm),
    }
}

async fn worker(run: Arc<Run>) {
    let mut dice = Dice::new();
    let (jane, bob, dana) = (
        run.sim.token("jane"),
        run.sim.token("bob"),
        run.sim.token("dana@example.com"),
    );
    while !run.stop.load(Ordering::SeqCst) {
        if run.calm_period().is_none() && !healthy_now(&run).await {
            // The service is restarting: wait for it rather than spin on refusals.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if run.backing_off.swap(false, Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _open = run.gate.read().await;
        match dice.below(100) {
            0..15 => download(&run, "small", &dana, None).await,
            15..30 => download(&run, "medium", &jane, None).await,
            30..38 => download(&run, "large", &jane, None).await,
            38..45 => download(&run, "managed", &jane, Some("east")).await,
            45..50 => {
                // A client that leaves after the first bytes.
                let calm = run.calm_period();
                let request = run
                    .http
                    .get(format!("{}/download/dev/large/files.zip", run.url))
                    .bearer_auth(&jane);
                let outcome = match request.send().await {
                    Ok(mut r) if r.status() == 200 => match r.chunk().await {
                        Ok(Some(_)) => "left after the first bytes".to_owned(),
                        _ => "200, failed transfer".to_owned(),
                    },
                    Ok(r) => r.status().as_u16().to_string(),
                    Err(e) => transport(&e).to_owned(),
                };
                run.outcome(
                    "download/large (leaving)",
                    &outcome,
                    "left after the first bytes",
                    calm,
                );
            }
            50..70 => {
                let r = run
                    .http
                    .get(format!("{}/files/dev/medium", run.url))
                    .bearer_auth(&jane);
                status_of(&run, "list", "200", r).await;
            }
            70..80 => {
                let r = run
                    .http
                    .get(format!("{}/download/dev/small/files.zip", run.url))
                    .bearer_auth("not-a-token");
                status_of(&run, "bad token (401)", "401", r).await;
            }
            80..90 => {
                let r = run
                    .http
                    .get(format!("{}/download/dev/small/files.zip", run.url))
                    .bearer_auth(&bob);
                status_of(&run, "no permission (403)", "403", r).await;
            }
            _ => {
                let r = run
                    .http
                    .get(format!(
                        "{}/download/dev/no-such-capture/files.zip",
                        run.url
                    ))
                    .bearer_auth(&jane);
                status_of(&run, "no capture (404)", "404", r).await;
            }
        }
    }
}

/// Deletes scratch captures in turn, checks their files went, and puts them back.
async fn deleter(run: Arc<Run>) {
    let jane = run.sim.token("jane");
    let mut turn = 0;
    while !run.stop.load(Ordering::SeqCst) {
        {
            let _open = run.gate.read().await;
            let scratch = &run.scratch[turn % run.scratch.len()];
            turn += 1;
            let calm = run.calm_period();
            let request = run
                .http
                .delete(format!("{}/files/dev/{}", run.url, scratch.name))
                .bearer_auth(&jane);
            let outcome = match request.send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let _ = r.bytes().await;
                    match (status, scratch.gone()) {
                        (204, true) => "204, files gone".to_owned(),
                        (204, false) => "204, FILES LEFT".to_owned(),
                        _ => status.to_string(),
                    }
                }
                Err(e) => transport(&e).to_owned(),
            };
            run.outcome("delete", &outcome, "204, files gone", calm);
            if let Err(e) = scratch.restore(&run.sim) {
                eprintln!("cannot restore {}: {e}", scratch.name);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Keeps slow-head connections open: TLS done, half a request head, then nothing; counts
/// those the service closes.
async fn slow_heads(run: Arc<Run>) {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(run.ca_pem.as_bytes()).flatten() {
        let _ = roots.add(cert);
    }
    let config = Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    while !run.stop.load(Ordering::SeqCst) {
        let _open = run.gate.read().await;
        let mut open = Vec::new();
        for _ in 0..SLOW_HEADS {
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", run.port)).await else {
                run.tally.add("slow head: connection refused");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let Ok(name) = rustls::pki_types::ServerName::try_from("localhost") else {
                continue;
            };
            match connector.connect(name, tcp).await {
                Ok(mut tls) => {
                    let _ = tls
                        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
                        .await;
                    open.push(tls);
                }
                Err(_) => run.tally.add("slow head: handshake failed"),
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        for mut tls in open {
            let mut buf = [0u8; 512];
            let closed = tokio::time::timeout_at(deadline, async {
                loop {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            run.tally.add(if closed.is_ok() {
                "slow head: closed by the service"
            } else {
                "slow head: STILL OPEN after 60 s"
            });
        }
    }
}

/// The faults, one per 30 s window, with a clear window between two.
fn fault(window: usize) -> (&'static str, Faults) {
    let mut f = Faults::default();
    if window % 2 == 1 {
        return ("none", f);
    }
    let name = match (window / 2) % 9 {
        0 => {
            f.exec_bandwidth = Some(1_000_000);
            "exec bandwidth 1 MB/s"
        }
        1 => {
            f.exec_cut_after = Some(500_000);
            "exec cut after 500 kB"
        }
        2 => {
            f.api_server_error = Some(503);
            "API server answers 503"
        }
        3 => {
            f.latency_ms = 300;
            "API server latency 300 ms"
        }
        4 => {
            f.exec_stall_after = Some(200_000);
            "exec stalls after 200 kB"
        }
        5 => {
            f.dex_down = true;
            "Dex down"
        }
        6 => {
            f.missing_entry_pods = vec!["node-2".into()];
            "entry pod of node-2 missing"
        }
        7 => {
            f.exec_exit_status = Some(2);
            "exec exits 2"
        }
        _ => {
            f.voltron_down = true;
            "Voltron down"
        }
    };
    (name, f)
}

/// Waits until every request in flight is done, holds new ones off, and measures the
/// service once freed memory had time to go back to the system (jemalloc's background
/// purge, 10 s).
async fn quiet(run: &Run, service: &Service) -> (u64, usize) {
    let _quiet = run.gate.write().await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    service.footprint()
}

async fn healthy_now(run: &Run) -> bool {
    matches!(run.http.get(format!("{}/health", run.url)).send().await, Ok(r) if r.status() == 200)
}

async fn healthy(http: &reqwest::Client, url: &str) -> bool {
    let t = Instant::now();
    while t.elapsed() < HEALTHY_WITHIN {
        if let Ok(r) = http.get(format!("{url}/health")).send().await
            && r.status() == 200
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn growth(before: f64, after: f64) -> f64 {
    if before == 0.0 {
        0.0
    } else {
        (after - before) / before * 100.0
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    let Some(bin) = arg(&args, "--api") else {
        eprintln!("usage: packetcapture-soak --api PATH [--minutes M]");
        std::process::exit(64);
    };
    let minutes: f64 = arg(&args, "--minutes")
        .or_else(|| std::env::var("SOAK_MINUTES").ok())
        .map(|m| m.parse())
        .transpose()
        .map_err(|e| format!("SOAK_MINUTES: {e}"))?
        .unwrap_or(10.0);
    let total = Duration::from_secs_f64(minutes * 60.0);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = std::env::temp_dir().join(format!("packetcapture-soak-{}", std::process::id()));
    let sim = Sim::start(&Scenario::from_yaml(SCENARIO)?, &dir.join("sim")).await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut env: Vec<(String, String)> = std::fs::read_to_string(sim.out.join("env"))?
        .lines()
        .filter_map(|l| {
            let (k, v) = l.strip_prefix("export ")?.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect();
    for (k, v) in [
        ("PACKETCAPTURE_API_PORT", port.to_string()),
        ("PACKETCAPTURE_API_HEADER_TIMEOUT", "10s".into()),
        ("PACKETCAPTURE_API_NODE_IDLE_TIMEOUT", "5s".into()),
        ("PACKETCAPTURE_API_SHUTDOWN_GRACE", "20s".into()),
    ] {
        env.push((k.to_owned(), v));
    }
    let ca_pem = std::fs::read_to_string(sim.out.join("ca.crt"))?;
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes())?])
        .timeout(Duration::from_secs(120))
        .build()?;
    let url = format!("https://localhost:{port}");
    let bin = PathBuf::from(bin);
    let mut service = Service::start(&bin, &env, dir.join("service-1.log"))?;
    if !healthy(&http, &url).await {
        return Err(format!("the service did not start; see {}", service.log.display()).into());
    }
    let mut expected_files = BTreeMap::new();
    for kind in ["small", "medium", "large"] {
        expected_files.insert(kind, expected(&sim, "cluster", kind)?);
    }
    expected_files.insert("managed", expected(&sim, "east", "medium")?);
    let scratch = vec![
        Scratch::take(&sim, "scratch-1")?,
        Scratch::take(&sim, "scratch-2")?,
    ];
    let run = Arc::new(Run {
        sim,
        url,
        http,
        tally: Tally::default(),
        gate: RwLock::new(()),
        stop: AtomicBool::new(false),
        expected: expected_files,
        scratch,
        ca_pem,
        port,
        weather: std::sync::atomic::AtomicU64::new(0),
        calm: AtomicBool::new(false),
        backing_off: AtomicBool::new(false),
    });
    println!(
        "soak: {minutes} min against {} (log in {})",
        run.url,
        dir.display()
    );
    let mut tasks = Vec::new();
    for _ in 0..WORKERS {
        tasks.push(tokio::spawn(worker(run.clone())));
    }
    tasks.push(tokio::spawn(deleter(run.clone())));
    tasks.push(tokio::spawn(slow_heads(run.clone())));

    let started = Instant::now();
    let warm_up = (total / 10).clamp(Duration::from_secs(5), Duration::from_secs(60));
    let restart_at = total * 2 / 5;
    let window = Duration::from_secs(30);
    let mut footprints: Vec<(&str, (u64, usize))> = Vec::new();
    let mut restart_report = String::from("not reached");
    let mut restarted_at = None;
    let mut current_window = usize::MAX;
    while started.elapsed() < total {
        let elapsed = started.elapsed();
        let w = (elapsed.as_secs_f64() / window.as_secs_f64()) as usize;
        if w != current_window {
            current_window = w;
            let (name, faults) = fault(w);
            run.set_weather(false);
            run.sim.local().set_faults(|f| *f = faults.clone());
            run.set_weather(faults == Faults::default());
            run.sim
                .cluster("east")
                .set_faults(|f| *f = Faults::default());
            println!("  {:>5.0} s  fault: {name}", elapsed.as_secs_f64());
        }
        if footprints.is_empty() && elapsed >= warm_up {
            let clear = fault(1).1;
            run.set_weather(false);
            run.sim.local().set_faults(|f| *f = clear);
            run.set_weather(true);
            footprints.push(("start (after warm-up)", quiet(&run, &service).await));
            current_window = usize::MAX;
        }
        if restarted_at.is_none() && elapsed >= restart_at {
            footprints.push(("before SIGTERM", quiet(&run, &service).await));
            // SIGTERM with traffic flowing, as a rollout does.
            tokio::time::sleep(Duration::from_secs(2)).await;
            run.set_weather(false);
            service.terminate()?;
            let status = service.exit_within(Duration::from_secs(40)).await;
            let log = std::fs::read_to_string(&service.log).unwrap_or_default();
            let stopped = log
                .lines()
                .rev()
                .find(|l| l.contains("stopped") && l.contains("drained="))
                .unwrap_or("no \"stopped\" line")
                .to_owned();
            restart_report = format!(
                "{}; {}",
                status.map_or("still running".into(), |s| s.to_string()),
                stopped
                    .split_once("stopped")
                    .map_or(stopped.as_str(), |(_, r)| r)
                    .trim()
            );
            if !status.is_some_and(|s| s.success()) {
                run.tally.add("restart: UNCLEAN EXIT");
            }
            service = Service::start(&bin, &env, dir.join("service-2.log"))?;
            if !healthy(&run.http, &run.url).await {
                return Err("the service did not come back after SIGTERM".into());
            }
            restarted_at = Some(started.elapsed());
            current_window = usize::MAX;
        }
        if let Some(at) = restarted_at
            && footprints.len() == 2
            && started.elapsed() >= at + warm_up
        {
            footprints.push(("after restart (after warm-up)", quiet(&run, &service).await));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    run.stop.store(true, Ordering::SeqCst);
    run.sim.local().set_faults(|f| *f = Faults::default());
    for t in tasks {
        let _ = t.await;
    }
    footprints.push(("end", quiet(&run, &service).await));
    let mut execs_left = run.sim.local().running_execs.load(Ordering::SeqCst)
        + run.sim.cluster("east").running_execs.load(Ordering::SeqCst);
    for _ in 0..50 {
        if execs_left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        execs_left = run.sim.local().running_execs.load(Ordering::SeqCst)
            + run.sim.cluster("east").running_execs.load(Ordering::SeqCst);
    }

    println!("\nrequests by outcome:");
    let counts = lock(&run.tally.0).clone();
    let total_requests: u64 = counts
        .iter()
        .filter(|(k, _)| k.contains(": ") && !k.starts_with("UNEXPECTED"))
        .map(|(_, v)| v)
        .sum();
    for (k, v) in &counts {
        if k.contains(": ") {
            println!("  {v:>7}  {k}");
        }
    }
    println!("  {total_requests:>7}  in all");
    let silent = run.tally.get("silent truncation") + run.tally.get("silent corruption");
    println!("\nsilent truncations or corruptions: {silent}");
    println!("execs left open in the simulation: {execs_left}");
    println!("SIGTERM and restart: {restart_report}");
    println!("\nservice footprint (quiet moments):");
    for (when, (rss, fds)) in &footprints {
        println!("  {when:<32} RSS {:>10}  descriptors {fds}", mib(*rss));
    }
    let unexpected: u64 = counts
        .iter()
        .filter(|(k, _)| k.starts_with("UNEXPECTED"))
        .map(|(_, v)| v)
        .sum();
    println!("failures with no fault set: {unexpected}");
    let mut failed = silent > 0 || execs_left > 0 || unexpected > 0;
    for key in [
        "restart: UNCLEAN EXIT",
        "delete: 204, FILES LEFT",
        "slow head: STILL OPEN after 60 s",
    ] {
        if run.tally.get(key) > 0 {
            println!("FAILED: {key}");
            failed = true;
        }
    }
    // Same-process pairs: first process start → before SIGTERM, second after warm-up → end.
    for pair in footprints.windows(2).step_by(2) {
        let [(from, (rss0, fd0)), (to, (rss1, fd1))] = pair else {
            continue;
        };
        let rss = growth(*rss0 as f64, *rss1 as f64);
        let fds = growth(*fd0 as f64, *fd1 as f64);
        println!("  {from} → {to}: RSS {rss:+.1}%, descriptors {fds:+.1}%");
        if rss > 10.0 || fds > 10.0 {
            println!("FAILED: the footprint grew over 10%");
            failed = true;
        }
    }
    if failed {
        // exit skips destructors: stop the service first.
        drop(service);
        std::process::exit(1);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
