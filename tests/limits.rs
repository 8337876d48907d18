//! Governance in the app (SPEC 3 `[limits]`, 5): per-client rate and concurrency limits with
//! client addresses from trusted proxies, bounded limiter state, the upstream download cap,
//! and X-Served-By on every answer.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::server::*;
use common::upstream::*;
use futures::StreamExt;

const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// Wait for a condition that no event announces (e.g. a fill reaching the upstream-slot
/// queue inside the server). Bounded only by the test harness's timeout.
async fn until(mut cond: impl FnMut() -> bool) {
    while !cond() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn assert_rate_limited(r: reqwest::Response) {
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After is whole seconds");
    assert!(retry >= 1);
    assert_eq!(r.headers()["x-served-by"], "test");
    let (status, code, message) = error_code(r).await;
    assert_eq!((status, code.as_str()), (429, "rate_limited"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_burst_gets_429_with_retry_after_and_health_is_never_limited() {
    let s = TestServer::start_with(|c| {
        c.limits.per_client_rps = 1;
        c.limits.per_client_burst = 5;
    })
    .await;
    let url = s.url("/api/v1/lookup?md5=00000000000000000000000000000000");
    for i in 0..5 {
        let r = s.get(&url).await;
        assert_eq!(r.status(), 404, "request {i} is within the burst");
        assert_eq!(r.headers()["x-served-by"], "test");
    }
    // One token a second: a 429 comes unless the machine stalls for many seconds.
    let mut rejected = None;
    for _ in 0..20 {
        let r = s.get(&url).await;
        if r.status() == 429 {
            rejected = Some(r);
            break;
        }
    }
    assert_rate_limited(rejected.expect("a request over the burst is refused")).await;
    for _ in 0..30 {
        for path in ["/healthz", "/readyz", "/metrics"] {
            let r = s.get(&s.url(path)).await;
            assert_eq!(r.status(), 200, "{path} is never rate-limited");
        }
    }
    let metrics = s.get(&s.url("/metrics")).await.text().await.unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("upcache_rate_limited_total"))
        .unwrap();
    let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 1.0, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_behind_a_trusted_proxy_have_their_own_buckets() {
    let limited = |trusted: bool| {
        move |c: &mut upcache::Config| {
            c.limits.per_client_rps = 1;
            c.limits.per_client_burst = 2;
            if trusted {
                c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
            }
        }
    };
    let get = |s: &TestServer, xff: &str| {
        s.client
            .get(s.url("/no-such-endpoint"))
            .header("x-forwarded-for", xff)
            .send()
    };
    let behind = TestServer::start_with(limited(true)).await;
    // The client wrote the left entry itself; nginx appended the address it saw.
    let a = "6.6.6.6, 198.51.100.1";
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(get(&behind, a).await.unwrap().status().as_u16());
        if statuses.last() == Some(&429) {
            break;
        }
    }
    assert_eq!(&statuses[..2], [404, 404]);
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    // Another address behind the same proxy, even one claiming to be the first client
    // further left, is a client of its own.
    let r = get(&behind, "198.51.100.1, 198.51.100.2").await.unwrap();
    assert_eq!(r.status(), 404);

    // Without trusted proxies the header is the client's own say and changes nothing.
    let direct = TestServer::start_with(limited(false)).await;
    let mut statuses = Vec::new();
    for i in 0..20 {
        let xff = format!("198.51.100.{i}");
        statuses.push(get(&direct, &xff).await.unwrap().status().as_u16());
        if statuses.last() == Some(&429) {
            break;
        }
    }
    assert_eq!(
        statuses.last(),
        Some(&429),
        "one bucket for the peer: {statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_counts_a_request_until_its_streamed_body_ends() {
    let up = Upstream::start().await;
    let body = random_bytes(1 << 20, 7);
    let gate = Gate::new();
    up.route(
        "/c/big.tar.gz",
        Route::ok(body.clone()).hold_at(100_000, gate.clone()),
    );
    let s = TestServer::start_with(|c| c.limits.per_client_concurrency = 2).await;
    let url = s.fetch_url(&up.url("/c/big.tar.gz"));
    // Two downloads whose bodies have started and are stuck mid-way.
    let mut streams = Vec::new();
    for _ in 0..2 {
        let r = s.get(&url).await;
        assert_eq!(r.status(), 200);
        let mut stream = r.bytes_stream();
        stream.next().await.unwrap().unwrap();
        streams.push(stream);
    }
    assert_eq!(s.app.limits.active_requests(LOCAL), 2);
    assert_rate_limited(s.get(&s.url("/no-such-endpoint")).await).await;
    // Health checks get through regardless.
    assert_eq!(s.get(&s.url("/healthz")).await.status(), 200);

    gate.open();
    for mut stream in streams {
        let mut n = 0;
        while let Some(chunk) = stream.next().await {
            n += chunk.unwrap().len();
        }
        assert!(n > 0);
    }
    // The slots are released once actix is done with the bodies.
    s.app.limits.until_active_at_most(LOCAL, 0).await;
    s.app.flights.wait_idle().await;
    let (status, headers, got) = s.get_bytes(&url).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-cache"], "HIT");
    assert_eq!(got, body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_distinct_clients_keep_the_limiter_state_bounded() {
    let s = TestServer::start_with(|c| {
        c.limits.per_client_rps = 1;
        c.limits.per_client_burst = 10;
        c.limits.per_client_concurrency = 4;
        c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let cap = 300;
    s.app.limits.set_max_clients(cap);
    let total = 4000u32;
    let mut peak = 0;
    let mut answers = futures::stream::iter(0..total)
        .map(|i| {
            let ip = std::net::Ipv4Addr::from(0xc633_0000 + i); // 198.51.0.0/16
            s.client
                .get(s.url("/no-such-endpoint"))
                .header("x-forwarded-for", ip.to_string())
                .send()
        })
        .buffer_unordered(16);
    let mut ok = 0;
    while let Some(r) = answers.next().await {
        let r = r.unwrap();
        // Each address makes one request: never over its own limits.
        assert_eq!(r.status(), 404);
        ok += 1;
        peak = peak.max(s.app.limits.rate_clients());
        assert!(s.app.limits.active_clients() <= cap);
    }
    assert_eq!(ok, total);
    // The state is checked every 256 requests, so it may overshoot by that much at most.
    assert!(peak <= cap + 256, "peak {peak} clients kept, cap {cap}");
    s.app.limits.prune();
    assert!(s.app.limits.rate_clients() <= cap);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_beyond_upstream_concurrency_wait_for_a_slot() {
    let up = Upstream::start().await;
    let a = random_bytes(300_000, 1);
    let b = random_bytes(300_000, 2);
    let gate = Gate::new();
    up.route(
        "/q/a.tar.gz",
        Route::ok(a.clone()).hold_at(50_000, gate.clone()),
    );
    up.route("/q/b.tar.gz", Route::ok(b.clone()));
    let s = TestServer::start_with(|c| c.limits.upstream_concurrency = 1).await;
    let ra = s.get(&s.fetch_url(&up.url("/q/a.tar.gz"))).await;
    assert_eq!(ra.status(), 200);
    gate.reached().await;
    // Two readers of b: one fill, queued behind a, with both readers attached.
    let url_b = s.fetch_url(&up.url("/q/b.tar.gz"));
    let b1 = tokio::spawn(s.client.get(&url_b).send());
    let b2 = tokio::spawn(s.client.get(&url_b).send());
    until(|| s.app.metrics.upstream_waiting.get() == 1).await;
    until(|| s.app.metrics.coalesced_joins.get() == 1).await;
    assert_eq!(up.hits("/q/b.tar.gz"), 0, "b waits for a's slot");

    gate.open();
    assert_eq!(ra.bytes().await.unwrap(), a);
    for r in [b1, b2] {
        let r = r.await.unwrap().unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap(), b);
    }
    assert_eq!(up.hits("/q/b.tar.gz"), 1);
    assert_eq!(s.app.metrics.upstream_waiting.get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_longer_than_read_timeout_for_a_slot_is_504() {
    let up = Upstream::start().await;
    // a holds the only slot for about two seconds, sending all the while (a stall would end
    // it by read_timeout and free the slot early).
    up.route(
        "/t/a.tar.gz",
        Route::ok(random_bytes(2_000_000, 1)).rate(1_000_000),
    );
    up.route("/t/b.tar.gz", Route::ok(random_bytes(10_000, 2)));
    let s = TestServer::start_with(|c| {
        c.limits.upstream_concurrency = 1;
        c.upstream.read_timeout = Duration::from_millis(300);
        c.upstream.retries = 0;
    })
    .await;
    let a = s.get(&s.fetch_url(&up.url("/t/a.tar.gz"))).await;
    assert_eq!(a.status(), 200);
    let r = s.get(&s.fetch_url(&up.url("/t/b.tar.gz"))).await;
    let (status, code, message) = error_code(r).await;
    assert_eq!(
        (status, code.as_str()),
        (504, "upstream_timeout"),
        "{message}"
    );
    assert!(message.contains("upstream_concurrency"), "{message}");
    assert_eq!(up.hits("/t/b.tar.gz"), 0);
    assert_eq!(a.bytes().await.unwrap().len(), 2_000_000);
    // Not an upstream failure: nothing remembered, the next request downloads it.
    let (status, _, _) = s.get_bytes(&s.fetch_url(&up.url("/t/b.tar.gz"))).await;
    assert_eq!(status, 200);
}
