//! Issue 6, test 5: a mirror client or server without a valid device certificate of the group
//! is refused and logged, and nothing it sends is applied.
//!
//! In the seed lab with mirroring (B mirrors tg-2 to C, C listens on 192.168.100.8:1030):
//!
//! - [`rogue_mirror_clients_are_refused`]: from device A's namespace, three rogue senders
//!   offer C a full resync of tg-2 with 300 persistence records whose keys (`198.51.*`) nothing
//!   else uses: one presents a certificate of another CA that names itself `seed` and the
//!   device `b` (and trusts the group CA, so it completes its side of the handshake), one does
//!   TLS without a client certificate, one sends the mirroring frames over plain TCP. None gets
//!   a mirroring answer; C's persistence table holds none of their keys; C's lbd log has a
//!   "refused connection" line naming A's address for each; B's genuine tg-2 channel to C
//!   stays in sync with its record count unchanged.
//! - [`rogue_mirror_server_is_refused`]: the server side, at the link level. Making B's own
//!   lbd connect to a rogue would need the rogue on C's mirror address while C stays alive
//!   for the device group (C's lbd holds that port, and with C's daemons stopped tg-2's
//!   next-active becomes A); there is no packet filter in the lab to redirect the port. So
//!   the test runs lbd's own sender ([`lbd::mirror::link::spawn_sender`]) inside B's namespace
//!   with B's real trust files of the lab toward a rogue server in C's namespace on
//!   192.168.100.8:2030, which presents a certificate of another CA naming `c`, asks for no
//!   client certificate and would acknowledge anything. The sender must never get past the
//!   handshake (no hello, no record reaches the rogue, never in sync) and must log the trust
//!   error. A control run against the same server code with C's genuine certificate (port
//!   2031) reaches in sync with all 300 records, so the harness would see a sender that
//!   skipped the check.
//! - [`a_device_that_does_not_hold_the_traffic_group_cannot_take_its_channel`] (issue 15):
//!   device A, with its genuine certificate and from its own mirror address, runs lbd's
//!   sender for tg-2 (held by B) toward C with the 300 rogue records. C refuses it as not the
//!   holder (after the holder grace), its log says so, `lbctl show mirroring` counts it, C
//!   holds none of the keys, and B's channel stays in sync. Before, A's channel replaced
//!   B's and its resync replaced C's copy of tg-2.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lbd::mirror::channel::{SenderStatus, State, Timers};
use lbd::mirror::link::{self, SenderLink, SnapshotSource};
use lbd::mirror::proto::{self, Message, Record, RecordKind};
use lbd::mirror::trust;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use spanlb_tests::cluster::{prereqs, ClusterLab};
use spanlb_tests::mirror::{
    add_client_addrs, mirror_lab, persistence_keys, poll, receiver, sender, sessions_through,
    src_persistence_opts,
};
use spanlb_tests::topology::{DEVICES, SERVERS, SERVER_TCP_PORT, VIP, VIP_TCP_PORT};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Records each rogue offers.
const ROGUE_RECORDS: usize = 300;
/// The prefix of the rogue records' keys.
const ROGUE_PREFIX: &str = "198.51.";
const TG: &str = "tg-2";
const C_MIRROR: &str = "192.168.100.8";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn ha_of(dev: &str) -> IpAddr {
    let d = DEVICES.iter().find(|d| d.name == dev).expect("device");
    d.ha.parse().expect("HA address literal")
}

/// Rogue record `i`: a source-address record of the lab's `web` virtual server.
fn rogue_record(i: usize) -> Record {
    let member: SocketAddr = format!("{}:{SERVER_TCP_PORT}", SERVERS[0].1)
        .parse()
        .expect("member literal");
    Record {
        update_id: i as u64 + 1,
        traffic_group: TG.into(),
        kind: RecordKind::Persistence {
            profile: "src".into(),
            scope: "web".into(),
            key: format!("{ROGUE_PREFIX}{}.{}/32", 100 + i / 250, i % 250 + 1),
            pool: "web".into(),
            member,
            virtual_server: "web".into(),
            expiry_ms: now_ms() + 600_000,
        },
    }
}

