//! lbd in a namespace topology: client namespace → lbd device namespace → three server
//! namespaces on an internal bridge, with SNAT automap (docs/design.md, "The lab" addresses).
//!
//! The servers know only the internal segment (no route back to the client), so an answer
//! proves the translation; each server reports the source address it saw, which must be the
//! device's internal address. TCP and UDP, IPv4 and IPv6.

use std::time::Duration;

use spanlb_lab::{wait_until_dbg, Lab, Ns, Proc};

const T: Duration = Duration::from_secs(20);

fn prereqs() -> bool {
    spanlb_lab::require_root_and_tools(&["python3"]).is_ok()
}

/// A server that answers every TCP connection (port 8080) and UDP datagram (port 5353) with
/// "NAME SOURCE-ADDRESS".
const SERVER: &str = r#"
import socket, sys, threading
name = sys.argv[1]
def tcp(fam, addr):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if fam == socket.AF_INET6: s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((addr, 8080)); s.listen(128)
    while True:
        c, peer = s.accept()
        try:
            c.settimeout(5)
            c.recv(100)
            c.sendall(f"{name} {peer[0]}\n".encode())
        except OSError:
            pass
        c.close()
def udp(fam, addr):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    if fam == socket.AF_INET6: s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((addr, 5353))
    while True:
        data, peer = s.recvfrom(2048)
        s.sendto(f"{name} {peer[0]}".encode(), peer)
ts = [threading.Thread(target=f, args=a, daemon=True) for f, a in [
    (tcp, (socket.AF_INET, "0.0.0.0")), (udp, (socket.AF_INET, "0.0.0.0")),
    (tcp, (socket.AF_INET6, "::")), (udp, (socket.AF_INET6, "::"))]]
for t in ts: t.start()
for t in ts: t.join()
"#;

/// Connects N times over TCP and sends N datagrams (each from a new socket) to the VIP;
/// prints one line per answer: "tcp NAME SRC" / "udp NAME SRC FROM".
const CLIENT: &str = r#"
import socket, sys
vip, n = sys.argv[1], int(sys.argv[2])
fam = socket.AF_INET6 if ":" in vip else socket.AF_INET
for i in range(n):
    s = socket.create_connection((vip, 80), timeout=5)
    s.sendall(b"hi\n")
    print("tcp", s.recv(200).decode().strip(), flush=True)
    s.close()
for i in range(n):
    u = socket.socket(fam, socket.SOCK_DGRAM)
    u.settimeout(5)
    u.sendto(b"q", (vip, 53))
    data, frm = u.recvfrom(2048)
    print("udp", data.decode().strip(), frm[0], flush=True)
    u.close()
"#;

struct Topo {
    lab: Lab,
    client: Ns,
    _servers: Vec<Proc>,
    lbd: Option<Proc>,
}

