//! The serving certificate, reloaded when its files change (a Kubernetes secret update): new
//! connections get the new pair; a pair that cannot be used is logged and the old one kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Loads a certificate chain and its key from PEM files, checking that they belong together.
pub fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, packetcapture_tls::Error> {
    let certs = packetcapture_tls::certificates(cert)?;
    let key_der = packetcapture_tls::private_key(key)?;
    let unusable = |source: rustls::Error| packetcapture_tls::Error {
        what: "private key",
        path: key.to_owned(),
        source: source.into(),
    };
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(certs, key_der, &provider).map_err(unusable)
}

/// The certificate new connections get, swapped when the files change.
#[derive(Debug)]
pub struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, Stamp)>,
}

/// What the files held when loaded. Their bytes are compared, not their modification times
/// and sizes: a rotated pair written within the clock's granularity, with keys of the same
/// length, looks unchanged by metadata (it did on a CI file system). The files are a few
/// kilobytes, read once per check.
type Stamp = Option<[Vec<u8>; 2]>;

fn stamp(cert: &Path, key: &Path) -> Stamp {
    Some([std::fs::read(cert).ok()?, std::fs::read(key).ok()?])
}

impl Reloading {
    /// Loads the pair now (an error names the file at fault).
    pub fn new(cert: &Path, key: &Path) -> Result<Arc<Self>, packetcapture_tls::Error> {
        let loaded = load(cert, key)?;
        Ok(Arc::new(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new((Arc::new(loaded), stamp(cert, key))),
        }))
    }

    /// Loads the pair again if its files changed; keeps the old one if the new cannot be used.
    pub fn reload_if_changed(&self) {
        let now = stamp(&self.cert, &self.key);
        let unchanged = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1
            == now;
        if unchanged || now.is_none() {
            return;
        }
        match load(&self.cert, &self.key) {
            Ok(loaded) => {
                *self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = (Arc::new(loaded), now);
                tracing::info!(cert = %self.cert.display(), "serving certificate reloaded");
            }
            Err(e) => {
                // Remember the stamp, so a broken pair is reported once, not at every check.
                self.current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .1 = now;
                tracing::error!(error = %packetcapture_domain::error::chain(&e), "the new serving certificate cannot be used; keeping the previous one");
            }
        }
    }

    /// Checks the files every `interval` until the returned task is dropped or aborted.
    pub fn watch(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let check = this.clone();
                let _ = tokio::task::spawn_blocking(move || check.reload_if_changed()).await;
            }
        })
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0
                .clone(),
        )
    }
}