/// A full resync of tg-2 as device `b` would send it: hello, begin, records, end.
fn rogue_frames() -> Vec<u8> {
    let mut out = Vec::new();
    let mut put = |m: &Message| proto::encode(m, &mut out).expect("encodable");
    put(&Message::Hello {
        device: "b".into(),
        traffic_group: TG.into(),
        epoch: now_ms(),
        resume_from: None,
    });
    put(&Message::ResyncBegin {
        records: ROGUE_RECORDS as u64,
    });
    for i in 0..ROGUE_RECORDS {
        put(&Message::Record(rogue_record(i)));
    }
    put(&Message::ResyncEnd {
        last_id: ROGUE_RECORDS as u64,
    });
    out
}

/// Trust files of another CA that also calls itself `seed`: its CA and a certificate for
/// `device` naming `ip`.
fn rogue_trust(dir: &Path, device: &str, ip: IpAddr) -> Result<(), String> {
    let ca = trust::create_ca("seed").map_err(|e| e.to_string())?;
    trust::write_pair(dir, "ca", &ca, true).map_err(|e| e.to_string())?;
    let pair = trust::issue_device(&ca, device, &[ip]).map_err(|e| e.to_string())?;
    trust::write_pair(dir, device, &pair, true).map_err(|e| e.to_string())?;
    Ok(())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn cert(path: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(path).expect("certificate file")
}

fn key(path: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(path).expect("key file")
}

/// A TLS client that verifies the server against the group CA `ca`, presenting `auth`
/// (certificate, key) or no certificate.
fn rogue_client_config(ca: &Path, auth: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert(ca)).expect("CA certificate");
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots);
    Arc::new(match auth {
        Some((c, k)) => b
            .with_client_auth_cert(vec![cert(c)], key(k))
            .expect("client certificate"),
        None => b.with_no_client_auth(),
    })
}

/// Everything the peer sends until it closes (at most 5 s), and whether it ended in an
/// error; a mirroring answer would start with a decodable hello.
async fn drain<S: AsyncRead + Unpin>(s: &mut S) -> (Vec<u8>, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(until, s.read(&mut buf)).await {
            Err(_) => return (got, "still open after 5 s".into()),
            Ok(Ok(0)) => return (got, "closed".into()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => return (got, format!("closed: {e}")),
        }
    }
}

/// One rogue attempt on `addr`: TLS with `cfg`, or plain TCP without. Returns what happened,
/// and whether the peer answered with a mirroring message.
async fn rogue_attempt(addr: SocketAddr, cfg: Option<Arc<rustls::ClientConfig>>) -> (String, bool) {
    let frames = rogue_frames();
    let tcp = match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return (format!("connect: {e}"), false),
        Err(_) => return ("connect timed out".into(), false),
    };
    let answered =
        |bytes: &[u8]| matches!(proto::decode(bytes), Ok(Some((Message::Hello { .. }, _))));
    match cfg {
        None => {
            let mut tcp = tcp;
            let _ = tcp.write_all(&frames).await;
            let (got, end) = drain(&mut tcp).await;
            (
                format!("plain tcp: {} bytes back, {end}", got.len()),
                answered(&got),
            )
        }
        Some(cfg) => {
            let name = trust::device_server_name("seed", "c").expect("server name");
            let connect = tokio_rustls::TlsConnector::from(cfg).connect(name, tcp);
            match tokio::time::timeout(Duration::from_secs(5), connect).await {
                Err(_) => ("tls handshake timed out".into(), false),
                Ok(Err(e)) => (format!("tls handshake failed: {e}"), false),
                Ok(Ok(mut tls)) => {
                    let wrote = async {
                        tls.write_all(&frames).await?;
                        tls.flush().await
                    }
                    .await;
                    let (got, end) = drain(&mut tls).await;
                    (
                        format!(
                            "tls: write {wrote:?}, {} bytes of application data back, {end}",
                            got.len()
                        ),
                        answered(&got),
                    )
                }
            }
        }
    }
}

