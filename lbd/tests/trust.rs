//! Device trust for the mirroring channels (lbd::mirror::trust and `lbctl trust`): mutual TLS
//! between devices of a group over loopback, refusal of strangers, key file permissions, and
//! the `lbctl trust init/issue/show` round trip.

use std::os::unix::fs::PermissionsExt;

use std::process::Command;
use std::sync::Arc;

mod trust_dir;

use lbd::mirror::trust::{self as mt, TrustError};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use trust_dir::{cert_der, group_dir, stranger_client, TempDir, LOOPBACK};

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// What the server side of one connection saw.
type Accepted = Result<String, String>;

/// Listen on 127.0.0.1 with `server`'s config; accept one connection, check the peer with
/// `peer_device`, echo one line. Returns the port and the accept outcome.
async fn serve_one(
    config: Arc<rustls::ServerConfig>,
    group: &str,
    devices: Vec<String>,
) -> (u16, tokio::task::JoinHandle<Accepted>) {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let group = group.to_string();
    let h = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = TlsAcceptor::from(config)
            .accept(tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let peer = mt::peer_device(tls.get_ref().1, &group, &devices).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        tls.write_all(&buf).await.map_err(|e| e.to_string())?;
        tls.shutdown().await.ok();
        Ok(peer)
    });
    (port, h)
}

/// Connect as a client and exchange "hello"; the server device's name from `peer_device`.
async fn client_exchange(
    config: Arc<rustls::ClientConfig>,
    port: u16,
    group: &str,
    server_device: &str,
    devices: &[String],
) -> Result<String, String> {
    let tcp = TcpStream::connect((LOOPBACK, port)).await.unwrap();
    let name = mt::device_server_name(group, server_device).unwrap();
    let mut tls = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let peer = mt::peer_device(tls.get_ref().1, group, devices).map_err(|e| e.to_string())?;
    tls.write_all(b"hello").await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 5];
    // TLS 1.3: a client certificate the server refuses shows up here, not in connect().
    tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
    assert_eq!(&buf, b"hello");
    Ok(peer)
}

#[tokio::test]
async fn two_devices_of_the_group_learn_each_others_names() {
    let dir = group_dir("dg1", &["a", "b"]);
    let devices = strings(&["a", "b"]);
    let server = mt::server_config(&dir.ca(), &dir.crt("b"), &dir.key("b"), &devices).unwrap();
    let client = mt::client_config(&dir.ca(), &dir.crt("a"), &dir.key("a")).unwrap();
    let (port, h) = serve_one(server, "dg1", devices.clone()).await;
    let seen_by_client = client_exchange(client, port, "dg1", "b", &devices).await;
    let seen_by_server = h.await.unwrap();
    assert_eq!(seen_by_client, Ok("b".to_string()));
    assert_eq!(seen_by_server, Ok("a".to_string()));
}

#[tokio::test]
async fn client_connecting_to_the_wrong_device_name_is_refused_by_webpki() {
    let dir = group_dir("dg1", &["a", "b"]);
    let devices = strings(&["a", "b"]);
    let server = mt::server_config(&dir.ca(), &dir.crt("b"), &dir.key("b"), &devices).unwrap();
    let client = mt::client_config(&dir.ca(), &dir.crt("a"), &dir.key("a")).unwrap();
    let (port, h) = serve_one(server, "dg1", devices.clone()).await;
    // The client expects device "c", the server is "b".
    let r = client_exchange(client, port, "dg1", "c", &devices).await;
    assert!(r.is_err(), "{r:?}");
    assert!(h.await.unwrap().is_err());
}

#[tokio::test]
async fn client_with_a_certificate_of_another_ca_is_refused() {
    let dir = group_dir("dg1", &["a", "b"]);
    // Same group and device names, another CA.
    let other = group_dir("dg1", &["a"]);
    let devices = strings(&["a", "b"]);
    let server = mt::server_config(&dir.ca(), &dir.crt("b"), &dir.key("b"), &devices).unwrap();
    // The stranger trusts the real CA (so it gets past verifying the server) but presents a
    // certificate of its own CA.
    let stranger = stranger_client(&dir.ca(), &other.crt("a"), &other.key("a"));
    let (port, h) = serve_one(server, "dg1", devices.clone()).await;
    let r = client_exchange(stranger, port, "dg1", "b", &devices).await;
    assert!(r.is_err(), "{r:?}");
    let served = h.await.unwrap();
    let e = served.unwrap_err();
    assert!(e.starts_with("handshake:"), "{e}");
}

