//! The TCP relay: copies bytes both ways between the client and the member connection in one
//! task, with half-close, an idle timeout and bounded buffers.
//!
//! - Each direction uses one buffer of [`BUF`] bytes, taken from a per-worker pool when that
//!   direction has something to read and given back as soon as it is empty again: an idle
//!   connection holds no buffer, and a connection never holds more than `2 × BUF` bytes however
//!   fast one side sends and however slowly the other reads (back-pressure is the kernel's
//!   socket buffers).
//! - Half-close (RFC 9293 §3.6): end of stream from one side is passed on as `shutdown(SHUT_WR)`
//!   to the other once everything read before it was written; the other direction goes on
//!   until it ends too.
//! - Idle timeout: no byte either way for that long ends the relay. The timer is re-armed only
//!   when it fires, not at every read.
//! - A reset or error on either side ends the relay; the caller resets the other side.
//!
//! Byte counts are added per chunk to the sinks given (virtual server, member, connection
//! record).

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::tables::{now_ms, LiveConn};

/// Buffer size per direction.
pub const BUF: usize = 16 * 1024;

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEnd {
    /// Both sides closed their direction.
    Closed,
    /// Nothing moved for the idle timeout.
    Idle,
}

/// Byte-count sinks for one direction.
pub struct Sinks<'a> {
    pub counters: [&'a AtomicU64; 3],
}

impl<'a> Sinks<'a> {
    /// A connection's sinks, client → member then member → client: the virtual server's,
    /// the member's and the connection record's byte counters.
    pub fn for_conn(
        vs: &'a crate::state::Counters,
        member: &'a crate::state::Counters,
        live: &'a LiveConn,
    ) -> (Sinks<'a>, Sinks<'a>) {
        (
            Sinks {
                counters: [&vs.bytes_in, &member.bytes_in, &live.bytes_in],
            },
            Sinks {
                counters: [&vs.bytes_out, &member.bytes_out, &live.bytes_out],
            },
        )
    }

    /// Counts `n` bytes moved outside the relay (what was read to choose the member).
    pub fn add(&self, n: u64) {
        for c in self.counters {
            c.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

thread_local! {
    /// Spare relay buffers of this worker thread: a connection takes one when it first has
    /// something to read and gives it back when it ends, so the common short connection
    /// costs neither an allocation nor zeroing. At most [`POOL_MAX`] are kept.
    static POOL: std::cell::RefCell<Vec<Box<[MaybeUninit<u8>]>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Most spare buffers kept per worker thread (4 MiB).
const POOL_MAX: usize = 256;

fn take_buf() -> Box<[MaybeUninit<u8>]> {
    POOL.with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| Box::new_uninit_slice(BUF))
}

fn give_buf(b: Box<[MaybeUninit<u8>]>) {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_MAX {
            p.push(b);
        }
    });
}

struct Half {
    /// Bytes `start..end` are initialized (read from the socket) and not yet written.
    buf: Option<Box<[MaybeUninit<u8>]>>,
    start: usize,
    end: usize,
    read_done: bool,
    shut: bool,
}

impl Half {
    fn new() -> Self {
        Half {
            buf: None,
            start: 0,
            end: 0,
            read_done: false,
            shut: false,
        }
    }

    fn done(&self) -> bool {
        self.shut
    }

    /// Read end of stream and wrote out everything before it.
    fn drained(&self) -> bool {
        self.read_done && self.start == self.end
    }

