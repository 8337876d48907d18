//! Prefetch and revalidation jobs: a list of URLs worked through in the background, through
//! the same single-flight fills as client requests, with a status clients poll.
//!
//! A prefetch item ends `cached` (the URL is bound to a stored blob) or `failed`. A
//! revalidation item whose URL is already cached is downloaded again and compared
//! (`unchanged` or `drift`, see [`revalidate`]); one that is not cached yet is simply
//! fetched (`cached`). Invalid URLs become failed items; they do not fail the whole job, but
//! a URL longer than [`MAX_URL_LEN`] refuses it (400).
//!
//! Everything a job keeps is bounded, since anyone may submit one: at most [`MAX_URLS`] URLs
//! per job; the jobs retained (running or finished) hold at most [`MAX_RETAINED_BYTES`] in
//! total and, per client, [`MAX_CLIENT_BYTES`] in [`MAX_CLIENT_JOBS`] jobs (429 beyond, once
//! finished jobs have made what room they can). A finished job keeps its items for
//! [`KEEP_DETAIL`], or less when room is needed, then a summary (counts and a few failed
//! items) until [`KEEP_FINISHED`]. The whole instance downloads at most [`Jobs::parallel`]
//! job items at a time, leaving the rest of `limits.upstream_concurrency` to clients.

pub mod revalidate;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::config::LimitsConfig;
use crate::error::Error;
use crate::index::BlobMeta;
use crate::url::UpstreamUrl;

/// URLs accepted in one job.
pub const MAX_URLS: usize = 10_000;
/// Longest URL accepted in a job: the request-target limit (SPEC 5).
pub const MAX_URL_LEN: usize = crate::url::MAX_URL_LEN;
/// Jobs remembered at once (running and finished).
pub const MAX_JOBS: usize = 1_000;
/// Bytes all retained jobs may hold together.
pub const MAX_RETAINED_BYTES: usize = 64 << 20;
/// Bytes the retained prefetch jobs of one client may hold.
pub const MAX_CLIENT_BYTES: usize = 16 << 20;
/// Prefetch jobs one client may have retained (running or finished).
pub const MAX_CLIENT_JOBS: usize = 32;
/// How long a finished job keeps every item; a summary after that.
pub const KEEP_DETAIL: Duration = Duration::from_secs(600);
/// How long a finished job's status stays available.
pub const KEEP_FINISHED: Duration = Duration::from_secs(3600);
/// Bytes accounted per item beyond its URL: the item itself, its checksums and error
/// message (at most [`MAX_ITEM_ERROR`]), the queue entry.
const ITEM_OVERHEAD: usize = 640;
/// Longest error message kept per item.
const MAX_ITEM_ERROR: usize = 300;
/// Failed items a summary keeps.
const SUMMARY_FAILED: usize = 20;
/// Job items downloading at once when `limits.upstream_concurrency` is 0 (unlimited).
const PARALLEL_UNLIMITED: usize = 16;

/// What a job does with its URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Make sure each URL is cached.
    Prefetch,
    /// Download cached URLs again and compare (admin).
    Revalidate,
}

impl Kind {
    /// The API path of this kind's jobs.
    pub fn path(self) -> &'static str {
        match self {
            Kind::Prefetch => "/api/v1/prefetch",
            Kind::Revalidate => "/api/v1/revalidate",
        }
    }
}

/// Where an item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Queued,
    Fetching,
    /// Stored and bound to the URL.
    Cached,
    /// Revalidation: upstream still serves the bound bytes.
    Unchanged,
    /// Revalidation: upstream now serves other bytes (kept unbound; the binding stays).
    Drift,
    Failed,
}

impl State {
    const ALL: [State; 6] = [
        State::Queued,
        State::Fetching,
        State::Cached,
        State::Unchanged,
        State::Drift,
        State::Failed,
    ];

    fn is_final(self) -> bool {
        !matches!(self, State::Queued | State::Fetching)
    }

