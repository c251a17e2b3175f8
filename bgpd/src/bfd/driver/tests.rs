//! Loopback tests with real sockets and real time (short intervals): 127.0.0.0/8 is all local
//! on Linux, so each driver gets its own address.

use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use crate::bfd::packet::ControlPacket;

fn fast(discr: u32) -> SessionConfig {
    let mut c = SessionConfig::new(discr);
    c.intervals = Intervals {
        desired_min_tx: Duration::from_millis(100),
        required_min_rx: Duration::from_millis(100),
        // 500 ms: fast, with room for a loaded test machine.
        detect_mult: 5,
    };
    c
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

async fn wait_for(h: &PeerHandle, what: impl Fn(&Status) -> bool) -> Status {
    let mut w = h.watch();
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let st = *w.borrow_and_update();
            if what(&st) {
                return st;
            }
            w.changed().await.expect("driver running");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out; status {:?}", h.status()))
}

#[tokio::test]
async fn two_drivers_come_up_and_detect_a_stopped_peer() {
    let a = Driver::bind(addr("127.0.0.1:0")).unwrap();
    let b = Driver::bind(addr("127.0.0.2:0")).unwrap();
    assert!(SOURCE_PORTS.contains(&a.source_addr().port()));
    let pa = a.add_peer(b.local_addr(), fast(1)).await.unwrap();
    let pb = b.add_peer(a.local_addr(), fast(2)).await.unwrap();
    wait_for(&pa, |s| s.state == State::Up).await;
    wait_for(&pb, |s| s.state == State::Up).await;
    assert!(matches!(
        a.add_peer(b.local_addr(), fast(3)).await,
        Err(DriverError::DuplicatePeer(_))
    ));

    // The peer disables its session: Down with diag 3, remote AdminDown (no path failure).
    pb.admin_down(true);
    let st = wait_for(&pa, |s| s.state == State::Down).await;
    assert_eq!(st.diag, Diag::NeighborSignaledSessionDown);
    assert_eq!(st.remote_state, State::AdminDown);
    pb.admin_down(false);
    wait_for(&pa, |s| s.state == State::Up).await;
    wait_for(&pb, |s| s.state == State::Up).await;
    // Let the Poll Sequences that follow Up settle: until A has a packet from B carrying its
    // 100 ms DesiredMinTx, A's Detection Time is still 5 × 1 s (RFC 5880 §6.8.4).
    tokio::time::sleep(Duration::from_millis(600)).await;

    // The peer's driver stops: detected by the detection timer.
    let t = std::time::Instant::now();
    drop(b);
    let st = wait_for(&pa, |s| s.state == State::Down).await;
    assert_eq!(st.diag, Diag::ControlDetectionTimeExpired);
    // 5 × 100 ms plus scheduling slack, well under the 5 s of the slow rate.
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

fn down_from(discr: u32) -> Vec<u8> {
    packet::encode(&ControlPacket {
        diag: Diag::None,
        state: State::Down,
        poll: false,
        final_: false,
        cpi: false,
        demand: false,
        detect_mult: 3,
        my_discriminator: discr,
        your_discriminator: 0,
        desired_min_tx_us: 1_000_000,
        required_min_rx_us: 1_000_000,
        required_min_echo_rx_us: 0,
        auth: None,
    })
}

#[tokio::test]
async fn packets_with_ttl_below_255_are_dropped() {
    let a = Driver::bind(addr("127.0.0.1:0")).unwrap();
    let peer = UdpSocket::bind(addr("127.0.0.3:0")).await.unwrap();
    let h = a
        .add_peer(peer.local_addr().unwrap(), fast(1))
        .await
        .unwrap();
    peer.set_ttl(254).unwrap();
    peer.send_to(&down_from(9), a.local_addr()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.state(), State::Down);
    peer.set_ttl(255).unwrap();
    peer.send_to(&down_from(9), a.local_addr()).await.unwrap();
    wait_for(&h, |s| s.state == State::Init).await;
    // Our packets come from the send socket, a port in the RFC 5881 range.
    let mut buf = [0u8; 64];
    let (n, from) = recv(&peer, &mut buf).await;
    assert_eq!(from, a.source_addr());
    assert!(packet::decode(&buf[..n]).is_ok());
    // Removing the session says AdminDown to the peer (RFC 5880 §6.8.16).
    h.remove();
    loop {
        let (n, _) = recv(&peer, &mut buf).await;
        if packet::decode(&buf[..n]).unwrap().state == State::AdminDown {
            break;
        }
    }
}

async fn recv(sock: &UdpSocket, buf: &mut [u8]) -> (usize, SocketAddr) {
    tokio::time::timeout(Duration::from_secs(3), sock.recv_from(buf))
        .await
        .expect("a packet")
        .unwrap()
}
