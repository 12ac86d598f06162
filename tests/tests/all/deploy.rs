//! The deploy/ manifests: rendered by kubectl's kustomize, every object validated offline
//! against Kubernetes 1.33's schemas (`kubernetes-validate --strict`), the settings the
//! service depends on checked, and the Deployment's variables accepted by the real binary.

use std::path::Path;
use std::process::Command;

use serde_norway::Value;

use crate::support::*;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Renders a kustomization and validates every object; returns the objects.
fn render_and_validate(dir: &str) -> Vec<Value> {
    let out = Command::new("kubectl")
        .args(["kustomize"])
        .arg(repo().join(dir))
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(rendered.path(), &out.stdout).unwrap();
    let check = Command::new("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", "1.33.0", "--quiet"])
        .arg(rendered.path())
        .output()
        .expect("kubernetes-validate runs (pip install kubernetes-validate; .ci/run installs it)");
    assert!(
        check.status.success(),
        "{dir} does not validate against Kubernetes 1.33:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.split("\n---\n")
        .map(|doc| serde_norway::from_str::<Value>(doc).unwrap())
        .collect()
}

fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn env_of(deployment: &Value) -> Vec<(String, String)> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// `30s`, `2m` or a number of seconds, as the binary reads durations.
fn seconds(text: &str) -> u64 {
    if let Some(s) = text.strip_suffix('s') {
        s.parse().unwrap()
    } else if let Some(m) = text.strip_suffix('m') {
        m.parse::<u64>().unwrap() * 60
    } else {
        text.parse().unwrap()
    }
}

