//! Work on many items in batches, a few batches at once, until everything is done, a deadline
//! passes or a stop signal comes: the scheduling of a takeover's rebuild
//! ([`super::mirrored::Restore`]), kept apart from the system calls so it can be tested with a
//! fake rebuild and simulated time.
//!
//! Items are worked on in the order given (the caller orders them, most urgent first), `batch`
//! at a time, with at most `parallel` batches running. A batch runs as its own task (the
//! rebuild's runs on a blocking thread), so a batch started before the deadline goes on after
//! [`Batches::run`] returned; the next `run` collects it. Results are handed over as each
//! batch finishes, on the task that calls `run`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::error;

/// What works on one batch: a future (spawned as a task) resolving to one result per item.
pub type Work<T, R> = Arc<dyn Fn(Vec<T>) -> BoxFuture<'static, Vec<R>> + Send + Sync>;

/// Why [`Batches::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every item was worked on and its result handed over.
    Done,
    /// The deadline passed first; what is left waits for the next `run`.
    Deadline,
    /// The stop signal changed: nothing more should be started ([`Batches::stop`]).
    Stopped,
}

/// Items waiting, batches running (see the module documentation).
pub struct Batches<T, R> {
    pending: VecDeque<Vec<T>>,
    running: JoinSet<Vec<R>>,
    /// Items of each running batch, by task.
    sizes: HashMap<tokio::task::Id, usize>,
    parallel: usize,
    work: Work<T, R>,
    /// Bumped to stop; None once its sender is gone (nothing can stop then).
    stop: Option<watch::Receiver<u64>>,
    /// Items of batches whose task panicked (no result).
    lost: usize,
}