    fn name(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Fetching => "fetching",
            State::Cached => "cached",
            State::Unchanged => "unchanged",
            State::Drift => "drift",
            State::Failed => "failed",
        }
    }
}

/// One URL of a job, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    /// The URL as normalized (password hidden), or as given when it is invalid.
    pub url: String,
    pub state: State,
    /// Checksums and size of the blob bound to the URL, once known.
    pub md5: Option<String>,
    pub sha256: Option<String>,
    pub size: Option<u64>,
    pub error: Option<String>,
    /// Revalidation with drift: what upstream serves now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<Value>,
}

impl Item {
    pub(crate) fn bound(&mut self, state: State, meta: &BlobMeta) {
        self.state = state;
        self.md5 = Some(meta.digests.md5.clone());
        self.sha256 = Some(meta.digests.sha256.clone());
        self.size = Some(meta.size);
    }

    pub(crate) fn failed(&mut self, e: impl ToString) {
        let mut message = e.to_string();
        if message.len() > MAX_ITEM_ERROR {
            let mut end = MAX_ITEM_ERROR;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push_str("...");
        }
        self.state = State::Failed;
        self.error = Some(message);
    }

    /// Bytes accounted for an item of a URL of `len` bytes (twice: item and work queue).
    fn cost(len: usize) -> usize {
        2 * len + ITEM_OVERHEAD
    }
}

/// A job's items: all of them, or, once the job is finished and room was needed, a summary.
enum Items {
    Full(Vec<Item>),
    Summary {
        total: usize,
        counts: [usize; State::ALL.len()],
        /// The first few failed items.
        failed: Vec<Item>,
    },
}

impl Items {
    fn counts(&self) -> [usize; State::ALL.len()] {
        match self {
            Items::Full(items) => {
                let mut counts = [0; State::ALL.len()];
                for item in items {
                    counts[item.state as usize] += 1;
                }
                counts
            }
            Items::Summary { counts, .. } => *counts,
        }
    }
}

/// A job and its items.
pub struct Job {
    pub id: String,
    pub kind: Kind,
    items: Mutex<Items>,
    /// The submitting client's limit key, for the per-client bounds (anonymous jobs only).
    client: Option<IpAddr>,
    /// Bytes the job holds, as accounted ([`Item::cost`] per item, less once summarized).
    bytes: AtomicUsize,
    /// Items not in a final state yet.
    remaining: AtomicUsize,
    finished_at: Mutex<Option<Instant>>,
    created: Instant,
    /// Turns true when the last item ends.
    finished: tokio::sync::watch::Sender<bool>,
}

impl Job {
    /// The status JSON (SPEC 4.3): `done` counts items that ended well, `failed` the others;
    /// the job is finished when `done + failed == total`. `counts` has every state; a
    /// summarized job lists only a few failed items (`summarized`, `items_omitted`).
    pub fn status(&self) -> Value {
        let items = self.items.lock();
        let counts = items.counts();
        let total: usize = counts.iter().sum();
        let failed = counts[State::Failed as usize];
        let done = State::ALL
            .iter()
            .filter(|s| s.is_final() && **s != State::Failed)
            .map(|s| counts[*s as usize])
            .sum::<usize>();
        let by_state: serde_json::Map<String, Value> = State::ALL
            .iter()
            .map(|s| (s.name().to_owned(), json!(counts[*s as usize])))
            .collect();
        let mut v = json!({
            "id": self.id,
            "total": total,
            "done": done,
            "failed": failed,
            "counts": by_state,
        });
        match &*items {
            Items::Full(list) => v["items"] = json!(list),
            Items::Summary {
                total,
                failed: kept,
                ..
            } => {
                v["items"] = json!(kept);
                v["summarized"] = json!(true);
                v["items_omitted"] = json!(total - kept.len());
            }
        }
        if self.kind == Kind::Revalidate {
            v["drift"] = json!(counts[State::Drift as usize]);
        }
        v
    }

