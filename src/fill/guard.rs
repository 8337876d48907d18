//! Supervision of a fill task: a guard whose `Drop` ends the fill however its task ends.
//!
//! Readers wait on the fill's `watch` channel and the flight table routes every client of the
//! URL to the fill. If the task panicked or was cancelled (its future dropped) without
//! publishing an outcome, the readers would wait forever and the URL would stay joined to a
//! dead fill until restart. Like pingora-cache's `WritePermit`, which marks its lock
//! `Dangling` when dropped unfinished, the guard publishes a failure, takes the fill out of
//! the flight table and wakes every reader; its readers then abort their responses, and the
//! next request for the URL starts a new fill.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::warn;

use super::{Fill, FillError, Host, Phase};

/// Held by a running fill task from its start to its end.
pub(super) struct FillGuard<H: Host> {
    app: Arc<H>,
    fill: Arc<Fill>,
    /// The task published its outcome itself.
    settled: bool,
}

impl<H: Host> FillGuard<H> {
    /// Count the fill as in flight until the guard is dropped.
    pub(super) fn new(app: &Arc<H>, fill: &Arc<Fill>) -> FillGuard<H> {
        app.cache().metrics.inflight.inc();
        FillGuard {
            app: app.clone(),
            fill: fill.clone(),
            settled: false,
        }
    }

    /// The task has published its outcome (committed or failed) and left the flight table.
    pub(super) fn settle(mut self) {
        self.settled = true;
    }
}

impl<H: Host> Drop for FillGuard<H> {
    fn drop(&mut self) {
        if !self.settled {
            // A panic has been reported by the panic hook already; a cancellation happens at
            // shutdown.
            warn!(
                url = %self.fill.url,
                "download task ended without an outcome (panic or cancellation); failing its readers"
            );
            // Leave the table before readers learn of the failure, so that a client retrying
            // at once starts a new fill instead of joining this one.
            self.app.flights().remove(&self.fill);
            let aborted = Arc::new(FillError::Aborted {
                url: self.fill.url.to_string(),
            });
            self.fill.state.send_modify(|s| {
                // A failure already published (the task died afterwards, in its bookkeeping)
                // is the better explanation; anything else, even `Complete` whose commit
                // never happened, must not end a response cleanly.
                if !matches!(s.phase, Phase::Failed(_)) {
                    s.phase = Phase::Failed(aborted);
                }
            });
        }
        self.app.cache().metrics.inflight.dec();
        self.fill.state.send_modify(|s| s.ended = true);
        self.app.flights().finished();
    }
}

/// A test-only hook (read in debug builds only, never configurable): the next fill that
/// receives bytes after having stored at least `n` panics, as a bug in the fill would.
/// Stored as `n + 1`; 0 means off.
#[derive(Default)]
pub(super) struct PanicHook(AtomicU64);

impl PanicHook {
    pub(super) fn arm(&self, after_bytes: u64) {
        self.0
            .store(after_bytes.saturating_add(1), Ordering::SeqCst);
    }

    /// Panic if armed and `written` has reached the mark; disarms itself first (one fill).
    #[cfg(debug_assertions)]
    pub(super) fn check(&self, url: &crate::url::UpstreamUrl, written: u64) {
        let armed = self.0.load(Ordering::SeqCst);
        if armed != 0
            && written + 1 >= armed
            && self
                .0
                .compare_exchange(armed, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            panic!("test hook: the fill of {url} panics after {written} bytes");
        }
    }
}
