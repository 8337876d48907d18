//! Prefetch and revalidation jobs: a list of URLs worked through in the background, through
//! the same single-flight fills as client requests, with a status clients poll.
//!
//! A prefetch item ends `cached` (the URL is bound to a stored blob) or `failed`. A
//! revalidation item whose URL is already cached is downloaded again and compared
//! (`unchanged` or `drift`, see [`crate::revalidate`]); one that is not cached yet is simply
//! fetched (`cached`). Invalid URLs become failed items; they do not fail the whole job.
//!
//! Bounds: at most [`MAX_URLS`] URLs per job and [`MAX_JOBS`] jobs remembered; finished jobs
//! are forgotten after [`KEEP_FINISHED`]; the whole instance downloads at most
//! [`Jobs::parallel`] job items at a time, leaving the rest of `limits.upstream_concurrency`
//! to clients.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::app::{App, Resolution};
use crate::config::LimitsConfig;
use crate::error::Error;
use crate::index::BlobMeta;
use crate::url::UpstreamUrl;

/// URLs accepted in one job.
pub const MAX_URLS: usize = 10_000;
/// Jobs remembered at once (running and finished).
pub const MAX_JOBS: usize = 1_000;
/// How long a finished job's status stays available.
pub const KEEP_FINISHED: Duration = Duration::from_secs(3600);
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
    fn is_final(self) -> bool {
        !matches!(self, State::Queued | State::Fetching)
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
    fn bound(&mut self, state: State, meta: &BlobMeta) {
        self.state = state;
        self.md5 = Some(meta.digests.md5.clone());
        self.sha256 = Some(meta.digests.sha256.clone());
        self.size = Some(meta.size);
    }

    fn failed(&mut self, e: impl ToString) {
        self.state = State::Failed;
        self.error = Some(e.to_string());
    }
}

/// A job and its items.
pub struct Job {
    pub id: String,
    pub kind: Kind,
    items: Mutex<Vec<Item>>,
    /// Items not in a final state yet.
    remaining: AtomicUsize,
    finished_at: Mutex<Option<Instant>>,
    created: Instant,
    /// Turns true when the last item ends.
    finished: tokio::sync::watch::Sender<bool>,
}

