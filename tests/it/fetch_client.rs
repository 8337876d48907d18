//! `upcache fetch URL -o FILE`: the checksum the server announces is verified, and a stalled
//! server ends the download (exit 1, no file left behind) instead of hanging it.

use std::process::Command;

use crate::common::fixtures::output;
use crate::common::server::*;
use crate::common::upstream::*;

fn fetch(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_upcache"));
    c.arg("fetch").args(args).env_remove("UPCACHE_SERVER");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_are_verified_against_their_checksum_header() {
    let up = Upstream::start().await;
    let body = random_bytes(70_000, 120);
    up.route("/f/tool-3.0.tar.gz", Route::ok(body.clone()));
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = up.url("/f/tool-3.0.tar.gz");
    for (name, cache) in [("miss.tar.gz", "MISS"), ("hit.tar.gz", "HIT")] {
        let out = dir.path().join(name);
        let o = output(fetch(&[
            &url,
            "-o",
            out.to_str().unwrap(),
            "--server",
            &srv.base,
        ]))
        .await;
        assert!(
            o.status.success(),
            "{cache}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(std::fs::read(&out).unwrap(), body, "{cache}");
        srv.app.flights.wait_idle().await;
    }
    assert_eq!(up.hits("/f/tool-3.0.tar.gz"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checksum_mismatch_fails_and_leaves_no_file() {
    // A server whose body does not match the checksum it announces.
    let server = Upstream::start().await;
    server.route(
        "/fetch",
        Route::ok(random_bytes(10_000, 121)).header("X-Checksum-Sha256", &"0".repeat(64)),
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.tar.gz");
    let o = output(fetch(&[
        "http://example.org/x.tar.gz",
        "-o",
        out.to_str().unwrap(),
        "--server",
        &server.base_url(),
    ]))
    .await;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("sha256 mismatch"), "{stderr}");
    assert!(!out.exists());
    assert!(!dir.path().join("x.tar.gz.part").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_server_ends_the_download_after_the_read_timeout() {
    let server = Upstream::start().await;
    let gate = Gate::new();
    server.route(
        "/fetch",
        Route::ok(random_bytes(100_000, 122)).hold_at(1000, gate.clone()),
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("stalled.tar.gz");
    let o = output(fetch(&[
        "http://example.org/stalled.tar.gz",
        "-o",
        out.to_str().unwrap(),
        "--server",
        &server.base_url(),
        "--read-timeout",
        "1s",
    ]))
    .await;
    gate.open();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("stalled after 1000 bytes"), "{stderr}");
    assert!(!out.exists());
    assert!(!dir.path().join("stalled.tar.gz.part").exists());
}
