//! Config sync, the sans-IO part: the group configuration as one canonical document, its
//! digest, the generation every committed change gets, the object-level delta an incremental
//! sync carries, and each device's sync status.
//!
//! What is synced and what is not (docs/design.md, "Config sync"):
//!
//! - **Synced, the group configuration** ([`GroupDocument`]): every section of lbd's
//!   configuration file but `[device]` (virtual addresses, virtual servers, pools, monitors,
//!   persistence profiles) and the device-group file but the path of the group key (devices,
//!   traffic groups, heartbeat and mirroring settings).
//! - **Never synced, the device-local part**: `[device]` (this device's name, self IPs,
//!   interfaces, sockets, paths to its trust directory, plugin directory and the device-group
//!   file) and the group key's path.
//!
//! A document is canonical JSON (objects with sorted keys, no whitespace): two devices holding
//! the same configuration, whatever the order or formatting of their files, have the same
//! [`Digest`] (SHA-256 of the canonical bytes).
//!
//! This module does no I/O and reads no clock: times are passed in.

mod delta;
mod document;
mod generation;
mod proto;
mod status;

pub use delta::{Change, Delta, DeltaError};
pub use document::{DocumentError, GroupDocument, OBJECT_SECTIONS, WHOLE_SECTIONS};
pub use generation::{Digest, Generation};
pub use proto::{plan, receive, Answer, History, Payload, Push, HISTORY, MAX_INCREMENTAL};
pub use status::{DeviceView, PeerMark, Saved, SyncState, SyncStatus};

#[cfg(test)]
mod tests;
