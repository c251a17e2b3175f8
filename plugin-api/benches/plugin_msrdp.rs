//! `inspect` of the msrdp plugin on an RDP X.224 Connection Request: natively and through its `.so`
//! (see `inspect/mod.rs`).

#[path = "../tests/common/mod.rs"]
mod common;
mod inspect;

fn main() {
    inspect::run("msrdp", inspect::native::<spanlb_plugin_msrdp::MsRdp>);
}