fn mirroring(lab: &ClusterLab, dev: &str) -> Option<Value> {
    lab.lbctl(dev, &["show", "mirroring"]).ok()
}

/// B's tg-2 sender and C's tg-2 receiver, once both are in sync with everything acked.
fn legit_channel(lab: &ClusterLab) -> Option<(Value, Value)> {
    let s = sender(&mirroring(lab, "b")?, TG, "c");
    let r = receiver(&mirroring(lab, "c")?, TG);
    (s["state"] == "in-sync"
        && s["last_acked"] == s["last_sent"]
        && r["in_sync"] == true
        && r["connected"] == true
        && r["peer"] == "b")
        .then_some((s, r))
}

/// The mirroring lab with `clients` sessions through b (so b mirrors tg-2's records to c),
/// once b's tg-2 channel to c is in sync; with c's tg-2 receiver as it was then.
fn lab_with_clients_through_b(name: &str, clients: usize) -> (ClusterLab, Value) {
    let lab = mirror_lab(name, src_persistence_opts());
    add_client_addrs(&lab, clients);
    let vip: IpAddr = VIP.parse().expect("VIP literal");
    let got = sessions_through(
        &lab,
        "b",
        SocketAddr::new(vip, VIP_TCP_PORT),
        |_| b"hello\n".to_vec(),
        20000,
        clients,
    );
    lab.check(
        got.iter().all(Result::is_ok),
        "clients found a path through b",
    );
    let before = poll(Duration::from_secs(10), Duration::from_millis(100), || {
        legit_channel(&lab)
    });
    let ((_, r_before), _) = lab.ok(
        before.ok_or("b's tg-2 channel to c not in sync"),
        "the genuine channel",
    );
    println!("c's tg-2 receiver before: {r_before}");
    (lab, r_before)
}

#[test]
fn rogue_mirror_clients_are_refused() {
    if !prereqs() {
        return;
    }
    let (lab, r_before) = lab_with_clients_through_b("mirror_rogue_clients", 30);

    let rogue = lab.lab.dir().join("rogue-trust");
    lab.ok(rogue_trust(&rogue, "b", ha_of("a")), "rogue trust files");
    let ca = lab.lab.dir().join("trust").join("ca.crt");
    let (rcrt, rkey) = trust::files(&rogue, "b");
    let target = SocketAddr::new(C_MIRROR.parse().expect("literal"), 1030);
    let attempts = vec![
        (
            "certificate of another CA naming b",
            Some(rogue_client_config(&ca, Some((&rcrt, &rkey)))),
        ),
        (
            "TLS without a client certificate",
            Some(rogue_client_config(&ca, None)),
        ),
        ("plain TCP", None),
    ];
    let results = lab.ok(
        lab.device("a").ns.run_in(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let mut out = Vec::new();
                for (what, cfg) in attempts {
                    out.push((what, rogue_attempt(target, cfg).await));
                }
                out
            })
        }),
        "rogue clients in a's namespace",
    );
    for (what, (how, answered)) in &results {
        println!("rogue client ({what}): {how}");
        lab.check(
            !answered,
            format!("c answered the rogue client ({what}) as a mirroring peer: {how}"),
        );
    }

    // Nothing applied; each attempt refused and logged with the rogue's address.
    std::thread::sleep(Duration::from_secs(1));
    let c_tg2 = lab.ok(persistence_keys(&lab, "c", TG, ""), "c's keys");
    let any_tg: BTreeSet<String> = lab
        .lbctl("c", &["show", "persistence"])
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|r| r["key"].as_str().map(str::to_string))
        .filter(|k| k.starts_with(ROGUE_PREFIX))
        .collect();
    println!(
        "after the rogues: c holds {} tg-2 records, {} with a rogue key (any traffic group)",
        c_tg2.len(),
        any_tg.len()
    );
    lab.check(
        any_tg.is_empty(),
        format!(
            "c applied {} rogue records: {:?}",
            any_tg.len(),
            any_tg.iter().take(5).collect::<Vec<_>>()
        ),
    );
    let log = std::fs::read_to_string(lab.lab.dir().join("lbd-c.log")).unwrap_or_default();
    let rogue_ip = format!("peer={}:", ha_of("a"));
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refused connection") && l.contains(&rogue_ip))
        .collect();
    for l in &refusals {
        println!("c's log: {l}");
    }
    lab.check(
        refusals.len() >= results.len(),
        format!(
            "c's log has {} refusals naming {}, expected {}",
            refusals.len(),
            ha_of("a"),
            results.len()
        ),
    );

    // The genuine channel is untouched: in sync, same record count.
    let after = poll(Duration::from_secs(5), Duration::from_millis(100), || {
        legit_channel(&lab)
    });
    let ((s_after, r_after), _) = lab.ok(
        after.ok_or("b's tg-2 channel to c not in sync after the rogues"),
        "the genuine channel after",
    );
    println!("after: b's tg-2 sender {s_after}\nc's tg-2 receiver {r_after}");
    lab.check(
        r_after["records"] == r_before["records"],
        format!(
            "c's tg-2 receiver records changed: {} -> {}",
            r_before["records"], r_after["records"]
        ),
    );
}

