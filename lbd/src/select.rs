//! Backend selection (placeholder with the agreed API; replaced by the real module on merge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    RoundRobin,
    Ratio,
    LeastConnections,
    Maglev,
}
impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub index: usize,
    pub key: String,
    pub ratio: u32,
}
pub struct Selector {
    c: Vec<Candidate>,
    n: std::sync::atomic::AtomicUsize,
    m: Method,
}
impl Selector {
    pub fn new(method: Method, candidates: Vec<Candidate>) -> Selector {
        Selector {
            c: candidates,
            n: Default::default(),
            m: method,
        }
    }
    pub fn method(&self) -> Method {
        self.m
    }
    pub fn is_empty(&self) -> bool {
        self.c.is_empty()
    }
    pub fn len(&self) -> usize {
        self.c.len()
    }
    pub fn pick(
        &self,
        _hash: u64,
        _current: impl Fn(usize) -> u64,
        exclude: &[usize],
    ) -> Option<usize> {
        let n = self.n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (0..self.c.len())
            .map(|i| self.c[(n + i) % self.c.len()].index)
            .find(|i| !exclude.contains(i))
    }
}
pub fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100000001b3)
    })
}
