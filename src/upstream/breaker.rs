//! A per-host circuit breaker: after repeated connect failures to one host, requests for it
//! fail at once for a short while instead of each waiting through every retry.
//!
//! Closed (normal) -> open after [`THRESHOLD`] consecutive connect failures -> after
//! [`COOLDOWN`], half-open: one request is let through as a probe (others still fail fast);
//! its success closes the breaker, its failure opens it for another cool-down.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Consecutive connect failures (connection refused, unreachable, DNS failure, connect
/// timeout) to one host that open its breaker.
pub const THRESHOLD: u32 = 5;

/// How long an open breaker fails requests before letting a probe through.
pub const COOLDOWN: Duration = Duration::from_secs(30);

/// Hosts remembered at most; beyond it, hosts whose breaker is closed are forgotten first.
const MAX_HOSTS: usize = 10_000;

/// Longest key remembered: a DNS name (253) with a scheme and a port. A longer host name
/// cannot resolve, so there is nothing to protect, and 10,000 keys of 8 KiB would be 80 MB.
const MAX_KEY: usize = 300;

/// Why a request was refused without trying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// Consecutive connect failures seen.
    pub failures: u32,
    /// Until the next probe may go.
    pub retry_in: Duration,
}

#[derive(Debug, Default)]
struct Host {
    failures: u32,
    open_until: Option<Instant>,
    /// When the current half-open probe was let through, if one is under way.
    probe_since: Option<Instant>,
}

/// One host's breaker as the status page shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HostState {
    /// `scheme://host:port`.
    pub host: String,
    /// `closed` (failures seen, below the threshold), `open` (requests fail at once), or
    /// `half_open` (the cool-down is over: the next request is a probe).
    pub state: &'static str,
    /// Consecutive connect failures.
    pub failures: u32,
    /// While open: seconds until a probe may go.
    pub retry_in_seconds: Option<u64>,
}

/// Breaker states by host key (`host:port`).
#[derive(Debug, Default)]
pub struct Breaker {
    hosts: Mutex<HashMap<String, Host>>,
}

impl Breaker {
    /// May a request to `key` go ahead now?
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Open> {
        let mut hosts = self.hosts.lock();
        let Some(st) = hosts.get_mut(key) else {
            return Ok(());
        };
        let Some(until) = st.open_until else {
            return Ok(());
        };
        if now < until {
            return Err(Open {
                failures: st.failures,
                retry_in: until - now,
            });
        }
        // Half-open: one probe at a time; a probe that never reported back (its task was
        // dropped) is given up after a cool-down.
        match st.probe_since {
            Some(since) if now.duration_since(since) < COOLDOWN => Err(Open {
                failures: st.failures,
                retry_in: COOLDOWN - now.duration_since(since),
            }),
            _ => {
                st.probe_since = Some(now);
                Ok(())
            }
        }
    }

    /// Hosts with recent connect failures, open breakers first, then by failures; at most
    /// `limit` of them (up to `MAX_HOSTS` are remembered).
    pub fn states(&self, now: Instant, limit: usize) -> Vec<HostState> {
        let mut out: Vec<HostState> = self
            .hosts
            .lock()
            .iter()
            .map(|(key, st)| {
                let (state, retry_in) = match st.open_until {
                    None => ("closed", None),
                    Some(until) if now < until => {
                        ("open", Some((until - now).as_secs_f64().ceil() as u64))
                    }
                    Some(_) => ("half_open", None),
                };
                HostState {
                    host: key.clone(),
                    state,
                    failures: st.failures,
                    retry_in_seconds: retry_in,
                }
            })
            .collect();
        let rank = |s: &HostState| match s.state {
            "open" => 0,
            "half_open" => 1,
            _ => 2,
        };
        out.sort_by(|a, b| (rank(a), b.failures, &a.host).cmp(&(rank(b), a.failures, &b.host)));
        out.truncate(limit);
        out
    }

    /// The host answered (whatever it said): close its breaker.
    pub fn success(&self, key: &str) {
        let mut hosts = self.hosts.lock();
        if hosts.contains_key(key) {
            hosts.remove(key);
        }
    }

