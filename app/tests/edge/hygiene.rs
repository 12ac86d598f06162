//! The HTTPS server against hostile or unlucky clients: stalled and oversized heads, idle
//! connections, the connection cap, a graceful stop, and certificate rotation.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use packetcapture_api::server::{self, Options, Running};
use packetcapture_domain::testing::StaticRouter;
use packetcapture_domain::{
    CaptureDir, ClusterPorts, EntryPoint, FileFetcher, FileInfo, FileSet, FileSlice, NodeName,
    Result, TarStream,
};
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::client::TlsStream;

use crate::support::*;
use crate::tls::{Tls, client, self_signed, start_with};

fn options(header_timeout: Duration) -> Options {
    Options {
        header_timeout,
        max_connections: 2_000,
        shutdown_grace: Duration::from_secs(30),
        tls_reload_interval: Duration::from_millis(100),
    }
}

/// A TLS connection to the server, trusting `ca_pem`, offering HTTP/1.1 only.
async fn connect(running: &Running, ca_pem: &str) -> io::Result<TlsStream<tokio::net::TcpStream>> {
    connect_alpn(running, ca_pem, b"http/1.1").await
}

async fn connect_alpn(
    running: &Running,
    ca_pem: &str,
    alpn: &[u8],
) -> io::Result<TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(running.addr).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
}

