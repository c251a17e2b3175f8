//! The built `.so` through lbd's loader (plugin_api::load): ABI symbol, layout check, descriptor,
//! and one call across the boundary.

use plugin_api::{Direction, Flow, Key, Outcome, Transport};

#[test]
fn the_cdylib_loads_and_answers() {
    // Integration tests run from target/<profile>/deps, where `cargo test` leaves the cdylib
    // (`cargo build` copies it one level up).
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let so = [deps, deps.parent().unwrap()]
        .iter()
        .map(|d| d.join("libspanlb_plugin_ssl.so"))
        .find(|p| p.exists())
        .expect("libspanlb_plugin_ssl.so next to the test binary");
    let lib = plugin_api::load(&so).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lib.name(), "ssl");
    assert_eq!(lib.descriptor.max_inspect, 16 * 1024 + 5);
    let i = lib.instantiate("").unwrap();
    assert!(lib
        .instantiate("x")
        .unwrap_err()
        .contains("no plugin_config"));
    let flow = Flow {
        transport: Transport::Tcp,
        direction: Direction::ServerToClient,
        client: "192.0.2.1:40000"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
        vip: "30.1.1.10:443"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    };
    let hex = include_str!("../fixtures/openssl-tls12resume-serverhello.hex").trim();
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let id = &bytes[44..44 + usize::from(bytes[43])];
    assert_eq!(i.inspect(&flow, &bytes), Outcome::Key(Key::new(id)));
    assert_eq!(i.inspect(&flow, b"HTTP/1.1"), Outcome::Malformed);
}
