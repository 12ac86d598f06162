//! The HTTPS server on loopback: TLS, both HTTP versions, and aborts after the status line.

use std::io;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::StreamExt;
use packetcapture_api::http::routes;
use packetcapture_api::server::{self, Running};
use packetcapture_domain::testing::StaticRouter;
use packetcapture_domain::{
    CaptureDir, ClusterPorts, EntryPoint, FileFetcher, FileInfo, FileSet, FileSlice, NodeName,
    Result, TarStream,
};

use crate::support::*;

/// A self-signed serving pair in a temporary directory.
pub struct Tls {
    pub _dir: Option<tempfile::TempDir>,
    pub ca: reqwest::Certificate,
    pub ca_pem: String,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

pub fn self_signed() -> Tls {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let ca = reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap();
    Tls {
        _dir: Some(dir),
        ca,
        ca_pem: certified.cert.pem(),
        cert,
        key,
    }
}

pub async fn start(tls: &Tls, edge: packetcapture_api::http::Edge) -> Running {
    start_with(tls, edge, server::Options::default()).await
}

pub async fn start_with(
    tls: &Tls,
    edge: packetcapture_api::http::Edge,
    options: server::Options,
) -> Running {
    let certs = server::certs::Reloading::new(&tls.cert, &tls.key).unwrap();
    server::serve(Some([127, 0, 0, 1].into()), 0, certs, routes(edge), options)
        .await
        .unwrap()
}

pub fn client(tls: &Tls, http1: bool) -> reqwest::Client {
    let b = reqwest::Client::builder().tls_certs_only([tls.ca.clone()]);
    let b = if http1 { b.http1_only() } else { b };
    b.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_served_over_https_with_http2_and_http1() {
    let tls = self_signed();
    let running = start(&tls, edge(&local_cluster())).await;
    let url = format!("https://localhost:{}/health", running.addr.port());
    for http1 in [false, true] {
        let r = client(&tls, http1).get(&url).send().await.unwrap();
        assert_eq!(
            r.version(),
            if http1 {
                reqwest::Version::HTTP_11
            } else {
                reqwest::Version::HTTP_2
            }
        );
        assert_eq!(r.text().await.unwrap(), r#"{"status":"Ok"}"#);
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_download_arrives_chunked_over_https() {
    let tls = self_signed();
    let running = start(&tls, edge(&local_cluster())).await;
    let url = format!(
        "https://localhost:{}/download/dev/live/files.zip",
        running.addr.port()
    );
    let r = client(&tls, true)
        .get(&url)
        .bearer_auth("jane-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers().get("transfer-encoding").unwrap(), "chunked");
    let bytes = r.bytes().await.unwrap();
    assert_eq!(entries(&bytes).len(), 2);
    running.stop().await;
}

struct CuttingFetcher;

#[async_trait]
impl FileFetcher for CuttingFetcher {
    async fn entry_point(&self, node: &NodeName) -> Result<EntryPoint> {
        Ok(EntryPoint {
            node: node.clone(),
            handle: "pod".into(),
        })
    }
    async fn archive(&self, _: &EntryPoint, _: &FileSet) -> Result<TarStream> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(300_000);
        h.set_mode(0o644);
        b.append_data(&mut h, "first.pcap", &[1u8; 300_000][..])
            .unwrap();
        let mut h2 = tar::Header::new_gnu();
        h2.set_size(300_000);
        h2.set_mode(0o644);
        b.append_data(&mut h2, "second.pcap", &[2u8; 300_000][..])
            .unwrap();
        let mut bytes = b.into_inner().unwrap();
        bytes.truncate(512 + 300_000 + 512 + 100_000);
        // The exec fails a moment after its last byte, as a cut connection does: by then the
        // first file is on its way, so the status line has been sent.
        let failure = futures_util::stream::once(async {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            Err(packetcapture_domain::Error::NodeFiles {
                node: "node-1".into(),
                action: "reading files",
                source: "command terminated with exit code 137".into(),
            })
        });
        let chunks = futures_util::stream::iter([Ok(bytes::Bytes::from(bytes))]).chain(failure);
        Ok(Box::pin(chunks))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_after_the_status_line_aborts_the_transfer_and_leaves_no_whole_zip() {
    let tls = self_signed();
    let local = local_cluster();
    let ports = ClusterPorts {
        fetcher: Arc::new(CuttingFetcher),
        ..ports_of(&local)
    };
    let running = start(&tls, edge_with(Arc::new(StaticRouter::local(ports)))).await;
    let url = format!(
        "https://localhost:{}/download/dev/live/files.zip",
        running.addr.port()
    );
    for http1 in [true, false] {
        let mut r = client(&tls, http1)
            .get(&url)
            .bearer_auth("jane-token")
            .send()
            .await
            .expect("the status line comes before the failure");
        assert_eq!(r.status(), 200);
        let mut received = Vec::new();
        let failure = loop {
            match r.chunk().await {
                Ok(Some(chunk)) => received.extend_from_slice(&chunk),
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        assert!(
            failure.is_some(),
            "the transfer must fail (http1: {http1}), got {} bytes cleanly",
            received.len()
        );
        assert!(
            zip::ZipArchive::new(io::Cursor::new(received)).is_err(),
            "what arrived must not open as a zip"
        );
    }
    running.stop().await;
}

#[test]
fn a_missing_certificate_is_an_error_naming_the_file() {
    let err = server::certs::Reloading::new(
        "/nonexistent/tls.crt".as_ref(),
        "/nonexistent/tls.key".as_ref(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/tls.crt"), "{err}");
}

/// The negotiated cipher suite of a TLS connection to `running` by a client offering `suites`
/// in that order.
async fn negotiated(
    tls: &Tls,
    running: &Running,
    suites: Vec<rustls::SupportedCipherSuite>,
) -> rustls::CipherSuite {
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: suites,
        ..rustls::crypto::ring::default_provider()
    };
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(tls.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    stream
        .get_ref()
        .1
        .negotiated_cipher_suite()
        .unwrap()
        .suite()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_chooses_aes_128_gcm_over_a_client_preferring_aes_256() {
    use rustls::crypto::ring::cipher_suite::{TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384};
    let tls = self_signed();
    let running = start(&tls, edge(&local_cluster())).await;
    // curl and OpenSSL list AES-256 first; the server's order wins (fewer rounds per byte).
    let both = vec![TLS13_AES_256_GCM_SHA384, TLS13_AES_128_GCM_SHA256];
    assert_eq!(
        negotiated(&tls, &running, both).await,
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
    );
    // A client that offers only AES-256 still connects.
    assert_eq!(
        negotiated(&tls, &running, vec![TLS13_AES_256_GCM_SHA384]).await,
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384
    );
    running.stop().await;
}
