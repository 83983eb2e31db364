//! QUIC endpoints with mutual TLS 1.3 between node identities.
//!
//! Certificates are self-signed and there is no CA: a node's identity *is*
//! its key, and its [`NodeId`] is the blake3 of its certificate's
//! SubjectPublicKeyInfo. The verifiers here therefore check no chain, name or
//! expiry; they only parse the peer's certificate and verify the TLS 1.3
//! handshake signature, which proves the peer holds the certificate's key.
//!
//! Authorization (is this node id a member of a channel we share?) is not
//! done in the handshake verifiers: the caller checks [`peer_id`] right after
//! the handshake and closes the connection if the peer is not allowed.
//!
//! Every config is built with the ring provider explicitly, so no
//! process-wide default crypto provider needs to be installed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use quinn::crypto::rustls::{HandshakeData, QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, PeerIncompatible,
    SignatureScheme,
};

use crate::identity::{node_id_of, Identity, NodeId};

/// ALPN of member connections.
pub const ALPN: &[u8] = b"chanfs/1";

/// ALPN of a node joining with an invite token (not yet a member).
pub const ALPN_JOIN: &[u8] = b"chanfs-join/1";

/// Server name used when dialing. Certificates are not checked against it.
const SERVER_NAME: &str = "chanfs";

/// Application close code: the peer is not the node we expected.
const CLOSE_WRONG_PEER: u32 = 1;

/// The ring crypto provider, shared by every config built here.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A peer certificate that cannot be used.
#[derive(thiserror::Error)]
#[error("not a usable X.509 certificate: {0}")]
struct BadPeerCert(String);

/// rustls displays the inner error of `CertificateError::Other` with
/// `Debug`, so `Debug` shows the readable message too.
impl std::fmt::Debug for BadPeerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Parses a peer's end-entity certificate, rejecting garbage with a clear
/// error. Nothing else is checked (no chain, names or validity dates).
fn check_peer_cert(end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
    let bad = |msg: String| {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
            BadPeerCert(msg),
        ))))
    };
    let (rest, _) =
        x509_parser::parse_x509_certificate(end_entity.as_ref()).map_err(|e| bad(e.to_string()))?;
    if !rest.is_empty() {
        return Err(bad(format!("{} trailing bytes", rest.len())));
    }
    node_id_of(end_entity.as_ref()).map_err(|e| bad(e.to_string()))?;
    Ok(())
}

/// Verifier of self-signed peer certificates, used on both sides: the
/// identity is the key, so only the certificate's syntax and the TLS 1.3
/// handshake signature are verified.
#[derive(Debug)]
struct PeerVerifier {
    algs: WebPkiSupportedAlgorithms,
}

impl PeerVerifier {
    fn new(provider: &CryptoProvider) -> Self {
        PeerVerifier {
            algs: provider.signature_verification_algorithms,
        }
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn tls12() -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            PeerIncompatible::Tls13RequiredForQuic,
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
        check_peer_cert(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

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
        check_peer_cert(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Our certificate chain and private key in rustls form.
fn cert_and_key(
    ident: &Identity,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let cert = CertificateDer::from(ident.cert_der.clone());
    let der = ident
        .key
        .to_pkcs8_der()
        .map_err(|e| anyhow::anyhow!("encoding the node key as PKCS#8: {e}"))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der.as_bytes().to_vec()));
    Ok((vec![cert], key))
}

/// Transport parameters: keep-alive, idle timeout and windows sized for bulk
/// chunk transfer.
fn transport() -> anyhow::Result<Arc<quinn::TransportConfig>> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_secs(5)))
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(Duration::from_secs(30)).context("idle timeout")?,
        ))
        .stream_receive_window(quinn::VarInt::from_u32(8 << 20))
        .receive_window(quinn::VarInt::from_u32(32 << 20))
        .send_window(32 << 20)
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(256))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(256));
    Ok(Arc::new(t))
}