#[tokio::test]
async fn client_without_a_certificate_is_refused() {
    let dir = group_dir("dg1", &["a", "b"]);
    let devices = strings(&["a", "b"]);
    let server = mt::server_config(&dir.ca(), &dir.crt("b"), &dir.key("b"), &devices).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der(&dir.ca())).unwrap();
    let anonymous = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    let (port, h) = serve_one(server, "dg1", devices.clone()).await;
    let r = client_exchange(anonymous, port, "dg1", "b", &devices).await;
    assert!(r.is_err(), "{r:?}");
    let e = h.await.unwrap().unwrap_err();
    assert!(e.starts_with("handshake:"), "{e}");
}

#[tokio::test]
async fn device_of_the_right_ca_but_not_in_the_group_is_refused() {
    let dir = group_dir("dg1", &["a", "b", "c"]);
    let group = strings(&["a", "b"]);
    // In the handshake, by the server's verifier.
    let server = mt::server_config(&dir.ca(), &dir.crt("b"), &dir.key("b"), &group).unwrap();
    let client_c = mt::client_config(&dir.ca(), &dir.crt("c"), &dir.key("c")).unwrap();
    let (port, h) = serve_one(server, "dg1", group.clone()).await;
    let r = client_exchange(client_c, port, "dg1", "b", &group).await;
    assert!(r.is_err(), "{r:?}");
    let e = h.await.unwrap().unwrap_err();
    assert!(e.starts_with("handshake:"), "{e}");

    // And by peer_device after a handshake: client a reaches server c (a server whose own
    // listener accepts a), but c is not in a's group list.
    let all = strings(&["a", "b", "c"]);
    let server_c = mt::server_config(&dir.ca(), &dir.crt("c"), &dir.key("c"), &all).unwrap();
    let client_a = mt::client_config(&dir.ca(), &dir.crt("a"), &dir.key("a")).unwrap();
    let (port, h) = serve_one(server_c, "dg1", all).await;
    let e = client_exchange(client_a, port, "dg1", "c", &group)
        .await
        .unwrap_err();
    assert!(e.contains("names no device of group dg1"), "{e}");
    assert!(e.contains("c.dg1.spanlb"), "{e}");
    h.abort();
}

/// One connection to a listener whose admitted devices are `admitted` (shared, changeable):
/// the device the server side saw, or why it refused.
async fn admitted_exchange(
    dir: &trust_dir::TempDir,
    admitted: &mt::Admitted,
    client: Arc<rustls::ClientConfig>,
) -> (Result<String, String>, Accepted) {
    let server =
        mt::server_config_admitting(&dir.ca(), &dir.crt("b"), &dir.key("b"), admitted.clone())
            .unwrap();
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let admitted = admitted.clone();
    let h = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = TlsAcceptor::from(server)
            .accept(tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let peer =
            mt::admitted_peer(tls.get_ref().1, "dg1", &admitted).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        tls.write_all(&buf).await.map_err(|e| e.to_string())?;
        tls.shutdown().await.ok();
        Ok(peer)
    });
    let all = strings(&["a", "b", "c"]);
    let r = client_exchange(client, port, "dg1", "b", &all).await;
    (r, h.await.unwrap())
}

#[tokio::test]
async fn admitted_devices_change_live_and_any_device_of_the_ca_never_admits_a_stranger() {
    let dir = group_dir("dg1", &["a", "b", "c"]);
    let other = group_dir("dg1", &["c"]);
    let client_c = || mt::client_config(&dir.ca(), &dir.crt("c"), &dir.key("c")).unwrap();
    let admitted = mt::Admitted::devices(&strings(&["a"]));
    let (_, served) = admitted_exchange(&dir, &admitted, client_c()).await;
    assert!(served.unwrap_err().starts_with("handshake:"));
    // c joins the group: the same listener configuration admits it from now on.
    admitted.set(&strings(&["a", "c"]), false);
    let (r, served) = admitted_exchange(&dir, &admitted, client_c()).await;
    assert_eq!((r, served), (Ok("b".to_string()), Ok("c".to_string())));
    // A device awaiting its initial sync admits any device the group CA certified ...
    admitted.set(&[], true);
    let (_, served) = admitted_exchange(&dir, &admitted, client_c()).await;
    assert_eq!(served, Ok("c".to_string()));
    // ... and still no certificate of another CA naming the same device.
    let stranger = stranger_client(&dir.ca(), &other.crt("c"), &other.key("c"));
    let (r, served) = admitted_exchange(&dir, &admitted, stranger).await;
    assert!(r.is_err(), "{r:?}");
    assert!(served.unwrap_err().starts_with("handshake:"));
}

