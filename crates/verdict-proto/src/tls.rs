//! TLS for the gRPC clients: an `https://` coordinator address is reached over TLS, trusting
//! the CA in `--tls-ca` / `VERDICT_TLS_CA` if given, else the public web PKI roots.

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the CA certificate {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("coordinator address {url:?}: {source}")]
    Endpoint { url: String, source: tonic::transport::Error },
    #[error("a CA certificate ({0}) was given for a plaintext address: use https://")]
    CaWithoutHttps(String),
}

/// An endpoint for `url`, with TLS when the scheme is `https`.
pub fn endpoint(url: &str, ca: Option<&Path>) -> Result<Endpoint, TlsError> {
    let ep = Endpoint::from_shared(url.to_string()).map_err(|source| TlsError::Endpoint { url: url.into(), source })?;
    if !url.starts_with("https://") {
        return match ca {
            Some(p) => Err(TlsError::CaWithoutHttps(p.display().to_string())),
            None => Ok(ep),
        };
    }
    let mut tls = ClientTlsConfig::new();
    tls = match ca {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|source| TlsError::Read { path: path.display().to_string(), source })?;
            tls.ca_certificate(Certificate::from_pem(pem))
        }
        None => tls.with_webpki_roots(),
    };
    ep.tls_config(tls).map_err(|source| TlsError::Endpoint { url: url.into(), source })
}
