//! Time: Unix seconds, RFC 3339, and an injectable [`Clock`].
//!
//! What decides by elapsed time (the sweeper's `max_unused`, the negative cache's TTL, the
//! per-client rate limits, the read times recorded for eviction) asks a [`Clock`] rather than
//! the system. The service runs on [`Clock::system`]; tests build it with [`Clock::manual`]
//! and [`Clock::advance`] it instead of sleeping until a one-second timestamp has passed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of the current time, monotonic and wall-clock. Cheap to clone (clones share
/// the time: advancing one advances them all).
#[derive(Clone, Debug, Default)]
pub struct Clock(Option<Arc<Manual>>);

/// A clock that moves only when told to, starting at the real time it was made.
#[derive(Debug)]
struct Manual {
    instant: Instant,
    wall: SystemTime,
    /// Nanoseconds advanced so far.
    offset: AtomicU64,
}

impl Clock {
    /// The system's clocks.
    pub fn system() -> Clock {
        Clock(None)
    }

    /// A clock that stands still until [`Clock::advance`]d, starting at the real time now.
    pub fn manual() -> Clock {
        Clock(Some(Arc::new(Manual {
            instant: Instant::now(),
            wall: SystemTime::now(),
            offset: AtomicU64::new(0),
        })))
    }

    /// Whether this is a manual clock.
    pub fn is_manual(&self) -> bool {
        self.0.is_some()
    }

    /// Move a manual clock forward (and every clone of it).
    ///
    /// # Panics
    /// On the system clock: only tests advance time.
    pub fn advance(&self, by: Duration) {
        let manual = self
            .0
            .as_ref()
            .expect("only a manual clock can be advanced");
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        manual.offset.fetch_add(nanos, Ordering::SeqCst);
    }

    fn offset(m: &Manual) -> Duration {
        Duration::from_nanos(m.offset.load(Ordering::SeqCst))
    }

    /// Monotonic now.
    pub fn now(&self) -> Instant {
        match &self.0 {
            None => Instant::now(),
            Some(m) => m.instant + Self::offset(m),
        }
    }

    /// Wall-clock now.
    pub fn system_time(&self) -> SystemTime {
        match &self.0 {
            None => SystemTime::now(),
            Some(m) => m.wall + Self::offset(m),
        }
    }

    /// Seconds since the Unix epoch.
    pub fn unix_now(&self) -> i64 {
        unix_secs(self.system_time())
    }

    /// How long ago `earlier` (from [`Clock::now`]) was; zero if it is later.
    pub fn elapsed(&self, earlier: Instant) -> Duration {
        self.now().saturating_duration_since(earlier)
    }
}

/// The per-client rate limiter (governor) keeps time with the same clock.
impl governor::clock::Clock for Clock {
    type Instant = Instant;

    fn now(&self) -> Instant {
        Clock::now(self)
    }
}

fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Seconds since the Unix epoch, by the system clock.
pub fn unix_now() -> i64 {
    unix_secs(SystemTime::now())
}

/// Unix seconds as RFC 3339 UTC, the format of every time in the API.
pub fn rfc3339(unix_secs: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(unix_secs.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced_and_clones_share_it() {
        let clock = Clock::manual();
        let (t0, u0) = (clock.now(), clock.unix_now());
        assert!((u0 - unix_now()).abs() <= 1, "starts at the real time");
        let other = clock.clone();
        assert_eq!(clock.now(), t0, "stands still");
        other.advance(Duration::from_millis(1500));
        assert_eq!(clock.elapsed(t0), Duration::from_millis(1500));
        assert!(clock.unix_now() - u0 >= 1);
        assert_eq!(clock.system_time(), other.system_time());
        assert_eq!(
            clock.elapsed(clock.now() + Duration::from_secs(1)),
            Duration::ZERO
        );
    }

    #[test]
    fn the_system_clock_follows_the_system() {
        let clock = Clock::system();
        assert!(!clock.is_manual());
        let t0 = Instant::now();
        assert!(clock.now() >= t0);
        assert!((clock.unix_now() - unix_now()).abs() <= 1);
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(-5), "1970-01-01T00:00:00Z");
    }

    #[test]
    #[should_panic(expected = "only a manual clock")]
    fn the_system_clock_cannot_be_advanced() {
        Clock::system().advance(Duration::from_secs(1));
    }
}