#[test]
fn key_files_are_owner_only_and_not_overwritten() {
    let dir = group_dir("dg1", &["a"]);
    for f in ["ca.key", "a.key"] {
        let mode = std::fs::metadata(dir.path().join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}: {mode:o}");
    }
    let ca = mt::read_pair(dir.path(), "ca").unwrap();
    let again = mt::issue_device(&ca, "a", &[]).unwrap();
    let e = mt::write_pair(dir.path(), "a", &again, false).unwrap_err();
    assert!(matches!(e, TrustError::Exists(_)), "{e}");
    assert!(e.to_string().contains("already exists"), "{e}");
    mt::write_pair(dir.path(), "a", &again, true).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.key("a")).unwrap(),
        again.key_pem
    );
    let mode = std::fs::metadata(dir.key("a"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn errors_name_the_file_and_the_problem() {
    let dir = group_dir("dg1", &["a"]);
    let missing = dir.path().join("nope.crt");
    let e = mt::client_config(&missing, &dir.crt("a"), &dir.key("a")).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}: missing file", missing.display())
    );

    let junk = dir.path().join("junk.crt");
    std::fs::write(&junk, "hello\n").unwrap();
    let e = mt::client_config(&junk, &dir.crt("a"), &dir.key("a")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("{}: not PEM", junk.display())),
        "{e}"
    );

    // Our own certificate from another CA: refused when the configuration is built.
    let other = group_dir("dg1", &["a"]);
    let e = mt::server_config(&dir.ca(), &other.crt("a"), &other.key("a"), &[]).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("not issued by the group CA"), "{msg}");
    assert!(matches!(e, TrustError::WrongCa { .. }), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
}

#[test]
fn lbctl_trust_init_issue_show_round_trip() {
    let dir = TempDir::new("lbctl");
    let d = dir.path().to_str().unwrap();
    let lbctl = env!("CARGO_BIN_EXE_lbctl");
    let run = |args: &[&str]| Command::new(lbctl).args(args).output().unwrap();

    let out = run(&["trust", "init", "--group", "dg7", "--dir", d]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&[
        "trust",
        "issue",
        "--dir",
        d,
        "--device",
        "lb1",
        "--address",
        "10.1.0.1",
        "--address",
        "fd00::1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["trust", "issue", "--dir", d, "--device", "lb2"]);
    assert!(out.status.success());

    // Existing key: refused (1) without --force, replaced with it.
    let out = run(&["trust", "issue", "--dir", d, "--device", "lb2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    let out = run(&["trust", "issue", "--dir", d, "--device", "lb2", "--force"]);
    assert!(out.status.success());
    // Usage errors: 2.
    assert_eq!(run(&["trust", "issue", "--dir", d]).status.code(), Some(2));
    assert_eq!(
        run(&[
            "trust",
            "issue",
            "--dir",
            d,
            "--device",
            "x",
            "--address",
            "nope"
        ])
        .status
        .code(),
        Some(2)
    );
    // Bad names and a missing CA: 1.
    assert_eq!(
        run(&["trust", "issue", "--dir", d, "--device", "a.b"])
            .status
            .code(),
        Some(1)
    );
    let empty = TempDir::new("empty");
    let out = run(&[
        "trust",
        "issue",
        "--dir",
        empty.path().to_str().unwrap(),
        "--device",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ca.crt: missing file"));

    for f in ["ca.key", "lb1.key", "lb2.key"] {
        let mode = std::fs::metadata(dir.path().join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }

    let out = run(&["trust", "show", "--dir", d]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for f in ["ca", "lb1", "lb2"] {
        let der = cert_der(&dir.path().join(format!("{f}.crt")));
        let want: Vec<String> = Sha256::digest(&der)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        assert!(
            text.contains(&want.join(":")),
            "{f} fingerprint missing:\n{text}"
        );
    }
    assert!(text.contains("DNS:lb1.dg7.spanlb"), "{text}");
    assert!(text.contains("IP:10.1.0.1"), "{text}");
    assert!(text.contains("IP:fd00::1"), "{text}");
    assert!(text.contains("CN=dg7"), "{text}");
    assert!(text.contains("not after:"), "{text}");

    let out = run(&["--json", "trust", "show", "--dir", d]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3);

    // The certificates lbctl made work for a channel.
    let devices = strings(&["lb1", "lb2"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ca = dir.path().join("ca.crt");
        let server = mt::server_config(
            &ca,
            &dir.path().join("lb2.crt"),
            &dir.path().join("lb2.key"),
            &devices,
        )
        .unwrap();
        let client = mt::client_config(
            &ca,
            &dir.path().join("lb1.crt"),
            &dir.path().join("lb1.key"),
        )
        .unwrap();
        let (port, h) = serve_one(server, "dg7", devices.clone()).await;
        let r = client_exchange(client, port, "dg7", "lb2", &devices).await;
        assert_eq!(r, Ok("lb2".to_string()));
        assert_eq!(h.await.unwrap(), Ok("lb1".to_string()));
    });
}
