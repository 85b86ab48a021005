//! File-change notification for unit directories: ONE inotify instance per engine, watching
//! the directories of units someone is waiting on (a running unit's status monitor, result
//! streams), and routing each event to that directory's waiters. This replaces per-unit
//! timers (a stat of `status` every 250 ms per running unit, result streams re-reading
//! `stdout` every few ms): an idle unit costs nothing, and a change is seen at once, whoever
//! wrote it (our command-runner processes, a runner left from before a restart, our own
//! remote fetcher).
//!
//! Built on `rustix`'s inotify (already a dependency) and tokio's `AsyncFd`, so no extra
//! crate and no extra thread. When inotify is unavailable (no runtime, `inotify_init`
//! refused) or a directory cannot be watched (the `max_user_watches` limit), waiters fall
//! back to a poll, logged once; a slow safety-net timer also covers watched directories in
//! case an event is ever missed.

use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A watched directory is re-checked this often even without events (a safety net).
pub(crate) const SAFETY_NET: Duration = Duration::from_secs(5);
/// A directory inotify cannot watch is polled this often.
pub(crate) const UNWATCHED_POLL: Duration = Duration::from_secs(1);
/// Bytes of events read at once (an event is 16 bytes plus the padded name).
const EVENT_BUFFER: usize = 16 * 1024;
/// Files whose changes matter to waiters (the lock and stdin do not).
const INTERESTING: [&[u8]; 2] = [b"status", b"stdout"];

/// Logged once per process: we fell back to polling.
static DEGRADED_LOGGED: AtomicBool = AtomicBool::new(false);

fn degraded(why: &str, error: &dyn std::fmt::Display) {
    if !DEGRADED_LOGGED.swap(true, Ordering::Relaxed) {
        tracing::warn!(%error, "{why}; work unit files are polled every {}s instead (logged once)", UNWATCHED_POLL.as_secs());
    }
}

/// Registers a descriptor we own with the runtime. Tokio deprecated its safe constructors
/// (RUSTSEC-2026-0386) because they accept any `AsRawFd`, including descriptors the caller
/// does not own; its replacement is `unsafe`, which this workspace forbids. An `OwnedFd`
/// moved in here is owned by the `AsyncFd` for its whole life and never changes, which is
/// exactly the condition the safe use needs.
#[allow(deprecated)]
pub(crate) fn register(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    AsyncFd::new(fd)
}

/// The engine's watcher: a cheap handle.
#[derive(Debug, Clone, Default)]
pub(crate) struct DirWatcher {
    shared: Option<Arc<Shared>>,
}

#[derive(Debug)]
struct Shared {
    fd: AsyncFd<OwnedFd>,
    dirs: Mutex<Dirs>,
}

#[derive(Debug, Default)]
struct Dirs {
    by_wd: HashMap<i32, Entry>,
    wd_of: HashMap<PathBuf, i32>,
}

#[derive(Debug)]
struct Entry {
    path: PathBuf,
    /// Bumped at every interesting event; waiters hold receivers.
    tx: watch::Sender<u64>,
    users: usize,
}

