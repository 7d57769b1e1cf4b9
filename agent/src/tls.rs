//! rustls configurations that trust device ids instead of a CA.
//!
//! Both sides present a self-signed certificate. The verifiers here accept any
//! well-formed end-entity certificate and check only that the peer's TLS 1.3
//! handshake signature was made with that certificate's key, which proves the
//! peer holds the key of the device id it claims. Which ids are welcome is the
//! application's decision, taken right after the handshake with [`peer_id`],
//! so that it can print a clear message instead of a TLS alert.

use std::sync::Arc;

use quinn::crypto::rustls::{NoInitialCipherSuite, QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::identity::{DeviceId, Identity, IdentityError};

/// What went wrong building a TLS configuration or reading a peer's identity.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the configuration (for example, an unusable key).
    #[error("could not set up TLS with this machine's identity")]
    Config(#[from] rustls::Error),
    /// quinn found no QUIC-compatible cipher suite in the configuration.
    #[error("could not set up QUIC's TLS")]
    Quic(#[from] NoInitialCipherSuite),
    /// The peer presented no certificate (cannot happen after a handshake
    /// with these configurations, but the type allows it).
    #[error("the peer at {peer} presented no certificate")]
    NoPeerCertificate {
        /// The peer's address.
        peer: std::net::SocketAddr,
    },
    /// The peer's certificate could not be read.
    #[error("the peer at {peer} presented an unusable certificate")]
    BadPeerCertificate {
        /// The peer's address.
        peer: std::net::SocketAddr,
        /// Why it is unusable.
        source: IdentityError,
    },
    /// Keying material could not be exported from the TLS session.
    #[error("could not export pairing material from the TLS session with {peer}")]
    Export {
        /// The peer's address.
        peer: std::net::SocketAddr,
    },
}

/// The crypto provider Ferry uses, chosen explicitly rather than process-wide:
/// *ring*'s, with AES-128-GCM first among its TLS 1.3 suites (*ring* lists
/// AES-256-GCM first). Every byte of a transfer is sealed on one side and
/// opened on the other, and AES-128-GCM, the suite every TLS 1.3 peer must
/// support, costs about a fifth less per byte on AES-NI (10 rounds, not 14;
/// `openssl speed` here: 1.45 against 1.21 GB/s of one core). The other
/// suites stay, so a peer that prefers AES-256-GCM still connects; a
/// receiver takes the sender's preference.
fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    // A stable sort: the rest keep their order.
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(provider)
}

/// The receiver's QUIC server configuration: TLS 1.3 only, client
/// certificates mandatory, ALPN [`ferry_proto::ALPN`]. The transport tuning
/// is quinn's default: [`crate::transport::server_config`] adds Ferry's.
pub fn server_config(identity: &Identity) -> Result<quinn::ServerConfig, TlsError> {
    let provider = provider();
    let verifier = PeerVerifier::new(&provider);
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(vec![identity.cert.clone()], identity.key.clone_key())?;
    tls.alpn_protocols = vec![ferry_proto::ALPN.to_vec()];
    // Senders never resume (see `client_config`), so tickets would be wasted.
    tls.send_tls13_tickets = 0;
    Ok(quinn::ServerConfig::with_crypto(Arc::new(
        QuicServerConfig::try_from(tls)?,
    )))
}

/// The sender's QUIC client configuration: TLS 1.3 only, presents this
/// node's certificate, accepts any receiver certificate (the caller checks
/// [`peer_id`]), ALPN [`ferry_proto::ALPN`]. The transport tuning is quinn's
/// default: [`crate::transport::client_endpoint`] sets the sender's.
///
/// Session resumption is off: every connection is a full handshake, so every
/// connection proves possession of the receiver's key afresh (and tickets
/// for the shared server name `ferry` would mix receivers up anyway).
pub fn client_config(identity: &Identity) -> Result<quinn::ClientConfig, TlsError> {
    let provider = provider();
    let verifier = PeerVerifier::new(&provider);
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(vec![identity.cert.clone()], identity.key.clone_key())?;
    tls.alpn_protocols = vec![ferry_proto::ALPN.to_vec()];
    tls.resumption = rustls::client::Resumption::disabled();
    Ok(quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(tls)?,
    )))
}

