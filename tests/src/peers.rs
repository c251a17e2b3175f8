//! A two-namespace lab for interop tests against other BGP implementations (BIRD 2, GoBGP):
//! upstream `r1` (AS 65000, 20.1.1.1/24, the peer under test) and one device `a` (our bgpd,
//! AS 65001, static 20.1.1.6/24 plus the floating self IPs 20.1.1.2/24 and 20.1.1.3/24) on one
//! bridge segment `ext`. bgpd announces the VIP with a third-party NEXT_HOP (the floating IP),
//! AS_PATH prepend, MED, communities and a large community, and a second prefix with
//! `next_hop = "self"`. The upstream itself is started by the test.

use std::path::PathBuf;
use std::time::Duration;

use spanlb_lab::{cargo_bin, wait_until_dbg, Lab, LabError, Ns, Proc, Result};

use crate::control::ControlClient;

pub const ROUTER: &str = "20.1.1.1";
pub const ROUTER_AS: u32 = 65000;
pub const DEVICE: &str = "20.1.1.6";
pub const DEVICE_AS: u32 = 65001;
/// Floating self IP used as NEXT_HOP of path 1 of the VIP.
pub const FLOATING: &str = "20.1.1.2";
/// Floating self IP used as NEXT_HOP of path 2 of the VIP (ADD-PATH variant only).
pub const FLOATING2: &str = "20.1.1.3";
/// The VIP, announced with path id 1 (and 2 in the ADD-PATH variant).
pub const VIP: &str = "30.1.1.10/32";
/// A second prefix announced with `next_hop = "self"`.
pub const VIP_SELF: &str = "30.1.1.11/32";
/// Path 1's attributes as the peer must show them.
pub const MED: u32 = 50;
/// Path 2's MED (ADD-PATH variant).
pub const MED2: u32 = 60;
/// 65001 prepended twice: three times in all.
pub const AS_PATH: [u32; 3] = [DEVICE_AS, DEVICE_AS, DEVICE_AS];
pub const COMMUNITIES: [(u16, u16); 2] = [(65001, 100), (65001, 200)];
pub const LARGE_COMMUNITY: (u32, u32, u32) = (65001, 1, 2);

/// What the bgpd under test is configured with.
#[derive(Clone, Debug, Default)]
pub struct PeerOptions {
    /// Offer ADD-PATH send for IPv4 unicast and announce the VIP twice (path ids 1 and 2).
    pub add_path: bool,
    /// BFD with the neighbor: 100 ms × 3, meticulous keyed SHA1 with key id 7 and key
    /// [`BFD_KEY`].
    pub bfd: bool,
}

/// The BFD key of [`PeerOptions::bfd`].
pub const BFD_KEY: &str = "spanlb-bfd";

pub struct PeerLab {
    pub lab: Lab,
    /// The upstream router's namespace (the peer under test runs here).
    pub r1: Ns,
    /// The device's namespace (our bgpd runs here).
    pub a: Ns,
    pub bgpd: Option<Proc>,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub opts: PeerOptions,
}

impl PeerLab {
    /// Namespaces and the `ext` segment; neither the peer nor bgpd are started.
    pub fn build(test: &str, opts: PeerOptions) -> Result<PeerLab> {
        let lab = Lab::new(test)?;
        let r1 = lab.ns("r1")?;
        let a = lab.ns("a")?;
        let r1_addrs = ["20.1.1.1/24"];
        let a_addrs = ["20.1.1.6/24", "20.1.1.2/24", "20.1.1.3/24"];
        lab.bridge_segment("ext", &[(&r1, "eth0", &r1_addrs), (&a, "ext0", &a_addrs)])?;
        let dir = lab.dir().to_path_buf();
        Ok(PeerLab {
            lab,
            r1,
            a,
            bgpd: None,
            config: dir.join("bgpd-a.toml"),
            socket: dir.join("bgpd-a.sock"),
            opts,
        })
    }

    /// bgpd's configuration: one neighbor (r1) and the routes.
    pub fn bgpd_config(&self) -> String {
        let mut c = format!(
            "router_id = \"{DEVICE}\"\nlocal_as = {DEVICE_AS}\nlisten = [\"0.0.0.0:179\"]\n\
             control_socket = \"{sock}\"\n\n\
             [[neighbor]]\naddress = \"{ROUTER}\"\nremote_as = {ROUTER_AS}\n\
             local_address = \"{DEVICE}\"\nhold_time = 9\nconnect_retry = 1\nidle_hold = 1\n\
             families = [\"ipv4-unicast\"]\n",
            sock = self.socket.display(),
        );
        if self.opts.add_path {
            c.push_str("add_path_send = [\"ipv4-unicast\"]\n");
        }
        if self.opts.bfd {
            c.push_str(&format!(
                "bfd = {{ min_tx_ms = 100, min_rx_ms = 100, multiplier = 3, auth = {{ type = \
                 \"meticulous-keyed-sha1\", key_id = 7, key = \"{BFD_KEY}\" }} }}\n"
            ));
        }
        c.push_str(&format!(
            "\n[[route]]\nprefix = \"{VIP}\"\npath_id = 1\nnext_hop = \"{FLOATING}\"\n\
             as_path_prepend = 2\nmed = {MED}\ncommunities = [\"65001:100\", \"65001:200\"]\n\
             large_communities = [\"65001:1:2\"]\n\n\
             [[route]]\nprefix = \"{VIP_SELF}\"\nnext_hop = \"self\"\n"
        ));
        if self.opts.add_path {
            c.push_str(&format!(
                "\n[[route]]\nprefix = \"{VIP}\"\npath_id = 2\nnext_hop = \"{FLOATING2}\"\n\
                 med = {MED2}\n"
            ));
        }
        c
    }

    /// Writes the configuration and starts bgpd in `a`.
    pub fn start_bgpd(&mut self) -> Result<()> {
        std::fs::write(&self.config, self.bgpd_config())
            .map_err(|e| LabError::io("writing bgpd config", e))?;
        let mut cmd = std::process::Command::new(cargo_bin("bgpd"));
        cmd.arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info,bgpd=debug");
        self.bgpd = Some(self.a.spawn_cmd(cmd, "bgpd-a.log")?);
        Ok(())
    }

    /// A control-socket client of the bgpd (waits for the socket).
    pub fn control(&self) -> Result<ControlClient> {
        let p = self.socket.clone();
        wait_until_dbg(Duration::from_secs(10), "bgpd control socket", || {
            ControlClient::connect(&p).map_err(|e| e.to_string())
        })
    }

    /// bgpd's whole log (for failure messages).
    pub fn bgpd_log(&self) -> String {
        self.bgpd.as_ref().map(|p| p.log()).unwrap_or_default()
    }
}
