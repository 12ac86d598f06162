//! The simulated API server against a real one. Every exchange recorded from kube-apiserver
//! v1.32 (`tests/realkube/transcripts.jsonl`, README beside it) is sent to the simulation as the
//! same identity, with the same RBAC, in the same order, and what matters in the answer is
//! compared: status code, the `Status` reason, code, message and details, the reviews' status,
//! the objects' status, list shapes, and for exec the subprotocol, the frames by channel and
//! size, stderr, the channel-3 status and the close frame. Then the service itself runs against
//! the recorded cluster and must send the simulation exactly the requests it sent the real
//! server (`service-requests.jsonl`): byte-exact paths and queries, the same headers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;
use packetcapture_tests::Scenario;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::*;

/// Exchanges the simulation does not reproduce, with why.
const NOT_REPRODUCED: &[(&str, &str)] = &[(
    "authn-calico-authenticationreview",
    "recorded on a plain kube-apiserver, which has no Calico API and refuses it; the simulation \
     is Calico Enterprise's, whose API server reviews every authenticated caller's own token",
)];

/// Parts of an exchange left uncompared, with why (the rest of the exchange is compared).
const RELAXED: &[(&str, &str, &str)] = &[
    (
        "tokenreview-forged",
        "status.error",
        "the simulation's tokens are opaque, not signed JWTs: a forged one fails as any token \
         that is no JWT does (that text is compared in tokenreview-not-a-jwt)",
    ),
    (
        "tokenreview-other-audience",
        "status.error",
        "the simulation's tokens carry no audience: one issued for another audience fails as \
         a token that is no JWT does",
    ),
];

fn realkube() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("realkube")
}

struct Exchange {
    name: String,
    request: Value,
    response: Value,
    /// The request body's `spec` as sent (tokens made real).
    sent_spec: Value,
}

fn exchanges() -> Vec<Exchange> {
    std::fs::read_to_string(realkube().join("transcripts.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            Exchange {
                name: v["name"].as_str().unwrap().to_owned(),
                request: v["request"].clone(),
                response: v["response"].clone(),
                sent_spec: Value::Null,
            }
        })
        .collect()
}

const JANE: &str = "system:serviceaccount:dev:jane";
const MTIME: u64 = 1_764_900_000;

/// Bytes that look like nothing in particular (the recording kept no file bytes).
fn filler(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Starts the recorded cluster: its scenario, the service's RBAC from `service_rbac` (the
/// project's deploy/base/rbac.yaml when `None`), its captures and node files.
async fn recorded_cluster(service_rbac: Option<PathBuf>) -> TestSim {
    let mut scenario =
        Scenario::from_yaml(&std::fs::read_to_string(realkube().join("scenario.yaml")).unwrap())
            .unwrap();
    scenario.service_rbac = service_rbac;
    let sim = start(&scenario).await;
    let files: &[(&str, &str, usize)] = &[
        ("node-1", "dev/cap/web-a1_cali1-1764900000000000.pcap", 1824),
        ("node-1", "dev/cap/web-a1_cali1.pcap", 924),
        ("node-2", "dev/cap/web-b2_cali2.pcap", 474),
        ("node-1", "dev/big/big_cali9.pcap", 3 * 1024 * 1024 + 12_345),
    ];
    for (i, (node, rel, len)) in files.iter().enumerate() {
        let path = sim
            .node_dir("cluster", node)
            .join("var/log/calico/pcap")
            .join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, filler(*len, i as u64)).unwrap();
        let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(MTIME);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
    }
    let entry = |node: &str, names: &[&str]| json!({"node": node, "directory": "/var/log/calico/pcap", "fileNames": names, "state": "Finished"});
    let cluster = sim.local();
    cluster.put_capture(json!({
        "apiVersion": "projectcalico.org/v3", "kind": "PacketCapture",
        "metadata": {"name": "cap", "namespace": "dev", "generation": 1},
        "spec": {"selector": "all()"},
        "status": {"files": [
            entry("node-1", &["web-a1_cali1-1764900000000000.pcap", "web-a1_cali1.pcap"]),
            entry("node-2", &["web-b2_cali2.pcap"]),
        ]},
    }));
    cluster.put_capture(json!({
        "apiVersion": "projectcalico.org/v3", "kind": "PacketCapture",
        "metadata": {"name": "secret", "namespace": "ops", "generation": 1},
        "spec": {"selector": "all()"},
    }));
    sim
}

