//! Backend selection: which member of a pool takes the next flow.
//!
//! A [`Selector`] is a pure data structure built once per pool configuration (on load and on
//! every reload) from the pool's method and its available members, then shared by every worker.
//! Everything costly happens in [`Selector::new`]: the interleaved cycle for `ratio` and the
//! Maglev lookup table are precomputed there, so [`Selector::pick`] only reads immutable vectors
//! and bumps one atomic cursor.
//!
//! This module must not do I/O, must not take a lock, allocate or block on the pick path, and
//! knows nothing of sockets or of member health: the caller passes the members it considers
//! available, the flow's hash, the current connection counts and the members a flow has already
//! failed on.
//!
//! Methods:
//! - `round-robin`: members in the given order, one after another.
//! - `ratio`: smooth weighted round robin (the interleaving nginx uses for `weight=`), so 3:1
//!   gives a, a, b, a rather than a, a, a, b.
//! - `least-connections`: the member with the fewest current connections, ties shared.
//! - `maglev`: consistent hashing with Maglev's lookup table (Eisenbud et al., "Maglev: A Fast
//!   and Reliable Software Network Load Balancer", NSDI 2016, §3.4 and Pseudocode 1): the same
//!   flow hash goes to the same member, and a change in the member set moves few flows.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Size of the lookup table a Maglev [`Selector`] builds. Prime (the paper requires it, so that
/// every member's permutation visits every entry), and about 100 times the members a pool is
/// expected to have, which keeps the table balanced to within about 1% (paper, §3.4 and §5.3).
pub const MAGLEV_TABLE_SIZE: usize = 65537; // prime

/// The longest interleaved cycle `ratio` builds. Ratios whose sum (after dividing by their gcd)
/// is larger are scaled down proportionally, each kept at least 1.
const RATIO_CYCLE_MAX: u64 = 1 << 20;

/// Upper bound on the work (cycle length × members) of building a `ratio` cycle, so a reload of
/// a pool with many members and large, coprime ratios stays quick: the cycle is shortened
/// further (still proportional) when it would exceed this.
const RATIO_BUILD_BUDGET: u64 = 1 << 26;

/// How far `ratio` walks its cycle past excluded members before it falls back to the members in
/// order: bounds a retry's pick when the excluded members hold almost all of the weight.
const RATIO_WALK_MAX: usize = 4096;

/// Marks an entry of the Maglev table not yet filled while it is being built.
const EMPTY: u32 = u32::MAX;

/// How a pool picks a member for a new flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Members in order, one after the other.
    RoundRobin,
    /// Smooth weighted round robin by each member's ratio.
    Ratio,
    /// The member with the fewest current connections.
    LeastConnections,
    /// Consistent hashing of the flow key (Maglev lookup table).
    Maglev,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::RoundRobin => "round-robin",
            Method::Ratio => "ratio",
            Method::LeastConnections => "least-connections",
            Method::Maglev => "maglev",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One member a [`Selector`] may pick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Caller's index of the member (returned by pick). Not necessarily dense or sorted.
    pub index: usize,
    /// Stable identity used by Maglev for its permutation, e.g. "10.1.1.50:80".
    pub key: String,
    /// Weight >= 1 (Ratio uses it; others ignore it; 0 must be treated as 1).
    pub ratio: u32,
}

/// Picks members of one pool by one [`Method`]; built once, shared by all workers.
///
/// Send + Sync: the only mutable state is an atomic cursor, advanced with relaxed ordering (it
/// spreads picks; it orders nothing).
pub struct Selector {
    method: Method,
    /// The caller's index of each candidate, in the order given.
    indices: Vec<usize>,
    /// Next position for round robin and ratio; the turn among least-connections' ties.
    cursor: AtomicUsize,
    /// `ratio`: the interleaved cycle; `maglev`: the lookup table. Entries are positions into
    /// `indices`. Empty for the other methods.
    table: Vec<u32>,
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Selector")
            .field("method", &self.method)
            .field("indices", &self.indices)
            .field("table_len", &self.table.len())
            .finish()
    }
}

