//! Making room on a full listener by closing the connection that has been idle the longest.
//!
//! Control sessions and gRPC connections are capped ([`crate::control::MAX_SESSIONS`],
//! [`crate::grpc::MAX_CONNECTIONS`]). A cap alone lets a client that opens that many
//! connections and then says nothing lock every other client out for good (Go has no cap and
//! no idle timeout, so it has neither the bound nor the lock-out). So when the cap is reached,
//! the connection that has been idle the longest — a control session waiting for its next
//! command line or its TLS handshake, a gRPC connection that has sent nothing for the longest
//! time (its client sends at least HTTP/2 ping acks every 30 s while it lives) — is closed to
//! make room for the new one. A control session running a command or a stream is never
//! chosen, and nothing is closed while there is room.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a new connection waits for the evicted one to give its slot back.
const EVICT_WAIT: Duration = Duration::from_secs(2);
/// How long a connection must have been idle to be closed for a newcomer: a client that
/// has just connected (its command may be in the socket already) is not idle, merely not
/// served yet.
const MIN_IDLE: Duration = Duration::from_secs(1);

/// The connections of one capped listener (or server) that may be closed to make room.
#[derive(Debug, Clone)]
pub(crate) struct IdleConnections {
    inner: Arc<Mutex<Registry>>,
    epoch: Instant,
}

#[derive(Debug, Default)]
struct Registry {
    next: u64,
    entries: HashMap<u64, Candidate>,
}

#[derive(Debug)]
struct Candidate {
    /// Milliseconds since `epoch` of the last sign of life.
    active: Arc<AtomicU64>,
    /// Closes the connection.
    close: CancellationToken,
}

impl Default for IdleConnections {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            epoch: Instant::now(),
        }
    }
}

impl IdleConnections {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Marks a connection as idle (closable through `close`) until the returned guard is
    /// dropped; [`Idle::touch`] records activity meanwhile.
    pub(crate) fn enter(&self, close: CancellationToken) -> Idle {
        let active = Arc::new(AtomicU64::new(self.now_ms()));
        let id = match self.inner.lock() {
            Ok(mut registry) => {
                let id = registry.next;
                registry.next += 1;
                registry.entries.insert(
                    id,
                    Candidate {
                        active: Arc::clone(&active),
                        close,
                    },
                );
                Some(id)
            }
            Err(_) => None,
        };
        Idle {
            owner: self.clone(),
            id,
            active,
        }
    }

    /// Closes the connection idle the longest; false if none is idle.
    fn evict_oldest(&self) -> bool {
        let Ok(mut registry) = self.inner.lock() else {
            return false;
        };
        let idle_since = self
            .now_ms()
            .saturating_sub(u64::try_from(MIN_IDLE.as_millis()).unwrap_or(u64::MAX));
        let oldest = registry
            .entries
            .iter()
            .map(|(id, c)| (c.active.load(Ordering::Relaxed), *id))
            .filter(|(active, _)| *active <= idle_since)
            .min()
            .map(|(_, id)| id);
        let Some(candidate) = oldest.and_then(|id| registry.entries.remove(&id)) else {
            return false;
        };
        candidate.close.cancel();
        true
    }

    /// A slot of `limit`: a free one, else the one of the connection idle the longest (at
    /// least [`MIN_IDLE`]), which is closed now and gives its slot back shortly
    /// ([`Slot::ready`]). `None` when every connection is busy. Never waits.
    pub(crate) fn reserve(&self, limit: &Arc<Semaphore>) -> Option<Slot> {
        if let Ok(permit) = Arc::clone(limit).try_acquire_owned() {
            return Some(Slot::Free(permit));
        }
        if !self.evict_oldest() {
            return None;
        }
        tracing::debug!("listener full: closed the connection idle the longest");
        // Queue for the slot now, before the closed connection gives it back: the semaphore
        // hands released slots to queued waiters first, so a later arrival cannot take it.
        let mut wait: Acquire = Box::pin(Arc::clone(limit).acquire_owned());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match wait.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(Ok(permit)) => Some(Slot::Free(permit)),
            std::task::Poll::Ready(Err(_closed)) => None,
            std::task::Poll::Pending => Some(Slot::Freeing(wait)),
        }
    }
}

