//! Cache hits: the three request forms, HIT headers, ranges, conditionals, checksum lookups,
//! the lookaside layout, lookup/stats, and persistence across restarts.

use crate::common::fixtures::{digests, eventually};
use crate::common::server::*;
use crate::common::upstream::*;

/// An upstream with one tarball, filled once through upcache.
async fn filled(body_len: usize) -> (Upstream, TestServer, String, bytes::Bytes) {
    let up = Upstream::start().await;
    let body = random_bytes(body_len, 7);
    up.route(
        "/pub/pkg-1.0.tar.xz",
        Route::ok(body.clone()).header("Content-Type", "application/x-xz"),
    );
    let srv = TestServer::start().await;
    let url = up.url("/pub/pkg-1.0.tar.xz");
    let (status, headers, got) = srv.get_bytes(&srv.fetch_url(&url)).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-cache"], "MISS");
    assert_eq!(got, body);
    srv.app.flights.wait_idle().await;
    (up, srv, url, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_get_is_a_hit_with_all_headers_and_never_reaches_upstream() {
    let (up, srv, url, body) = filled(300_000).await;
    let d = digests(&body);
    let (status, h, got) = srv.get_bytes(&srv.fetch_url(&url)).await;
    assert_eq!(status, 200);
    assert_eq!(got, body);
    assert_eq!(h["x-cache"], "HIT");
    assert_eq!(h["content-length"], body.len().to_string());
    assert_eq!(h["content-type"], "application/x-xz");
    assert_eq!(h["etag"], format!("\"{}\"", d.blake3));
    assert_eq!(h["x-checksum-md5"], d.md5);
    assert_eq!(h["x-checksum-sha256"], d.sha256);
    assert_eq!(h["x-checksum-sha512"], d.sha512);
    assert_eq!(h["x-checksum-blake3"], d.blake3);
    assert_eq!(h["accept-ranges"], "bytes");
    assert_eq!(h["cache-control"], "public, max-age=31536000, immutable");
    assert!(h.contains_key("last-modified"));
    assert_eq!(
        h["content-disposition"],
        "attachment; filename=\"pkg-1.0.tar.xz\""
    );
    assert_eq!(h["x-served-by"], "test");
    assert_eq!(
        up.hits("/pub/pkg-1.0.tar.xz"),
        1,
        "the hit never reached upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_three_forms_and_equivalent_spellings_share_one_entry() {
    let (up, srv, url, body) = filled(10_000).await;
    let port = up.addr().port();
    // Mirror path form.
    let (s, h, got) = srv.get_bytes(&srv.mirror_url(&url)).await;
    assert_eq!((s.as_u16(), h["x-cache"].to_str().unwrap()), (200, "HIT"));
    assert_eq!(got, body);
    // Proxy form (absolute-URI request target), as curl -x and dnf send it.
    let r = srv.proxy_client().get(&url).send().await.unwrap();
    assert_eq!(r.headers()["x-cache"], "HIT");
    assert_eq!(r.bytes().await.unwrap(), body);
    // Normalization: case, dot segments, default-free port, fragment, unreserved escapes.
    for variant in [
        format!("HTTP://127.0.0.1:{port}/pub/./x/../pkg-1.0.tar.xz#frag"),
        format!("http://127.0.0.1:{port}/%70ub/pkg-1.0.tar.xz"),
    ] {
        let (s, h, _) = srv.get_bytes(&srv.fetch_url(&variant)).await;
        assert_eq!(
            (s.as_u16(), h["x-cache"].to_str().unwrap()),
            (200, "HIT"),
            "{variant}"
        );
    }
    assert_eq!(up.hits("/pub/pkg-1.0.tar.xz"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_conditionals_and_head_on_hits() {
    let (_up, srv, url, body) = filled(100_000).await;
    let d = digests(&body);
    let etag = format!("\"{}\"", d.blake3);
    let get = |headers: Vec<(&'static str, String)>| {
        let mut rb = srv.client.get(srv.fetch_url(&url));
        for (k, v) in headers {
            rb = rb.header(k, v);
        }
        rb.send()
    };

    let r = get(vec![("range", "bytes=10-19".into())]).await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 10-19/100000");
    assert_eq!(r.headers()["content-length"], "10");
    assert_eq!(r.bytes().await.unwrap(), body.slice(10..20));

    let r = get(vec![("range", "bytes=-5".into())]).await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap(), body.slice(99_995..));

    let r = get(vec![("range", "bytes=200000-".into())]).await.unwrap();
    assert_eq!(r.headers()["content-range"], "bytes */100000");
    let (status, code, _) = error_code(r).await;
    assert_eq!((status, code.as_str()), (416, "range_not_satisfiable"));

    // If-Range: honoured when the validator matches, full body otherwise.
    let r = get(vec![
        ("range", "bytes=0-0".into()),
        ("if-range", etag.clone()),
    ])
    .await
    .unwrap();
    assert_eq!(r.status(), 206);
    let r = get(vec![
        ("range", "bytes=0-0".into()),
        ("if-range", "\"other\"".into()),
    ])
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), 100_000);

    let r = get(vec![("if-none-match", etag.clone())]).await.unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"], etag.as_str());
    assert!(r.bytes().await.unwrap().is_empty());
    let r = get(vec![("if-none-match", "\"nope\"".into())])
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let r = srv.client.head(srv.fetch_url(&url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cache"], "HIT");
    assert_eq!(r.headers()["content-length"], "100000");
    assert_eq!(r.headers()["x-checksum-md5"], d.md5.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_on_the_same_data_dir_is_still_a_hit() {
    let (up, srv, url, body) = filled(50_000).await;
    let srv = srv.restart().await;
    let (s, h, got) = srv.get_bytes(&srv.mirror_url(&url)).await;
    assert_eq!((s.as_u16(), h["x-cache"].to_str().unwrap()), (200, "HIT"));
    assert_eq!(got, body);
    assert_eq!(up.hits("/pub/pkg-1.0.tar.xz"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_checksum_and_lookaside_layouts() {
    let (up, srv, _url, body) = filled(20_000).await;
    let d = digests(&body);
    for path in [
        format!("/by-md5/{}", d.md5),
        format!("/by-sha256/{}", d.sha256),
        format!("/by-sha512/{}", d.sha512),
        format!("/by-blake3/{}", d.blake3.to_uppercase()),
        format!(
            "/repo/pkgs/rpms/pkg/pkg-1.0.tar.xz/sha512/{}/pkg-1.0.tar.xz",
            d.sha512
        ),
        format!("/repo/pkgs/pkg/pkg-1.0.tar.xz/md5/{}/pkg-1.0.tar.xz", d.md5),
        format!("/repo/pkgs/pkg/pkg-1.0.tar.xz/{}/pkg-1.0.tar.xz", d.md5),
    ] {
        let (s, h, got) = srv.get_bytes(&srv.url(&path)).await;
        assert_eq!(s, 200, "{path}");
        assert_eq!(h["x-cache"], "HIT", "{path}");
        assert_eq!(got, body, "{path}");
        assert_eq!(
            h["content-disposition"], "attachment; filename=\"pkg-1.0.tar.xz\"",
            "{path}"
        );
    }
    let (_, h, _) = srv
        .get_bytes(&srv.url(&format!("/by-md5/{}/renamed.tar.xz", d.md5)))
        .await;
    assert_eq!(
        h["content-disposition"],
        "attachment; filename=\"renamed.tar.xz\""
    );

    let r = srv
        .get(&srv.url(&format!("/by-md5/{}", "0".repeat(32))))
        .await;
    assert_eq!(error_code(r).await.1, "not_found");
    for bad in [
        "/by-md5/xyz",
        "/by-sha256/abcd",
        "/repo/pkgs/x/y/md5/nothex/y",
    ] {
        let r = srv.get(&srv.url(bad)).await;
        let (status, code, _) = error_code(r).await;
        assert_eq!((status, code.as_str()), (400, "bad_request"), "{bad}");
    }
    assert_eq!(up.total_hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expected_checksum_serves_a_stored_blob_without_upstream() {
    let (up, srv, url, body) = filled(20_000).await;
    let d = digests(&body);
    // A dead URL elsewhere whose tarball we hold under the same md5.
    up.route("/dead/pkg-1.0.tar.xz", Route::status(404));
    let dead = up.url("/dead/pkg-1.0.tar.xz");
    let (s, h, got) = srv
        .get_bytes(&format!("{}&md5={}", srv.fetch_url(&dead), d.md5))
        .await;
    assert_eq!((s.as_u16(), h["x-cache"].to_str().unwrap()), (200, "HIT"));
    assert_eq!(got, body);
    // Header form, on the mirror path.
    let r = srv
        .client
        .get(srv.mirror_url(&dead))
        .header("X-Upcache-Expect-Sha256", &d.sha256)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.hits("/dead/pkg-1.0.tar.xz"), 0);

    // The URL's cached content does not have the expected checksum: 502 before any body.
    let r = srv
        .get(&format!("{}&md5={}", srv.fetch_url(&url), "a".repeat(32)))
        .await;
    let (status, code, msg) = error_code(r).await;
    assert_eq!(
        (status, code.as_str()),
        (502, "integrity_mismatch"),
        "{msg}"
    );
    let r = srv
        .get(&format!("{}&md5=nothex", srv.fetch_url(&url)))
        .await;
    assert_eq!(error_code(r).await.1, "bad_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_and_stats() {
    let (_up, srv, url, body) = filled(12_345).await;
    let d = digests(&body);
    srv.get_bytes(&srv.fetch_url(&url)).await; // one hit
    let v: serde_json::Value = srv
        .get(&srv.url(&format!("/api/v1/lookup?url={}", enc(&url))))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["blake3"], d.blake3.as_str());
    assert_eq!(v["sha512"], d.sha512.as_str());
    assert_eq!(v["size"], 12_345);
    assert_eq!(v["origin"], "upstream");
    assert_eq!(v["pinned"], false);
    assert_eq!(v["present"], true);
    assert_eq!(v["access_count"], 1);
    assert_eq!(v["content_type"], "application/x-xz");
    assert_eq!(v["urls"], serde_json::json!([url]));
    assert!(v["first_seen"].as_str().unwrap().ends_with('Z'));
    let by_md5: serde_json::Value = srv
        .get(&srv.url(&format!("/api/v1/lookup?md5={}", d.md5)))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(by_md5["blake3"], v["blake3"]);
    let r = srv
        .get(&srv.url(&format!("/api/v1/lookup?sha256={}", "0".repeat(64))))
        .await;
    assert_eq!(error_code(r).await.0, 404);
    let r = srv.get(&srv.url("/api/v1/lookup?sha256=zz")).await;
    assert_eq!(error_code(r).await.1, "bad_request");

    let s: serde_json::Value = srv
        .get(&srv.url("/api/v1/stats"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(s["blobs"], 1);
    assert_eq!(s["bytes"], 12_345);
    assert_eq!(s["urls"], 1);
    assert_eq!(s["hits"], 1);
    assert_eq!(s["misses"], 1);
    assert_eq!(s["upstream_fetches"], 1);
    assert_eq!(s["inflight"], 0);
    assert!(s["disk"]["total_bytes"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_endpoints() {
    let (_up, srv, url, _) = filled(1000).await;
    srv.get_bytes(&srv.fetch_url(&url)).await;
    let r = srv.get(&srv.url("/healthz")).await;
    assert_eq!(r.status(), 200);
    let r = srv.get(&srv.url("/readyz")).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["status"], "ready");
    let m = srv.get(&srv.url("/metrics")).await.text().await.unwrap();
    for needle in [
        "upcache_requests_total{form=\"fetch\",result=\"miss\"} 1",
        "upcache_requests_total{form=\"fetch\",result=\"hit\"} 1",
        "upcache_upstream_fetches_total 1",
        "upcache_store_bytes 1000",
        "upcache_request_duration_seconds_bucket",
        "upcache_inflight_downloads 0",
    ] {
        assert!(m.contains(needle), "metrics lack {needle}:\n{m}");
    }
    let r = srv.get(&srv.url("/no/such/thing")).await;
    assert_eq!(error_code(r).await.1, "not_found");
    let r = srv.client.post(srv.fetch_url(&url)).send().await.unwrap();
    let (status, code, _) = error_code(r).await;
    assert_eq!((status, code.as_str()), (405, "method_not_allowed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_search_and_blob_provenance() {
    let (up, srv, url, body) = filled(2_048).await;
    let d = digests(&body);
    // A URL with characters that must be escaped in HTML.
    up.route("/q", Route::ok("x"));
    let odd = format!("{}?a=<b>&c=\"d\"", up.url("/q"));
    srv.get_bytes(&srv.fetch_url(&odd)).await;
    srv.app.flights.wait_idle().await;

    let r = srv.get(&srv.url("/")).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = r.text().await.unwrap();
    assert!(
        html.contains("Blobs") && html.contains("hit ratio"),
        "{html}"
    );
    assert!(
        html.contains(&format!("href=\"ui/blob/{}\"", d.blake3)),
        "recent fetch listed"
    );
    assert!(!html.contains("<b>"), "URLs are escaped: {html}");

    for q in [
        d.md5.clone(),
        d.sha256.clone(),
        d.blake3.clone(),
        url.clone(),
    ] {
        let r = srv
            .get(&srv.url(&format!("/ui/search?q={}", enc(&q))))
            .await;
        assert_eq!(r.status(), 303, "{q}");
        // Relative to /ui/search, so right under a gateway's prefix too.
        assert_eq!(
            r.headers()["location"],
            format!("blob/{}", d.blake3).as_str()
        );
    }
    let page = srv
        .get(&srv.url(&format!("/ui/blob/{}", d.blake3)))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains(&d.sha512) && page.contains(&url) && page.contains("Provenance"));
    let r = srv.get(&srv.url("/ui/search?q=deadbeef")).await;
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_file_that_vanished_is_dropped_and_refetched() {
    let (up, srv, url, body) = filled(9_999).await;
    let d = digests(&body);
    let blob = srv
        .data_dir()
        .join("blobs")
        .join(&d.blake3[..2])
        .join(&d.blake3[2..4])
        .join(&d.blake3);
    std::fs::remove_file(&blob).unwrap();
    // While running: the next request notices, drops the entry and fetches again.
    let (s, h, got) = srv.get_bytes(&srv.fetch_url(&url)).await;
    assert_eq!((s.as_u16(), h["x-cache"].to_str().unwrap()), (200, "MISS"));
    assert_eq!(got, body);
    assert_eq!(up.hits("/pub/pkg-1.0.tar.xz"), 2);
    srv.app.flights.wait_idle().await;
    assert!(blob.exists());
    // After a restart: entries whose file is gone are dropped by the start-up walk, which
    // runs in the background (docs/DECISIONS.md), so wait for it rather than race it.
    std::fs::remove_file(&blob).unwrap();
    let srv = srv.restart().await;
    eventually(
        "the start-up walk to drop the entry whose file is gone",
        async || (srv.app.cache.index.stats().blobs == 0).then_some(()),
    )
    .await;
    let r = srv
        .get(&srv.url(&format!("/api/v1/lookup?md5={}", d.md5)))
        .await;
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_from_a_cold_page_cache_are_complete() {
    use std::os::fd::AsRawFd;
    let (_up, srv, url, body) = filled(3_000_000).await;
    let d = digests(&body);
    let path = srv
        .data_dir()
        .join("blobs")
        .join(&d.blake3[..2])
        .join(&d.blake3[2..4])
        .join(&d.blake3);
    let f = std::fs::File::open(&path).unwrap();
    // Drop the (clean) pages from the page cache so serving has to fault them in again.
    // SAFETY: plain posix_fadvise on an open descriptor.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0);
    let (s, h, got) = srv.get_bytes(&srv.fetch_url(&url)).await;
    assert_eq!((s.as_u16(), h["x-cache"].to_str().unwrap()), (200, "HIT"));
    assert_eq!(got.len(), body.len());
    assert!(got == body, "same bytes after a cold read");
    // And a range in the middle of the file.
    let r = srv
        .client
        .get(srv.fetch_url(&url))
        .header("range", "bytes=1000000-2099999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), body.slice(1_000_000..2_100_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_hits_on_one_connection_stay_in_order() {
    use tokio::io::AsyncWriteExt;
    let (up, srv, big_url, big) = filled(2_500_000).await;
    up.route("/small.txt", Route::ok("small body"));
    let small_url = up.url("/small.txt");
    srv.get_bytes(&srv.fetch_url(&small_url)).await;
    srv.app.flights.wait_idle().await;
    let path = |u: &str| srv.mirror_url(u).trim_start_matches(&srv.base).to_owned();
    let mut stream = tokio::net::TcpStream::connect(srv.base.trim_start_matches("http://"))
        .await
        .unwrap();
    // Five requests in one write: sendfile bodies must never overtake queued bytes.
    let mut batch = String::new();
    for p in [
        path(&big_url),
        path(&small_url),
        path(&big_url),
        path(&small_url),
        path(&big_url),
    ] {
        batch.push_str(&format!("GET {p} HTTP/1.1\r\nHost: x\r\n\r\n"));
    }
    stream.write_all(batch.as_bytes()).await.unwrap();
    let mut reader = tokio::io::BufReader::new(stream);
    for want in [&big[..], b"small body", &big[..], b"small body", &big[..]] {
        let (head, body) = read_any(&mut reader, false).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.to_ascii_lowercase().contains("x-cache: hit"), "{head}");
        assert!(body == want, "body out of order or corrupt");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_and_vanishing_clients_get_exact_bytes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_up, srv, url, body) = filled(4_000_000).await;
    let target = srv
        .mirror_url(&url)
        .trim_start_matches(&srv.base)
        .to_owned();
    let addr = srv.base.trim_start_matches("http://").to_owned();

    // A client that reads slowly fills the socket, so the server must wait for it.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await; // let the socket fill up
    let mut reader = tokio::io::BufReader::new(s);
    let (_, got) = read_any(&mut reader, false).await;
    assert!(got == body);

    // Clients that go away mid-body do not disturb the server.
    for _ in 0..5 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = [0u8; 1000];
        s.read_exact(&mut buf).await.unwrap();
        drop(s);
    }
    let (s, _, got) = srv.get_bytes(&srv.fetch_url(&url)).await;
    assert_eq!(s, 200);
    assert!(got == body);
    let metrics = srv.get(&srv.url("/metrics")).await.text().await.unwrap();
    let served: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("upcache_served_bytes_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        served >= 3.0 * 4_000_000.0,
        "sendfile bytes are counted: {served}"
    );
}

/// Three tarballs behind one upstream, all filled: one small enough to be sent with its
/// response head in one write from memory, a 100 KiB one and a larger one sent by sendfile
/// after their head (held back and sent with `MSG_MORE`).
async fn small_and_large() -> (Upstream, TestServer, [(String, bytes::Bytes); 3]) {
    let up = Upstream::start().await;
    let small = random_bytes(1_000, 11);
    let mid = random_bytes(100 * 1024, 13);
    let large = random_bytes(200_000, 12);
    up.route("/s/small-1.tar.gz", Route::ok(small.clone()));
    up.route("/s/mid-1.tar.gz", Route::ok(mid.clone()));
    up.route("/s/large-1.tar.gz", Route::ok(large.clone()));
    let srv = TestServer::start().await;
    let urls = [
        up.url("/s/small-1.tar.gz"),
        up.url("/s/mid-1.tar.gz"),
        up.url("/s/large-1.tar.gz"),
    ];
    for u in &urls {
        let (s, h, _) = srv.get_bytes(&srv.mirror_url(u)).await;
        assert_eq!((s.as_u16(), h["x-cache"].to_str().unwrap()), (200, "MISS"));
    }
    srv.app.flights.wait_idle().await;
    let [a, b, c] = urls;
    (up, srv, [(a, small), (b, mid), (c, large)])
}

/// A request (method, headers) and its answer (status, body if checked).
type Case<'a> = (
    reqwest::Method,
    Vec<(&'a str, String)>,
    u16,
    Option<bytes::Bytes>,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_hits_in_one_write_answer_like_sendfile_hits() {
    let (up, srv, blobs) = small_and_large().await;
    let mut shapes = Vec::new();
    for (url, body) in &blobs {
        let d = digests(body);
        let etag = format!("\"{}\"", d.blake3);
        let size = body.len();
        let empty = bytes::Bytes::new();
        let cases: Vec<Case> = vec![
            // Twice: the first hit reads the small body, the second has it in memory.
            (reqwest::Method::GET, vec![], 200, Some(body.clone())),
            (reqwest::Method::GET, vec![], 200, Some(body.clone())),
            (reqwest::Method::HEAD, vec![], 200, Some(empty.clone())),
            (
                reqwest::Method::GET,
                vec![("range", "bytes=10-19".into())],
                206,
                Some(body.slice(10..20)),
            ),
            (
                reqwest::Method::GET,
                vec![("range", "bytes=-5".into())],
                206,
                Some(body.slice(size - 5..)),
            ),
            (
                reqwest::Method::GET,
                vec![("range", "bytes=0-0".into()), ("if-range", etag.clone())],
                206,
                Some(body.slice(0..1)),
            ),
            (
                reqwest::Method::GET,
                vec![
                    ("range", "bytes=0-0".into()),
                    ("if-range", "\"old\"".into()),
                ],
                200,
                Some(body.clone()),
            ),
            (
                reqwest::Method::GET,
                vec![("if-none-match", etag.clone())],
                304,
                Some(empty.clone()),
            ),
            (
                reqwest::Method::GET,
                vec![("range", format!("bytes={size}-"))],
                416,
                None,
            ),
        ];
        let mut shape = Vec::new();
        for (method, headers, status, want) in cases {
            let mut rb = srv.client.request(method.clone(), srv.mirror_url(url));
            for (k, v) in &headers {
                rb = rb.header(*k, v);
            }
            let r = rb.send().await.unwrap();
            let h = r.headers().clone();
            assert_eq!(r.status().as_u16(), status, "{method} {headers:?}");
            let mut names: Vec<String> = h.keys().map(|k| k.to_string()).collect();
            names.sort();
            let got = r.bytes().await.unwrap();
            if let Some(want) = want {
                assert!(got == want, "{method} {headers:?}: body");
            }
            if status == 304 {
                assert_eq!(h["etag"], etag.as_str());
                assert_eq!(h["x-cache"], "HIT");
            }
            if status == 200 || status == 206 {
                assert_eq!(h["x-cache"], "HIT");
                assert_eq!(h["etag"], etag.as_str());
                assert_eq!(h["x-checksum-sha256"], d.sha256.as_str());
                assert_eq!(h["accept-ranges"], "bytes");
                let len = if method == reqwest::Method::HEAD {
                    size
                } else {
                    got.len()
                };
                assert_eq!(h["content-length"], len.to_string().as_str());
            }
            if status == 206 {
                let (a, b) = match headers[0].1.as_str() {
                    "bytes=10-19" => (10, 19),
                    "bytes=-5" => (size - 5, size - 1),
                    _ => (0, 0),
                };
                assert_eq!(h["content-range"], format!("bytes {a}-{b}/{size}").as_str());
            }
            shape.push((status, names));
        }
        shapes.push(shape);
    }
    // The same answers, header for header, whichever way the body went out.
    assert_eq!(shapes[0], shapes[1]);
    assert_eq!(shapes[0], shapes[2]);
    assert_eq!(up.hits("/s/small-1.tar.gz"), 1);
    assert_eq!(up.hits("/s/mid-1.tar.gz"), 1);
    assert_eq!(up.hits("/s/large-1.tar.gz"), 1);
    // The bytes of one-write bodies are counted as served.
    let served = || async {
        let metrics = srv.get(&srv.url("/metrics")).await.text().await.unwrap();
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("upcache_served_bytes_total "))
            .unwrap()
            .parse::<f64>()
            .unwrap()
    };
    let before = served().await;
    let (s, _, got) = srv.get_bytes(&srv.mirror_url(&blobs[0].0)).await;
    assert_eq!((s.as_u16(), got.len()), (200, 1_000));
    let after = served().await;
    let metrics_body = after - before;
    assert!(
        metrics_body >= 1_000.0,
        "the hit's 1000 bytes are counted: {metrics_body}"
    );
}

/// Read one HTTP/1.1 response from a raw stream: no body for HEAD and 304, else a
/// Content-Length body.
async fn read_any(
    s: &mut tokio::io::BufReader<tokio::net::TcpStream>,
    head_request: bool,
) -> (String, Vec<u8>) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(s.read_line(&mut line).await.unwrap() > 0, "closed early");
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    if head_request || head.starts_with("HTTP/1.1 304") {
        return (head, Vec::new());
    }
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("content-length");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    (head, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_small_hits_of_every_kind_stay_in_order() {
    use tokio::io::AsyncWriteExt;
    let (_up, srv, [(small_url, small), (mid_url, mid), (large_url, large)]) =
        small_and_large().await;
    let etag = format!("\"{}\"", digests(&small).blake3);
    let path = |u: &str| srv.mirror_url(u).trim_start_matches(&srv.base).to_owned();
    let (s, m, l) = (path(&small_url), path(&mid_url), path(&large_url));
    let requests: Vec<(String, bool, &str, Vec<u8>)> = vec![
        (format!("GET {s}"), false, "200", small.to_vec()),
        (
            format!("GET {s} HTTP/1.1\r\nRange: bytes=100-199"),
            false,
            "206",
            small[100..200].to_vec(),
        ),
        (
            format!("GET {s} HTTP/1.1\r\nIf-None-Match: {etag}"),
            false,
            "304",
            vec![],
        ),
        (format!("GET {l}"), false, "200", large.to_vec()),
        (format!("GET {m}"), false, "200", mid.to_vec()),
        (
            format!("GET {m} HTTP/1.1\r\nRange: bytes=50000-"),
            false,
            "206",
            mid[50_000..].to_vec(),
        ),
        ("GET /no/such/endpoint".into(), false, "404", vec![]),
        (format!("GET {m}"), false, "200", mid.to_vec()),
        (format!("GET {s}"), false, "200", small.to_vec()),
        (format!("GET {l}"), false, "200", large.to_vec()),
        (format!("GET {s}"), false, "200", small.to_vec()),
    ];
    // No HEAD in the batch: actix's codec takes "is HEAD" from the request it decoded last,
    // so a pipelined HEAD followed by a GET is encoded as a 1000-byte body that never comes,
    // and actix closes the connection (whichever way a body would be sent).
    let mut batch = String::new();
    for (line, ..) in &requests {
        // `GET path` alone gets the version here; lines with headers carry it already.
        if line.contains("HTTP/1.1") {
            batch.push_str(&format!("{line}\r\nHost: x\r\n\r\n"));
        } else {
            batch.push_str(&format!("{line} HTTP/1.1\r\nHost: x\r\n\r\n"));
        }
    }
    let mut stream = tokio::net::TcpStream::connect(srv.base.trim_start_matches("http://"))
        .await
        .unwrap();
    stream.write_all(batch.as_bytes()).await.unwrap();
    let mut reader = tokio::io::BufReader::new(stream);
    for (line, is_head, status, want) in &requests {
        let (head, body) = read_any(&mut reader, *is_head).await;
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status}")),
            "{line}: {head}"
        );
        if *status == "404" {
            assert!(body.starts_with(b"{"), "{line}: a JSON error");
        } else {
            assert!(body == *want, "{line}: body out of order or corrupt");
        }
    }
    // And the connection still works afterwards.
    let mut stream = reader.into_inner();
    stream
        .write_all(format!("GET {s} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut reader = tokio::io::BufReader::new(stream);
    let (head, body) = read_any(&mut reader, false).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body == small);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_blob_held_in_memory_is_not_served_once_its_file_vanished() {
    let (up, srv, [(small_url, small), ..]) = small_and_large().await;
    let mirror = srv.mirror_url(&small_url);
    for _ in 0..2 {
        let (s, h, got) = srv.get_bytes(&mirror).await;
        assert_eq!((s.as_u16(), h["x-cache"].to_str().unwrap()), (200, "HIT"));
        assert!(got == small);
    }
    let d = digests(&small);
    let blob = srv
        .data_dir()
        .join("blobs")
        .join(&d.blake3[..2])
        .join(&d.blake3[2..4])
        .join(&d.blake3);
    std::fs::remove_file(&blob).unwrap();
    // HEAD, range and full GET all notice: the entry is dropped and fetched again.
    let r = srv.client.head(&mirror).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cache"], "MISS");
    srv.app.flights.wait_idle().await;
    std::fs::remove_file(&blob).ok();
    let (s, h, got) = srv.get_bytes(&mirror).await;
    assert_eq!((s.as_u16(), h["x-cache"].to_str().unwrap()), (200, "MISS"));
    assert!(got == small);
    assert!(up.hits("/s/small-1.tar.gz") >= 2);
}

/// Mirror-form GET and HEAD skip actix's router; everything around them is still routed and
/// answered as before: other methods, escaped spellings of the scheme segment, the absolute
/// form, and errors of the handler itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_requests_beside_the_router_answer_as_routed_ones() {
    let (up, srv, [(small_url, small), ..]) = small_and_large().await;
    let mirror = srv.mirror_url(&small_url);
    let (s, h, got) = srv.get_bytes(&mirror).await;
    assert_eq!((s.as_u16(), h["x-cache"].to_str().unwrap()), (200, "HIT"));
    assert!(got == small);
    assert_eq!(h["x-served-by"], "test");
    // An escaped scheme segment goes through the router to the same handler, which reads
    // the raw target and refuses the scheme.
    let escaped = mirror.replacen("/http/", "/%68ttp/", 1);
    let r = srv.client.get(&escaped).send().await.unwrap();
    let (status, code, _) = error_code(r).await;
    assert_eq!((status, code.as_str()), (400, "unsupported_scheme"));
    // Methods other than GET and HEAD: the router's JSON 405.
    let r = srv.client.post(&mirror).send().await.unwrap();
    let (status, code, _) = error_code(r).await;
    assert_eq!((status, code.as_str()), (405, "method_not_allowed"));
    // The handler's own errors, rendered as the router's handler renders them.
    let r = srv.client.get(srv.url("/https/")).send().await.unwrap();
    assert_eq!(r.headers()["x-served-by"], "test");
    let (status, _, _) = error_code(r).await;
    assert_eq!(status, 400);
    // The absolute form naming another host is still a proxy request.
    let r = srv.proxy_client().get(&small_url).send().await.unwrap();
    assert_eq!(r.headers()["x-cache"], "HIT");
    assert_eq!(up.hits("/s/small-1.tar.gz"), 1);
}

/// The client's count of TCP segments with data received on `s` (`TCP_INFO`), and the
/// largest segment it lets the server send (its advertised MSS).
fn data_segments_in(s: &tokio::net::TcpStream) -> (u32, u32) {
    use std::os::fd::AsRawFd;
    // SAFETY: tcp_info is plain integers; all zeros is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: a valid socket and a buffer of `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    (info.tcpi_data_segs_in, info.tcpi_advmss)
}

/// A hit sent by sendfile holds its response head back and sends it with `MSG_MORE` right
/// before the body: head and body share TCP segments instead of the head going alone (a
/// `sendto`, then the `sendfile`). On loopback (an MSS of about 64 KiB) a 40 KB hit
/// arrives as one segment, where it used to be two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sendfile_hit_shares_its_first_segment_with_its_head() {
    use tokio::io::AsyncWriteExt;
    let (_up, srv, url, body) = filled(40_000).await;
    let target = srv
        .mirror_url(&url)
        .trim_start_matches(&srv.base)
        .to_owned();
    let stream = tokio::net::TcpStream::connect(srv.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let mut reader = tokio::io::BufReader::new(stream);
    let mut fewest = u32::MAX;
    let mut least_needed = u32::MAX;
    // The first answers of a connection may be split while its send buffer grows: count the
    // fewest segments any answer took.
    for _ in 0..10 {
        let (before, _) = data_segments_in(reader.get_ref());
        reader
            .get_mut()
            .write_all(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let (head, got) = read_any(&mut reader, false).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.to_ascii_lowercase().contains("x-cache: hit"), "{head}");
        assert!(got == body);
        let (after, mss) = data_segments_in(reader.get_ref());
        fewest = fewest.min(after - before);
        least_needed = least_needed.min((head.len() + 2 + got.len()).div_ceil(mss as usize) as u32);
    }
    assert!(
        fewest <= least_needed,
        "each answer took at least {fewest} segments, {least_needed} would do"
    );
}
