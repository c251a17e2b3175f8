//! The mirror wire protocol (docs/architecture.md, "Mirroring"): messages and their binary codec.
//!
//! Every message travels in one frame:
//!
//! ```text
//! 0      4        5     6            10
//! +------+--------+-----+------------+-----------------+
//! | SLMR | version| kind| body length| body            |
//! +------+--------+-----+------------+-----------------+
//!  magic    u8      u8   u32 (BE)     ≤ MAX_FRAME bytes
//! ```
//!
//! Integers are big-endian. Strings and byte strings are a u16 length followed by at most
//! [`MAX_STR`] bytes (strings must be UTF-8). An `Option` is a tag byte (0 none, 1 some) and the
//! value; a bool is one byte, 0 or 1. A socket address is a family byte (4 or 6), the address
//! (4 or 16 bytes) and the port (u16); IPv6 flow info and scope id are not carried. A frame's
//! body must be consumed exactly.
//!
//! The decoder is bounded: it checks magic, version, kind and the declared length (against
//! [`MAX_FRAME`]) from the header alone, before waiting for or looking at the body, and it
//! allocates only for strings and byte strings whose bytes are already in the buffer.
//!
//! This module does no I/O and keeps no state between calls.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::tables::PersistRecord;

/// The frame magic: "SLMR" (spanlb mirror).
pub const MAGIC: [u8; 4] = *b"SLMR";
/// The protocol version this codec speaks.
pub const VERSION: u8 = 1;
/// Magic, version, kind, body length.
pub const HEADER_LEN: usize = 10;
/// The largest body a frame may declare (1 MiB).
pub const MAX_FRAME: u32 = 1 << 20;
/// The longest string or byte string a field may carry.
pub const MAX_STR: usize = 4096;

const KIND_HELLO: u8 = 1;
const KIND_RESYNC_BEGIN: u8 = 2;
const KIND_RECORD: u8 = 3;
const KIND_RESYNC_END: u8 = 4;
const KIND_DELETE: u8 = 5;
const KIND_ACK: u8 = 6;
const KIND_HEARTBEAT: u8 = 7;

const REC_PERSISTENCE: u8 = 1;
const REC_UDP_FLOW: u8 = 2;
const REC_TCP_CONN: u8 = 3;

const TCP_FLAG_SACK: u8 = 0x01;
const TCP_FLAG_TIMESTAMPS: u8 = 0x02;

/// Codec errors. Any of them ends the channel: the stream cannot be resynchronized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("bad frame magic {0:02x?}")]
    BadMagic(Vec<u8>),
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("frame body of {0} bytes exceeds the limit of {MAX_FRAME}")]
    FrameTooLarge(u64),
    #[error("frame body ends inside a field")]
    Truncated,
    #[error("{0} trailing bytes after the message in a frame body")]
    TrailingBytes(usize),
    #[error("string or byte string of {0} bytes exceeds the limit of {MAX_STR}")]
    StringTooLong(usize),
    #[error("string is not valid utf-8")]
    InvalidUtf8,
    #[error("unknown address family {0}")]
    BadAddressFamily(u8),
    #[error("invalid {field} byte {value}")]
    BadByte { field: &'static str, value: u8 },
    #[error("unknown record kind {0}")]
    UnknownRecordKind(u8),
}

/// TCP repair state of one socket: what `TCP_REPAIR` needs to rebuild it (docs/architecture.md, "Mirroring").
/// Data only here; `mirror::repair` takes and applies it. The window fields are those of the
/// kernel's `struct tcp_repair_window` (linux/tcp.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpRepair {
    /// The send queue's sequence number (`write_seq`; equal to `snd_una` when quiescent).
    pub snd_seq: u32,
    /// The receive queue's sequence number (`rcv_nxt`).
    pub rcv_seq: u32,
    /// The peer's advertised window, in bytes (`tcp_repair_window.snd_wnd`).
    pub snd_wnd: u32,
    /// Our advertised window, in bytes (`tcp_repair_window.rcv_wnd`).
    pub rcv_wnd: u32,
    /// The MSS clamp (`TCP_MAXSEG` read in repair mode).
    pub mss: u16,
    pub snd_wscale: u8,
    pub rcv_wscale: u8,
    pub sack: bool,
    pub timestamps: bool,
    /// The socket's timestamp clock (`TCP_TIMESTAMP`) when the snapshot was taken.
    pub ts_val: u32,
    /// Sequence number of the segment that last updated the send window
    /// (`tcp_repair_window.snd_wl1`).
    pub snd_wl1: u32,
    /// The largest window the peer ever advertised (`tcp_repair_window.max_window`).
    pub max_window: u32,
    /// `rcv_nxt` when our window was last advertised (`tcp_repair_window.rcv_wup`).
    pub rcv_wup: u32,
}

