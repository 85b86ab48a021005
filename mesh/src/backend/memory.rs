//! In-process links for tests: an instance-scoped network (never a global), with the same
//! framing code as TCP so tests exercise the real session pump.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::io::DuplexStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{
    Backend, BackendError, BackendFuture, Dialed, LinkConfig, SessionInfo, SessionSink,
    redial_loop, spawn_framed,
};

/// Bytes buffered in each direction of an in-memory connection.
const PIPE_CAPACITY: usize = 256 * 1024;

struct Incoming {
    stream: DuplexStream,
    kill: CancellationToken,
    from: String,
}

#[derive(Default)]
struct Inner {
    listeners: HashMap<String, mpsc::Sender<Incoming>>,
    /// (dialer label, listener name, kill switch) of every connection made.
    connections: Vec<(String, String, CancellationToken)>,
}

/// A set of named in-memory listeners that dialers can reach.
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for MemoryNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryNetwork").finish_non_exhaustive()
    }
}

impl MemoryNetwork {
    /// A new, empty network.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock only happens in a failing test; keep going.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A listener reachable as `name`.
    pub fn listener(&self, name: &str, link: LinkConfig) -> Listener {
        let (tx, rx) = mpsc::channel(16);
        self.lock().listeners.insert(name.to_owned(), tx);
        Listener {
            name: name.to_owned(),
            incoming: rx,
            link,
        }
    }

    /// A dialer labelled `from` that connects to the listener `to`.
    pub fn dialer(&self, from: &str, to: &str, redial: bool, link: LinkConfig) -> Dialer {
        Dialer {
            network: self.clone(),
            from: from.to_owned(),
            to: to.to_owned(),
            redial,
            link,
        }
    }

    /// Breaks every live connection from dialer `from` to listener `to`, as if the wire was
    /// cut. Returns how many were cut.
    pub fn cut(&self, from: &str, to: &str) -> usize {
        let mut inner = self.lock();
        let mut cut = 0;
        inner.connections.retain(|(f, t, kill)| {
            if f == from && t == to {
                kill.cancel();
                cut += 1;
                false
            } else {
                !kill.is_cancelled()
            }
        });
        cut
    }

    fn connect(&self, from: &str, to: &str) -> Option<(DuplexStream, CancellationToken)> {
        let mut inner = self.lock();
        let listener = inner.listeners.get(to)?.clone();
        let (client, server) = tokio::io::duplex(PIPE_CAPACITY);
        let kill = CancellationToken::new();
        listener
            .try_send(Incoming {
                stream: server,
                kill: kill.clone(),
                from: from.to_owned(),
            })
            .ok()?;
        inner
            .connections
            .push((from.to_owned(), to.to_owned(), kill.clone()));
        Some((client, kill))
    }
}

/// An in-memory listener.
#[derive(Debug)]
pub struct Listener {
    name: String,
    incoming: mpsc::Receiver<Incoming>,
    link: LinkConfig,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl Backend for Listener {
    fn run(mut self: Box<Self>, sessions: SessionSink, cancel: CancellationToken) -> BackendFuture {
        Box::pin(async move {
            let mut pumps = JoinSet::new();
            loop {
                let incoming = tokio::select! {
                    biased;
                    () = cancel.cancelled() => return Ok(()),
                    Some(_) = pumps.join_next(), if !pumps.is_empty() => continue,
                    incoming = self.incoming.recv() => match incoming {
                        Some(incoming) => incoming,
                        None => return Ok(()),
                    },
                };
                let info = SessionInfo {
                    kind: "memory",
                    remote_addr: format!("{}->{}", incoming.from, self.name),
                    link: self.link.clone(),
                };
                let (session, pump) = spawn_framed(incoming.stream, info, cancel.child_token());
                if sessions.send(session).await.is_err() {
                    return Err(BackendError::NodeGone);
                }
                let kill = incoming.kill;
                pumps.spawn(async move {
                    tokio::select! {
                        () = pump => {}
                        () = kill.cancelled() => {}
                    }
                });
            }
        })
    }
}

/// An in-memory dialer; redials with the real backoff schedule.
#[derive(Debug)]
pub struct Dialer {
    network: MemoryNetwork,
    from: String,
    to: String,
    redial: bool,
    link: LinkConfig,
}

impl Backend for Dialer {
    fn run(self: Box<Self>, sessions: SessionSink, cancel: CancellationToken) -> BackendFuture {
        Box::pin(async move {
            let address = format!("{}->{}", self.from, self.to);
            let this = &self;
            let remote = &address;
            let dial = |token: CancellationToken| async move {
                let (stream, kill) = this
                    .network
                    .connect(&this.from, &this.to)
                    .ok_or_else(|| format!("no memory listener {}", this.to))?;
                let info = SessionInfo {
                    kind: "memory",
                    remote_addr: remote.clone(),
                    link: this.link.clone(),
                };
                let (session, pump) = spawn_framed(stream, info, token);
                let pump = async move {
                    tokio::select! {
                        () = pump => {}
                        () = kill.cancelled() => {}
                    }
                };
                Ok::<Dialed, String>((session, Box::pin(pump)))
            };
            redial_loop("memory", &address, self.redial, sessions, cancel, dial).await
        })
    }
}
