//! Background workers (after garage's `BackgroundRunner`): a [`Worker`] does one step of
//! work at a time and says whether more is waiting ([`State::Busy`]), whether to wait for
//! work ([`State::Idle`]) or whether it is finished ([`State::Done`]). The runner gives
//! every worker the same lifecycle: a stop signal that ends it between steps, and a growing
//! pause after consecutive errors (never a quicker retry).
//!
//! Workers are started into a [`Group`]; at shutdown the groups are stopped one after the
//! other (see `crate::shutdown`), each waiting for the step its workers are in.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, warn};

/// What a worker says after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// More work is waiting: step again now.
    Busy,
    /// Nothing to do: wait for [`Worker::wait_for_work`] (or the stop signal).
    Idle,
    /// Finished for good.
    Done,
}

/// A failed step; the runner logs it and pauses.
pub type WorkError = Box<dyn std::error::Error + Send + Sync>;

/// One kind of background work.
pub trait Worker: Send + 'static {
    /// For logs.
    fn name(&self) -> String;

    /// One step. A step is not interrupted by the stop signal: the runner waits for it.
    fn work(&mut self) -> impl Future<Output = Result<State, WorkError>> + Send;

    /// After [`State::Idle`]: return once there may be work again. Interrupted by the stop
    /// signal.
    fn wait_for_work(&mut self) -> impl Future<Output = ()> + Send;

    /// The pause after the `errors`-th consecutive failed step (`errors >= 1`). The default
    /// doubles from one second up to five minutes.
    fn retry_after(&self, errors: u32) -> Duration {
        backoff(Duration::from_secs(1), errors, Duration::from_secs(300))
    }
}

/// `base`, doubled for each consecutive error after the first, at most `max`.
pub fn backoff(base: Duration, errors: u32, max: Duration) -> Duration {
    let doublings = errors.saturating_sub(1).min(20);
    base.saturating_mul(1 << doublings)
        .min(max)
        .max(base.min(max))
}

/// `base * 2^(attempt-1)`, with ±50% jitter so that many fills failing together do not retry
/// in lockstep; capped at a minute.
pub fn jittered(base: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << (attempt - 1).min(16));
    exp.mul_f64(0.5 + rand::random::<f64>())
        .min(Duration::from_secs(60))
}

/// A worker's progress, as the runner sees it (for tests and logs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// Steps finished (successful or not).
    pub steps: u64,
    /// Failed steps since the last successful one.
    pub consecutive_errors: u32,
    /// The pause taken after the last failed step.
    pub last_pause: Option<Duration>,
    pub last_error: Option<String>,
    pub done: bool,
}

/// Workers stopped together.
pub struct Group {
    name: &'static str,
    stop: watch::Sender<bool>,
    tasks: Mutex<JoinSet<()>>,
}

impl Group {
    pub fn new(name: &'static str) -> Group {
        Group {
            name,
            stop: watch::Sender::new(false),
            tasks: Mutex::new(JoinSet::new()),
        }
    }

    /// Start `worker` on `runtime`; its status is readable through the returned handle.
    /// A group already stopped starts nothing (the worker is dropped).
    pub fn spawn<W: Worker>(
        &self,
        worker: W,
        runtime: &tokio::runtime::Handle,
    ) -> Arc<Mutex<Status>> {
        let status = Arc::new(Mutex::new(Status::default()));
        if *self.stop.borrow() {
            status.lock().done = true;
            return status;
        }
        let stop = self.stop.subscribe();
        let mut tasks = self.tasks.lock();
        // Forget workers that have finished (publications end by themselves).
        while tasks.try_join_next().is_some() {}
        tasks.spawn_on(run(worker, stop, status.clone()), runtime);
        status
    }

