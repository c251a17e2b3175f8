//! lbd's client of bgpd's control socket: one connection, one request at a time, each
//! answered within [`BGPD_TIMEOUT`]. bgpd never speaks unasked; when the connection closes,
//! bgpd withdraws what this client announced (fate sharing).

use std::time::Duration;

use ipnet::IpNet;
use serde::Serialize;
use serde_json::{json, Value};
use std::net::IpAddr;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// Longest wait for bgpd to answer one request.
pub const BGPD_TIMEOUT: Duration = Duration::from_secs(2);

/// One route lbd asks bgpd for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct RouteIntent {
    pub prefix: IpNet,
    pub path_id: u32,
    /// An address, or None for "self" (the session's local address).
    pub next_hop: Option<IpAddr>,
}

impl RouteIntent {
    pub fn json(&self) -> Value {
        json!({
            "prefix": self.prefix.to_string(),
            "path_id": self.path_id,
            "next_hop": self.next_hop.map_or_else(|| "self".to_string(), |a| a.to_string()),
        })
    }
}

pub struct Bgpd {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
}

impl Bgpd {
    pub async fn connect(path: &std::path::Path) -> std::io::Result<Bgpd> {
        let s = UnixStream::connect(path).await?;
        let (rd, wr) = s.into_split();
        Ok(Bgpd {
            rd: BufReader::new(rd),
            wr,
        })
    }

    /// Whether bgpd closed the connection (it never speaks unasked, so anything readable
    /// between requests is the end of the connection or nonsense).
    pub fn closed(&self) -> bool {
        let mut buf = [0u8; 1];
        !matches!(self.rd.get_ref().try_read(&mut buf),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Withdraws `routes` (gracefully: bgpd keeps them with the GRACEFUL_SHUTDOWN community
    /// for its linger time).
    pub async fn withdraw(&mut self, routes: &[RouteIntent], graceful: bool) -> Result<(), String> {
        let routes: Vec<Value> = routes
            .iter()
            .map(|r| json!({"prefix": r.prefix.to_string(), "path_id": r.path_id}))
            .collect();
        self.call(json!({"cmd": "withdraw", "routes": routes, "graceful": graceful}))
            .await
            .map(drop)
    }

    /// Announces `routes` (an announce replaces a route with the same prefix and path id).
    pub async fn announce(&mut self, routes: &[RouteIntent]) -> Result<(), String> {
        let routes: Vec<Value> = routes.iter().map(RouteIntent::json).collect();
        self.call(json!({"cmd": "announce", "routes": routes}))
            .await
            .map(drop)
    }

    /// One request, one answer; an `{"ok":false}` answer is an error.
    async fn call(&mut self, req: Value) -> Result<Value, String> {
        let fut = async {
            let mut line = serde_json::to_vec(&req).map_err(|e| e.to_string())?;
            line.push(b'\n');
            self.wr.write_all(&line).await.map_err(|e| e.to_string())?;
            let mut answer = String::new();
            let n = self
                .rd
                .read_line(&mut answer)
                .await
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("bgpd closed the control connection".to_string());
            }
            let v: Value =
                serde_json::from_str(&answer).map_err(|e| format!("bad answer from bgpd: {e}"))?;
            if v["ok"] == true {
                Ok(v)
            } else {
                Err(format!(
                    "bgpd: {}",
                    v["error"].as_str().unwrap_or("request refused")
                ))
            }
        };
        match tokio::time::timeout(BGPD_TIMEOUT, fut).await {
            Ok(r) => r,
            Err(_) => Err(format!("bgpd did not answer within {BGPD_TIMEOUT:?}")),
        }
    }
}
