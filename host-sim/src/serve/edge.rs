//! The gateway's edge: what a client connection may cost before any request reaches a filter.
//!
//! Each connection's socket is wrapped in a [`TrackedIo`] that notes when a request's first byte
//! arrives (and, for a profile whose filter sees the client's header names, feeds the bytes to a
//! [`HeadRecorder`]), and the request handler notes when a request starts and ends ([`ConnectionClock`]).
//! A [`watchdog`] per connection turns those moments into the deadlines of
//! [`crate::limits::EdgeLimits`]: a connection idle too long, or slow to send a
//! request head, is closed without an answer (as nginx and Envoy do). The whole-request deadline
//! is the request handler's (it answers 408), and the connection cap is the accept loop's
//! (`accept_loop`).

use super::heads::HeadRecorder;
use crate::limits::EdgeLimits;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Where a connection is in its request cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No request in progress (just opened, or answered the last one).
    Idle = 0,
    /// Bytes of a request head arrived; the head is not complete yet.
    Head = 1,
    /// The head is complete: the handler owns the request until it answers.
    Request = 2,
}

/// The moments of one connection that its deadlines start from, shared by its socket wrapper,
/// its request handler and its watchdog.
#[derive(Debug)]
pub struct ConnectionClock {
    origin: Instant,
    phase: AtomicU8,
    /// When the current phase started, in milliseconds since `origin`.
    since_ms: AtomicU64,
    /// Requests the handler holds: one at most over HTTP/1.1, any number of streams over
    /// HTTP/2. The connection is idle only when none is left.
    in_flight: AtomicUsize,
}

impl ConnectionClock {
    fn new() -> Arc<Self> {
        Arc::new(ConnectionClock {
            origin: Instant::now(),
            phase: AtomicU8::new(Phase::Idle as u8),
            since_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Idle,
            1 => Phase::Head,
            _ => Phase::Request,
        }
    }

    fn enter(&self, phase: Phase, at_ms: u64) {
        self.since_ms.store(at_ms, Ordering::Release);
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// Bytes arrived: when the connection was idle, a request head has begun.
    fn bytes_arrived(&self) {
        if self.phase() == Phase::Idle {
            self.enter(Phase::Head, self.now_ms());
        }
    }

    /// The request head is complete and the handler has the request. Returns when its first
    /// byte arrived, which the whole-request deadline counts from.
    pub fn request_started(&self) -> Instant {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let first_byte_ms = match self.phase() {
            Phase::Head => self.since_ms.load(Ordering::Acquire),
            // Head and body arrived in one read before the wrapper saw the connection idle.
            _ => self.now_ms(),
        };
        self.enter(Phase::Request, first_byte_ms);
        self.origin + Duration::from_millis(first_byte_ms)
    }

    /// The handler answered: once it holds no other request (HTTP/2 streams), the connection
    /// is idle until the next request's first byte.
    pub fn request_finished(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) <= 1 {
            self.in_flight.store(0, Ordering::Release);
            self.enter(Phase::Idle, self.now_ms());
        }
    }
}

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Idle past `idle_timeout`.
    Idle,
    /// A request head took longer than `header_read_timeout`.
    Head,
}

/// Resolves when the connection has been idle, or slow to send a request head, for longer than
/// `limits` allow. A request in the handler's hands is never cut here.
pub async fn watchdog(clock: Arc<ConnectionClock>, limits: EdgeLimits) -> Expired {
    loop {
        let phase = clock.phase();
        let since = clock.since_ms.load(Ordering::Acquire);
        let (limit, expired) = match phase {
            Phase::Idle => (limits.idle_timeout, Expired::Idle),
            Phase::Head => (limits.header_read_timeout, Expired::Head),
            Phase::Request => {
                // Re-check once the handler is likely done; phases only move forward from here.
                tokio::time::sleep(limits.header_read_timeout.min(limits.idle_timeout)).await;
                continue;
            }
        };
        let deadline = clock.origin + Duration::from_millis(since) + limit;
        tokio::time::sleep_until(deadline).await;
        if clock.phase() == phase && clock.since_ms.load(Ordering::Acquire) == since {
            return expired;
        }
    }
}

/// A socket that tells its [`ConnectionClock`] when bytes arrive, and its [`HeadRecorder`] (if
/// any) what they are.
pub struct TrackedIo {
    inner: TcpStream,
    clock: Arc<ConnectionClock>,
    heads: Option<Arc<Mutex<HeadRecorder>>>,
}

