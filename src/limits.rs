//! Governance limits (`[limits]`): per-client request rate and concurrency, keyed by client
//! IP, and the instance-wide cap on simultaneous upstream downloads.
//!
//! The rate limit is governor's GCRA token bucket; the concurrency count is a map of the
//! clients that have requests in progress, each request holding a [`ClientPermit`] until its
//! response body is finished or dropped. Both stay bounded under floods of distinct
//! addresses (see [`MAX_CLIENTS`]). An IPv6 client is its /64 (see [`client_key`]). Clients
//! in `limits.exempt` have neither limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::config::LimitsConfig;
use crate::time::Clock;

/// The per-client rate limiter, keeping time with our [`Clock`].
type KeyedLimiter =
    RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, Clock, NoOpMiddleware<Instant>>;

/// Clients whose state is kept at most, in the rate limiter and in the concurrency map each
/// (about 100 bytes per client: a few MiB).
pub const MAX_CLIENTS: usize = 100_000;

/// How often clients whose bucket is full again are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// The size of the rate state is checked once per this many requests (counting it visits
/// every shard of the map).
const SIZE_CHECK_EVERY: usize = 256;

/// The key a client's limits are kept under: an IPv4 address as it is (an IPv4-mapped IPv6
/// address as its IPv4), an IPv6 address as its /64. One host or LAN is routinely given a
/// whole /64, so keying by full address would hand it 2^64 separate budgets.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

/// How a client key is named in messages: the address, or `prefix/64` for IPv6.
pub fn describe_client(ip: IpAddr) -> String {
    match client_key(ip) {
        IpAddr::V6(prefix) => format!("{prefix}/64"),
        v4 => v4.to_string(),
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Over `per_client_rps` / `per_client_burst`; a token is available again after this.
    Rate { retry_after: Duration },
    /// `per_client_concurrency` requests of this client are in progress.
    Concurrency { limit: u32 },
    /// [`MAX_CLIENTS`] distinct clients already have requests in progress.
    TooManyClients,
}

impl Rejection {
    /// The limit that was hit, named by its configuration key (the 429 body's `limit`).
    pub fn limit(&self) -> &'static str {
        match self {
            Rejection::Rate { .. } => "limits.per_client_rps",
            Rejection::Concurrency { .. } => "limits.per_client_concurrency",
            Rejection::TooManyClients => "clients_in_progress",
        }
    }

    /// `Retry-After` in whole seconds, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        match self {
            Rejection::Rate { retry_after } => retry_after.as_secs_f64().ceil().max(1.0) as u64,
            Rejection::Concurrency { .. } | Rejection::TooManyClients => 1,
        }
    }
}

/// Per-client and upstream limits of one instance.
pub struct Limits {
    /// `limits.exempt`: clients that are never limited.
    exempt: Vec<ipnet::IpNet>,
    rate: Option<RateState>,
    concurrency: u32,
    active: Arc<Active>,
    upstream: Option<Arc<Semaphore>>,
    upstream_limit: u32,
}

struct RateState {
    quota: Quota,
    /// Replaced whole (everyone forgotten) if pruning cannot bring it under the cap.
    limiter: RwLock<Arc<KeyedLimiter>>,
    clock: Clock,
    checks: AtomicUsize,
    started: Instant,
    /// Milliseconds after `started` when idle clients are next forgotten.
    next_prune: AtomicU64,
    max_clients: AtomicUsize,
}

/// Clients with requests in progress, and how many each.
struct Active {
    map: Mutex<HashMap<IpAddr, u32>>,
    max_clients: AtomicUsize,
    released: Notify,
}

/// Held by a request from admission until its response body is finished or dropped.
pub struct ClientPermit {
    active: Arc<Active>,
    ip: IpAddr,
}

impl Drop for ClientPermit {
    fn drop(&mut self) {
        {
            let mut map = self.active.map.lock();
            if let Some(n) = map.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&self.ip);
                }
            }
        }
        self.active.released.notify_waiters();
    }
}

impl Limits {
    pub fn new(cfg: &LimitsConfig) -> Limits {
        Limits::with_clock(cfg, Clock::system())
    }

