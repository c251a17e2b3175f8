//! Device trust for the mirroring channels: the device group's CA, device certificates, and the
//! mutual-TLS configurations that make a channel accept only devices of the group.
//!
//! - The group CA is a self-signed ECDSA P-256 certificate whose subject CN is the group name,
//!   valid 10 years ([`CA_VALIDITY_DAYS`]).
//! - A device certificate (ECDSA P-256, valid 2 years, [`DEVICE_VALIDITY_DAYS`]) names its device
//!   with one **DNS SAN `DEVICE.GROUP.spanlb`** ([`device_dns_name`]) plus one IP SAN per mirror
//!   address. A DNS name rather than a `spanlb://` URI SAN because rustls checks a server's DNS
//!   SAN itself: a client connects with the server name `DEVICE.GROUP.spanlb` and webpki refuses
//!   any other device. Extended key usage: server *and* client auth (a device is both ends).
//! - [`server_config`] requires a client certificate signed by the group CA and, in the same
//!   handshake, that it names a device of the group list; [`peer_device`] checks the same again
//!   after the handshake and gives the peer's device name. [`client_config`] verifies the server
//!   against the CA; the caller names the device it expects with [`device_server_name`].
//! - Channels are TLS 1.3 only (both ends are ours), with rustls' ring provider.
//! - Key files are created owner-only (0600, at `open`, never chmod'ed afterwards); existing
//!   certificate or key files are never overwritten unless the caller forces it.
//!
//! This module must not open sockets, log key material, or accept a certificate that did not
//! chain to the group CA; it knows nothing of the mirroring protocol itself (lbd's mirror module
//! owns that).

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, CommonState, DigitallySignedStruct, DistinguishedName, RootCertStore};
use rustls::{ServerConfig, SignatureScheme};
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The group CA is valid this long (10 years): replacing it means re-issuing every device.
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// A device certificate is valid this long (2 years).
pub const DEVICE_VALIDITY_DAYS: i64 = 730;
/// Certificates start being valid this long before they were made (clock skew between devices).
const BACKDATE_SECS: i64 = 3600;
/// The DNS suffix of device names: `DEVICE.GROUP.spanlb`.
pub const DNS_SUFFIX: &str = "spanlb";
/// File names of the group CA inside a trust directory.
pub const CA_CERT_FILE: &str = "ca.crt";
pub const CA_KEY_FILE: &str = "ca.key";

/// Everything that can go wrong with device trust; each message is one line naming the file
/// (or name) and the problem.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{}: missing file", .0.display())]
    Missing(PathBuf),
    #[error("{}: {}", .0.display(), .1)]
    Io(PathBuf, std::io::Error),
    #[error("{}: not PEM ({})", .0.display(), .1)]
    NotPem(PathBuf, String),
    #[error("{}: already exists (use --force to replace it)", .0.display())]
    Exists(PathBuf),
    #[error("{}: not a certificate ({})", .0.display(), .1)]
    BadCertificate(PathBuf, String),
    #[error("{0:?} is not a valid name: {1}")]
    BadName(String, &'static str),
    #[error("certificate {0}: {1}")]
    Generate(String, rcgen::Error),
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("{}: not issued by the group CA {} ({why})", .cert.display(), .ca.display())]
    WrongCa {
        cert: PathBuf,
        ca: PathBuf,
        why: String,
    },
    #[error("peer certificate unreadable: {0}")]
    BadPeerCertificate(String),
    #[error("peer presented no certificate")]
    NoPeerCertificate,
    #[error("peer certificate names no device of group {group} (names: {names})")]
    NotInGroup { group: String, names: String },
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct CertKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertKey")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A group or device name must be one DNS label: ASCII letters, digits and `-`, 1..=63 long,
/// not starting or ending with `-`.
pub fn check_name(name: &str) -> Result<(), TrustError> {
    let bad = |why| Err(TrustError::BadName(name.to_string(), why));
    if name.is_empty() || name.len() > 63 {
        return bad("must be 1 to 63 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return bad("only letters, digits and '-' are allowed");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return bad("must not start or end with '-'");
    }
    Ok(())
}

/// The DNS SAN that names `device` of `group`: `DEVICE.GROUP.spanlb` (lower case).
pub fn device_dns_name(group: &str, device: &str) -> String {
    format!("{device}.{group}.{DNS_SUFFIX}").to_ascii_lowercase()
}

/// The server name a client uses to reach `device` of `group`.
pub fn device_server_name(group: &str, device: &str) -> Result<ServerName<'static>, TrustError> {
    check_name(group)?;
    check_name(device)?;
    ServerName::try_from(device_dns_name(group, device))
        .map_err(|_| TrustError::BadName(device.to_string(), "not a valid DNS name"))
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::seconds(BACKDATE_SECS);
    params.not_after = now + time::Duration::days(days);
}

