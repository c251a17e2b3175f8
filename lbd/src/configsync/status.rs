//! Each device's sync status, from what this device knows: its own generation and whether it
//! holds changes it has not synced (`dirty`), and each peer's, as heartbeats carry them.
//!
//! The statuses (what `lbctl config status` shows, as BIG-IP names them):
//!
//! - `sync-failed: REASON`: the last sync to or from this device failed (it is refused whole:
//!   nothing of it applies) and nothing has been synced or committed here since;
//! - `awaiting-initial-sync`: this device holds no group configuration yet (it just joined);
//! - `disconnected`: no other device of the group is alive;
//! - `in-sync`: every live device holds the configuration this device holds;
//! - `changes-pending`: not so. The devices *holding* changes are those that committed a
//!   change they have not synced (two of them: concurrent changes; the one synced to the group
//!   wins). When none did, the ones with the newest generation hold what the others lack (a
//!   device that was away comes back behind).
//!
//! A device stops being dirty when every live device holds its configuration, or when it
//! applies a sync from another device (its own unsynced change is then overwritten, and it
//! says by which generation).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use super::generation::{Digest, Generation};

/// What a peer last said of its configuration (heartbeats), and whether it is alive.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerMark {
    pub generation: Option<Generation>,
    /// It committed a change it has not synced to the group.
    pub dirty: bool,
    pub alive: bool,
}

/// A device's sync status (module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum SyncStatus {
    InSync,
    ChangesPending {
        /// Devices holding changes the others lack.
        holders: Vec<String>,
        /// Live devices without them.
        behind: Vec<String>,
    },
    AwaitingInitialSync,
    Disconnected,
    SyncFailed {
        reason: String,
    },
}

impl SyncStatus {
    /// The status's name, without detail.
    pub fn name(&self) -> &'static str {
        match self {
            SyncStatus::InSync => "in-sync",
            SyncStatus::ChangesPending { .. } => "changes-pending",
            SyncStatus::AwaitingInitialSync => "awaiting-initial-sync",
            SyncStatus::Disconnected => "disconnected",
            SyncStatus::SyncFailed { .. } => "sync-failed",
        }
    }
}

impl fmt::Display for SyncStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncStatus::SyncFailed { reason } => write!(f, "sync-failed: {reason}"),
            other => f.write_str(other.name()),
        }
    }
}

/// What a device keeps across restarts: the generation it holds and whether it holds a change
/// it has not synced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Saved {
    pub generation: Generation,
    pub dirty: bool,
}

/// One device as this device sees it, for `lbctl config status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceView {
    pub name: String,
    pub alive: bool,
    pub generation: Option<Generation>,
    pub dirty: bool,
    /// Holds the configuration this device holds.
    pub same_as_me: bool,
}

/// This device's side of config sync (module documentation).
#[derive(Debug, Clone)]
pub struct SyncState {
    me: String,
    current: Option<Generation>,
    dirty: bool,
    /// The greatest counter seen from any device: a commit here takes one more.
    max_counter: u64,
    peers: BTreeMap<String, PeerMark>,
    failed: Option<String>,
    /// This device's unsynced change that a sync from another device replaced: (ours,
    /// theirs).
    overwritten: Option<(Generation, Generation)>,
}

impl SyncState {
    /// A device `me` of a group with `peers`, holding `current` (None: it awaits its first
    /// sync).
    pub fn new(
        me: &str,
        peers: impl IntoIterator<Item = String>,
        current: Option<Generation>,
    ) -> SyncState {
        SyncState {
            me: me.to_string(),
            max_counter: current.as_ref().map_or(0, |g| g.counter),
            current,
            dirty: false,
            peers: peers
                .into_iter()
                .filter(|p| p != me)
                .map(|p| (p, PeerMark::default()))
                .collect(),
            failed: None,
            overwritten: None,
        }
    }

