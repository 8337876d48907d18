//! Governance in the app (SPEC 3 `[limits]`, 5): per-client rate and concurrency limits with
//! client addresses from trusted proxies, bounded limiter state, the upstream download cap,
//! and X-Served-By on every answer. Limits for build hosts (SPEC 9): `limits.exempt` and
//! admin tokens, with the real binary and curl (a second loopback address, 127.0.0.2, is the
//! exempt build host), and 429 bodies that name the limit.

use std::net::IpAddr;
use std::time::Duration;

use crate::common::fixtures::eventually;
use crate::common::server::*;
use crate::common::upstream::*;
use futures::StreamExt;

const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// A 429 `rate_limited` with `Retry-After`, whose body names `limit` (in `limit` and in the
/// message).
async fn assert_rate_limited(r: reqwest::Response, limit: &str) {
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After is whole seconds");
    assert!(retry >= 1);
    assert_eq!(r.headers()["x-served-by"], "test");
    assert_eq!(r.status(), 429);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_limit_named(&body, limit);
}

fn assert_limit_named(body: &serde_json::Value, limit: &str) {
    assert_eq!(body["error"], "rate_limited", "{body}");
    assert_eq!(body["limit"], limit, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(limit), "{body}");
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
    assert_rate_limited(
        rejected.expect("a request over the burst is refused"),
        "limits.per_client_rps",
    )
    .await;
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
    assert_rate_limited(
        s.get(&s.url("/no-such-endpoint")).await,
        "limits.per_client_concurrency",
    )
    .await;
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
    eventually("a fill waiting for an upstream slot", async || {
        (s.app.cache.metrics.upstream_waiting.get() == 1).then_some(())
    })
    .await;
    eventually("a second request joining it", async || {
        (s.app.cache.metrics.coalesced_joins.get() == 1).then_some(())
    })
    .await;
    assert_eq!(up.hits("/q/b.tar.gz"), 0, "b waits for a's slot");

    gate.open();
    assert_eq!(ra.bytes().await.unwrap(), a);
    for r in [b1, b2] {
        let r = r.await.unwrap().unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap(), b);
    }
    assert_eq!(up.hits("/q/b.tar.gz"), 1);
    assert_eq!(s.app.cache.metrics.upstream_waiting.get(), 0);
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

// --- limits for build hosts (SPEC 9) ------------------------------------------------------

/// The exempt build host of these tests: another loopback address of this machine.
const BUILD_HOST: &str = "127.0.0.2";