    /// Workers still running.
    pub fn len(&self) -> usize {
        let mut tasks = self.tasks.lock();
        while tasks.try_join_next().is_some() {}
        tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Signal every worker to stop and wait for them (each finishes the step it is in), at
    /// most `deadline`; those still running then are aborted. Returns whether all ended by
    /// themselves.
    pub async fn stop(&self, deadline: Duration) -> bool {
        self.stop.send_replace(true);
        let mut tasks = std::mem::take(&mut *self.tasks.lock());
        let ended = tokio::time::timeout(deadline, async {
            while tasks.join_next().await.is_some() {}
        })
        .await
        .is_ok();
        if !ended {
            warn!(
                group = self.name,
                workers = tasks.len(),
                "background workers did not stop in time; aborting them"
            );
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        ended
    }
}

impl Drop for Group {
    /// Unstopped workers run on: each ends by itself once what it works for is gone (their
    /// owners hold them through weak references or channels).
    fn drop(&mut self) {
        self.tasks.get_mut().detach_all();
    }
}

async fn run<W: Worker>(
    mut worker: W,
    mut stop: watch::Receiver<bool>,
    status: Arc<Mutex<Status>>,
) {
    let name = worker.name();
    loop {
        if *stop.borrow() {
            break;
        }
        let step = worker.work().await;
        let pause = {
            let mut s = status.lock();
            s.steps += 1;
            match step {
                Ok(State::Busy) => {
                    s.consecutive_errors = 0;
                    None
                }
                Ok(State::Idle) => {
                    s.consecutive_errors = 0;
                    Some(None)
                }
                Ok(State::Done) => break,
                Err(e) => {
                    s.consecutive_errors += 1;
                    let pause = worker.retry_after(s.consecutive_errors);
                    warn!(worker = %name, error = %e, consecutive_errors = s.consecutive_errors, retry_in_ms = pause.as_millis() as u64, "background work failed");
                    s.last_error = Some(e.to_string());
                    s.last_pause = Some(pause);
                    Some(Some(pause))
                }
            }
        };
        let stopped = stop.wait_for(|stop| *stop);
        match pause {
            None => tokio::task::yield_now().await,
            Some(None) => {
                tokio::select! {
                    () = worker.wait_for_work() => {}
                    _ = stopped => break,
                }
            }
            Some(Some(pause)) => {
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = stopped => break,
                }
            }
        }
    }
    debug!(worker = %name, "background worker ended");
    status.lock().done = true;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Fails `fail` times, then is idle (waiting on `wake`) `idle` times, then done.
    struct Scripted {
        fail: u32,
        idle: u32,
        steps: Arc<AtomicU32>,
        wake: Arc<tokio::sync::Notify>,
        in_step: Option<Arc<tokio::sync::Semaphore>>,
    }

    impl Worker for Scripted {
        fn name(&self) -> String {
            "scripted".into()
        }

        async fn work(&mut self) -> Result<State, WorkError> {
            self.steps.fetch_add(1, Ordering::SeqCst);
            if let Some(gate) = &self.in_step {
                // Held until the test lets the step finish.
                let _ = gate.acquire().await.unwrap();
            }
            if self.fail > 0 {
                self.fail -= 1;
                return Err("scripted failure".into());
            }
            if self.idle > 0 {
                self.idle -= 1;
                return Ok(State::Idle);
            }
            Ok(State::Done)
        }

        async fn wait_for_work(&mut self) {
            self.wake.notified().await;
        }

        fn retry_after(&self, errors: u32) -> Duration {
            backoff(Duration::from_millis(1), errors, Duration::from_millis(4))
        }
    }

    fn scripted(fail: u32, idle: u32) -> (Scripted, Arc<AtomicU32>, Arc<tokio::sync::Notify>) {
        let steps = Arc::new(AtomicU32::new(0));
        let wake = Arc::new(tokio::sync::Notify::new());
        let w = Scripted {
            fail,
            idle,
            steps: steps.clone(),
            wake: wake.clone(),
            in_step: None,
        };
        (w, steps, wake)
    }

    async fn until(mut f: impl FnMut() -> bool) {
        tokio::time::timeout(Duration::from_secs(30), async {
            while !f() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("condition reached");
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let s = Duration::from_secs;
        let b = |n| backoff(s(10), n, s(60));
        assert_eq!(
            [b(1), b(2), b(3), b(4), b(100)],
            [s(10), s(20), s(40), s(60), s(60)]
        );
        assert_eq!(backoff(s(10), 0, s(60)), s(10));
        assert_eq!(backoff(s(10), 3, s(5)), s(5), "the cap wins over the base");
    }

    #[tokio::test]
    async fn consecutive_errors_pause_longer_each_time_and_success_resets_them() {
        let g = Group::new("t");
        let (w, steps, wake) = scripted(3, 1);
        let status = g.spawn(w, &tokio::runtime::Handle::current());
        // Three failures: pauses of 1, 2 and 4 ms, then an idle step.
        until(|| status.lock().steps == 4).await;
        {
            let s = status.lock();
            assert_eq!(s.last_pause, Some(Duration::from_millis(4)));
            assert_eq!(s.consecutive_errors, 0, "the idle step succeeded");
            assert_eq!(s.last_error.as_deref(), Some("scripted failure"));
            assert!(!s.done);
        }
        assert_eq!(steps.load(Ordering::SeqCst), 4, "idle: no step until woken");
        wake.notify_one();
        until(|| status.lock().done).await;
        assert_eq!(steps.load(Ordering::SeqCst), 5);
        assert!(g.is_empty(), "a finished worker leaves its group");
        assert!(g.stop(Duration::from_secs(30)).await);
    }

    #[tokio::test]
    async fn stop_ends_an_idle_worker_and_one_pausing_after_errors() {
        let g = Group::new("t");
        let (idle, _, _) = scripted(0, u32::MAX);
        let idle = g.spawn(idle, &tokio::runtime::Handle::current());
        let (failing, _, _) = scripted(u32::MAX, 0);
        let failing = g.spawn(failing, &tokio::runtime::Handle::current());
        until(|| idle.lock().steps == 1 && failing.lock().consecutive_errors >= 3).await;
        assert!(
            g.stop(Duration::from_secs(30)).await,
            "both stopped by the signal, not aborted"
        );
        assert!(idle.lock().done && failing.lock().done);
        // A stopped group starts nothing.
        let (late, steps, _) = scripted(0, 0);
        assert!(
            g.spawn(late, &tokio::runtime::Handle::current())
                .lock()
                .done
        );
        tokio::task::yield_now().await;
        assert_eq!(steps.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn stop_waits_for_the_step_in_progress() {
        let g = Group::new("t");
        let (mut w, steps, _) = scripted(0, 0);
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        w.in_step = Some(gate.clone());
        let status = g.spawn(w, &tokio::runtime::Handle::current());
        until(|| steps.load(Ordering::SeqCst) == 1).await;
        let stopping = tokio::spawn(async move { g.stop(Duration::from_secs(30)).await });
        tokio::task::yield_now().await;
        assert!(!status.lock().done, "the step is still running");
        gate.add_permits(1);
        assert!(
            stopping.await.unwrap(),
            "ended by itself once the step finished"
        );
        assert_eq!(status.lock().steps, 1, "no step after the stop signal");
    }

    #[tokio::test]
    async fn a_step_that_outlives_the_deadline_is_aborted() {
        let g = Group::new("t");
        let (mut w, steps, _) = scripted(0, 0);
        w.in_step = Some(Arc::new(tokio::sync::Semaphore::new(0)));
        let status = g.spawn(w, &tokio::runtime::Handle::current());
        until(|| steps.load(Ordering::SeqCst) == 1).await;
        assert!(!g.stop(Duration::from_millis(10)).await);
        assert_eq!(status.lock().steps, 0, "the step never finished");
        assert!(g.is_empty());
    }
}