/// A new group CA for `group`: (certificate PEM, key PEM).
pub fn create_ca(group: &str) -> Result<CertKey, TrustError> {
    check_name(group)?;
    let what = || format!("CA of group {group}");
    let key = KeyPair::generate().map_err(|e| TrustError::Generate(what(), e))?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "spanlb device group");
    params.distinguished_name.push(DnType::CommonName, group);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, CA_VALIDITY_DAYS);
    let cert = params
        .self_signed(&key)
        .map_err(|e| TrustError::Generate(what(), e))?;
    Ok(CertKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The group a CA certificate (PEM) is for: its subject CN.
pub fn ca_group(ca_cert_pem: &str) -> Result<String, TrustError> {
    let der = CertificateDer::from_pem_slice(ca_cert_pem.as_bytes())
        .map_err(|e| TrustError::NotPem(PathBuf::from(CA_CERT_FILE), e.to_string()))?;
    group_of_der(&der).map_err(|e| TrustError::BadCertificate(PathBuf::from(CA_CERT_FILE), e))
}

fn group_of_der(der: &[u8]) -> Result<String, String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .ok_or("the CA has no common name")?;
    let group = cn.as_str().map_err(|e| e.to_string())?.to_string();
    check_name(&group).map_err(|e| e.to_string())?;
    Ok(group)
}

/// A device certificate for `device`, signed by the group CA `ca`: a DNS SAN
/// `DEVICE.GROUP.spanlb` and an IP SAN for each of `addresses`.
pub fn issue_device(
    ca: &CertKey,
    device: &str,
    addresses: &[IpAddr],
) -> Result<CertKey, TrustError> {
    check_name(device)?;
    let group = ca_group(&ca.cert_pem)?;
    let what = || format!("device {device} of group {group}");
    let gen = |e| TrustError::Generate(what(), e);
    let ca_params = CertificateParams::from_ca_cert_pem(&ca.cert_pem).map_err(gen)?;
    let ca_key = KeyPair::from_pem(&ca.key_pem)
        .map_err(|e| TrustError::NotPem(PathBuf::from(CA_KEY_FILE), e.to_string()))?;
    // Rebuilding the CA certificate from its own parameters and key gives rcgen the issuer
    // (subject name, key identifier) to sign with; its DER is not used.
    let issuer = ca_params.self_signed(&ca_key).map_err(gen)?;

    let key = KeyPair::generate().map_err(gen)?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::OrganizationName, group.as_str());
    params.distinguished_name.push(DnType::CommonName, device);
    let dns = device_dns_name(&group, device);
    let dns = dns.try_into().map_err(gen)?;
    params.subject_alt_names = vec![SanType::DnsName(dns)];
    params
        .subject_alt_names
        .extend(addresses.iter().map(|a| SanType::IpAddress(*a)));
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, DEVICE_VALIDITY_DAYS);
    let cert = params.signed_by(&key, &issuer, &ca_key).map_err(gen)?;
    Ok(CertKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Paths of a certificate and key named `stem` in `dir`: `DIR/STEM.crt`, `DIR/STEM.key`.
pub fn files(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
    )
}

/// Write `pair` as `DIR/STEM.crt` (0644) and `DIR/STEM.key` (0600), creating `dir` (0700) if
/// needed. Refuses if either file exists, unless `force` (then the old files are removed and new
/// ones created, so the key is never readable by others even for a moment).
pub fn write_pair(
    dir: &Path,
    stem: &str,
    pair: &CertKey,
    force: bool,
) -> Result<(PathBuf, PathBuf), TrustError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| TrustError::Io(dir.to_path_buf(), e))?;
    let (crt, key) = files(dir, stem);
    if !force {
        for p in [&key, &crt] {
            if fs::symlink_metadata(p).is_ok() {
                return Err(TrustError::Exists(p.clone()));
            }
        }
    }
    write_new(&key, pair.key_pem.as_bytes(), 0o600, force)?;
    write_new(&crt, pair.cert_pem.as_bytes(), 0o644, force)?;
    Ok((crt, key))
}