impl Selector {
    /// Builds a selector over `candidates` (in this order). For `ratio` this computes the
    /// interleaved cycle, for `maglev` the [`MAGLEV_TABLE_SIZE`]-entry lookup table.
    pub fn new(method: Method, candidates: Vec<Candidate>) -> Selector {
        let table = match method {
            Method::Ratio => {
                let ratios: Vec<u32> = candidates.iter().map(|c| c.ratio).collect();
                ratio_cycle(&ratios)
            }
            Method::Maglev => {
                let keys: Vec<&str> = candidates.iter().map(|c| c.key.as_str()).collect();
                maglev_table(&keys, MAGLEV_TABLE_SIZE)
            }
            Method::RoundRobin | Method::LeastConnections => Vec::new(),
        };
        Selector {
            method,
            indices: candidates.iter().map(|c| c.index).collect(),
            cursor: AtomicUsize::new(0),
            table,
        }
    }

    /// The method this selector picks by.
    pub fn method(&self) -> Method {
        self.method
    }

    /// Whether there is no candidate (then [`pick`](Selector::pick) always gives `None`).
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// Number of candidates.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Picks a candidate's index.
    /// - `hash`: a stable hash of the flow key (Maglev uses it; others ignore it).
    /// - `current`: current connection count of a member by its index (LeastConnections uses it).
    /// - `exclude`: indices already tried for this flow (a failed connect is retried on
    ///   another member): never return one of them; return None if every candidate is excluded.
    pub fn pick(
        &self,
        hash: u64,
        current: impl Fn(usize) -> u64,
        exclude: &[usize],
    ) -> Option<usize> {
        let n = self.indices.len();
        if n == 0 {
            return None;
        }
        let allowed = |pos: usize| !exclude.contains(&self.indices[pos]);
        // Once this holds, every walk below ends at an allowed candidate (the fallbacks make
        // sure of it), so none of them has to track which candidates it has seen.
        if !exclude.is_empty() && !(0..n).any(allowed) {
            return None;
        }
        let pos = match self.method {
            Method::RoundRobin => {
                let start = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
                self.first_allowed_from(start, &allowed)
            }
            Method::Ratio => {
                let len = self.table.len();
                let start = self.cursor.fetch_add(1, Ordering::Relaxed) % len;
                (0..len.min(RATIO_WALK_MAX))
                    .map(|k| self.table[(start + k) % len] as usize)
                    .find(|&pos| allowed(pos))
                    .or_else(|| self.first_allowed_from(start % n, &allowed))
            }
            Method::LeastConnections => {
                // The smallest count and how many allowed members have it; then the tied member
                // whose rank among them is the cursor modulo their number, so members tied at
                // the minimum take turns evenly whatever lies between them. Counts can move
                // between the two passes (other workers connect and close): if the chosen rank
                // is gone by then, the first minimum of the first pass stands.
                let mut least: Option<(u64, usize, usize)> = None; // (count, first pos, ties)
                for pos in (0..n).filter(|&pos| allowed(pos)) {
                    let count = current(self.indices[pos]);
                    least = match least {
                        Some((min, first, ties)) if count == min => Some((min, first, ties + 1)),
                        Some(least) if count > least.0 => Some(least),
                        _ => Some((count, pos, 1)),
                    };
                }
                least.map(|(min, first, ties)| {
                    if ties == 1 {
                        return first;
                    }
                    let rank = self.cursor.fetch_add(1, Ordering::Relaxed) % ties;
                    (0..n)
                        .filter(|&pos| allowed(pos) && current(self.indices[pos]) == min)
                        .nth(rank)
                        .unwrap_or(first)
                })
            }
            Method::Maglev => {
                // The flow's own entry, else the next entries of the table in order: a retried
                // flow lands on the same member every time, and the load of an excluded member
                // spreads over the others as the table interleaves them. Bounded by the table
                // size; the fallback only matters if some candidate has no entry at all
                // (more candidates than entries), which MAGLEV_TABLE_SIZE makes theoretical.
                let len = self.table.len();
                let start = (hash % len as u64) as usize;
                (0..len)
                    .map(|k| self.table[(start + k) % len] as usize)
                    .find(|&pos| allowed(pos))
                    .or_else(|| self.first_allowed_from(start % n, &allowed))
            }
        };
        pos.map(|pos| self.indices[pos])
    }

