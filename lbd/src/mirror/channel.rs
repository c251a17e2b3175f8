//! The mirroring channel state machines, sans-IO (docs/architecture.md, "Mirroring"; docs/architecture.md, "Conventions").
//!
//! One channel per traffic group: a [`Sender`] on the device the group is active on, a
//! [`Receiver`] on its next-active device. The task that owns the socket feeds them decoded
//! messages and the current time (Unix milliseconds, the clock records carry) and sends what
//! `poll_send` returns; timers are `on_timer(now)` calls, due at `next_deadline()`.
//!
//! The exchange:
//!
//! ```text
//! sender                                   receiver
//!   Hello{epoch, resume_from: None}   -->
//!                                     <--  Hello{epoch, resume_from: Some(last applied) | None}
//!   (resume: retransmit from there; else the caller's snapshot as a resync)
//!   ResyncBegin{n}, Record×n, ResyncEnd{last_id} -->
//!   Record / Delete (incremental)     -->
//!                                     <--  Ack{last_applied}  (every N updates or on a timer)
//!   Heartbeat                        <-->  Heartbeat
//! ```
//!
//! Update ids are the channel's sequence: the sender stamps every record it is offered (and
//! every snapshot record) with the next id of its epoch, so they increase strictly and without
//! gaps along the channel. The receiver applies an update only if its id is newer than the last
//! one applied, which makes retransmissions after a resume harmless. A resume is possible when
//! the receiver holds a complete state of the sender's epoch and the sender still retains every
//! update after the receiver's last applied id; otherwise the channel resyncs.
//!
//! Back-pressure: the sender retains at most `capacity` unacknowledged updates.
//! Offering never blocks: on overflow the queue is dropped, the channel reports
//! [`State::Lagging`], and a full resync is asked of the caller ([`Sender::wants_snapshot`]).
//!
//! This module does no I/O and reads no clock.

use std::collections::VecDeque;

use super::proto::{Message, Record, RecordKey};

/// Channel errors: each one ends the connection (the driving task closes the socket; the
/// sender reconnects).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("peer silent for {silent_ms} ms")]
    PeerSilent { silent_ms: u64 },
    #[error("not connected")]
    NotConnected,
    #[error("hello for traffic group {got}, expected {expected}")]
    UnexpectedTrafficGroup { expected: String, got: String },
    #[error("record of traffic group {got} on the channel of {expected}")]
    RecordOfOtherGroup { expected: String, got: String },
    #[error("{0} before hello")]
    BeforeHello(&'static str),
    #[error("unexpected {0}")]
    Unexpected(&'static str),
    #[error("incremental update before the first resync")]
    NotSynced,
    #[error("ack of update {acked} beyond the last sent update {sent}")]
    AckBeyondSent { acked: u64, sent: u64 },
    #[error("resync announced {announced} records and carried {carried}")]
    ResyncCount { announced: u64, carried: u64 },
}

/// Heartbeat timing of a channel, both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// A heartbeat goes out this often.
    pub heartbeat_ms: u64,
    /// A peer heard nothing from for this long is dead.
    pub dead_ms: u64,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            heartbeat_ms: 1000,
            dead_ms: 3000,
        }
    }
}

/// A sender's state, as `lbctl show mirroring` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No connection, or waiting for the peer's hello.
    Connecting,
    /// A full resync is wanted, being sent or not yet acknowledged.
    Resyncing,
    /// Incremental updates flow; the peer holds the state up to the last acked id.
    InSync,
    /// The queue overflowed; a resync is due.
    Lagging,
}

/// A sender's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderStatus {
    pub state: State,
    /// The peer device, once it said hello.
    pub peer: Option<String>,
    pub last_sent: u64,
    pub last_acked: u64,
    /// Time since the oldest update the peer has not acknowledged was offered; 0 when the
    /// peer has everything.
    pub lag_ms: u64,
    /// Updates offered and not yet sent.
    pub queued: usize,
    /// Updates offered and not yet acknowledged (sent or not).
    pub unacked: usize,
}

struct Entry {
    id: u64,
    offered_ms: u64,
    msg: Message,
}

