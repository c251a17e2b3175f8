//! Config sync between devices: the listener that takes a peer's push, and the sync of this
//! device's configuration to the group (`lbctl config sync --to-group`).
//!
//! One TCP port per device (`config_sync_port`, default 1028) on its config-sync address
//! (`config_sync_address`, default its first mirroring address), mutual TLS 1.3 with the
//! mirroring trust: only devices of the group, by their certificates, get in, either way. A
//! connection carries one push and its answer, each one JSON line ([`MAX_MESSAGE`] at most);
//! at most [`MAX_CONNECTIONS`] are served at once, [`MAX_PER_ADDRESS`] from one address, and
//! each has [`IO_TIMEOUT`] for its handshake, its message and its answer.
//! A receiver validates what it gets as it would a file, applies it through the reload path
//! (established connections and flows continue) and saves it to its configuration file
//! atomically; anything wrong refuses the push whole, and both sides report
//! `sync-failed: REASON`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::{info, warn};

use super::sync::ConfigSync;
use crate::cluster::config::GroupConfig;
use crate::configsync::{plan, receive, Answer, Payload, Push};
use crate::mirror::service::TrustFiles;
use crate::mirror::trust;

/// The longest message (one JSON line).
pub const MAX_MESSAGE: u64 = 16 * 1024 * 1024;
/// Connections the listener serves at once, and from one address.
pub const MAX_CONNECTIONS: usize = 16;
pub const MAX_PER_ADDRESS: usize = 4;

