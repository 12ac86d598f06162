//! TLS material from PEM files: certificate bundles and private keys, read with errors that
//! name the file; and [`HttpUrl`], the validated address of an HTTPS peer. The one loader used
//! by the HTTPS server, the Voltron client and the JWKS client.
//!
//! Boundary: reads files, builds nothing; each user turns the material into its own client or
//! server configuration.

use std::fmt;
use std::str::FromStr;

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A PEM file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot load the {what} from {path}")]
pub struct Error {
    /// `certificates` or `private key`.
    pub what: &'static str,
    /// The file.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Every certificate of a PEM bundle, in order; a file without one is an error.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let error = |source: Box<dyn std::error::Error + Send + Sync>| Error {
        what: "certificates",
        path: path.to_owned(),
        source,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(e.into()))?
        .collect::<Result<_, _>>()
        .map_err(|e| error(e.into()))?;
    if certs.is_empty() {
        return Err(error("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| Error {
        what: "private key",
        path: path.to_owned(),
        source: e.into(),
    })
}

/// An absolute `https://` or `http://` URL with a host, as configured (e.g. Voltron's
/// endpoint, Dex's JWKS). Deserializes from its text.
#[derive(Clone, Debug, PartialEq, Eq, serde_with::DeserializeFromStr)]
pub struct HttpUrl(url::Url);

impl HttpUrl {
    /// The URL.
    pub fn url(&self) -> &url::Url {
        &self.0
    }

    /// The URL as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl HttpUrl {
    /// A URL written in the code (a default): a literal that is not an http(s) URL with a
    /// host is a bug of this program, not of its input, and panics; each default is built by
    /// a unit test.
    #[track_caller]
    pub fn from_static(value: &'static str) -> Self {
        match Self::from_str(value) {
            Ok(url) => url,
            Err(e) => panic!("a URL literal in the code is invalid: {e}"),
        }
    }
}

impl FromStr for HttpUrl {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        let value = value.trim();
        let url = url::Url::parse(value).map_err(|e| format!("\"{value}\" is not a URL: {e}"))?;
        if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
            return Err(format!("\"{value}\" must be an http(s) URL with a host"));
        }
        Ok(Self(url))
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_bundle_and_a_key_load_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (cert, key, empty) = (
            dir.path().join("tls.crt"),
            dir.path().join("tls.key"),
            dir.path().join("empty.pem"),
        );
        let bundle = format!("{}{}", certified.cert.pem(), certified.cert.pem());
        std::fs::write(&cert, bundle).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        std::fs::write(&empty, "no pem here\n").unwrap();
        assert_eq!(certificates(&cert).unwrap().len(), 2);
        private_key(&key).unwrap();
        let e = certificates(&empty).unwrap_err();
        assert!(e.to_string().contains("empty.pem"), "{e}");
        let e = certificates(&dir.path().join("missing.crt")).unwrap_err();
        assert!(e.to_string().contains("missing.crt"), "{e}");
        let e = private_key(&cert).unwrap_err();
        assert!(e.to_string().contains("private key from"), "{e}");
    }

    #[test]
    fn only_http_urls_with_a_host_are_endpoints() {
        assert_eq!(
            "https://voltron:9443".parse::<HttpUrl>().unwrap().as_str(),
            "https://voltron:9443/"
        );
        for bad in ["localhost:9443", "ftp://x/keys", "https://", "not a url"] {
            assert!(bad.parse::<HttpUrl>().is_err(), "{bad}");
        }
    }
}
