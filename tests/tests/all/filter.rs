//! `merged.pcapng?filter=`: the service's filtered merge holds exactly the packets Debian's
//! `tcpdump -r` keeps from the unfiltered merge, in the same order, for expressions over
//! hosts, nets, port ranges, TCP flags, IPv6, VLANs, ICMP, boolean operators and lengths (on
//! truncated packets too); a malformed expression is 400 in libpcap's words.

use std::path::Path;

use packetcapture_tests::Scenario;

use crate::support::*;

const SCENARIO: &str = r#"
users:
  - name: jane
    token: jane-token
clusters:
  - name: cluster
    nodes: [node-1, node-2]
    captures:
      - namespace: dev
        name: mixed
        nodes:
          - {node: node-1, state: Finished, files: 1, size: 1000}
          - {node: node-2, state: Finished, files: 1, size: 1000}
    rbac:
      - subjects: [user:jane]
        verbs: [get]
        apiGroups: [projectcalico.org]
        resources: [packetcaptures/files]
        namespaces: [dev]
"#;

/// A small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One Ethernet frame of a kind chosen by `rng`: IPv4 TCP (flags, ports, hosts), UDP (DNS and
/// not), ICMP, IPv6 TCP/UDP/ICMPv6, VLAN-tagged IPv4, ARP.
fn frame(rng: &mut Rng) -> Vec<u8> {
    let hosts = [
        [10, 0, 3, 7],
        [10, 96, 0, 10],
        [10, 96, 4, 2],
        [192, 168, 1, 5],
    ];
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    let kind = rng.below(10);
    let vlan = kind == 9;
    if vlan {
        let vid: u16 = if rng.below(2) == 0 { 42 } else { 7 };
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&vid.to_be_bytes());
    }
    let payload = vec![0xab; rng.below(1200) as usize];
    let ports = [53u16, 80, 5000, 5432, 5500, 5501, 8080, 40000];
    let sport = ports[rng.below(ports.len() as u64) as usize];
    let dport = ports[rng.below(ports.len() as u64) as usize];
    match kind {
        // IPv6: TCP, UDP or ICMPv6.
        6 | 7 => {
            f.extend_from_slice(&[0x86, 0xdd]);
            let next = [6u8, 17, 58][rng.below(3) as usize];
            let l4 = l4(next, sport, dport, rng, &payload);
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            f.extend_from_slice(&[next, 64]);
            f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            f.extend_from_slice(&l4);
        }
        // ARP.
        8 => {
            f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
            f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]);
            f.extend_from_slice(&hosts[0]);
            f.extend_from_slice(&[0; 6]);
            f.extend_from_slice(&hosts[1]);
        }
        // IPv4 (tagged or not): TCP, UDP or ICMP.
        _ => {
            f.extend_from_slice(&[0x08, 0x00]);
            let proto = [6u8, 6, 17, 1][rng.below(4) as usize];
            let l4 = l4(proto, sport, dport, rng, &payload);
            let src = hosts[rng.below(4) as usize];
            let dst = hosts[rng.below(4) as usize];
            let mut ip = vec![0x45, 0];
            ip.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
            ip.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
            ip.extend_from_slice(&src);
            ip.extend_from_slice(&dst);
            f.extend_from_slice(&ip);
            f.extend_from_slice(&l4);
        }
    }
    f
}

/// A transport header (TCP with random flags, UDP, ICMP or ICMPv6 echo) and the payload.
fn l4(proto: u8, sport: u16, dport: u16, rng: &mut Rng, payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    match proto {
        6 => {
            h.extend_from_slice(&sport.to_be_bytes());
            h.extend_from_slice(&dport.to_be_bytes());
            h.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50]);
            // FIN, SYN, RST, PSH, ACK in any mix.
            h.push((rng.below(32)) as u8);
            h.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
        }
        17 => {
            h.extend_from_slice(&sport.to_be_bytes());
            h.extend_from_slice(&dport.to_be_bytes());
            h.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            h.extend_from_slice(&[0, 0]);
        }
        _ => {
            // ICMP / ICMPv6 echo request.
            let kind = if proto == 58 { 128 } else { 8 };
            h.extend_from_slice(&[kind, 0, 0, 0, 0, 1, 0, 1]);
        }
    }
    h.extend_from_slice(payload);
    h
}

/// A classic pcap (microseconds, Ethernet) of `n` frames from `seed`, starting at `start`
/// seconds; every seventh frame longer than 96 bytes is captured truncated to 96.
fn traffic(seed: u64, n: usize, start: u32) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&262_144u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    let (mut secs, mut micros) = (start, 0u32);
    for i in 0..n {
        let f = frame(&mut rng);
        micros += 1 + rng.below(3000) as u32;
        if micros >= 1_000_000 {
            secs += 1;
            micros -= 1_000_000;
        }
        let captured = if i % 7 == 0 { f.len().min(96) } else { f.len() };
        out.extend_from_slice(&secs.to_le_bytes());
        out.extend_from_slice(&micros.to_le_bytes());
        out.extend_from_slice(&(captured as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&f[..captured]);
    }
    out
}

