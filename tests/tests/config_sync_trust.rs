//! Config sync's trust and its full sync, in the cluster lab (docs/design.md, "Config sync"):
//!
//! 1. A push to a's config-sync port with a certificate of another CA (one that also calls
//!    itself `seed` and names device b) is refused in the handshake and changes nothing; the
//!    same push with b's genuine certificate is applied (so the push itself was valid).
//! 2. A device whose certificate comes from another CA cannot join: `lbctl device-group add`
//!    on a fails and adds nothing anywhere, and the device still awaits its initial sync.
//! 3. A device with a stale generation (c, stopped while a made more changes than a's delta
//!    history holds) is brought up to date by a full sync.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lbd::cluster::config::GroupConfig;
use lbd::config::Config;
use lbd::configsync::{Answer, Generation, GroupDocument, Payload, Push};
use lbd::mirror::trust;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use spanlb_tests::cluster::{prereqs, ClusterLab, ClusterOptions};
use spanlb_tests::membership::{Joiner, ADD_D};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(45);
/// a's config-sync address (its first mirroring address, the HA segment) and port.
const A_SYNC: &str = "192.168.100.6:1028";

fn tls_client(ca: &Path, cert: &Path, key: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).expect("CA certificate"))
        .expect("CA");
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_file(cert).expect("certificate")],
            PrivateKeyDer::from_pem_file(key).expect("key"),
        )
        .expect("client certificate"),
    )
}

/// One push to a over TLS with `cfg`: a's answer, or what went wrong.
async fn push(cfg: Arc<rustls::ClientConfig>, push: &Push) -> Result<Answer, String> {
    let addr: SocketAddr = A_SYNC.parse().expect("literal");
    let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    let name = trust::device_server_name("seed", "a").expect("server name");
    let mut tls = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_rustls::TlsConnector::from(cfg).connect(name, tcp),
    )
    .await
    .map_err(|_| "handshake timed out".to_string())?
    .map_err(|e| format!("handshake: {e}"))?;
    let mut line = serde_json::to_vec(push).expect("encoding");
    line.push(b'\n');
    tls.write_all(&line)
        .await
        .map_err(|e| format!("write: {e}"))?;
    tls.flush().await.map_err(|e| format!("flush: {e}"))?;
    let mut answer = String::new();
    let n = tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(tls).read_line(&mut answer),
    )
    .await
    .map_err(|_| "no answer in 10 s".to_string())?
    .map_err(|e| format!("read: {e}"))?;
    if n == 0 {
        return Err("closed without an answer".into());
    }
    serde_json::from_str(&answer).map_err(|e| format!("bad answer {answer:?}: {e}"))
}

/// The group configuration of a's files with pool `dns` set to `ratio`, as a push from b.
fn ratio_push(lab: &ClusterLab) -> Push {
    let a = lab.device("a");
    let text = std::fs::read_to_string(&a.lbd_config).expect("a's file");
    let changed = text.replacen("[pools.dns]\n", "[pools.dns]\nmethod = \"ratio\"\n", 1);
    let tmp = lab.lab.dir().join("lbd-a-ratio.toml");
    std::fs::write(&tmp, changed).expect("writing");
    let cfg = Config::load(&tmp).expect("a's changed configuration");
    let group = GroupConfig::load(&lab.group_config).expect("the device group");
    let doc = GroupDocument::from_parts(&cfg, Some(&group)).expect("document");
    Push {
        generation: Generation {
            origin: "b".into(),
            counter: 1_000,
            time_ms: 1,
            digest: doc.digest(),
        },
        payload: Payload::Full {
            document: String::from_utf8(doc.canonical()).expect("utf-8"),
        },
    }
}

