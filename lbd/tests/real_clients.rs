//! Persistence plugins against real clients and servers, through the real `lbd` binary on
//! 127.0.0.1:
//!
//! * SIP: SIPp as UAC through a UDP virtual server (persistence `sip`) to three SIPp UAS; every
//!   call succeeds and each UAS sees whole calls only (INVITE, ACK and BYE of a Call-ID at one
//!   UAS), with all three UAS used although the UAC sends everything from one port.
//! * TLS: `openssl s_client -reconnect` / `-sess_out` / `-sess_in` (TLS 1.2, session ids, no
//!   tickets) to three `openssl s_server` backends; with persistence `ssl` every resumption
//!   reaches the backend holding the session, with round-robin alone most do not.
//! * RDP: byte-exact X.224 Connection Requests (MS-RDPBCGR 2.2.1.1) with `mstshash` cookies and
//!   `msts` routing tokens through a TCP virtual server with persistence `msrdp`.
//!
//! External tools (`sipp` from Debian's `sip-tester`, `openssl`) are prerequisites: when one is
//! missing the test prints `skipped: <reason>` and passes, except under `CI=true`, where it fails
//! with that reason. Every process is killed on drop (also on panic) and every wait is bounded.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{build_cdylib, free_port, persistent_vs, try_connect, wait_for, Lbd};
use serde_json::Value;
use spanlb_control::lbd::Request;

// ---------------------------------------------------------------------------------------------
// Prerequisites, processes, plugins

