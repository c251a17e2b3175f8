//! spanlb's BGP speaker.
//!
//! bgpd peers with upstream routers and announces locally originated routes: the spanning
//! virtual addresses (VIPs) with one ADD-PATH path per traffic group and NEXT_HOP = that
//! group's floating self IP, and the floating self-IP routes in routed mode. Routes come from
//! its configuration and from a local control socket (lbd); routes a control client injected
//! are withdrawn when it goes away.
//!
//! bgpd must not install routes in the kernel, and must never re-announce what it receives.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod bfd;
pub mod check;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod fsm;
pub mod metrics;
pub mod peer;
pub mod reload;
pub mod rib;
pub mod sockopt;
pub mod wire;