    /// A connection to the host failed.
    pub fn failure(&self, key: &str, now: Instant) {
        if key.len() > MAX_KEY {
            return;
        }
        let mut hosts = self.hosts.lock();
        if hosts.len() >= MAX_HOSTS && !hosts.contains_key(key) {
            hosts.retain(|_, st| st.open_until.is_some());
            if hosts.len() >= MAX_HOSTS {
                return;
            }
        }
        let st = hosts.entry(key.to_owned()).or_default();
        st.failures = st.failures.saturating_add(1);
        st.probe_since = None;
        if st.failures >= THRESHOLD {
            st.open_until = Some(now + COOLDOWN);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_half_opens_after_cooldown() {
        let b = Breaker::default();
        let t0 = Instant::now();
        for _ in 0..THRESHOLD - 1 {
            b.failure("h:80", t0);
            assert!(b.check("h:80", t0).is_ok());
        }
        b.failure("h:80", t0);
        let open = b.check("h:80", t0).unwrap_err();
        assert_eq!(open.failures, THRESHOLD);
        assert_eq!(open.retry_in, COOLDOWN);
        // Other hosts are not affected.
        assert!(b.check("other:80", t0).is_ok());
        // Still open just before the cool-down ends.
        assert!(
            b.check("h:80", t0 + COOLDOWN - Duration::from_millis(1))
                .is_err()
        );
        // Half-open: exactly one probe goes through.
        let t1 = t0 + COOLDOWN;
        assert!(b.check("h:80", t1).is_ok());
        assert!(b.check("h:80", t1).is_err());
        // The probe fails: open again for a whole cool-down.
        b.failure("h:80", t1);
        assert!(
            b.check("h:80", t1 + COOLDOWN - Duration::from_millis(1))
                .is_err()
        );
        let t2 = t1 + COOLDOWN;
        assert!(b.check("h:80", t2).is_ok());
        // The probe succeeds: closed, and failures counted from zero again.
        b.success("h:80");
        assert!(b.check("h:80", t2).is_ok());
        b.failure("h:80", t2);
        assert!(b.check("h:80", t2).is_ok());
    }

    #[test]
    fn states_list_open_breakers_first() {
        let b = Breaker::default();
        let t = Instant::now();
        b.failure("http://a:80", t);
        for _ in 0..THRESHOLD {
            b.failure("http://b:80", t);
        }
        let states = b.states(t, 10);
        assert_eq!(
            states,
            vec![
                HostState {
                    host: "http://b:80".into(),
                    state: "open",
                    failures: THRESHOLD,
                    retry_in_seconds: Some(COOLDOWN.as_secs()),
                },
                HostState {
                    host: "http://a:80".into(),
                    state: "closed",
                    failures: 1,
                    retry_in_seconds: None,
                },
            ]
        );
        assert_eq!(b.states(t + COOLDOWN, 10)[0].state, "half_open");
        assert_eq!(b.states(t, 1).len(), 1);
        b.success("http://b:80");
        assert_eq!(b.states(t, 10).len(), 1);
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = Breaker::default();
        let t = Instant::now();
        for _ in 0..THRESHOLD - 1 {
            b.failure("h:21", t);
        }
        b.success("h:21");
        b.failure("h:21", t);
        assert!(b.check("h:21", t).is_ok());
    }

    #[test]
    fn a_lost_probe_is_replaced_after_a_cooldown() {
        let b = Breaker::default();
        let t = Instant::now();
        for _ in 0..THRESHOLD {
            b.failure("h:80", t);
        }
        let t1 = t + COOLDOWN;
        assert!(b.check("h:80", t1).is_ok());
        assert!(
            b.check("h:80", t1 + COOLDOWN - Duration::from_millis(1))
                .is_err()
        );
        assert!(b.check("h:80", t1 + COOLDOWN).is_ok());
    }

    #[test]
    fn host_names_too_long_to_resolve_are_not_remembered() {
        let b = Breaker::default();
        let t = Instant::now();
        let long = format!("{}:80", "a".repeat(8000));
        for _ in 0..THRESHOLD {
            b.failure(&long, t);
        }
        assert!(b.check(&long, t).is_ok());
        assert!(b.hosts.lock().is_empty());
    }
}
