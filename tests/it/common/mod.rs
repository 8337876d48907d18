//! Helpers the integration-test areas share (the one test binary compiles them once).

pub mod browser;
pub mod fixtures;
pub mod ftp;
pub mod intercept;
pub mod netns;
pub mod raw;
pub mod s3;
pub mod server;
pub mod source;
pub mod tls;
pub mod upstream;
