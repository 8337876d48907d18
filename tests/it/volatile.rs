//! Volatile URLs (SPEC 9, issue 13 item 2): repository metadata is served from the cache for
//! `cache.volatile_ttl`, then revalidated with upstream (conditional, single flight): a 304
//! answers `X-Cache: REVALIDATED`, new bytes are rebound (audit `updated`, not `drift`), and a
//! failing upstream gets the cached copy as `STALE`. Every other URL stays immutable.
//!
//! The clock is driven by the configuration: `volatile_ttl = 0` makes every request after the
//! first one due for revalidation, `1h` makes none.

use std::time::Duration;

use crate::common::server::*;
use crate::common::upstream::*;
use serde_json::Value;

const REPOMD: &str = "/repo/x86_64/repodata/repomd.xml";
const LM1: &str = "Tue, 01 Dec 2026 10:00:00 GMT";
const LM2: &str = "Wed, 02 Dec 2026 10:00:00 GMT";

/// Wait for a condition no event announces (a request joining a fill inside the server).
async fn until(mut cond: impl FnMut() -> bool) {
    while !cond() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn metadata(body: &[u8], etag: &str, last_modified: &str) -> Route {
    Route::ok(body.to_vec())
        .header("Content-Type", "text/xml")
        .header("ETag", etag)
        .header("Last-Modified", last_modified)
        .conditional()
}

async fn server(ttl: &str) -> TestServer {
    let ttl = humantime::parse_duration(ttl).unwrap();
    TestServer::start_with(|c| c.cache.volatile_ttl = ttl).await
}

/// An origin with `repomd.xml` (ETag `"v1"`, Last-Modified `LM1`), fetched once through a
/// server with `volatile_ttl = ttl`: (origin, server, URL, its bytes).
async fn cached_repomd(ttl: &str) -> (Upstream, TestServer, String, Vec<u8>) {
    let up = Upstream::start().await;
    let v1 = b"<repomd>1</repomd>".to_vec();
    up.route(REPOMD, metadata(&v1, "\"v1\"", LM1));
    let srv = server(ttl).await;
    let url = up.url(REPOMD);
    let (_, h, body) = srv.get_bytes(&srv.fetch_url(&url)).await;
    assert_eq!(
        (h["x-cache"].to_str().unwrap(), &body[..]),
        ("MISS", &v1[..])
    );
    srv.app.flights.wait_idle().await;
    (up, srv, url, v1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volatile_url_is_a_hit_within_its_ttl_and_never_immutable() {
    let (up, srv, url, v1) = cached_repomd("1h").await;
    up.route("/src/pkg-1.0.tar.gz", Route::ok(random_bytes(5000, 1)));
    // Upstream changes, but the TTL has not passed: the cached copy, without asking.
    up.route(REPOMD, metadata(b"<repomd>2</repomd>", "\"v2\"", LM2));
    for _ in 0..3 {
        let (_, h, body) = srv.get_bytes(&srv.fetch_url(&url)).await;
        assert_eq!(
            (h["x-cache"].to_str().unwrap(), &body[..]),
            ("HIT", &v1[..])
        );
        assert_eq!(h["cache-control"], "no-cache", "volatile: never immutable");
    }
    // The proxy form (what dnf sends) is the same URL.
    let r = srv.proxy_client().get(&url).send().await.unwrap();
    assert_eq!(r.headers()["x-cache"], "HIT");
    assert_eq!(r.headers()["cache-control"], "no-cache");
    assert_eq!(up.hits(REPOMD), 1);

    // A source archive stays immutable.
    let tarball = up.url("/src/pkg-1.0.tar.gz");
    srv.get_bytes(&srv.fetch_url(&tarball)).await;
    srv.app.flights.wait_idle().await;
    let (_, h, _) = srv.get_bytes(&srv.fetch_url(&tarball)).await;
    assert_eq!(h["x-cache"], "HIT");
    assert_eq!(h["cache-control"], "public, max-age=31536000, immutable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_ttl_a_conditional_304_answers_revalidated() {
    let (up, srv, url, v1) = cached_repomd("0s").await;

    let (status, h, body) = srv.get_bytes(&srv.fetch_url(&url)).await;
    assert_eq!(status, 200);
    assert_eq!(h["x-cache"], "REVALIDATED");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(&body[..], &v1[..]);
    assert_eq!(up.hits(REPOMD), 2);
    let asked = &up.requests(REPOMD)[1];
    assert_eq!(asked.header("if-none-match"), Some("\"v1\""));
    assert_eq!(asked.header("if-modified-since"), Some(LM1));
    // The first request was not conditional.
    assert_eq!(up.requests(REPOMD)[0].header("if-none-match"), None);

    // A client's own conditional request: 304 from the cache, still labelled.
    let etag = h["etag"].to_str().unwrap().to_owned();
    let r = srv
        .client
        .get(srv.fetch_url(&url))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["x-cache"], "REVALIDATED");
    assert_eq!(up.hits(REPOMD), 3);
    let m = srv.get(&srv.url("/metrics")).await.text().await.unwrap();
    assert!(
        m.lines().any(|l| l.starts_with("upcache_requests_total")
            && l.contains("result=\"revalidated\"")
            && !l.ends_with(" 0")),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_last_modified_is_quoted_when_upstream_sent_no_etag() {
    let up = Upstream::start().await;
    let path = "/debian/dists/stable/InRelease";
    let route = Route::ok(b"Origin: Debian\n".to_vec())
        .header("Last-Modified", LM1)
        .conditional();
    up.route(path, route);
    let srv = server("0s").await;
    let url = up.url(path);
    srv.get_bytes(&srv.mirror_url(&url)).await;
    srv.app.flights.wait_idle().await;
    let (_, h, _) = srv.get_bytes(&srv.mirror_url(&url)).await;
    assert_eq!(h["x-cache"], "REVALIDATED");
    let asked = &up.requests(path)[1];
    assert_eq!(asked.header("if-none-match"), None);
    assert_eq!(asked.header("if-modified-since"), Some(LM1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_bytes_are_stored_and_rebound_with_an_updated_event_not_drift() {
    let up = Upstream::start().await;
    let v1 = b"<repomd>1</repomd>".to_vec();
    let v2 = b"<repomd>2, with a new primary</repomd>".to_vec();
    up.route(REPOMD, metadata(&v1, "\"v1\"", LM1));
    let hook = Upstream::start().await;
    hook.route("/hook", Route::status(204));
    let srv = TestServer::start_with(|c| {
        c.cache.volatile_ttl = Duration::ZERO;
        c.alerts.webhook_url = hook.url("/hook");
    })
    .await;
    let url = up.url(REPOMD);
    srv.get_bytes(&srv.fetch_url(&url)).await;
    srv.app.flights.wait_idle().await;

    up.route(REPOMD, metadata(&v2, "\"v2\"", LM2));
    let (status, h, body) = srv.get_bytes(&srv.fetch_url(&url)).await;
    assert_eq!(status, 200);
    assert_eq!(&body[..], &v2[..], "the new metadata at once");
    assert_eq!(h["x-cache"], "MISS");
    srv.app.flights.wait_idle().await;
    // Bound now: the next revalidation quotes the new validators and gets a 304.
    let (_, h, body) = srv.get_bytes(&srv.fetch_url(&url)).await;
    assert_eq!(
        (h["x-cache"].to_str().unwrap(), &body[..]),
        ("REVALIDATED", &v2[..])
    );
    assert_eq!(
        up.requests(REPOMD)[2].header("if-none-match"),
        Some("\"v2\"")
    );
    let lookup: Value = srv
        .get(&srv.url(&format!("/api/v1/lookup?sha256={}", sha256_hex(&v2))))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(lookup["urls"], serde_json::json!([url]), "{lookup}");

    let events = srv.journal_events();
    let updated: Vec<&Value> = events.iter().filter(|e| e["event"] == "updated").collect();
    assert_eq!(updated.len(), 1, "{events:?}");
    assert_eq!(updated[0]["url"], url.as_str());
    assert_eq!(updated[0]["sha256"], sha256_hex(&v2).as_str());
    let detail = updated[0]["detail"].as_str().unwrap();
    let old_b3 = events[0]["blake3"].as_str().unwrap();
    assert!(detail.contains(old_b3), "{detail}");
    assert!(!events.iter().any(|e| e["event"] == "drift"), "{events:?}");

    // The binding survives a restart, even one that rebuilds the index from the journal.
    let (dir, cfg) = srv.shut_down().await;
    std::fs::remove_dir_all(cfg.storage.data_dir.join("index")).unwrap();
    let srv = TestServer::start_in(dir, cfg);
    let rebuilt = srv.app.cache.index.url(&url).unwrap().expect("still bound");
    assert_eq!(rebuilt.blob.digests.sha256, sha256_hex(&v2));
    // No drift alert was sent (alerts are sent right away; an `updated` raises none).
    assert_eq!(hook.hits("/hook"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_upstream_gets_the_cached_copy_as_stale_at_once() {
    let up = Upstream::start().await;
    let v1 = b"<repomd>1</repomd>".to_vec();
    up.route(REPOMD, metadata(&v1, "\"v1\"", LM1));
    // Retries would make clients wait: a revalidation asks once.
    let srv = TestServer::start_with(|c| {
        c.cache.volatile_ttl = Duration::ZERO;
        c.upstream.retries = 3;
        c.upstream.retry_backoff = Duration::from_secs(30);
    })
    .await;
    let url = up.url(REPOMD);
    srv.get_bytes(&srv.fetch_url(&url)).await;
    srv.app.flights.wait_idle().await;

    up.route(REPOMD, Route::status(503));
    let (status, h, body) = srv.get_bytes(&srv.fetch_url(&url)).await;
    assert_eq!(status, 200);
    assert_eq!(h["x-cache"], "STALE");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(&body[..], &v1[..]);
    assert_eq!(up.hits(REPOMD), 2, "one attempt, no retries");

    // Gone from upstream (404) and unreachable: still the cached copy.
    up.route(REPOMD, Route::status(404));
    let (_, h, body) = srv.get_bytes(&srv.fetch_url(&url)).await;
    assert_eq!(
        (h["x-cache"].to_str().unwrap(), &body[..]),
        ("STALE", &v1[..])
    );
    drop(up);
    let (_, h, body) = srv.get_bytes(&srv.fetch_url(&url)).await;
    assert_eq!(
        (h["x-cache"].to_str().unwrap(), &body[..]),
        ("STALE", &v1[..])
    );
    srv.app.flights.wait_idle().await;
    // A failed revalidation is no download failure: nothing journaled beyond the fetch.
    let events: Vec<String> = srv
        .journal_events()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(events, ["fetched"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_after_the_ttl_make_one_upstream_revalidation() {
    let (up, srv, url, v1) = cached_repomd("0s").await;

    let gate = Gate::new();
    up.route(
        REPOMD,
        metadata(&v1, "\"v1\"", LM1).hold_headers(gate.clone()),
    );
    let joins = srv.app.cache.metrics.coalesced_joins.get();
    let n = 20;
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (client, u) = (srv.client.clone(), srv.fetch_url(&url));
            tokio::spawn(async move {
                let r = client.get(u).send().await.unwrap();
                let x = r.headers()["x-cache"].to_str().unwrap().to_owned();
                (x, r.bytes().await.unwrap())
            })
        })
        .collect();
    gate.reached().await;
    // Every other request joined the one revalidation before upstream answers.
    until(|| srv.app.cache.metrics.coalesced_joins.get() == joins + n - 1).await;
    gate.open();
    for t in tasks {
        let (x, body) = t.await.unwrap();
        assert_eq!((x.as_str(), &body[..]), ("REVALIDATED", &v1[..]));
    }
    assert_eq!(up.hits(REPOMD), 2, "one revalidation for {n} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volatile_globs_are_configurable_and_can_be_turned_off() {
    let up = Upstream::start().await;
    up.route("/meta/index.json", metadata(b"[1]", "\"a\"", LM1));
    up.route(REPOMD, metadata(b"<repomd/>", "\"r\"", LM1));
    let srv = TestServer::start_with(|c| {
        c.cache.volatile = vec!["/meta/*.json".into()];
        c.cache.volatile_ttl = Duration::ZERO;
    })
    .await;
    for path in ["/meta/index.json", REPOMD] {
        srv.get_bytes(&srv.fetch_url(&up.url(path))).await;
    }
    srv.app.flights.wait_idle().await;
    let (_, h, _) = srv
        .get_bytes(&srv.fetch_url(&up.url("/meta/index.json")))
        .await;
    assert_eq!(h["x-cache"], "REVALIDATED");
    // Not in the configured list any more: immutable.
    let (_, h, _) = srv.get_bytes(&srv.fetch_url(&up.url(REPOMD))).await;
    assert_eq!(h["x-cache"], "HIT");
    assert_eq!(h["cache-control"], "public, max-age=31536000, immutable");
    assert_eq!(up.hits(REPOMD), 1);
}

#[test]
fn a_glob_that_cannot_match_a_path_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "[cache]\nvolatile = [\"repodata/repomd.xml\"]\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_upcache"))
        .args(["config", "check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cache.volatile"), "{err}");
    assert!(err.contains("repodata/repomd.xml"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_cannot_store_serves_the_cached_copy_as_stale_without_asking() {
    let (up, srv, url, v1) = cached_repomd("0s").await;
    // Unready (as when the bucket of an s3 tier is unreachable): nothing new can be stored.
    srv.app
        .readiness
        .record_remote(&Err("bucket unreachable (test)".into()));
    let (status, h, body) = srv.get_bytes(&srv.fetch_url(&url)).await;
    assert_eq!(status, 200);
    assert_eq!(
        (h["x-cache"].to_str().unwrap(), &body[..]),
        ("STALE", &v1[..])
    );
    assert_eq!(up.hits(REPOMD), 1);
    // Ready again: revalidated.
    srv.app.readiness.record_remote(&Ok(()));
    let (_, h, _) = srv.get_bytes(&srv.fetch_url(&url)).await;
    assert_eq!(h["x-cache"], "REVALIDATED");
    assert_eq!(up.hits(REPOMD), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_ignoring_conditionals_and_sending_the_same_bytes_changes_nothing() {
    let up = Upstream::start().await;
    let v1 = b"<repomd>1</repomd>".to_vec();
    // No `.conditional()`: every GET is a 200 with the whole body.
    up.route(REPOMD, Route::ok(v1.clone()).header("ETag", "\"v1\""));
    let srv = server("0s").await;
    let url = up.url(REPOMD);
    for _ in 0..3 {
        let (status, _, body) = srv.get_bytes(&srv.fetch_url(&url)).await;
        assert_eq!((status.as_u16(), &body[..]), (200, &v1[..]));
        srv.app.flights.wait_idle().await;
    }
    assert_eq!(up.hits(REPOMD), 3);
    let events: Vec<Value> = srv.journal_events();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["fetched"], "the same bytes are no update");
    assert!(srv.temp_files().is_empty(), "{:?}", srv.temp_files());
}

/// Run `POST /api/v1/revalidate` for `url` with an admin token; the job's status.
async fn revalidate_job(srv: &TestServer, token: &str, url: &str) -> Value {
    let r = srv
        .client
        .post(srv.url("/api/v1/revalidate"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "urls": [url] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let started: Value = r.json().await.unwrap();
    let id = started["id"].as_str().unwrap();
    let kind = upcache::jobs::Kind::Revalidate;
    srv.app.jobs.get(kind, id).unwrap().wait().await;
    let status = srv
        .client
        .get(srv.url(started["status_url"].as_str().unwrap()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    status.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_revalidate_job_rebinds_changed_metadata_instead_of_reporting_drift() {
    let up = Upstream::start().await;
    let v1 = b"<repomd>1</repomd>".to_vec();
    let v2 = b"<repomd>2</repomd>".to_vec();
    up.route(REPOMD, metadata(&v1, "\"v1\"", LM1));
    let (token, sha) = upcache::auth::new_token();
    let srv = TestServer::start_with(|c| {
        c.cache.volatile_ttl = Duration::from_secs(3600);
        c.auth.tokens = vec![upcache::config::TokenConfig {
            name: "ops".into(),
            sha256: sha,
            scopes: vec!["admin".into()],
        }];
    })
    .await;
    let url = up.url(REPOMD);
    srv.get_bytes(&srv.fetch_url(&url)).await;
    srv.app.flights.wait_idle().await;

    // Unchanged upstream: a 304, whatever the TTL says.
    let status = revalidate_job(&srv, &token, &url).await;
    assert_eq!(status["items"][0]["state"], "unchanged", "{status}");
    assert_eq!(up.hits(REPOMD), 2);

    up.route(REPOMD, metadata(&v2, "\"v2\"", LM2));
    let status = revalidate_job(&srv, &token, &url).await;
    let item = &status["items"][0];
    assert_eq!(item["state"], "cached", "{status}");
    assert_eq!(item["sha256"], sha256_hex(&v2).as_str(), "{status}");
    assert_eq!(status["drift"], 0, "{status}");
    srv.app.flights.wait_idle().await;
    let kinds: Vec<String> = srv
        .journal_events()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["fetched", "updated"]);
    // Validated just now: the new bytes are a hit.
    let (_, h, body) = srv.get_bytes(&srv.fetch_url(&url)).await;
    assert_eq!(
        (h["x-cache"].to_str().unwrap(), &body[..]),
        ("HIT", &v2[..])
    );
    assert_eq!(up.hits(REPOMD), 3);
}