/// A mirrored record: its owning traffic group, the update id the channel gave it, and what it
/// is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub update_id: u64,
    pub traffic_group: String,
    pub kind: RecordKind,
}

/// The kinds of mirrored state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKind {
    /// A persistence record; the fields of `tables::PersistRecord`, with an absolute expiry.
    Persistence {
        profile: String,
        scope: String,
        key: String,
        pool: String,
        member: SocketAddr,
        virtual_server: String,
        expiry_ms: u64,
    },
    /// A UDP flow; the new owner binds `snat` and carries on. `key` is Some when the flow is
    /// per (client, member) — a persistence plugin keys each datagram — holding that key's
    /// bytes when known (they may be empty); None for a flow per client.
    UdpFlow {
        client: SocketAddr,
        vip: SocketAddr,
        member: SocketAddr,
        snat: SocketAddr,
        last_seen_ms: u64,
        key: Option<Vec<u8>>,
    },
    /// A full-proxy TCP connection: the repair state of both of its sockets, taken together
    /// at `taken_ms` (Unix ms; the new owner advances the timestamp clocks by the time since).
    TcpConn {
        client: SocketAddr,
        vip: SocketAddr,
        member: SocketAddr,
        snat: SocketAddr,
        client_side: TcpRepair,
        server_side: TcpRepair,
        taken_ms: u64,
    },
}

/// What identifies a record within its traffic group: a later record with the same key
/// replaces it, a delete removes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKey {
    Persistence {
        profile: String,
        scope: String,
        key: String,
    },
    /// A client's flows toward different members are different records.
    UdpFlow {
        client: SocketAddr,
        vip: SocketAddr,
        member: SocketAddr,
    },
    TcpConn {
        client: SocketAddr,
        vip: SocketAddr,
    },
}

impl From<&PersistRecord> for RecordKind {
    /// A persistence record as it travels (its traffic group goes in the [`Record`]).
    fn from(r: &PersistRecord) -> RecordKind {
        RecordKind::Persistence {
            profile: r.profile.clone(),
            scope: r.scope.clone(),
            key: r.key.clone(),
            pool: r.pool.clone(),
            member: r.member,
            virtual_server: r.virtual_server.clone(),
            expiry_ms: r.expiry_ms,
        }
    }
}

impl From<&PersistRecord> for RecordKey {
    fn from(r: &PersistRecord) -> RecordKey {
        RecordKey::Persistence {
            profile: r.profile.clone(),
            scope: r.scope.clone(),
            key: r.key.clone(),
        }
    }
}

impl Record {
    /// The persistence record a peer mirrored here, as this device stores it (marked
    /// `mirrored`, with this device's `update_id`); None for the other kinds.
    pub fn to_persist(&self, update_id: u64) -> Option<PersistRecord> {
        let RecordKind::Persistence {
            profile,
            scope,
            key,
            pool,
            member,
            virtual_server,
            expiry_ms,
        } = &self.kind
        else {
            return None;
        };
        Some(PersistRecord {
            profile: profile.clone(),
            scope: scope.clone(),
            key: key.clone(),
            pool: pool.clone(),
            member: *member,
            virtual_server: virtual_server.clone(),
            traffic_group: Some(self.traffic_group.clone()),
            update_id,
            expiry_ms: *expiry_ms,
            mirrored: true,
        })
    }

    /// The key this record is stored under.
    pub fn key(&self) -> RecordKey {
        match &self.kind {
            RecordKind::Persistence {
                profile,
                scope,
                key,
                ..
            } => RecordKey::Persistence {
                profile: profile.clone(),
                scope: scope.clone(),
                key: key.clone(),
            },
            RecordKind::UdpFlow {
                client,
                vip,
                member,
                ..
            } => RecordKey::UdpFlow {
                client: *client,
                vip: *vip,
                member: *member,
            },
            RecordKind::TcpConn { client, vip, .. } => RecordKey::TcpConn {
                client: *client,
                vip: *vip,
            },
        }
    }
}