/// The real binary with tight per-client limits, `127.0.0.2/32` exempt, and an admin and an
/// upload token; returns the process and the two tokens.
fn limited_process(
    dir: &std::path::Path,
    rps: u32,
    burst: u32,
    conc: u32,
) -> (Process, String, String) {
    let (admin, admin_sha) = upcache::auth::new_token();
    let (upload, upload_sha) = upcache::auth::new_token();
    let cfg = dir.join("upcache.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\ninstance = \"test\"\n[upstream]\nallow_private = true\n\
             [limits]\nper_client_rps = {rps}\nper_client_burst = {burst}\n\
             per_client_concurrency = {conc}\nexempt = [\"{BUILD_HOST}/32\"]\n\
             [[auth.tokens]]\nname = \"ops\"\nsha256 = \"{admin_sha}\"\nscopes = [\"admin\"]\n\
             [[auth.tokens]]\nname = \"ci\"\nsha256 = \"{upload_sha}\"\nscopes = [\"upload\"]\n"
        ),
    )
    .unwrap();
    let p = Process::spawn(dir, &["--config", cfg.to_str().unwrap()], &[]);
    (p, admin, upload)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exempt_build_hosts_and_admin_tokens_are_never_limited() {
    let up = Upstream::start().await;
    let body = random_bytes(20_000, 13);
    up.route("/farm/src-1.0.tar.gz", Route::ok(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let (p, admin, upload) = limited_process(dir.path(), 1, 5, 4);
    let url = format!(
        "{}/fetch?url={}",
        p.base,
        enc(&up.url("/farm/src-1.0.tar.gz"))
    );
    // The build host fills the cache, then waits until the URL is a hit.
    let build_host = client_from(BUILD_HOST);
    get_until_hit(&build_host, &url, &body).await;

    // 300 parallel hits from the exempt build host: every one is served.
    let answers = curl_parallel(BUILD_HOST, &url, 300, &[]).await;
    assert_eq!(count(&answers, 200), 300, "{:?}", &answers[..3]);
    assert!(answers.iter().all(|a| a.2.len() == body.len()));

    // The same from another address: over the burst of 5 (and 4 at once), refused with a
    // body that names the limit and its key.
    let answers = curl_parallel("127.0.0.1", &url, 300, &[]).await;
    let refused = count(&answers, 429);
    assert!(refused > 0, "some of 300 are refused");
    assert!(count(&answers, 200) >= 1);
    assert_eq!(refused + count(&answers, 200), 300);
    for (_, retry_after, text) in answers.iter().filter(|a| a.0 == 429) {
        assert!(retry_after.parse::<u64>().unwrap() >= 1, "{retry_after:?}");
        let body: serde_json::Value = serde_json::from_slice(text).unwrap();
        let limit = body["limit"].as_str().unwrap_or_default();
        assert!(
            ["limits.per_client_rps", "limits.per_client_concurrency"].contains(&limit),
            "{body}"
        );
        assert_limit_named(&body, limit);
    }

    // 80 parallel requests with the admin token, from the address that is over its limits:
    // all pass. An upload token or a wrong one gets no such favour.
    let bearer = |t: &str| vec![format!("Authorization: Bearer {t}")];
    let answers = curl_parallel("127.0.0.1", &url, 80, &bearer(&admin)).await;
    assert_eq!(count(&answers, 200), 80);
    let stats = curl_parallel(
        "127.0.0.1",
        &format!("{}/api/v1/stats", p.base),
        80,
        &bearer(&admin),
    )
    .await;
    assert_eq!(count(&stats, 200), 80);
    for token in [upload.as_str(), "not-a-token"] {
        let answers = curl_parallel("127.0.0.1", &url, 80, &bearer(token)).await;
        assert!(count(&answers, 429) > 0, "{token} is limited");
    }

    let metrics = build_host
        .get(format!("{}/metrics", p.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("upcache_rate_limited_total"))
        .unwrap();
    let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= refused as f64, "{line}");
    assert_eq!(up.hits("/farm/src-1.0.tar.gz"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exempt_build_host_may_run_more_downloads_than_per_client_concurrency() {
    let up = Upstream::start().await;
    let body = random_bytes(1 << 20, 17);
    let gate = Gate::new();
    up.route(
        "/farm/big.tar.gz",
        Route::ok(body.clone()).hold_at(100_000, gate.clone()),
    );
    let dir = tempfile::tempdir().unwrap();
    let (p, _, _) = limited_process(dir.path(), 0, 0, 2);
    let url = format!("{}/fetch?url={}", p.base, enc(&up.url("/farm/big.tar.gz")));
    let (build_host, other) = (client_from(BUILD_HOST), client_from("127.0.0.1"));
    // Bodies that have started and are stuck mid-way: five from the build host, two from
    // the other address, whose third is refused.
    let mut streams = Vec::new();
    for c in std::iter::repeat_n(&build_host, 5).chain([&other, &other]) {
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let mut s = r.bytes_stream();
        let first = s.next().await.unwrap().unwrap().len();
        streams.push((first, s));
    }
    let r = other.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let refusal: serde_json::Value = r.json().await.unwrap();
    assert_limit_named(&refusal, "limits.per_client_concurrency");
    assert!(
        refusal["message"].as_str().unwrap().contains("127.0.0.1"),
        "{refusal}"
    );
    gate.open();
    for (first, mut s) in streams {
        let mut n = first;
        while let Some(chunk) = s.next().await {
            n += chunk.unwrap().len();
        }
        assert_eq!(n, body.len());
    }
    assert_eq!(up.hits("/farm/big.tar.gz"), 1, "one download, six joined");
}