fn write_new(path: &Path, data: &[u8], mode: u32, force: bool) -> Result<(), TrustError> {
    let io = |e| TrustError::Io(path.to_path_buf(), e);
    if force {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| match e.kind() {
            ErrorKind::AlreadyExists => TrustError::Exists(path.to_path_buf()),
            _ => io(e),
        })?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Read a PEM file; a missing file and an unreadable one are told apart.
pub fn read_pem(path: &Path) -> Result<String, TrustError> {
    let text = fs::read(path).map_err(|e| match e.kind() {
        ErrorKind::NotFound => TrustError::Missing(path.to_path_buf()),
        _ => TrustError::Io(path.to_path_buf(), e),
    })?;
    String::from_utf8(text).map_err(|_| TrustError::NotPem(path.to_path_buf(), "not text".into()))
}

/// Read `DIR/STEM.crt` and `DIR/STEM.key`.
pub fn read_pair(dir: &Path, stem: &str) -> Result<CertKey, TrustError> {
    let (crt, key) = files(dir, stem);
    Ok(CertKey {
        cert_pem: read_pem(&crt)?,
        key_pem: read_pem(&key)?,
    })
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let text = read_pem(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TrustError::NotPem(path.to_path_buf(), e.to_string()))?;
    if certs.is_empty() {
        return Err(TrustError::NotPem(
            path.to_path_buf(),
            "no CERTIFICATE block".into(),
        ));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TrustError> {
    let text = read_pem(path)?;
    PrivateKeyDer::from_pem_slice(text.as_bytes())
        .map_err(|e| TrustError::NotPem(path.to_path_buf(), format!("no private key: {e}")))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &Path) -> Result<(RootCertStore, String), TrustError> {
    let certs = load_certs(ca)?;
    let group =
        group_of_der(&certs[0]).map_err(|e| TrustError::BadCertificate(ca.to_path_buf(), e))?;
    let mut store = RootCertStore::empty();
    for c in certs {
        store
            .add(c)
            .map_err(|e| TrustError::BadCertificate(ca.to_path_buf(), e.to_string()))?;
    }
    Ok((store, group))
}

/// Check that `chain` (ours) was issued by the CA in `ca`, so a device with the wrong files
/// fails at start-up, not at every peer's handshake.
fn check_own_chain(
    ca: &Path,
    cert: &Path,
    chain: &[CertificateDer<'static>],
    store: &RootCertStore,
) -> Result<(), TrustError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store.clone()), provider())
        .build()
        .map_err(|e| TrustError::Tls(e.to_string()))?;
    verifier
        .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
        .map_err(|e| TrustError::WrongCa {
            cert: cert.to_path_buf(),
            ca: ca.to_path_buf(),
            why: e.to_string(),
        })?;
    Ok(())
}

/// The devices a listener admits, shared with the listener's TLS verifier so that a live
/// membership change (config sync) reaches listeners already running.
#[derive(Debug, Clone, Default)]
pub struct Admitted(Arc<std::sync::RwLock<Admit>>);

#[derive(Debug, Clone, Default)]
struct Admit {
    devices: Vec<String>,
    /// Any device of the group that the group CA certified (a device awaiting its initial
    /// config sync knows no other device yet).
    any: bool,
}

impl Admitted {
    /// Admits exactly `devices`.
    pub fn devices(devices: &[String]) -> Admitted {
        let a = Admitted::default();
        a.set(devices, false);
        a
    }

    /// From now on admits `devices`, or with `any` every device the group CA certified.
    pub fn set(&self, devices: &[String], any: bool) {
        let mut w = self.0.write().unwrap_or_else(|e| e.into_inner());
        w.devices = devices.to_vec();
        w.any = any;
    }

    /// The device of `group` that a certificate names, if admitted.
    fn device_of(&self, der: &[u8], group: &str) -> Result<String, TrustError> {
        let a = self.0.read().unwrap_or_else(|e| e.into_inner()).clone();
        if a.any {
            let names = dns_names(der).map_err(TrustError::BadPeerCertificate)?;
            let tail = format!(".{}", device_dns_name(group, "").trim_start_matches('.'));
            if let Some(d) = names.iter().find_map(|n| {
                n.strip_suffix(&tail)
                    .filter(|d| !d.is_empty() && !d.contains('.'))
            }) {
                return Ok(d.to_string());
            }
        }
        device_of(der, group, &a.devices)
    }
}

/// After a handshake: the device of `group` the peer's certificate names, refused unless
/// `admitted` admits it (the chain was verified against the group CA in the handshake).
pub fn admitted_peer(
    conn: &CommonState,
    group: &str,
    admitted: &Admitted,
) -> Result<String, TrustError> {
    let certs = conn
        .peer_certificates()
        .ok_or(TrustError::NoPeerCertificate)?;
    let ee = certs.first().ok_or(TrustError::NoPeerCertificate)?;
    admitted.device_of(ee, group)
}

/// The mirror listener's TLS configuration: our certificate, and client certificates required,
/// signed by the group CA in `ca` and naming one of `group_devices`.
pub fn server_config(
    ca: &Path,
    my_cert: &Path,
    my_key: &Path,
    group_devices: &[String],
) -> Result<Arc<ServerConfig>, TrustError> {
    server_config_admitting(ca, my_cert, my_key, Admitted::devices(group_devices))
}

/// The same, admitting the devices `admitted` names when a client connects.
pub fn server_config_admitting(
    ca: &Path,
    my_cert: &Path,
    my_key: &Path,
    admitted: Admitted,
) -> Result<Arc<ServerConfig>, TrustError> {
    let (store, group) = roots(ca)?;
    let chain = load_certs(my_cert)?;
    let key = load_key(my_key)?;
    check_own_chain(ca, my_cert, &chain, &store)?;
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider())
        .build()
        .map_err(|e| TrustError::Tls(e.to_string()))?;
    let verifier = Arc::new(GroupVerifier {
        inner,
        group,
        admitted,
    });
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TrustError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TrustError::Tls(format!("{}: {e}", my_key.display())))?;
    Ok(Arc::new(config))
}