/// The messages of a mirroring channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// First message each way. From the sender: who it is and the epoch its update ids belong
    /// to (`resume_from` is None). From the receiver: its answer, with `resume_from` the last id
    /// it applied when it holds a complete state of that epoch.
    Hello {
        device: String,
        traffic_group: String,
        epoch: u64,
        resume_from: Option<u64>,
    },
    /// A full resync of `records` records follows; the receiver drops the group's state.
    ResyncBegin { records: u64 },
    /// A record, in a resync or as an incremental update.
    Record(Record),
    /// The resync is complete; it covers every update up to `last_id`.
    ResyncEnd { last_id: u64 },
    /// The record under `key` is gone (update `id`).
    Delete { id: u64, key: RecordKey },
    /// The receiver has applied every update up to `last_applied`.
    Ack { last_applied: u64 },
    /// Liveness, both ways.
    Heartbeat { sent_ms: u64 },
}

impl Message {
    /// The frame kind byte.
    pub fn kind(&self) -> u8 {
        match self {
            Message::Hello { .. } => KIND_HELLO,
            Message::ResyncBegin { .. } => KIND_RESYNC_BEGIN,
            Message::Record(_) => KIND_RECORD,
            Message::ResyncEnd { .. } => KIND_RESYNC_END,
            Message::Delete { .. } => KIND_DELETE,
            Message::Ack { .. } => KIND_ACK,
            Message::Heartbeat { .. } => KIND_HEARTBEAT,
        }
    }