    /// The first allowed candidate position at or after `start`, wrapping around.
    fn first_allowed_from(&self, start: usize, allowed: &impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.indices.len();
        (0..n).map(|k| (start + k) % n).find(|&pos| allowed(pos))
    }
}

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 (Fowler, Noll, Vo) over `bytes`, starting from `basis`.
fn fnv1a(basis: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(basis, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME))
}

/// MurmurHash3's 64-bit finalizer (fmix64, Appleby): a bijection that spreads every input bit
/// over the whole output.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// SplitMix64's finalizer (Steele, Lea, Flood; constants from Vigna's splitmix64.c): like
/// [`fmix64`], a different bijection.
fn splitmix64_mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Stable 64-bit hash of bytes, identical across processes and machines (NOT std RandomState):
/// used for Maglev flow keys and persistence keys.
///
/// FNV-1a 64 (standard offset basis and prime) followed by MurmurHash3's fmix64 finalizer:
/// FNV-1a alone leaves its low bits weak for short, similar keys (addresses differing in the
/// last octet), and the Maglev lookup reduces the hash modulo the table size. Not keyed, so not
/// resistant to chosen collisions. Changing it remaps every Maglev flow and persistence record
/// across an upgrade; the known values in the tests are there to notice that.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    fmix64(fnv1a(FNV_OFFSET_BASIS, bytes))
}

/// Rendezvous (highest random weight) hashing: of `candidates` (index, member address), the
/// index whose [`stable_hash`] of `key` followed by the address's text is greatest. Every
/// device picks the same member for a key while the candidates are the same, and removing
/// one candidate remaps only the keys it had.
pub fn rendezvous(
    key: &[u8],
    candidates: impl Iterator<Item = (usize, SocketAddr)>,
) -> Option<usize> {
    candidates
        .max_by_key(|(_, addr)| {
            let mut b = key.to_vec();
            b.extend_from_slice(addr.to_string().as_bytes());
            stable_hash(&b)
        })
        .map(|(i, _)| i)
}

