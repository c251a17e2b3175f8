//! The cluster lab itself, without the device group (`plain`: lbd with its pre-cluster
//! configuration, every floating address on its home device, bgpd announcing statically):
//! namespaces, segments, FRR, servers, the client tools and SNAT work as the cluster tests
//! expect.

use std::time::Duration;

use spanlb_tests::cluster::{prereqs, ClusterLab, ClusterOptions};
use spanlb_tests::traffic::{per_device, short_connections, udp_queries, LongLived, Prober};

#[test]
fn plain_lab_carries_traffic_through_three_devices() {
    plain(false);
}

#[test]
fn plain_routed_lab_carries_traffic_through_three_devices() {
    plain(true);
}

fn plain(routed: bool) {
    if !prereqs() {
        return;
    }
    let opts = ClusterOptions {
        plain: true,
        routed,
        ..ClusterOptions::default()
    };
    let lab = ClusterLab::build("cluster_lab_plain", opts).expect("building");
    let r = lab.wait_steady(Duration::from_secs(45));
    lab.ok(r, "steady");
    let answers = lab.ok(short_connections(&lab.client, 300), "client");
    println!("tcp: {:?}", per_device(&answers));
    lab.check(answers.iter().all(Result::is_ok), format!("{answers:?}"));
    let udp = lab.ok(udp_queries(&lab.client, 20), "udp");
    println!("udp: {:?}", per_device(&udp));
    let ll = lab.ok(LongLived::open(&lab.client, 10, &["a", "c"]), "long-lived");
    let mut p = lab.ok(
        Prober::start(&lab.client, Duration::from_secs(10)),
        "prober",
    );
    let t = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    p.stop();
    let st = p.stats(t);
    println!(
        "prober {st:?} {:?}; flows {}",
        p.devices_since(t),
        ll.summary()
    );
    lab.check(
        st.failed == 0 && st.attempts > 100,
        format!("{st:?} {:?}", p.errors(5)),
    );
    lab.check(ll.disturbed(&[]).is_empty(), ll.summary());
}