struct Resync {
    total: u64,
    begin_sent: bool,
    records: VecDeque<Record>,
    end_sent: bool,
    last_id: u64,
}

struct SenderConn {
    /// The peer's hello has arrived.
    peer: Option<String>,
    control: VecDeque<Message>,
    /// The caller is asked for a snapshot.
    wants_snapshot: bool,
    /// The last incremental id handed out on this connection.
    cursor: u64,
    last_heard_ms: u64,
    last_heartbeat_ms: u64,
}

/// The active device's end of a channel.
pub struct Sender {
    device: String,
    traffic_group: String,
    epoch: u64,
    capacity: usize,
    timers: Timers,
    /// The last id stamped.
    next_id: u64,
    /// Every update in `(floor, next_id]` is here, in id order (unless `overflowed`).
    unacked: VecDeque<Entry>,
    /// The lowest last-applied id of the peer from which a resume is possible.
    floor: u64,
    last_sent: u64,
    last_acked: u64,
    overflowed: bool,
    /// Offer time of the oldest update not in `unacked` that the peer does not hold yet
    /// (dropped on overflow, or covered by a resync in flight).
    behind_since: Option<u64>,
    resync: Option<Resync>,
    conn: Option<SenderConn>,
}

impl Sender {
    /// A sender for `traffic_group` on `device`. `epoch` names this sender's id space (e.g. the
    /// time lbd started): a receiver holding the state of another epoch is resynced.
    pub fn new(
        device: &str,
        traffic_group: &str,
        epoch: u64,
        capacity: usize,
        timers: Timers,
    ) -> Self {
        Sender {
            device: device.to_string(),
            traffic_group: traffic_group.to_string(),
            epoch,
            capacity: capacity.max(1),
            timers,
            next_id: 0,
            unacked: VecDeque::new(),
            floor: 0,
            last_sent: 0,
            last_acked: 0,
            overflowed: false,
            behind_since: None,
            resync: None,
            conn: None,
        }
    }

    pub fn traffic_group(&self) -> &str {
        &self.traffic_group
    }

    /// Queues a record from the data path, stamping it with the next update id (returned).
    /// Never blocks: a full queue turns the channel to [`State::Lagging`] and schedules a
    /// resync; the update is then carried by that resync.
    pub fn offer(&mut self, now: u64, mut record: Record) -> Result<u64, ChannelError> {
        if record.traffic_group != self.traffic_group {
            return Err(ChannelError::RecordOfOtherGroup {
                expected: self.traffic_group.clone(),
                got: record.traffic_group,
            });
        }
        let id = self.stamp();
        record.update_id = id;
        self.enqueue(now, id, Message::Record(record));
        Ok(id)
    }

    /// Queues the deletion of the record under `key`; returns its update id.
    pub fn offer_delete(&mut self, now: u64, key: RecordKey) -> u64 {
        let id = self.stamp();
        self.enqueue(now, id, Message::Delete { id, key });
        id
    }

    fn stamp(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn enqueue(&mut self, now: u64, id: u64, msg: Message) {
        if self.overflowed {
            return;
        }
        if self.unacked.len() >= self.capacity {
            let oldest = self.unacked.front().map_or(now, |e| e.offered_ms);
            self.behind_since = Some(self.behind_since.map_or(oldest, |b| b.min(oldest)));
            self.unacked.clear();
            self.overflowed = true;
            if let Some(c) = self.conn.as_mut().filter(|c| c.peer.is_some()) {
                c.wants_snapshot = true;
            }
            return;
        }
        self.unacked.push_back(Entry {
            id,
            offered_ms: now,
            msg,
        });
    }

    /// The connection to the peer is up: say hello.
    pub fn connected(&mut self, now: u64) {
        let mut control = VecDeque::new();
        control.push_back(Message::Hello {
            device: self.device.clone(),
            traffic_group: self.traffic_group.clone(),
            epoch: self.epoch,
            resume_from: None,
        });
        self.conn = Some(SenderConn {
            peer: None,
            control,
            wants_snapshot: false,
            cursor: 0,
            last_heard_ms: now,
            last_heartbeat_ms: now,
        });
    }

    /// The connection is gone. Unacknowledged updates are kept for a resume; a resync in
    /// flight is abandoned (the next connection decides again).
    pub fn disconnected(&mut self) {
        self.conn = None;
        self.resync = None;
    }

    /// The caller should call [`Sender::resync`] with a snapshot of the group's state.
    pub fn wants_snapshot(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.wants_snapshot)
    }

