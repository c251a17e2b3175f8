//! Mirroring: the state that lets a traffic group fail over without losing its sessions.
//!
//! For each traffic group, the device it is active on streams the group's mirrored state —
//! persistence records of profiles with `mirror = true`, UDP flows, and the repair state of
//! mirrored TCP connections — to the group's next-active device over one channel (docs/design.md, "The model",
//! §5). A channel starts with a full resync of the current state, then carries incremental
//! updates with strictly increasing update ids; the receiver acknowledges the last id it applied,
//! so the sender can report "in sync" and its lag, and a reconnect can resume instead of
//! resyncing.
//!
//! - `proto`: the mirror wire protocol — versioned, length-framed messages and their bounded
//!   binary codec.
//! - `channel`: the sans-IO channel state machines: [`channel::Sender`] on the active device,
//!   [`channel::Receiver`] on the next-active device.
//! - `trust`: device trust — the group CA and device certificates (rcgen, `lbctl trust`) and
//!   the mutual-TLS configurations (rustls) that admit only devices of the group.
//! - `link`: the I/O drivers — the sender and receiver tasks that own a channel's TLS socket and
//!   drive the state machines of `channel`.
//! - `repair`: `TCP_REPAIR` — snapshot a quiescent proxied TCP socket into a
//!   [`proto::TcpRepair`], rebuild it on the new owner before it takes the floating addresses,
//!   and close the old owner's copy without a FIN or RST.
//!
//! - `tap`: the port the data path mirrors through ([`tap::MirrorTap`]).
//! - `service`: mirroring inside lbd — receivers per traffic group, senders toward each active
//!   traffic group's next-active device, what the data path offers, the takeover hand-over
//!   and `lbctl show mirroring`.
//!
//! Apart from `trust` (which reads and writes certificate files), `repair` (socket options on
//! the sockets it is given) and the I/O layers `link` and `service`, this module must not do
//! I/O, read clocks or spawn tasks (docs/architecture.md, "Conventions"): bytes and the
//! current time are passed in, messages and timer deadlines come out. It must never block the
//! data path: offering an update is O(1) and, when the bounded queue is full, the channel drops
//! to "lagging" and schedules a resync rather than waiting. Sockets and TLS belong to the task
//! that drives a channel; `repair` is the only place that uses `TCP_REPAIR` — everywhere
//! else TCP repair state is carried as data only.

pub mod channel;
pub mod link;
pub mod proto;
pub mod repair;
pub mod service;
pub mod tap;
pub mod trust;