/// The mirror client's TLS configuration: our certificate as client certificate, and the server
/// verified against the group CA. Connect with [`device_server_name`] of the expected device.
pub fn client_config(
    ca: &Path,
    my_cert: &Path,
    my_key: &Path,
) -> Result<Arc<ClientConfig>, TrustError> {
    let (store, _) = roots(ca)?;
    let chain = load_certs(my_cert)?;
    let key = load_key(my_key)?;
    check_own_chain(ca, my_cert, &chain, &store)?;
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TrustError::Tls(e.to_string()))?
        .with_root_certificates(store)
        .with_client_auth_cert(chain, key)
        .map_err(|e| TrustError::Tls(format!("{}: {e}", my_key.display())))?;
    Ok(Arc::new(config))
}

/// The DNS SANs of a certificate.
fn dns_names(der: &[u8]) -> Result<Vec<String>, String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    Ok(names)
}

/// The device of `group` that a certificate names, if it is one of `devices`.
fn device_of(der: &[u8], group: &str, devices: &[String]) -> Result<String, TrustError> {
    let names = dns_names(der).map_err(TrustError::BadPeerCertificate)?;
    for d in devices {
        if names.contains(&device_dns_name(group, d)) {
            return Ok(d.clone());
        }
    }
    Err(TrustError::NotInGroup {
        group: group.to_string(),
        names: names.join(", "),
    })
}

/// After a handshake: the device of `group` the peer's certificate names, refused unless it is
/// one of `devices`. The chain itself was verified against the group CA during the handshake.
pub fn peer_device(
    conn: &CommonState,
    group: &str,
    devices: &[String],
) -> Result<String, TrustError> {
    let certs = conn
        .peer_certificates()
        .ok_or(TrustError::NoPeerCertificate)?;
    let ee = certs.first().ok_or(TrustError::NoPeerCertificate)?;
    device_of(ee, group, devices)
}

/// WebPKI client verification against the group CA, then: the certificate names a device of
/// the group. A stranger is refused in the handshake, before it can send anything.
#[derive(Debug)]
struct GroupVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    group: String,
    admitted: Admitted,
}

impl ClientCertVerifier for GroupVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        true
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.admitted
            .device_of(end_entity, &self.group)
            .map_err(|e| {
                rustls::Error::InvalidCertificate(rustls::CertificateError::Other(
                    rustls::OtherError(Arc::new(e)),
                ))
            })?;
        Ok(ok)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// What `lbctl trust show` prints for one certificate file.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub file: PathBuf,
    pub subject: String,
    pub sans: Vec<String>,
    pub not_after: String,
    pub is_ca: bool,
    /// SHA-256 of the DER, upper-case hex bytes joined by `:`.
    pub fingerprint: String,
}

/// SHA-256 of `der` as colon-separated upper-case hex.
pub fn fingerprint(der: &[u8]) -> String {
    let d = Sha256::digest(der);
    d.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Subject, SANs, not-after and fingerprint of the first certificate in `path`.
pub fn inspect(path: &Path) -> Result<CertInfo, TrustError> {
    let der = load_certs(path)?.remove(0);
    let bad = |e: String| TrustError::BadCertificate(path.to_path_buf(), e);
    let (_, cert) = X509Certificate::from_der(&der).map_err(|e| bad(e.to_string()))?;
    let mut sans = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => sans.push(format!("DNS:{d}")),
                GeneralName::URI(u) => sans.push(format!("URI:{u}")),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => sans.push(format!(
                        "IP:{}",
                        IpAddr::from(<[u8; 4]>::try_from(*b).unwrap())
                    )),
                    16 => sans.push(format!(
                        "IP:{}",
                        IpAddr::from(<[u8; 16]>::try_from(*b).unwrap())
                    )),
                    _ => sans.push("IP:?".to_string()),
                },
                other => sans.push(format!("{other}")),
            }
        }
    }
    Ok(CertInfo {
        file: path.to_path_buf(),
        subject: cert.subject().to_string(),
        sans,
        not_after: cert.validity().not_after.to_string(),
        is_ca: cert.is_ca(),
        fingerprint: fingerprint(&der),
    })
}