/// Every packet of a capture file as tcpdump prints it: time, headers and bytes in hex.
fn tcpdump_text(file: &Path) -> String {
    run(
        "tcpdump",
        &["-r", file.to_str().unwrap(), "-nn", "-tt", "-x", "-v"],
    )
}

async fn save(api: &ApiProcess, path: &str, to: &Path) -> u16 {
    let r = get(api, path, Some("jane-token"), &[]).await;
    let status = r.status().as_u16();
    std::fs::write(to, r.bytes().await.unwrap()).unwrap();
    status
}

const EXPRESSIONS: [&str; 15] = [
    "host 10.0.3.7",
    "net 10.96.0.0/16",
    "tcp portrange 5000-5500",
    "tcp[tcpflags] & (tcp-syn|tcp-fin) != 0",
    "ip6",
    "vlan",
    "vlan 42 and tcp",
    "icmp",
    "icmp6",
    "udp and not port 53",
    "host 10.0.3.7 and (tcp port 5432 or udp)",
    "greater 800",
    "len <= 100",
    "arp or (ip6 and tcp)",
    "not ip and not ip6",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_merge_keeps_exactly_what_tcpdump_keeps() {
    let sim = start(&Scenario::from_yaml(SCENARIO).unwrap()).await;
    for (i, node) in ["node-1", "node-2"].iter().enumerate() {
        let dir = sim
            .node_dir("cluster", node)
            .join("var/log/calico/pcap/dev/mixed");
        let file = std::fs::read_dir(&dir).unwrap().flatten().next().unwrap();
        std::fs::write(
            file.path(),
            traffic(0x9e37_79b9 + i as u64, 1500, 1_700_000_000),
        )
        .unwrap();
    }
    let api = start_api(&sim, &[("PACKETCAPTURE_API_LOG_LEVEL", "info")]).await;
    let work = sim.dir.path();
    let whole = work.join("whole.pcapng");
    assert_eq!(
        save(&api, "/download/dev/mixed/merged.pcapng", &whole).await,
        200
    );
    let total = tcpdump_text(&whole).matches("0x0000:").count();
    for (n, expression) in EXPRESSIONS.iter().enumerate() {
        let reference = work.join(format!("reference-{n}.pcap"));
        run(
            "tcpdump",
            &[
                "-r",
                whole.to_str().unwrap(),
                "-w",
                reference.to_str().unwrap(),
                expression,
            ],
        );
        let filtered = work.join(format!("filtered-{n}.pcapng"));
        let query: String = url::form_urlencoded::byte_serialize(expression.as_bytes()).collect();
        let status = save(
            &api,
            &format!("/download/dev/mixed/merged.pcapng?filter={query}"),
            &filtered,
        )
        .await;
        assert_eq!(status, 200, "{expression}");
        let (want, got) = (tcpdump_text(&reference), tcpdump_text(&filtered));
        let kept = want.matches("0x0000:").count();
        assert!(
            kept > 0 && kept < total,
            "{expression}: keeps {kept} of {total}: the traffic does not tell"
        );
        assert!(
            got == want,
            "{expression}: the service kept {} packets, tcpdump {kept}",
            got.matches("0x0000:").count()
        );
    }
    let log = api.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("filtered merge") && l.contains(&format!("packets_read={total}"))),
        "the log says what a filtered merge read and kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_filter_is_400_in_libpcap_s_words_and_the_zip_takes_none() {
    let sim = start(&Scenario::from_yaml(SCENARIO).unwrap()).await;
    let api = start_api(&sim, &[]).await;
    let ask = |query: String| {
        let api = &api;
        async move {
            text(
                get(
                    api,
                    &format!("/download/dev/mixed/merged.pcapng?{query}"),
                    Some("jane-token"),
                    &[],
                )
                .await,
            )
            .await
        }
    };
    assert_eq!(
        ask("filter=host%2010.0.3.7%20and".into()).await,
        (400, "can't parse filter expression: syntax error\n".into())
    );
    assert_eq!(
        ask("filter=port%2099999".into()).await,
        (400, "illegal port number 99999 > 65535\n".into())
    );
    let long = "tcp%20or%20".repeat(700) + "udp";
    let (status, body) = ask(format!("filter={long}")).await;
    assert_eq!(status, 400);
    assert!(body.contains("more than 4096"), "{body}");
    let (status, body) = text(
        get(
            &api,
            "/download/dev/mixed/files.zip?filter=tcp",
            Some("jane-token"),
            &[],
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("filter"), "{body}");
    // A filter that keeps nothing: no content.
    let (status, _) = ask("filter=tcp%20port%201".into()).await;
    assert_eq!(status, 204);
}