#[test]
fn another_ca_can_neither_push_nor_join_and_a_stale_device_gets_a_full_sync() {
    if !prereqs() {
        return;
    }
    let lab = ClusterLab::build_synced("config_trust", ClusterOptions::default());
    let before = lab.pool_method("a", "dns");
    lab.check(
        before != "ratio",
        format!("a's dns method at start: {before}"),
    );

    // 1. Another CA's certificate naming b, then b's own.
    let rogue = lab.lab.dir().join("rogue-trust");
    {
        let ca = trust::create_ca("seed").expect("rogue CA");
        trust::write_pair(&rogue, "ca", &ca, true).expect("writing");
        let pair = trust::issue_device(&ca, "b", &["192.168.100.7".parse().expect("literal")])
            .expect("rogue certificate");
        trust::write_pair(&rogue, "b", &pair, true).expect("writing");
    }
    let real = lab.lab.dir().join("trust");
    let (rcrt, rkey) = trust::files(&rogue, "b");
    let (bcrt, bkey) = trust::files(&real, "b");
    let rogue_cfg = tls_client(&real.join("ca.crt"), &rcrt, &rkey);
    let real_cfg = tls_client(&real.join("ca.crt"), &bcrt, &bkey);
    let p = ratio_push(&lab);
    let push_from_b = |cfg: Arc<rustls::ClientConfig>, p: Push| {
        lab.device("b").ns.run_in(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(push(cfg, &p))
        })
    };
    let rogue_answer = lab.ok(
        push_from_b(rogue_cfg, p.clone()),
        "rogue push from b's namespace",
    );
    println!("push with another CA's certificate: {rogue_answer:?}");
    lab.check(
        !matches!(rogue_answer, Ok(Answer::Applied { .. })),
        format!("a applied a push from another CA: {rogue_answer:?}"),
    );
    std::thread::sleep(Duration::from_millis(300));
    let after_rogue = lab.pool_method("a", "dns");
    lab.check(
        after_rogue == before,
        format!("the rogue push changed nothing on a: {before} → {after_rogue}"),
    );
    let real_answer = lab.ok(push_from_b(real_cfg, p), "genuine push from b's namespace");
    println!("push with b's certificate: {real_answer:?}");
    lab.check(
        matches!(real_answer, Ok(Answer::Applied { .. })),
        format!("a applied b's genuine push: {real_answer:?}"),
    );
    lab.check(
        lab.pool_method("a", "dns") == "ratio",
        "a runs what b's genuine push carried",
    );
    let log = std::fs::read_to_string(lab.lab.dir().join("lbd-a.log")).unwrap_or_default();
    lab.check(
        log.lines()
            .any(|l| l.contains("config sync: refused connection") && l.contains("192.168.100.7")),
        "a logged the refused connection from b's address",
    );
    // The group follows a (a holds b's generation now).
    let r = lab.lbctl("a", &["config", "sync", "--to-group"]);
    lab.ok(r, "sync a to the group");
    let r = lab.wait_config_status("in-sync");
    lab.ok(r, "in sync after the genuine push");

    // 2. A device of another CA cannot join.
    let d = lab.ok(Joiner::prepare_with(&lab, true), "preparing d (another CA)");
    lab.ok(d.start(), "starting d");
    let r = lab.lbctl("a", &ADD_D);
    println!("device-group add d (another CA): {r:?}");
    lab.check(
        r.as_ref().is_err_and(|e| e.contains("not added")),
        format!("adding a device of another CA fails: {r:?}"),
    );
    for dev in ["a", "b", "c"] {
        let g = lab.ok(lab.device_group(dev), "show device-group");
        lab.check(
            !g["devices"]
                .as_array()
                .is_some_and(|l| l.iter().any(|x| x["name"] == "d")),
            format!("{dev} does not list d: {g}"),
        );
    }
    let group_file = std::fs::read_to_string(&lab.group_config).unwrap_or_default();
    lab.check(
        !group_file.contains("name = \"d\""),
        format!("the group file does not name d:\n{group_file}"),
    );
    let st = lab.ok(d.lbctl(&["config", "status"]), "d's status");
    lab.check(
        st["status"] == "awaiting-initial-sync",
        format!("d still awaits its initial sync: {st}"),
    );
    let r = lab.wait_config_status("in-sync");
    lab.ok(r, "in sync after the refused join");
    drop(d);

    // 3. c stopped; a changes more often than its delta history holds; c back, full sync.
    lab.stop_lbd("c");
    let r = wait_c(&lab, false);
    lab.ok(r, "a sees c gone");
    let a = lab.device("a");
    for i in 0..(lbd::configsync::HISTORY + 2) {
        let mut text = std::fs::read_to_string(&a.lbd_config).expect("a's file");
        text.push_str(&format!(
            "\n[monitors.stale{i}]\ntype = \"tcp\"\ninterval = \"1s\"\ntimeout = \"1s\"\n"
        ));
        std::fs::write(&a.lbd_config, text).expect("writing");
        let r = lab.lbctl("a", &["reload"]);
        lab.ok(r, "reload on a");
        let r = lab.lbctl("a", &["config", "sync", "--to-group"]);
        lab.ok(r, "sync to b");
    }
    let r = lab.start_device("c");
    lab.ok(r, "starting c again");
    let r = wait_c(&lab, true);
    lab.ok(r, "a sees c alive and behind");
    let r = lab.lbctl("a", &["config", "sync", "--to-group"]);
    let out = lab.ok(r, "sync to the group with c back");
    println!("sync with c back: {out}");
    lab.check(
        out["full"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "c")),
        format!("c got the whole configuration: {out}"),
    );
    let r = lab.wait_config_status("in-sync");
    lab.ok(r, "in sync with c");
    let c_file = std::fs::read_to_string(&lab.device("c").lbd_config).unwrap_or_default();
    lab.check(
        c_file.contains(&format!("stale{}", lbd::configsync::HISTORY + 1)),
        "c saved the last change",
    );
}

/// Waits until a's config status lists c alive and not holding a's digest (`alive`), or not
/// alive.
fn wait_c(lab: &ClusterLab, alive: bool) -> Result<(), String> {
    spanlb_lab::wait_until_dbg(T, "c's state on a", || {
        let st = lab.lbctl("a", &["config", "status"])?;
        let c = st["devices"]
            .as_array()
            .and_then(|l| l.iter().find(|d| d["name"] == "c").cloned())
            .unwrap_or_default();
        let ok = if alive {
            c["alive"] == true && c["same_as_me"] == false
        } else {
            c["alive"] == false
        };
        if ok {
            Ok(())
        } else {
            Err(format!("{st}"))
        }
    })
    .map_err(|e| e.to_string())
}