    /// The message's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "hello",
            Message::ResyncBegin { .. } => "resync-begin",
            Message::Record(_) => "record",
            Message::ResyncEnd { .. } => "resync-end",
            Message::Delete { .. } => "delete",
            Message::Ack { .. } => "ack",
            Message::Heartbeat { .. } => "heartbeat",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// Appends `msg` as one frame to `out`. Fails (leaving `out` as it was) when a string or byte
/// string is longer than [`MAX_STR`] — a frame the peer would reject is never produced.
pub fn encode(msg: &Message, out: &mut Vec<u8>) -> Result<(), ProtoError> {
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(msg.kind());
    out.extend_from_slice(&[0; 4]);
    let body = out.len();
    if let Err(e) = encode_body(msg, out) {
        out.truncate(start);
        return Err(e);
    }
    let len = out.len() - body;
    if len > MAX_FRAME as usize {
        out.truncate(start);
        return Err(ProtoError::FrameTooLarge(len as u64));
    }
    out[body - 4..body].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

fn encode_body(msg: &Message, out: &mut Vec<u8>) -> Result<(), ProtoError> {
    match msg {
        Message::Hello {
            device,
            traffic_group,
            epoch,
            resume_from,
        } => {
            put_str(out, device)?;
            put_str(out, traffic_group)?;
            out.extend_from_slice(&epoch.to_be_bytes());
            match resume_from {
                None => out.push(0),
                Some(id) => {
                    out.push(1);
                    out.extend_from_slice(&id.to_be_bytes());
                }
            }
        }
        Message::ResyncBegin { records } => out.extend_from_slice(&records.to_be_bytes()),
        Message::Record(r) => put_record(out, r)?,
        Message::ResyncEnd { last_id } => out.extend_from_slice(&last_id.to_be_bytes()),
        Message::Delete { id, key } => {
            out.extend_from_slice(&id.to_be_bytes());
            put_key(out, key)?;
        }
        Message::Ack { last_applied } => out.extend_from_slice(&last_applied.to_be_bytes()),
        Message::Heartbeat { sent_ms } => out.extend_from_slice(&sent_ms.to_be_bytes()),
    }
    Ok(())
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) -> Result<(), ProtoError> {
    if b.len() > MAX_STR {
        return Err(ProtoError::StringTooLong(b.len()));
    }
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
    Ok(())
}

fn put_str(out: &mut Vec<u8>, s: &str) -> Result<(), ProtoError> {
    put_bytes(out, s.as_bytes())
}

fn put_addr(out: &mut Vec<u8>, a: &SocketAddr) {
    match a.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&a.port().to_be_bytes());
}

fn put_repair(out: &mut Vec<u8>, t: &TcpRepair) {
    out.extend_from_slice(&t.snd_seq.to_be_bytes());
    out.extend_from_slice(&t.rcv_seq.to_be_bytes());
    out.extend_from_slice(&t.snd_wnd.to_be_bytes());
    out.extend_from_slice(&t.rcv_wnd.to_be_bytes());
    out.extend_from_slice(&t.mss.to_be_bytes());
    out.push(t.snd_wscale);
    out.push(t.rcv_wscale);
    let mut flags = 0;
    if t.sack {
        flags |= TCP_FLAG_SACK;
    }
    if t.timestamps {
        flags |= TCP_FLAG_TIMESTAMPS;
    }
    out.push(flags);
    out.extend_from_slice(&t.ts_val.to_be_bytes());
    out.extend_from_slice(&t.snd_wl1.to_be_bytes());
    out.extend_from_slice(&t.max_window.to_be_bytes());
    out.extend_from_slice(&t.rcv_wup.to_be_bytes());
}

fn put_record(out: &mut Vec<u8>, r: &Record) -> Result<(), ProtoError> {
    out.extend_from_slice(&r.update_id.to_be_bytes());
    put_str(out, &r.traffic_group)?;
    match &r.kind {
        RecordKind::Persistence {
            profile,
            scope,
            key,
            pool,
            member,
            virtual_server,
            expiry_ms,
        } => {
            out.push(REC_PERSISTENCE);
            put_str(out, profile)?;
            put_str(out, scope)?;
            put_str(out, key)?;
            put_str(out, pool)?;
            put_addr(out, member);
            put_str(out, virtual_server)?;
            out.extend_from_slice(&expiry_ms.to_be_bytes());
        }
        RecordKind::UdpFlow {
            client,
            vip,
            member,
            snat,
            last_seen_ms,
            key,
        } => {
            out.push(REC_UDP_FLOW);
            put_addr(out, client);
            put_addr(out, vip);
            put_addr(out, member);
            put_addr(out, snat);
            out.extend_from_slice(&last_seen_ms.to_be_bytes());
            match key {
                None => out.push(0),
                Some(k) => {
                    out.push(1);
                    put_bytes(out, k)?;
                }
            }
        }
        RecordKind::TcpConn {
            client,
            vip,
            member,
            snat,
            client_side,
            server_side,
            taken_ms,
        } => {
            out.push(REC_TCP_CONN);
            put_addr(out, client);
            put_addr(out, vip);
            put_addr(out, member);
            put_addr(out, snat);
            put_repair(out, client_side);
            put_repair(out, server_side);
            out.extend_from_slice(&taken_ms.to_be_bytes());
        }
    }
    Ok(())
}

fn put_key(out: &mut Vec<u8>, k: &RecordKey) -> Result<(), ProtoError> {
    match k {
        RecordKey::Persistence {
            profile,
            scope,
            key,
        } => {
            out.push(REC_PERSISTENCE);
            put_str(out, profile)?;
            put_str(out, scope)?;
            put_str(out, key)?;
        }
        RecordKey::UdpFlow {
            client,
            vip,
            member,
        } => {
            out.push(REC_UDP_FLOW);
            put_addr(out, client);
            put_addr(out, vip);
            put_addr(out, member);
        }
        RecordKey::TcpConn { client, vip } => {
            out.push(REC_TCP_CONN);
            put_addr(out, client);
            put_addr(out, vip);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// Decodes the frame at the start of `buf`. `Ok(None)`: `buf` holds a valid prefix of a frame
/// and more bytes are needed; `Ok(Some((msg, n)))`: a message, from the first `n` bytes.
///
/// Header errors are reported as soon as the offending byte is present, and a declared length
/// above [`MAX_FRAME`] is rejected before any body byte is awaited.
pub fn decode(buf: &[u8]) -> Result<Option<(Message, usize)>, ProtoError> {
    let m = buf.len().min(MAGIC.len());
    if buf[..m] != MAGIC[..m] {
        return Err(ProtoError::BadMagic(buf[..m].to_vec()));
    }
    if buf.len() > 4 && buf[4] != VERSION {
        return Err(ProtoError::UnsupportedVersion(buf[4]));
    }
    if buf.len() > 5 && !(KIND_HELLO..=KIND_HEARTBEAT).contains(&buf[5]) {
        return Err(ProtoError::UnknownKind(buf[5]));
    }
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[6], buf[7], buf[8], buf[9]]);
    if len > MAX_FRAME {
        return Err(ProtoError::FrameTooLarge(len as u64));
    }
    let total = HEADER_LEN + len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    let mut r = Reader {
        buf: &buf[HEADER_LEN..total],
    };
    let msg = decode_body(buf[5], &mut r)?;
    if !r.buf.is_empty() {
        return Err(ProtoError::TrailingBytes(r.buf.len()));
    }
    Ok(Some((msg, total)))
}

fn decode_body(kind: u8, r: &mut Reader<'_>) -> Result<Message, ProtoError> {
    Ok(match kind {
        KIND_HELLO => Message::Hello {
            device: r.string()?,
            traffic_group: r.string()?,
            epoch: r.u64()?,
            resume_from: match r.u8()? {
                0 => None,
                1 => Some(r.u64()?),
                value => {
                    return Err(ProtoError::BadByte {
                        field: "option tag",
                        value,
                    })
                }
            },
        },
        KIND_RESYNC_BEGIN => Message::ResyncBegin { records: r.u64()? },
        KIND_RECORD => Message::Record(r.record()?),
        KIND_RESYNC_END => Message::ResyncEnd { last_id: r.u64()? },
        KIND_DELETE => Message::Delete {
            id: r.u64()?,
            key: r.key()?,
        },
        KIND_ACK => Message::Ack {
            last_applied: r.u64()?,
        },
        KIND_HEARTBEAT => Message::Heartbeat { sent_ms: r.u64()? },
        other => return Err(ProtoError::UnknownKind(other)),
    })
}

/// A cursor over one frame body; every read is bounds-checked against it.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        if self.buf.len() < n {
            return Err(ProtoError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtoError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, ProtoError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, ProtoError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, ProtoError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, ProtoError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A length-prefixed byte string, checked against [`MAX_STR`] and against the bytes
    /// present before anything is allocated.
    fn bytes(&mut self) -> Result<&'a [u8], ProtoError> {
        let len = self.u16()? as usize;
        if len > MAX_STR {
            return Err(ProtoError::StringTooLong(len));
        }
        self.take(len)
    }

    fn string(&mut self) -> Result<String, ProtoError> {
        let b = self.bytes()?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| ProtoError::InvalidUtf8)
    }