impl Job {
    /// The status JSON (SPEC 4.3): `done` counts items that ended well, `failed` the others;
    /// the job is finished when `done + failed == total`.
    pub fn status(&self) -> Value {
        let items = self.items.lock().clone();
        let failed = items.iter().filter(|i| i.state == State::Failed).count();
        let done = items
            .iter()
            .filter(|i| i.state.is_final() && i.state != State::Failed)
            .count();
        let mut v = json!({
            "id": self.id,
            "total": items.len(),
            "done": done,
            "failed": failed,
            "items": items,
        });
        if self.kind == Kind::Revalidate {
            v["drift"] = json!(items.iter().filter(|i| i.state == State::Drift).count());
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

    fn update(&self, index: usize, f: impl FnOnce(&mut Item)) {
        let was_final;
        let now_final;
        {
            let mut items = self.items.lock();
            let item = &mut items[index];
            was_final = item.state.is_final();
            f(item);
            now_final = item.state.is_final();
        }
        if now_final && !was_final && self.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
            *self.finished_at.lock() = Some(Instant::now());
            self.finished.send_replace(true);
        }
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

    /// Forget expired finished jobs; make room for one more. Err when every remembered job is
    /// still running.
    fn make_room(&self) -> Result<(), Error> {
        let mut jobs = self.jobs.lock();
        let expired = |j: &Job| {
            j.finished_at
                .lock()
                .is_some_and(|t| t.elapsed() >= KEEP_FINISHED)
        };
        jobs.retain(|_, j| !expired(j));
        while jobs.len() >= MAX_JOBS {
            let oldest_finished = jobs
                .values()
                .filter(|j| j.is_finished())
                .min_by_key(|j| j.created)
                .map(|j| j.id.clone());
            match oldest_finished {
                Some(id) => {
                    jobs.remove(&id);
                }
                None => {
                    return Err(Error::Unavailable(format!(
                        "{MAX_JOBS} prefetch or revalidation jobs are running; try again later"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Who submitted a job, for the fills and the audit trail.
#[derive(Debug, Clone, Default)]
pub struct Submitter {
    pub client: Option<String>,
    /// Token name (revalidation is an admin action).
    pub actor: Option<String>,
}

/// Start a job over `urls`; it runs in the background.
pub fn submit(
    app: &Arc<App>,
    kind: Kind,
    urls: Vec<String>,
    who: Submitter,
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
    app.jobs.make_room()?;
    let mut parsed = Vec::with_capacity(urls.len());
    let mut items = Vec::with_capacity(urls.len());
    for raw in &urls {
        let mut item = Item {
            url: crate::url::redact_str(raw.trim()),
            state: State::Queued,
            md5: None,
            sha256: None,
            size: None,
            error: None,
            drift: None,
        };
        let url = UpstreamUrl::parse(raw).map_err(Error::from).and_then(|u| {
            app.upstream
                .policy()
                .check_url(&u)
                .map(|()| u)
                .map_err(Error::from)
        });
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
    let remaining = items.iter().filter(|i| !i.state.is_final()).count();
    let job = Arc::new(Job {
        id: format!("{:032x}", rand::random::<u128>()),
        kind,
        items: Mutex::new(items),
        remaining: AtomicUsize::new(remaining),
        finished_at: Mutex::new((remaining == 0).then(Instant::now)),
        created: Instant::now(),
        finished: tokio::sync::watch::Sender::new(remaining == 0),
    });
    app.jobs.jobs.lock().insert(job.id.clone(), job.clone());
    let (app2, job2) = (app.clone(), job.clone());
    app.runtime().spawn(async move {
        for (index, url) in parsed.into_iter().enumerate() {
            let Some(url) = url else { continue };
            // Bounded: the next item starts only when a permit is free.
            let Ok(permit) = app2.jobs.permits.clone().acquire_owned().await else {
                return;
            };
            let (app, job, who) = (app2.clone(), job2.clone(), who.clone());
            app2.runtime().spawn(async move {
                job.update(index, |i| i.state = State::Fetching);
                run_item(&app, &job, index, &url, &who).await;
                drop(permit);
            });
        }
    });
    Ok(job)
}

async fn run_item(app: &Arc<App>, job: &Job, index: usize, url: &UpstreamUrl, who: &Submitter) {
    if job.kind == Kind::Revalidate {
        match crate::revalidate::bound_blob(app, url) {
            Ok(Some(bound)) => {
                let outcome = crate::revalidate::revalidate(app, url, &bound, who).await;
                job.update(index, |item| match outcome {
                    Ok(crate::revalidate::Outcome::Unchanged) => {
                        item.bound(State::Unchanged, &bound)
                    }
                    Ok(crate::revalidate::Outcome::Drift(new)) => {
                        item.bound(State::Drift, &bound);
                        item.drift = Some(json!({
                            "blake3": new.digests.blake3,
                            "sha256": new.digests.sha256,
                            "md5": new.digests.md5,
                            "size": new.size,
                        }));
                    }
                    Err(e) => item.failed(e),
                });
                return;
            }
            Ok(None) => {}
            Err(e) => {
                job.update(index, |item| item.failed(e));
                return;
            }
        }
    }
    let result = fetch(app, url, who).await;
    job.update(index, |item| match result {
        Ok(meta) => item.bound(State::Cached, &meta),
        Err(e) => item.failed(e),
    });
}

/// Make sure `url` is cached, joining or starting its fill; the blob it is bound to.
pub async fn fetch(app: &Arc<App>, url: &UpstreamUrl, who: &Submitter) -> Result<BlobMeta, Error> {
    // A blob whose file vanished is dropped from the index by `open_blob`; resolving again
    // then starts a fill (as for client requests). With an object store, what another
    // instance stored counts as cached, and so does a blob only the bucket holds.
    app.learn_url(url).await?;
    for _ in 0..3 {
        match app.resolve(url, None, who.client.clone(), true)? {
            Resolution::Hit(entry) => {
                if app.open_blob(&entry.blob)?.is_some() || entry.blob.remote {
                    return Ok(entry.blob.clone());
                }
            }
            Resolution::Miss { fill, .. } => {
                let state = fill.ended().await;
                if let Some(entry) = app.index.url(url.as_str())? {
                    return Ok(entry.blob.clone());
                }
                return Err(match &state.phase {
                    crate::fill::Phase::Failed(e) => Error::from(&**e),
                    _ => Error::Internal(format!("{url} was downloaded but could not be stored")),
                });
            }
            Resolution::Checksum(_) | Resolution::NotStored => {
                return Err(Error::Internal(
                    "unexpected resolution for a prefetch".into(),
                ));
            }
        }
    }
    Err(Error::Unavailable(format!(
        "the stored copy of {url} keeps vanishing; try again"
    )))
}

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
