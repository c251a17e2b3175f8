//! Topology and integration tests of spanlb against real peers (FRR, BIRD, GoBGP, ExaBGP) in
//! network namespaces the tests create. The tests live in `tests/*.rs`; this library holds the
//! shared pieces: the seed's three-device ECMP lab ([`seed`], BGP only), the three-device cluster
//! lab with bgpd + lbd ([`cluster`]) and its traffic tools ([`traffic`]), and a control-socket
//! client.
//!
//! Nothing here sends traffic outside the lab's namespaces.

pub mod chaos;
pub mod cluster;
pub mod control;
pub mod membership;
pub mod mirror;
pub mod peers;
pub mod seed;
pub mod topology;
pub mod traffic;