/// True when `tool` can be run. Otherwise: under `CI=true` the test fails with one line, else it
/// prints `skipped: <reason>` and the caller returns (the test passes).
fn require(tool: &str, probe: &[&str], package: &str) -> bool {
    let found = Command::new(tool)
        .args(probe)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if found {
        return true;
    }
    let reason = format!("`{tool}` not found (Debian package {package}; scripts/setup.sh)");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{reason}");
    }
    println!("skipped: {reason}");
    false
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!(
            "lbd-real-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (and reaped) on drop; its stdout and stderr go to `out`.
struct Proc {
    child: Child,
    what: String,
    out: PathBuf,
}

impl Proc {
    fn spawn(what: &str, cmd: &mut Command, cwd: &Path, out: PathBuf) -> Proc {
        let f = std::fs::File::create(&out).unwrap();
        let child = cmd
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        Proc {
            child,
            what: what.to_string(),
            out,
        }
    }

    /// Waits at most `timeout` for the process to exit (killing it then and failing).
    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} still running after {timeout:?}; output:\n{}",
                    self.what,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `dir/plugins` holding the package's `.so`; returns that directory.
fn plugin_dir(dir: &TempDir, pkg: &str) -> PathBuf {
    let p = dir.path("plugins");
    std::fs::create_dir_all(&p).unwrap();
    let so = build_cdylib(pkg);
    std::fs::copy(&so, p.join(so.file_name().unwrap())).unwrap();
    p
}

/// A free UDP port on 127.0.0.1.
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Persistence records as `show-persistence` returns them.
fn records(lbd: &Lbd) -> Vec<Value> {
    let d = lbd.ok(&Request::ShowPersistence { profile: None });
    let list = if d.is_array() { &d } else { &d["records"] };
    list.as_array().cloned().unwrap_or_default()
}

/// `lbctl --socket S --json ARGS` against `lbd`, parsed.
fn lbctl(lbd: &Lbd, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_lbctl"))
        .arg("--socket")
        .arg(&lbd.socket)
        .arg("--json")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run lbctl");
    assert!(
        out.status.success(),
        "lbctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "lbctl {args:?}: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// lbd's WARN and ERROR log lines, printed for the record.
fn print_warnings(lbd: &Lbd) {
    let log = lbd.log_text();
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    println!("lbd log: {} WARN/ERROR lines", bad.len());
    for l in bad.iter().take(10) {
        println!("  {l}");
    }
}

fn vip(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

// ---------------------------------------------------------------------------------------------
// SIP

/// The received messages in a SIPp short-message log: Call-ID → methods (requests) received.
fn sipp_received(short_log: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut calls: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for l in short_log.lines() {
        // date, time, epoch, R|S, Call-ID, "CSeq:N METHOD", start line
        let f: Vec<&str> = l.split('\t').collect();
        if f.len() < 7 || f[3] != "R" {
            continue;
        }
        let method = f[6].split(' ').next().unwrap_or_default();
        calls
            .entry(f[4].to_string())
            .or_default()
            .insert(method.to_string());
    }
    calls
}

/// The cumulative column of a SIPp statistics line such as `Successful call | 0 | 200`.
fn sipp_stat(screen: &str, name: &str) -> Option<u64> {
    screen
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with(name))
        .and_then(|l| l.split('|').nth(2))
        .and_then(|c| c.trim().parse().ok())
}

#[test]
fn sipp_calls_through_lbd_stay_whole_on_one_uas_each() {
    if !require("sipp", &["-v"], "sip-tester") {
        return;
    }
    const CALLS: usize = 200;
    let tmp = TempDir::new("sip");
    let plugins = plugin_dir(&tmp, "spanlb-plugin-sip");

    let mut uas = Vec::new();
    let mut uas_ports = Vec::new();
    for i in 1..=3 {
        let port = free_udp_port();
        let mut cmd = Command::new("sipp");
        cmd.args(["-sn", "uas", "-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["-nostdin", "-trace_shortmsg", "-shortmessage_file"])
            .arg(tmp.path(&format!("uas{i}.short")));
        uas.push(Proc::spawn(
            &format!("sipp uas{i}"),
            &mut cmd,
            &tmp.0,
            tmp.path(&format!("uas{i}.out")),
        ));
        uas_ports.push(port);
    }
    // A UAS is up once its port is taken.
    for (p, port) in uas.iter_mut().zip(&uas_ports) {
        wait_for("a SIPp UAS to bind", Duration::from_secs(10), || {
            assert!(p.alive(), "{} exited:\n{}", p.what, p.output());
            UdpSocket::bind(("127.0.0.1", *port)).is_err().then_some(())
        });
    }

    let port = free_udp_port();
    let members: Vec<String> = uas_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let lbd = Lbd::start(&format!(
        "plugin_dir = \"{}\"\n{}",
        plugins.display(),
        persistent_vs(
            "calls",
            "udp",
            port,
            &members,
            "type = \"sip\"\ntimeout = \"5m\""
        )
    ));

    let uac_port = free_udp_port();
    let mut cmd = Command::new("sipp");
    cmd.args(["-sn", "uac", "-i", "127.0.0.1", "-p", &uac_port.to_string()])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-m", &CALLS.to_string(), "-r", "50", "-l", "100"])
        .args(["-nostdin", "-timeout", "40s", "-timeout_error"]);
    let mut uac = Proc::spawn("sipp uac", &mut cmd, &tmp.0, tmp.path("uac.out"));
    let st = uac.wait(Duration::from_secs(50));
    let screen = uac.output();
    let ok = sipp_stat(&screen, "Successful call");
    let failed = sipp_stat(&screen, "Failed call");
    println!("SIPp UAC: {st}, successful calls {ok:?}, failed {failed:?}");
    assert!(
        st.success() && ok == Some(CALLS as u64) && failed == Some(0),
        "SIPp UAC: exit {st}, successful {ok:?}, failed {failed:?}:\n{screen}\n--- lbd log tail ---\n{}",
        tail(&lbd.log_text(), 40)
    );

    // Each UAS saw whole calls: INVITE, ACK and BYE of a Call-ID, and no Call-ID at two UAS.
    std::thread::sleep(Duration::from_millis(300));
    let mut owner: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_uas = Vec::new();
    for i in 1..=3 {
        let log = std::fs::read_to_string(tmp.path(&format!("uas{i}.short"))).unwrap_or_default();
        let calls = sipp_received(&log);
        for (call, methods) in &calls {
            let want: BTreeSet<String> = ["INVITE", "ACK", "BYE"].map(String::from).into();
            assert!(
                want.is_subset(methods),
                "uas{i} saw only {methods:?} of call {call}"
            );
            if let Some(other) = owner.insert(call.clone(), i) {
                panic!("call {call} reached uas{other} and uas{i}");
            }
        }
        per_uas.push(calls.len());
    }
    println!("calls per UAS: {per_uas:?}");
    assert_eq!(owner.len(), CALLS, "calls seen by the UAS: {per_uas:?}");
    assert!(
        per_uas.iter().all(|&n| n > 0),
        "every UAS gets calls from the one UAC address: {per_uas:?}"
    );
    print_warnings(&lbd);
    let recs = records(&lbd);
    assert!(
        recs.iter().filter(|r| r["profile"] == "calls").count() >= CALLS,
        "a record per Call-ID: {} records",
        recs.len()
    );
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// TLS

/// The `New, TLSv1.2` / `Reused, TLSv1.2` lines of an s_client run: (new, reused).
fn handshakes(out: &str) -> (usize, usize) {
    let new = out
        .lines()
        .filter(|l| l.starts_with("New, TLSv1.2"))
        .count();
    let reused = out
        .lines()
        .filter(|l| l.starts_with("Reused, TLSv1.2"))
        .count();
    (new, reused)
}

/// The CN of the first `subject=` line s_client prints.
fn subject_cn(out: &str) -> Option<String> {
    out.lines()
        .find(|l| l.starts_with("subject="))
        .and_then(|l| l.split("CN").nth(1))
        .map(|s| s.trim_start_matches([' ', '=']).trim().to_string())
}

/// The `Session-ID:` s_client prints (the last one).
fn session_id(out: &str) -> Option<String> {
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Session-ID:"))
        .map(|v| v.trim().to_string())
        .next_back()
        .filter(|v| !v.is_empty())
}

fn s_client(tmp: &TempDir, tag: &str, port: u16, extra: &[&str]) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-tls1_2", "-no_ticket"])
        .args(extra);
    let mut p = Proc::spawn(
        &format!("s_client {tag}"),
        &mut cmd,
        &tmp.0,
        tmp.path(&format!("client-{tag}.out")),
    );
    let st = p.wait(Duration::from_secs(20));
    let out = p.output();
    assert!(st.success(), "s_client {tag}: {st}\n{out}");
    out
}

#[test]
fn tls_sessions_resume_on_the_backend_that_made_them_with_ssl_persistence() {
    if !require("openssl", &["version"], "openssl") {
        return;
    }
    let tmp = TempDir::new("tls");
    let plugins = plugin_dir(&tmp, "spanlb-plugin-ssl");

    let mut servers = Vec::new();
    let mut ports = Vec::new();
    for i in 1..=3 {
        let (cert, key) = (
            tmp.path(&format!("b{i}.crt")),
            tmp.path(&format!("b{i}.key")),
        );
        let mut req = Command::new("openssl");
        req.args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", &format!("/CN=b{i}"), "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert);
        let mut p = Proc::spawn("openssl req", &mut req, &tmp.0, tmp.path("req.out"));
        let st = p.wait(Duration::from_secs(30));
        assert!(st.success(), "openssl req: {st}\n{}", p.output());

        let port = free_port();
        let mut cmd = Command::new("openssl");
        cmd.args(["s_server", "-tls1_2", "-www", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key);
        servers.push(Proc::spawn(
            &format!("s_server b{i}"),
            &mut cmd,
            &tmp.0,
            tmp.path(&format!("b{i}.out")),
        ));
        ports.push(port);
    }
    for (p, port) in servers.iter_mut().zip(&ports) {
        wait_for("s_server to listen", Duration::from_secs(10), || {
            assert!(p.alive(), "{} exited:\n{}", p.what, p.output());
            try_connect(vip(*port)).ok().map(|_| ())
        });
    }

    let (ssl_port, plain_port) = (free_port(), free_port());
    let members: Vec<String> = ports
        .iter()
        .map(|p| format!("{{ address = \"127.0.0.1:{p}\" }}"))
        .collect();
    let lbd = Lbd::start(&format!(
        r#"plugin_dir = "{dir}"

[virtual_servers.tls]
destination = "127.0.0.1:{ssl_port}"
pool = "tls"
snat = "none"
persistence = "sessions"

[virtual_servers.plain]
destination = "127.0.0.1:{plain_port}"
pool = "tls"
snat = "none"

[pools.tls]
method = "round-robin"
members = [{members}]

[persistence.sessions]
type = "ssl"
timeout = "5m"
"#,
        dir = plugins.display(),
        members = members.join(", ")
    ));

    // -reconnect: one full handshake, then five reconnections offering its session id.
    const RUNS: usize = 4;
    let mut with_ssl = (0, 0);
    let mut cns = BTreeSet::new();
    for run in 0..RUNS {
        let out = s_client(&tmp, &format!("ssl-{run}"), ssl_port, &["-reconnect"]);
        let (n, r) = handshakes(&out);
        assert_eq!((n, r), (1, 5), "run {run} with ssl persistence:\n{out}");
        cns.insert(subject_cn(&out).expect("a subject"));
        with_ssl = (with_ssl.0 + n, with_ssl.1 + r);
    }
    let mut without = (0, 0);
    for run in 0..RUNS {
        let out = s_client(&tmp, &format!("plain-{run}"), plain_port, &["-reconnect"]);
        let (n, r) = handshakes(&out);
        assert_eq!(n + r, 6, "run {run} round-robin only:\n{out}");
        without = (without.0 + n, without.1 + r);
    }
    println!(
        "-reconnect x{RUNS}: with ssl persistence new/reused {with_ssl:?} (first handshakes on {cns:?}); round-robin only {without:?}"
    );
    assert!(
        without.1 * 2 < RUNS * 5,
        "round-robin alone should resume less than half of {} reconnections: {without:?}",
        RUNS * 5
    );
    assert!(cns.len() >= 2, "new sessions spread over backends: {cns:?}");

    // A saved session resumed by separate s_client runs.
    let sess = tmp.path("sess.pem");
    let sess = sess.to_str().unwrap();
    let first = s_client(&tmp, "sess-out", ssl_port, &["-sess_out", sess]);
    assert_eq!(handshakes(&first), (1, 0), "{first}");
    let cn = subject_cn(&first).expect("a subject");
    let id = session_id(&first).expect("a session id");
    let mut sess_counts = ((0, 0), (0, 0));
    for i in 0..5 {
        // Each s_server has its own session cache (and certificate): only the backend that made
        // the session can resume it; another one answers with a new session.
        let out = s_client(&tmp, &format!("sess-in-{i}"), ssl_port, &["-sess_in", sess]);
        let h = handshakes(&out);
        assert_eq!(
            h,
            (0, 1),
            "run {i} resuming the session made on {cn}:\n{out}"
        );
        assert_eq!(session_id(&out).as_deref(), Some(id.as_str()), "{out}");
        sess_counts.0 = (sess_counts.0 .0 + h.0, sess_counts.0 .1 + h.1);
        let out = s_client(
            &tmp,
            &format!("sess-plain-{i}"),
            plain_port,
            &["-sess_in", sess],
        );
        let h = handshakes(&out);
        sess_counts.1 = (sess_counts.1 .0 + h.0, sess_counts.1 .1 + h.1);
    }
    println!(
        "-sess_in x5 (session from {cn}): with ssl persistence new/reused {:?}; round-robin only {:?}",
        sess_counts.0, sess_counts.1
    );
    assert!(
        sess_counts.1 .1 < 5,
        "round-robin alone resumed every time: {sess_counts:?}"
    );

    print_warnings(&lbd);
    // What lbctl shows: the ssl plugin loaded, and records of the profile keyed by session id.
    let plugins = lbctl(&lbd, &["show", "plugins"]);
    assert!(plugins.to_string().contains("\"ssl\""), "{plugins}");
    let shown = lbctl(&lbd, &["show", "persistence"]);
    let list = if shown.is_array() {
        &shown
    } else {
        &shown["records"]
    };
    let recs: Vec<Value> = list
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r["profile"] == "sessions")
        .collect();
    println!("ssl persistence records: {}", recs.len());
    // The record of the -sess_out session names the backend whose certificate (CN=bN) s_client
    // saw on the full handshake.
    let key = format!("hex:{}", id.to_lowercase());
    let rec = recs
        .iter()
        .find(|r| r["key"].as_str().map(str::to_lowercase).as_deref() == Some(key.as_str()))
        .unwrap_or_else(|| panic!("no record {key}: {shown}"));
    let n: usize = cn.trim_start_matches('b').parse().expect("CN bN");
    assert_eq!(
        rec["member"].as_str(),
        Some(format!("127.0.0.1:{}", ports[n - 1]).as_str()),
        "session made on {cn}: {rec}"
    );
    assert!(
        recs.len() > RUNS,
        "a record per session: {}",
        Value::from(recs.clone())
    );
    let members_set: BTreeSet<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    for r in &recs {
        let m = r["member"].as_str().unwrap_or_default();
        assert!(members_set.contains(m), "record for {m}: {r}");
    }
}

// ---------------------------------------------------------------------------------------------
// RDP

/// An X.224 Connection Request (MS-RDPBCGR 2.2.1.1): TPKT header, X.224 CR TPDU, the cookie
/// or routing-token line, an RDP_NEG_REQ asking for TLS | CredSSP.
fn x224_cr(cookie_line: &str) -> Vec<u8> {
    let mut body = vec![0xE0, 0, 0, 0, 0, 0];
    body.extend_from_slice(cookie_line.as_bytes());
    body.extend_from_slice(&[0x01, 0x00, 0x08, 0x00, 0x03, 0x00, 0x00, 0x00]);
    let li = u8::try_from(body.len()).unwrap();
    let total = u16::try_from(4 + 1 + body.len()).unwrap();
    let mut pdu = vec![0x03, 0x00];
    pdu.extend_from_slice(&total.to_be_bytes());
    pdu.push(li);
    pdu.extend_from_slice(&body);
    pdu
}

/// `Cookie: msts=IP.PORT.0000\r\n` naming `addr`: the network-order bytes read little-endian.
fn routing_token(addr: SocketAddrV4) -> String {
    let ip = u32::from_le_bytes(addr.ip().octets());
    let port = u16::from_le_bytes(addr.port().to_be_bytes());
    format!("Cookie: msts={ip}.{port}.0000\r\n")
}

/// A TCP member that reads one whole TPKT PDU and answers `NAME LEN\n`.
struct RdpMember {
    addr: SocketAddrV4,
    stop: Arc<AtomicBool>,
}

impl RdpMember {
    fn start(name: &'static str) -> RdpMember {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = match l.local_addr().unwrap() {
            SocketAddr::V4(a) => a,
            a => panic!("{a}"),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        std::thread::spawn(move || {
                            c.set_nonblocking(false).unwrap();
                            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                            let mut hdr = [0u8; 4];
                            if c.read_exact(&mut hdr).is_err() {
                                return;
                            }
                            let len = u16::from_be_bytes([hdr[2], hdr[3]]) as usize;
                            let mut rest = vec![0u8; len.saturating_sub(4)];
                            if c.read_exact(&mut rest).is_err() {
                                return;
                            }
                            let _ = c.write_all(format!("{name} {len}\n").as_bytes());
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        RdpMember { addr, stop }
    }
}

impl Drop for RdpMember {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Sends one Connection Request through lbd; returns the member's name.
fn rdp_connect(vip: SocketAddr, pdu: &[u8]) -> String {
    let mut s = try_connect(vip).unwrap_or_else(|e| panic!("connect {vip}: {e}"));
    s.write_all(pdu).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out)
        .unwrap_or_else(|e| panic!("reading the member's answer: {e}"));
    let (name, len) = out
        .trim_end()
        .split_once(' ')
        .unwrap_or_else(|| panic!("answer {out:?}"));
    assert_eq!(len, pdu.len().to_string(), "the member got the whole PDU");
    name.to_string()
}

#[test]
fn rdp_users_stick_to_a_member_and_routing_tokens_pick_theirs() {
    let tmp = TempDir::new("rdp");
    let plugins = plugin_dir(&tmp, "spanlb-plugin-msrdp");
    let members: Vec<RdpMember> = ["m1", "m2", "m3"]
        .into_iter()
        .map(RdpMember::start)
        .collect();
    let names: BTreeMap<SocketAddrV4, &str> = members
        .iter()
        .zip(["m1", "m2", "m3"])
        .map(|(m, n)| (m.addr, n))
        .collect();
    let port = free_port();
    let list: Vec<String> = members.iter().map(|m| m.addr.to_string()).collect();
    let lbd = Lbd::start(&format!(
        "plugin_dir = \"{}\"\n{}",
        plugins.display(),
        persistent_vs(
            "rdp",
            "tcp",
            port,
            &list,
            "type = \"msrdp\"\ntimeout = \"8h\""
        )
    ));
    let vip = vip(port);

    // The byte layout of one request, as MS-RDPBCGR 4.1.1 shows it.
    let pdu = x224_cr("Cookie: mstshash=eltons\r\n");
    assert_eq!(&pdu[..7], &[0x03, 0x00, 0x00, 0x2c, 0x27, 0xe0, 0x00]);
    assert_eq!(&pdu[pdu.len() - 8..], &[1, 0, 8, 0, 3, 0, 0, 0]);
    assert_eq!(
        routing_token(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 3389)),
        "Cookie: msts=16777343.15629.0000\r\n"
    );

    // Each user 100 times, interleaved: always the same member.
    let users = ["alice", "bob", "carol", "dave", "erin", "frank"];
    let mut seen: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
    for _ in 0..100 {
        for u in users {
            let m = rdp_connect(vip, &x224_cr(&format!("Cookie: mstshash={u}\r\n")));
            *seen.entry(u).or_default().entry(m).or_default() += 1;
        }
    }
    println!("mstshash user -> member counts: {seen:?}");
    for (u, m) in &seen {
        assert_eq!(m.len(), 1, "{u} reached {m:?}");
        assert_eq!(m.values().sum::<usize>(), 100);
    }
    let used: BTreeSet<&String> = seen.values().flat_map(|m| m.keys()).collect();
    assert!(used.len() >= 2, "users spread over members: {seen:?}");

    // A routing token reaches the member it names, for each member, however often.
    for (addr, name) in &names {
        let token = routing_token(*addr);
        for i in 0..20 {
            let got = rdp_connect(vip, &x224_cr(&token));
            assert_eq!(&got, name, "try {i} of {token:?} ({addr})");
        }
    }
    print_warnings(&lbd);
    let recs: Vec<Value> = records(&lbd)
        .into_iter()
        .filter(|r| r["profile"] == "rdp")
        .collect();
    assert!(recs.len() >= users.len(), "{}", Value::from(recs));
}
