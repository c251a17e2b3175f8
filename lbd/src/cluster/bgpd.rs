//! lbd's client of bgpd's control socket: one connection, one request at a time, each
//! answered within [`BGPD_TIMEOUT`]. bgpd never speaks unasked; when the connection closes,
//! bgpd withdraws what this client announced (fate sharing).

use std::time::Duration;

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;
use spanlb_control::bgpd::{NextHop, Request, RouteConfig, RouteRef, MAX_LINE};
use spanlb_control::client::AsyncClient;

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
    /// The route as bgpd's `announce` takes it.
    pub fn config(&self) -> RouteConfig {
        RouteConfig {
            path_id: Some(self.path_id),
            next_hop: self.next_hop.map_or(NextHop::Self_, NextHop::Addr),
            ..RouteConfig::new(self.prefix)
        }
    }

    /// The route's key as bgpd's `withdraw` takes it.
    pub fn key(&self) -> RouteRef {
        RouteRef {
            path_id: Some(self.path_id),
            prefix: self.prefix,
        }
    }
}

/// A connection to bgpd's control socket (spanlb-control's typed client).
pub struct Bgpd(AsyncClient<Request>);

impl Bgpd {
    pub async fn connect(path: &std::path::Path) -> std::io::Result<Bgpd> {
        let c = AsyncClient::connect(path)
            .await
            .map_err(std::io::Error::other)?;
        Ok(Bgpd(c.with_timeout(BGPD_TIMEOUT)))
    }

    /// Whether bgpd closed the connection (it never speaks unasked, so anything readable
    /// between requests is the end of the connection or nonsense).
    pub fn closed(&self) -> bool {
        self.0.closed()
    }

    /// Withdraws `routes` (gracefully: bgpd keeps them with the GRACEFUL_SHUTDOWN community
    /// for its linger time).
    pub async fn withdraw(&mut self, routes: &[RouteIntent], graceful: bool) -> Result<(), String> {
        let req = Request::Withdraw {
            graceful,
            routes: routes.iter().map(RouteIntent::key).collect(),
        };
        self.call_split(req).await
    }

    /// Announces `routes` (an announce replaces a route with the same prefix and path id).
    pub async fn announce(&mut self, routes: &[RouteIntent]) -> Result<(), String> {
        let req = Request::Announce {
            persistent: false,
            routes: routes.iter().map(RouteIntent::config).collect(),
        };
        self.call_split(req).await
    }

    /// `req` as requests of at most bgpd's line limit ([`MAX_LINE`]; a large intent set is more
    /// than one line), one after the other.
    async fn call_split(&mut self, req: Request) -> Result<(), String> {
        for part in req.split(MAX_LINE) {
            self.call(&part).await?;
        }
        Ok(())
    }

    /// Tells bgpd that everything this device wants announced has been announced: after its
    /// start, bgpd holds End-of-RIB back until then (graceful restart, RFC 4724), so that the
    /// routers do not drop the routes this device has not announced again yet.
    pub async fn ready(&mut self) -> Result<(), String> {
        self.call(&Request::Ready).await
    }

    /// One request, one answer within [`BGPD_TIMEOUT`]; an `{"ok":false}` answer is an error.
    async fn call(&mut self, req: &Request) -> Result<(), String> {
        match self.0.request(req).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_daemon() => Err(format!("bgpd: {e}")),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 100,000 intents are announced and withdrawn in lines under bgpd's limit, all of them.
    #[tokio::test]
    async fn large_intent_sets_go_in_lines_under_the_limit() {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let dir = std::env::temp_dir().join(format!("lbd-bgpd-split-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bgpd.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        // A bgpd that answers every line and reports each line's length and route count.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (rd, mut wr) = s.into_split();
            let mut rd = BufReader::new(rd);
            let mut line = String::new();
            while rd.read_line(&mut line).await.unwrap() > 0 {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                let n = v["routes"].as_array().map_or(0, Vec::len);
                tx.send((v["cmd"].as_str().unwrap().to_string(), line.len() - 1, n))
                    .unwrap();
                wr.write_all(b"{\"ok\":true}\n").await.unwrap();
                line.clear();
            }
        });
        let intents: Vec<RouteIntent> = (0..100_000u32)
            .map(|i| RouteIntent {
                prefix: IpNet::from(ipnet::Ipv6Net::from(std::net::Ipv6Addr::from(
                    0x2001_0db8_u128 << 96 | u128::from(i),
                ))),
                path_id: i % 7 + 1,
                next_hop: None,
            })
            .collect();
        let mut b = Bgpd::connect(&path).await.unwrap();
        b.announce(&intents).await.unwrap();
        b.withdraw(&intents, false).await.unwrap();
        drop(b);
        server.await.unwrap();
        let mut got = std::collections::BTreeMap::<String, (usize, usize)>::new();
        while let Ok((cmd, len, n)) = rx.try_recv() {
            assert!(len <= MAX_LINE, "{cmd}: a line of {len} bytes");
            let e = got.entry(cmd).or_default();
            e.0 += 1;
            e.1 += n;
        }
        assert!(got["announce"].0 > 1, "{got:?}");
        assert_eq!(got["announce"].1, 100_000);
        assert_eq!(got["withdraw"].1, 100_000);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