    /// Rates are measured by `clock`.
    pub fn with_clock(cfg: &LimitsConfig, clock: Clock) -> Limits {
        let rate = NonZeroU32::new(cfg.per_client_rps).map(|rps| {
            // A burst of 0 would refuse everything; take it as "one second's worth".
            let burst = NonZeroU32::new(cfg.per_client_burst).unwrap_or(rps);
            let quota = Quota::per_second(rps).allow_burst(burst);
            RateState {
                quota,
                limiter: RwLock::new(Arc::new(keyed(quota, &clock))),
                started: clock.now(),
                clock: clock.clone(),
                checks: AtomicUsize::new(0),
                next_prune: AtomicU64::new(PRUNE_EVERY.as_millis() as u64),
                max_clients: AtomicUsize::new(MAX_CLIENTS),
            }
        });
        Limits {
            exempt: cfg.exempt.clone(),
            rate,
            concurrency: cfg.per_client_concurrency,
            active: Arc::new(Active {
                map: Mutex::new(HashMap::new()),
                max_clients: AtomicUsize::new(MAX_CLIENTS),
                released: Notify::new(),
            }),
            upstream: (cfg.upstream_concurrency > 0)
                .then(|| Arc::new(Semaphore::new(cfg.upstream_concurrency as usize))),
            upstream_limit: cfg.upstream_concurrency,
        }
    }

    /// Whether `ip` is in `limits.exempt` (an IPv4-mapped IPv6 address as its IPv4).
    pub fn is_exempt(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.exempt.iter().any(|net| net.contains(&ip))
    }

    /// Admit a request of `ip` (counted under [`client_key`]), or say why not. The permit
    /// (if a concurrency limit is set) must live until the response is complete. A client in
    /// `limits.exempt` is admitted without a permit and leaves no state.
    pub fn admit(&self, ip: IpAddr) -> Result<Option<ClientPermit>, Rejection> {
        if self.is_exempt(ip) {
            return Ok(None);
        }
        let ip = client_key(ip);
        if let Some(rate) = &self.rate {
            rate.check(ip)?;
        }
        if self.concurrency == 0 {
            return Ok(None);
        }
        let mut map = self.active.map.lock();
        let at_cap = map.len() >= self.active.max_clients.load(Ordering::Relaxed);
        match map.get_mut(&ip) {
            Some(n) if *n >= self.concurrency => Err(Rejection::Concurrency {
                limit: self.concurrency,
            }),
            Some(n) => {
                *n += 1;
                Ok(Some(self.permit(ip)))
            }
            None if at_cap => Err(Rejection::TooManyClients),
            None => {
                map.insert(ip, 1);
                Ok(Some(self.permit(ip)))
            }
        }
    }

    fn permit(&self, ip: IpAddr) -> ClientPermit {
        ClientPermit {
            active: self.active.clone(),
            ip,
        }
    }

    /// Requests of `ip`'s client key in progress (counted only with a concurrency limit).
    pub fn active_requests(&self, ip: IpAddr) -> u32 {
        self.active
            .map
            .lock()
            .get(&client_key(ip))
            .copied()
            .unwrap_or(0)
    }

    /// Clients with requests in progress.
    pub fn active_clients(&self) -> usize {
        self.active.map.lock().len()
    }

    /// Wait until `ip` has at most `n` requests in progress.
    pub async fn until_active_at_most(&self, ip: IpAddr, n: u32) {
        loop {
            let released = self.active.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if self.active_requests(ip) <= n {
                return;
            }
            released.await;
        }
    }

    /// Clients whose rate state is kept.
    pub fn rate_clients(&self) -> usize {
        self.rate.as_ref().map_or(0, |r| r.limiter.read().len())
    }

    /// Lower the number of clients kept (tests exercise the bound with it).
    pub fn set_max_clients(&self, n: usize) {
        self.active.max_clients.store(n, Ordering::Relaxed);
        if let Some(r) = &self.rate {
            r.max_clients.store(n, Ordering::Relaxed);
        }
    }

    /// Forget clients whose bucket is full again (done every `PRUNE_EVERY` by itself).
    pub fn prune(&self) {
        if let Some(r) = &self.rate {
            r.prune();
        }
    }

    /// Wait for an upstream download slot, at most `timeout`; `None` without a limit.
    pub async fn upstream_slot(
        &self,
        timeout: Duration,
    ) -> Result<Option<OwnedSemaphorePermit>, UpstreamBusy> {
        let Some(sem) = &self.upstream else {
            return Ok(None);
        };
        match tokio::time::timeout(timeout, sem.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            // The semaphore is never closed.
            Ok(Err(_)) | Err(_) => Err(UpstreamBusy {
                limit: self.upstream_limit,
                waited: timeout,
            }),
        }
    }