/// The token an identity of the recording sends (`None`: no `Authorization` header).
fn token_of(sim: &TestSim, who: &str) -> Option<String> {
    match who {
        "packetcapture-api" => Some(sim.service_token()),
        "admin" => Some(sim.token("admin")),
        "none" => None,
        "forged" => Some(forged(&sim.token(JANE))),
        user => Some(sim.token(&format!(
            "system:serviceaccount:{}:{user}",
            if user == "carol" { "ops" } else { "dev" }
        ))),
    }
}

/// A token with its last four characters changed, as the recording's `forged`.
fn forged(token: &str) -> String {
    format!("{}zzzz", &token[..token.len() - 4])
}

/// The recorded body with tokens and volatile values made real for the simulation.
fn concrete(sim: &TestSim, value: &Value) -> Value {
    match value {
        Value::String(s) if s.starts_with("<token:") => {
            let inner = s.trim_start_matches("<token:").trim_end_matches('>');
            let user = inner.split([' ', ',']).next().unwrap_or_default();
            let token = token_of(sim, user).unwrap_or_default();
            Value::String(if inner == user {
                token
            } else {
                // "jane with its last 4 characters changed", "jane, audience other": tokens
                // nobody issued.
                forged(&token)
            })
        }
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                match (k.as_str(), v.as_str()) {
                    ("managedFields" | "creationTimestamp", Some(s))
                        if s.starts_with("<volatile") => {}
                    ("resourceVersion", Some("<volatile:stale>")) => {
                        out.insert(k.clone(), json!("1"));
                    }
                    ("resourceVersion", Some("<volatile:current>")) => {
                        let name = map["name"].as_str().unwrap_or_default();
                        let ns = map["namespace"].as_str().unwrap_or_default();
                        let rv =
                            stored(sim, ns, name).map(|o| o["metadata"]["resourceVersion"].clone());
                        out.insert(k.clone(), rv.unwrap_or(json!("12345")));
                    }
                    ("uid", Some("<volatile>")) if map.contains_key("namespace") => {
                        let name = map["name"].as_str().unwrap_or_default();
                        let ns = map["namespace"].as_str().unwrap_or_default();
                        // An object deleted since it was read keeps its old uid.
                        let uid = stored(sim, ns, name)
                            .map_or(json!("<volatile>"), |o| o["metadata"]["uid"].clone());
                        out.insert(k.clone(), uid);
                    }
                    _ => {
                        out.insert(k.clone(), concrete(sim, v));
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| concrete(sim, v)).collect()),
        other => other.clone(),
    }
}

fn stored(sim: &TestSim, ns: &str, name: &str) -> Option<Value> {
    packetcapture_tests::cluster::lock(&sim.local().captures)
        .get(&(ns.to_owned(), name.to_owned()))
        .cloned()
}

/// What came back: the status, headers and body; for an upgrade, what the WebSocket carried.
#[derive(Debug, Default)]
struct Answer {
    status: u16,
    content_type: Option<String>,
    body: Value,
    subprotocol: Option<String>,
    frames: Vec<(u8, usize)>,
    stdout: usize,
    stderr: String,
    exec_status: Option<Value>,
    close: Option<(u16, String)>,
}

