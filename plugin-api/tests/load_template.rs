//! Loads the template plugin's `.so` (built by the test) through the real ABI path.

mod common;

use plugin_api::{Key, Outcome};

#[test]
fn the_template_loads_and_answers_through_the_abi() {
    let so = spanlb_lab::build_cdylib("spanlb-plugin-template").unwrap_or_else(|e| panic!("{e}"));
    let dir = common::TempDir::new("load-template");
    let copy = dir.install(&so, "libfirst.so");
    let lib = plugin_api::load(&copy).expect("load");
    assert_eq!(lib.name(), "first-line");
    assert_eq!(lib.descriptor.max_inspect, 4096);
    let inst = lib.instantiate("max=64").expect("instantiate");
    assert_eq!(
        inst.inspect(&common::flow(), b"hello\nworld"),
        Outcome::Key(Key::new(b"hello"))
    );
    assert!(lib
        .instantiate("max=0")
        .unwrap_err()
        .contains("max must be"));
}