/// The second, independent hash of a Maglev key, for its skip: FNV-1a from another basis, then
/// another finalizer than [`stable_hash`]'s.
fn maglev_skip_hash(bytes: &[u8]) -> u64 {
    splitmix64_mix(fnv1a(FNV_OFFSET_BASIS ^ 0x9e37_79b9_7f4a_7c15, bytes))
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Builds the Maglev lookup table (entries are positions into `keys`).
/// Panics never; an empty `keys` gives an empty Vec.
///
/// Pseudocode 1 of the paper (§3.4): key i has the permutation
/// `permutation[i][j] = (offset + j × skip) mod size`, with `offset = h1(key) mod size` and
/// `skip = h2(key) mod (size − 1) + 1`; the keys take turns, each filling the next entry of its
/// permutation that is still empty, until the table is full. So every key gets `size / n`
/// entries, rounded down or up, and a key's entries mostly stay where they were when another
/// key is added or removed. Each key's walk visits an entry at most once, so building is
/// O(size × n) at worst and O(size × log size) on average, as in the paper.
///
/// `size` should be prime (as [`MAGLEV_TABLE_SIZE`] is). For any other size, the skip is moved
/// up to the next value coprime with `size`, which keeps every permutation a full cycle (and so
/// the build finite). A size of 0 gives an empty Vec. With more keys than entries, only the
/// first `size` keys get an entry.
pub fn maglev_table(keys: &[&str], size: usize) -> Vec<u32> {
    if keys.is_empty() || size == 0 {
        return Vec::new();
    }
    let m = size as u64;
    // Keys beyond `size` would never get an entry (the first round fills the table); the cap
    // at EMPTY keeps every position representable in a u32.
    let n = keys.len().min(size).min(EMPTY as usize);
    // next[i]: the next entry of key i's permutation, advanced by skip[i].
    let mut next = Vec::with_capacity(n);
    let mut skip = Vec::with_capacity(n);
    for key in &keys[..n] {
        next.push(stable_hash(key.as_bytes()) % m);
        let mut s = if m > 1 {
            maglev_skip_hash(key.as_bytes()) % (m - 1) + 1
        } else {
            1
        };
        // Always true for a prime size. Otherwise ends by m − 1 at the latest (coprime with m).
        while gcd(s, m) != 1 {
            s += 1;
        }
        skip.push(s);
    }
    let mut table = vec![EMPTY; size];
    let mut filled = 0;
    loop {
        for (i, (next, &skip)) in next.iter_mut().zip(&skip).enumerate() {
            // The entries key i has passed are all filled, and its permutation covers the whole
            // table, so while the table has an empty entry this walk finds one.
            let mut entry = *next;
            while table[entry as usize] != EMPTY {
                entry = (entry + skip) % m;
            }
            table[entry as usize] = i as u32;
            *next = (entry + skip) % m;
            filled += 1;
            if filled == size {
                return table;
            }
        }
    }
}

/// The interleaved cycle of smooth weighted round robin for `ratios` (0 counts as 1): positions
/// into `ratios`, each appearing in proportion to its ratio.
///
/// The ratios are divided by their gcd, then scaled down proportionally (each kept at least 1)
/// if their sum exceeds [`RATIO_CYCLE_MAX`] or the build would exceed [`RATIO_BUILD_BUDGET`].
/// The order is nginx's smooth weighted round robin (ngx_http_upstream_get_peer): at each step
/// every member's current weight grows by its weight, the largest (first on ties) is picked and
/// loses the total. Over a cycle each member comes up exactly its weight times, spread out.
fn ratio_cycle(ratios: &[u32]) -> Vec<u32> {
    if ratios.is_empty() {
        return Vec::new();
    }
    let mut weights: Vec<u64> = ratios.iter().map(|&r| u64::from(r.max(1))).collect();
    let reduce = |weights: &mut Vec<u64>| {
        let g = weights.iter().fold(0, |g, &w| gcd(g, w));
        weights.iter_mut().for_each(|w| *w /= g);
    };
    reduce(&mut weights);
    let n = weights.len() as u64;
    let cap = (RATIO_BUILD_BUDGET / n).min(RATIO_CYCLE_MAX).max(n);
    let total: u64 = weights.iter().sum();
    if total > cap {
        // weight < 2^32 and cap <= 2^20 (or n), so the product fits easily.
        weights
            .iter_mut()
            .for_each(|w| *w = (*w * cap / total).max(1));
        reduce(&mut weights);
    }
    let weights: Vec<i64> = weights.iter().map(|&w| w as i64).collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut cycle = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best: Option<(usize, i64)> = None;
        for (i, (current, &weight)) in current.iter_mut().zip(&weights).enumerate() {
            *current += weight;
            if best.is_none_or(|(_, largest)| *current > largest) {
                best = Some((i, *current));
            }
        }
        let best = best.map_or(0, |(i, _)| i);
        current[best] -= total;
        cycle.push(best as u32);
    }
    cycle
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::time::Instant;

    fn candidates(ratios: &[u32]) -> Vec<Candidate> {
        ratios
            .iter()
            .enumerate()
            .map(|(i, &ratio)| Candidate {
                // Sparse, unsorted indices, as a pool with unavailable members gives.
                index: 100 - i * 7,
                key: format!("10.1.1.{}:80", 50 + i),
                ratio,
            })
            .collect()
    }

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.1.1.{}:80", 50 + i)).collect()
    }

    fn no_conns(_: usize) -> u64 {
        0
    }

    /// splitmix64 as a generator: deterministic pseudo-random flow hashes without a dependency.
    fn hashes(count: usize) -> impl Iterator<Item = u64> {
        let mut state = 0x5eed_u64;
        (0..count).map(move |_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            splitmix64_mix(state)
        })
    }

    fn counts(picks: impl IntoIterator<Item = Option<usize>>) -> HashMap<usize, usize> {
        let mut counts = HashMap::new();
        for pick in picks {
            *counts.entry(pick.expect("a pick")).or_default() += 1;
        }
        counts
    }

    #[test]
    fn selector_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Selector>();
    }

    #[test]
    fn method_names() {
        for (method, name) in [
            (Method::RoundRobin, "round-robin"),
            (Method::Ratio, "ratio"),
            (Method::LeastConnections, "least-connections"),
            (Method::Maglev, "maglev"),
        ] {
            assert_eq!(method.to_string(), name);
            assert_eq!(
                serde_json::to_string(&method).unwrap(),
                format!("\"{name}\"")
            );
            assert_eq!(
                serde_json::from_str::<Method>(&format!("\"{name}\"")).unwrap(),
                method
            );
        }
        assert!(serde_json::from_str::<Method>("\"round_robin\"").is_err());
    }

    #[test]
    fn no_candidates_picks_nothing() {
        for method in [
            Method::RoundRobin,
            Method::Ratio,
            Method::LeastConnections,
            Method::Maglev,
        ] {
            let selector = Selector::new(method, Vec::new());
            assert!(selector.is_empty());
            assert_eq!(selector.len(), 0);
            assert_eq!(selector.method(), method);
            assert_eq!(selector.pick(42, no_conns, &[]), None);
            assert_eq!(selector.pick(42, no_conns, &[1]), None);
        }
    }

    #[test]
    fn round_robin_is_even_and_in_order() {
        let selector = Selector::new(Method::RoundRobin, candidates(&[1, 1, 1]));
        assert_eq!(selector.len(), 3);
        let first: Vec<_> = (0..6).map(|h| selector.pick(h, no_conns, &[])).collect();
        let order = [Some(100), Some(93), Some(86)];
        assert_eq!(first, [order, order].concat());
        let selector = Selector::new(Method::RoundRobin, candidates(&[1, 1, 1]));
        let counts = counts((0..3000).map(|h| selector.pick(h, no_conns, &[])));
        assert_eq!(counts, HashMap::from([(100, 1000), (93, 1000), (86, 1000)]));
    }

    #[test]
    fn round_robin_skips_excluded() {
        let selector = Selector::new(Method::RoundRobin, candidates(&[1, 1, 1]));
        let counts = counts((0..3000).map(|h| selector.pick(h, no_conns, &[93])));
        assert_eq!(counts.get(&93), None);
        // The excluded member's turn goes to the next one.
        assert_eq!(counts, HashMap::from([(100, 1000), (86, 2000)]));
        assert_eq!(selector.pick(0, no_conns, &[86, 100]), Some(93));
        assert_eq!(selector.pick(0, no_conns, &[86, 93, 100]), None);
        // Unknown indices in `exclude` are harmless.
        assert!(selector.pick(0, no_conns, &[7, 8]).is_some());
    }

    #[test]
    fn ratio_is_exactly_proportional_over_cycles() {
        let selector = Selector::new(Method::Ratio, candidates(&[3, 1, 2]));
        assert_eq!(selector.table.len(), 6);
        let counts = counts((0..600).map(|h| selector.pick(h, no_conns, &[])));
        assert_eq!(counts, HashMap::from([(100, 300), (93, 100), (86, 200)]));
    }

    #[test]
    fn ratio_interleaves() {
        let selector = Selector::new(Method::Ratio, candidates(&[3, 1]));
        let picks: Vec<_> = (0..8).map(|h| selector.pick(h, no_conns, &[])).collect();
        let cycle = [Some(100), Some(100), Some(93), Some(100)];
        assert_eq!(picks, [cycle, cycle].concat());

        // 3:1:1: never three of the same in a row, across cycle boundaries too.
        let cycle = ratio_cycle(&[3, 1, 1]);
        assert_eq!(cycle, [0, 1, 0, 2, 0]);
        for k in 0..cycle.len() {
            let run = [0, 1, 2].map(|d| cycle[(k + d) % cycle.len()]);
            assert!(
                run[0] != run[1] || run[1] != run[2],
                "run of 3 at {k}: {cycle:?}"
            );
        }
    }

    /// Smoothness: after every pick, over two cycles, each member's count is within 1 of its
    /// exact share (k × weight / total). A "a, a, a, b" ordering of 3:1 would be 1.25 off.
    #[test]
    fn ratio_stays_close_to_its_shares_at_every_step() {
        for ratios in [
            vec![3u32, 1],
            vec![3, 1, 1],
            vec![5, 1, 1],
            vec![7, 3, 2, 1],
            vec![100, 1, 1],
            vec![10, 9, 8, 7, 6, 5],
        ] {
            let cycle = ratio_cycle(&ratios);
            let total: u32 = ratios.iter().sum();
            assert_eq!(cycle.len(), total as usize);
            let mut worst = 0f64;
            for (member, &ratio) in ratios.iter().enumerate() {
                let mut count = 0;
                for k in 0..2 * cycle.len() {
                    count += usize::from(cycle[k % cycle.len()] as usize == member);
                    let share = (k + 1) as f64 * f64::from(ratio) / f64::from(total);
                    worst = worst.max((count as f64 - share).abs());
                }
            }
            println!("ratio {ratios:?}: largest deviation from exact share {worst:.3}");
            assert!(worst < 1.0, "{ratios:?}: {worst}");
        }
    }

    #[test]
    fn ratio_zero_counts_as_one_and_gcd_is_taken() {
        let selector = Selector::new(Method::Ratio, candidates(&[0, 0]));
        assert_eq!(selector.table, [0, 1]);
        let counts = counts((0..10).map(|h| selector.pick(h, no_conns, &[])));
        assert_eq!(counts, HashMap::from([(100, 5), (93, 5)]));

        assert_eq!(ratio_cycle(&[6, 2]), ratio_cycle(&[3, 1]));
        assert_eq!(ratio_cycle(&[1000, 1000, 500]), [0, 1, 2, 0, 1]);
    }

    #[test]
    fn ratio_scales_huge_weights_down() {
        let cycle = ratio_cycle(&[u32::MAX, 1, u32::MAX / 2]);
        assert!(cycle.len() as u64 <= RATIO_CYCLE_MAX + 3, "{}", cycle.len());
        let count = |member| cycle.iter().filter(|&&m| m == member).count() as f64;
        assert_eq!(count(1), 1.0);
        let proportion = count(0) / count(2);
        assert!((proportion - 2.0).abs() < 0.001, "{proportion}");

        // Many members with coprime ratios: the build budget bounds the cycle.
        let ratios: Vec<u32> = (0..2000).map(|i| 1_000_003 + i).collect();
        let cycle = ratio_cycle(&ratios);
        assert!(cycle.len() as u64 <= RATIO_BUILD_BUDGET / 2000 + 2000);
        assert!((0..2000).all(|m| cycle.contains(&m)));
    }

    #[test]
    fn ratio_skips_excluded() {
        let selector = Selector::new(Method::Ratio, candidates(&[3, 1, 2]));
        let counts = counts((0..600).map(|h| selector.pick(h, no_conns, &[100])));
        assert_eq!(counts.get(&100), None);
        assert_eq!(counts.values().sum::<usize>(), 600);
        assert_eq!(selector.pick(0, no_conns, &[100, 93, 86]), None);

        // The only other member is further away than the bounded walk: found anyway.
        let selector = Selector::new(Method::Ratio, candidates(&[1 << 20, 1]));
        for h in 0..10 {
            assert_eq!(selector.pick(h, no_conns, &[100]), Some(93));
        }
    }

    #[test]
    fn least_connections_picks_the_minimum() {
        let selector = Selector::new(Method::LeastConnections, candidates(&[1, 1, 1, 1]));
        let conns = HashMap::from([(100, 5), (93, 2), (86, 9), (79, 3)]);
        let current = |i: usize| conns[&i];
        for h in 0..8 {
            assert_eq!(selector.pick(h, current, &[]), Some(93));
        }
        assert_eq!(selector.pick(0, current, &[93]), Some(79));
        assert_eq!(selector.pick(0, current, &[93, 79]), Some(100));
        assert_eq!(selector.pick(0, current, &[93, 79, 100, 86]), None);
    }

    #[test]
    fn least_connections_shares_ties() {
        let selector = Selector::new(Method::LeastConnections, candidates(&[1, 1, 1]));
        let conns = HashMap::from([(100, 0), (93, 5), (86, 0)]);
        let counts = counts((0..300).map(|h| selector.pick(h, |i| conns[&i], &[])));
        assert_eq!(counts, HashMap::from([(100, 150), (86, 150)]));
        let picks: Vec<_> = (0..4)
            .map(|h| selector.pick(h, |i| conns[&i], &[]))
            .collect();
        assert_eq!(picks, [Some(100), Some(86), Some(100), Some(86)]);

        // Counts that follow the picks (connections that stay open): an even spread.
        let selector = Selector::new(Method::LeastConnections, candidates(&[1, 1, 1]));
        let live: HashMap<usize, std::cell::Cell<u64>> =
            [100, 93, 86].map(|i| (i, Default::default())).into();
        for h in 0..3000 {
            let i = selector.pick(h, |i| live[&i].get(), &[]).unwrap();
            live[&i].set(live[&i].get() + 1);
        }
        assert!(live.values().all(|c| c.get() == 1000));
    }

    fn entries_per_key(table: &[u32], n: usize) -> Vec<usize> {
        let mut per_key = vec![0; n];
        for &entry in table {
            per_key[entry as usize] += 1;
        }
        per_key
    }

    #[test]
    fn maglev_table_is_balanced() {
        for n in [3, 10, 100] {
            let keys = keys(n);
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            let started = Instant::now();
            let table = maglev_table(&keys, MAGLEV_TABLE_SIZE);
            let took = started.elapsed();
            assert_eq!(table.len(), MAGLEV_TABLE_SIZE);
            let per_key = entries_per_key(&table, n);
            let ideal = MAGLEV_TABLE_SIZE as f64 / n as f64;
            let (min, max) = (per_key.iter().min().unwrap(), per_key.iter().max().unwrap());
            println!(
                "maglev N={n}: {min}..={max} entries per key (ideal {ideal:.1}), built in {took:?}"
            );
            for &count in &per_key {
                assert!((count as f64 - ideal).abs() <= ideal * 0.01, "{per_key:?}");
            }
            // The keys take turns: a table is balanced to one entry.
            assert!(max - min <= 1, "{per_key:?}");
        }
    }

    #[test]
    fn maglev_removing_a_key_moves_few_flows() {
        let n = 10;
        let all = keys(n);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let removed = 3;
        let rest: Vec<&str> = all.iter().copied().filter(|&k| k != all[removed]).collect();
        let before = maglev_table(&all, MAGLEV_TABLE_SIZE);
        let after = maglev_table(&rest, MAGLEV_TABLE_SIZE);
        fn lookup<'k>(table: &[u32], keys: &[&'k str], hash: u64) -> &'k str {
            keys[table[(hash % table.len() as u64) as usize] as usize]
        }
        let flows = 100_000;
        let (mut moved, mut on_removed) = (0, 0);
        for h in hashes(flows) {
            let (was, is) = (lookup(&before, &all, h), lookup(&after, &rest, h));
            if was == all[removed] {
                on_removed += 1;
            }
            if was != is {
                moved += 1;
            }
        }
        let moved_fraction = moved as f64 / flows as f64;
        let extra = (moved - on_removed) as f64 / flows as f64;
        println!(
            "maglev N={n}, one key removed: {:.3}% of {flows} flows moved ({:.3}% were on it, \
             {:.3}% extra)",
            moved_fraction * 100.0,
            on_removed as f64 / flows as f64 * 100.0,
            extra * 100.0
        );
        assert!(moved_fraction <= 1.0 / n as f64 * 1.10, "{moved_fraction}");

        // Adding it back (same order) restores the table exactly.
        assert_eq!(maglev_table(&all, MAGLEV_TABLE_SIZE), before);
        // Adding it back at the end instead: the same key set, nearly the same flows.
        let mut appended = rest.clone();
        appended.push(all[removed]);
        let readded = maglev_table(&appended, MAGLEV_TABLE_SIZE);
        let differ = hashes(flows)
            .filter(|&h| lookup(&before, &all, h) != lookup(&readded, &appended, h))
            .count();
        println!(
            "maglev N={n}, key re-added at the end: {:.3}% of flows differ from the original",
            differ as f64 / flows as f64 * 100.0
        );
        assert!(differ as f64 / flows as f64 <= 0.02, "{differ}");
    }

    #[test]
    fn maglev_is_deterministic() {
        let a = Selector::new(Method::Maglev, candidates(&[1; 10]));
        let b = Selector::new(Method::Maglev, candidates(&[1; 10]));
        assert_eq!(a.table, b.table);
        for h in hashes(1000) {
            assert_eq!(a.pick(h, no_conns, &[]), b.pick(h, no_conns, &[]));
            // And the same flow again goes to the same member.
            assert_eq!(a.pick(h, no_conns, &[]), a.pick(h, no_conns, &[]));
        }
        let flow = stable_hash(b"192.0.2.7:40000->198.51.100.1:80/tcp");
        assert_eq!(a.pick(flow, no_conns, &[]), b.pick(flow, no_conns, &[]));
    }

    #[test]
    fn maglev_walks_past_excluded_members() {
        let selector = Selector::new(Method::Maglev, candidates(&[1; 5]));
        let size = MAGLEV_TABLE_SIZE as u64;
        let mut fallbacks = HashMap::new();
        for h in hashes(10_000) {
            let first = selector.pick(h, no_conns, &[]).unwrap();
            assert_eq!(
                first,
                selector.indices[selector.table[(h % size) as usize] as usize]
            );
            let second = selector.pick(h, no_conns, &[first]).unwrap();
            assert_ne!(second, first);
            // The retry is stable too.
            assert_eq!(selector.pick(h, no_conns, &[first]), Some(second));
            *fallbacks.entry(second).or_insert(0) += 1;
            let third = selector.pick(h, no_conns, &[first, second]).unwrap();
            assert!(third != first && third != second);
        }
        // The excluded members' flows spread over all of the others.
        assert_eq!(fallbacks.len(), 5, "{fallbacks:?}");
        assert_eq!(selector.pick(1, no_conns, &[100, 93, 86, 79, 72]), None);
    }

    #[test]
    fn maglev_table_edge_cases() {
        assert!(maglev_table(&[], MAGLEV_TABLE_SIZE).is_empty());
        assert!(maglev_table(&["a"], 0).is_empty());
        assert_eq!(maglev_table(&["a", "b"], 1), [0]);
        assert_eq!(maglev_table(&["a"], 7), [0; 7]);
        // More keys than entries: the first `size` keys fill it.
        let many = keys(20);
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let mut table = maglev_table(&many, 13);
        table.sort_unstable();
        assert_eq!(table, (0..13).collect::<Vec<u32>>());
        // Sizes that are not prime still fill the table, balanced.
        for size in [2, 4, 12, 100, 1024, 65536] {
            let table = maglev_table(&many[..7], size);
            assert_eq!(table.len(), size);
            let per_key = entries_per_key(&table, 7);
            let (min, max) = (per_key.iter().min().unwrap(), per_key.iter().max().unwrap());
            assert!(max - min <= 1, "size {size}: {per_key:?}");
        }
    }

    /// Known values: a change here remaps every Maglev flow and persistence record on upgrade.
    #[test]
    fn stable_hash_known_values() {
        assert_eq!(stable_hash(b""), 0xefd0_1f60_ba99_2926);
        assert_eq!(stable_hash(b"a"), 0x82a2_a958_a9be_ce5b);
        assert_eq!(stable_hash(b"foobar"), 0x2c22_1949_22d1_672b);
        assert_eq!(stable_hash(b"10.1.1.50:80"), 0x67bd_d52d_ab5e_ab6a);
        assert_eq!(stable_hash(b"10.1.1.51:80"), 0xdbb3_cd68_84f3_cc80);
    }

    fn method() -> impl Strategy<Value = Method> {
        prop_oneof![
            Just(Method::RoundRobin),
            Just(Method::Ratio),
            Just(Method::LeastConnections),
            Just(Method::Maglev),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Whatever the method, candidates, counts and exclusions: a pick is a candidate, never
        /// an excluded one, and there is no pick only when every candidate is excluded.
        #[test]
        fn pick_is_a_candidate_not_excluded(
            method in method(),
            members in prop::collection::vec((0usize..40, 0u32..6, 0u64..4), 0..12),
            exclude in prop::collection::vec(0usize..45, 0..12),
            picks in prop::collection::vec(any::<u64>(), 1..20),
        ) {
            let candidates: Vec<Candidate> = members
                .iter()
                .map(|&(index, ratio, _)| Candidate { index, key: format!("m{index}"), ratio })
                .collect();
            let conns: HashMap<usize, u64> = members.iter().map(|&(i, _, c)| (i, c)).collect();
            let selector = Selector::new(method, candidates);
            let all_excluded = members.iter().all(|(i, _, _)| exclude.contains(i));
            for hash in picks {
                let current = |i: usize| *conns.get(&i).expect("current asked for a candidate");
                match selector.pick(hash, current, &exclude) {
                    Some(i) => {
                        prop_assert!(members.iter().any(|&(m, _, _)| m == i));
                        prop_assert!(!exclude.contains(&i));
                    }
                    None => prop_assert!(all_excluded),
                }
            }
        }
    }
}