    /// A device `me` of a group with `peers` that held `saved` when it last ran, and now holds
    /// a configuration with `digest` (read from its files at `now_ms`): the saved generation
    /// when the configuration is the same, else a new one of its own, counted on from the
    /// saved one (its files changed while it was down: a change the group does not have).
    pub fn resume(
        me: &str,
        peers: impl IntoIterator<Item = String>,
        saved: Option<Saved>,
        digest: Digest,
        now_ms: u64,
    ) -> SyncState {
        let mut st = SyncState::new(me, peers, None);
        match saved {
            Some(s) if s.generation.digest == digest => {
                st.max_counter = s.generation.counter;
                st.current = Some(s.generation);
                st.dirty = s.dirty;
            }
            Some(s) => {
                st.max_counter = s.generation.counter;
                st.commit(digest, now_ms);
            }
            None => {
                st.commit(digest, now_ms);
            }
        }
        st
    }

    /// What to save so that a restart resumes where this device is.
    pub fn saved(&self) -> Option<Saved> {
        self.current.clone().map(|generation| Saved {
            generation,
            dirty: self.dirty,
        })
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    pub fn current(&self) -> Option<&Generation> {
        self.current.as_ref()
    }

    pub fn dirty(&self) -> bool {
        self.dirty
    }

    pub fn overwritten(&self) -> Option<&(Generation, Generation)> {
        self.overwritten.as_ref()
    }

    /// A configuration with `digest` was committed here (a reload that validated) at `now_ms`:
    /// a new generation when it changed anything, None otherwise.
    pub fn commit(&mut self, digest: Digest, now_ms: u64) -> Option<Generation> {
        if self.current.as_ref().is_some_and(|g| g.digest == digest) {
            return None;
        }
        self.max_counter += 1;
        let g = Generation {
            origin: self.me.clone(),
            counter: self.max_counter,
            time_ms: now_ms,
            digest,
        };
        self.current = Some(g.clone());
        self.dirty = true;
        self.failed = None;
        self.overwritten = None;
        Some(g)
    }

    /// What `peer` said last (a heartbeat), or that it is no longer alive. Peers of another
    /// group membership are ignored.
    pub fn peer(&mut self, peer: &str, mark: PeerMark) {
        if let Some(g) = &mark.generation {
            self.max_counter = self.max_counter.max(g.counter);
        }
        if let Some(p) = self.peers.get_mut(peer) {
            *p = mark;
        }
        self.settle();
    }

    /// The group's membership changed: the peers are now `peers` (what is known of those that
    /// stay is kept).
    pub fn set_peers(&mut self, peers: impl IntoIterator<Item = String>) {
        let mut next = BTreeMap::new();
        for p in peers.into_iter().filter(|p| *p != self.me) {
            let mark = self.peers.remove(&p).unwrap_or_default();
            next.insert(p, mark);
        }
        self.peers = next;
        self.settle();
    }

    /// A sync from another device was applied here: this device now holds `g`. Returns this
    /// device's own unsynced change it replaced, if any (to be logged).
    pub fn applied(&mut self, g: Generation) -> Option<Generation> {
        self.max_counter = self.max_counter.max(g.counter);
        let lost = match &self.current {
            Some(ours) if self.dirty && ours.digest != g.digest => Some(ours.clone()),
            _ => None,
        };
        if let Some(ours) = &lost {
            self.overwritten = Some((ours.clone(), g.clone()));
        }
        self.current = Some(g);
        self.dirty = false;
        self.failed = None;
        lost
    }

    /// A sync to or from this device failed (`reason`, one line).
    pub fn failed(&mut self, reason: String) {
        self.failed = Some(reason);
    }

    /// A sync from this device reached every device it went to: an earlier failure is over.
    pub fn sync_succeeded(&mut self) {
        self.failed = None;
    }

    /// Every live device holds this device's configuration: nothing of it is pending.
    fn settle(&mut self) {
        if self.dirty && self.alive_peers().next().is_some() && self.everyone_has_mine() {
            self.dirty = false;
        }
    }

    fn alive_peers(&self) -> impl Iterator<Item = (&String, &PeerMark)> {
        self.peers.iter().filter(|(_, m)| m.alive)
    }

    fn digest_of(g: &Option<Generation>) -> Option<Digest> {
        g.as_ref().map(|g| g.digest)
    }

    fn everyone_has_mine(&self) -> bool {
        let mine = Self::digest_of(&self.current);
        mine.is_some()
            && self
                .alive_peers()
                .all(|(_, m)| Self::digest_of(&m.generation) == mine)
    }

    /// This device's status (module documentation).
    pub fn status(&self) -> SyncStatus {
        if let Some(reason) = &self.failed {
            return SyncStatus::SyncFailed {
                reason: reason.clone(),
            };
        }
        if self.current.is_none() {
            return SyncStatus::AwaitingInitialSync;
        }
        if !self.peers.is_empty() && self.alive_peers().next().is_none() {
            return SyncStatus::Disconnected;
        }
        if self.everyone_has_mine() {
            return SyncStatus::InSync;
        }
        let (holders, behind) = self.holders();
        SyncStatus::ChangesPending { holders, behind }
    }

    /// The live devices (this one included) holding changes the others lack, and the others.
    fn holders(&self) -> (Vec<String>, Vec<String>) {
        let me = PeerMark {
            generation: self.current.clone(),
            dirty: self.dirty,
            alive: true,
        };
        let all: Vec<(&String, &PeerMark)> = std::iter::once((&self.me, &me))
            .chain(self.alive_peers())
            .collect();
        let mut holders: BTreeSet<String> = all
            .iter()
            .filter(|(_, m)| m.dirty && m.generation.is_some())
            .map(|(n, _)| n.to_string())
            .collect();
        if holders.is_empty() {
            let newest = all.iter().filter_map(|(_, m)| m.generation.as_ref()).fold(
                None::<&Generation>,
                |best, g| match best {
                    Some(b) if !g.newer(b) => Some(b),
                    _ => Some(g),
                },
            );
            if let Some(newest) = newest {
                holders = all
                    .iter()
                    .filter(|(_, m)| Self::digest_of(&m.generation) == Some(newest.digest))
                    .map(|(n, _)| n.to_string())
                    .collect();
            }
        }
        let held: BTreeSet<Option<Digest>> = all
            .iter()
            .filter(|(n, _)| holders.contains(n.as_str()))
            .map(|(_, m)| Self::digest_of(&m.generation))
            .collect();
        let behind = all
            .iter()
            .filter(|(n, m)| {
                !holders.contains(n.as_str()) && !held.contains(&Self::digest_of(&m.generation))
            })
            .map(|(n, _)| n.to_string())
            .collect();
        (holders.into_iter().collect(), behind)
    }

    /// Every device as this one sees it.
    pub fn view(&self) -> Vec<DeviceView> {
        let mine = Self::digest_of(&self.current);
        let me = DeviceView {
            name: self.me.clone(),
            alive: true,
            generation: self.current.clone(),
            dirty: self.dirty,
            same_as_me: true,
        };
        std::iter::once(me)
            .chain(self.peers.iter().map(|(n, m)| DeviceView {
                name: n.clone(),
                alive: m.alive,
                generation: m.generation.clone(),
                dirty: m.dirty,
                same_as_me: mine.is_some() && Self::digest_of(&m.generation) == mine,
            }))
            .collect()
    }

    /// The same, each with the digest it holds (a delta can be made from it).
    pub fn targets(&self) -> Vec<(String, Option<Digest>)> {
        let mine = Self::digest_of(&self.current);
        self.alive_peers()
            .map(|(n, m)| (n.clone(), Self::digest_of(&m.generation)))
            .filter(|(_, d)| *d != mine)
            .collect()
    }

    /// The live peers that do not hold this device's configuration: where a sync of it to
    /// the group goes.
    pub fn out_of_date(&self) -> Vec<String> {
        let mine = Self::digest_of(&self.current);
        self.alive_peers()
            .filter(|(_, m)| Self::digest_of(&m.generation) != mine)
            .map(|(n, _)| n.clone())
            .collect()
    }
}