/// Server config presenting our certificate, requiring a client certificate,
/// TLS 1.3 only, accepting the ALPNs [`ALPN`] and [`ALPN_JOIN`].
fn server_config(ident: &Identity) -> anyhow::Result<quinn::ServerConfig> {
    let provider = provider();
    let verifier = Arc::new(PeerVerifier::new(&provider));
    let (certs, key) = cert_and_key(ident)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 server config")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .context("server certificate and key")?;
    tls.alpn_protocols = vec![ALPN.to_vec(), ALPN_JOIN.to_vec()];
    let quic = QuicServerConfig::try_from(tls).context("QUIC server config")?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(quic));
    cfg.transport_config(transport()?);
    Ok(cfg)
}

/// Client config presenting our certificate, offering exactly `alpn`,
/// TLS 1.3 only, accepting any well-formed self-signed server certificate
/// whose key signed the handshake (check [`peer_id`] afterwards).
pub fn client_config(ident: &Identity, alpn: &[u8]) -> anyhow::Result<quinn::ClientConfig> {
    let provider = provider();
    let verifier = Arc::new(PeerVerifier::new(&provider));
    let (certs, key) = cert_and_key(ident)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 client config")?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(certs, key)
        .context("client certificate and key")?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    let quic = QuicClientConfig::try_from(tls).context("QUIC client config")?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    cfg.transport_config(transport()?);
    Ok(cfg)
}

/// A quinn endpoint bound to `addr` that both accepts and dials: mutual
/// TLS 1.3 only, ALPNs [`ALPN`] and [`ALPN_JOIN`] accepted on the server
/// side; its default client config offers [`ALPN`]. Must be called inside a
/// tokio runtime.
pub fn endpoint(addr: SocketAddr, ident: &Identity) -> anyhow::Result<quinn::Endpoint> {
    let socket = std::net::UdpSocket::bind(addr)
        .with_context(|| format!("binding QUIC endpoint on {addr}"))?;
    size_buffers(&socket);
    let mut ep = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server_config(ident)?),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .with_context(|| format!("QUIC endpoint on {addr}"))?;
    ep.set_default_client_config(client_config(ident, ALPN)?);
    Ok(ep)
}

/// The UDP socket buffers asked for. A bulk transfer's bursts overflow the
/// default (208 KiB) even on loopback, and each datagram dropped there
/// halves the sender's congestion window: 4 MiB took B's read of a 100 MiB
/// file from about 126 to 219 MB/s here, with no drop left.
const SOCKET_BUFFER: usize = 4 << 20;

/// Sizes the socket's buffers to [`SOCKET_BUFFER`]: beyond
/// `net.core.rmem_max`/`wmem_max` when the node may (CAP_NET_ADMIN), else up
/// to them, with a warning naming the setting that caps them.
fn size_buffers(socket: &std::net::UdpSocket) {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt};
    if setsockopt(socket, sockopt::RcvBufForce, &SOCKET_BUFFER).is_err() {
        let _ = setsockopt(socket, sockopt::RcvBuf, &SOCKET_BUFFER);
    }
    if setsockopt(socket, sockopt::SndBufForce, &SOCKET_BUFFER).is_err() {
        let _ = setsockopt(socket, sockopt::SndBuf, &SOCKET_BUFFER);
    }
    // The kernel reports twice the size it grants (its bookkeeping).
    if let Ok(got) = getsockopt(socket, sockopt::RcvBuf) {
        if got < SOCKET_BUFFER {
            tracing::warn!(
                "UDP receive buffer is {} KiB, not the {} KiB asked for: raise \
                 net.core.rmem_max for faster transfers",
                got / 2 / 1024,
                SOCKET_BUFFER / 1024
            );
        }
    }
}

