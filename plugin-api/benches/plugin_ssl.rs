//! `inspect` of the ssl plugin on a TLS 1.2 ClientHello resuming a session: natively and through its `.so`
//! (see `inspect/mod.rs`).

#[path = "../tests/common/mod.rs"]
mod common;
mod inspect;

fn main() {
    inspect::run("ssl", inspect::native::<spanlb_plugin_ssl::Ssl>);
}
