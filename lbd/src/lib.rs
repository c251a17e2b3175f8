//! spanlb's load balancer daemon.
//!
//! lbd serves virtual servers (VIP:port, TCP or UDP) as a full proxy in front of pools of
//! members: it picks a member (persistence record, else the pool's method), connects from the
//! address source address translation says, and relays both ways. Health monitors drive member
//! state; a pool with no available member makes its virtual servers unavailable. Persistence
//! profiles may be backed by plugins (`plugins`, loaded from `.so` files through `plugin-api`).
//! With a device group configured, lbd runs heartbeats and traffic-group failover (`cluster`)
//! and asks bgpd for the routes of the traffic groups active here; with mirroring on
//! (`mirror`), each traffic group's persistence records, UDP flows and TCP connections are
//! mirrored to its next-active device, which rebuilds them when it takes the group over.
//!
//! lbd must not announce routes itself (bgpd does, driven over its control socket), and its data
//! path must never block on anything but its own sockets.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod app;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod configsync;
pub mod mirror;
pub mod monitor;
pub mod passive;
pub mod plugins;
pub mod proxy;
pub mod select;
pub mod state;
pub mod sys;
pub mod tables;
