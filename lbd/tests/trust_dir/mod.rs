//! Test helpers shared by the trust and mirroring-link tests: a temporary trust directory with a
//! group CA and device certificates, and a TLS client of another CA (a stranger).

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use lbd::mirror::trust as mt;

pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "spanlb-trust-{what}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn ca(&self) -> PathBuf {
        self.0.join("ca.crt")
    }
    pub fn crt(&self, d: &str) -> PathBuf {
        self.0.join(format!("{d}.crt"))
    }
    pub fn key(&self, d: &str) -> PathBuf {
        self.0.join(format!("{d}.key"))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A trust directory of group `group` with a CA and the given devices (loopback addresses).
pub fn group_dir(group: &str, devices: &[&str]) -> TempDir {
    let dir = TempDir::new(group);
    let ca = mt::create_ca(group).unwrap();
    mt::write_pair(dir.path(), "ca", &ca, false).unwrap();
    for d in devices {
        let pair = mt::issue_device(&ca, d, &[LOOPBACK]).unwrap();
        mt::write_pair(dir.path(), d, &pair, false).unwrap();
    }
    dir
}

pub fn cert_der(path: &Path) -> rustls::pki_types::CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_file(path).unwrap()
}

/// A client that verifies the server against `ca` but presents another CA's certificate.
pub fn stranger_client(ca: &Path, cert: &Path, key: &Path) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der(ca)).unwrap();
    let chain = vec![cert_der(cert)];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap(),
    )
}