async fn send(sim: &TestSim, e: &Exchange) -> Answer {
    let r = &e.request;
    let headers: BTreeMap<String, String> = r["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.to_lowercase(), v.as_str().unwrap().to_owned()))
        .collect();
    let token = token_of(sim, r["as"].as_str().unwrap());
    let url = format!(
        "https://127.0.0.1:{}{}",
        sim.api_servers[0].1.port(),
        r["path"].as_str().unwrap()
    );
    if headers.get("upgrade").is_some_and(|u| u == "websocket") {
        return exec(sim, &url, &headers, token).await;
    }
    let ca =
        reqwest::Certificate::from_pem(&std::fs::read(sim.out.join("ca.crt")).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    let method = reqwest::Method::from_bytes(r["method"].as_str().unwrap().as_bytes()).unwrap();
    let mut req = client.request(method, &url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (k, v) in &headers {
        req = req.header(k, v);
    }
    if !r["body"].is_null() {
        req = req.body(serde_json::to_vec(&concrete(sim, &r["body"])).unwrap());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = resp.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Answer {
        status,
        content_type,
        body,
        ..Answer::default()
    }
}

async fn exec(
    sim: &TestSim,
    url: &str,
    headers: &BTreeMap<String, String>,
    token: Option<String>,
) -> Answer {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_file_iter(sim.out.join("ca.crt")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(sim.api_servers[0].1)
        .await
        .unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let mut request = url
        .replace("https://", "wss://")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        headers["sec-websocket-protocol"].parse().unwrap(),
    );
    if let Some(t) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let mut answer = Answer::default();
    let mut ws = match tokio_tungstenite::client_async(request, stream).await {
        Ok((ws, resp)) => {
            answer.status = resp.status().as_u16();
            answer.subprotocol = resp
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().unwrap().to_owned());
            ws
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            answer.status = resp.status().as_u16();
            answer.content_type = resp
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned());
            answer.body = serde_json::from_slice(resp.body().as_deref().unwrap_or_default())
                .unwrap_or(Value::Null);
            return answer;
        }
        Err(e) => panic!("exec {url}: {e}"),
    };
    while let Some(msg) = ws.next().await {
        match msg.unwrap() {
            Message::Binary(data) => {
                let (channel, rest) = (data[0], &data[1..]);
                answer.frames.push((channel, rest.len()));
                match channel {
                    1 => answer.stdout += rest.len(),
                    2 => answer.stderr.push_str(&String::from_utf8_lossy(rest)),
                    3 => answer.exec_status = serde_json::from_slice(rest).ok(),
                    _ => {}
                }
            }
            Message::Close(frame) => {
                answer.close = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                break;
            }
            _ => {}
        }
    }
    answer
}

/// `actual` is `expected` where `<volatile>` in the expected text stands for anything.
fn same_text(expected: &str, actual: &str) -> bool {
    let parts: Vec<&str> = expected.split("<volatile>").collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return expected == actual;
    }
    if actual.len() < first.len() + last.len()
        || !actual.starts_with(first)
        || !actual.ends_with(last)
    {
        return false;
    }
    let mut rest = &actual[first.len()..actual.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// JSON equality where expected strings may hold `<volatile>`.
fn same(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::String(e), Value::String(a)) => same_text(e, a),
        (Value::Object(e), Value::Object(a)) => {
            e.len() == a.len() && e.iter().all(|(k, v)| a.get(k).is_some_and(|w| same(v, w)))
        }
        (Value::Array(e), Value::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(x, y)| same(x, y))
        }
        (e, a) => e == a,
    }
}

