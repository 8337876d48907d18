//! Shared helpers for integration tests; each test binary includes this with `mod common;`.

// Every test binary compiles the whole helper but uses only part of it.
#![allow(dead_code)]

pub mod browser;
pub mod ftp;
pub mod intercept;
pub mod netns;
pub mod s3;
pub mod server;
pub mod source;
pub mod tls;
pub mod upstream;
