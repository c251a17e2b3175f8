//! Health monitors (placeholder with the agreed API; replaced by the real module on merge).
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    Tcp,
    Http {
        request: Vec<u8>,
        expect_status: u16,
        expect_body: Option<Vec<u8>>,
    },
    Udp {
        send: Vec<u8>,
        expect: Vec<u8>,
    },
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorSpec {
    pub name: String,
    pub kind: ProbeKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub up_count: u32,
    pub down_count: u32,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    Unchecked,
    Up,
    Down,
}
impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}
pub fn spawn_monitor(
    _spec: Arc<MonitorSpec>,
    _target: SocketAddr,
    _source: Option<IpAddr>,
    _on_change: Box<dyn Fn(Health, &str) + Send + Sync + 'static>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {})
}
