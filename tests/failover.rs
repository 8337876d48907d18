//! When upstream misbehaves: resuming a broken transfer with `Range` + `If-Range`, mirror
//! alternates when the primary is down, and the per-host circuit breaker.

mod common;

use common::server::*;
use common::upstream::*;

const PATH: &str = "/gnu/hello/hello-2.12.tar.gz";

fn sha256(data: &[u8]) -> String {
    let mut d = upcache::store::Digester::new();
    d.update(data);
    d.finish().sha256
}

/// A loopback port nobody listens on: connections to it are refused.
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn journal_events(srv: &TestServer) -> Vec<serde_json::Value> {
    std::fs::read_to_string(srv.data_dir().join("journal.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn assert_stored(srv: &TestServer, url: &str, body: &[u8]) {
    srv.app.flights.wait_idle().await;
    let (s, h, b) = srv.get_bytes(&srv.fetch_url(url)).await;
    assert_eq!(s, 200);
    assert_eq!(h["x-cache"], "HIT");
    assert_eq!(h["x-checksum-sha256"], sha256(body).as_str());
    assert_eq!(b, body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_transfer_resumes_with_range_and_if_range() {
    let up = Upstream::start().await;
    let body = random_bytes(1_000_000, 61);
    let route = Route::ok(body.clone()).header("ETag", "\"v1\"").ranges();
    up.route_seq(
        PATH,
        vec![route.clone().truncate_after(400_000), route.clone()],
    );
    let srv = TestServer::start().await;
    let (s, _, b) = srv.get_bytes(&srv.fetch_url(&up.url(PATH))).await;
    assert_eq!((s.as_u16(), b.len()), (200, body.len()));
    assert_eq!(b, body);
    let reqs = up.requests(PATH);
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].header("range"), None);
    assert_eq!(reqs[1].header("range"), Some("bytes=400000-"));
    assert_eq!(reqs[1].header("if-range"), Some("\"v1\""));
    assert_stored(&srv, &up.url(PATH), &body).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_uses_last_modified_when_the_etag_is_weak() {
    let up = Upstream::start().await;
    let body = random_bytes(300_000, 62);
    let lm = "Tue, 01 Aug 2023 10:00:00 GMT";
    let route = Route::ok(body.clone())
        .header("ETag", "W/\"weak\"")
        .header("Last-Modified", lm)
        .ranges();
    up.route_seq(PATH, vec![route.clone().truncate_after(100_000), route]);
    let srv = TestServer::start().await;
    let (_, _, b) = srv.get_bytes(&srv.fetch_url(&up.url(PATH))).await;
    assert_eq!(b, body);
    let reqs = up.requests(PATH);
    assert_eq!(reqs[1].header("range"), Some("bytes=100000-"));
    assert_eq!(reqs[1].header("if-range"), Some(lm));
    assert_stored(&srv, &up.url(PATH), &body).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_validator_or_range_support_the_retry_rereads_and_verifies() {
    let up = Upstream::start().await;
    let body = random_bytes(300_000, 63);
    // No ETag, no Last-Modified: a range could splice two versions, so none is asked.
    up.route_seq(
        "/a.tar.gz",
        vec![
            Route::ok(body.clone()).ranges().truncate_after(50_000),
            Route::ok(body.clone()).ranges(),
        ],
    );
    // A validator, but upstream ignores the range and sends the whole object again.
    let ignoring = Route::ok(body.clone()).header("ETag", "\"x\"");
    up.route_seq(
        "/b.tar.gz",
        vec![ignoring.clone().truncate_after(50_000), ignoring],
    );
    let srv = TestServer::start().await;
    for path in ["/a.tar.gz", "/b.tar.gz"] {
        let (_, _, b) = srv.get_bytes(&srv.fetch_url(&up.url(path))).await;
        assert_eq!(b, body, "{path}");
        assert_stored(&srv, &up.url(path), &body).await;
    }
    assert_eq!(up.requests("/a.tar.gz")[1].header("range"), None);
    assert_eq!(
        up.requests("/b.tar.gz")[1].header("range"),
        Some("bytes=50000-")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_replaced_during_the_retry_is_not_spliced() {
    let up = Upstream::start().await;
    let old = random_bytes(300_000, 64);
    let new = random_bytes(300_000, 65);
    up.route_seq(
        PATH,
        vec![
            Route::ok(old)
                .header("ETag", "\"old\"")
                .ranges()
                .truncate_after(100_000),
            // If-Range "old" does not match: the whole new object comes back as a 200.
            Route::ok(new).header("ETag", "\"new\"").ranges(),
        ],
    );
    let srv = TestServer::start().await;
    let r = srv.get(&srv.fetch_url(&up.url(PATH))).await;
    assert_eq!(r.status(), 200, "the body had started");
    assert!(r.bytes().await.is_err(), "the connection is aborted");
    srv.app.flights.wait_idle().await;
    assert!(srv.app.index.url(&up.url(PATH)).unwrap().is_none());
    let reqs = up.requests(PATH);
    assert_eq!(reqs[1].header("if-range"), Some("\"old\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_primary_is_replaced_by_its_mirror_and_the_audit_says_so() {
    let mirror = Upstream::start().await;
    let body = random_bytes(200_000, 66);
    mirror.route(
        "/mirror/gnu/hello/hello-2.12.tar.gz",
        Route::ok(body.clone()),
    );
    let port = dead_port();
    let primary = format!("http://127.0.0.1:{port}{PATH}");
    let alternate = mirror.url("/mirror/gnu/");
    let srv = TestServer::start_with(|c| {
        c.upstream.retries = 1;
        c.upstream.mirrors = vec![upcache::config::MirrorConfig {
            prefix: format!("http://127.0.0.1:{port}/gnu/"),
            alternates: vec![alternate.clone()],
        }];
    })
    .await;
    let (s, h, b) = srv.get_bytes(&srv.fetch_url(&primary)).await;
    assert_eq!(s, 200);
    assert_eq!(h["x-cache"], "MISS");
    assert_eq!(b, body);
    assert_eq!(mirror.hits("/mirror/gnu/hello/hello-2.12.tar.gz"), 1);
    // The primary URL is bound; the audit event names the mirror that served the bytes.
    assert_stored(&srv, &primary, &body).await;
    let events = journal_events(&srv);
    let fetched = events.iter().find(|e| e["event"] == "fetched").unwrap();
    assert_eq!(fetched["url"], primary.as_str());
    assert_eq!(
        fetched["upstream"]["final_url"],
        mirror.url("/mirror/gnu/hello/hello-2.12.tar.gz").as_str()
    );
    let detail = fetched["detail"].as_str().unwrap();
    assert!(detail.contains("served by mirror"), "{detail}");
    assert!(detail.contains("cannot connect"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_completes_what_the_primary_started() {
    let primary = Upstream::start().await;
    let mirror = Upstream::start().await;
    let body = random_bytes(500_000, 67);
    // The primary breaks mid-body on every attempt; the mirror has the same bytes.
    primary.route(PATH, Route::ok(body.clone()).truncate_after(200_000));
    mirror.route(PATH, Route::ok(body.clone()));
    let srv = TestServer::start_with(|c| {
        c.upstream.retries = 1;
        c.upstream.mirrors = vec![upcache::config::MirrorConfig {
            prefix: primary.url("/"),
            alternates: vec![mirror.url("/")],
        }];
    })
    .await;
    let (s, _, b) = srv.get_bytes(&srv.fetch_url(&primary.url(PATH))).await;
    assert_eq!(s, 200);
    assert_eq!(b, body);
    assert_eq!((primary.hits(PATH), mirror.hits(PATH)), (2, 1));
    assert_stored(&srv, &primary.url(PATH), &body).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_source_fails_the_answer_is_502_naming_them() {
    let mirror = Upstream::start().await;
    mirror.route(PATH, Route::status(503));
    let port = dead_port();
    let srv = TestServer::start_with(|c| {
        c.upstream.retries = 0;
        c.upstream.mirrors = vec![upcache::config::MirrorConfig {
            prefix: format!("http://127.0.0.1:{port}/"),
            alternates: vec![mirror.url("/")],
        }];
    })
    .await;
    let r = srv
        .get(&srv.fetch_url(&format!("http://127.0.0.1:{port}{PATH}")))
        .await;
    let (code, error, message) = error_code(r).await;
    assert_eq!((code, error.as_str()), (502, "upstream_failed"));
    assert!(message.contains("mirrors failed too"), "{message}");
    assert!(message.contains("503"), "{message}");
    // A 404 from the primary is an answer, not a failure: mirrors are not asked.
    let live = Upstream::start().await;
    let srv = TestServer::start_with(|c| {
        c.upstream.mirrors = vec![upcache::config::MirrorConfig {
            prefix: live.url("/"),
            alternates: vec![mirror.url("/")],
        }];
    })
    .await;
    let before = mirror.total_hits();
    let r = srv.get(&srv.fetch_url(&live.url("/missing.tar.gz"))).await;
    assert_eq!(error_code(r).await.0, 404);
    assert_eq!(mirror.total_hits(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_connect_failures_open_the_hosts_circuit_breaker() {
    let port = dead_port();
    let srv = TestServer::start_with(|c| c.upstream.retries = 0).await;
    let url = |i: usize| format!("http://127.0.0.1:{port}/f-{i}.tar.gz");
    for i in 0..upcache::upstream::breaker::THRESHOLD as usize {
        let (code, error, message) = error_code(srv.get(&srv.fetch_url(&url(i))).await).await;
        assert_eq!((code, error.as_str()), (502, "upstream_failed"));
        assert!(message.contains("cannot connect"), "{i}: {message}");
    }
    // From now on requests to that host fail at once, without trying to connect.
    let (code, error, message) = error_code(srv.get(&srv.fetch_url(&url(99))).await).await;
    assert_eq!((code, error.as_str()), (502, "upstream_failed"));
    assert!(
        message.contains(&format!("127.0.0.1:{port} is failing")),
        "{message}"
    );
    assert!(message.contains("not trying it again"), "{message}");
    // HEAD too.
    let r = srv
        .client
        .head(srv.fetch_url(&url(98)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    // Another host (or port) is not affected.
    let up = Upstream::start().await;
    up.route("/ok.tar.gz", Route::ok(random_bytes(10, 68)));
    let (s, _, _) = srv.get_bytes(&srv.fetch_url(&up.url("/ok.tar.gz"))).await;
    assert_eq!(s, 200);
}