    /// Starts a full resync from `snapshot`, the group's current state, taken after every
    /// update offered so far (they are covered by it and dropped from the queue).
    pub fn resync(&mut self, now: u64, snapshot: Vec<Record>) -> Result<(), ChannelError> {
        let conn = self.conn.as_mut().ok_or(ChannelError::NotConnected)?;
        if conn.peer.is_none() {
            return Err(ChannelError::BeforeHello("resync"));
        }
        if let Some(r) = snapshot
            .iter()
            .find(|r| r.traffic_group != self.traffic_group)
        {
            return Err(ChannelError::RecordOfOtherGroup {
                expected: self.traffic_group.clone(),
                got: r.traffic_group.clone(),
            });
        }
        conn.wants_snapshot = false;
        let oldest = self.unacked.front().map_or(now, |e| e.offered_ms.min(now));
        self.behind_since = Some(self.behind_since.map_or(oldest, |b| b.min(oldest)));
        self.unacked.clear();
        self.overflowed = false;
        let mut records = VecDeque::with_capacity(snapshot.len());
        for mut r in snapshot {
            self.next_id += 1;
            r.update_id = self.next_id;
            records.push_back(r);
        }
        let last_id = self.next_id;
        conn.cursor = last_id;
        self.floor = last_id;
        self.resync = Some(Resync {
            total: records.len() as u64,
            begin_sent: false,
            records,
            end_sent: false,
            last_id,
        });
        Ok(())
    }

    /// The next message to send, if any.
    pub fn poll_send(&mut self) -> Option<Message> {
        let conn = self.conn.as_mut()?;
        if let Some(m) = conn.control.pop_front() {
            return Some(m);
        }
        if conn.peer.is_none() || conn.wants_snapshot || self.overflowed {
            return None;
        }
        if let Some(rs) = self.resync.as_mut().filter(|r| !r.end_sent) {
            if !rs.begin_sent {
                rs.begin_sent = true;
                return Some(Message::ResyncBegin { records: rs.total });
            }
            if let Some(r) = rs.records.pop_front() {
                self.last_sent = self.last_sent.max(r.update_id);
                return Some(Message::Record(r));
            }
            rs.end_sent = true;
            self.last_sent = self.last_sent.max(rs.last_id);
            return Some(Message::ResyncEnd {
                last_id: rs.last_id,
            });
        }
        let i = self.unacked.partition_point(|e| e.id <= conn.cursor);
        let e = self.unacked.get(i)?;
        conn.cursor = e.id;
        self.last_sent = self.last_sent.max(e.id);
        Some(e.msg.clone())
    }

    /// A message from the peer.
    pub fn on_message(&mut self, now: u64, msg: Message) -> Result<(), ChannelError> {
        let conn = self.conn.as_mut().ok_or(ChannelError::NotConnected)?;
        conn.last_heard_ms = now;
        match msg {
            Message::Hello {
                device,
                traffic_group,
                epoch,
                resume_from,
            } => {
                if conn.peer.is_some() {
                    return Err(ChannelError::Unexpected("second hello"));
                }
                if traffic_group != self.traffic_group {
                    return Err(ChannelError::UnexpectedTrafficGroup {
                        expected: self.traffic_group.clone(),
                        got: traffic_group,
                    });
                }
                conn.peer = Some(device);
                match resume_from {
                    Some(r)
                        if epoch == self.epoch
                            && !self.overflowed
                            && (self.floor..=self.next_id).contains(&r) =>
                    {
                        // Resume: the peer holds everything up to r; retransmit the rest.
                        conn.cursor = r;
                        self.ack(r);
                    }
                    _ => conn.wants_snapshot = true,
                }
                Ok(())
            }
            Message::Ack { last_applied } => {
                if conn.peer.is_none() {
                    return Err(ChannelError::BeforeHello("ack"));
                }
                if last_applied > self.last_sent {
                    return Err(ChannelError::AckBeyondSent {
                        acked: last_applied,
                        sent: self.last_sent,
                    });
                }
                self.ack(last_applied);
                Ok(())
            }
            Message::Heartbeat { .. } => Ok(()),
            other => Err(ChannelError::Unexpected(other.name())),
        }
    }