    pub fn is_finished(&self) -> bool {
        self.remaining.load(Ordering::SeqCst) == 0
    }

    /// Wait until every item has ended.
    pub async fn wait(&self) {
        let mut rx = self.finished.subscribe();
        // Err only if the sender is gone, and `self` holds it.
        let _ = rx.wait_for(|f| *f).await;
    }

    /// Bytes the job holds, as accounted.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Whether only a summary is left of its items.
    pub fn is_summarized(&self) -> bool {
        matches!(*self.items.lock(), Items::Summary { .. })
    }

    pub(crate) fn update(&self, index: usize, f: impl FnOnce(&mut Item)) {
        let was_final;
        let now_final;
        {
            let mut items = self.items.lock();
            // A summary exists only once every item has ended.
            let Items::Full(list) = &mut *items else {
                return;
            };
            let Some(item) = list.get_mut(index) else {
                return;
            };
            was_final = item.state.is_final();
            f(item);
            now_final = item.state.is_final();
        }
        if now_final && !was_final && self.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
            *self.finished_at.lock() = Some(Instant::now());
            self.finished.send_replace(true);
        }
    }

    /// How long ago the job finished, if it has.
    fn finished_for(&self, now: Instant) -> Option<Duration> {
        self.finished_at
            .lock()
            .map(|t| now.saturating_duration_since(t))
    }

    /// Replace a finished job's items by a summary; false if there was nothing to shrink.
    fn summarize(&self) -> bool {
        if !self.is_finished() {
            return false;
        }
        let mut items = self.items.lock();
        let Items::Full(list) = &*items else {
            return false;
        };
        let (total, counts) = (list.len(), items.counts());
        let failed: Vec<Item> = list
            .iter()
            .filter(|i| i.state == State::Failed)
            .take(SUMMARY_FAILED)
            .cloned()
            .collect();
        let bytes = ITEM_OVERHEAD
            + failed
                .iter()
                .map(|i| Item::cost(i.url.len()))
                .sum::<usize>();
        *items = Items::Summary {
            total,
            counts,
            failed,
        };
        self.bytes.fetch_min(bytes, Ordering::Relaxed);
        true
    }
}

/// The jobs of this instance.
pub struct Jobs {
    jobs: Mutex<HashMap<String, Arc<Job>>>,
    permits: Arc<Semaphore>,
    parallel: usize,
}