    /// Moves what it can from `from` to `to`. Ready(Ok(true)) when the direction is finished;
    /// Ready(Ok(false)) when progress was made (poll again); Pending otherwise.
    fn poll_copy(
        &mut self,
        cx: &mut Context<'_>,
        mut from: Pin<&mut TcpStream>,
        mut to: Pin<&mut TcpStream>,
        sinks: &Sinks<'_>,
        moved: &mut bool,
        shutdown: bool,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.shut {
                return Poll::Ready(Ok(()));
            }
            // Write out what is buffered.
            while self.start < self.end {
                let buf = self.buf.as_ref().expect("buffer when data");
                // SAFETY: bytes start..end were filled by a read (ReadBuf tracks it).
                let data = unsafe {
                    std::slice::from_raw_parts(
                        buf[self.start..].as_ptr().cast::<u8>(),
                        self.end - self.start,
                    )
                };
                let n = ready!(to.as_mut().poll_write(cx, data))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.start += n;
            }
            self.start = 0;
            self.end = 0;
            if self.read_done {
                if !shutdown {
                    // The caller decides whether end of stream is passed on (it is not when
                    // both directions ended: closing says it all).
                    return Poll::Ready(Ok(()));
                }
                ready!(to.as_mut().poll_shutdown(cx))?;
                self.shut = true;
                return Poll::Ready(Ok(()));
            }
            // Read more: wait for readiness before taking a buffer.
            if self.buf.is_none() {
                ready!(from.poll_read_ready(cx))?;
                self.buf = Some(take_buf());
            }
            let buf = self.buf.as_mut().expect("allocated");
            let mut rb = ReadBuf::uninit(buf);
            if from.as_mut().poll_read(cx, &mut rb)?.is_pending() {
                // Nothing to read and nothing buffered: an idle direction holds no buffer.
                if let Some(b) = self.buf.take() {
                    give_buf(b);
                }
                return Poll::Pending;
            }
            let n = rb.filled().len();
            if n == 0 {
                self.read_done = true;
            } else {
                self.end = n;
                for c in sinks.counters {
                    c.fetch_add(n as u64, Ordering::Relaxed);
                }
                *moved = true;
            }
        }
    }
}

/// The relay future.
pub struct Relay<'a> {
    client: &'a mut TcpStream,
    server: &'a mut TcpStream,
    up: Half,
    down: Half,
    up_sinks: Sinks<'a>,
    down_sinks: Sinks<'a>,
    live: &'a LiveConn,
    idle: Duration,
    last: Instant,
    timer: Pin<Box<Sleep>>,
}

/// Relays between `client` and `server` until both directions end, either side fails, or
/// nothing moves for `idle`.
pub fn relay<'a>(
    client: &'a mut TcpStream,
    server: &'a mut TcpStream,
    up_sinks: Sinks<'a>,
    down_sinks: Sinks<'a>,
    live: &'a LiveConn,
    idle: Duration,
) -> Relay<'a> {
    let now = Instant::now();
    Relay {
        client,
        server,
        up: Half::new(),
        down: Half::new(),
        up_sinks,
        down_sinks,
        live,
        idle,
        last: now,
        timer: Box::pin(tokio::time::sleep_until(now + idle)),
    }
}

impl Future for Relay<'_> {
    type Output = io::Result<RelayEnd>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut moved = false;
        // First pass: move data, without passing end of stream on yet.
        for shutdown in [false, true] {
            if !this.up.done() {
                let r = this.up.poll_copy(
                    cx,
                    Pin::new(&mut *this.client),
                    Pin::new(&mut *this.server),
                    &this.up_sinks,
                    &mut moved,
                    shutdown,
                );
                if let Poll::Ready(Err(e)) = r {
                    return Poll::Ready(Err(e));
                }
            }
            if !this.down.done() {
                let r = this.down.poll_copy(
                    cx,
                    Pin::new(&mut *this.server),
                    Pin::new(&mut *this.client),
                    &this.down_sinks,
                    &mut moved,
                    shutdown,
                );
                if let Poll::Ready(Err(e)) = r {
                    return Poll::Ready(Err(e));
                }
            }
            // Both sides ended and everything was written: closing both sockets passes the
            // ends on; no shutdown(2) needed.
            if (this.up.done() || this.up.drained()) && (this.down.done() || this.down.drained()) {
                return Poll::Ready(Ok(RelayEnd::Closed));
            }
        }
        if moved {
            this.last = Instant::now();
            this.live.touch(now_ms());
        }
        // Idle check: re-arm to last activity + idle until it really expires.
        loop {
            match this.timer.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => {
                    let deadline = this.last + this.idle;
                    if Instant::now() >= deadline {
                        return Poll::Ready(Ok(RelayEnd::Idle));
                    }
                    this.timer.as_mut().reset(deadline);
                }
            }
        }
    }
}

impl Drop for Half {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            give_buf(b);
        }
    }
}