impl TrackedIo {
    /// Wraps `inner` with a fresh clock, returned for the handler and the watchdog, and, when
    /// `record_heads`, a fresh head recorder for the handler to take each request's head from.
    pub fn new(inner: TcpStream, record_heads: bool) -> (Self, Arc<ConnectionClock>, Option<Arc<Mutex<HeadRecorder>>>) {
        let clock = ConnectionClock::new();
        let heads = record_heads.then(|| Arc::new(Mutex::new(HeadRecorder::new())));
        (
            TrackedIo {
                inner,
                clock: clock.clone(),
                heads: heads.clone(),
            },
            clock,
            heads,
        )
    }
}

impl AsyncRead for TrackedIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.clock.bytes_arrived();
            if let Some(heads) = &this.heads {
                // A poisoned lock (a panic elsewhere) only loses the wire names: hyper's view stays.
                if let Ok(mut heads) = heads.lock() {
                    if !heads.stopped() {
                        heads.observe(&buf.filled()[before..]);
                    }
                }
            }
        }
        polled
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Accepts connections while fewer than `limits.max_connections` are open: at the cap it waits
/// for one to close (the kernel's backlog queues the rest), and after a failed accept (EMFILE at
/// the open-file limit, for one) it pauses `limits.accept_error_pause` instead of retrying at
/// once, logging the first failure of each run. Each accepted socket comes with the permit that
/// holds its place; dropping the permit frees it.
pub async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
    limits: &EdgeLimits,
    failing: &mut bool,
) -> (TcpStream, std::net::SocketAddr, OwnedSemaphorePermit) {
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            // The semaphore is never closed; should it be, wait as if full.
            std::future::pending::<()>().await;
            continue;
        };
        match listener.accept().await {
            Ok((stream, peer)) => {
                if *failing {
                    *failing = false;
                    tracing::info!("accepting connections again");
                }
                return (stream, peer, permit);
            }
            Err(e) => {
                drop(permit);
                if !*failing {
                    *failing = true;
                    tracing::warn!(
                        "cannot accept a connection ({e}); pausing the listener {:?} between attempts (connections open: {})",
                        limits.accept_error_pause,
                        limits.max_connections - slots.available_permits()
                    );
                }
                tokio::time::sleep(limits.accept_error_pause).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Short limits; every wait below is bounded by [`BOUND`], never asserted as a duration.
    fn limits() -> EdgeLimits {
        EdgeLimits {
            header_read_timeout: Duration::from_millis(40),
            idle_timeout: Duration::from_millis(60),
            ..EdgeLimits::default()
        }
    }

    const BOUND: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn an_idle_connection_expires_as_idle() {
        let clock = ConnectionClock::new();
        let expired = tokio::time::timeout(BOUND, watchdog(clock, limits())).await;
        assert_eq!(expired.ok(), Some(Expired::Idle));
    }

    #[tokio::test]
    async fn a_started_head_expires_as_a_slow_head() {
        let clock = ConnectionClock::new();
        clock.bytes_arrived();
        let expired = tokio::time::timeout(BOUND, watchdog(clock, limits())).await;
        assert_eq!(expired.ok(), Some(Expired::Head));
    }

    #[tokio::test]
    async fn a_request_in_progress_is_never_cut_and_idleness_restarts_at_its_answer() {
        let clock = ConnectionClock::new();
        clock.bytes_arrived();
        clock.request_started();
        let watch = tokio::spawn(watchdog(clock.clone(), limits()));
        // Many times both limits: the handler still has the request, so nothing expires.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!watch.is_finished(), "cut while the handler had the request");
        clock.request_finished();
        let expired = tokio::time::timeout(BOUND, watch).await;
        assert_eq!(expired.ok().and_then(Result::ok), Some(Expired::Idle));
    }

    #[test]
    fn the_whole_request_deadline_counts_from_the_first_byte_of_the_head() {
        let clock = ConnectionClock::new();
        clock.enter(Phase::Head, 7);
        let first_byte = clock.request_started();
        assert_eq!(first_byte, clock.origin + Duration::from_millis(7));
        assert_eq!(clock.phase(), Phase::Request);
    }

    #[test]
    fn more_bytes_of_the_same_head_do_not_move_its_start() {
        let clock = ConnectionClock::new();
        clock.enter(Phase::Idle, 0);
        clock.bytes_arrived();
        let first = clock.since_ms.load(Ordering::Acquire);
        std::thread::sleep(Duration::from_millis(5));
        clock.bytes_arrived();
        assert_eq!(clock.since_ms.load(Ordering::Acquire), first);
        assert_eq!(clock.phase(), Phase::Head);
    }
}