fn build(name: &str) -> Topo {
    let lab = Lab::new(name).unwrap();
    let client = lab.ns("client").unwrap();
    let lb = lab.ns("lb").unwrap();
    lab.veth((&client, "eth0"), (&lb, "ext0")).unwrap();
    client.add_addr("eth0", "20.1.1.100/24").unwrap();
    client.add_addr("eth0", "fd00:20::100/64").unwrap();
    lb.add_addr("ext0", "20.1.1.6/24").unwrap();
    lb.add_addr("ext0", "fd00:20::6/64").unwrap();
    client.route("add 30.1.1.10/32 via 20.1.1.6").unwrap();
    client.route("add fd00:30::10/128 via fd00:20::6").unwrap();
    // The VIPs live on the loopback interface (no ARP on the segment), as spanning virtual
    // addresses do (this kernel has no dummy interfaces).
    lb.link_up("lo").unwrap();
    lb.add_addr("lo", "30.1.1.10/32").unwrap();
    lb.add_addr("lo", "fd00:30::10/128").unwrap();
    let mut members: Vec<(&Ns, &str, &[&str])> = Vec::new();
    let servers: Vec<Ns> = ["s1", "s2", "s3"]
        .iter()
        .map(|s| lab.ns(s).unwrap())
        .collect();
    let addrs: [[&str; 2]; 3] = [
        ["10.1.1.50/24", "fd00:10::50/64"],
        ["10.1.1.51/24", "fd00:10::51/64"],
        ["10.1.1.52/24", "fd00:10::52/64"],
    ];
    let lb_addrs = ["10.1.1.6/24", "fd00:10::6/64"];
    members.push((&lb, "int0", &lb_addrs));
    for (s, a) in servers.iter().zip(addrs.iter()) {
        members.push((s, "eth0", a));
    }
    lab.bridge_segment("int", &members).unwrap();
    let script = lab.dir().join("server.py");
    std::fs::write(&script, SERVER).unwrap();
    std::fs::write(lab.dir().join("client.py"), CLIENT).unwrap();
    let procs = servers
        .iter()
        .map(|s| {
            s.spawn(
                &["python3", script.to_str().unwrap(), s.short()],
                format!("{}.log", s.short()),
            )
            .unwrap()
        })
        .collect();
    let cfg = lab.dir().join("lbd.toml");
    let sock = lab.dir().join("lbd.sock");
    std::fs::write(
        &cfg,
        format!(
            r#"[device]
name = "A"
internal_address = "10.1.1.6"
internal_address_v6 = "fd00:10::6"
control_socket = "{}"

[virtual_servers.web]
destination = "30.1.1.10:80"
pool = "web"
[virtual_servers.dns]
destination = "30.1.1.10:53"
protocol = "udp"
pool = "dns"
[virtual_servers.web6]
destination = "[fd00:30::10]:80"
pool = "web6"
[virtual_servers.dns6]
destination = "[fd00:30::10]:53"
protocol = "udp"
pool = "dns6"

[pools.web]
monitors = ["tcp"]
members = [{{ address = "10.1.1.50:8080" }}, {{ address = "10.1.1.51:8080" }}, {{ address = "10.1.1.52:8080" }}]
[pools.dns]
members = [{{ address = "10.1.1.50:5353" }}, {{ address = "10.1.1.51:5353" }}, {{ address = "10.1.1.52:5353" }}]
[pools.web6]
monitors = ["tcp"]
members = [{{ address = "[fd00:10::50]:8080" }}, {{ address = "[fd00:10::51]:8080" }}, {{ address = "[fd00:10::52]:8080" }}]
[pools.dns6]
members = [{{ address = "[fd00:10::50]:5353" }}, {{ address = "[fd00:10::51]:5353" }}, {{ address = "[fd00:10::52]:5353" }}]

[monitors.tcp]
type = "tcp"
interval = "200ms"
"#,
            sock.display()
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(spanlb_lab::cargo_bin("lbd"));
    cmd.arg("--config").arg(&cfg);
    let lbd = lb.spawn_cmd(cmd, "lbd.log").unwrap();
    Topo {
        lab,
        client,
        _servers: procs,
        lbd: Some(lbd),
    }
}

impl Topo {
    fn lbd_log(&self) -> String {
        self.lbd.as_ref().map(|p| p.log()).unwrap_or_default()
    }

    /// Runs the client against `vip`; returns its output lines once every server answered.
    fn run_client(&self, vip: &str, n: usize) -> Vec<String> {
        let script = self.lab.dir().join("client.py");
        let out = wait_until_dbg(T, "the client gets answers through lbd", || {
            let o = self
                .client
                .exec(&["python3", script.to_str().unwrap(), vip, &n.to_string()])
                .map_err(|e| e.to_string())?;
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            let all = ["s1", "s2", "s3"]
                .iter()
                .all(|s| lines.iter().any(|l| l.starts_with(&format!("tcp {s} "))));
            if o.status.success() && lines.len() == 2 * n && all {
                Ok(lines)
            } else {
                Err(format!("{text}{}", String::from_utf8_lossy(&o.stderr)))
            }
        })
        .unwrap_or_else(|e| panic!("{e}\nlbd log:\n{}", self.lbd_log()));
        out
    }
}

fn check(lines: &[String], snat: &str, vip: &str) {
    for l in lines {
        let f: Vec<&str> = l.split_whitespace().collect();
        match f.as_slice() {
            ["tcp", _name, src] => assert_eq!(*src, snat, "{l}"),
            ["udp", _name, src, from] => {
                assert_eq!(*src, snat, "the server sees the SNAT address: {l}");
                assert_eq!(*from, vip, "the reply comes from the VIP: {l}");
            }
            _ => panic!("unexpected line {l}"),
        }
    }
    for proto in ["tcp", "udp"] {
        for s in ["s1", "s2", "s3"] {
            assert!(
                lines
                    .iter()
                    .any(|l| l.starts_with(&format!("{proto} {s} "))),
                "{proto} reached {s}: {lines:?}"
            );
        }
    }
}

#[test]
fn servers_see_the_snat_automap_address_over_tcp_and_udp_v4_and_v6() {
    if !prereqs() {
        return;
    }
    let mut topo = build("lb_snat");
    // The servers have no route to the client: only SNAT makes answers possible.
    let lines = topo.run_client("30.1.1.10", 6);
    check(&lines, "10.1.1.6", "30.1.1.10");
    let lines6 = topo.run_client("fd00:30::10", 6);
    check(&lines6, "fd00:10::6", "fd00:30::10");
    let lbd = topo.lbd.take().unwrap();
    assert!(lbd.is_running(), "{}", lbd.log());
}
