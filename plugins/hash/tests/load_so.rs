//! The built `.so` through lbd's loader (plugin_api::load): ABI symbol, layout check, descriptor,
//! configuration errors and one call across the boundary.

use plugin_api::{Direction, Flow, Key, Outcome, Transport};

#[test]
fn the_cdylib_loads_and_answers() {
    // Integration tests run from target/<profile>/deps, where `cargo test` leaves the cdylib
    // (`cargo build` copies it one level up).
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let so = [deps, deps.parent().unwrap()]
        .iter()
        .map(|d| d.join("libspanlb_plugin_hash.so"))
        .find(|p| p.exists())
        .expect("libspanlb_plugin_hash.so next to the test binary");
    let lib = plugin_api::load(&so).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lib.name(), "hash");
    assert_eq!(lib.descriptor.max_inspect, 4096);
    assert!(lib
        .instantiate("")
        .unwrap_err()
        .contains("empty plugin_config"));
    let flow = Flow {
        transport: Transport::Tcp,
        direction: Direction::ClientToServer,
        client: "192.0.2.1:40000"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
        vip: "30.1.1.10:80"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    };
    let i = lib.instantiate(r"regex:user=(\w+)&").unwrap();
    assert_eq!(
        i.inspect(&flow, b"GET /?user=ann&x=1 HTTP/1.1\r\n"),
        Outcome::Key(Key::new(b"ann"))
    );
    assert_eq!(
        i.inspect(&flow, b"GET /?us"),
        Outcome::NeedMore { min_len: 9 }
    );
    let i = lib.instantiate("client-ip").unwrap();
    assert_eq!(i.inspect(&flow, b""), Outcome::Key(Key::new(b"192.0.2.1")));
}