/// What the rogue server saw.
#[derive(Default, Debug)]
struct Seen {
    tcp: AtomicU64,
    handshakes: AtomicU64,
    hellos: AtomicU64,
    records: AtomicU64,
}

/// A mirroring server that admits anyone (no client certificate asked) with the certificate
/// `crt`/`key`, answers hellos, heartbeats and acknowledges every update; for `run`.
async fn rogue_server(
    listener: TcpListener,
    crt: PathBuf,
    key_file: PathBuf,
    seen: Arc<Seen>,
    run: Duration,
) {
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_no_client_auth()
        .with_single_cert(vec![cert(&crt)], key(&key_file))
        .expect("server certificate");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let serve = async {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            seen.tcp.fetch_add(1, Ordering::Relaxed);
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(Ok(tls)) =
                    tokio::time::timeout(Duration::from_secs(3), acceptor.accept(tcp)).await
                else {
                    return;
                };
                seen.handshakes.fetch_add(1, Ordering::Relaxed);
                let _ = rogue_session(tls, &seen).await;
            });
        }
    };
    let _ = tokio::time::timeout(run, serve).await;
}

async fn rogue_session<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    seen: &Seen,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let mut acked = 0;
    let mut applied = 0;
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut out = Vec::new();
        while let Ok(Some((msg, used))) = proto::decode(&buf) {
            buf.drain(..used);
            match msg {
                Message::Hello {
                    traffic_group,
                    epoch,
                    ..
                } => {
                    seen.hellos.fetch_add(1, Ordering::Relaxed);
                    let hello = Message::Hello {
                        device: "c".into(),
                        traffic_group,
                        epoch,
                        resume_from: None,
                    };
                    let _ = proto::encode(&hello, &mut out);
                }
                Message::Record(r) => {
                    seen.records.fetch_add(1, Ordering::Relaxed);
                    applied = applied.max(r.update_id);
                }
                Message::Delete { id, .. } => applied = applied.max(id),
                Message::ResyncEnd { last_id } => applied = applied.max(last_id),
                Message::Heartbeat { .. } => {
                    let hb = Message::Heartbeat { sent_ms: now_ms() };
                    let _ = proto::encode(&hb, &mut out);
                }
                _ => {}
            }
        }
        if applied > acked {
            acked = applied;
            let _ = proto::encode(
                &Message::Ack {
                    last_applied: acked,
                },
                &mut out,
            );
        }
        if !out.is_empty() {
            s.write_all(&out).await?;
            s.flush().await?;
        }
    }
}

/// The sender's snapshot: the rogue records (what B would mirror).
struct Records;