/// Reads until the server closes the connection (or `deadline` passes: then `false`).
async fn closed_by(
    stream: &mut TlsStream<tokio::net::TcpStream>,
    deadline: tokio::time::Instant,
) -> bool {
    let mut buf = vec![0u8; 4096];
    tokio::time::timeout_at(deadline, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

fn url(running: &Running, path: &str) -> String {
    format!("https://localhost:{}{path}", running.addr.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_heads_do_not_starve_health_or_downloads_and_are_closed_at_the_header_timeout() {
    server::raise_descriptor_limit();
    let tls = self_signed();
    let running = start_with(
        &tls,
        edge(&local_cluster()),
        options(Duration::from_secs(3)),
    )
    .await;
    let mut stalled = Vec::new();
    for _ in 0..300 {
        let mut s = connect(&running, &tls.ca_pem).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
            .await
            .unwrap();
        s.flush().await.unwrap();
        stalled.push(s);
    }
    let client = reqwest::Client::builder()
        .tls_certs_only([tls.ca.clone()])
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let health = client.get(url(&running, "/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let download = client
        .get(url(&running, "/download/dev/done/files.zip"))
        .bearer_auth("jane-token")
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 200);
    assert_eq!(entries(&download.bytes().await.unwrap()).len(), 2);
    let mut closed = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for s in &mut stalled {
        if closed_by(s, deadline).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 300, "every stalled connection is closed");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_and_a_busy_one_is_not() {
    let tls = self_signed();
    let running = start_with(
        &tls,
        edge(&local_cluster()),
        options(Duration::from_secs(1)),
    )
    .await;
    let mut s = connect(&running, &tls.ca_pem).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert!(
        closed_by(&mut s, tokio::time::Instant::now() + Duration::from_secs(5)).await,
        "an idle keep-alive connection is closed"
    );

    // An HTTP/2 connection idle after its request is closed too (its pings do not count).
    let h2 = connect_alpn(&running, &tls.ca_pem, b"h2").await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(h2),
    )
    .await
    .unwrap();
    let connection = tokio::spawn(connection);
    let request = http::Request::get(url(&running, "/health"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    assert_eq!(sender.send_request(request).await.unwrap().status(), 200);
    tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .expect("an idle HTTP/2 connection is closed")
        .unwrap()
        .unwrap();

    // A request that takes longer than the timeout is not cut for it.
    let ports = ClusterPorts {
        fetcher: Arc::new(SlowFetcher::new(Duration::from_millis(400), 6, false)),
        ..ports_of(&local_cluster())
    };
    let running2 = start_with(
        &tls,
        edge_with(Arc::new(StaticRouter::local(ports))),
        options(Duration::from_secs(1)),
    )
    .await;
    let body = client(&tls, true)
        .get(url(&running2, "/download/dev/live/files.zip"))
        .bearer_auth("jane-token")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .expect("a download slower than the header timeout completes");
    let files = entries(&body);
    assert_eq!(files.len(), 2);
    assert!(
        files
            .iter()
            .all(|(_, data, _)| data.len() == SlowFetcher::SIZE)
    );
    running.stop().await;
    running2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_head_is_answered_431_and_a_large_one_served() {
    let tls = self_signed();
    let running = start_with(
        &tls,
        edge(&local_cluster()),
        options(Duration::from_secs(30)),
    )
    .await;
    for http1 in [true, false] {
        let c = client(&tls, http1);
        let large = c
            .get(url(&running, "/health"))
            .header("x-large", "a".repeat(16 * 1024))
            .send()
            .await
            .unwrap();
        assert_eq!(large.status(), 200, "http1: {http1}");
        let huge = c
            .get(url(&running, "/health"))
            .header("x-huge", "a".repeat(100 * 1024))
            .send()
            .await;
        let huge = huge.unwrap();
        assert_eq!(huge.status(), 431, "http1: {http1}");
        if !http1 {
            // HTTP/1.1's 431 comes from hyper before the head is parsed; HTTP/2's from the
            // edge, which says why.
            assert!(huge.text().await.unwrap().contains("larger than 64 KiB"));
        }
    }
    // Past twice the limit an HTTP/2 header list is refused by h2 itself, before the edge
    // sees it: a bare 431 on that stream (no body), and the connection serves on.
    let c = client(&tls, false);
    let refused = c
        .get(url(&running, "/health"))
        .header("x-huge", "a".repeat(200 * 1024))
        .send()
        .await
        .expect("h2 answers an oversized header list on its stream");
    assert_eq!(refused.status(), 431);
    assert_eq!(refused.bytes().await.unwrap().len(), 0, "h2's own answer");
    let same_connection = c.get(url(&running, "/health")).send().await.unwrap();
    assert_eq!(same_connection.status(), 200);
    let health = client(&tls, false)
        .get(url(&running, "/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let mut s = connect(&running, &tls.ca_pem).await.unwrap();
    let head = format!(
        "GET /health HTTP/1.1\r\nHost: localhost\r\nX-Huge: {}\r\n\r\n",
        "b".repeat(100 * 1024)
    );
    let _ = s.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 431"),
        "{:?}",
        String::from_utf8_lossy(&answer[..answer.len().min(200)])
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_new_connections_wait_their_turn() {
    let tls = self_signed();
    let running = start_with(
        &tls,
        edge(&local_cluster()),
        Options {
            max_connections: 3,
            ..options(Duration::from_secs(30))
        },
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect(&running, &tls.ca_pem).await.unwrap());
    }
    let c = client(&tls, true);
    let waiting = tokio::spawn({
        let url = url(&running, "/health");
        async move { c.get(url).send().await.map(|r| r.status()) }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "the fourth connection waits");
    drop(held.pop());
    let status = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("served once a connection closes")
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_lets_a_download_in_flight_finish_whole_and_refuses_new_connections() {
    let tls = self_signed();
    for http1 in [true, false] {
        let ports = ClusterPorts {
            fetcher: Arc::new(SlowFetcher::new(Duration::from_millis(200), 8, false)),
            ..ports_of(&local_cluster())
        };
        let running = start_with(
            &tls,
            edge_with(Arc::new(StaticRouter::local(ports))),
            options(Duration::from_secs(30)),
        )
        .await;
        let addr = running.addr;
        let mut response = client(&tls, http1)
            .get(url(&running, "/download/dev/live/files.zip"))
            .bearer_auth("jane-token")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let mut received = response.chunk().await.unwrap().unwrap().to_vec();
        let stopping = tokio::spawn(running.stop());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "a stopping server accepts no new connection"
        );
        while let Some(chunk) = response.chunk().await.expect("the download is not cut") {
            received.extend_from_slice(&chunk);
        }
        let files = entries(&received);
        assert_eq!(files.len(), 2, "http1: {http1}");
        assert!(
            files
                .iter()
                .all(|(_, data, _)| data.len() == SlowFetcher::SIZE)
        );
        let report = stopping.await.unwrap();
        assert_eq!(
            report,
            server::StopReport { drained: 1, cut: 0 },
            "http1: {http1}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_outlives_the_shutdown_grace_is_cut_never_completed() {
    let tls = self_signed();
    for http1 in [true, false] {
        let ports = ClusterPorts {
            fetcher: Arc::new(SlowFetcher::new(Duration::from_millis(100), 2, true)),
            ..ports_of(&local_cluster())
        };
        let running = start_with(
            &tls,
            edge_with(Arc::new(StaticRouter::local(ports))),
            Options {
                shutdown_grace: Duration::from_millis(500),
                ..options(Duration::from_secs(30))
            },
        )
        .await;
        let mut response = client(&tls, http1)
            .get(url(&running, "/download/dev/live/files.zip"))
            .bearer_auth("jane-token")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let mut received = Vec::new();
        let stopping = tokio::spawn(running.stop());
        let failure = loop {
            match response.chunk().await {
                Ok(Some(chunk)) => received.extend_from_slice(&chunk),
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        assert!(failure.is_some(), "a cut download fails (http1: {http1})");
        assert!(zip::ZipArchive::new(io::Cursor::new(received)).is_err());
        let report = stopping.await.unwrap();
        assert_eq!(
            report,
            server::StopReport { drained: 0, cut: 1 },
            "http1: {http1}"
        );
    }
}

/// Writes a new self-signed pair the way a Kubernetes secret volume updates: the files are
/// links through `..data`, which is swapped to a new directory at once.
fn rotate(volume: &std::path::Path, cert_pem: &str, key_pem: &str, generation: u32) {
    let dir = volume.join(format!("..gen{generation}"));
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("tls.crt"), cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), key_pem).unwrap();
    let link = volume.join("..data_tmp");
    std::os::unix::fs::symlink(dir.file_name().unwrap(), &link).unwrap();
    std::fs::rename(&link, volume.join("..data")).unwrap();
}

fn pair() -> (String, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    (certified.cert.pem(), certified.signing_key.serialize_pem())
}

async fn health_trusting(running: &Running, ca_pem: &str) -> bool {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap();
    let c = reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    c.get(url(running, "/health")).send().await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_to_new_connections_and_a_bad_one_is_refused() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let volume = tempfile::tempdir().unwrap();
    let (first_cert, first_key) = pair();
    rotate(volume.path(), &first_cert, &first_key, 1);
    for name in ["tls.crt", "tls.key"] {
        std::os::unix::fs::symlink(format!("..data/{name}"), volume.path().join(name)).unwrap();
    }
    let tls = Tls {
        ca: reqwest::Certificate::from_pem(first_cert.as_bytes()).unwrap(),
        ca_pem: first_cert.clone(),
        cert: volume.path().join("tls.crt"),
        key: volume.path().join("tls.key"),
        _dir: None,
    };
    let running = start_with(
        &tls,
        edge(&local_cluster()),
        options(Duration::from_secs(30)),
    )
    .await;
    assert!(health_trusting(&running, &first_cert).await);

    let (second_cert, second_key) = pair();
    rotate(volume.path(), &second_cert, &second_key, 2);
    let mut rotated = false;
    for _ in 0..50 {
        if health_trusting(&running, &second_cert).await {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rotated, "new connections get the new certificate");
    assert!(!health_trusting(&running, &first_cert).await);

    // A pair that does not belong together, then one that does not parse: both are refused
    // and the second certificate stays.
    let (third_cert, _) = pair();
    rotate(volume.path(), &third_cert, &second_key, 3);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(health_trusting(&running, &second_cert).await);
    rotate(volume.path(), "not a certificate", "nor a key", 4);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(health_trusting(&running, &second_cert).await);
    running.stop().await;
}

/// Serves one `SIZE`-byte file per node in `chunks` pieces, `pause` apart; with `stall` it
/// never sends the last piece.
struct SlowFetcher {
    pause: Duration,
    chunks: usize,
    stall: bool,
}

impl SlowFetcher {
    const SIZE: usize = 400_000;

    fn new(pause: Duration, chunks: usize, stall: bool) -> Self {
        Self {
            pause,
            chunks,
            stall,
        }
    }
}

#[async_trait]
impl FileFetcher for SlowFetcher {
    async fn entry_point(&self, node: &NodeName) -> Result<EntryPoint> {
        Ok(EntryPoint {
            node: node.clone(),
            handle: "pod".into(),
        })
    }

    async fn archive(&self, _: &EntryPoint, _: &FileSet) -> Result<TarStream> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(Self::SIZE as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, "slow.pcap", &[9u8; Self::SIZE][..])
            .unwrap();
        let tar = bytes::Bytes::from(b.into_inner().unwrap());
        let piece = tar.len().div_ceil(self.chunks);
        let mut pieces: Vec<bytes::Bytes> = tar.chunks(piece).map(|c| tar.slice_ref(c)).collect();
        if self.stall {
            pieces.pop();
        }
        let pause = self.pause;
        let end = if self.stall {
            futures_util::stream::pending().left_stream()
        } else {
            futures_util::stream::empty().right_stream()
        };
        let stream = futures_util::stream::iter(pieces)
            .then(move |piece| async move {
                tokio::time::sleep(pause).await;
                Ok::<_, packetcapture_domain::Error>(piece)
            })
            .chain(end);
        Ok(Box::pin(stream))
    }

    async fn read_file(&self, _: &EntryPoint, _: &FileSlice) -> Result<TarStream> {
        Err(packetcapture_domain::Error::Internal(
            "this test fetcher serves archives only".into(),
        ))
    }

    async fn list(&self, _: &EntryPoint, _: &CaptureDir) -> Result<Vec<FileInfo>> {
        Ok(Vec::new())
    }

    async fn remove(&self, _: &EntryPoint, _: &CaptureDir) -> Result<()> {
        Ok(())
    }
}
