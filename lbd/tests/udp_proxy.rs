//! The UDP proxy end to end, in process: a daemon built from a configuration in memory, members
//! that are small UDP echo servers, clients that are plain sockets; everything on loopback and
//! every wait bounded.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lbd::app::Daemon;
use lbd::config::Config;
use lbd::state::CounterValues;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};

/// How long a test waits for anything that should happen.
const WAIT: Duration = Duration::from_secs(3);

/// A free UDP port on 127.0.0.1 (bound, read, released).
fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn vip() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A member: answers every datagram with `name:` + the payload, and records who sent it.
struct Echo {
    addr: SocketAddr,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    task: JoinHandle<()>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo(name: &'static str) -> Echo {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    let peers = Arc::new(Mutex::new(Vec::new()));
    let seen = peers.clone();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        loop {
            let Ok((n, from)) = s.recv_from(&mut buf).await else {
                continue;
            };
            seen.lock().unwrap().push(from);
            let mut reply = format!("{name}:").into_bytes();
            reply.extend_from_slice(&buf[..n]);
            let _ = s.send_to(&reply, from).await;
        }
    });
    Echo { addr, peers, task }
}

/// A member address where nothing listens (the kernel answers ICMP port unreachable).
fn dead_member() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

fn members(addrs: &[SocketAddr]) -> String {
    let list: Vec<String> = addrs
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect();
    format!("[{}]", list.join(", "))
}

/// One UDP virtual server `dns` on `vip` in front of pool `p`; `extra` goes into the virtual
/// server's table.
fn config_text(vip: SocketAddr, pool: &[SocketAddr], extra: &str) -> String {
    format!(
        r#"
[device]
name = "test"

[virtual_servers.dns]
destination = "{vip}"
protocol = "udp"
pool = "p"
{extra}

[pools.p]
method = "round-robin"
members = {}
"#,
        members(pool)
    )
}

fn config(text: &str) -> Config {
    Config::from_toml(text, "test.toml").unwrap()
}

async fn daemon(text: &str) -> Arc<Daemon> {
    let shared = Daemon::new(config(text), None);
    shared.start().await.unwrap();
    shared
}

fn vs_counters(shared: &Daemon, vs: &str) -> CounterValues {
    shared.dp.runtime.load().virtual_servers[vs]
        .counters
        .values()
}

fn member_counters(shared: &Daemon, pool: &str, i: usize) -> CounterValues {
    shared.dp.runtime.load().pools[pool].members[i]
        .counters
        .values()
}

async fn client() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

/// Sends `payload` to `to` and returns the reply and where it came from.
async fn ask(c: &UdpSocket, to: SocketAddr, payload: &[u8]) -> (Vec<u8>, SocketAddr) {
    c.send_to(payload, to).await.unwrap();
    let mut buf = vec![0u8; 65_536];
    let (n, from) = timeout(WAIT, c.recv_from(&mut buf))
        .await
        .expect("no reply")
        .unwrap();
    buf.truncate(n);
    (buf, from)
}

/// The name of the member that answered `payload` (and checks the payload came back whole).
async fn who(c: &UdpSocket, to: SocketAddr, payload: &[u8]) -> String {
    let (reply, from) = ask(c, to, payload).await;
    assert_eq!(from, to, "the reply must come from VIP:port");
    let colon = reply.iter().position(|b| *b == b':').expect("name:payload");
    assert_eq!(&reply[colon + 1..], payload);
    String::from_utf8(reply[..colon].to_vec()).unwrap()
}

/// Sends `payload` and expects no answer within `within`.
async fn no_reply(c: &UdpSocket, to: SocketAddr, payload: &[u8], within: Duration) {
    c.send_to(payload, to).await.unwrap();
    let mut buf = vec![0u8; 65_536];
    if let Ok(r) = timeout(within, c.recv_from(&mut buf)).await {
        panic!("unexpected reply: {r:?}");
    }
}