impl SnapshotSource for Records {
    fn snapshot(&self, _tg: &str) -> Vec<Record> {
        (0..ROGUE_RECORDS).map(rogue_record).collect()
    }
}

/// A log sink for the sender's tracing output.
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// lbd's sender configuration for device `device` sending tg-2 to c at `addr` (from `local`
/// when given), with the lab's genuine trust files of `device`.
fn tg2_sender_to_c(
    trust_dir: &Path,
    device: &str,
    addr: SocketAddr,
    local: Option<IpAddr>,
) -> SenderLink {
    let (cert, key) = trust::files(trust_dir, device);
    SenderLink {
        device: device.into(),
        group: "seed".into(),
        peer_device: "c".into(),
        traffic_group: TG.into(),
        primary: addr,
        secondary: None,
        local_primary: local,
        local_secondary: None,
        ca: trust_dir.join("ca.crt"),
        cert,
        key,
        epoch: now_ms(),
        capacity: 4096,
        timers: Timers {
            heartbeat_ms: 100,
            dead_ms: 1000,
        },
        io_timeout: Duration::from_secs(2),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
    }
}

/// Runs, in C's namespace, a rogue server on `port` with `crt`/`key`, and in B's namespace
/// lbd's sender with B's genuine trust files toward it, for `run`. Returns what the server
/// saw, the sender's last status and its log.
fn sender_against(
    lab: &ClusterLab,
    port: u16,
    crt: PathBuf,
    key_file: PathBuf,
    run: Duration,
) -> (Arc<Seen>, SenderStatus, String) {
    let addr = SocketAddr::new(C_MIRROR.parse().expect("literal"), port);
    let seen = Arc::new(Seen::default());
    let listener = lab.ok(
        lab.device("c")
            .ns
            .run_in(move || std::net::TcpListener::bind(addr)),
        "c's namespace",
    );
    let listener = lab.ok(listener, "binding the rogue server");
    lab.ok(listener.set_nonblocking(true), "nonblocking listener");
    let server_seen = seen.clone();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let l = TcpListener::from_std(listener).expect("tokio listener");
            rogue_server(l, crt, key_file, server_seen, run + Duration::from_secs(1)).await;
        });
    });
    let trust_dir = lab.lab.dir().join("trust");
    let logs = LogBuf::default();
    let sink = logs.clone();
    let status = lab.ok(
        lab.device("b").ns.run_in(move || {
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || sink.clone())
                .with_ansi(false)
                .with_max_level(tracing::Level::DEBUG)
                .finish();
            let _guard = tracing::subscriber::set_default(subscriber);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let cfg = tg2_sender_to_c(&trust_dir, "b", addr, None);
                let (h, task) = link::spawn_sender(cfg, Arc::new(Records)).expect("sender");
                let until = Instant::now() + run;
                let mut st = h.status();
                while Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    st = h.status();
                }
                task.abort();
                st
            })
        }),
        "b's namespace",
    );
    let _ = server.join();
    let log =
        String::from_utf8_lossy(&logs.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    (seen, status, log)
}