    fn addr(&mut self) -> Result<SocketAddr, ProtoError> {
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            other => return Err(ProtoError::BadAddressFamily(other)),
        };
        Ok(SocketAddr::new(ip, self.u16()?))
    }

    fn repair(&mut self) -> Result<TcpRepair, ProtoError> {
        let snd_seq = self.u32()?;
        let rcv_seq = self.u32()?;
        let snd_wnd = self.u32()?;
        let rcv_wnd = self.u32()?;
        let mss = self.u16()?;
        let snd_wscale = self.u8()?;
        let rcv_wscale = self.u8()?;
        let flags = self.u8()?;
        if flags & !(TCP_FLAG_SACK | TCP_FLAG_TIMESTAMPS) != 0 {
            return Err(ProtoError::BadByte {
                field: "tcp option flags",
                value: flags,
            });
        }
        Ok(TcpRepair {
            snd_seq,
            rcv_seq,
            snd_wnd,
            rcv_wnd,
            mss,
            snd_wscale,
            rcv_wscale,
            sack: flags & TCP_FLAG_SACK != 0,
            timestamps: flags & TCP_FLAG_TIMESTAMPS != 0,
            ts_val: self.u32()?,
            snd_wl1: self.u32()?,
            max_window: self.u32()?,
            rcv_wup: self.u32()?,
        })
    }

    fn record(&mut self) -> Result<Record, ProtoError> {
        let update_id = self.u64()?;
        let traffic_group = self.string()?;
        let kind = match self.u8()? {
            REC_PERSISTENCE => RecordKind::Persistence {
                profile: self.string()?,
                scope: self.string()?,
                key: self.string()?,
                pool: self.string()?,
                member: self.addr()?,
                virtual_server: self.string()?,
                expiry_ms: self.u64()?,
            },
            REC_UDP_FLOW => RecordKind::UdpFlow {
                client: self.addr()?,
                vip: self.addr()?,
                member: self.addr()?,
                snat: self.addr()?,
                last_seen_ms: self.u64()?,
                key: match self.u8()? {
                    0 => None,
                    1 => Some(self.bytes()?.to_vec()),
                    value => {
                        return Err(ProtoError::BadByte {
                            field: "option tag",
                            value,
                        })
                    }
                },
            },
            REC_TCP_CONN => RecordKind::TcpConn {
                client: self.addr()?,
                vip: self.addr()?,
                member: self.addr()?,
                snat: self.addr()?,
                client_side: self.repair()?,
                server_side: self.repair()?,
                taken_ms: self.u64()?,
            },
            other => return Err(ProtoError::UnknownRecordKind(other)),
        };
        Ok(Record {
            update_id,
            traffic_group,
            kind,
        })
    }

    fn key(&mut self) -> Result<RecordKey, ProtoError> {
        Ok(match self.u8()? {
            REC_PERSISTENCE => RecordKey::Persistence {
                profile: self.string()?,
                scope: self.string()?,
                key: self.string()?,
            },
            REC_UDP_FLOW => RecordKey::UdpFlow {
                client: self.addr()?,
                vip: self.addr()?,
                member: self.addr()?,
            },
            REC_TCP_CONN => RecordKey::TcpConn {
                client: self.addr()?,
                vip: self.addr()?,
            },
            other => return Err(ProtoError::UnknownRecordKind(other)),
        })
    }
}

#[cfg(test)]
mod tests;