    /// Upstream download slots free now (`None`: unlimited).
    pub fn upstream_slots_free(&self) -> Option<usize> {
        self.upstream.as_ref().map(|s| s.available_permits())
    }
}

/// No upstream download slot became free in time.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "no upstream download slot became free within {} (limits.upstream_concurrency = {limit})",
    humantime::format_duration(*waited)
)]
pub struct UpstreamBusy {
    pub limit: u32,
    pub waited: Duration,
}

impl RateState {
    fn check(&self, ip: IpAddr) -> Result<(), Rejection> {
        let n = self.checks.fetch_add(1, Ordering::Relaxed);
        let now_ms = self.clock.elapsed(self.started).as_millis() as u64;
        let due = self.next_prune.load(Ordering::Relaxed);
        // Periodically, by whichever request claims the turn; and sooner when over the cap.
        let periodic = now_ms >= due
            && self
                .next_prune
                .compare_exchange(
                    due,
                    now_ms + PRUNE_EVERY.as_millis() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok();
        let over = || {
            n % SIZE_CHECK_EVERY == 0
                && self.limiter.read().len() >= self.max_clients.load(Ordering::Relaxed)
        };
        if periodic || over() {
            self.prune();
        }
        let limiter = self.limiter.read().clone();
        limiter.check_key(&ip).map_err(|not_until| Rejection::Rate {
            retry_after: not_until.wait_time_from(limiter.clock().now()),
        })
    }

    /// Forget idle clients; if too many are still active (a flood of distinct addresses),
    /// forget everyone rather than grow: a flood then gets fresh buckets, and memory stays
    /// bounded. Keeping every attacker's state would be the worse failure.
    fn prune(&self) {
        let max = self.max_clients.load(Ordering::Relaxed);
        let limiter = self.limiter.read().clone();
        limiter.retain_recent();
        limiter.shrink_to_fit();
        if limiter.len() >= max {
            tracing::warn!(
                clients = limiter.len(),
                max,
                "rate-limit state over its bound; starting afresh"
            );
            *self.limiter.write() = Arc::new(keyed(self.quota, &self.clock));
        }
    }
}

fn keyed(quota: Quota, clock: &Clock) -> KeyedLimiter {
    RateLimiter::new(quota, DefaultKeyedStateStore::default(), clock.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(rps: u32, burst: u32, conc: u32) -> LimitsConfig {
        LimitsConfig {
            per_client_rps: rps,
            per_client_burst: burst,
            per_client_concurrency: conc,
            upstream_concurrency: 0,
            ..LimitsConfig::default()
        }
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn burst_then_rejected_with_retry_after() {
        // One token a minute: the refill cannot happen during the test.
        let mut c = cfg(1, 3, 0);
        c.per_client_rps = 1;
        let l = Limits::new(&c);
        for _ in 0..3 {
            assert!(l.admit(ip(1)).is_ok());
        }
        let e = l
            .admit(ip(1))
            .err()
            .expect("fourth request is over the burst");
        assert!(matches!(e, Rejection::Rate { .. }), "{e:?}");
        assert_eq!(e.limit(), "limits.per_client_rps");
        assert!(e.retry_after_secs() >= 1);
        // Another client has its own bucket.
        assert!(l.admit(ip(2)).is_ok());
    }

    #[test]
    fn tokens_come_back_as_the_clock_advances() {
        let clock = Clock::manual();
        let l = Limits::with_clock(&cfg(2, 2, 0), clock.clone());
        assert!(l.admit(ip(1)).is_ok() && l.admit(ip(1)).is_ok());
        let Err(Rejection::Rate { retry_after }) = l.admit(ip(1)) else {
            panic!("over the burst");
        };
        assert_eq!(
            retry_after,
            Duration::from_millis(500),
            "two tokens a second"
        );
        clock.advance(Duration::from_millis(499));
        assert!(l.admit(ip(1)).is_err(), "not yet");
        clock.advance(Duration::from_millis(1));
        assert!(l.admit(ip(1)).is_ok(), "one token back");
        assert!(l.admit(ip(1)).is_err());
        // Idle clients are forgotten once their bucket is full again.
        clock.advance(Duration::from_secs(2));
        l.prune();
        assert_eq!(l.rate_clients(), 0);
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let key = |s: &str| client_key(s.parse().unwrap()).to_string();
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(
            describe_client("2001:db8::9".parse().unwrap()),
            "2001:db8::/64"
        );
        // One bucket and one concurrency count for the whole /64.
        let l = Limits::new(&cfg(0, 0, 1));
        let _held = l.admit("2001:db8::1".parse().unwrap()).unwrap();
        assert_eq!(
            l.admit("2001:db8::2".parse().unwrap()).err(),
            Some(Rejection::Concurrency { limit: 1 })
        );
        assert!(l.admit("2001:db8:0:1::1".parse().unwrap()).is_ok());
    }

    #[test]
    fn exempt_clients_have_neither_limit() {
        let mut c = cfg(1, 2, 1);
        c.exempt = vec![
            "10.0.0.0/30".parse().unwrap(),
            "2001:db8:5::/48".parse().unwrap(),
        ];
        let l = Limits::new(&c);
        let mut held = Vec::new();
        for _ in 0..1000 {
            // ip(1) and ip(3) are in 10.0.0.0/30, ip(4) is not; a mapped address counts too.
            for addr in [ip(1), ip(3), "::ffff:10.0.0.2".parse().unwrap()] {
                held.push(l.admit(addr).expect("exempt"));
            }
            held.push(l.admit("2001:db8:5:7::1".parse().unwrap()).unwrap());
        }
        assert!(held.iter().all(Option::is_none), "no permits, no state");
        assert_eq!((l.active_clients(), l.rate_clients()), (0, 0));
        let _one = l.admit(ip(4)).unwrap();
        let e = l.admit(ip(4)).err().expect("ip(4) is limited");
        assert_eq!(e.limit(), "limits.per_client_concurrency");
        assert!(l.admit("2001:db8:6::1".parse().unwrap()).is_ok());
        assert!(!l.is_exempt(ip(4)));
    }

    #[test]
    fn zero_means_unlimited() {
        let l = Limits::new(&cfg(0, 0, 0));
        for _ in 0..10_000 {
            assert!(matches!(l.admit(ip(1)), Ok(None)));
        }
        assert_eq!(l.rate_clients(), 0);
    }

    #[test]
    fn concurrency_counts_until_the_permit_drops() {
        let l = Limits::new(&cfg(0, 0, 2));
        let a = l.admit(ip(1)).unwrap();
        let b = l.admit(ip(1)).unwrap();
        assert_eq!(
            l.admit(ip(1)).err(),
            Some(Rejection::Concurrency { limit: 2 })
        );
        assert!(l.admit(ip(2)).is_ok(), "other clients are not affected");
        drop(a);
        let c = l.admit(ip(1)).unwrap();
        drop((b, c));
        assert_eq!(l.active_requests(ip(1)), 0);
        assert_eq!(l.active_clients(), 0, "idle clients leave the map");
    }

    #[test]
    fn concurrency_map_is_capped() {
        let l = Limits::new(&cfg(0, 0, 4));
        l.set_max_clients(100);
        let held: Vec<_> = (0..100).map(|i| l.admit(ip(i)).unwrap()).collect();
        assert_eq!(l.admit(ip(1000)).err(), Some(Rejection::TooManyClients));
        assert!(l.admit(ip(5)).is_ok(), "known clients still get in");
        drop(held);
        assert!(l.admit(ip(1000)).is_ok());
    }

    #[test]
    fn rate_state_stays_bounded_under_many_addresses() {
        let l = Limits::new(&cfg(1, 10, 0));
        l.set_max_clients(1000);
        for i in 0..20_000 {
            l.admit(ip(i)).unwrap();
            assert!(
                l.rate_clients() <= 1000 + SIZE_CHECK_EVERY,
                "{} clients after {i}",
                l.rate_clients()
            );
        }
    }

    #[tokio::test]
    async fn upstream_slots_wait_and_time_out() {
        let mut c = cfg(0, 0, 0);
        c.upstream_concurrency = 1;
        let l = Limits::new(&c);
        let first = l.upstream_slot(Duration::from_secs(5)).await.unwrap();
        assert!(first.is_some());
        assert_eq!(l.upstream_slots_free(), Some(0));
        let busy = l
            .upstream_slot(Duration::from_millis(1))
            .await
            .err()
            .unwrap();
        assert_eq!(busy.limit, 1);
        drop(first);
        assert!(l.upstream_slot(Duration::from_secs(5)).await.is_ok());
    }
}
