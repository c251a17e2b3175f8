//! `inspect` of the sip plugin on an RFC 3261 INVITE: natively and through its `.so`
//! (see `inspect/mod.rs`).

#[path = "../tests/common/mod.rs"]
mod common;
mod inspect;

fn main() {
    inspect::run("sip", inspect::native::<spanlb_plugin_sip::Sip>);
}
