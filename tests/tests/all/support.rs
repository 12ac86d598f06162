//! Starting simulations and clients for the tests.

use std::io::Read;
use std::path::{Path, PathBuf};

use packetcapture_tests::{Scenario, Sim};
use sha2::{Digest, Sha256};

/// A simulation in a temporary folder, kept alive with it.
pub struct TestSim {
    pub sim: Sim,
    pub dir: tempfile::TempDir,
}

impl std::ops::Deref for TestSim {
    type Target = Sim;
    fn deref(&self) -> &Sim {
        &self.sim
    }
}

pub async fn start(scenario: &Scenario) -> TestSim {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(scenario, dir.path()).await.unwrap();
    TestSim { sim, dir }
}

pub async fn start_default() -> TestSim {
    start(&Scenario::default_scenario()).await
}

/// A kube client for cluster `index` of the simulation, with `token`.
pub async fn kube_client(sim: &Sim, index: usize, token: &str) -> kube::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&sim.kubeconfig(index, token)).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// `kubectl` as the cluster's administrator, with a fresh cache.
pub fn kubectl(sim: &TestSim, args: &[&str]) -> std::process::Output {
    kubectl_as(sim, "admin.kubeconfig", args)
}

/// `kubectl` with one of the simulation's kubeconfigs (`kubeconfig` is the service's account).
pub fn kubectl_as(sim: &TestSim, kubeconfig: &str, args: &[&str]) -> std::process::Output {
    let cache = sim.dir.path().join("kubectl-cache");
    std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(sim.out.join(kubeconfig))
        .arg("--cache-dir")
        .arg(&cache)
        .args(args)
        .output()
        .expect("kubectl is on this machine's image")
}

/// SHA-256 of a file, hex.
pub fn digest_file(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0; 1 << 16];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex(&h.finalize())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Every regular file under `dir`, by base name, with its digest.
pub fn files_under(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((
                    e.file_name().to_string_lossy().into_owned(),
                    digest_file(&p),
                ));
            }
        }
    }
    out.sort();
    out
}