    /// The peer holds every update up to `id`. (A resume acks too: the peer holds a complete
    /// state up to `id`, so a resync abandoned by the disconnect had finished there and no
    /// longer counts as lag.)
    fn ack(&mut self, id: u64) {
        self.last_acked = self.last_acked.max(id);
        self.floor = self.floor.max(id);
        while self.unacked.front().is_some_and(|e| e.id <= id) {
            self.unacked.pop_front();
        }
        let resync_done = match &self.resync {
            Some(rs) => rs.end_sent && id >= rs.last_id,
            None => true,
        };
        if resync_done {
            self.resync = None;
            self.behind_since = None;
        }
    }

    /// Timers: heartbeats, and the peer's dead time (which disconnects).
    pub fn on_timer(&mut self, now: u64) -> Result<(), ChannelError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let silent_ms = now.saturating_sub(conn.last_heard_ms);
        if silent_ms >= self.timers.dead_ms {
            self.disconnected();
            return Err(ChannelError::PeerSilent { silent_ms });
        }
        if now.saturating_sub(conn.last_heartbeat_ms) >= self.timers.heartbeat_ms {
            conn.control.push_back(Message::Heartbeat { sent_ms: now });
            conn.last_heartbeat_ms = now;
        }
        Ok(())
    }

    /// When `on_timer` should next be called.
    pub fn next_deadline(&self) -> Option<u64> {
        let c = self.conn.as_ref()?;
        Some(
            (c.last_heard_ms + self.timers.dead_ms)
                .min(c.last_heartbeat_ms + self.timers.heartbeat_ms),
        )
    }

    pub fn state(&self) -> State {
        match &self.conn {
            Some(c) if c.peer.is_some() => {
                if self.overflowed {
                    State::Lagging
                } else if c.wants_snapshot || self.resync.is_some() {
                    State::Resyncing
                } else {
                    State::InSync
                }
            }
            _ => State::Connecting,
        }
    }

    pub fn status(&self, now: u64) -> SenderStatus {
        let oldest = match (self.unacked.front(), self.behind_since) {
            (Some(e), Some(b)) => Some(e.offered_ms.min(b)),
            (Some(e), None) => Some(e.offered_ms),
            (None, b) => b,
        };
        let cursor = self.conn.as_ref().map_or(self.last_acked, |c| c.cursor);
        SenderStatus {
            state: self.state(),
            peer: self.conn.as_ref().and_then(|c| c.peer.clone()),
            last_sent: self.last_sent,
            last_acked: self.last_acked,
            lag_ms: oldest.map_or(0, |o| now.saturating_sub(o)),
            queued: self.unacked.len() - self.unacked.partition_point(|e| e.id <= cursor),
            unacked: self.unacked.len(),
        }
    }
}

/// Where a receiver keeps what it applies (the standby's tables).
///
/// A resync replaces the state of a traffic group without a gap: what the store holds of it
/// stays usable (a lookup still finds a client's record, a takeover still finds its flows)
/// while the resync's records arrive, and only what the resync did not carry goes at its end.
pub trait Store {
    /// Inserts or replaces the record under its key.
    fn upsert(&mut self, r: Record);
    fn delete(&mut self, key: &RecordKey);
    /// A resync of traffic group `tg` begins: note what the store holds of it now.
    fn resync_begin(&mut self, tg: &str);
    /// The resync of `tg` is complete: drop every record of `tg` noted at its beginning that
    /// it did not carry (upsert) since.
    fn resync_end(&mut self, tg: &str);
}

/// When a receiver acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckPolicy {
    /// After this many applied updates…
    pub every: u64,
    /// …or this long after the first unacknowledged one, whichever comes first.
    pub after_ms: u64,
}

impl Default for AckPolicy {
    fn default() -> Self {
        AckPolicy {
            every: 64,
            after_ms: 50,
        }
    }
}

