//! Bidirectional Forwarding Detection (RFC 5880), single-hop, Asynchronous mode: the protocol
//! core, sans IO, in the style of [`crate::fsm`].
//!
//! - [`packet`]: the Control packet of RFC 5880 §4.1 with its Authentication Section
//!   (§4.2–§4.4: Simple Password, Keyed and Meticulous Keyed MD5 and SHA1), [`decode`] with the
//!   packet-only reception checks of §6.8.6, [`encode`], signing and verification (§6.7).
//! - [`session`]: one session's state machine (§6.2 states, §6.8.1 variables, §6.8.6 reception,
//!   §6.8.7 transmission with jitter, §6.8.3 timer negotiation and Poll Sequences, §6.8.4
//!   detection, §6.8.16 AdminDown). [`Session::process`] takes `(now, Input)` and returns
//!   [`Output`]s; [`Session::poll_timeout`] gives the next deadline.
//!
//! Not implemented: Demand mode, the Echo function, the passive role, multipoint (RFC 8562),
//! and multihop (RFC 5883: the same packets on UDP port 4784, with TTL checks replaced by
//! whatever the operator configures). Authentication with several keys at once (key rollover)
//! is not either: one [`AuthKey`] per session.
//!
//! What a transport must do for single-hop BFD (RFC 5881), and [`driver`] does:
//! - receive on UDP destination port 3784; send from a source port in 49152–65535, the same
//!   for all packets of a session (§4);
//! - send with IP TTL / IPv6 Hop Limit 255, and drop received packets whose TTL / Hop Limit is
//!   not 255 (§5, the GTSM rule of RFC 5082): read it per datagram with `IP_RECVTTL` /
//!   `IPV6_RECVHOPLIMIT` (Linux applies `IP_MINTTL` to TCP only: a UDP socket with it still
//!   receives TTL 254);
//! - demultiplex: a packet with a nonzero Your Discriminator goes to the session with that local
//!   discriminator (discard it if there is none); one with zero goes to the session of its
//!   source address and interface (RFC 5881 §3);
//! - decode with [`decode`] (discard on error), feed [`Input::Received`], encode and send every
//!   [`Output::Send`], and call [`Input::Timer`] at [`Session::poll_timeout`].
//!
//! [`manager`] runs the daemon's sessions: one driver per receive address, one session per
//! neighbor with `bfd` configured; [`crate::peer`] ties each to its BGP session.
//!
//! [`driver`] is a small tokio transport doing the above for one local address, one session per
//! peer address. Not yet: IPv6 link-local peers (sessions are keyed by address, without the
//! interface), binding to an interface (`SO_BINDTODEVICE`), and checking that a packet selected
//! by Your Discriminator comes from that session's peer address.
//!
//! The client (BGP, RFC 5882): a session that leaves Up ([`Output::StateChanged`] with
//! `from == Up`) means the path to the peer is gone, and the BGP session should be torn down
//! then (RFC 9384: Cease subcode 10 "BFD Down") rather than on hold-timer expiry. Two cases
//! are not path failures and must not bring BGP down: a session that never came Up, and a peer
//! that went AdminDown (the transition carries diag 3 as for a peer's Down; tell the two apart
//! with [`Session::remote_state`] `== AdminDown` right after the output).

pub mod driver;
pub mod manager;
pub mod packet;
pub mod session;

pub use packet::{
    decode, encode, Auth, AuthKey, AuthType, ControlPacket, Diag, PacketError, Password,
    ReplayWindow, State,
};
pub use session::{
    Input, Intervals, Output, Session, SessionConfig, SessionError, DEFAULT_DESIRED_MIN_TX,
    DEFAULT_DETECT_MULT, DEFAULT_REQUIRED_MIN_RX, SLOW_TX,
};

#[cfg(test)]
mod tests;