/// The real `packetcapture-api` binary, running against a simulation.
pub struct ApiProcess {
    child: std::process::Child,
    pub url: String,
    /// `http://127.0.0.1:{metrics port}`.
    pub metrics_url: String,
    pub http: reqwest::Client,
    /// The same, HTTP/1.1 only.
    pub http1: reqwest::Client,
    pub log: PathBuf,
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ApiProcess {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A line of `/proc/{pid}/status`, in KiB (`VmHWM`, `VmRSS`).
    pub fn status_kib(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/{}/status", self.pid()))
    }

    /// Where each open descriptor points.
    pub fn open_fds(&self) -> Vec<String> {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| std::fs::read_link(e.path()).ok())
                    .map(|p| p.display().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sends SIGTERM, as Kubernetes does on a rollout.
    pub fn terminate(&self) {
        let pid = rustix::process::Pid::from_raw(i32::try_from(self.pid()).unwrap()).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    }

    /// Waits up to `within` for the process to exit; its status, or `None` if it still runs.
    pub async fn exit_within(
        &mut self,
        within: std::time::Duration,
    ) -> Option<std::process::ExitStatus> {
        let t = std::time::Instant::now();
        while t.elapsed() < within {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        None
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary built next to this test (`make test` builds it first).
pub fn api_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join("packetcapture-api");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p packetcapture-api` (make test does)",
        bin.display()
    );
    bin
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The variables of the simulation's `env` file.
pub fn sim_env(sim: &Sim) -> Vec<(String, String)> {
    std::fs::read_to_string(sim.out.join("env"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            l.strip_prefix("export ")?
                .split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// Starts the API from the simulation's `env` (plus `extra`) and waits until it is healthy.
/// Its ports are free ones picked here; another process may take one before the API binds it
/// (tests run in parallel), so a start that fails with "Address already in use" is retried
/// on new ports.
pub async fn start_api(sim: &TestSim, extra: &[(&str, &str)]) -> ApiProcess {
    for _ in 0..5 {
        let mut api = spawn_api(sim, extra);
        for _ in 0..150 {
            if let Ok(r) = api.http.get(format!("{}/health", api.url)).send().await
                && r.status() == 200
            {
                return api;
            }
            if let Ok(Some(_)) = api.child.try_wait() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        if !api.log_text().contains("Address already in use") {
            panic!("the API did not become healthy:\n{}", api.log_text());
        }
    }
    panic!("the API found no free ports in five tries");
}

fn spawn_api(sim: &TestSim, extra: &[(&str, &str)]) -> ApiProcess {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let port = free_port();
    let metrics_port = free_port();
    let log = sim.dir.path().join(format!("api-{port}.log"));
    let file = std::fs::File::create(&log).unwrap();
    let child = std::process::Command::new(api_binary())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(sim_env(sim))
        .env("PACKETCAPTURE_API_PORT", port.to_string())
        .env("PACKETCAPTURE_API_METRICS_PORT", metrics_port.to_string())
        .env("PACKETCAPTURE_API_LOG_LEVEL", "debug")
        .envs(extra.iter().copied())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let ca =
        reqwest::Certificate::from_pem(&std::fs::read(sim.out.join("ca.crt")).unwrap()).unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only([ca.clone()])
        .build()
        .unwrap();
    let http1 = reqwest::Client::builder()
        .tls_certs_only([ca])
        .http1_only()
        .build()
        .unwrap();
    ApiProcess {
        child,
        url: format!("https://localhost:{port}"),
        metrics_url: format!("http://127.0.0.1:{metrics_port}"),
        http,
        http1,
        log,
    }
}

/// Zip entries: full entry name → SHA-256 of the contents, sorted.
/// The last entry, the `SHA256SUMS` manifest, must list every other entry's digest in order
/// (checked here) and is left out.
pub fn zip_digests(bytes: &[u8]) -> Vec<(String, String)> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut out = Vec::new();
    let mut manifest = None;
    let count = zip.len();
    for i in 0..count {
        let mut f = zip.by_index(i).unwrap();
        let mut data = Vec::new();
        f.read_to_end(&mut data).unwrap();
        let name = f.name().unwrap().into_owned();
        if i + 1 == count {
            assert_eq!(name, "SHA256SUMS", "the manifest is the last entry");
            manifest = Some(String::from_utf8(data).unwrap());
        } else {
            out.push((name, hex(&Sha256::digest(&data))));
        }
    }
    let listed: String = out.iter().map(|(n, d)| format!("{d}  {n}\n")).collect();
    assert_eq!(manifest.unwrap_or_default(), listed);
    out.sort();
    out
}

/// Fails unless every exec of `cluster` has ended within a second.
pub async fn assert_execs_end_within_a_second(cluster: &packetcapture_tests::cluster::Cluster) {
    let t = std::time::Instant::now();
    while cluster
        .running_execs
        .load(std::sync::atomic::Ordering::SeqCst)
        > 0
    {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(1),
            "an exec still runs a second after its client left"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// GET `path` from the API, with a bearer token if given.
pub async fn get(
    api: &ApiProcess,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    request(api, reqwest::Method::GET, path, token, headers).await
}

/// The same as [`get`], with HEAD.
pub async fn head(
    api: &ApiProcess,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    request(api, reqwest::Method::HEAD, path, token, headers).await
}

async fn request(
    api: &ApiProcess,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut r = api.http.request(method, format!("{}{path}", api.url));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.unwrap()
}

/// Status and body as text.
pub async fn text(r: reqwest::Response) -> (u16, String) {
    (
        r.status().as_u16(),
        String::from_utf8_lossy(&r.bytes().await.unwrap()).into_owned(),
    )
}

/// Every file of capture `ns/name` on every node of `cluster`, with digests, sorted.
/// As zip entries are named: a file name found on more than one node gets `{node}/` in front.
pub fn capture_dir(sim: &TestSim, cluster: &str, ns: &str, name: &str) -> Vec<(String, String)> {
    let mut per_node = Vec::new();
    for node in &sim.cluster(cluster).nodes {
        let dir = sim
            .node_dir(cluster, node)
            .join("var/log/calico/pcap")
            .join(ns)
            .join(name);
        for (file, digest) in files_under(&dir) {
            per_node.push((node.clone(), file, digest));
        }
    }
    let on_several = |file: &str| per_node.iter().filter(|(_, f, _)| f == file).count() > 1;
    let mut all: Vec<(String, String)> = per_node
        .iter()
        .map(|(node, file, digest)| {
            let entry = if on_several(file) {
                format!("{node}/{file}")
            } else {
                file.clone()
            };
            (entry, digest.clone())
        })
        .collect();
    all.sort();
    all
}

/// Whether the tests run as root (they may then mount, and change a file's owner).
pub fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}

/// `tshark -r FILE -T fields -e FIELD...` (FILE `-`: from `input`), with the display filter
/// `display` when not empty: per packet, its fields; and what tshark said on standard error
/// other than its warning about running as root. Fails the test when tshark fails.
pub fn tshark_fields(
    file: &str,
    input: std::process::Stdio,
    display: &str,
    fields: &[&str],
) -> (Vec<Vec<String>>, String) {
    let mut command = std::process::Command::new("tshark");
    command.args(["-r", file, "-T", "fields"]).stdin(input);
    if !display.is_empty() {
        command.args(["-Y", display]);
    }
    for field in fields {
        command.args(["-e", field]);
    }
    let out = command
        .output()
        .expect("tshark is installed (make tools installs it)");
    let complaint = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.contains("Running as user"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(out.status.success(), "tshark -r {file}: {complaint}");
    let rows = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| line.split('\t').map(str::to_owned).collect())
        .collect();
    (rows, complaint)
}

/// tshark's `frame.time_epoch` (`seconds.fraction`) in nanoseconds.
pub fn epoch_nanos(text: &str) -> u64 {
    let (secs, frac) = text.split_once('.').unwrap_or((text, "0"));
    let frac = format!("{frac:0<9}");
    secs.parse::<u64>().unwrap() * 1_000_000_000 + frac[..9].parse::<u64>().unwrap()
}

/// Runs `program` (a tool `make tools` installs), which must succeed; its standard output.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} is installed (make tools installs it): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