/// A receiver's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiverStatus {
    pub peer: Option<String>,
    /// A complete state is held (a resync finished in the current epoch).
    pub synced: bool,
    /// The device whose complete state it is (also after its connection ended).
    pub synced_from: Option<String>,
    pub resyncing: bool,
    pub last_applied: u64,
    /// Updates ignored because their id was not newer.
    pub duplicates: u64,
}

struct ReceiverConn {
    /// Peer device and epoch, from its hello.
    peer: Option<(String, u64)>,
    /// A resync in progress: records announced, carried so far.
    resync: Option<(u64, u64)>,
    out: VecDeque<Message>,
    pending_acks: u64,
    first_unacked_ms: u64,
    last_heard_ms: u64,
    last_heartbeat_ms: u64,
}

/// The next-active device's end of a channel.
pub struct Receiver {
    device: String,
    traffic_group: String,
    timers: Timers,
    acks: AckPolicy,
    /// The epoch of the complete state held, if any.
    synced: Option<u64>,
    /// The device that sent it (kept after its connection ends: when that device dies, this
    /// is the freshest copy there is).
    synced_from: Option<String>,
    last_applied: u64,
    duplicates: u64,
    conn: Option<ReceiverConn>,
}

impl Receiver {
    /// A receiver on `device` for `traffic_group` (the group it is next-active for).
    pub fn new(device: &str, traffic_group: &str, timers: Timers, acks: AckPolicy) -> Self {
        Receiver {
            device: device.to_string(),
            traffic_group: traffic_group.to_string(),
            timers,
            acks,
            synced: None,
            synced_from: None,
            last_applied: 0,
            duplicates: 0,
            conn: None,
        }
    }

    /// A sender connected (after the trust layer accepted it).
    pub fn connected(&mut self, now: u64) {
        self.conn = Some(ReceiverConn {
            peer: None,
            resync: None,
            out: VecDeque::new(),
            pending_acks: 0,
            first_unacked_ms: now,
            last_heard_ms: now,
            last_heartbeat_ms: now,
        });
    }

    /// The connection is gone. A resync in progress leaves the state incomplete.
    pub fn disconnected(&mut self) {
        if self.conn.as_ref().is_some_and(|c| c.resync.is_some()) {
            self.synced = None;
            self.synced_from = None;
        }
        self.conn = None;
    }

    /// A message from the sender, applied to `store`.
    pub fn on_message(
        &mut self,
        now: u64,
        msg: Message,
        store: &mut impl Store,
    ) -> Result<(), ChannelError> {
        let conn = self.conn.as_mut().ok_or(ChannelError::NotConnected)?;
        conn.last_heard_ms = now;
        if let Message::Hello {
            device,
            traffic_group,
            epoch,
            ..
        } = msg
        {
            if conn.peer.is_some() {
                return Err(ChannelError::Unexpected("second hello"));
            }
            if traffic_group != self.traffic_group {
                return Err(ChannelError::UnexpectedTrafficGroup {
                    expected: self.traffic_group.clone(),
                    got: traffic_group,
                });
            }
            if self.synced != Some(epoch) {
                // State of another epoch: kept (it still serves a failover) until a resync
                // replaces it, but it cannot be resumed from.
                self.synced = None;
                self.synced_from = None;
            }
            conn.peer = Some((device, epoch));
            conn.out.push_back(Message::Hello {
                device: self.device.clone(),
                traffic_group: self.traffic_group.clone(),
                epoch,
                resume_from: self.synced.map(|_| self.last_applied),
            });
            return Ok(());
        }
        let Some((_, epoch)) = conn.peer else {
            return Err(ChannelError::BeforeHello(msg.name()));
        };
        match msg {
            Message::ResyncBegin { records } => {
                if conn.resync.is_some() {
                    return Err(ChannelError::Unexpected("resync-begin inside a resync"));
                }
                store.resync_begin(&self.traffic_group);
                self.synced = None;
                self.synced_from = None;
                self.last_applied = 0;
                conn.resync = Some((records, 0));
            }
            Message::Record(r) => {
                if r.traffic_group != self.traffic_group {
                    return Err(ChannelError::RecordOfOtherGroup {
                        expected: self.traffic_group.clone(),
                        got: r.traffic_group,
                    });
                }
                match conn.resync.as_mut() {
                    Some((announced, carried)) => {
                        *carried += 1;
                        if *carried > *announced {
                            return Err(ChannelError::ResyncCount {
                                announced: *announced,
                                carried: *carried,
                            });
                        }
                    }
                    None if self.synced.is_none() => return Err(ChannelError::NotSynced),
                    None => {}
                }
                let id = r.update_id;
                if id <= self.last_applied {
                    self.duplicates += 1;
                } else {
                    store.upsert(r);
                    self.applied(now, id);
                }
            }
            Message::Delete { id, key } => {
                if conn.resync.is_none() && self.synced.is_none() {
                    return Err(ChannelError::NotSynced);
                }
                if id <= self.last_applied {
                    self.duplicates += 1;
                } else {
                    store.delete(&key);
                    self.applied(now, id);
                }
            }
            Message::ResyncEnd { last_id } => {
                let Some((announced, carried)) = conn.resync.take() else {
                    return Err(ChannelError::Unexpected("resync-end outside a resync"));
                };
                if announced != carried {
                    return Err(ChannelError::ResyncCount { announced, carried });
                }
                store.resync_end(&self.traffic_group);
                self.last_applied = self.last_applied.max(last_id);
                self.synced = Some(epoch);
                self.synced_from = conn.peer.as_ref().map(|p| p.0.clone());
                conn.out.push_back(Message::Ack {
                    last_applied: self.last_applied,
                });
                conn.pending_acks = 0;
            }
            Message::Heartbeat { .. } => {}
            other => return Err(ChannelError::Unexpected(other.name())),
        }
        Ok(())
    }