/// The device id of the peer of an established connection.
pub fn peer_id(conn: &quinn::Connection) -> Result<DeviceId, TlsError> {
    let peer = conn.remote_address();
    let certs = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or(TlsError::NoPeerCertificate { peer })?;
    let cert = certs.first().ok_or(TlsError::NoPeerCertificate { peer })?;
    DeviceId::from_cert(cert).map_err(|source| TlsError::BadPeerCertificate { peer, source })
}

/// Keying material exported from this connection's TLS session for pairing
/// proofs: equal at both ends of one connection, different on every other.
pub fn pairing_material(
    conn: &quinn::Connection,
) -> Result<[u8; ferry_proto::PAIRING_EXPORTER_LEN], TlsError> {
    let mut out = [0u8; ferry_proto::PAIRING_EXPORTER_LEN];
    conn.export_keying_material(&mut out, ferry_proto::PAIRING_EXPORTER_LABEL, b"")
        .map_err(|_| TlsError::Export {
            peer: conn.remote_address(),
        })?;
    Ok(out)
}

/// Accepts any well-formed end-entity certificate and verifies TLS 1.3
/// handshake signatures against it. Used for both directions.
#[derive(Debug)]
struct PeerVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl PeerVerifier {
    fn new(provider: &CryptoProvider) -> Self {
        PeerVerifier {
            algorithms: provider.signature_verification_algorithms,
        }
    }

