//! The downloads in progress: one [`Fill`] per URL, joined by every request for it.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

use super::{Fill, FillState, InFlight, Phase, guard};
use crate::error::Error;
use crate::store::{StoreError, TempBlob};
use crate::url::UpstreamUrl;

/// The downloads in progress, by normalized URL.
#[derive(Default)]
pub struct Flights {
    map: Mutex<HashMap<String, Arc<Fill>>>,
    /// Fill tasks not yet finished (a fill leaves `map` before its last bookkeeping).
    running: std::sync::atomic::AtomicUsize,
    /// Signalled whenever a fill task finishes.
    ended: tokio::sync::Notify,
    pub(super) panic_hook: guard::PanicHook,
}

/// What [`Flights::join_or_start`] found; `Temp` is the new fill's temp file (or `()` once the
/// fill task owns it).
pub enum Flight<T, Temp = TempBlob> {
    Joined(Arc<Fill>),
    Started(Arc<Fill>, Temp),
    /// `check` found the URL already stored (a fill committed while we looked).
    Stored(T),
}

impl Flights {
    /// Join the fill of `url`, or, if there is none and `check` (run under the lock, so no fill
    /// can commit between it and our decision) finds nothing stored, register a new one.
    pub fn join_or_start<T>(
        &self,
        url: &UpstreamUrl,
        check: impl FnOnce() -> Result<Option<T>, Error>,
        temp: impl FnOnce() -> Result<TempBlob, StoreError>,
    ) -> Result<Flight<T>, Error> {
        let mut map = self.map.lock();
        if let Some(fill) = map.get(url.as_str()) {
            return Ok(Flight::Joined(fill.clone()));
        }
        if let Some(stored) = check()? {
            return Ok(Flight::Stored(stored));
        }
        let temp = temp()?;
        let fill = Arc::new(Fill {
            url: url.clone(),
            state: watch::Sender::new(FillState {
                phase: Phase::Connecting,
                written: 0,
                ended: false,
            }),
            file: temp.file().clone(),
            temp_path: temp.path().to_owned(),
            live: super::live::Live::new(),
        });
        map.insert(url.as_str().to_owned(), fill.clone());
        self.running
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Flight::Started(fill, temp))
    }

    pub(super) fn remove(&self, fill: &Arc<Fill>) {
        let mut map = self.map.lock();
        if map
            .get(fill.url.as_str())
            .is_some_and(|f| Arc::ptr_eq(f, fill))
        {
            map.remove(fill.url.as_str());
        }
    }

    /// Temp files of fills in progress.
    pub fn temp_paths(&self) -> std::collections::HashSet<std::path::PathBuf> {
        self.map
            .lock()
            .values()
            .map(|f| f.temp_path.clone())
            .collect()
    }

    /// A fill task has done everything it will do.
    pub(super) fn finished(&self) {
        self.running
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.ended.notify_waiters();
    }

    /// Wait until every fill task has finished, bookkeeping included (tests, shutdown).
    pub async fn wait_idle(&self) {
        loop {
            let ended = self.ended.notified();
            if self.running.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return;
            }
            ended.await;
        }
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// The downloads in progress, longest running first (the lock is held only to copy the
    /// list; progress is read from each fill's atomics).
    pub fn in_flight(&self) -> Vec<InFlight> {
        let fills: Vec<Arc<Fill>> = self.map.lock().values().cloned().collect();
        let mut out: Vec<InFlight> = fills.iter().map(|f| f.progress()).collect();
        out.sort_by(|a, b| b.seconds.cmp(&a.seconds).then_with(|| a.url.cmp(&b.url)));
        out
    }

    /// Whether a fill of `url` is running.
    pub fn contains(&self, url: &UpstreamUrl) -> bool {
        self.map.lock().contains_key(url.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Test hook, honoured in debug builds only: the next fill that receives bytes after
    /// storing at least `after_bytes` panics (to test that a dying fill releases its readers).
    #[doc(hidden)]
    pub fn panic_next_fill_for_tests(&self, after_bytes: u64) {
        self.panic_hook.arm(after_bytes);
    }
}
