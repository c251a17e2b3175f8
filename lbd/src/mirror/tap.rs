//! The port the data path mirrors through: what a proxied connection, a UDP flow or a
//! persistence lookup tells mirroring. [`crate::mirror::service::Mirroring`] implements it; the
//! data path holds it as an optional trait object and knows nothing else of mirroring.
//!
//! Every call must return at once (O(1) offers into bounded queues): they run on the data
//! path.

use std::time::Duration;

use super::proto::{RecordKey, RecordKind};
use crate::tables::PersistRecord;

pub trait MirrorTap: Send + Sync {
    /// A UDP flow or TCP connection of traffic group `tg` to mirror (created, or its state
    /// changed).
    fn flow_up(&self, tg: &str, kind: RecordKind);
    /// The flow or connection under `key` ended.
    fn flow_down(&self, tg: &str, key: RecordKey);
    /// Bumped when this device gives `tg` up: a mirrored connection of `tg` then ends
    /// silently (it lives on the new owner).
    fn release_watch(&self, tg: &str) -> tokio::sync::watch::Receiver<u64>;
    /// A persistence record created here (or one that changed hands,
    /// [`PersistRecord::take_for`]).
    fn offer_persist(&self, r: &PersistRecord);
    /// A lookup here extended record `r`'s expiry from `previous` (its profile's `timeout`):
    /// offered when it moved by at least [`crate::tables::refresh_step`].
    fn persist_refreshed(&self, r: &PersistRecord, previous: u64, timeout: Duration);
    /// A persistence record deleted here (`lbctl persistence delete`).
    fn delete_persist(&self, r: &PersistRecord);
}