#[test]
fn the_base_renders_validates_and_runs_as_the_service_needs() {
    let objects = render_and_validate("deploy");
    let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing: {kinds:?}");
    }
    let d = object(&objects, "Deployment", "packetcapture-api");
    let pod = &d["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(pod["enableServiceLinks"], false);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 1001);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(c[probe]["httpGet"]["path"], "/health");
        assert_eq!(c[probe]["httpGet"]["scheme"], "HTTPS");
    }
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());
    let env = env_of(d);
    let var = |name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{name} not set"))
    };
    // The budget the service derives from the memory limit fits in it, as README says.
    let limit = c["resources"]["limits"]["memory"].as_str().unwrap();
    let mib: u64 = limit.strip_suffix("Mi").unwrap().parse().unwrap();
    let budget = packetcapture_domain::BudgetLimits::for_memory_limit(Some(mib << 20));
    assert!(
        budget.memory + packetcapture_domain::BudgetLimits::PROCESS_BASE < mib << 20,
        "{budget:?} within {limit}"
    );
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let said = format!(
        "{} MiB and {} node streams",
        budget.memory >> 20,
        budget.streams
    );
    assert!(readme.contains(&said), "README says the budget: {said}");
    let grace = seconds(&var("PACKETCAPTURE_API_SHUTDOWN_GRACE"));
    assert!(
        pod["terminationGracePeriodSeconds"].as_u64().unwrap() > grace,
        "the pod outlives the shutdown grace"
    );
    let mounts = c["volumeMounts"].as_sequence().unwrap();
    let mounted = |path: &str| {
        let m = mounts
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("nothing mounted at {path}"));
        pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == m["name"])
            .unwrap()
            .clone()
    };
    assert!(mounted(&var("PACKETCAPTURE_API_SPOOL_DIR"))["emptyDir"].is_mapping());
    let cert_dir = Path::new(&var("PACKETCAPTURE_API_HTTPS_CERT"))
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(mounted(&cert_dir)["secret"]["secretName"].is_string());

    let s = object(&objects, "Service", "packetcapture-api");
    let ports = s["spec"]["ports"].as_sequence().unwrap();
    let https = ports.iter().find(|p| p["name"] == "https").unwrap();
    assert_eq!(https["port"], 443);
    let container_port = |name: &str| {
        c["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["containerPort"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(
        container_port("https").to_string(),
        var("PACKETCAPTURE_API_PORT")
    );
    assert_eq!(
        container_port("metrics").to_string(),
        var("PACKETCAPTURE_API_METRICS_PORT")
    );
    assert_eq!(
        s["metadata"]["annotations"]["prometheus.io/port"],
        var("PACKETCAPTURE_API_METRICS_PORT")
    );
    assert_eq!(
        object(&objects, "Role", "packetcapture-api-exec")["metadata"]["namespace"],
        "tigera-fluentd"
    );

    // The real binary accepts every variable the Deployment sets: it gets as far as loading
    // the certificate (absent here), which is checked after the variables are read.
    let out = Command::new(api_binary())
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("PACKETCAPTURE_API_METRICS_PORT", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    // The certificate's own failure, not a variable it does not know (whose message would
    // also name PACKETCAPTURE_API_HTTPS_CERT, as its suggestion).
    assert!(
        stderr.starts_with(
            "packetcapture-api: PACKETCAPTURE_API_HTTPS_CERT: the server's TLS material cannot be used"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("no such setting"), "{stderr}");
}

#[test]
fn the_calico_node_overlay_moves_the_exec_role_and_names_calico_node() {
    let objects = render_and_validate("deploy/overlays/calico-node");
    for kind in ["Role", "RoleBinding"] {
        assert_eq!(
            object(&objects, kind, "packetcapture-api-exec")["metadata"]["namespace"],
            "calico-system"
        );
    }
    let env = env_of(object(&objects, "Deployment", "packetcapture-api"));
    for (name, value) in [
        ("PACKETCAPTURE_API_ENTRY_POD_NAMESPACE", "calico-system"),
        (
            "PACKETCAPTURE_API_ENTRY_POD_SELECTOR",
            "k8s-app=calico-node",
        ),
        ("PACKETCAPTURE_API_ENTRY_POD_CONTAINER", "calico-node"),
    ] {
        assert!(
            env.iter().any(|(k, v)| k == name && v == value),
            "{name}={value} missing: {env:?}"
        );
    }
}

/// `kubectl kustomize {dir}`, as text.
fn render(dir: &str) -> String {
    let out = Command::new("kubectl")
        .args(["kustomize"])
        .arg(repo().join(dir))
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The rendered manifests with the verbs of the `pods/exec` rule replaced.
fn with_exec_verbs(rendered: &str, verbs: &str) -> String {
    let changed = rendered.replace(
        "  - pods/exec\n  verbs:\n  - get\n  - create\n",
        &format!("  - pods/exec\n  verbs: {verbs}\n"),
    );
    assert_ne!(
        changed, rendered,
        "the rendered exec rule is where this test expects it"
    );
    changed
}

/// What jane gets for the default scenario's capture when the service runs with `rbac` (the
/// RBAC objects the cluster holds for it), on a cluster of Kubernetes 1.`minor`; and the log.
async fn download_with_service_rbac(
    rbac: &str,
    minor: u32,
    entry: Option<(&str, &str, &str)>,
) -> (u16, Vec<u8>, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("service-rbac.yaml");
    std::fs::write(&file, rbac).unwrap();
    let mut scenario = packetcapture_tests::Scenario::default_scenario();
    scenario.service_rbac = Some(file);
    scenario.kubernetes_minor = minor;
    let mut extra = Vec::new();
    if let Some((namespace, label, container)) = entry {
        let pods = &mut scenario.clusters[0].entry_pods;
        pods.namespace = namespace.into();
        pods.labels = [("k8s-app".to_owned(), label.to_owned())].into();
        pods.container = container.into();
        extra = vec![
            (
                "PACKETCAPTURE_API_ENTRY_POD_NAMESPACE",
                namespace.to_owned(),
            ),
            (
                "PACKETCAPTURE_API_ENTRY_POD_SELECTOR",
                format!("k8s-app={label}"),
            ),
            (
                "PACKETCAPTURE_API_ENTRY_POD_CONTAINER",
                container.to_owned(),
            ),
        ];
    }
    let sim = start(&scenario).await;
    let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let api = start_api(&sim, &extra).await;
    let r = get(
        &api,
        "/download/dev/web-traffic/files.zip",
        Some(&sim.token("jane")),
        &[],
    )
    .await;
    let status = r.status().as_u16();
    let body = r.bytes().await.unwrap().to_vec();
    if status == 200 {
        assert_eq!(
            zip_digests(&body),
            capture_dir(&sim, "cluster", "dev", "web-traffic")
        );
    }
    (status, body, api.log_text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_reads_node_files_with_exactly_the_shipped_rbac() {
    let base = render("deploy");
    // The shipped manifests, as kustomize renders them: on 1.33 and on 1.35 (where a WebSocket
    // exec also needs create), the download is whole.
    for minor in [33, 35] {
        let (status, body, log) = download_with_service_rbac(&base, minor, None).await;
        assert_eq!(
            status,
            200,
            "1.{minor}: {}\n{log}",
            String::from_utf8_lossy(&body)
        );
    }
    // Without get on pods/exec (the manifests before this fix): every read of node files is
    // refused, as the real kube-apiserver refused it.
    let (status, body, log) =
        download_with_service_rbac(&with_exec_verbs(&base, "[create]"), 33, None).await;
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
    assert!(
        log.contains("cannot get resource") && log.contains("pods/exec"),
        "{log}"
    );
    // Without create: fine on 1.33, refused on 1.35.
    let without_create = with_exec_verbs(&base, "[get]");
    let (status, _, _) = download_with_service_rbac(&without_create, 33, None).await;
    assert_eq!(status, 200);
    let (status, _, log) = download_with_service_rbac(&without_create, 35, None).await;
    assert_eq!(status, 502);
    assert!(
        log.contains("cannot create resource") && log.contains("pods/exec"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_calico_node_overlay_s_rbac_reads_calico_node_pods() {
    let overlay = render("deploy/overlays/calico-node");
    let calico_node = Some(("calico-system", "calico-node", "calico-node"));
    let (status, body, log) = download_with_service_rbac(&overlay, 33, calico_node).await;
    assert_eq!(status, 200, "{}\n{log}", String::from_utf8_lossy(&body));
    // The base's Role is in tigera-fluentd: it lets the service into nothing in calico-system.
    let (status, _, log) = download_with_service_rbac(&render("deploy"), 33, calico_node).await;
    assert_eq!(status, 502);
    assert!(
        log.contains("cannot list resource") && log.contains("calico-system"),
        "{log}"
    );
}