    fn applied(&mut self, now: u64, id: u64) {
        self.last_applied = id;
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if conn.pending_acks == 0 {
            conn.first_unacked_ms = now;
        }
        conn.pending_acks += 1;
        if conn.pending_acks >= self.acks.every {
            conn.out.push_back(Message::Ack { last_applied: id });
            conn.pending_acks = 0;
        }
    }

    /// Timers: the delayed ack, heartbeats, and the sender's dead time (which disconnects).
    pub fn on_timer(&mut self, now: u64) -> Result<(), ChannelError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let silent_ms = now.saturating_sub(conn.last_heard_ms);
        if silent_ms >= self.timers.dead_ms {
            self.disconnected();
            return Err(ChannelError::PeerSilent { silent_ms });
        }
        if conn.pending_acks > 0 && now.saturating_sub(conn.first_unacked_ms) >= self.acks.after_ms
        {
            conn.out.push_back(Message::Ack {
                last_applied: self.last_applied,
            });
            conn.pending_acks = 0;
        }
        if conn.peer.is_some()
            && now.saturating_sub(conn.last_heartbeat_ms) >= self.timers.heartbeat_ms
        {
            conn.out.push_back(Message::Heartbeat { sent_ms: now });
            conn.last_heartbeat_ms = now;
        }
        Ok(())
    }

    /// When `on_timer` should next be called.
    pub fn next_deadline(&self) -> Option<u64> {
        let c = self.conn.as_ref()?;
        let mut d = (c.last_heard_ms + self.timers.dead_ms)
            .min(c.last_heartbeat_ms + self.timers.heartbeat_ms);
        if c.pending_acks > 0 {
            d = d.min(c.first_unacked_ms + self.acks.after_ms);
        }
        Some(d)
    }

    /// The next message to send, if any.
    pub fn poll_send(&mut self) -> Option<Message> {
        self.conn.as_mut()?.out.pop_front()
    }

    pub fn status(&self) -> ReceiverStatus {
        ReceiverStatus {
            peer: self
                .conn
                .as_ref()
                .and_then(|c| c.peer.as_ref().map(|p| p.0.clone())),
            synced: self.synced.is_some(),
            synced_from: self.synced_from.clone(),
            resyncing: self.conn.as_ref().is_some_and(|c| c.resync.is_some()),
            last_applied: self.last_applied,
            duplicates: self.duplicates,
        }
    }
}

#[cfg(test)]
mod tests;
