//! `inspect` of the hash plugin on an HTTP request, with `regex:session=(\w+)`: natively and through its `.so`
//! (see `inspect/mod.rs`).

#[path = "../tests/common/mod.rs"]
mod common;
mod inspect;

fn main() {
    inspect::run("hash", inspect::native::<spanlb_plugin_hash::Hash>);
}