/// One connection counted against its source address (released when dropped).
struct PerAddress {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl PerAddress {
    /// Counts a connection from `ip`, unless it has [`MAX_PER_ADDRESS`] open already.
    fn take(open: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr) -> Option<PerAddress> {
        let mut m = open.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= MAX_PER_ADDRESS {
            return None;
        }
        *n += 1;
        Some(PerAddress {
            open: open.clone(),
            ip,
        })
    }
}

impl Drop for PerAddress {
    fn drop(&mut self) {
        let mut m = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}
/// Connect, handshake, each message, the answer (which includes applying it).
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

async fn read_msg<T: DeserializeOwned, R: AsyncRead + Unpin>(rd: R) -> Result<T, String> {
    let mut line = Vec::new();
    let n = tokio::time::timeout(
        IO_TIMEOUT,
        BufReader::new(rd)
            .take(MAX_MESSAGE + 1)
            .read_until(b'\n', &mut line),
    )
    .await
    .map_err(|_| "no message in time".to_string())?
    .map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("the connection closed".into());
    }
    if line.last() != Some(&b'\n') {
        return Err(format!("message longer than {MAX_MESSAGE} bytes"));
    }
    serde_json::from_slice(&line).map_err(|e| format!("bad message: {e}"))
}

async fn write_msg<T: Serialize, W: AsyncWrite + Unpin>(wr: &mut W, m: &T) -> Result<(), String> {
    let mut out = serde_json::to_vec(m).map_err(|e| e.to_string())?;
    out.push(b'\n');
    tokio::time::timeout(IO_TIMEOUT, wr.write_all(&out))
        .await
        .map_err(|_| "write timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let _ = wr.flush().await;
    Ok(())
}

impl ConfigSync {
    fn trust(&self, dir: &Path) -> TrustFiles {
        TrustFiles::in_dir(dir, &self.cluster.local.me)
    }

    /// Binds the config-sync listener and serves it until the app ends. Without a trust
    /// directory or an address for this device there is none (logged).
    pub(super) async fn listen(self: &Arc<Self>) {
        let me = &self.cluster.local.me;
        let (Some(dir), Some(addr)) = (
            self.cluster.local.mirror_trust_dir.clone(),
            self.cluster
                .group()
                .devices
                .iter()
                .find(|d| &d.name == me)
                .and_then(|d| d.sync_address()),
        ) else {
            warn!("config sync: no listener (it needs device.mirror_trust_dir and a config-sync or mirror address for this device)");
            return;
        };
        let files = self.trust(&dir);
        let tls = match trust::server_config_admitting(
            &files.ca,
            &files.cert,
            &files.key,
            self.admitted.clone(),
        ) {
            Ok(c) => TlsAcceptor::from(c),
            Err(e) => {
                warn!("config sync: no listener: {e}");
                return;
            }
        };
        let addr = SocketAddr::new(addr, self.cluster.group().group.config_sync_port);
        let listener = match bind(addr) {
            Ok(l) => l,
            Err(e) => {
                warn!("config sync: cannot listen on {addr}: {e}");
                return;
            }
        };
        info!(%addr, "config sync: listening");
        let me = Arc::downgrade(self);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let open: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
        tokio::spawn(async move {
            let mut last_warned: Option<std::time::Instant> = None;
            loop {
                let Ok((tcp, from)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let Some(s) = me.upgrade() else { return };
                // Pushes come one per sync from a handful of devices: more at once than
                // this are closed at once, so idle strangers cannot hold the port.
                let per = PerAddress::take(&open, from.ip());
                let slot = slots.clone().try_acquire_owned();
                let (Some(per), Ok(slot)) = (per, slot) else {
                    if last_warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                        warn!(peer = %from, "config sync: too many connections open (at most \
                            {MAX_CONNECTIONS}, {MAX_PER_ADDRESS} per address); closing this one");
                        last_warned = Some(std::time::Instant::now());
                    }
                    continue;
                };
                let tls = tls.clone();
                tokio::spawn(async move {
                    s.serve_one(tcp, from, &tls).await;
                    drop((slot, per));
                });
            }
        });
    }

    async fn serve_one(&self, tcp: TcpStream, from: SocketAddr, tls: &TlsAcceptor) {
        let stream = match tokio::time::timeout(IO_TIMEOUT, tls.accept(tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                warn!(peer = %from, reason = %e, "config sync: refused connection (tls)");
                return;
            }
            Err(_) => return,
        };
        let group = &self.cluster.group().group.name;
        let device = match trust::admitted_peer(stream.get_ref().1, group, &self.admitted) {
            Ok(d) => d,
            Err(e) => {
                warn!(peer = %from, reason = %e, "config sync: refused connection (trust)");
                return;
            }
        };
        let (rd, mut wr) = tokio::io::split(stream);
        let push: Push = match read_msg(rd).await {
            Ok(p) => p,
            Err(e) => {
                warn!(%device, "config sync: {e}");
                return;
            }
        };
        let answer = self.take(&device, push).await;
        let _ = write_msg(&mut wr, &answer).await;
    }

    /// Applies `push` from `device` if it validates here, else refuses it whole.
    async fn take(&self, device: &str, push: Push) -> Answer {
        let have = self.document().ok();
        let doc = match receive(have.as_ref(), &push) {
            Ok(doc) => doc,
            Err(answer) => return answer,
        };
        match self.apply(&doc).await {
            Ok(()) => {
                let lost = self.applied(push.generation.clone(), doc);
                info!(from = device, generation = %push.generation, "config sync: applied");
                if let Some(ours) = lost {
                    warn!(ours = %ours, by = %push.generation,
                        "config sync: this device's unsynced change was overwritten");
                }
                Answer::Applied {
                    generation: push.generation,
                }
            }
            Err(reason) => {
                warn!(from = device, %reason, "config sync: refused");
                self.failed(format!("refused {device}'s configuration: {reason}"));
                Answer::Refused { reason }
            }
        }
    }

    /// Syncs this device's configuration to every live device that does not hold it.
    pub async fn sync_to_group(&self) -> Value {
        self.sync_to(&[], &self.cluster.group(), true).await
    }

    /// Syncs to the devices `also` (a device just added, which sends no heartbeats to this one
    /// yet, or one just removed, which must learn it), whose addresses are in `via`, and with
    /// `group` to every live device that does not hold this device's configuration.
    pub(super) async fn sync_to(&self, also: &[String], via: &GroupConfig, group: bool) -> Value {
        let Some(dir) = self.cluster.local.mirror_trust_dir.clone() else {
            return json!({"error": "config sync needs device.mirror_trust_dir"});
        };
        let (mut targets, g) = self.targets();
        if !group {
            targets.clear();
        }
        for name in also {
            if !targets.iter().any(|(t, _)| t == name) {
                targets.push((name.clone(), None));
            }
        }
        let Some(g) = g else {
            return json!({"error": "this device holds no group configuration"});
        };
        let doc = match self.document() {
            Ok(d) => d,
            Err(e) => return json!({"error": e.to_string()}),
        };
        let files = self.trust(&dir);
        let tls = match trust::client_config(&files.ca, &files.cert, &files.key) {
            Ok(c) => TlsConnector::from(c),
            Err(e) => return json!({"error": e.to_string()}),
        };
        let max_incremental = self.cluster.group().group.max_incremental_sync_size as usize * 1024;
        let mut synced = Vec::new();
        let mut full = Vec::new();
        let mut failed = Vec::new();
        for (peer, has) in targets {
            let mut push = plan(&doc, &g, has, &self.history(), max_incremental);
            let mut res = self.push_to(&tls, &peer, &push, via).await;
            if let Ok(Answer::NeedFull { .. }) = res {
                push = plan(&doc, &g, None, &self.history(), max_incremental);
                res = self.push_to(&tls, &peer, &push, via).await;
            }
            match res {
                Ok(Answer::Applied { .. }) => {
                    let whole = matches!(push.payload, Payload::Full { .. });
                    info!(%peer, generation = %g, full = whole, "config sync: synced");
                    if whole {
                        full.push(peer.clone());
                    }
                    synced.push(peer);
                }
                Ok(Answer::Refused { reason }) => failed.push((peer, reason)),
                Ok(Answer::NeedFull { .. }) => {
                    failed.push((peer, "asked twice for the whole configuration".into()))
                }
                Err(e) => failed.push((peer, e)),
            }
        }
        match failed.first() {
            Some((peer, reason)) => self.failed(format!("{peer} refused it: {reason}")),
            None => self.succeeded(),
        }
        json!({
            "generation": g,
            "synced": synced,
            "full": full,
            "failed": failed.iter().map(|(p, r)| json!({"device": p, "reason": r})).collect::<Vec<_>>(),
        })
    }

    async fn push_to(
        &self,
        tls: &TlsConnector,
        peer: &str,
        push: &Push,
        via: &GroupConfig,
    ) -> Result<Answer, String> {
        let addr = via
            .devices
            .iter()
            .find(|d| d.name == peer)
            .and_then(|d| d.sync_address())
            .ok_or_else(|| format!("{peer} has no config-sync address"))?;
        let addr = SocketAddr::new(addr, self.cluster.group().group.config_sync_port);
        let name = trust::device_server_name(&self.cluster.group().group.name, peer)
            .map_err(|e| e.to_string())?;
        let tcp = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("{addr}: connect timed out"))?
            .map_err(|e| format!("{addr}: {e}"))?;
        let stream = tokio::time::timeout(IO_TIMEOUT, tls.connect(name, tcp))
            .await
            .map_err(|_| format!("{addr}: handshake timed out"))?
            .map_err(|e| format!("{addr}: {e}"))?;
        let (rd, mut wr) = tokio::io::split(stream);
        write_msg(&mut wr, push).await?;
        if let Payload::Delta { .. } = push.payload {
            info!(%peer, "config sync: incremental");
        }
        read_msg(rd).await
    }
}

/// The config-sync listener (address reuse, so a restarted lbd binds at once).
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_per_address_are_counted_and_released() {
        let open: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
        let a: IpAddr = "192.168.100.7".parse().unwrap();
        let b: IpAddr = "192.168.100.8".parse().unwrap();
        let held: Vec<PerAddress> = (0..MAX_PER_ADDRESS)
            .map(|_| PerAddress::take(&open, a).unwrap())
            .collect();
        assert!(PerAddress::take(&open, a).is_none());
        assert!(PerAddress::take(&open, b).is_some());
        drop(held);
        assert!(open.lock().unwrap().is_empty());
        assert!(PerAddress::take(&open, a).is_some());
    }
}
