//! The integration tests, one binary (as ripgrep does): a module per area, sharing the
//! helpers in `common/`. Run one area with `cargo nextest run -E 'test(/^cli::/)'`.

mod common;

mod build_farm;
mod checksums;
mod cli;
mod deploy;
mod docs;
mod durability;
mod failover;
mod fetch_client;
mod ftp;
mod gateway;
mod hardening;
mod hits;
mod hygiene;
mod intercept;
mod limits;
mod misses;
mod openapi;
mod policy;
mod prefetch;
mod process;
mod s3;
mod spec;
mod status;
mod tier;
mod tunnel;
mod uploads;
mod upstream_selftest;
mod volatile;