impl IdleConnections {
    /// [`Self::reserve`], or else the first slot to come free: an accept loop that waits
    /// here stops accepting, so the kernel queues new clients (back-pressure) instead of the
    /// daemon refusing them while it is merely busy.
    pub(crate) async fn reserve_or_wait(&self, limit: &Arc<Semaphore>) -> Option<Slot> {
        loop {
            if let Some(slot) = self.reserve(limit) {
                return Some(slot);
            }
            // Until a connection ends, or one has been idle long enough to be closed.
            tokio::select! {
                permit = Arc::clone(limit).acquire_owned() => return permit.ok().map(Slot::Free),
                () = tokio::time::sleep(MIN_IDLE / 4) => {}
            }
        }
    }
}

/// A queued wait for a slot.
type Acquire =
    Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, tokio::sync::AcquireError>> + Send>>;

/// A reserved slot (see [`IdleConnections::reserve`]).
pub(crate) enum Slot {
    /// Taken.
    Free(OwnedSemaphorePermit),
    /// Being given back by a connection that was just closed (first in the queue for it).
    Freeing(Acquire),
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Free(_) => "Slot::Free",
            Self::Freeing(_) => "Slot::Freeing",
        })
    }
}

impl Slot {
    /// Whether the slot is already held (not waiting for a closed connection to let go).
    pub(crate) fn is_free(&self) -> bool {
        matches!(self, Self::Free(_))
    }

    /// The slot's permit, once it is free; `None` if the closed connection did not let go in
    /// time.
    pub(crate) async fn ready(self) -> Option<OwnedSemaphorePermit> {
        match self {
            Self::Free(permit) => Some(permit),
            Self::Freeing(wait) => tokio::time::timeout(EVICT_WAIT, wait).await.ok()?.ok(),
        }
    }
}

/// A connection's registration as idle; dropping it makes the connection busy (unclosable).
#[derive(Debug)]
pub(crate) struct Idle {
    owner: IdleConnections,
    id: Option<u64>,
    active: Arc<AtomicU64>,
}

impl Idle {
    /// Records activity: the connection moves to the back of the eviction order.
    pub(crate) fn touch(&self) {
        self.active.store(self.owner.now_ms(), Ordering::Relaxed);
    }
}

impl Drop for Idle {
    fn drop(&mut self) {
        if let Some(id) = self.id
            && let Ok(mut registry) = self.owner.inner.lock()
        {
            registry.entries.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_longest_idle_connection_makes_room() {
        let idle = IdleConnections::default();
        let limit = Arc::new(Semaphore::new(2));
        let first = CancellationToken::new();
        let second = CancellationToken::new();
        let held_first = idle
            .reserve(&limit)
            .and_then(|s| s.ready().now_or_never())
            .flatten();
        let entry_first = idle.enter(first.clone());
        tokio::time::advance(Duration::from_secs(1)).await;
        let held_second = idle
            .reserve(&limit)
            .and_then(|s| s.ready().now_or_never())
            .flatten();
        let entry_second = idle.enter(second.clone());
        assert!(held_first.is_some() && held_second.is_some());
        // The older one was active more recently: the other one goes.
        tokio::time::advance(Duration::from_secs(1)).await;
        entry_first.touch();
        let third = idle.reserve(&limit);
        assert!(matches!(third, Some(Slot::Freeing(_))));
        assert!(second.is_cancelled() && !first.is_cancelled());
        // The closed connection gives its slot back; a later arrival cannot take it first.
        drop(entry_second);
        drop(held_second);
        assert!(Arc::clone(&limit).try_acquire_owned().is_err());
        let held_third = match third {
            Some(slot) => slot.ready().await,
            None => None,
        };
        assert!(held_third.is_some());
        // Busy connections are never closed: with nothing idle, a new one is refused.
        drop(entry_first);
        assert!(idle.reserve(&limit).is_none());
        assert!(!first.is_cancelled());
        // Waiting: a connection that turns idle (long enough) makes room, then the slot is
        // taken over.
        let waiter = tokio::spawn({
            let idle = idle.clone();
            let limit = Arc::clone(&limit);
            async move { idle.reserve_or_wait(&limit).await.is_some() }
        });
        let entry_first = idle.enter(first.clone());
        tokio::time::sleep(MIN_IDLE / 2).await;
        assert!(
            !first.is_cancelled(),
            "closed before it was idle long enough"
        );
        first.cancelled().await;
        drop(entry_first);
        drop(held_first);
        assert!(waiter.await.unwrap_or(false));
    }
}