    /// Checks that the certificate parses and carries a public key.
    fn check_cert(end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        webpki::EndEntityCert::try_from(end_entity)
            .map(|_| ())
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))
    }

    fn verify13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn refuse12() -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Self::check_cert(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::refuse12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Self::check_cert(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::refuse12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use anyhow::Context;

    use super::*;
    use crate::transport::{bytes_on_wire, client_endpoint, connect, server_endpoint, SERVER_NAME};

    /// Upper bound for anything in these tests that waits on the network.
    const WAIT: Duration = Duration::from_secs(10);

    async fn accept_one(server: &quinn::Endpoint) -> anyhow::Result<quinn::Connection> {
        let incoming = server.accept().await.context("the endpoint closed")?;
        Ok(incoming.await?)
    }

    #[tokio::test]
    async fn handshake_shows_both_ids_and_shared_pairing_material() -> anyhow::Result<()> {
        let receiver = Identity::generate()?;
        let sender = Identity::generate()?;
        let server = server_endpoint(&receiver, "127.0.0.1:0".parse()?)?;
        let addr = server.local_addr()?;
        let client = client_endpoint(&sender, addr)?;

        let mut materials = Vec::new();
        for _ in 0..2 {
            let (server_side, client_side) = tokio::time::timeout(WAIT, async {
                tokio::join!(accept_one(&server), connect(&client, addr))
            })
            .await?;
            let (on_receiver, on_sender) = (server_side?, client_side?);
            assert_eq!(peer_id(&on_receiver)?, sender.id);
            assert_eq!(peer_id(&on_sender)?, receiver.id);
            let material = pairing_material(&on_receiver)?;
            assert_eq!(pairing_material(&on_sender)?, material);
            assert_ne!(material, [0; ferry_proto::PAIRING_EXPORTER_LEN]);
            assert!(bytes_on_wire(&on_sender) > 0);
            materials.push(material);
        }
        assert_ne!(materials[0], materials[1]);
        Ok(())
    }

    #[test]
    fn aes_128_gcm_is_preferred_and_the_other_suites_kept() {
        let suites: Vec<_> = provider().cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(
            suites.first(),
            Some(&rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
        );
        for kept in [
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
            rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
        ] {
            assert!(suites.contains(&kept), "{kept:?} dropped: {suites:?}");
        }
    }

    /// A sender of an earlier build (*ring*'s order, AES-256-GCM first)
    /// still reaches a receiver of this one.
    #[tokio::test]
    async fn a_peer_preferring_aes_256_still_connects() -> anyhow::Result<()> {
        let receiver = Identity::generate()?;
        let sender = Identity::generate()?;
        let server = server_endpoint(&receiver, "127.0.0.1:0".parse()?)?;
        let addr = server.local_addr()?;

        let earlier = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = PeerVerifier::new(&earlier);
        let mut tls = rustls::ClientConfig::builder_with_provider(earlier)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(vec![sender.cert.clone()], sender.key.clone_key())?;
        tls.alpn_protocols = vec![ferry_proto::ALPN.to_vec()];
        let config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
        let client = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        let connecting = client.connect_with(config, addr, SERVER_NAME)?;
        let (server_side, client_side) = tokio::time::timeout(WAIT, async {
            tokio::join!(accept_one(&server), connecting)
        })
        .await?;
        assert_eq!(peer_id(&server_side?)?, sender.id);
        assert_eq!(peer_id(&client_side?)?, receiver.id);
        Ok(())
    }

    #[tokio::test]
    async fn client_without_certificate_is_rejected() -> anyhow::Result<()> {
        let receiver = Identity::generate()?;
        let server = server_endpoint(&receiver, "127.0.0.1:0".parse()?)?;
        let addr = server.local_addr()?;

        let provider = provider();
        let verifier = PeerVerifier::new(&provider);
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        tls.alpn_protocols = vec![ferry_proto::ALPN.to_vec()];
        let config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
        let client = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        let connecting = client.connect_with(config, addr, SERVER_NAME)?;

        // The client may finish its side of the handshake before the server
        // has checked its (empty) certificate, so it sees either a failed
        // handshake or a connection closed right after.
        let sender_side = async {
            match connecting.await {
                Ok(conn) => conn.closed().await,
                Err(e) => e,
            }
        };
        let (server_side, sender_error) = tokio::time::timeout(WAIT, async {
            tokio::join!(accept_one(&server), sender_side)
        })
        .await?;
        let server_error = server_side
            .err()
            .context("the receiver accepted a client without a certificate")?;
        let text = format!("{server_error:#} / {sender_error}");
        assert!(text.to_lowercase().contains("certificate"), "{text}");
        Ok(())
    }

    #[tokio::test]
    async fn client_with_another_alpn_is_rejected() -> anyhow::Result<()> {
        let receiver = Identity::generate()?;
        let sender = Identity::generate()?;
        let server = server_endpoint(&receiver, "127.0.0.1:0".parse()?)?;
        let addr = server.local_addr()?;

        let provider = provider();
        let verifier = PeerVerifier::new(&provider);
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(vec![sender.cert.clone()], sender.key.clone_key())?;
        tls.alpn_protocols = vec![b"ferry/0".to_vec()];
        let config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
        let client = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        let connecting = client.connect_with(config, addr, SERVER_NAME)?;
        let (server_side, client_side) = tokio::time::timeout(WAIT, async {
            tokio::join!(accept_one(&server), connecting)
        })
        .await?;
        assert!(server_side.is_err());
        assert!(client_side.is_err());
        Ok(())
    }

    #[test]
    fn verifier_rejects_a_malformed_certificate() {
        let garbage = CertificateDer::from(&b"not a certificate"[..]);
        assert!(matches!(
            PeerVerifier::check_cert(&garbage),
            Err(rustls::Error::InvalidCertificate(
                CertificateError::BadEncoding
            ))
        ));
    }

    #[test]
    fn verifier_offers_no_ca_hints_and_requires_client_auth() {
        let verifier = PeerVerifier::new(&provider());
        assert!(ClientCertVerifier::root_hint_subjects(&verifier).is_empty());
        assert!(verifier.client_auth_mandatory());
        assert!(verifier.offer_client_auth());
        assert!(!ClientCertVerifier::supported_verify_schemes(&verifier).is_empty());
    }
}
