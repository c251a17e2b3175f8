//! plugin_inspect links the four plugin crates in (for coverage), and each one exports the same
//! plugin entry symbols (`spanlb_plugin_abi_version`, abi_stable's root module) that a `.so`
//! needs: the linker may keep any one of them, since no fuzz target looks them up in itself.
fn main() {
    println!("cargo:rustc-link-arg-bins=-Wl,--allow-multiple-definition");
}
