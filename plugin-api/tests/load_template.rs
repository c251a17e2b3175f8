//! Loads the template plugin's `.so` (built by the test) through the real ABI path.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

use plugin_api::{Direction, Flow, Key, Outcome, Transport};

/// Builds package `pkg` and returns its cdylib, from cargo's JSON messages.
fn build_cdylib(pkg: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--quiet", "--message-format=json", "-p", pkg])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo build");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("\"compiler-artifact\""))
        .flat_map(|l| {
            l.split('"')
                .filter(|s| s.ends_with(".so"))
                .map(PathBuf::from)
                .collect::<Vec<_>>()
        })
        .next_back()
        .expect("a .so in cargo's output")
}

#[test]
fn the_template_loads_and_answers_through_the_abi() {
    let so = build_cdylib("spanlb-plugin-template");
    let dir = std::env::temp_dir().join(format!("plugin-api-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("libfirst.so");
    std::fs::copy(&so, &copy).unwrap();
    let lib = plugin_api::load(&copy).expect("load");
    assert_eq!(lib.name(), "first-line");
    assert_eq!(lib.descriptor.max_inspect, 4096);
    let inst = lib.instantiate("max=64").expect("instantiate");
    let flow = Flow {
        transport: Transport::Tcp,
        direction: Direction::ClientToServer,
        client: "192.0.2.1:40000".parse::<SocketAddr>().unwrap().into(),
        vip: "30.1.1.10:80".parse::<SocketAddr>().unwrap().into(),
    };
    assert_eq!(
        inst.inspect(&flow, b"hello\nworld"),
        Outcome::Key(Key::new(b"hello"))
    );
    assert!(lib
        .instantiate("max=0")
        .unwrap_err()
        .contains("max must be"));
    let _ = std::fs::remove_dir_all(&dir);
}
