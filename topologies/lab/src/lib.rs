//! spanlb-lab — the network-namespace lab harness for spanlb's topology tests, the demo and
//! the benchmark scripts (docs/design.md, "The lab").
//!
//! A [`Lab`] gets a short unique prefix (`sl<pid base36>-<counter base36>`) and makes
//! namespaces `<prefix>-<short>` ([`Lab::ns`]), veth links ([`Lab::veth`],
//! [`Lab::veth_macs`]), L2 segments (bridges in a per-lab switch namespace,
//! [`Lab::bridge_segment`]), processes running inside namespaces ([`Ns::spawn`]) and FRR
//! instances ([`Lab::frr`]). Dropping the lab — also while a test panics — SIGKILLs every
//! process it started or that is still inside its namespaces, kills FRR by its pid files and
//! deletes every namespace; the lab directory with configs and logs is deleted on success and
//! kept (path printed) when the test panicked. A new lab first sweeps namespaces of earlier
//! labs whose owner process is dead (markers in [`MARKER_DIR`], owner pid also encoded in the
//! name).
//!
//! What it must not do: touch the root namespace's addresses, routes, links or sysctls. Links
//! are created directly inside lab namespaces (`ip -n NS link add ... netns PEER`), addresses
//! and routes only ever exist inside them, and all traffic stays between lab namespaces. The
//! only root-namespace state it writes is what `ip netns` needs (`/run/netns/<name>`), its
//! marker files, FRR's per-pathspace `/run/frr/<name>`, and its temporary directory.
//!
//! Tests start with [`lab_prereqs!`], which skips when root or a tool is missing — except
//! under `CI=true`, where a missing prerequisite is a failure. Waiting is done with
//! [`wait_until`] / [`wait_until_dbg`], never fixed sleeps.

mod bin;
mod cdylib;
mod error;
pub mod frr;
mod lab;
mod ping;
mod prereq;
pub mod seed;
mod util;
mod wait;

pub use bin::{bin_dir, cargo_bin, try_cargo_bin};
pub use cdylib::{build_cdylib, build_cdylibs};
pub use error::{LabError, Result};
pub use frr::Frr;
pub use lab::{
    pid_of_prefix, purge_stale, Lab, Ns, Proc, Segment, DIR_ENV, IFNAME_MAX, KEEP_ENV, MARKER_DIR,
    SWITCH,
};
pub use prereq::{check_prereqs, find_tool, in_ci, require_root_and_tools, Skip};
pub use util::proc_state;
pub use wait::{wait_until, wait_until_dbg, POLL_INTERVAL};
