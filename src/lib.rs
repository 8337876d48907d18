//! upcache: a caching proxy and content-addressed store for upstream source archives.
//!
//! The folder layout is the architecture (see `docs/ARCHITECTURE.md`); dependencies point
//! one way, `http -> service -> {fill, sweeper, tier, jobs} -> cache -> {index, store,
//! audit}`. `url` turns the three request forms into one normalized upstream URL, `cache`
//! owns the data directory (`index` maps URLs and checksums to blobs, `store` holds blob
//! bytes), `tier` is where blobs live besides it, `upstream` talks to origin servers, `fill`
//! runs one download per URL and lets every client follow it, `service` decides hit or miss,
//! and `http` wires it all to actix-web. On the client side, `spec` reads RPM specs and `spec_check` checks their sources
//! against a server.

pub mod accesslog;
pub mod alerts;
pub mod audit;
pub mod auth;
pub mod bounded;
pub mod cache;
pub mod cli;
pub mod client;
pub mod config;
pub mod error;
pub mod fill;
pub mod http;
pub mod index;
pub mod intercept;
pub mod jobs;
pub mod limits;
pub mod metrics;
pub mod offline;
pub mod readiness;
pub mod recovery;
pub mod remote;
pub mod service;
pub mod spec;
pub mod spec_check;
pub mod status;
pub mod store;
pub mod sweeper;
pub mod tier;
pub mod time;
pub mod upstream;
pub mod url;
pub mod volatile;
pub mod worker;

use std::sync::Arc;

pub use config::Config;
pub use http::Server;
pub use service::Service;

pub use service::workers::spawn_background;

/// Open the data directory and serve on `listener`: what `upcache serve` does, for tests and
/// embedding. Must be called inside a multi-threaded tokio runtime.
pub fn start(
    config: Config,
    listener: std::net::TcpListener,
) -> Result<(Arc<Service>, Server), Box<dyn std::error::Error>> {
    start_with_clock(config, listener, time::Clock::system())
}

/// [`start`] keeping time with `clock` (tests advance a manual one instead of sleeping).
pub fn start_with_clock(
    config: Config,
    listener: std::net::TcpListener,
    clock: time::Clock,
) -> Result<(Arc<Service>, Server), Box<dyn std::error::Error>> {
    let app = Service::open_with_clock(config, tokio::runtime::Handle::current(), clock)?;
    let server = Server::start(app.clone(), listener)?;
    Ok((app, server))
}