impl Jobs {
    pub fn new(limits: &LimitsConfig) -> Jobs {
        let parallel = match limits.upstream_concurrency as usize {
            0 => PARALLEL_UNLIMITED,
            n => (n / 2).max(1),
        };
        Jobs {
            jobs: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(parallel)),
            parallel,
        }
    }

    /// Job items downloading at once, whole instance: half of `limits.upstream_concurrency`
    /// (at least 1), so that jobs never take every upstream slot from clients.
    pub fn parallel(&self) -> usize {
        self.parallel
    }

    /// A job of `kind`, if it exists.
    pub fn get(&self, kind: Kind, id: &str) -> Option<Arc<Job>> {
        self.jobs.lock().get(id).filter(|j| j.kind == kind).cloned()
    }

    /// Jobs retained and the bytes they hold (at most [`MAX_JOBS`], [`MAX_RETAINED_BYTES`]).
    pub fn retained(&self) -> (usize, usize) {
        let jobs = self.jobs.lock();
        (jobs.len(), jobs.values().map(|j| j.bytes()).sum())
    }

    /// Jobs retained for the client with limit key `key`, and the bytes they hold.
    pub fn retained_by(&self, key: IpAddr) -> (usize, usize) {
        let jobs = self.jobs.lock();
        let mine = jobs.values().filter(|j| j.client == Some(key));
        mine.fold((0, 0), |(n, b), j| (n + 1, b + j.bytes()))
    }

    /// Retain `job`, making room for it first: expired jobs are forgotten, finished ones
    /// summarized past [`KEEP_DETAIL`]; over a bound, finished jobs (the client's own for the
    /// per-client bounds) are summarized, then forgotten, oldest first. Err (429) when the
    /// jobs still running hold too much.
    fn insert(&self, job: Arc<Job>) -> Result<(), Error> {
        let mut jobs = self.jobs.lock();
        let now = Instant::now();
        jobs.retain(|_, j| j.finished_for(now).is_none_or(|d| d < KEEP_FINISHED));
        for j in jobs.values() {
            if j.finished_for(now).is_some_and(|d| d >= KEEP_DETAIL) {
                j.summarize();
            }
        }
        let cost = job.bytes();
        let limited = |limit: &'static str, message: String| Error::RateLimited {
            message,
            retry_after_secs: 10,
            limit,
        };
        if let Some(key) = job.client {
            let mine = |j: &Job| j.client == Some(key);
            loop {
                let (n, bytes) = jobs
                    .values()
                    .filter(|j| mine(j))
                    .fold((0, 0), |(n, b), j| (n + 1, b + j.bytes()));
                let over_count = n >= MAX_CLIENT_JOBS;
                if !over_count && bytes + cost <= MAX_CLIENT_BYTES {
                    break;
                }
                if !free_one(&mut jobs, mine, over_count) {
                    let who = crate::limits::describe_client(key);
                    return Err(if over_count {
                        limited(
                            "prefetch_jobs_per_client",
                            format!(
                                "{who} has {n} prefetch jobs running, the most one client may \
                                 have ({MAX_CLIENT_JOBS}); try again when one has finished"
                            ),
                        )
                    } else {
                        limited(
                            "prefetch_bytes_per_client",
                            format!(
                                "the prefetch jobs of {who} hold {bytes} bytes and this one \
                                 needs {cost}, over the {MAX_CLIENT_BYTES} bytes one client may \
                                 have retained; try again when they have finished"
                            ),
                        )
                    });
                }
            }
        }
        loop {
            let bytes: usize = jobs.values().map(|j| j.bytes()).sum();
            let over_count = jobs.len() >= MAX_JOBS;
            if !over_count && bytes + cost <= MAX_RETAINED_BYTES {
                break;
            }
            if !free_one(&mut jobs, |_| true, over_count) {
                return Err(if over_count {
                    limited(
                        "prefetch_jobs",
                        format!(
                            "{MAX_JOBS} prefetch or revalidation jobs are running, the most \
                             retained at once; try again later"
                        ),
                    )
                } else {
                    limited(
                        "prefetch_bytes",
                        format!(
                            "running prefetch and revalidation jobs hold {bytes} bytes and this \
                             one needs {cost}, over the {MAX_RETAINED_BYTES} bytes retained at \
                             most; try again later"
                        ),
                    )
                });
            }
        }
        jobs.insert(job.id.clone(), job);
        Ok(())
    }
}

/// Make room among the finished jobs that `pick` selects: summarize the oldest one that
/// still has its items (unless a job must go, `forget`), else forget the oldest. False when
/// no finished job was picked.
fn free_one(
    jobs: &mut HashMap<String, Arc<Job>>,
    pick: impl Fn(&Job) -> bool,
    forget: bool,
) -> bool {
    let mut finished: Vec<&Arc<Job>> = jobs
        .values()
        .filter(|j| j.is_finished() && pick(j))
        .collect();
    finished.sort_by_key(|j| j.created);
    if !forget && finished.iter().any(|j| j.summarize()) {
        return true;
    }
    let Some(id) = finished.first().map(|j| j.id.clone()) else {
        return false;
    };
    jobs.remove(&id);
    true
}

/// Who submitted a job, for the fills and the audit trail.
#[derive(Debug, Clone, Default)]
pub struct Submitter {
    pub client: Option<String>,
    /// The client's limit key (its address, the /64 of an IPv6 one): anonymous jobs are
    /// bounded per client under it.
    pub key: Option<IpAddr>,
    /// Token name (revalidation is an admin action).
    pub actor: Option<String>,
}