/// Dials `addr` offering `alpn`, expecting the peer to be `expect` (`Some`)
/// or anyone (`None`). After the handshake, closes the connection and errors
/// if the server's node id differs from `expect`.
pub async fn connect(
    ep: &quinn::Endpoint,
    ident: &Identity,
    addr: SocketAddr,
    alpn: &[u8],
    expect: Option<NodeId>,
) -> anyhow::Result<quinn::Connection> {
    let cfg = client_config(ident, alpn)?;
    let conn = ep
        .connect_with(cfg, addr, SERVER_NAME)
        .with_context(|| format!("connecting to {addr}"))?
        .await
        .with_context(|| format!("handshake with {addr}"))?;
    let Some(got) = peer_id(&conn) else {
        conn.close(CLOSE_WRONG_PEER.into(), b"no peer certificate");
        anyhow::bail!("peer at {addr} presented no usable certificate");
    };
    if let Some(want) = expect {
        if got != want {
            conn.close(CLOSE_WRONG_PEER.into(), b"unexpected node id");
            anyhow::bail!("peer at {addr} is node {got}, expected node {want}");
        }
    }
    Ok(conn)
}

/// Node id of the peer of an established connection, from the certificate
/// it presented (`None` if there is none or it cannot be parsed).
pub fn peer_id(conn: &quinn::Connection) -> Option<NodeId> {
    let any = conn.peer_identity()?;
    let certs = any.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    let first = certs.first()?;
    node_id_of(first.as_ref()).ok()
}

