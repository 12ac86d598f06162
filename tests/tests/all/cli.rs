//! `kubectl packetcapture` end to end: found by `kubectl plugin list`, run through kubectl,
//! against the real service on the simulated cluster: ls, the zip, one node, the merge, a
//! refused user, a single file resumed after a cut, the progress bar in a pseudo-terminal, a
//! running capture followed into tshark and stopped with Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use packetcapture_tests::Scenario;

use crate::support::*;

const SCENARIO: &str = r#"
users:
  - name: jane
    token: jane-token
  - name: bob
    token: bob-token
  - name: ops
    token: ops-token
clusters:
  - name: cluster
    nodes: [node-1, node-2]
    captures:
      - namespace: dev
        name: mesh
        nodes:
          - {node: node-1, state: Finished, files: 2, size: 400000}
          - {node: node-2, state: Finished, files: 1, size: 300000}
    rbac:
      - subjects: [user:jane]
        verbs: [get]
        apiGroups: [projectcalico.org]
        resources: [packetcaptures/files]
        namespaces: [dev]
      - subjects: [user:ops]
        verbs: [get, delete]
        apiGroups: [projectcalico.org]
        resources: [packetcaptures/files]
        namespaces: [dev]
  - name: east
    nodes: [east-1]
    captures:
      - namespace: dev
        name: mesh
        nodes:
          - {node: east-1, state: Finished, files: 2, size: 100000}
    rbac:
      - subjects: [user:jane]
        verbs: [get]
        apiGroups: [projectcalico.org]
        resources: [packetcaptures/files]
        namespaces: [dev]
"#;

/// The directory of the built binaries (`make test` builds the plugin first).
fn bin_dir() -> PathBuf {
    let dir = api_binary().parent().unwrap().to_owned();
    assert!(
        dir.join("kubectl-packetcapture").exists(),
        "kubectl-packetcapture is missing: run `cargo build -p kubectl-packetcapture` (make test does)"
    );
    dir
}

fn path_with_plugin() -> String {
    format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

struct World {
    sim: TestSim,
    api: ApiProcess,
    work: tempfile::TempDir,
}

async fn world() -> World {
    world_of(SCENARIO).await
}

async fn world_of(scenario: &str) -> World {
    let sim = start(&Scenario::from_yaml(scenario).unwrap()).await;
    let api = start_api(&sim, &[]).await;
    World {
        sim,
        api,
        work: tempfile::tempdir().unwrap(),
    }
}

impl World {
    /// `kubectl-packetcapture --server … --certificate-authority … ARGS`, in the work dir.
    fn plugin(&self, args: &[&str]) -> Output {
        self.plugin_command(args).output().unwrap()
    }

    fn plugin_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin_dir().join("kubectl-packetcapture"));
        c.env_clear()
            .env("PATH", path_with_plugin())
            .env("HOME", self.work.path())
            .env("PACKETCAPTURE_SERVER", &self.api.url)
            .arg("--certificate-authority")
            .arg(self.sim.out.join("ca.crt"))
            .args(args)
            .current_dir(self.work.path());
        c
    }

    /// `kubectl ARGS` with the plugin on its PATH, run to its end.
    fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .args(args)
            .env("PATH", path_with_plugin())
            .env("HOME", self.work.path())
            .output()
            .unwrap()
    }

    /// dev/mesh's zip as the service serves it whole.
    async fn mesh_zip(&self) -> bytes::Bytes {
        get(
            &self.api,
            "/download/dev/mesh/files.zip",
            Some("jane-token"),
            &[],
        )
        .await
        .bytes()
        .await
        .unwrap()
    }

    fn file(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }
}

