//! A fill's progress as plain atomics, for the status page: the byte path stores into them
//! and the page loads them, so neither ever waits for the other (the fill's `watch` channel,
//! which readers follow, has a lock).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use super::{Fill, Phase};

const UNKNOWN: u64 = u64::MAX;
const CONNECTING: u8 = 0;
const STREAMING: u8 = 1;
const VERIFIED: u8 = 2;

pub(super) struct Live {
    written: AtomicU64,
    /// Declared length, [`UNKNOWN`] until the headers say (or if they never do).
    total: AtomicU64,
    /// [`CONNECTING`], [`STREAMING`] or [`VERIFIED`].
    phase: AtomicU8,
    /// Clients receiving this download's bytes now.
    readers: AtomicUsize,
    started: Instant,
}

/// One download in progress as the status page shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InFlight {
    /// The upstream URL, as shown (credentials redacted).
    pub url: String,
    /// `connecting` (waiting for upstream's headers or for a slot), `streaming`, or
    /// `verified` (every byte in and checked, being committed).
    pub phase: &'static str,
    /// Bytes received so far.
    pub bytes: u64,
    /// The declared length, if upstream sent one.
    pub total: Option<u64>,
    /// Clients receiving its bytes now (the one that started it included).
    pub clients: usize,
    /// Seconds since it started.
    pub seconds: u64,
}

impl Live {
    pub(super) fn new() -> Live {
        Live {
            written: AtomicU64::new(0),
            total: AtomicU64::new(UNKNOWN),
            phase: AtomicU8::new(CONNECTING),
            readers: AtomicUsize::new(0),
            started: Instant::now(),
        }
    }

    pub(super) fn phase(&self, phase: &Phase) {
        let (code, head) = match phase {
            Phase::Connecting => (CONNECTING, None),
            Phase::Streaming(head) => (STREAMING, Some(head)),
            Phase::Complete { head, .. } => (VERIFIED, Some(head)),
            // A failed fill has left the flight table already.
            Phase::Failed(_) => return,
        };
        if let Some(head) = head {
            let total = head.content_length.unwrap_or(UNKNOWN);
            self.total.store(total, Ordering::Relaxed);
        }
        self.phase.store(code, Ordering::Relaxed);
    }

    pub(super) fn wrote(&self, written: u64) {
        self.written.store(written, Ordering::Relaxed);
    }

    pub(super) fn progress(&self, url: String) -> InFlight {
        InFlight {
            url,
            phase: match self.phase.load(Ordering::Relaxed) {
                CONNECTING => "connecting",
                STREAMING => "streaming",
                _ => "verified",
            },
            bytes: self.written.load(Ordering::Relaxed),
            total: Some(self.total.load(Ordering::Relaxed)).filter(|t| *t != UNKNOWN),
            clients: self.readers.load(Ordering::Relaxed),
            seconds: self.started.elapsed().as_secs(),
        }
    }
}

/// Counts a reader of a fill for as long as it lives.
pub(super) struct Reader(Arc<Fill>);

impl Reader {
    pub(super) fn new(fill: Arc<Fill>) -> Reader {
        fill.live.readers.fetch_add(1, Ordering::Relaxed);
        Reader(fill)
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.live.readers.fetch_sub(1, Ordering::Relaxed);
    }
}