/// Start a job over `urls`; it runs in the background.
///
/// `policy` refuses URLs up front (failed items); `run` works through one item (its index
/// and URL) on `runtime`, at most [`Jobs::parallel`] at a time.
pub fn submit(
    jobs: &Jobs,
    policy: &crate::upstream::Policy,
    runtime: &tokio::runtime::Handle,
    kind: Kind,
    urls: Vec<String>,
    who: Submitter,
    run: RunItem,
) -> Result<Arc<Job>, Error> {
    if urls.is_empty() {
        return Err(Error::BadRequest("\"urls\" is empty".into()));
    }
    if urls.len() > MAX_URLS {
        return Err(Error::BadRequest(format!(
            "{} urls in one job; at most {MAX_URLS} are accepted",
            urls.len()
        )));
    }
    if let Some((i, long)) = urls.iter().enumerate().find(|(_, u)| u.len() > MAX_URL_LEN) {
        return Err(Error::BadRequest(format!(
            "urls[{i}] is {} bytes long; a url may have at most {MAX_URL_LEN}",
            long.len()
        )));
    }
    let mut parsed = Vec::with_capacity(urls.len());
    let mut items = Vec::with_capacity(urls.len());
    let mut bytes = 0;
    for raw in &urls {
        bytes += Item::cost(raw.len());
        let mut item = Item {
            url: crate::url::redact_str(raw.trim()),
            state: State::Queued,
            md5: None,
            sha256: None,
            size: None,
            error: None,
            drift: None,
        };
        let url = UpstreamUrl::parse(raw)
            .map_err(Error::from)
            .and_then(|u| policy.check_url(&u).map(|()| u).map_err(Error::from));
        match url {
            Ok(u) => {
                item.url = u.to_string();
                parsed.push(Some(u));
            }
            Err(e) => {
                item.failed(e);
                parsed.push(None);
            }
        }
        items.push(item);
    }
    drop(urls);
    let remaining = items.iter().filter(|i| !i.state.is_final()).count();
    let job = Arc::new(Job {
        id: format!("{:032x}", rand::random::<u128>()),
        kind,
        items: Mutex::new(Items::Full(items)),
        // Admin actions (revalidation) are not bounded per client.
        client: who.key.filter(|_| who.actor.is_none()),
        bytes: AtomicUsize::new(bytes),
        remaining: AtomicUsize::new(remaining),
        finished_at: Mutex::new((remaining == 0).then(Instant::now)),
        created: Instant::now(),
        finished: tokio::sync::watch::Sender::new(remaining == 0),
    });
    jobs.insert(job.clone())?;
    let (permits, job2, rt) = (jobs.permits.clone(), job.clone(), runtime.clone());
    runtime.spawn(async move {
        for (index, url) in parsed.into_iter().enumerate() {
            let Some(url) = url else { continue };
            // Bounded: the next item starts only when a permit is free.
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let (job, who) = (job2.clone(), who.clone());
            let item = run(job.clone(), index, url, who);
            rt.spawn(async move {
                job.update(index, |i| i.state = State::Fetching);
                item.await;
                drop(permit);
            });
        }
    });
    Ok(job)
}

/// One job item's work, as the service does it: the job, the item's index and URL, who
/// submitted it.
pub type RunItem = Arc<
    dyn Fn(Arc<Job>, usize, UpstreamUrl, Submitter) -> crate::tier::BoxFuture<'static, ()>
        + Send
        + Sync,
>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallelism_leaves_room_for_clients() {
        let parallel = |n| {
            let l = LimitsConfig {
                upstream_concurrency: n,
                ..LimitsConfig::default()
            };
            Jobs::new(&l).parallel()
        };
        assert_eq!(parallel(64), 32);
        assert_eq!(parallel(1), 1);
        assert_eq!(parallel(0), PARALLEL_UNLIMITED);
    }
}
