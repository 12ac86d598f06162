//! Starts a whole simulation (API servers, Voltron) and writes what clients need into a folder.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use rustls::pki_types::pem::PemObject;

use crate::cluster::{Cluster, World};
use crate::dex::Dex;
use crate::http::{self, Server};
use crate::pki::Authority;
use crate::scenario::Scenario;
use crate::voltron::{self, Voltron};
use crate::{apiserver, pki};

/// A running simulation. Dropping it stops every server.
pub struct Sim {
    /// Users and clusters.
    pub world: Arc<World>,
    /// The output folder.
    pub out: PathBuf,
    /// Each cluster's API server address, in scenario order.
    pub api_servers: Vec<(String, SocketAddr)>,
    /// Voltron's address.
    pub voltron_addr: SocketAddr,
    /// Voltron's state (its request log).
    pub voltron: Arc<Voltron>,
    /// Dex (keys, token minting, rotation).
    pub dex: Arc<Dex>,
    /// Dex's address.
    pub dex_addr: SocketAddr,
    _servers: Vec<Server>,
    _live: crate::live::LiveWriter,
}

fn write(path: &Path, contents: impl AsRef<[u8]>) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, contents)
}

impl Sim {
    /// Starts `scenario`, writing node files and client files under `out`:
    /// `kubeconfig` (the service's account), `admin.kubeconfig` (the cluster's administrator,
    /// for kubectl), `ca.crt`, `voltron-ca.crt`, `dex-ca.crt`, `api.crt`, `api.key`, `env`, `tokens/{user}`,
    /// `kubeconfigs/{cluster}` (the service's account, straight to each cluster), `nodes/`,
    /// and `ready` last.
    pub async fn start(scenario: &Scenario, out: &Path) -> std::io::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        std::fs::create_dir_all(out)?;
        let out = out.canonicalize()?;
        // Traversable by anyone: the `runAsUid` knob runs execs as another user.
        std::fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        let _ = std::fs::remove_file(out.join("ready"));
        let cluster_ca = Authority::new("clusters");
        let voltron_ca = Authority::new("voltron");
        let api_cert = cluster_ca.server("kubernetes", &["kubernetes.default.svc"]);
        let service_cert =
            cluster_ca.server("tigera-manager", &["tigera-manager.tigera-manager.svc"]);
        let voltron_cert = voltron_ca.server("voltron", &["tigera-manager.tigera-manager.svc"]);
        let dex_ca = Authority::new("dex");
        let dex_cert = dex_ca.server("dex", &["tigera-dex.tigera-dex.svc.cluster.local"]);

        // Dex first: its tokens are known to the API servers (as with OIDC configured there).
        // Its `dexDown` switch lives in the local cluster's faults, which exist only once the
        // world is built below: `down` is filled then.
        let dex = Arc::new(Dex::new());
        let down = Arc::new(std::sync::Mutex::new(None::<Arc<World>>));
        let refuse = {
            let down = down.clone();
            Arc::new(move || {
                crate::cluster::lock(&down)
                    .as_ref()
                    .is_some_and(|w: &Arc<World>| w.local().faults().dex_down)
            }) as Arc<dyn Fn() -> bool + Send + Sync>
        };
        let d = dex.clone();
        let dex_server = http::serve(
            0,
            http::tls_config(&dex_cert),
            move |req, _| {
                let d = d.clone();
                async move { d.handle(req).await }
            },
            refuse,
        )
        .await?;
        let dex_addr = dex_server.addr;
        dex.set_issuer(format!("https://127.0.0.1:{}/dex", dex_addr.port()));
        let dex_tokens: BTreeMap<String, String> = scenario
            .users
            .iter()
            .filter(|u| u.kind == crate::scenario::UserKind::Dex)
            .map(|u| (u.name.clone(), dex.id_token(&u.name, &u.groups)))
            .collect();

        let world = Arc::new(World::build(scenario, &out, &dex_tokens)?);
        *crate::cluster::lock(&down) = Some(world.clone());
        let mut servers = vec![dex_server];
        let mut api_servers = Vec::new();
        let api_tls = http::tls_config(&api_cert);
        for cluster in &world.clusters {
            let (w, c) = (world.clone(), cluster.clone());
            let down = cluster.clone();
            let server = http::serve(
                0,
                api_tls.clone(),
                move |req, _| apiserver::handle(w.clone(), c.clone(), req),
                Arc::new(move || down.faults().api_server_down),
            )
            .await?;
            api_servers.push((cluster.name.clone(), server.addr));
            servers.push(server);
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in
            rustls::pki_types::CertificateDer::pem_slice_iter(cluster_ca.cert_pem.as_bytes())
                .flatten()
        {
            roots.add(cert).map_err(std::io::Error::other)?;
        }
        let mut client_tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
        client_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let voltron = Arc::new(Voltron {
            world: world.clone(),
            upstreams: api_servers.iter().skip(1).cloned().collect(),
            tls: Arc::new(client_tls),
            log: std::sync::Mutex::new(Vec::new()),
        });
        let v = voltron.clone();
        let local = world.local().clone();
        let voltron_server = http::serve(
            0,
            http::tls_config(&voltron_cert),
            move |req, _| voltron::handle(v.clone(), req),
            Arc::new(move || local.faults().voltron_down),
        )
        .await?;
        let voltron_addr = voltron_server.addr;
        servers.push(voltron_server);

        let world_clusters = world.clusters.clone();
        let sim = Self {
            world,
            out,
            api_servers,
            voltron_addr,
            voltron,
            dex,
            dex_addr,
            _servers: servers,
            _live: crate::live::LiveWriter::start(world_clusters),
        };
        write(&sim.out.join("dex-ca.crt"), &dex_ca.cert_pem)?;
        sim.write_files(&cluster_ca, &voltron_ca, &service_cert)?;
        Ok(sim)
    }

