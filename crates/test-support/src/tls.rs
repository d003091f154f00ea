//! TLS for tests: a throw-away certificate authority, servers that present its
//! certificates (HTTPS, Redis with `--tls-port`), and the bundle a service trusts
//! (`TLS_CA_FILE`), so a test can check that a connection is verified and that a
//! certificate for another host is refused.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// A certificate authority made for one test.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    dir: PathBuf,
}

/// A server certificate and its key, as PEM files.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    cert_pem: String,
    key_pem: String,
}

impl TestCa {
    pub fn new() -> Self {
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(DnType::CommonName, "Marketplace test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("a CA certificate");
        let dir = std::env::temp_dir().join(format!("mp-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("a directory for certificates");
        std::fs::write(dir.join("ca.crt"), cert.pem()).expect("the CA written");
        Self { cert, key, dir }
    }

    /// The CA certificate's PEM file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    pub fn ca_pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().expect("a server key");
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("server params");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("a server certificate");
        let stem = uuid::Uuid::new_v4().simple().to_string();
        let (cert_path, key_path) = (
            self.dir.join(format!("{stem}.crt")),
            self.dir.join(format!("{stem}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).expect("certificate written");
        std::fs::write(&key_path, key.serialize_pem()).expect("key written");
        Leaf {
            cert: cert_path,
            key: key_path,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Writes a bundle of this CA and the PEM files `others` (another CA to trust as
    /// well) and returns its path.
    pub fn bundle_with(&self, others: &[&Path]) -> PathBuf {
        let mut pem = self.ca_pem();
        for other in others {
            pem.push_str(&std::fs::read_to_string(other).expect("a CA file to bundle"));
        }
        let path = self.dir.join("bundle.crt");
        std::fs::write(&path, pem).expect("the bundle written");
        path
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TLS acceptor that presents `leaf`.
fn acceptor(leaf: &Leaf) -> tokio_rustls::TlsAcceptor {
    use tokio_rustls::rustls;
    let certs = vec![rustls::pki_types::CertificateDer::from(
        rustls::pki_types::pem::PemObject::from_pem_slice(leaf.cert_pem.as_bytes())
            .map(|c: rustls::pki_types::CertificateDer<'static>| c.to_vec())
            .expect("the certificate parses"),
    )];
    let key = rustls::pki_types::pem::PemObject::from_pem_slice(leaf.key_pem.as_bytes())
        .expect("the key parses");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("a server configuration");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

type TlsStream = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

/// Accepts TLS connections with `leaf` on a free local port and hands each, once its
/// handshake is done, to `handle` on a task of its own. A client that refuses the
/// certificate ends its handshake; that connection is dropped.
async fn serve_tls<F, Fut>(leaf: &Leaf, handle: F) -> SocketAddr
where
    F: Fn(TlsStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let acceptor = acceptor(leaf);
    let handle = Arc::new(handle);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, handle) = (acceptor.clone(), handle.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    handle(tls).await;
                }
            });
        }
    });
    addr
}

/// Terminates TLS with `leaf` on a free local port and passes the bytes on to the
/// plain server at `upstream` (e.g. the local RabbitMQ, which has no TLS listener),
/// so a client's `amqps://` path, verification included, runs against the real server.
pub async fn terminate_tls(upstream: SocketAddr, leaf: &Leaf) -> SocketAddr {
    serve_tls(leaf, move |mut tls| async move {
        let Ok(mut plain) = tokio::net::TcpStream::connect(upstream).await else {
            return;
        };
        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
    })
    .await
}

/// Serves `app` over HTTPS with `leaf` on a free local port.
pub async fn serve_https(app: axum::Router, leaf: &Leaf) -> SocketAddr {
    serve_tls(leaf, move |tls| {
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        async move {
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
        }
    })
    .await
}

/// A throw-away `redis-server` that speaks TLS only, with `leaf`; stopped when
/// dropped.
pub struct TlsRedis {
    pub port: u16,
    child: Child,
}

impl TlsRedis {
    pub async fn start(leaf: &Leaf, ca: &TestCa) -> Self {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            l.local_addr().expect("address").port()
        };
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--tls-cert-file")
            .arg(&leaf.cert)
            .arg("--tls-key-file")
            .arg(&leaf.key)
            .arg("--tls-ca-cert-file")
            .arg(ca.ca_file())
            .args([
                "--tls-auth-clients",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts (make infra installs it)");
        crate::eventually(
            "the TLS Redis to listen",
            Duration::from_secs(20),
            || async {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
            },
        )
        .await;
        Self { port, child }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
