//! What outgoing TLS trusts: the system's certificate store, plus the CA bundle in
//! `TLS_CA_FILE` when one is set (a private CA, a managed service's own root). One
//! crypto provider for everything, rustls with ring.
//!
//! * PostgreSQL: `sslmode=verify-full` (or `verify-ca`) in `DATABASE_URL`; the bundle
//!   is its `sslrootcert` unless the URL names one.
//! * Redis: `rediss://` in `REDIS_URL`; with a bundle, it is the one trusted.
//! * RabbitMQ: `amqps://` in `AMQP_URL`; with a bundle, it is the one trusted.
//! * HTTPS (payment and SMS providers, the JWKS, service calls): the system's roots and
//!   the bundle.
//!
//! Each checks the server's certificate against the host name in its URL: connect by
//! the name on the provider's certificate.

use std::sync::OnceLock;

use anyhow::Context;

use crate::config::CommonConfig;

static EXTRA_CA: OnceLock<Option<Vec<u8>>> = OnceLock::new();

/// Reads `TLS_CA_FILE` once for this process (later calls keep the first reading).
pub fn init(config: &CommonConfig) -> anyhow::Result<()> {
    let pem = match &config.tls_ca_file {
        Some(path) => {
            Some(std::fs::read(path).with_context(|| format!("TLS_CA_FILE {}", path.display()))?)
        }
        None => None,
    };
    let _ = EXTRA_CA.set(pem);
    Ok(())
}

/// The extra CA bundle (PEM), if one is configured.
pub fn extra_ca() -> Option<&'static [u8]> {
    EXTRA_CA.get().and_then(|ca| ca.as_deref())
}

/// The one way the services build an HTTP client (service calls, providers, the
/// JWKS): rustls, the system's roots and the extra bundle.
pub fn http_client_builder() -> reqwest::ClientBuilder {
    let mut builder = reqwest::Client::builder().use_rustls_tls();
    if let Some(pem) = extra_ca() {
        match reqwest::Certificate::from_pem_bundle(pem) {
            Ok(certs) => {
                for cert in certs {
                    builder = builder.add_root_certificate(cert);
                }
            }
            Err(e) => tracing::error!(error = %e, "TLS_CA_FILE holds no PEM certificates"),
        }
    }
    builder
}
