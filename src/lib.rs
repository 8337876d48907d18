//! upcache: a caching proxy and content-addressed store for upstream source archives.
//!
//! The folder layout is the architecture (see `shared/DESIGN.md`): `url` turns the three
//! request forms into one normalized upstream URL, `index` maps URLs and checksums to blobs,
//! `store` holds blob bytes, `upstream` talks to origin servers, `fill` runs one download per
//! URL and lets every client follow it, and `http` wires it all to actix-web.

pub mod config;
pub mod url;