/// Waits (bounded) until `cond` holds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_reach_a_member_through_snat_and_replies_come_from_the_vip() {
    let a = echo("a").await;
    let vip = vip();
    let shared = daemon(&config_text(vip, &[a.addr], "snat = \"127.0.0.2\"")).await;
    let c = client().await;

    assert_eq!(who(&c, vip, b"hello").await, "a");
    // Zero-length datagrams are datagrams too.
    assert_eq!(who(&c, vip, b"").await, "a");
    let big = vec![7u8; 60_000];
    assert_eq!(who(&c, vip, &big).await, "a");

    // The member saw the flow's SNAT address, one upstream socket for the three datagrams.
    let peers = a.peers.lock().unwrap().clone();
    assert_eq!(peers.len(), 3);
    assert!(peers.iter().all(|p| *p == peers[0]));
    assert_eq!(peers[0].ip().to_string(), "127.0.0.2");

    // The connection table holds the flow as it is.
    let recs = shared.dp.conns.records(10, |_| true);
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(r.protocol, lbd::config::Protocol::Udp);
    assert_eq!(r.virtual_server, "dns");
    assert_eq!(r.client, c.local_addr().unwrap());
    assert_eq!(r.vip, vip);
    assert_eq!(r.member, a.addr);
    assert_eq!(r.snat, peers[0]);
    assert_eq!(r.bytes_in, 5 + 60_000);
    let v = vs_counters(&shared, "dns");
    assert_eq!((v.current, v.total), (1, 1));
    assert_eq!(member_counters(&shared, "p", 0).current, 1);
    shared.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_flows_and_each_flow_sticks_to_its_member() {
    let (a, b) = (echo("a").await, echo("b").await);
    let vip = vip();
    let shared = daemon(&config_text(vip, &[a.addr, b.addr], "snat = \"none\"")).await;

    let mut clients = Vec::new();
    let mut firsts = Vec::new();
    for _ in 0..4 {
        let c = client().await;
        firsts.push(who(&c, vip, b"first").await);
        clients.push(c);
    }
    for w in firsts.windows(2) {
        assert_ne!(w[0], w[1], "new flows alternate members: {firsts:?}");
    }
    // Every later datagram of a flow goes where its first one went.
    for round in 0..5 {
        for (c, first) in clients.iter().zip(&firsts) {
            let payload = format!("again {round}");
            assert_eq!(&who(c, vip, payload.as_bytes()).await, first);
        }
    }
    assert_eq!(shared.dp.conns.len(), 4);
    let v = vs_counters(&shared, "dns");
    assert_eq!((v.current, v.total), (4, 4));
    assert_eq!(member_counters(&shared, "p", 0).current, 2);
    assert_eq!(member_counters(&shared, "p", 1).current, 2);
    shared.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_flows_expire_and_the_next_datagram_makes_a_new_flow() {
    let (a, b) = (echo("a").await, echo("b").await);
    let vip = vip();
    let text = config_text(
        vip,
        &[a.addr, b.addr],
        "snat = \"127.0.0.1\"\nidle_timeout = \"300ms\"",
    );
    let shared = daemon(&text).await;
    let c = client().await;

    let first = who(&c, vip, b"1").await;
    // Traffic keeps the flow alive well past the timeout.
    for _ in 0..6 {
        sleep(Duration::from_millis(100)).await;
        assert_eq!(who(&c, vip, b"keep").await, first);
    }
    assert_eq!(shared.dp.conns.len(), 1);

    // Idle: it goes, with its current counts.
    until("the idle flow expires", || shared.dp.conns.is_empty()).await;
    let v = vs_counters(&shared, "dns");
    assert_eq!((v.current, v.total), (0, 1));

    // The same client now makes a new flow: round-robin takes the other member.
    let second = who(&c, vip, b"2").await;
    assert_ne!(first, second);
    assert_eq!(shared.dp.conns.len(), 1);
    assert_eq!(vs_counters(&shared, "dns").total, 2);
    shared.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_counts_live_flows() {
    let a = echo("a").await;
    let vip = vip();
    let text = config_text(
        vip,
        &[a.addr],
        "snat = \"none\"\nconnection_limit = 1\nidle_timeout = \"1s\"",
    );
    let shared = daemon(&text).await;
    let (c1, c2) = (client().await, client().await);

    assert_eq!(who(&c1, vip, b"one").await, "a");
    no_reply(&c2, vip, b"two", Duration::from_millis(300)).await;
    let v = vs_counters(&shared, "dns");
    assert!(v.refused >= 1, "{v:?}");
    assert_eq!((v.current, v.total), (1, 1));
    // The first flow carries on.
    assert_eq!(who(&c1, vip, b"one again").await, "a");
    assert_eq!(a.peers.lock().unwrap().len(), 2);

    // Once it has expired, the second client gets its flow.
    until("the first flow expires", || shared.dp.conns.is_empty()).await;
    assert_eq!(who(&c2, vip, b"two").await, "a");
    assert_eq!(vs_counters(&shared, "dns").total, 2);
    shared.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_icmp_unreachable_member_ends_the_flow_and_counts_a_connect_failure() {
    let alive = echo("alive").await;
    let dead = dead_member();
    let (vip, vip2) = (vip(), vip());
    let text = format!(
        "{}
[virtual_servers.mixed]
destination = \"{vip2}\"
protocol = \"udp\"
pool = \"mixed\"
snat = \"none\"

[pools.mixed]
members = {}
",
        config_text(vip, &[dead], "snat = \"none\""),
        members(&[dead, alive.addr])
    );
    let shared = daemon(&text).await;
    let c = client().await;

    // Only a dead member: the flow ends on the ICMP answer, the member is charged.
    c.send_to(b"anyone?", vip).await.unwrap();
    until("a connect failure on the dead member", || {
        member_counters(&shared, "p", 0).connect_failures == 1
    })
    .await;
    until("the flow ends", || shared.dp.conns.is_empty()).await;
    // The next datagram makes a new flow (choosing again), which fails the same way.
    c.send_to(b"anyone now?", vip).await.unwrap();
    until("a second connect failure", || {
        member_counters(&shared, "p", 0).connect_failures == 2
    })
    .await;
    until("the second flow ends", || shared.dp.conns.is_empty()).await;
    let v = vs_counters(&shared, "dns");
    assert_eq!((v.current, v.total), (0, 2));

    // Dead and alive members: a client whose flow went to the dead one is answered by the live
    // one on a later datagram, and stays there.
    let mut answered = None;
    for i in 0..10 {
        c.send_to(format!("try {i}").as_bytes(), vip2)
            .await
            .unwrap();
        let mut buf = vec![0u8; 1024];
        if let Ok(r) = timeout(Duration::from_millis(200), c.recv_from(&mut buf)).await {
            let (n, from) = r.unwrap();
            assert_eq!(from, vip2);
            answered = Some(String::from_utf8_lossy(&buf[..n]).to_string());
            break;
        }
    }
    let answered = answered.expect("the live member answers");
    assert!(answered.starts_with("alive:"), "{answered}");
    for _ in 0..3 {
        assert_eq!(who(&c, vip2, b"still").await, "alive");
    }
    // Round-robin sent one of the flows to the dead member, or the first went straight to the
    // live one; either way nothing stuck to the dead member.
    let dead_in_mixed = member_counters(&shared, "mixed", 0);
    assert_eq!(dead_in_mixed.current, 0);
    assert_eq!(dead_in_mixed.connect_failures, dead_in_mixed.total);
    shared.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_counters_match_what_was_sent_and_received() {
    let (a, b) = (echo("a").await, echo("b").await);
    let vip = vip();
    let shared = daemon(&config_text(vip, &[a.addr, b.addr], "snat = \"none\"")).await;
    let (c1, c2) = (client().await, client().await);

    let (mut sent, mut received) = (0u64, 0u64);
    for (i, size) in [0usize, 1, 100, 1_400, 9_000, 30_000]
        .into_iter()
        .enumerate()
    {
        let c = if i % 2 == 0 { &c1 } else { &c2 };
        let payload = vec![b'x'; size];
        let (reply, _) = ask(c, vip, &payload).await;
        sent += size as u64;
        received += reply.len() as u64;
    }
    until("the virtual server counted every byte", || {
        let v = vs_counters(&shared, "dns");
        v.bytes_in == sent && v.bytes_out == received
    })
    .await;
    // Members' counters add up to the virtual server's, and so do the flows'.
    let (m0, m1) = (
        member_counters(&shared, "p", 0),
        member_counters(&shared, "p", 1),
    );
    assert_eq!(m0.bytes_in + m1.bytes_in, sent);
    assert_eq!(m0.bytes_out + m1.bytes_out, received);
    let recs = shared.dp.conns.records(10, |_| true);
    assert_eq!(recs.len(), 2);
    assert_eq!(recs.iter().map(|r| r.bytes_in).sum::<u64>(), sent);
    assert_eq!(recs.iter().map(|r| r.bytes_out).sum::<u64>(), received);
    shared.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_new_flows_only_and_removing_the_listener_ends_its_flows() {
    let (a, b) = (echo("a").await, echo("b").await);
    let vip = vip();
    let shared = daemon(&config_text(vip, &[a.addr], "snat = \"none\"")).await;
    let (c1, c2) = (client().await, client().await);

    assert_eq!(who(&c1, vip, b"before").await, "a");
    let summary = shared
        .apply(config(&config_text(vip, &[b.addr], "snat = \"none\"")))
        .await
        .unwrap();
    assert!(summary.listeners_added.is_empty() && summary.listeners_removed.is_empty());
    // The established flow keeps its member; a new one gets the new pool's.
    assert_eq!(who(&c1, vip, b"after").await, "a");
    assert_eq!(who(&c2, vip, b"after").await, "b");
    assert_eq!(shared.dp.conns.len(), 2);

    // A configuration without the virtual server stops the listener and its flows.
    let without = format!(
        "[device]\nname = \"test\"\n[pools.p]\nmembers = {}\n",
        members(&[b.addr])
    );
    let summary = shared.apply(config(&without)).await.unwrap();
    assert_eq!(summary.listeners_removed.len(), 1);
    until("the removed listener's flows end", || {
        shared.dp.conns.is_empty()
    })
    .await;
    no_reply(&c1, vip, b"gone", Duration::from_millis(200)).await;
    shared.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_ends_every_flow() {
    let a = echo("a").await;
    let vip = vip();
    let shared = daemon(&config_text(vip, &[a.addr], "snat = \"none\"")).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let c = client().await;
        assert_eq!(who(&c, vip, b"hi").await, "a");
        clients.push(c);
    }
    assert_eq!(shared.dp.conns.len(), 3);
    assert_eq!(vs_counters(&shared, "dns").current, 3);
    shared.stop().await;
    until("every flow is gone", || {
        shared.dp.conns.is_empty()
            && vs_counters(&shared, "dns").current == 0
            && member_counters(&shared, "p", 0).current == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_keeps_the_flows_there_are_and_opens_no_new_one() {
    let a = echo("a").await;
    let vip = vip();
    let text = config_text(vip, &[a.addr], "snat = \"none\"\nidle_timeout = \"1s\"");
    let shared = daemon(&text).await;
    let (c1, c2) = (client().await, client().await);
    assert_eq!(who(&c1, vip, b"one").await, "a");
    assert_eq!(shared.dp.open().flows, 1);

    // The drain closes TCP listeners only: the UDP socket stays for the flow it has.
    assert_eq!(shared.stop_accepting().await, 0);
    assert!(shared.dp.drain.is_draining());
    assert_eq!(who(&c1, vip, b"one again").await, "a");
    no_reply(&c2, vip, b"two", Duration::from_millis(300)).await;
    let v = vs_counters(&shared, "dns");
    assert!(v.refused >= 1, "{v:?}");
    assert_eq!((v.current, v.total), (1, 1));

    // The flow ends by its idle timeout: nothing is left open.
    until("the flow expires", || shared.dp.open().total() == 0).await;
    no_reply(&c1, vip, b"one more", Duration::from_millis(300)).await;
    assert_eq!(vs_counters(&shared, "dns").total, 1);
    // A reload would listen again: it is refused.
    assert!(shared.apply(config(&text)).await.is_err());
    shared.stop().await;
}

/// The access log covers UDP flows too (issue 16): one line when a flow ends, here by its
/// idle timeout, with the member, the SNAT source and the bytes each way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_flow_gets_an_access_log_line() {
    let a = echo("a").await;
    let vip = vip();
    let file = std::env::temp_dir().join(format!(
        "lbd-udp-access-{}-{}.log",
        std::process::id(),
        vip.port()
    ));
    let _ = std::fs::remove_file(&file);
    let text = config_text(
        vip,
        &[a.addr],
        "snat = \"127.0.0.1\"\nidle_timeout = \"300ms\"\naccess_log = true",
    )
    .replace(
        "name = \"test\"",
        &format!("name = \"test\"\naccess_log_file = \"{}\"", file.display()),
    );
    let shared = daemon(&text).await;
    let c = client().await;
    let (reply, _) = ask(&c, vip, b"ping").await;
    until("the idle flow expires", || shared.dp.conns.is_empty()).await;
    until("the access-log line", || {
        std::fs::read_to_string(&file).is_ok_and(|t| t.ends_with('\n'))
    })
    .await;
    let text = std::fs::read_to_string(&file).unwrap();
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(v["virtual_server"], "dns", "{v}");
    assert_eq!(v["client"], c.local_addr().unwrap().to_string(), "{v}");
    assert_eq!(v["vip"], vip.to_string(), "{v}");
    assert_eq!(v["member"], a.addr.to_string(), "{v}");
    assert!(
        v["snat"]
            .as_str()
            .is_some_and(|s| s.starts_with("127.0.0.1:")),
        "{v}"
    );
    assert_eq!(v["bytes_up"], 4, "{v}");
    assert_eq!(v["bytes_down"], reply.len(), "{v}");
    assert_eq!(v["end"], "idle", "{v}");
    shared.stop().await;
    let _ = std::fs::remove_file(&file);
}