/// What `part` holds: some of `whole`'s first bytes, not all of them.
fn kept_start_of(part: &Path, whole: &[u8]) -> Vec<u8> {
    let kept = std::fs::read(part).unwrap();
    assert!(
        !kept.is_empty() && kept.len() < whole.len(),
        "{} of {} bytes kept",
        kept.len(),
        whole.len()
    );
    assert!(kept == whole[..kept.len()], "what was kept is the start");
    kept
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn node_file(sim: &TestSim, node: &str, name: &str) -> PathBuf {
    sim.node_dir("cluster", node)
        .join("var/log/calico/pcap/dev/mesh")
        .join(name)
}

fn names_on(sim: &TestSim, node: &str) -> Vec<String> {
    // None once the capture's directory is gone.
    let mut names: Vec<String> = std::fs::read_dir(node_file(sim, node, ""))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_finds_the_plugin_and_runs_it() {
    let w = world().await;
    let listed = w.kubectl(&["plugin", "list"]);
    let out = String::from_utf8_lossy(&listed.stdout);
    assert!(
        out.lines().any(|l| l.ends_with("/kubectl-packetcapture")),
        "kubectl plugin list: {out}{}",
        stderr(&listed)
    );
    let help = w.kubectl(&["packetcapture", "--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success(), "{}", stderr(&help));
    assert!(text.contains("Exit codes"), "{text}");
    // Through kubectl, with the token from --token.
    let ca = w.sim.out.join("ca.crt");
    let ls = w.kubectl(&[
        "packetcapture",
        "--token",
        "jane-token",
        "ls",
        "dev/mesh",
        "--server",
        &w.api.url,
        "--certificate-authority",
        ca.to_str().unwrap(),
    ]);
    assert!(ls.status.success(), "{}", stderr(&ls));
    let table = String::from_utf8_lossy(&ls.stdout);
    assert!(table.starts_with("NODE"), "{table}");
    for node in ["node-1", "node-2"] {
        for name in names_on(&w.sim, node) {
            let size = std::fs::metadata(node_file(&w.sim, node, &name))
                .unwrap()
                .len();
            assert!(
                table.lines().any(|l| l.starts_with(node)
                    && l.contains(&name)
                    && l.contains("Finished")
                    && l.contains(&size.to_string())),
                "{node} {name} {size} missing:\n{table}"
            );
        }
    }
    let bash = w.plugin(&["completion", "bash"]);
    assert!(bash.status.success());
    assert!(String::from_utf8_lossy(&bash.stdout).contains("complete -F"));
    let zsh = w.plugin(&["completion", "zsh"]);
    assert!(String::from_utf8_lossy(&zsh.stdout).starts_with("#compdef"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_saves_the_zip_one_node_and_the_merge_from_a_kubeconfig_user() {
    let w = world().await;
    // The token comes from the kubeconfig's exec credential plugin (read by kube-rs).
    let kubeconfig = w.file("kubeconfig");
    std::fs::write(
        &kubeconfig,
        r#"apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:1"}
users:
- name: jane
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: sh
      args: ["-c", "echo '{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{\"token\":\"jane-token\"}}'"]
      interactiveMode: Never
contexts:
- name: c
  context: {cluster: c, user: jane}
current-context: c
"#,
    )
    .unwrap();
    let kc = kubeconfig.to_str().unwrap();
    let whole = w.plugin(&["--kubeconfig", kc, "get", "dev/mesh"]);
    assert!(whole.status.success(), "{}", stderr(&whole));
    assert!(
        stderr(&whole).contains("saved dev_mesh.zip"),
        "a plain summary when not a terminal: {}",
        stderr(&whole)
    );
    assert!(!stderr(&whole).contains("ETA"));
    let zip = std::fs::read(w.file("dev_mesh.zip")).unwrap();
    assert_eq!(
        zip_digests(&zip),
        capture_dir(&w.sim, "cluster", "dev", "mesh")
    );
    assert!(!w.file("dev_mesh.zip.part").exists());

    let one = w.plugin(&[
        "--kubeconfig",
        kc,
        "get",
        "dev/mesh",
        "--node",
        "node-2",
        "-o",
        "node-2.zip",
    ]);
    assert!(one.status.success(), "{}", stderr(&one));
    let entries: Vec<String> = zip_digests(&std::fs::read(w.file("node-2.zip")).unwrap())
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(entries, names_on(&w.sim, "node-2"));

    let merged = w.plugin(&["--kubeconfig", kc, "get", "dev/mesh", "--merged"]);
    assert!(merged.status.success(), "{}", stderr(&merged));
    let packets: u64 = ["node-1", "node-2"]
        .iter()
        .flat_map(|n| names_on(&w.sim, n).into_iter().map(move |f| (*n, f)))
        .map(|(n, f)| {
            packetcapture_tests::pcap::count_packets(
                &std::fs::read(node_file(&w.sim, n, &f)).unwrap(),
            )
            .unwrap()
        })
        .sum();
    assert_eq!(
        packetcapture_tests::pcap::count_pcapng_packets(
            &std::fs::read(w.file("dev_mesh.pcapng")).unwrap()
        ),
        Some(packets)
    );

    let to_stdout = w.plugin(&["--token", "jane-token", "get", "dev/mesh", "-o", "-"]);
    assert!(to_stdout.status.success());
    assert_eq!(zip_digests(&to_stdout.stdout), zip_digests(&zip));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_user_gets_the_servers_words_and_a_documented_exit_code() {
    let w = world().await;
    let refused = w.plugin(&["--token", "bob-token", "get", "dev/mesh"]);
    assert_eq!(refused.status.code(), Some(4), "{}", stderr(&refused));
    assert!(
        stderr(&refused)
            .contains("bob is not authorized to get packetcaptures/files in namespace dev"),
        "{}",
        stderr(&refused)
    );
    assert!(!w.file("dev_mesh.zip").exists());
    assert!(!w.file("dev_mesh.zip.part").exists());
    let unknown = w.plugin(&["--token", "nobody", "ls", "dev/mesh"]);
    assert_eq!(unknown.status.code(), Some(3), "{}", stderr(&unknown));
    let missing = w.plugin(&["--token", "jane-token", "ls", "dev/nope"]);
    assert_eq!(missing.status.code(), Some(5), "{}", stderr(&missing));
    let no_rm = w.plugin(&["--token", "jane-token", "rm", "dev/mesh"]);
    assert_eq!(no_rm.status.code(), Some(4), "{}", stderr(&no_rm));
    // A server whose CA is not trusted: the error says how to trust it.
    let untrusted = Command::new(bin_dir().join("kubectl-packetcapture"))
        .env_clear()
        .env("HOME", w.work.path())
        .args([
            "--server",
            &w.api.url,
            "--token",
            "jane-token",
            "ls",
            "dev/mesh",
        ])
        .output()
        .unwrap();
    assert_eq!(untrusted.status.code(), Some(7), "{}", stderr(&untrusted));
    assert!(
        stderr(&untrusted).contains("--certificate-authority"),
        "{}",
        stderr(&untrusted)
    );
    let usage = w.plugin(&["--token", "jane-token", "get", "dev"]);
    assert_eq!(usage.status.code(), Some(2), "{}", stderr(&usage));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_file_cut_mid_transfer_resumes_to_the_exact_file() {
    let w = world().await;
    let name = names_on(&w.sim, "node-1").pop().unwrap();
    let original = std::fs::read(node_file(&w.sim, "node-1", &name)).unwrap();
    let target = format!("dev/mesh/node-1/{name}");
    // The node's stream is cut after 150 kB: the server aborts the transfer.
    w.sim
        .local()
        .set_faults(|f| f.exec_cut_after = Some(150_000));
    let cut = w.plugin(&["--token", "jane-token", "get", &target]);
    assert_eq!(cut.status.code(), Some(8), "{}", stderr(&cut));
    assert!(stderr(&cut).contains("run the same command again to resume"));
    assert!(!w.file(&name).exists(), "nothing that looks whole");
    let part = w.file(&format!("{name}.part"));
    let kept = kept_start_of(&part, &original);

    w.sim.local().set_faults(|f| f.exec_cut_after = None);
    let resumed = w.plugin(&["--token", "jane-token", "get", &target]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(
        stderr(&resumed).contains(&format!("at byte {}", kept.len())),
        "{}",
        stderr(&resumed)
    );
    assert_eq!(std::fs::read(w.file(&name)).unwrap(), original);
    assert!(!part.exists());
    assert!(!Path::new(&format!("{}.etag", part.display())).exists());
    assert!(
        w.api.log_text().contains("status=206"),
        "the second run asked for a range"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zip_cut_mid_transfer_resumes_to_the_exact_zip_and_a_changed_capture_starts_again() {
    let w = world().await;
    let whole = w.mesh_zip().await;
    // node-2's stream (the zip's second node) is cut after 250 kB, slowly, so node-1's files
    // are on their way first.
    let cut_node_2 = |f: &mut packetcapture_tests::scenario::Faults| {
        f.nodes.insert(
            "node-2".into(),
            packetcapture_tests::scenario::ExecFaults {
                exec_cut_after: Some(250_000),
                exec_bandwidth: Some(1_000_000),
                ..Default::default()
            },
        );
    };
    w.sim.local().set_faults(cut_node_2);
    let cut = w.plugin(&["--token", "jane-token", "get", "dev/mesh"]);
    assert_eq!(cut.status.code(), Some(8), "{}", stderr(&cut));
    assert!(stderr(&cut).contains("run the same command again to resume"));
    assert!(!w.file("dev_mesh.zip").exists(), "nothing that looks whole");
    let part = w.file("dev_mesh.zip.part");
    let kept = kept_start_of(&part, &whole);
    w.sim.local().set_faults(|f| f.nodes.clear());
    let resumed = w.plugin(&["--token", "jane-token", "get", "dev/mesh"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(
        stderr(&resumed).contains(&format!("at byte {}", kept.len())),
        "{}",
        stderr(&resumed)
    );
    assert!(
        std::fs::read(w.file("dev_mesh.zip")).unwrap() == whole,
        "the uncut zip"
    );
    assert!(!part.exists());
    // Cut again, then a file changes: the next run starts the zip again, with the new file.
    std::fs::remove_file(w.file("dev_mesh.zip")).unwrap();
    w.sim.local().set_faults(cut_node_2);
    let cut = w.plugin(&["--token", "jane-token", "get", "dev/mesh"]);
    assert_eq!(cut.status.code(), Some(8), "{}", stderr(&cut));
    w.sim.local().set_faults(|f| f.nodes.clear());
    let name = names_on(&w.sim, "node-2").pop().unwrap();
    let file = node_file(&w.sim, "node-2", &name);
    let mut data = std::fs::read(&file).unwrap();
    data.truncate(data.len() - 1000);
    std::fs::write(&file, data).unwrap();
    let restarted = w.plugin(&["--token", "jane-token", "get", "dev/mesh"]);
    assert!(restarted.status.success(), "{}", stderr(&restarted));
    assert!(
        stderr(&restarted).contains("changed since the partial download; starting again"),
        "{}",
        stderr(&restarted)
    );
    assert_eq!(
        zip_digests(&std::fs::read(w.file("dev_mesh.zip")).unwrap()),
        capture_dir(&w.sim, "cluster", "dev", "mesh")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_gets_a_progress_bar() {
    let w = world().await;
    // Slow enough that the bar draws a few times.
    w.sim
        .local()
        .set_faults(|f| f.exec_bandwidth = Some(600_000));
    let command = format!(
        "{} --server {} --certificate-authority {} --token jane-token get dev/mesh -o pty.zip",
        bin_dir().join("kubectl-packetcapture").display(),
        w.api.url,
        w.sim.out.join("ca.crt").display()
    );
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .env("PATH", path_with_plugin())
        .env("HOME", w.work.path())
        .env("TERM", "xterm")
        .current_dir(w.work.path())
        .output()
        .expect("script (util-linux) runs");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(screen.contains("ETA"), "{screen}");
    assert!(screen.contains("B/s"), "{screen}");
    assert!(screen.contains('='), "the bar fills: {screen}");
    assert!(screen.contains("saved pty.zip"), "{screen}");
    assert_eq!(
        zip_digests(&std::fs::read(w.file("pty.zip")).unwrap()),
        capture_dir(&w.sim, "cluster", "dev", "mesh")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_leaves_no_download_that_looks_whole_and_resumable_parts() {
    let w = world().await;
    w.sim
        .local()
        .set_faults(|f| f.exec_bandwidth = Some(100_000));
    let interrupt = |args: &[&str], watch: PathBuf| {
        let child = w
            .plugin_command(args)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Interrupted while bytes arrive (100 kB/s): the plugin gathers them before writing, so
        // the file is watched for its creation, then some bytes are let in.
        for _ in 0..100 {
            if std::fs::metadata(&watch).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        std::thread::sleep(std::time::Duration::from_millis(700));
        let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
        child.wait_with_output().unwrap()
    };
    let zip = interrupt(
        &["--token", "jane-token", "get", "dev/mesh"],
        w.file("dev_mesh.zip.part"),
    );
    assert_eq!(zip.status.code(), Some(130), "{}", stderr(&zip));
    assert!(stderr(&zip).contains("interrupted"), "{}", stderr(&zip));
    assert!(!w.file("dev_mesh.zip").exists());
    // The capture is finished: its zip has a strong ETag, so what arrived is kept to resume.
    let whole = w.mesh_zip().await;
    kept_start_of(&w.file("dev_mesh.zip.part"), &whole);
    assert!(w.file("dev_mesh.zip.part.etag").exists());

    let name = names_on(&w.sim, "node-2").pop().unwrap();
    let one = interrupt(
        &[
            "--token",
            "jane-token",
            "get",
            &format!("dev/mesh/node-2/{name}"),
        ],
        w.file(&format!("{name}.part")),
    );
    assert_eq!(one.status.code(), Some(130), "{}", stderr(&one));
    assert!(!w.file(&name).exists());
    // What arrived before Ctrl-C is on disk, kept for a resume.
    let whole = std::fs::read(node_file(&w.sim, "node-2", &name)).unwrap();
    kept_start_of(&w.file(&format!("{name}.part")), &whole);
}

/// The nanosecond timestamps of a classic pcap's whole records (little-endian, micro- or
/// nanoseconds).
fn timestamps(data: &[u8]) -> Vec<u64> {
    let nanos = data[..4] == 0xA1B2_3C4Du32.to_le_bytes();
    let mut at = 24;
    let mut out = Vec::new();
    while at + 16 <= data.len() {
        let field = |i: usize| u32::from_le_bytes(data[at + i..at + i + 4].try_into().unwrap());
        let incl = field(8) as usize;
        if at + 16 + incl > data.len() {
            break;
        }
        let frac = if nanos {
            u64::from(field(4))
        } else {
            u64::from(field(4)) * 1000
        };
        out.push(u64::from(field(0)) * 1_000_000_000 + frac);
        at += 16 + incl;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_takes_a_managed_cluster_a_window_and_a_filter_and_rm_deletes_the_files() {
    let w = world().await;

    // --cluster: east's own files, through Voltron.
    let east = w.plugin(&[
        "--token",
        "jane-token",
        "--cluster",
        "east",
        "get",
        "dev/mesh",
        "-o",
        "east.zip",
    ]);
    assert!(east.status.success(), "{}", stderr(&east));
    assert_eq!(
        zip_digests(&std::fs::read(w.file("east.zip")).unwrap()),
        capture_dir(&w.sim, "east", "dev", "mesh")
    );
    assert!(
        w.sim
            .voltron
            .requests()
            .iter()
            .any(|r| r.cluster_header.as_deref() == Some("east")),
        "the request went through Voltron"
    );

    // --since/--until: the merge holds exactly the packets of the window.
    let mut all: Vec<u64> = ["node-1", "node-2"]
        .iter()
        .flat_map(|n| names_on(&w.sim, n).into_iter().map(move |f| (*n, f)))
        .flat_map(|(n, f)| timestamps(&std::fs::read(node_file(&w.sim, n, &f)).unwrap()))
        .collect();
    all.sort_unstable();
    let (since, until) = (all[all.len() / 3], all[all.len() * 2 / 3]);
    let rfc = |ns: u64| {
        jiff::Timestamp::from_nanosecond(i128::from(ns))
            .unwrap()
            .to_string()
    };
    let window = w.plugin(&[
        "--token",
        "jane-token",
        "get",
        "dev/mesh",
        "--merged",
        "--since",
        &rfc(since),
        "--until",
        &rfc(until),
        "-o",
        "window.pcapng",
    ]);
    assert!(window.status.success(), "{}", stderr(&window));
    let want = all.iter().filter(|t| **t >= since && **t < until).count() as u64;
    assert!(want > 0 && want < all.len() as u64);
    assert_eq!(
        packetcapture_tests::pcap::count_pcapng_packets(
            &std::fs::read(w.file("window.pcapng")).unwrap()
        ),
        Some(want),
        "the packets from {} to {}",
        rfc(since),
        rfc(until)
    );

    // --filter: the server keeps what tcpdump keeps of the whole merge.
    let all = w.plugin(&[
        "--token",
        "jane-token",
        "get",
        "dev/mesh",
        "--merged",
        "-o",
        "all.pcapng",
    ]);
    assert!(all.status.success(), "{}", stderr(&all));
    let udp = w.plugin(&[
        "--token",
        "jane-token",
        "get",
        "dev/mesh",
        "--merged",
        "--filter",
        "udp port 53",
        "-o",
        "udp.pcapng",
    ]);
    assert!(udp.status.success(), "{}", stderr(&udp));
    let tcpdump = Command::new("tcpdump")
        .args([
            "-r",
            w.file("all.pcapng").to_str().unwrap(),
            "-nn",
            "udp port 53",
        ])
        .output()
        .expect("tcpdump is installed (make tools installs it)");
    let reference = String::from_utf8_lossy(&tcpdump.stdout).lines().count() as u64;
    assert!(reference > 0);
    assert_eq!(
        packetcapture_tests::pcap::count_pcapng_packets(
            &std::fs::read(w.file("udp.pcapng")).unwrap()
        ),
        Some(reference)
    );
    let zip_filter = w.plugin(&[
        "--token",
        "jane-token",
        "get",
        "dev/mesh",
        "--filter",
        "udp",
    ]);
    assert_eq!(zip_filter.status.code(), Some(2), "{}", stderr(&zip_filter));

    // rm by a user who may delete: exit 0, the files gone from every node, the listing empty.
    let rm = w.plugin(&["--token", "ops-token", "rm", "dev/mesh"]);
    assert!(rm.status.success(), "{}", stderr(&rm));
    assert!(names_on(&w.sim, "node-1").is_empty() && names_on(&w.sim, "node-2").is_empty());
    let ls = w.plugin(&["--token", "jane-token", "ls", "dev/mesh"]);
    assert!(ls.status.success(), "{}", stderr(&ls));
    let listed = String::from_utf8_lossy(&ls.stdout).into_owned();
    assert!(
        !listed.contains(".pcap"),
        "no file listed after rm: {listed}"
    );
    assert_eq!(
        capture_dir(&w.sim, "east", "dev", "mesh").len(),
        2,
        "the managed cluster's capture of the same name is untouched"
    );
}

/// A capture running on two nodes (3 streams at 50 packets/s, rotating every 0.7 s).
const LIVE: &str = r#"
users: [{name: jane, token: jane-token}]
clusters:
  - name: cluster
    nodes: [node-1, node-2]
    captures:
      - namespace: dev
        name: running
        live: {rate: 50, rotateMs: 700, finishMs: 60000}
        nodes:
          - {node: node-1, state: Capturing, files: 1, size: 24}
          - {node: node-2, state: Capturing, files: 1, size: 24, interfaces: 2}
    rbac:
      - {subjects: [user:jane], verbs: [get], apiGroups: [projectcalico.org], resources: [packetcaptures/files]}
"#;

/// What `tshark -r FILE` (or `-r -` from `input`) reads: packet count and interface names, or
/// its complaint.
fn tshark_read(input: std::process::Stdio, file: &str) -> (usize, Vec<String>, String) {
    let (rows, complaint) = tshark_fields(file, input, "", &["frame.interface_name"]);
    let mut interfaces: Vec<String> = rows.iter().map(|row| row[0].clone()).collect();
    interfaces.sort();
    interfaces.dedup();
    (rows.len(), interfaces, complaint)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_follow_pipes_a_running_capture_into_tshark_and_ctrl_c_saves_a_whole_file() {
    let w = world_of(LIVE).await;
    let live = w.sim.local().live("dev", "running").unwrap();

    // -o - into tshark, as into Wireshark: the capture finishes 2 s in, the pipe ends cleanly.
    let mut plugin = w
        .plugin_command(&[
            "--token",
            "jane-token",
            "get",
            "dev/running",
            "--merged",
            "--follow",
            "--lag",
            "300",
            "-o",
            "-",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pipe = plugin.stdout.take().unwrap();
    live.finish_in(std::time::Duration::from_millis(2000));
    let (packets, interfaces, complaint) = tshark_read(pipe.into(), "-");
    let done = plugin.wait_with_output().unwrap();
    assert!(done.status.success(), "{}", stderr(&done));
    assert!(
        stderr(&done).contains("dev/running ended"),
        "{}",
        stderr(&done)
    );
    assert!(complaint.trim().is_empty(), "tshark: {complaint}");
    assert!(packets >= 50, "{packets} packets followed");
    assert_eq!(interfaces.len(), 3, "every stream: {interfaces:?}");

    // --follow to a file, stopped by Ctrl-C: exit 0, the file whole (whole blocks only).
    let w = world_of(LIVE).await;
    let child = w
        .plugin_command(&[
            "--token",
            "jane-token",
            "get",
            "dev/running",
            "--merged",
            "--follow",
            "-o",
            "live.pcapng",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let part = w.file("live.pcapng.part");
    for _ in 0..100 {
        if std::fs::metadata(&part).is_ok_and(|m| m.len() > 2000) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let stopped = child.wait_with_output().unwrap();
    assert_eq!(stopped.status.code(), Some(0), "{}", stderr(&stopped));
    assert!(stderr(&stopped).contains("stopped"), "{}", stderr(&stopped));
    assert!(!part.exists());
    let saved = w.file("live.pcapng");
    let (packets, _, complaint) = tshark_read(std::process::Stdio::null(), saved.to_str().unwrap());
    assert!(complaint.trim().is_empty(), "tshark: {complaint}");
    assert!(packets > 0);
    let mut every_exec_ended = false;
    for _ in 0..100 {
        if w.sim
            .local()
            .running_execs
            .load(std::sync::atomic::Ordering::SeqCst)
            == 0
        {
            every_exec_ended = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(every_exec_ended, "no tail left on a node after Ctrl-C");

    // --follow is for the merge only.
    let refused = w.plugin(&["--token", "jane-token", "get", "dev/running", "--follow"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("needs --merged"),
        "{}",
        stderr(&refused)
    );
}
