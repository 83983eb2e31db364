//! Node identity: an Ed25519 key (mode 0600) and an X.509 certificate, and
//! the node id derived from the certificate's public key, so renewing the
//! certificate keeps the id.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::SigningKey;

/// Identity errors.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// File I/O failed.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// The key is not a PKCS#8 Ed25519 key.
    #[error("key is not a PKCS#8 Ed25519 private key (PEM): {0}")]
    BadKey(String),
    /// The certificate cannot be parsed or does not match the key.
    #[error("certificate: {0}")]
    BadCert(String),
}

/// A node id: blake3 of the certificate's SubjectPublicKeyInfo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub [u8; 32]);

impl std::fmt::Display for NodeId {
    /// Base32 in groups of seven, like `ABCDEFG-HIJKLMN-…`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = data_encoding::BASE32_NOPAD.encode(&self.0);
        let groups: Vec<&str> = s
            .as_bytes()
            .chunks(7)
            .map(|c| std::str::from_utf8(c).unwrap_or(""))
            .collect();
        f.write_str(&groups.join("-"))
    }
}

impl std::str::FromStr for NodeId {
    type Err = String;
    fn from_str(s: &str) -> Result<NodeId, String> {
        let clean: String = s
            .chars()
            .filter(|c| *c != '-')
            .collect::<String>()
            .to_uppercase();
        let bytes = data_encoding::BASE32_NOPAD
            .decode(clean.as_bytes())
            .map_err(|e| format!("not a node id: {e}"))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "not a node id: wrong length".to_string())?;
        Ok(NodeId(arr))
    }
}

/// A loaded identity.
#[derive(Clone)]
pub struct Identity {
    /// Certificate (DER).
    pub cert_der: Vec<u8>,
    /// Signing key.
    pub key: SigningKey,
    /// Node id.
    pub id: NodeId,
}

const CERT: &str = "cert.pem";
const KEY: &str = "key.pem";

fn read(p: &Path) -> Result<String, IdentityError> {
    fs::read_to_string(p).map_err(|e| IdentityError::Io(p.display().to_string(), e))
}

fn write_private(p: &Path, data: &[u8]) -> Result<(), IdentityError> {
    let io = |e| IdentityError::Io(p.display().to_string(), e);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(p)
        .map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Node id of a DER certificate.
pub fn node_id_of(cert_der: &[u8]) -> Result<NodeId, IdentityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| IdentityError::BadCert(e.to_string()))?;
    Ok(NodeId(
        *blake3::hash(cert.tbs_certificate.subject_pki.raw).as_bytes(),
    ))
}

/// Node id of an Ed25519 public key (blake3 of its SubjectPublicKeyInfo,
/// the same as [`node_id_of`] its certificate).
pub fn node_id_of_key(key: &[u8; 32]) -> [u8; 32] {
    const SPKI_PREFIX: [u8; 12] = [
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    let mut spki = [0u8; 44];
    spki[..12].copy_from_slice(&SPKI_PREFIX);
    spki[12..].copy_from_slice(key);
    *blake3::hash(&spki).as_bytes()
}

fn pem_to_der(pem: &str) -> Result<Vec<u8>, IdentityError> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| IdentityError::BadCert(e.to_string()))?;
    Ok(p.contents)
}

/// Creates an identity in `dir`: a new key and self-signed certificate, or
/// the given certificate and key imported (the key must match it).
pub fn create(dir: &Path, import: Option<(&Path, &Path)>) -> Result<Identity, IdentityError> {
    let (cert_pem, key_pem) = match import {
        Some((cert, key)) => {
            let cert_pem = read(cert)?;
            let key_pem = read(key)?;
            (cert_pem, key_pem)
        }
        None => {
            let key = SigningKey::generate(&mut rand::rngs::OsRng);
            let key_pem = key
                .to_pkcs8_pem(Default::default())
                .map_err(|e| IdentityError::BadKey(e.to_string()))?
                .to_string();
            let kp = rcgen::KeyPair::from_pem(&key_pem)
                .map_err(|e| IdentityError::BadKey(e.to_string()))?;
            let params = rcgen::CertificateParams::new(vec!["chanfs".to_string()])
                .map_err(|e| IdentityError::BadCert(e.to_string()))?;
            let cert = params
                .self_signed(&kp)
                .map_err(|e| IdentityError::BadCert(e.to_string()))?;
            (cert.pem(), key_pem)
        }
    };
    let id = check(&cert_pem, &key_pem)?;
    fs::write(dir.join(CERT), &cert_pem)
        .map_err(|e| IdentityError::Io(dir.join(CERT).display().to_string(), e))?;
    write_private(&dir.join(KEY), key_pem.as_bytes())?;
    Ok(id)
}

/// Parses a certificate and key and checks that they belong together.
fn check(cert_pem: &str, key_pem: &str) -> Result<Identity, IdentityError> {
    let key =
        SigningKey::from_pkcs8_pem(key_pem).map_err(|e| IdentityError::BadKey(e.to_string()))?;
    let cert_der = pem_to_der(cert_pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&cert_der)
        .map_err(|e| IdentityError::BadCert(e.to_string()))?;
    let public = cert
        .tbs_certificate
        .subject_pki
        .subject_public_key
        .data
        .to_vec();
    if public != key.verifying_key().to_bytes() {
        return Err(IdentityError::BadCert(
            "the certificate's public key does not match the key".into(),
        ));
    }
    let id = node_id_of(&cert_der)?;
    Ok(Identity { cert_der, key, id })
}

/// Loads the identity stored in `dir`.
pub fn load(dir: &Path) -> Result<Identity, IdentityError> {
    check(&read(&dir.join(CERT))?, &read(&dir.join(KEY))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn create_load_and_import() {
        let d = tempfile::tempdir().expect("tempdir");
        let a = create(d.path(), None).expect("create");
        let mode = fs::metadata(d.path().join(KEY))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = load(d.path()).expect("load");
        assert_eq!(a.id, b.id);
        assert_eq!(node_id_of_key(&a.key.verifying_key().to_bytes()), a.id.0);
        let text = a.id.to_string();
        assert_eq!(text.parse::<NodeId>().expect("parse"), a.id);
        let d2 = tempfile::tempdir().expect("tempdir");
        let c =
            create(d2.path(), Some((&d.path().join(CERT), &d.path().join(KEY)))).expect("import");
        assert_eq!(c.id, a.id);
    }
}
