//! The node's TLS client configuration, one piece of code for every outgoing TLS connection:
//! the stub host's `net` (`wss://`, `https://` of stubs), the node's key-set and cross-domain
//! fetches, and the client of external application services (`https://` service URLs). rustls
//! with the ring provider, the web PKI roots (webpki-roots), HTTP/1.1 by ALPN. Extra roots (a
//! private CA, a test certificate: [`load_roots`]) are added only for application services
//! (the operator's `appservices` extra roots); stubs' `net` and the key fetches use the web PKI
//! roots alone.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Why extra roots could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RootsError {
    #[error("{path}: {problem}")]
    File { path: String, problem: String },
}

/// A client configuration trusting the web PKI roots and `extra_roots`.
pub fn client_config(
    extra_roots: &[CertificateDer<'static>],
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let mut roots =
        rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in extra_roots {
        roots.add(cert.clone())?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The certificates of a PEM file (at least one, each a valid trust anchor).
pub fn load_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, RootsError> {
    let problem = |problem: String| RootsError::File {
        path: path.display().to_string(),
        problem,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| problem(e.to_string()))?;
    if certs.is_empty() {
        return Err(problem("no certificate in the file".to_owned()));
    }
    let mut store = rustls::RootCertStore::empty();
    for cert in &certs {
        store
            .add(cert.clone())
            .map_err(|e| problem(format!("not a usable CA certificate: {e}")))?;
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_files_must_hold_certificates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        let e = load_roots(&empty).expect_err("no certificate");
        assert!(e.to_string().contains("no certificate"), "{e}");
        assert!(load_roots(&dir.path().join("missing.pem")).is_err());
        let config = client_config(&[]).expect("web PKI roots");
        assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
    }
}
