//! upcache: a caching proxy and content-addressed store for upstream source archives.
//!
//! The folder layout is the architecture (see `shared/DESIGN.md`): `url` turns the three
//! request forms into one normalized upstream URL, `index` maps URLs and checksums to blobs,
//! `store` holds blob bytes, `upstream` talks to origin servers, `fill` runs one download per
//! URL and lets every client follow it, `app` decides hit or miss, and `http` wires it all to
//! actix-web. On the client side, `spec` reads RPM specs and `spec_check` checks their sources
//! against a server.

pub mod accesslog;
pub mod alerts;
pub mod app;
pub mod audit;
pub mod auth;
pub mod bounded;
pub mod cli;
pub mod client;
pub mod config;
pub mod error;
pub mod fill;
pub mod http;
pub mod index;
pub mod intercept;
pub mod limits;
pub mod metrics;
pub mod offline;
pub mod prefetch;
pub mod readiness;
pub mod recovery;
pub mod remote;
pub mod revalidate;
pub mod spec;
pub mod spec_check;
pub mod status;
pub mod store;
pub mod sweeper;
pub mod upstream;
pub mod url;
pub mod volatile;

use std::sync::Arc;
use std::time::Duration;

pub use app::App;
pub use config::Config;
pub use http::Server;

/// How often batched read statistics are written to the index.
const ACCESS_FLUSH_EVERY: Duration = Duration::from_secs(10);

/// Start the background workers of a running service; abort the handle to stop them.
pub fn spawn_background(app: Arc<App>) -> tokio::task::JoinHandle<()> {
    let sweeper = tokio::spawn(sweeper::worker(app.clone()));
    tokio::spawn(async move {
        let _stop_sweeper_with_us = AbortOnDrop(sweeper);
        let mut tick = tokio::time::interval(ACCESS_FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let a = app.clone();
            let flushed = tokio::task::spawn_blocking(move || a.index.flush_access()).await;
            match flushed {
                Ok(Ok(read)) => app.touch_remote(read),
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot write access statistics"),
                Err(_) => {}
            }
        }
    })
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Open the data directory and serve on `listener`: what `upcache serve` does, for tests and
/// embedding. Must be called inside a multi-threaded tokio runtime.
pub fn start(
    config: Config,
    listener: std::net::TcpListener,
) -> Result<(Arc<App>, Server), Box<dyn std::error::Error>> {
    let app = App::open(config, tokio::runtime::Handle::current())?;
    let server = Server::start(app.clone(), listener)?;
    Ok((app, server))
}