impl DirWatcher {
    /// One inotify instance whose event loop runs under `tracker` until `cancel` fires.
    /// Without a tokio runtime or inotify, a watcher that only polls.
    pub(crate) fn new(tracker: &TaskTracker, cancel: &CancellationToken) -> Self {
        if tokio::runtime::Handle::try_current().is_err() {
            return Self::default();
        }
        let fd = match inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK) {
            Ok(fd) => fd,
            Err(error) => {
                degraded("inotify is unavailable", &error);
                return Self::default();
            }
        };
        let fd = match register(fd) {
            Ok(fd) => fd,
            Err(error) => {
                degraded("inotify cannot be registered with the runtime", &error);
                return Self::default();
            }
        };
        let shared = Arc::new(Shared {
            fd,
            dirs: Mutex::new(Dirs::default()),
        });
        let events = Arc::clone(&shared);
        let cancel = cancel.clone();
        tracker.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = event_loop(&events) => {}
            }
        });
        Self {
            shared: Some(shared),
        }
    }

    /// Starts following changes to `status` and `stdout` in `dir`, until the returned
    /// guard is dropped.
    pub(crate) fn watch(&self, dir: &Path) -> DirWatch {
        let Some(shared) = &self.shared else {
            return DirWatch::unwatched();
        };
        let mut dirs = shared.dirs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&wd) = dirs.wd_of.get(dir)
            && let Some(entry) = dirs.by_wd.get_mut(&wd)
        {
            entry.users += 1;
            return DirWatch {
                rx: Some(entry.tx.subscribe()),
                wd,
                shared: Some(Arc::clone(shared)),
            };
        }
        let flags = WatchFlags::MODIFY
            | WatchFlags::CLOSE_WRITE
            | WatchFlags::MOVED_TO
            | WatchFlags::CREATE
            | WatchFlags::ONLYDIR;
        let wd = match inotify::add_watch(shared.fd.get_ref(), dir, flags) {
            Ok(wd) => wd,
            Err(rustix::io::Errno::NOENT) => return DirWatch::unwatched(),
            Err(error) => {
                degraded(
                    "cannot watch a work unit directory (inotify watch limit?)",
                    &error,
                );
                return DirWatch::unwatched();
            }
        };
        // The same directory under another name yields the same watch descriptor.
        let entry = dirs.by_wd.entry(wd).or_insert_with(|| Entry {
            path: dir.to_owned(),
            tx: watch::Sender::new(0),
            users: 0,
        });
        entry.users += 1;
        let rx = entry.tx.subscribe();
        dirs.wd_of.insert(dir.to_owned(), wd);
        DirWatch {
            rx: Some(rx),
            wd,
            shared: Some(Arc::clone(shared)),
        }
    }
}

