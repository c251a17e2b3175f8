//! A raw BGP peer's messages, byte by byte (RFC 4271 §4), for tests that must send what a
//! well-behaved speaker would not.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

/// How long a read waits.
pub const T: Duration = Duration::from_secs(10);

/// A message of `kind` with `body` (marker, length, type).
pub fn msg(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    m.push(kind);
    m.extend_from_slice(body);
    m
}

/// OPEN from AS 65000, hold 9, id 10.0.0.9, with MP IPv4 unicast, 4-octet AS and, with
/// `route_refresh`, the ROUTE-REFRESH capability (RFC 2918).
pub fn open(route_refresh: bool) -> Vec<u8> {
    let mut b = vec![4];
    b.extend_from_slice(&65000u16.to_be_bytes());
    b.extend_from_slice(&9u16.to_be_bytes());
    b.extend_from_slice(&[10, 0, 0, 9]);
    let mut caps: Vec<u8> = vec![1, 4, 0, 1, 0, 1]; // MP: AFI 1 SAFI 1 (RFC 4760)
    if route_refresh {
        caps.extend_from_slice(&[2, 0]);
    }
    caps.extend_from_slice(&[65, 4, 0, 0, 0xfd, 0xe8]); // 4-octet AS 65000 (RFC 6793)
    b.push((caps.len() + 2) as u8);
    b.push(2); // optional parameter: capabilities
    b.push(caps.len() as u8);
    b.extend_from_slice(&caps);
    msg(1, &b)
}

pub fn keepalive() -> Vec<u8> {
    msg(4, &[])
}

/// One whole message from `s`, or None (closed, or nothing within [`T`]).
pub async fn read_msg(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = [0u8; 19];
    timeout(T, s.read_exact(&mut head)).await.ok()?.ok()?;
    let len = u16::from_be_bytes([head[16], head[17]]) as usize;
    let mut body = vec![0u8; len.saturating_sub(19)];
    timeout(T, s.read_exact(&mut body)).await.ok()?.ok()?;
    let mut m = head.to_vec();
    m.extend_from_slice(&body);
    Some(m)
}
