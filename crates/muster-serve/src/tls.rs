//! TLS for the listener (`muster serve --tls-cert FILE --tls-key FILE`): it loads a PEM
//! certificate chain and its private key into a rustls server configuration, refusing a
//! missing, unreadable, empty or mismatched file by name, and accepts TLS connections for
//! the HTTP server, each handshake on a task of its own (bounded by [`HANDSHAKE`]) so that
//! a slow or silent client delays no other.
//!
//! It must not read requests or know routes: it only turns TCP connections into TLS ones.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The longest a client may take over its TLS handshake.
pub const HANDSHAKE: Duration = Duration::from_secs(10);

/// Why the listener's certificate or key cannot be used; each names its file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is missing, unreadable, or holds no PEM certificate.
    #[error("--tls-cert {}: {why}", path.display())]
    Cert {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The key file is missing, unreadable, or holds no PEM private key.
    #[error("--tls-key {}: {why}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The key is not the certificate's (or rustls refuses the pair).
    #[error("--tls-key {} does not go with the certificate of --tls-cert {}: {why}", key.display(), cert.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' reason.
        why: String,
    },
}

impl TlsError {
    /// The file the error is about (the key file for a mismatch).
    pub fn path(&self) -> &Path {
        match self {
            TlsError::Cert { path, .. } | TlsError::Key { path, .. } => path,
            TlsError::Mismatch { key, .. } => key,
        }
    }
}

/// The listener's TLS configuration from a PEM certificate chain (the node's certificate
/// first) and its PEM private key (PKCS#8, PKCS#1 or SEC1), with rustls' ring provider and
/// its safe protocol versions.
///
/// # Example
/// ```no_run
/// let config = muster_serve::tls::server_config("node.pem".as_ref(), "node.key".as_ref())?;
/// # let _ = config;
/// # Ok::<(), muster_serve::tls::TlsError>(())
/// ```
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let cert_err = |why: String| TlsError::Cert {
        path: cert.to_path_buf(),
        why,
    };
    let key_err = |why: String| TlsError::Key {
        path: key.to_path_buf(),
        why,
    };
    let cert_bytes = std::fs::read(cert).map_err(|e| cert_err(format!("cannot read it: {e}")))?;
    let key_bytes = std::fs::read(key).map_err(|e| key_err(format!("cannot read it: {e}")))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(cert_err(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    let private = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
        key_err(format!(
            "holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| cert_err(format!("TLS versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| TlsError::Mismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            why: e.to_string(),
        })?;
    let mut config = config;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A listener whose connections are TLS: it accepts TCP connections and hands the HTTP
/// server each once its handshake is done (a failed or late handshake is dropped and
/// logged at debug).
pub(crate) struct TlsListener {
    ready: mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `tcp` with `config`, from a task of the current runtime.
    pub(crate) fn new(
        tcp: TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (stream, addr) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors, say: wait a little rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, addr)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                        Err(_) => {
                            tracing::debug!(%addr, "TLS handshake took longer than {HANDSHAKE:?}")
                        }
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accepting task ended (its runtime is stopping): no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