/// Reads events and wakes the waiters of their directories.
async fn event_loop(shared: &Shared) {
    let mut buf = vec![MaybeUninit::<u8>::uninit(); EVENT_BUFFER];
    loop {
        let Ok(mut ready) = shared.fd.readable().await else {
            return;
        };
        let mut hits: Vec<i32> = Vec::new();
        let mut gone: Vec<i32> = Vec::new();
        let mut overflow = false;
        let read = ready.try_io(|fd| -> std::io::Result<()> {
            let mut reader = inotify::Reader::new(fd.get_ref(), &mut buf);
            loop {
                match reader.next() {
                    Ok(event) => {
                        let flags = event.events();
                        if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
                            overflow = true;
                        } else if flags.contains(ReadFlags::IGNORED) {
                            gone.push(event.wd());
                        } else if event
                            .file_name()
                            .is_none_or(|name| INTERESTING.contains(&name.to_bytes()))
                        {
                            hits.push(event.wd());
                        }
                    }
                    Err(rustix::io::Errno::AGAIN) => {
                        return Err(std::io::ErrorKind::WouldBlock.into());
                    }
                    Err(error) => return Err(std::io::Error::from(error)),
                }
            }
        });
        if let Ok(Err(error)) = read {
            tracing::error!(%error, "reading inotify events failed; work unit files are polled from now on");
            let mut dirs = shared.dirs.lock().unwrap_or_else(|e| e.into_inner());
            // Dropping the senders sends every waiter to its fallback poll.
            dirs.by_wd.clear();
            dirs.wd_of.clear();
            return;
        }
        let mut dirs = shared.dirs.lock().unwrap_or_else(|e| e.into_inner());
        if overflow {
            // Events were lost: wake everyone, each re-checks its files.
            for entry in dirs.by_wd.values() {
                entry.tx.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
        hits.dedup();
        for wd in hits {
            if let Some(entry) = dirs.by_wd.get(&wd) {
                entry.tx.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
        // The directory was deleted (or unwatched): its waiters fall back to polling.
        for wd in gone {
            if let Some(entry) = dirs.by_wd.remove(&wd) {
                dirs.wd_of.remove(&entry.path);
            }
        }
    }
}

/// Waiting for changes in one unit directory. Use: [`DirWatch::mark_seen`], look at the
/// files, then [`DirWatch::changed`]; a change in between is never missed.
#[derive(Debug)]
pub(crate) struct DirWatch {
    rx: Option<watch::Receiver<u64>>,
    wd: i32,
    shared: Option<Arc<Shared>>,
}

impl DirWatch {
    fn unwatched() -> Self {
        Self {
            rx: None,
            wd: -1,
            shared: None,
        }
    }

    /// Everything up to now has been seen.
    pub(crate) fn mark_seen(&mut self) {
        if let Some(rx) = &mut self.rx {
            rx.borrow_and_update();
        }
    }

    /// Waits for a change since [`DirWatch::mark_seen`], or the safety-net (or fallback
    /// poll) period.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub(crate) async fn changed(&mut self) {
        match &mut self.rx {
            Some(rx) => {
                tokio::select! {
                    changed = rx.changed() => {
                        if changed.is_err() {
                            // No longer watched (directory deleted, inotify failed).
                            self.rx = None;
                            tokio::time::sleep(UNWATCHED_POLL).await;
                        }
                    }
                    () = tokio::time::sleep(SAFETY_NET) => {}
                }
            }
            None => tokio::time::sleep(UNWATCHED_POLL).await,
        }
    }
}

impl Drop for DirWatch {
    fn drop(&mut self) {
        let Some(shared) = &self.shared else { return };
        let mut dirs = shared.dirs.lock().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = dirs.by_wd.get_mut(&self.wd) else {
            return;
        };
        entry.users = entry.users.saturating_sub(1);
        if entry.users == 0
            && let Some(entry) = dirs.by_wd.remove(&self.wd)
        {
            dirs.wd_of.remove(&entry.path);
            // Fails harmlessly when the directory is already gone.
            let _ = inotify::remove_watch(shared.fd.get_ref(), self.wd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_by_anyone_wakes_the_waiters_of_that_directory_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (one, two) = (dir.path().join("one"), dir.path().join("two"));
        std::fs::create_dir(&one).expect("mkdir");
        std::fs::create_dir(&two).expect("mkdir");
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        let watcher = DirWatcher::new(&tracker, &cancel);
        assert!(watcher.shared.is_some(), "inotify unavailable here");
        let mut a = watcher.watch(&one);
        let mut b = watcher.watch(&two);
        let mut a2 = watcher.watch(&one);
        a.mark_seen();
        b.mark_seen();
        a2.mark_seen();
        // A separate process writes, as command runners do.
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("echo hi >> {}/stdout", one.display()))
            .status()
            .expect("sh");
        assert!(status.success());
        let woke = tokio::time::timeout(SAFETY_NET / 2, async {
            a.rx.as_mut().expect("watched").changed().await
        })
        .await;
        assert!(matches!(woke, Ok(Ok(()))), "no wake-up: {woke:?}");
        assert!(
            a2.rx
                .as_mut()
                .expect("watched")
                .has_changed()
                .unwrap_or(false)
        );
        assert!(
            !b.rx
                .as_mut()
                .expect("watched")
                .has_changed()
                .unwrap_or(true)
        );
        // The lock file is not interesting.
        b.mark_seen();
        std::fs::write(two.join("status.lock"), b"").expect("write");
        std::fs::write(two.join("status"), b"{}").expect("write");
        let woke = tokio::time::timeout(SAFETY_NET / 2, async {
            b.rx.as_mut().expect("watched").changed().await
        })
        .await;
        assert!(matches!(woke, Ok(Ok(()))));
        // The last guard removes the watch.
        drop(a);
        drop(a2);
        let shared = watcher.shared.as_ref().expect("watched");
        assert_eq!(shared.dirs.lock().expect("lock").by_wd.len(), 1);
        drop(b);
        assert!(shared.dirs.lock().expect("lock").by_wd.is_empty());
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
    }
}