/// Differences between what the real server answered and the simulation's answer.
fn differences(e: &Exchange, a: &Answer) -> Vec<String> {
    let relaxed = |field: &str| RELAXED.iter().any(|(n, f, _)| *n == e.name && *f == field);
    let mut out = Vec::new();
    let mut check = |what: &str, expected: &Value, actual: &Value| {
        if !relaxed(what) && !same(expected, actual) {
            out.push(format!("{what}: real {expected}, simulated {actual}"));
        }
    };
    let want = &e.response;
    check("status code", &want["status"], &json!(a.status));
    let body = &want["body"];
    if let Some(ct) = want["headers"]["content-type"].as_str() {
        check("content-type", &json!(ct), &json!(a.content_type));
    }
    if want["status"] == 101 {
        check("subprotocol", &want["subprotocol"], &json!(a.subprotocol));
        check(
            "status frame",
            &body["status"],
            a.exec_status.as_ref().unwrap_or(&Value::Null),
        );
        check("stderr", &body["stderr"], &json!(a.stderr));
        check("stdout bytes", &body["stdout_bytes"], &json!(a.stdout));
        check(
            "first frame",
            &json!([1, 0]),
            &json!(a.frames.first().map(|(c, n)| [*c as usize, *n])),
        );
        check(
            "close code",
            &body["close"]["code"],
            &json!(a.close.as_ref().map(|c| c.0)),
        );
        check(
            "close reason",
            &body["close"]["reason"],
            &json!(a.close.as_ref().map(|c| &c.1)),
        );
        let channels = |frames: &mut dyn Iterator<Item = (u8, usize)>| {
            let mut order: Vec<u8> = Vec::new();
            for (c, _) in frames {
                if order.last() != Some(&c) && c != 2 {
                    order.push(c);
                }
            }
            order
        };
        let recorded: Vec<(u8, usize)> = body["frames"]
            .as_array()
            .map(|f| {
                f.iter()
                    .map(|p| {
                        (
                            p[0].as_u64().unwrap() as u8,
                            p[1].as_u64().unwrap() as usize,
                        )
                    })
                    .collect()
            })
            .unwrap_or_else(|| {
                body["frames_rle"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|p| {
                        std::iter::repeat_n(
                            (
                                p[0].as_u64().unwrap() as u8,
                                p[1].as_u64().unwrap() as usize,
                            ),
                            p[2].as_u64().unwrap() as usize,
                        )
                    })
                    .collect()
            });
        check(
            "channel order (stdout, then the status; stderr anywhere)",
            &json!(channels(&mut recorded.iter().copied())),
            &json!(channels(&mut a.frames.iter().copied())),
        );
        let stdout_frames = |frames: &[(u8, usize)]| -> Vec<usize> {
            frames
                .iter()
                .filter(|(c, n)| *c == 1 && *n > 0)
                .map(|(_, n)| *n)
                .collect()
        };
        let (real, sim) = (stdout_frames(&recorded), stdout_frames(&a.frames));
        check(
            "largest stdout frame",
            &json!(real.iter().max()),
            &json!(sim.iter().max()),
        );
        // Frame sizes follow the command's writes, which vary from run to run: the count
        // must be of the same order of magnitude.
        if real.len() > 3 && !(sim.len() * 3 >= real.len() && sim.len() <= real.len() * 3) {
            out.push(format!(
                "stdout frames: real {} frames, simulated {} (not within a factor of 3)",
                real.len(),
                sim.len()
            ));
        }
        return out;
    }
    match body["kind"].as_str() {
        Some("Status") => {
            for field in ["status", "reason", "code", "message", "details"] {
                check(field, &body[field], &a.body[field]);
            }
        }
        Some("TokenReview") => {
            for field in ["authenticated", "error", "audiences"] {
                check(
                    &format!("status.{field}"),
                    &body["status"][field],
                    &a.body["status"][field],
                );
            }
            let user = &body["status"]["user"];
            for field in ["username", "uid", "groups", "extra"] {
                check(
                    &format!("status.user.{field}"),
                    &user[field],
                    &a.body["status"]["user"][field],
                );
            }
            // The review echoes the token it was given.
            check("spec", &e.sent_spec, &a.body["spec"]);
        }
        Some("SubjectAccessReview" | "SelfSubjectAccessReview" | "SelfSubjectReview") => {
            check("kind", &body["kind"], &a.body["kind"]);
            check("status", &body["status"], &a.body["status"]);
        }
        Some("PacketCapture") => {
            check("status", &body["status"], &a.body["status"]);
            check("spec", &body["spec"], &a.body["spec"]);
            check(
                "name",
                &body["metadata"]["name"],
                &a.body["metadata"]["name"],
            );
        }
        Some(kind) if kind.ends_with("List") => {
            check("kind", &body["kind"], &a.body["kind"]);
            let names = |v: &Value| {
                json!(v["items"].as_array().map(|items| {
                    items
                        .iter()
                        .map(|i| json!([i["metadata"]["name"], i["spec"]["nodeName"]]))
                        .collect::<Vec<_>>()
                }))
            };
            check("items", &names(body), &names(&a.body));
            check(
                "metadata.continue present",
                &json!(body["metadata"].get("continue").is_some()),
                &json!(a.body["metadata"].get("continue").is_some()),
            );
        }
        _ => check("body", body, &a.body),
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulated_api_server_answers_every_recorded_exchange_as_kube_apiserver_did() {
    let sim = recorded_cluster(Some(realkube().join("rbac-as-recorded.yaml"))).await;
    let mut report = Vec::new();
    let mut compared = 0;
    for e in exchanges() {
        if NOT_REPRODUCED.iter().any(|(n, _)| *n == e.name) {
            continue;
        }
        // The recording's three changes of the cluster, at the same places.
        match e.name.as_str() {
            "exec-tar-dir" => sim
                .local()
                .apply_rbac(
                    "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: exec-get, namespace: tigera-fluentd}\n\
                     rules: [{apiGroups: [\"\"], resources: [pods/exec], verbs: [get]}]\n---\n\
                     apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: exec-get, namespace: tigera-fluentd}\n\
                     roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: exec-get}\n\
                     subjects: [{kind: ServiceAccount, name: packetcapture-api, namespace: packetcapture}]\n",
                )
                .unwrap(),
            "exec-rm" => {
                let scratch = sim
                    .node_dir("cluster", "node-1")
                    .join("var/log/calico/pcap/dev/scratch");
                std::fs::create_dir_all(&scratch).unwrap();
                std::fs::write(scratch.join("x.pcap"), b"x").unwrap();
            }
            "exec-kubelet-stopped" => sim.local().set_faults(|f| f.kubelet_down = vec!["node-2".into()]),
            "exec-tar-node-2" => sim.local().set_faults(|f| f.kubelet_down.clear()),
            _ => {}
        }
        let mut e = e;
        e.sent_spec = concrete(&sim, &e.request["body"]["spec"]);
        let answer = send(&sim, &e).await;
        compared += 1;
        for d in differences(&e, &answer) {
            report.push(format!("{}: {d}", e.name));
        }
    }
    assert!(compared >= 85, "{compared} exchanges compared");
    assert!(
        report.is_empty(),
        "the simulation differs from kube-apiserver:\n{}",
        report.join("\n")
    );
    // The recorded rm removed what it named, and nothing else.
    assert!(
        !sim.node_dir("cluster", "node-1")
            .join("var/log/calico/pcap/dev/scratch")
            .exists()
    );
    assert!(
        sim.node_dir("cluster", "node-1")
            .join("var/log/calico/pcap/dev/cap")
            .exists()
    );
}

/// The recorded requests as the service sends them since the zip of a finished capture is
/// planned (recorded before): each node's directory is listed first (the `find` exec the
/// recording has for `GET /files`, same form), and its `tar` names the listed files, in name
/// order, instead of the directory.
fn planned_zip(recorded: Vec<Value>, sim: &TestSim) -> Vec<Value> {
    let exec_of = |r: &Value, program: &str| {
        r["path"].as_str().unwrap().contains("/exec?")
            && r["path"]
                .as_str()
                .unwrap()
                .contains(&format!("&command={program}&"))
    };
    let pod = |r: &Value| {
        let path = r["path"].as_str().unwrap();
        path[..path.find("/exec?").unwrap()].to_owned()
    };
    let mut out = Vec::new();
    for r in &recorded {
        if !exec_of(r, "tar") {
            out.push(r.clone());
            continue;
        }
        let listing = recorded
            .iter()
            .find(|l| exec_of(l, "find") && pod(l) == pod(r))
            .expect("the recording lists every node");
        out.push(listing.clone());
        let node = sim
            .local()
            .pods()
            .iter()
            .find(|p| {
                pod(r).ends_with(&format!(
                    "/pods/{}",
                    p["metadata"]["name"].as_str().unwrap()
                ))
            })
            .and_then(|p| p["spec"]["nodeName"].as_str().map(str::to_owned))
            .expect("the tar's pod is an entry pod");
        let dir = "var%2Flog%2Fcalico%2Fpcap%2Fdev%2Fcap";
        let mut names: Vec<String> = std::fs::read_dir(
            sim.node_dir("cluster", &node)
                .join("var/log/calico/pcap/dev/cap"),
        )
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
        names.sort();
        let path = r["path"].as_str().unwrap();
        let named: String = names
            .iter()
            .map(|n| {
                format!(
                    "&command={dir}%2F{}",
                    n.replace('.', "%2E").replace("%2E", ".")
                )
            })
            .collect();
        let mut tar = r.clone();
        tar["path"] = Value::String(format!(
            "{}{named}",
            path.strip_suffix(&format!("&command={dir}")).unwrap()
        ));
        out.push(tar);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_sends_the_simulation_what_it_sent_the_real_server() {
    let sim = recorded_cluster(None).await;
    // Read before the calls: the last one removes the files the planned zip names.
    let recorded: Vec<Value> = std::fs::read_to_string(realkube().join("service-requests.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let recorded = planned_zip(recorded, &sim);
    let api = start_api(&sim, &[]).await;
    let jane = sim.token(JANE);
    let carol = sim.token("system:serviceaccount:ops:carol");
    let bob = sim.token("system:serviceaccount:dev:bob");
    /// Method, path, token, headers, the status the real server's run answered.
    type Call<'a> = (
        reqwest::Method,
        &'a str,
        String,
        Vec<(&'a str, &'a str)>,
        u16,
    );
    let calls: Vec<Call> = vec![
        (
            reqwest::Method::GET,
            "/files/dev/cap",
            jane.clone(),
            vec![],
            200,
        ),
        (
            reqwest::Method::GET,
            "/download/dev/cap/files.zip",
            jane.clone(),
            vec![],
            200,
        ),
        (
            reqwest::Method::GET,
            "/files/dev/cap/node-1/web-a1_cali1.pcap",
            jane.clone(),
            vec![("range", "bytes=24-1023")],
            206,
        ),
        (
            reqwest::Method::GET,
            "/download/dev/cap/files.zip",
            bob,
            vec![],
            403,
        ),
        (
            reqwest::Method::GET,
            "/download/dev/cap/files.zip",
            forged(&jane),
            vec![],
            401,
        ),
        (
            reqwest::Method::GET,
            "/download/dev/missing/files.zip",
            jane.clone(),
            vec![],
            404,
        ),
        (
            reqwest::Method::GET,
            "/files/dev/cap",
            carol,
            vec![("impersonate-user", JANE)],
            200,
        ),
        (reqwest::Method::DELETE, "/files/dev/cap", jane, vec![], 204),
    ];
    for (method, path, token, headers, status) in calls {
        let mut r = api
            .http
            .request(method.clone(), format!("{}{path}", api.url))
            .bearer_auth(token);
        for (k, v) in headers {
            r = r.header(k, v);
        }
        let resp = r.send().await.unwrap();
        let got = resp.status().as_u16();
        let body = resp.bytes().await.unwrap();
        assert_eq!(
            got,
            status,
            "{method} {path}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    // The two nodes are read at once, so requests of one call may come in either order:
    // compare them sorted, each with its headers.
    let noise = [
        "authorization",
        "host",
        "content-length",
        "sec-websocket-key",
    ];
    let mut real: Vec<(String, String, Vec<String>)> = recorded
        .iter()
        .map(|r| {
            let mut names: Vec<String> = r["headers"]
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.to_lowercase())
                .filter(|k| !noise.contains(&k.as_str()))
                .collect();
            names.sort();
            (
                r["method"].as_str().unwrap().to_owned(),
                r["path"].as_str().unwrap().to_owned(),
                names,
            )
        })
        .collect();
    let mut seen: Vec<(String, String, Vec<String>)> = sim
        .local()
        .requests()
        .iter()
        .map(|r| {
            let mut names: Vec<String> = r
                .headers
                .iter()
                .map(|(k, _)| k.clone())
                .filter(|k| !noise.contains(&k.as_str()))
                .collect();
            names.sort();
            names.dedup();
            (r.method.clone(), r.uri.clone(), names)
        })
        .collect();
    real.sort();
    seen.sort();
    assert_eq!(seen.len(), real.len(), "request count: {seen:#?}");
    for (s, r) in seen.iter().zip(&real) {
        assert_eq!(s, r);
    }
    // The exec upgrade offers what kube-rs offers, and bodies are JSON.
    for r in sim.local().requests() {
        for (name, value) in &r.headers {
            match name.as_str() {
                "sec-websocket-protocol" => {
                    assert_eq!(value, "v5.channel.k8s.io, v4.channel.k8s.io")
                }
                "content-type" => assert_eq!(value, "application/json"),
                _ => {}
            }
        }
    }
}
