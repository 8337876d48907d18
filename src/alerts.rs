//! Webhook alerts: a JSON POST per event kind and key, de-duplicated within
//! `alerts.min_interval`, sent and retried by a background task that never blocks a request.

use std::hash::BuildHasher;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant, SystemTime};

use lru::LruCache;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::warn;

use crate::config::AlertsConfig;
use crate::worker::{Group, State, WorkError, Worker};

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    UpstreamFailed,
    StorageUnavailable,
    IntegrityFailed,
    Drift,
    DiskHigh,
}

/// The JSON body POSTed to the webhook.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    pub kind: Kind,
    pub key: String,
    pub message: String,
    /// RFC 3339 UTC.
    pub time: String,
    pub instance: String,
}

/// Alerts queued at most; more are dropped (and logged) rather than blocking anyone.
const QUEUE: usize = 256;
/// Distinct kind+key pairs remembered for de-duplication; beyond it the least recently raised
/// is forgotten (it may then alert again within `min_interval`, which a flood of distinct
/// keys makes the lesser evil next to unbounded memory).
pub const REMEMBERED: usize = 10_000;
const ATTEMPTS: u32 = 4;
/// Bytes one remembered kind+key takes: hash, time and the LRU's links.
const ENTRY_BYTES: usize = 64;

/// Sends alerts, if a webhook is configured.
pub struct Alerter {
    tx: Option<mpsc::Sender<Alert>>,
    /// When each kind+key was last raised, by a hash of kind+key: keys can be URLs of up to
    /// 8 KiB, a hash is 8 bytes. The hasher is seeded per process, so nobody can choose keys
    /// that collide (a collision would only suppress an alert for `min_interval`).
    last: Mutex<LruCache<u64, Instant>>,
    hasher: std::collections::hash_map::RandomState,
    min_interval: Duration,
    instance: String,
    sender: Group,
}

impl Alerter {
    /// Start the sender on `runtime` (nothing is started without a webhook URL).
    pub fn new(cfg: &AlertsConfig, instance: &str, runtime: &tokio::runtime::Handle) -> Alerter {
        let sender = Group::new("alert sender");
        let tx = (!cfg.webhook_url.is_empty()).then(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            let delivery = Delivery {
                url: cfg.webhook_url.clone(),
                client: None,
                rx,
                current: None,
            };
            sender.spawn(delivery, runtime);
            tx
        });
        Alerter {
            tx,
            last: Mutex::new(LruCache::new(
                NonZeroUsize::new(REMEMBERED).unwrap_or(NonZeroUsize::MIN),
            )),
            hasher: Default::default(),
            min_interval: cfg.min_interval,
            instance: instance.to_owned(),
            sender,
        }
    }

    /// An alerter that sends nothing (the offline commands).
    pub fn off() -> Alerter {
        Alerter {
            tx: None,
            last: Mutex::new(LruCache::new(NonZeroUsize::MIN)),
            hasher: Default::default(),
            min_interval: Duration::ZERO,
            instance: String::new(),
            sender: Group::new("alert sender"),
        }
    }

    /// Stop the sender (shutdown): alerts not delivered within `deadline` are dropped.
    pub async fn stop(&self, deadline: Duration) {
        self.sender.stop(deadline).await;
    }

    /// Raise an alert unless the same kind+key was raised within `min_interval`.
    pub fn raise(&self, kind: Kind, key: &str, message: impl Into<String>) {
        let Some(tx) = &self.tx else { return };
        {
            let mut last = self.last.lock();
            let now = Instant::now();
            let k = self.hasher.hash_one((kind, key));
            if last
                .peek(&k)
                .is_some_and(|t| now.duration_since(*t) < self.min_interval)
            {
                return;
            }
            // Bounded: a full cache forgets its least recently raised key.
            last.put(k, now);
        }
        let alert = Alert {
            kind,
            key: key.to_owned(),
            message: message.into(),
            time: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            instance: self.instance.clone(),
        };
        if tx.try_send(alert).is_err() {
            warn!(?kind, key, "alert queue full; alert dropped");
        }
    }
}

impl Alerter {
    /// Kind+key pairs remembered for de-duplication now (at most [`REMEMBERED`]), and the
    /// bytes they take (a fixed size each).
    pub fn size(&self) -> (usize, usize) {
        let n = self.last.lock().len();
        (n, n * ENTRY_BYTES)
    }

    /// Lower the number of kind+key pairs remembered (tests exercise the bound with it).
    pub fn set_remembered_max(&self, n: usize) {
        self.last
            .lock()
            .resize(NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN));
    }
}

/// POSTs each alert, retrying with backoff (a worker: one attempt per step); failures are
/// logged, never propagated. Ends when the [`Alerter`] is gone and the queue is empty.
struct Delivery {
    url: String,
    client: Option<reqwest::Client>,
    rx: mpsc::Receiver<Alert>,
    /// The alert being delivered and its failed attempts so far.
    current: Option<(Alert, u32)>,
}

impl Worker for Delivery {
    fn name(&self) -> String {
        "alert sender".into()
    }

    async fn work(&mut self) -> Result<State, WorkError> {
        let client = match &self.client {
            Some(c) => c.clone(),
            None => {
                let built = reqwest::Client::builder()
                    .no_proxy()
                    .timeout(Duration::from_secs(10))
                    .build();
                match built {
                    Ok(c) => self.client.insert(c).clone(),
                    Err(e) => {
                        warn!(error = %e, "cannot build the alert client");
                        return Ok(State::Done);
                    }
                }
            }
        };
        let (alert, failed) = match self.current.take() {
            Some(current) => current,
            None => match self.rx.recv().await {
                Some(alert) => (alert, 0),
                None => return Ok(State::Done),
            },
        };
        let attempt = failed + 1;
        let refused = match client.post(&self.url).json(&alert).send().await {
            Ok(r) if r.status().is_success() => return Ok(State::Busy),
            Ok(r) => format!("alert webhook refused the alert: {}", r.status()),
            Err(e) => format!("alert webhook unreachable: {e}"),
        };
        if attempt < ATTEMPTS {
            self.current = Some((alert, attempt));
        } else {
            warn!(kind = ?alert.kind, key = %alert.key, attempts = attempt, "alert dropped: {refused}");
        }
        // The runner logs it and pauses before the next attempt (or alert).
        Err(format!("attempt {attempt}: {refused}").into())
    }

    async fn wait_for_work(&mut self) {}

    /// Half a second, doubling.
    fn retry_after(&self, errors: u32) -> Duration {
        crate::worker::backoff(Duration::from_millis(500), errors, Duration::from_secs(30))
    }
}
