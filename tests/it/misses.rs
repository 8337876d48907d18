//! Misses: stream-through, single flight, disconnecting clients, upstream failures, retries,
//! timeouts, negative caching, redirects, size and type policy, expected checksums.

use std::time::Duration;

use crate::common::server::*;
use crate::common::upstream::*;
use futures::StreamExt;

const PATH: &str = "/dist/tool-2.0.tar.gz";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miss_streams_before_upstream_finishes_with_miss_headers() {
    let up = Upstream::start().await;
    let body = random_bytes(500_000, 1);
    let gate = Gate::new();
    up.route(PATH, Route::ok(body.clone()).hold_at(100_000, gate.clone()));
    let srv = TestServer::start().await;
    let r = srv.get(&srv.fetch_url(&up.url(PATH))).await;
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["x-cache"], "MISS");
    assert_eq!(h["content-length"], "500000");
    assert_eq!(
        h["content-disposition"],
        "attachment; filename=\"tool-2.0.tar.gz\""
    );
    assert!(h.contains_key("content-type"));
    for absent in ["etag", "x-checksum-md5", "x-checksum-sha256"] {
        assert!(!h.contains_key(absent), "{absent} must not be on a MISS");
    }
    // The first 100 000 bytes arrive while upstream is still holding the rest.
    let mut stream = r.bytes_stream();
    let mut got = Vec::new();
    while got.len() < 100_000 {
        got.extend_from_slice(&stream.next().await.unwrap().unwrap());
    }
    assert!(!gate.is_open());
    gate.open();
    while let Some(chunk) = stream.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(got, body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_gets_make_one_upstream_request() {
    let up = Upstream::start().await;
    let body = random_bytes(2_000_000, 2);
    let gate = Gate::new();
    up.route(PATH, Route::ok(body.clone()).hold_at(300_000, gate.clone()));
    let srv = TestServer::start().await;
    let url = srv.fetch_url(&up.url(PATH));
    // All 50 get their headers while upstream is held mid-body, so all of them joined.
    let responses = futures::future::join_all((0..50).map(|_| srv.client.get(&url).send())).await;
    gate.open();
    let bodies = futures::future::join_all(responses.into_iter().map(|r| r.unwrap().bytes())).await;
    for b in bodies {
        assert_eq!(b.unwrap(), body);
    }
    assert_eq!(up.hits(PATH), 1);
    srv.app.flights.wait_idle().await;
    let (_, h, got) = srv.get_bytes(&url).await;
    assert_eq!((h["x-cache"].to_str().unwrap(), got), ("HIT", body));
    assert_eq!(up.hits(PATH), 1);
    assert!(srv.app.cache.metrics.coalesced_joins.get() >= 49);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_request_joining_a_fill_is_answered_when_its_bytes_arrive() {
    let up = Upstream::start().await;
    let body = random_bytes(400_000, 3);
    let gate = Gate::new();
    up.route(PATH, Route::ok(body.clone()).hold_at(200_000, gate.clone()));
    let srv = TestServer::start().await;
    let url = srv.fetch_url(&up.url(PATH));
    let first = srv.get(&url).await; // starts the fill
    gate.reached().await;
    let r = srv
        .client
        .get(&url)
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 1000-1999/400000");
    assert_eq!(r.headers()["x-cache"], "MISS");
    assert_eq!(r.bytes().await.unwrap(), body.slice(1000..2000));
    assert!(!gate.is_open(), "answered before the download finished");
    gate.open();
    assert_eq!(first.bytes().await.unwrap(), body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_disconnects_mid_miss_still_leaves_a_complete_blob() {
    let up = Upstream::start().await;
    let body = random_bytes(1_000_000, 4);
    let gate = Gate::new();
    up.route(PATH, Route::ok(body.clone()).hold_at(200_000, gate.clone()));
    let srv = TestServer::start().await;
    let url = srv.fetch_url(&up.url(PATH));
    let r = srv.get(&url).await;
    let mut stream = r.bytes_stream();
    stream.next().await.unwrap().unwrap();
    drop(stream); // the client goes away
    gate.open();
    srv.app.flights.wait_idle().await;
    let (_, h, got) = srv.get_bytes(&url).await;
    assert_eq!(h["x-cache"], "HIT");
    assert_eq!(got, body);
    assert_eq!(up.hits(PATH), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_closing_early_aborts_the_client_and_the_next_request_refetches() {
    let up = Upstream::start().await;
    let body = random_bytes(300_000, 5);
    let gate = Gate::new();
    up.route_seq(
        PATH,
        vec![
            Route::ok(body.clone())
                .hold_at(50_000, gate.clone())
                .truncate_after(100_000),
            Route::ok(body.clone()),
        ],
    );
    let srv = TestServer::start_with(|c| c.upstream.retries = 0).await;
    let url = srv.fetch_url(&up.url(PATH));
    let r = srv.get(&url).await;
    assert_eq!(r.status(), 200, "headers were already sent");
    gate.open();
    assert!(
        r.bytes().await.is_err(),
        "a short body is never a clean end"
    );
    srv.app.flights.wait_idle().await;
    assert!(srv.temp_files().is_empty(), "nothing partial is kept");
    assert!(srv.app.cache.index.url(&up.url(PATH)).unwrap().is_none());
    let (s, h, got) = srv.get_bytes(&url).await;
    assert_eq!((s.as_u16(), h["x-cache"].to_str().unwrap()), (200, "MISS"));
    assert_eq!(got, body);
    assert_eq!(up.hits(PATH), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_transfer_is_retried_and_the_client_never_notices() {
    let up = Upstream::start().await;
    let body = random_bytes(300_000, 6);
    up.route_seq(
        PATH,
        vec![
            Route::ok(body.clone()).truncate_after(150_000),
            Route::ok(body.clone()).chunk_size(7_000),
        ],
    );
    let srv = TestServer::start().await;
    let (s, _, got) = srv.get_bytes(&srv.fetch_url(&up.url(PATH))).await;
    assert_eq!(s, 200);
    assert_eq!(got, body);
    assert_eq!(up.hits(PATH), 2);
    srv.app.flights.wait_idle().await;
    let lookup = srv.app.cache.index.url(&up.url(PATH)).unwrap().unwrap();
    assert_eq!(lookup.blob.size, 300_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_that_returns_different_bytes_fails_instead_of_splicing() {
    let up = Upstream::start().await;
    let (a, b) = (random_bytes(200_000, 7), random_bytes(200_000, 8));
    up.route_seq(
        PATH,
        vec![Route::ok(a).truncate_after(100_000), Route::ok(b)],
    );
    let srv = TestServer::start().await;
    let r = srv.get(&srv.fetch_url(&up.url(PATH))).await;
    assert!(r.bytes().await.is_err());
    srv.app.flights.wait_idle().await;
    assert!(srv.app.cache.index.url(&up.url(PATH)).unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_upstream_succeeds_after_retries() {
    let up = Upstream::start().await;
    let body = random_bytes(10_000, 9);
    up.route_seq(
        PATH,
        vec![
            Route::status(500),
            Route::status(503),
            Route::ok(body.clone()),
        ],
    );
    let srv = TestServer::start().await;
    let (s, _, got) = srv.get_bytes(&srv.fetch_url(&up.url(PATH))).await;
    assert_eq!((s.as_u16(), got), (200, body));
    assert_eq!(up.hits(PATH), 3);
    assert_eq!(srv.app.cache.metrics.upstream_retries.get(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_5xx_is_502_upstream_failed_after_all_retries() {
    let up = Upstream::start().await;
    up.route(PATH, Route::status(500));
    let srv = TestServer::start_with(|c| c.upstream.retries = 2).await;
    let r = srv.get(&srv.fetch_url(&up.url(PATH))).await;
    let (status, code, msg) = error_code(r).await;
    assert_eq!((status, code.as_str()), (502, "upstream_failed"), "{msg}");
    assert!(msg.contains("500"), "{msg}");
    assert_eq!(up.hits(PATH), 3);
    srv.app.flights.wait_idle().await;
    let journal = std::fs::read_to_string(srv.data_dir().join("journal.jsonl")).unwrap();
    assert!(
        journal.contains("\"event\":\"upstream_failed\""),
        "{journal}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_upstream_is_504_upstream_timeout() {
    let up = Upstream::start().await;
    up.route(PATH, Route::ok("x").hang());
    let srv = TestServer::start_with(|c| {
        c.upstream.retries = 0;
        c.upstream.read_timeout = Duration::from_millis(300);
    })
    .await;
    let r = srv.get(&srv.fetch_url(&up.url(PATH))).await;
    let (status, code, msg) = error_code(r).await;
    assert_eq!((status, code.as_str()), (504, "upstream_timeout"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_body_aborts_the_client() {
    let up = Upstream::start().await;
    let gate = Gate::new(); // never opened
    up.route(
        PATH,
        Route::ok(random_bytes(100_000, 10)).hold_at(10_000, gate),
    );
    let srv = TestServer::start_with(|c| {
        c.upstream.retries = 0;
        c.upstream.read_timeout = Duration::from_millis(300);
    })
    .await;
    let r = srv.get(&srv.fetch_url(&up.url(PATH))).await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_502() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let srv = TestServer::start_with(|c| c.upstream.retries = 1).await;
    let r = srv
        .get(&srv.fetch_url(&format!("http://127.0.0.1:{port}/x.tar.gz")))
        .await;
    let (status, code, _) = error_code(r).await;
    assert_eq!((status, code.as_str()), (502, "upstream_failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_is_remembered_for_negative_ttl() {
    let up = Upstream::start().await;
    up.route("/gone.tar.gz", Route::status(410));
    let srv = TestServer::start().await;
    for form in ["missing.tar.gz", "gone.tar.gz"] {
        let url = up.url(&format!("/{form}"));
        for _ in 0..2 {
            let r = srv.get(&srv.fetch_url(&url)).await;
            let (status, code, _) = error_code(r).await;
            assert_eq!((status, code.as_str()), (404, "not_found"));
        }
        assert_eq!(
            up.hits(&format!("/{form}")),
            1,
            "second 404 served from memory"
        );
    }
    // With negative caching off, every request asks again.
    let srv = TestServer::start_with(|c| c.cache.negative_ttl = Duration::ZERO).await;
    let url = up.url("/other.tar.gz");
    for _ in 0..2 {
        assert_eq!(srv.get(&srv.fetch_url(&url)).await.status(), 404);
    }
    assert_eq!(up.hits("/other.tar.gz"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_followed_and_the_final_url_recorded() {
    let up = Upstream::start().await;
    let body = random_bytes(5_000, 11);
    up.route("/old/a.tar.gz", Route::redirect(302, "/mid/a.tar.gz"));
    up.route(
        "/mid/a.tar.gz",
        Route::redirect(301, &up.url("/new/a.tar.gz")),
    );
    up.route("/new/a.tar.gz", Route::ok(body.clone()));
    let srv = TestServer::start().await;
    let (s, _, got) = srv
        .get_bytes(&srv.fetch_url(&up.url("/old/a.tar.gz")))
        .await;
    assert_eq!((s.as_u16(), got), (200, body));
    srv.app.flights.wait_idle().await;
    let entry = srv
        .app
        .cache
        .index
        .url(&up.url("/old/a.tar.gz"))
        .unwrap()
        .unwrap();
    assert_eq!(entry.record.final_url, up.url("/new/a.tar.gz"));

    // More than 10 hops is an upstream failure.
    for i in 0..12 {
        up.route(
            &format!("/loop{i}"),
            Route::redirect(302, &format!("/loop{}", i + 1)),
        );
    }
    let r = srv.get(&srv.fetch_url(&up.url("/loop0"))).await;
    assert_eq!(error_code(r).await.1, "upstream_failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upstream_is_stored_and_streamed() {
    let up = Upstream::start().await;
    let body = random_bytes(250_000, 12);
    up.route(PATH, Route::ok(body.clone()).chunked().chunk_size(10_000));
    let srv = TestServer::start().await;
    let r = srv.get(&srv.fetch_url(&up.url(PATH))).await;
    assert!(!r.headers().contains_key("content-length"));
    assert_eq!(r.bytes().await.unwrap(), body);
    srv.app.flights.wait_idle().await;
    let (_, h, got) = srv.get_bytes(&srv.fetch_url(&up.url(PATH))).await;
    assert_eq!((h["x-cache"].to_str().unwrap(), got), ("HIT", body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_over_max_object_size_are_refused_and_never_stored() {
    let up = Upstream::start().await;
    up.route("/big.tar.gz", Route::ok(random_bytes(50_000, 13)));
    let gate = Gate::new();
    up.route(
        "/big-chunked.tar.gz",
        Route::ok(random_bytes(50_000, 13))
            .chunked()
            .chunk_size(5_000)
            .hold_at(10_000, gate.clone()),
    );
    let srv = TestServer::start_with(|c| c.upstream.max_object_size = 20_000).await;
    let r = srv.get(&srv.fetch_url(&up.url("/big.tar.gz"))).await;
    let (status, code, _) = error_code(r).await;
    assert_eq!((status, code.as_str()), (413, "too_large"));
    // Without a declared length, the size is noticed while streaming: the client is cut off.
    let r = srv
        .get(&srv.fetch_url(&up.url("/big-chunked.tar.gz")))
        .await;
    assert_eq!(r.status(), 200);
    gate.open();
    assert!(r.bytes().await.is_err());
    srv.app.flights.wait_idle().await;
    assert_eq!(srv.app.cache.index.stats().blobs, 0);
    assert!(srv.temp_files().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_extensions_and_content_types() {
    let up = Upstream::start().await;
    up.route("/movie.mp4", Route::ok("video"));
    up.route(
        "/clip",
        Route::ok("video").header("Content-Type", "video/webm"),
    );
    let srv = TestServer::start().await;
    let r = srv.get(&srv.fetch_url(&up.url("/movie.mp4"))).await;
    let (status, code, _) = error_code(r).await;
    assert_eq!((status, code.as_str()), (403, "denied_by_policy"));
    assert_eq!(up.hits("/movie.mp4"), 0, "refused without asking upstream");
    let r = srv.get(&srv.fetch_url(&up.url("/clip"))).await;
    let (status, code, _) = error_code(r).await;
    assert_eq!((status, code.as_str()), (403, "denied_by_policy"));
    srv.app.flights.wait_idle().await;
    assert_eq!(srv.app.cache.index.stats().blobs, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expected_checksum_mismatch_on_a_miss_is_never_a_complete_response() {
    let up = Upstream::start().await;
    let body = random_bytes(100_000, 14);
    up.route(PATH, Route::ok(body.clone()));
    up.route("/chunked.tar.gz", Route::ok(body.clone()).chunked());
    let srv = TestServer::start().await;
    let wrong = "0123456789abcdef0123456789abcdef";
    for path in [PATH, "/chunked.tar.gz"] {
        let r = srv
            .get(&format!("{}&md5={wrong}", srv.fetch_url(&up.url(path))))
            .await;
        match r.bytes().await {
            Err(_) => {}
            Ok(b) => assert!(b.len() < body.len(), "{path}: complete body delivered"),
        }
        srv.app.flights.wait_idle().await;
        assert!(
            srv.app.cache.index.url(&up.url(path)).unwrap().is_none(),
            "mismatching content is not bound"
        );
    }
    let journal = std::fs::read_to_string(srv.data_dir().join("journal.jsonl")).unwrap();
    assert!(
        journal.contains("\"event\":\"integrity_failed\""),
        "{journal}"
    );

    // The right checksum on a miss: a normal, complete response that gets stored.
    let md5 = {
        let mut d = upcache::store::Digester::new();
        d.update(&body);
        d.finish().md5
    };
    let (s, _, got) = srv
        .get_bytes(&format!("{}&md5={md5}", srv.fetch_url(&up.url(PATH))))
        .await;
    assert_eq!((s.as_u16(), got), (200, body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_on_a_miss_asks_upstream_and_stores_nothing() {
    let up = Upstream::start().await;
    up.route(
        PATH,
        Route::ok(random_bytes(4_321, 15)).header("Last-Modified", "Wed, 01 Jan 2025 00:00:00 GMT"),
    );
    let srv = TestServer::start().await;
    let r = srv
        .client
        .head(srv.fetch_url(&up.url(PATH)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cache"], "MISS");
    assert_eq!(r.headers()["content-length"], "4321");
    assert_eq!(
        r.headers()["last-modified"],
        "Wed, 01 Jan 2025 00:00:00 GMT"
    );
    assert_eq!(up.requests(PATH)[0].method, "HEAD");
    assert_eq!(srv.app.cache.index.stats().blobs, 0);
    let r = srv
        .client
        .head(srv.fetch_url(&up.url("/nope")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miss_redirect_mode_sends_clients_upstream_and_fills_in_the_background() {
    let up = Upstream::start().await;
    let body = random_bytes(30_000, 16);
    up.route(PATH, Route::ok(body.clone()));
    let srv =
        TestServer::start_with(|c| c.upstream.miss = upcache::config::MissMode::Redirect).await;
    let r = srv.get(&srv.fetch_url(&up.url(PATH))).await;
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], up.url(PATH).as_str());
    assert_eq!(r.headers()["x-cache"], "MISS");
    srv.app.flights.wait_idle().await;
    let (_, h, got) = srv.get_bytes(&srv.fetch_url(&up.url(PATH))).await;
    assert_eq!((h["x-cache"].to_str().unwrap(), got), ("HIT", body));
    assert_eq!(up.hits(PATH), 1);
}

/// Issue 11, item 10: a fill task that dies (here a panic, through the debug-build test hook)
/// must fail its readers, who see an aborted response, never a clean end and never an endless
/// wait; and it must leave the flight table, so the next request for the URL starts a new
/// download and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_that_panics_releases_its_readers_and_its_url() {
    let up = Upstream::start().await;
    let body = random_bytes(300_000, 90);
    let gate = Gate::new();
    up.route(PATH, Route::ok(body.clone()).hold_at(100_000, gate.clone()));
    let srv = TestServer::start().await;
    let url = srv.fetch_url(&up.url(PATH));
    // The fill panics on the first bytes it receives once it holds the first 100 000.
    srv.app.flights.panic_next_fill_for_tests(100_000);

    // The client that started the fill, and one that joined it.
    let mut readers = Vec::new();
    for _ in 0..2 {
        let r = srv.get(&url).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-cache"], "MISS");
        let mut stream = r.bytes_stream();
        let mut got = 0;
        while got < 100_000 {
            got += stream.next().await.unwrap().unwrap().len();
        }
        readers.push(stream);
    }
    assert_eq!(
        up.hits(PATH),
        1,
        "the second client joined the first one's fill"
    );
    gate.open();
    for (i, mut stream) in readers.into_iter().enumerate() {
        let mut got = 100_000;
        loop {
            match stream.next().await {
                Some(Ok(chunk)) => got += chunk.len(),
                Some(Err(_)) => break,
                None => panic!("reader {i}: a clean end after {got} bytes of a dead fill"),
            }
        }
        assert!(got < body.len(), "reader {i} got every byte");
    }
    // The fill is gone: nothing in flight, nothing running, no temp file left.
    srv.app.flights.wait_idle().await;
    assert!(srv.app.flights.is_empty());
    assert!(srv.temp_files().is_empty(), "{:?}", srv.temp_files());

    // The URL is not blocked: a new download, complete and stored.
    let (status, headers, got) = srv.get_bytes(&url).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-cache"], "MISS");
    assert_eq!(got, body);
    assert_eq!(up.hits(PATH), 2);
    srv.app.flights.wait_idle().await;
    let (status, headers, got) = srv.get_bytes(&url).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-cache"], "HIT");
    assert_eq!(got, body);
}

/// Issue 11, item 10: a fill task that is cancelled (aborted mid-body, or dropped before it
/// ever ran, as a runtime shutting down drops its tasks) fails its readers and frees its URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_fill_task_fails_its_readers_and_frees_its_url() {
    use upcache::fill::{Flight, Phase, Requester, run};
    let up = Upstream::start().await;
    let body = random_bytes(200_000, 91);
    let gate = Gate::new();
    up.route(PATH, Route::ok(body.clone()).hold_at(50_000, gate.clone()));
    let srv = TestServer::start().await;
    let url = upcache::url::UpstreamUrl::parse(&up.url(PATH)).unwrap();
    let start = || {
        let flight = srv
            .app
            .flights
            .join_or_start(
                &url,
                || Ok(None::<()>),
                || srv.app.cache.store.create_temp(),
            )
            .unwrap();
        match flight {
            Flight::Started(fill, temp) => (fill, temp),
            _ => panic!("expected a new fill"),
        }
    };

    // Dropped before it ever ran.
    let (fill, temp) = start();
    drop(run(
        srv.app.clone(),
        fill.clone(),
        temp,
        Requester::default(),
    ));
    let state = fill.state();
    assert!(matches!(state.phase, Phase::Failed(_)), "{:?}", state.phase);
    assert!(state.ended);
    assert!(srv.app.flights.is_empty());
    srv.app.flights.wait_idle().await;

    // Cancelled mid-body: its reader gets an error, never a clean end.
    let (fill, temp) = start();
    let task = tokio::spawn(run(
        srv.app.clone(),
        fill.clone(),
        temp,
        Requester::default(),
    ));
    let mut reader = Box::pin(fill.body(0, None, None, |_: &upcache::store::Digests| {}));
    let mut got = 0;
    while got < 50_000 {
        got += reader.next().await.unwrap().unwrap().len();
    }
    task.abort();
    loop {
        match reader.next().await {
            Some(Ok(chunk)) => got += chunk.len(),
            Some(Err(_)) => break,
            None => panic!("a clean end after {got} bytes of a cancelled fill"),
        }
    }
    srv.app.flights.wait_idle().await;
    assert!(srv.app.flights.is_empty());
    assert!(srv.temp_files().is_empty(), "{:?}", srv.temp_files());

    // The URL is free: the next request downloads it.
    gate.open();
    let (status, headers, got) = srv.get_bytes(&srv.fetch_url(&up.url(PATH))).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-cache"], "MISS");
    assert_eq!(got, body);
}