/// ALPN protocol negotiated on a connection.
pub fn alpn_of(conn: &quinn::Connection) -> Option<Vec<u8>> {
    let any = conn.handshake_data()?;
    any.downcast::<HandshakeData>().ok()?.protocol
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::create;
    use crate::net::frame::{read_frame, write_frame};

    fn ident() -> (tempfile::TempDir, Identity) {
        let d = tempfile::tempdir().expect("tempdir");
        let id = create(d.path(), None).expect("identity");
        (d, id)
    }

    fn local() -> SocketAddr {
        "127.0.0.1:0".parse().expect("addr")
    }

    #[tokio::test]
    async fn mutual_auth_frames_and_alpn() {
        let (_da, a) = ident();
        let (_db, b) = ident();
        let ea = endpoint(local(), &a).expect("endpoint a");
        let eb = endpoint(local(), &b).expect("endpoint b");
        let b_addr = eb.local_addr().expect("addr");
        let b_id = b.id;
        let a_id = a.id;

        let server = tokio::spawn(async move {
            let inc = eb.accept().await.expect("incoming");
            let conn = inc.await.expect("server handshake");
            assert_eq!(peer_id(&conn), Some(a_id));
            assert_eq!(alpn_of(&conn).as_deref(), Some(ALPN));
            let (mut send, mut recv) = conn.accept_bi().await.expect("accept_bi");
            let msg: String = read_frame(&mut recv).await.expect("read").expect("frame");
            assert_eq!(msg, "ping");
            write_frame(&mut send, &"pong".to_string())
                .await
                .expect("write");
            send.finish().expect("finish");
            let end: Option<String> = read_frame(&mut recv).await.expect("eof");
            assert!(end.is_none());
            conn.closed().await;
            eb
        });

        let conn = connect(&ea, &a, b_addr, ALPN, Some(b_id))
            .await
            .expect("connect");
        assert_eq!(peer_id(&conn), Some(b_id));
        assert_eq!(alpn_of(&conn).as_deref(), Some(ALPN));
        let (mut send, mut recv) = conn.open_bi().await.expect("open_bi");
        write_frame(&mut send, &"ping".to_string())
            .await
            .expect("write");
        send.finish().expect("finish");
        let msg: String = read_frame(&mut recv).await.expect("read").expect("frame");
        assert_eq!(msg, "pong");
        let end: Option<String> = read_frame(&mut recv).await.expect("eof");
        assert!(end.is_none());
        conn.close(0u32.into(), b"done");
        let eb = server.await.expect("server task");
        ea.wait_idle().await;
        eb.wait_idle().await;
    }

    #[tokio::test]
    async fn join_alpn_is_negotiated() {
        let (_da, a) = ident();
        let (_db, b) = ident();
        let ea = endpoint(local(), &a).expect("endpoint a");
        let eb = endpoint(local(), &b).expect("endpoint b");
        let b_addr = eb.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let conn = eb
                .accept()
                .await
                .expect("incoming")
                .await
                .expect("handshake");
            let alpn = alpn_of(&conn);
            conn.closed().await;
            alpn
        });
        let conn = connect(&ea, &a, b_addr, ALPN_JOIN, None)
            .await
            .expect("connect");
        assert_eq!(alpn_of(&conn).as_deref(), Some(ALPN_JOIN));
        conn.close(0u32.into(), b"done");
        let alpn = server.await.expect("server task");
        assert_eq!(alpn.as_deref(), Some(ALPN_JOIN));
    }

    #[tokio::test]
    async fn wrong_expected_peer_is_refused() {
        let (_da, a) = ident();
        let (_db, b) = ident();
        let (_dc, c) = ident();
        let ea = endpoint(local(), &a).expect("endpoint a");
        let eb = endpoint(local(), &b).expect("endpoint b");
        let b_addr = eb.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let conn = eb
                .accept()
                .await
                .expect("incoming")
                .await
                .expect("handshake");
            conn.closed().await
        });
        let err = connect(&ea, &a, b_addr, ALPN, Some(c.id))
            .await
            .expect_err("must refuse the wrong peer");
        let text = format!("{err:#}");
        assert!(text.contains(&b.id.to_string()), "{text}");
        assert!(text.contains(&c.id.to_string()), "{text}");
        assert!(text.contains("expected"), "{text}");
        // The server sees the connection closed by the client.
        let reason = server.await.expect("server task");
        assert!(
            matches!(reason, quinn::ConnectionError::ApplicationClosed(ref c)
                if c.error_code == quinn::VarInt::from_u32(CLOSE_WRONG_PEER)),
            "{reason:?}"
        );
    }

    #[tokio::test]
    async fn client_without_certificate_is_refused() {
        let (_db, b) = ident();
        let eb = endpoint(local(), &b).expect("endpoint b");
        let b_addr = eb.local_addr().expect("addr");

        // A client that verifies the server but presents no certificate.
        let prov = provider();
        let verifier = Arc::new(PeerVerifier::new(&prov));
        let mut tls = rustls::ClientConfig::builder_with_provider(prov)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("tls13")
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic = QuicClientConfig::try_from(tls).expect("quic client");
        let cfg = quinn::ClientConfig::new(Arc::new(quic));
        let ec = quinn::Endpoint::client(local()).expect("client endpoint");

        let server = tokio::spawn(async move {
            let inc = eb.accept().await.expect("incoming");
            inc.await
        });
        let client = async {
            let conn = ec.connect_with(cfg, b_addr, SERVER_NAME)?.await?;
            // In TLS 1.3 the client may finish its side of the handshake
            // before the server has judged its (absent) certificate: the
            // refusal then arrives as a close.
            let e = conn.closed().await;
            Err::<(), anyhow::Error>(e.into())
        };
        let client = tokio::time::timeout(Duration::from_secs(10), client)
            .await
            .expect("client must not hang");
        assert!(client.is_err());
        let served = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("server must not hang")
            .expect("server task");
        let err = served.expect_err("server must refuse a client without certificate");
        assert!(
            matches!(err, quinn::ConnectionError::TransportError(ref e)
                if e.reason.contains("no certificates")),
            "{err:?}"
        );
    }

    /// Presents `cert` (someone else's) while signing with `key` (ours):
    /// an impostor without the certificate's private key.
    #[derive(Debug)]
    struct Impostor(Arc<rustls::sign::CertifiedKey>);

    impl Impostor {
        fn new(cert_of: &Identity, key_of: &Identity) -> Arc<Self> {
            let (certs, _) = cert_and_key(cert_of).expect("cert");
            let (_, key) = cert_and_key(key_of).expect("key");
            let signer = provider()
                .key_provider
                .load_private_key(key)
                .expect("signing key");
            Arc::new(Impostor(Arc::new(rustls::sign::CertifiedKey::new(
                certs, signer,
            ))))
        }
    }

    impl rustls::client::ResolvesClientCert for Impostor {
        fn resolve(
            &self,
            _hints: &[&[u8]],
            _schemes: &[SignatureScheme],
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(self.0.clone())
        }
        fn has_certs(&self) -> bool {
            true
        }
    }

    impl rustls::server::ResolvesServerCert for Impostor {
        fn resolve(
            &self,
            _hello: rustls::server::ClientHello<'_>,
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(self.0.clone())
        }
    }

    #[tokio::test]
    async fn client_without_the_certificate_key_is_refused() {
        let (_da, a) = ident();
        let (_db, b) = ident();
        let eb = endpoint(local(), &b).expect("endpoint b");
        let b_addr = eb.local_addr().expect("addr");
        // `a` claims to be `b` (b's certificate) but only has a's key.
        let prov = provider();
        let verifier = Arc::new(PeerVerifier::new(&prov));
        let mut tls = rustls::ClientConfig::builder_with_provider(prov)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("tls13")
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(Impostor::new(&b, &a));
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic = QuicClientConfig::try_from(tls).expect("quic client");
        let cfg = quinn::ClientConfig::new(Arc::new(quic));
        let ec = quinn::Endpoint::client(local()).expect("client endpoint");
        let server = tokio::spawn(async move { eb.accept().await.expect("incoming").await });
        let client = async {
            let conn = ec.connect_with(cfg, b_addr, SERVER_NAME)?.await?;
            Err::<(), anyhow::Error>(conn.closed().await.into())
        };
        let client = tokio::time::timeout(Duration::from_secs(10), client)
            .await
            .expect("client must not hang");
        assert!(client.is_err());
        let served = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("server must not hang")
            .expect("server task");
        let err = served.expect_err("server must refuse an impostor");
        // Refused because the handshake signature does not verify.
        assert!(
            matches!(err, quinn::ConnectionError::TransportError(ref e)
                if e.reason.contains("BadSignature")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn server_without_the_certificate_key_is_refused() {
        let (_da, a) = ident();
        let (_db, b) = ident();
        let (_dc, c) = ident();
        // A server claiming to be `c` (c's certificate) with only b's key.
        let prov = provider();
        let verifier = Arc::new(PeerVerifier::new(&prov));
        let mut tls = rustls::ServerConfig::builder_with_provider(prov)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("tls13")
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Impostor::new(&c, &b));
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic = QuicServerConfig::try_from(tls).expect("quic server");
        let eb = quinn::Endpoint::server(quinn::ServerConfig::with_crypto(Arc::new(quic)), local())
            .expect("server endpoint");
        let b_addr = eb.local_addr().expect("addr");
        let server = tokio::spawn(async move { eb.accept().await.expect("incoming").await });
        let ea = endpoint(local(), &a).expect("endpoint a");
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            connect(&ea, &a, b_addr, ALPN, Some(c.id)),
        )
        .await
        .expect("client must not hang");
        let err = r.expect_err("client must refuse an impostor");
        // Refused because the handshake signature does not verify.
        assert!(format!("{err:#}").contains("BadSignature"), "{err:#}");
        let served = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("server must not hang")
            .expect("server task");
        assert!(served.is_err());
    }

    #[test]
    fn tls12_is_refused() {
        // QUIC only runs over TLS 1.3 and the configs offer nothing else;
        // the TLS 1.2 signature hooks refuse regardless.
        assert!(PeerVerifier::tls12().is_err());
    }

    #[test]
    fn garbage_certificate_is_rejected() {
        let v = PeerVerifier::new(&provider());
        let junk = CertificateDer::from(vec![0x30, 0x03, 1, 2, 3]);
        let err = ServerCertVerifier::verify_server_cert(
            &v,
            &junk,
            &[],
            &ServerName::try_from(SERVER_NAME).expect("name"),
            &[],
            UnixTime::now(),
        )
        .expect_err("garbage must be rejected");
        assert!(
            err.to_string().contains("not a usable X.509 certificate"),
            "{err}"
        );
        let err = ClientCertVerifier::verify_client_cert(&v, &junk, &[], UnixTime::now())
            .expect_err("garbage must be rejected");
        assert!(
            err.to_string().contains("not a usable X.509 certificate"),
            "{err}"
        );

        let (_d, a) = ident();
        let good = CertificateDer::from(a.cert_der.clone());
        ClientCertVerifier::verify_client_cert(&v, &good, &[], UnixTime::now())
            .expect("a self-signed identity certificate is accepted");
    }
}