    fn write_files(
        &self,
        cluster_ca: &Authority,
        voltron_ca: &Authority,
        service: &pki::ServerCert,
    ) -> std::io::Result<()> {
        let out = &self.out;
        write(&out.join("ca.crt"), &cluster_ca.cert_pem)?;
        write(&out.join("voltron-ca.crt"), &voltron_ca.cert_pem)?;
        write(&out.join("api.crt"), &service.cert_pem)?;
        write(&out.join("api.key"), &service.key_pem)?;
        let service_token = self.service_token();
        for (i, (name, _)) in self.api_servers.iter().enumerate() {
            let kubeconfig = self.kubeconfig(i, &service_token);
            if i == 0 {
                write(&out.join("kubeconfig"), &kubeconfig)?;
                write(
                    &out.join("admin.kubeconfig"),
                    self.kubeconfig(i, &self.world.admin_token),
                )?;
            }
            write(&out.join("kubeconfigs").join(name), &kubeconfig)?;
        }
        for (user, token) in &self.world.tokens {
            write(&out.join("tokens").join(user), token)?;
        }
        let d = out.display();
        let env = format!(
            "export KUBECONFIG={d}/kubeconfig\n\
             export PACKETCAPTURE_API_HTTPS_CERT={d}/api.crt\n\
             export PACKETCAPTURE_API_HTTPS_KEY={d}/api.key\n\
             export PACKETCAPTURE_API_MULTI_CLUSTER_FORWARDING_CA={d}/voltron-ca.crt\n\
             export PACKETCAPTURE_API_MULTI_CLUSTER_FORWARDING_ENDPOINT=https://127.0.0.1:{}\n\
             export PACKETCAPTURE_API_HOST=127.0.0.1\n\
             export PACKETCAPTURE_API_DEX_ENABLED=true\n\
             export PACKETCAPTURE_API_DEX_ISSUER={issuer}\n\
             export PACKETCAPTURE_API_DEX_CLIENT_ID={client}\n\
             export PACKETCAPTURE_API_DEX_JWK_URL={issuer}/keys\n\
             export PACKETCAPTURE_API_DEX_CA_FILE={d}/dex-ca.crt\n",
            self.voltron_addr.port(),
            issuer = self.dex.issuer(),
            client = crate::dex::CLIENT_ID,
        );
        write(&out.join("env"), env)?;
        write(&out.join("ready"), "ready\n")
    }

    /// The service account's token.
    pub fn service_token(&self) -> String {
        self.world.service_token.clone()
    }

    /// The administrator's token (`system:masters`: allowed everything).
    pub fn admin_token(&self) -> String {
        self.world.admin_token.clone()
    }

    /// A kubeconfig for the `index`th cluster's API server with `token`.
    pub fn kubeconfig(&self, index: usize, token: &str) -> String {
        let ca = std::fs::read(self.out.join("ca.crt")).unwrap_or_default();
        let ca = base64::engine::general_purpose::STANDARD.encode(ca);
        let (name, addr) = &self.api_servers[index];
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority-data: {ca}\nusers:\n- name: sim-user\n  user:\n    token: {token}\ncontexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: sim-user\n    namespace: default\ncurrent-context: {name}\n",
            port = addr.port()
        )
    }

    /// A cluster by name.
    pub fn cluster(&self, name: &str) -> &Arc<Cluster> {
        self.world
            .cluster(name)
            .unwrap_or_else(|| panic!("no cluster {name} in the scenario"))
    }

    /// The local cluster.
    pub fn local(&self) -> &Arc<Cluster> {
        self.world.local()
    }

    /// A user's token.
    pub fn token(&self, user: &str) -> String {
        self.world
            .tokens
            .get(user)
            .cloned()
            .unwrap_or_else(|| panic!("no user {user} in the scenario"))
    }

    /// The folder holding a node's file system.
    pub fn node_dir(&self, cluster: &str, node: &str) -> PathBuf {
        self.cluster(cluster).node_root.join(node)
    }
}