impl<T: Send + 'static, R: Send + 'static> Batches<T, R> {
    /// `items` in the order they are to be worked on, `batch` (at least 1) at a time, at most
    /// `parallel` (at least 1) batches at once. `stop`: a change stops [`Batches::run`].
    pub fn new(
        items: Vec<T>,
        batch: usize,
        parallel: usize,
        work: Work<T, R>,
        stop: Option<watch::Receiver<u64>>,
    ) -> Batches<T, R> {
        let batch = batch.max(1);
        let mut pending = VecDeque::with_capacity(items.len().div_ceil(batch));
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            pending.push_back(items.by_ref().take(batch).collect());
        }
        Batches {
            pending,
            running: JoinSet::new(),
            sizes: HashMap::new(),
            parallel: parallel.max(1),
            work,
            stop,
            lost: 0,
        }
    }

    /// Items not handed over yet (waiting or in a running batch).
    pub fn left(&self) -> usize {
        self.pending.iter().map(Vec::len).sum::<usize>() + self.sizes.values().sum::<usize>()
    }

    /// Items lost to a batch that panicked since the last call.
    pub fn take_lost(&mut self) -> usize {
        std::mem::take(&mut self.lost)
    }

    fn fill(&mut self) {
        while self.running.len() < self.parallel {
            let Some(b) = self.pending.pop_front() else {
                break;
            };
            let n = b.len();
            let h = self.running.spawn((self.work)(b));
            self.sizes.insert(h.id(), n);
        }
    }

    /// Starts batches and hands their results to `deliver` until every item is done, the
    /// `deadline` passes (batches running then go on) or the stop signal changes.
    pub async fn run(&mut self, deadline: Option<Instant>, mut deliver: impl FnMut(R)) -> Outcome {
        loop {
            if self
                .stop
                .as_mut()
                .is_some_and(|s| s.has_changed().unwrap_or(false))
            {
                return Outcome::Stopped;
            }
            self.fill();
            if self.running.is_empty() {
                return Outcome::Done;
            }
            let stop = async {
                match self.stop.as_mut() {
                    Some(s) => s.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            let expired = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                stopped = stop => {
                    if stopped {
                        return Outcome::Stopped;
                    }
                    self.stop = None;
                }
                done = self.running.join_next_with_id() => match done {
                    Some(Ok((id, results))) => {
                        self.sizes.remove(&id);
                        results.into_iter().for_each(&mut deliver);
                    }
                    Some(Err(e)) => {
                        let n = self.sizes.remove(&e.id()).unwrap_or(0);
                        self.lost += n;
                        error!(items = n, "a batch of the takeover's rebuild failed: {e}");
                    }
                    None => {}
                },
                () = expired => return Outcome::Deadline,
            }
        }
    }

    /// Stops: the waiting items are dropped (how many is returned), the running batches are
    /// awaited and their results handed to `discard`.
    pub async fn stop(&mut self, mut discard: impl FnMut(R)) -> usize {
        let dropped = self.pending.drain(..).map(|b| b.len()).sum();
        while let Some(done) = self.running.join_next_with_id().await {
            match done {
                Ok((id, results)) => {
                    self.sizes.remove(&id);
                    results.into_iter().for_each(&mut discard);
                }
                Err(e) => {
                    self.lost += self.sizes.remove(&e.id()).unwrap_or(0);
                }
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Per item, what a debug build's rebuild took (9,000 connections in 663 ms).
    const PER_ITEM: Duration = Duration::from_micros(74);

    /// A fake rebuild: sleeps (simulated time) `PER_ITEM` per item, counts the batches started.
    fn fake(started: Arc<AtomicUsize>) -> Work<u64, u64> {
        Arc::new(move |batch: Vec<u64>| {
            started.fetch_add(1, Ordering::Relaxed);
            Box::pin(async move {
                tokio::time::sleep(PER_ITEM * batch.len() as u32).await;
                batch
            })
        })
    }

    /// Items 0..n, most recent (highest) first.
    fn items(n: u64) -> Vec<u64> {
        (0..n).rev().collect()
    }

    #[tokio::test(start_paused = true)]
    async fn returns_at_the_deadline_and_finishes_after() {
        let n = 10_000;
        let started = Arc::new(AtomicUsize::new(0));
        let mut b = Batches::new(items(n), 256, 2, fake(started.clone()), None);
        let t0 = Instant::now();
        let mut got = Vec::new();
        let out = b
            .run(Some(t0 + Duration::from_millis(100)), |r| got.push(r))
            .await;
        assert_eq!(out, Outcome::Deadline);
        assert_eq!(
            t0.elapsed(),
            Duration::from_millis(100),
            "returns at the deadline"
        );
        // 100 ms of 2 × 256 × 74 µs (18.9 ms) batches: 5 rounds finished.
        assert_eq!(got.len(), 5 * 2 * 256);
        assert_eq!(b.left(), n as usize - got.len());
        // The most recent first: everything handed over is newer than everything left.
        let oldest_done = *got.iter().min().unwrap();
        assert_eq!(oldest_done, n - got.len() as u64);

        let out = b.run(None, |r| got.push(r)).await;
        assert_eq!(out, Outcome::Done);
        assert_eq!(b.left(), 0);
        got.sort_unstable();
        assert_eq!(got, (0..n).collect::<Vec<_>>(), "every item once");
        assert_eq!(started.load(Ordering::Relaxed), (n as usize).div_ceil(256));
        // Two at once: 40 batches of ≤ 18.9 ms (19 at the timer's 1 ms resolution) in 20 rounds.
        let total = t0.elapsed();
        assert!(total <= Duration::from_millis(19 * 20), "{total:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn everything_within_the_budget_is_done_before_it() {
        let mut b = Batches::new(items(1_000), 256, 4, fake(Arc::default()), None);
        let t0 = Instant::now();
        let mut n = 0;
        let out = b.run(Some(t0 + Duration::from_secs(1)), |_| n += 1).await;
        assert_eq!((out, n, b.left()), (Outcome::Done, 1_000, 0));
        assert!(
            t0.elapsed() < Duration::from_millis(20),
            "{:?}",
            t0.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_budget_starts_the_first_batches_and_returns_at_once() {
        let started = Arc::new(AtomicUsize::new(0));
        let mut b = Batches::new(items(2_000), 256, 2, fake(started.clone()), None);
        let t0 = Instant::now();
        let out = b.run(Some(t0), |_| panic!("nothing done yet")).await;
        assert_eq!((out, t0.elapsed()), (Outcome::Deadline, Duration::ZERO));
        assert_eq!(
            started.load(Ordering::Relaxed),
            2,
            "the first batches run meanwhile"
        );
        assert_eq!(b.left(), 2_000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_remainder() {
        let (tx, rx) = watch::channel(0u64);
        let started = Arc::new(AtomicUsize::new(0));
        let mut b = Batches::new(items(10_000), 256, 2, fake(started.clone()), Some(rx));
        let t0 = Instant::now();
        let mut got = 0;
        assert_eq!(
            b.run(Some(t0 + Duration::from_millis(10)), |_| got += 1)
                .await,
            Outcome::Deadline
        );
        assert_eq!(got, 0);
        // Released 30 ms later, while the remainder runs in the background.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            tx.send_modify(|n| *n += 1);
        });
        assert_eq!(b.run(None, |_| got += 1).await, Outcome::Stopped);
        assert_eq!(t0.elapsed(), Duration::from_millis(40));
        // Batches ended at 18.9 and 37.8 ms: two rounds handed over, the third is running.
        assert_eq!(got, 2 * 2 * 256);
        let mut discarded = 0;
        let dropped = b.stop(|_| discarded += 1).await;
        assert_eq!(
            discarded,
            2 * 256,
            "the running batches are awaited and discarded"
        );
        assert_eq!(dropped, 10_000 - 3 * 2 * 256);
        assert_eq!(b.left(), 0);
        assert_eq!(
            started.load(Ordering::Relaxed),
            6,
            "nothing started after the stop"
        );
        // A stop before anything ran starts nothing.
        let (tx, rx) = watch::channel(0u64);
        let started = Arc::new(AtomicUsize::new(0));
        let mut b = Batches::new(items(100), 10, 2, fake(started.clone()), Some(rx));
        tx.send_modify(|n| *n += 1);
        assert_eq!(b.run(None, |_| {}).await, Outcome::Stopped);
        assert_eq!(
            (b.stop(|_| {}).await, started.load(Ordering::Relaxed)),
            (100, 0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_signal_whose_sender_is_gone_stops_nothing() {
        let (tx, rx) = watch::channel(0u64);
        drop(tx);
        let mut b = Batches::new(items(1_000), 100, 2, fake(Arc::default()), Some(rx));
        let mut n = 0;
        assert_eq!(b.run(None, |_| n += 1).await, Outcome::Done);
        assert_eq!(n, 1_000);
    }
}