#[test]
fn rogue_mirror_server_is_refused() {
    if !prereqs() {
        return;
    }
    let lab = mirror_lab("mirror_rogue_server", src_persistence_opts());
    let rogue = lab.lab.dir().join("rogue-trust");
    lab.ok(rogue_trust(&rogue, "c", ha_of("c")), "rogue trust files");
    let (rcrt, rkey) = trust::files(&rogue, "c");

    let (seen, st, log) = sender_against(&lab, 2030, rcrt, rkey, Duration::from_secs(4));
    println!("rogue server saw {seen:?}; b's sender: {st:?}");
    let ended: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("sender connection ended"))
        .collect();
    println!(
        "sender log ({} connection ends), first: {:?}",
        ended.len(),
        ended.first()
    );
    lab.check(
        seen.tcp.load(Ordering::Relaxed) >= 1,
        "the sender never reached the rogue server",
    );
    lab.check(
        seen.handshakes.load(Ordering::Relaxed) == 0
            && seen.hellos.load(Ordering::Relaxed) == 0
            && seen.records.load(Ordering::Relaxed) == 0,
        format!("the sender talked to the rogue server: {seen:?}"),
    );
    lab.check(
        st.state != State::InSync && st.last_acked == 0 && st.peer.is_none(),
        format!("the sender accepted the rogue server: {st:?}"),
    );
    lab.check(
        ended.iter().any(|l| l.contains("certificate")),
        format!("the sender's log does not name the certificate error: {ended:?}"),
    );

    // Control: the same server code with C's genuine certificate gets everything.
    let (gcrt, gkey) = trust::files(&lab.lab.dir().join("trust"), "c");
    let (seen, st, _) = sender_against(&lab, 2031, gcrt, gkey, Duration::from_secs(3));
    println!("control server with c's genuine certificate saw {seen:?}; sender: {st:?}");
    lab.check(
        st.state == State::InSync && seen.records.load(Ordering::Relaxed) >= ROGUE_RECORDS as u64,
        format!("control: the sender did not sync to a genuine server: {st:?} {seen:?}"),
    );
}

#[test]
fn a_device_that_does_not_hold_the_traffic_group_cannot_take_its_channel() {
    if !prereqs() {
        return;
    }
    let (lab, r_before) = lab_with_clients_through_b("mirror_not_holder", 20);

    // A's lbd-grade sender, A's genuine trust files, from A's mirror address.
    let trust_dir = lab.lab.dir().join("trust");
    let target = SocketAddr::new(C_MIRROR.parse().expect("literal"), 1030);
    let a_ip = ha_of("a");
    let run = lbd::mirror::link::HOLDER_GRACE + Duration::from_secs(4);
    let status = lab.ok(
        lab.device("a").ns.run_in(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let cfg = tg2_sender_to_c(&trust_dir, "a", target, Some(a_ip));
                let (h, task) = link::spawn_sender(cfg, Arc::new(Records)).expect("sender");
                let until = Instant::now() + run;
                let mut ever_in_sync = false;
                while Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    ever_in_sync |= h.status().state == State::InSync;
                }
                task.abort();
                (ever_in_sync, h.status())
            })
        }),
        "a's namespace",
    );
    let (ever_in_sync, st) = status;
    println!("a's tg-2 sender: ever in sync {ever_in_sync}, last {st:?}");
    lab.check(!ever_in_sync, "c accepted a's tg-2 channel");

    let rogue: Vec<String> = lab
        .lbctl("c", &["show", "persistence"])
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|r| r["key"].as_str().map(str::to_string))
        .filter(|k| k.starts_with(ROGUE_PREFIX))
        .collect();
    lab.check(
        rogue.is_empty(),
        format!(
            "c holds {} of a's records: {:?}",
            rogue.len(),
            rogue.iter().take(3).collect::<Vec<_>>()
        ),
    );
    let log = std::fs::read_to_string(lab.lab.dir().join("lbd-c.log")).unwrap_or_default();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("refused connection")
                && l.contains("not-holder")
                && l.contains(&format!("peer={a_ip}:"))
        })
        .collect();
    println!("c's log: {:?}", refusals.first());
    lab.check(
        !refusals.is_empty(),
        "c's log has no not-holder refusal naming a",
    );
    let counted = mirroring(&lab, "c")
        .map(|m| m["connections_refused"]["not-holder"].as_u64().unwrap_or(0))
        .unwrap_or(0);
    lab.check(
        counted >= 1,
        format!("c's show mirroring counts {counted} not-holder refusals"),
    );
    let after = poll(Duration::from_secs(5), Duration::from_millis(100), || {
        legit_channel(&lab)
    });
    let ((_, r_after), _) = lab.ok(
        after.ok_or("b's tg-2 channel to c not in sync afterwards"),
        "the genuine channel after",
    );
    lab.check(
        r_after["records"] == r_before["records"],
        format!(
            "c's tg-2 receiver records changed: {} -> {}",
            r_before["records"], r_after["records"]
        ),
    );
}
