//! Self-test of the scripted upstream server in `tests/it/common/upstream.rs`.
//!
//! Other integration tests trust this server to misbehave exactly as configured, so every
//! builder option is checked here with real requests, both through reqwest (what upcache
//! uses) and through a raw TCP client where the exact bytes on the wire matter.

use std::time::{Duration, Instant};

use crate::common::upstream::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Sends `request` verbatim and returns everything the server sends until it closes.
async fn raw(up: &Upstream, request: &str) -> Vec<u8> {
    let mut stream = TcpStream::connect(up.addr()).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    out
}

/// Splits a raw response into its head (as text) and body bytes.
fn split_response(raw: &[u8]) -> (String, Vec<u8>) {
    let at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no end of head");
    (
        String::from_utf8(raw[..at].to_vec()).unwrap(),
        raw[at + 4..].to_vec(),
    )
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
}

#[tokio::test]
async fn ok_counts_and_keep_alive() {
    let up = Upstream::start().await;
    up.route("/a.tar.gz", Route::ok("hello").header("ETag", "\"v1\""));
    let c = client();
    for _ in 0..3 {
        let resp = c.get(up.url("/a.tar.gz?x=1")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-length"], "5");
        assert_eq!(resp.headers()["content-type"], "application/octet-stream");
        assert_eq!(resp.headers()["etag"], "\"v1\"");
        assert_eq!(resp.bytes().await.unwrap(), "hello");
    }
    assert_eq!(up.hits("/a.tar.gz"), 3);
    assert_eq!(up.hits_with_query("/a.tar.gz?x=1"), 3);
    assert_eq!(up.hits_with_query("/a.tar.gz"), 0);
    // All three requests travelled over one kept-alive connection.
    assert_eq!(up.connections(), 1);

    let resp = c
        .get(up.url("/missing"))
        .header("X-Probe", "yes")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.text().await.unwrap(), "not found\n");
    assert_eq!(up.hits("/missing"), 1);
    assert_eq!(up.total_hits(), 4);

    let recorded = up.requests("/missing");
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].method, "GET");
    assert_eq!(recorded[0].target, "/missing");
    assert_eq!(recorded[0].header("x-probe"), Some("yes"));
    assert_eq!(recorded[0].header("X-PROBE"), Some("yes"));
    assert_eq!(up.requests("/a.tar.gz")[0].target, "/a.tar.gz?x=1");
}

#[tokio::test]
async fn route_seq_repeats_last() {
    let up = Upstream::start().await;
    up.route_seq(
        "/f",
        vec![Route::status(500), Route::status(503), Route::ok("fine")],
    );
    let c = client();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(c.get(up.url("/f")).send().await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [500, 503, 200, 200]);
    assert_eq!(up.hits("/f"), 4);

    // Re-routing restarts the sequence.
    up.route_seq("/f", vec![Route::status(410), Route::ok("again")]);
    let resp = c.get(up.url("/f")).send().await.unwrap();
    assert_eq!(resp.status(), 410);
    assert_eq!(resp.headers()["content-length"], "0");
}

#[tokio::test]
async fn redirect_and_custom_headers() {
    let up = Upstream::start().await;
    up.route("/old", Route::redirect(302, "/new"));
    up.route(
        "/new",
        Route::ok("x")
            .header("Content-Type", "application/gzip")
            .header("content-type", "application/x-tar"),
    );
    let c = client();
    let resp = c.get(up.url("/old")).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(resp.headers()["location"], "/new");
    let resp = c.get(up.url("/new")).send().await.unwrap();
    // header() replaces case-insensitively: exactly one Content-Type, the last one.
    assert_eq!(resp.headers().get_all("content-type").iter().count(), 1);
    assert_eq!(resp.headers()["content-type"], "application/x-tar");
}

#[tokio::test]
async fn head_has_headers_but_no_body() {
    let up = Upstream::start().await;
    up.route("/h", Route::ok(vec![7u8; 1234]).header("ETag", "\"e\""));
    let c = client();
    let resp = c.head(up.url("/h")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-length"], "1234");
    assert_eq!(resp.headers()["etag"], "\"e\"");
    assert!(resp.bytes().await.unwrap().is_empty());
    // Had the server written a body after the HEAD, this reused connection would be garbage.
    let body = c.get(up.url("/h")).send().await.unwrap().bytes().await;
    assert_eq!(body.unwrap().len(), 1234);
    assert_eq!(up.connections(), 1);
    assert_eq!(up.hits("/h"), 2);
    assert_eq!(up.requests("/h")[0].method, "HEAD");

    // The raw bytes: headers only, then the server closes as asked.
    let out = raw(
        &up,
        "HEAD /h HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (head, body) = split_response(&out);
    assert!(head.contains("Content-Length: 1234"), "{head}");
    assert!(body.is_empty());
}

#[tokio::test]
async fn chunked_framing() {
    let up = Upstream::start().await;
    up.route(
        "/c",
        Route::ok("abcdefghijklmnopqrstuvwxy")
            .chunked()
            .chunk_size(10),
    );
    let out = raw(&up, &get("/c")).await;
    let (head, body) = split_response(&out);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Transfer-Encoding: chunked"), "{head}");
    assert!(!head.contains("Content-Length"), "{head}");
    assert_eq!(
        String::from_utf8(body).unwrap(),
        "a\r\nabcdefghij\r\na\r\nklmnopqrst\r\n5\r\nuvwxy\r\n0\r\n\r\n"
    );
    // And a real client decodes it, keeping the connection.
    let c = client();
    for _ in 0..2 {
        let text = c.get(up.url("/c")).send().await.unwrap().text().await;
        assert_eq!(text.unwrap(), "abcdefghijklmnopqrstuvwxy");
    }
    assert_eq!(up.connections(), 2);
}

#[tokio::test]
async fn no_length_ends_with_close() {
    let up = Upstream::start().await;
    let body = random_bytes(100_000, 1);
    up.route("/n", Route::ok(body.clone()).no_length());
    let out = raw(
        &up,
        "GET /n HTTP/1.1\r\nHost: x\r\n\r\n", // keep-alive requested, the server closes anyway
    )
    .await;
    let (head, got) = split_response(&out);
    assert!(!head.contains("Content-Length"), "{head}");
    assert!(!head.contains("Transfer-Encoding"), "{head}");
    assert!(head.contains("Connection: close"), "{head}");
    assert_eq!(got, body);
    let got = client()
        .get(up.url("/n"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await;
    assert_eq!(got.unwrap(), body);
}

#[tokio::test]
async fn truncation_and_short_bodies() {
    let up = Upstream::start().await;
    let body = random_bytes(1000, 2);
    up.route("/t", Route::ok(body.clone()).truncate_after(100));
    up.route("/tc", Route::ok(body.clone()).chunked().truncate_after(100));
    up.route("/short", Route::ok(body.clone()).declared_length(2000));
    up.route(
        "/long",
        Route::ok(body.clone()).header("Content-Length", "10"),
    );

    // Raw: exactly 100 body bytes, then EOF, while 1000 were announced.
    let (head, got) = split_response(&raw(&up, &get("/t")).await);
    assert!(head.contains("Content-Length: 1000"), "{head}");
    assert_eq!(got, body[..100]);

    let c = client();
    for path in ["/t", "/tc", "/short"] {
        let resp = c.get(up.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(
            resp.bytes().await.is_err(),
            "{path}: body should be incomplete"
        );
    }

    // A Content-Length header is a declared length: the client reads 10 bytes and the
    // server closes rather than leaving the rest to be parsed as the next response.
    let (head, got) = split_response(&raw(&up, &get("/long")).await);
    assert!(head.contains("Content-Length: 10\r\n"), "{head}");
    assert_eq!(head.matches("Content-Length").count(), 1, "{head}");
    assert_eq!(got, body);
    let got = c.get(up.url("/long")).send().await.unwrap().bytes().await;
    assert_eq!(got.unwrap(), body[..10]);
}

#[tokio::test]
async fn delays_and_rate() {
    let up = Upstream::start().await;
    up.route(
        "/dh",
        Route::ok("x").delay_headers(Duration::from_millis(150)),
    );
    up.route(
        "/dc",
        Route::ok("abc")
            .chunk_size(1)
            .delay_chunks(Duration::from_millis(60)),
    );
    let body = random_bytes(200_000, 3);
    up.route(
        "/rate",
        Route::ok(body.clone())
            .rate(1_000_000)
            .delay_headers(Duration::from_millis(50)),
    );
    let c = client();

    let t = Instant::now();
    let resp = c.get(up.url("/dh")).send().await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(150));
    // Recorded before the response started.
    assert_eq!(up.hits("/dh"), 1);
    resp.bytes().await.unwrap();

    let t = Instant::now();
    let got = c.get(up.url("/dc")).send().await.unwrap().bytes().await;
    assert_eq!(got.unwrap(), "abc");
    assert!(
        t.elapsed() >= Duration::from_millis(120),
        "{:?}",
        t.elapsed()
    );

    // 200 kB at 1 MB/s after 50 ms: ~250 ms in total, first byte not before 50 ms.
    let t = Instant::now();
    let mut resp = c.get(up.url("/rate")).send().await.unwrap();
    let first = t.elapsed();
    let mut got = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        got.extend_from_slice(&chunk);
    }
    let total = t.elapsed();
    assert_eq!(got, body);
    assert!(first >= Duration::from_millis(50), "{first:?}");
    assert!(
        total >= Duration::from_millis(245) && total < Duration::from_millis(400),
        "{total:?}"
    );
}

#[tokio::test]
async fn hold_at_and_gate() {
    let up = Upstream::start().await;
    let gate = Gate::new();
    let body = random_bytes(1000, 4);
    up.route("/hold", Route::ok(body.clone()).hold_at(300, gate.clone()));
    let c = client();
    let mut resp = c.get(up.url("/hold")).send().await.unwrap();
    gate.reached().await;
    assert_eq!(gate.arrivals(), 1);
    assert!(!gate.is_open());
    let mut got = Vec::new();
    while got.len() < 300 {
        got.extend_from_slice(&resp.chunk().await.unwrap().unwrap());
    }
    // Exactly the bytes before the hold point arrive, then nothing while the gate is shut.
    assert_eq!(got, body[..300]);
    let stalled = tokio::time::timeout(Duration::from_millis(50), resp.chunk()).await;
    assert!(stalled.is_err(), "body continued past a closed gate");
    gate.open();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got, body);

    // An open gate lets later requests through at once, still counting arrivals.
    let got = c.get(up.url("/hold")).send().await.unwrap().bytes().await;
    assert_eq!(got.unwrap(), body);
    gate.reached_n(2).await;
}

#[tokio::test]
async fn hold_headers_and_many_concurrent() {
    let up = Upstream::start().await;
    let gate = Gate::new();
    up.route("/many", Route::ok("v").hold_headers(gate.clone()));
    let c = client();
    const N: usize = 300;
    let tasks: Vec<_> = (0..N)
        .map(|_| {
            let (c, url) = (c.clone(), up.url("/many"));
            tokio::spawn(async move { c.get(url).send().await?.text().await })
        })
        .collect();
    // Every request is parked at the gate: all recorded, none answered.
    gate.reached_n(N).await;
    assert_eq!(up.hits("/many"), N);
    assert!(tasks.iter().all(|t| !t.is_finished()));
    gate.open();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), "v");
    }
    assert_eq!(up.connections(), N);
}

#[tokio::test]
async fn ranges() {
    let up = Upstream::start().await;
    let body = random_bytes(100, 5);
    let lm = "Wed, 21 Oct 2015 07:28:00 GMT";
    up.route(
        "/r",
        Route::ok(body.clone())
            .header("ETag", "\"abc\"")
            .header("Last-Modified", lm)
            .ranges(),
    );
    let c = client();
    let fetch = |range: Option<&str>, if_range: Option<&str>| {
        let mut req = c.get(up.url("/r"));
        if let Some(r) = range {
            req = req.header("Range", r);
        }
        if let Some(v) = if_range {
            req = req.header("If-Range", v);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let cr = resp
                .headers()
                .get("content-range")
                .map(|v| v.to_str().unwrap().to_string());
            let ar = resp.headers().get("accept-ranges").cloned();
            assert_eq!(ar.unwrap(), "bytes");
            (status, cr, resp.bytes().await.unwrap())
        }
    };

    let (s, cr, b) = fetch(Some("bytes=10-19"), None).await;
    assert_eq!((s, cr.as_deref()), (206, Some("bytes 10-19/100")));
    assert_eq!(b, body[10..20]);
    let (s, cr, b) = fetch(Some("bytes=90-"), None).await;
    assert_eq!((s, cr.as_deref()), (206, Some("bytes 90-99/100")));
    assert_eq!(b, body[90..]);
    let (s, cr, b) = fetch(Some("bytes=-5"), None).await;
    assert_eq!((s, cr.as_deref()), (206, Some("bytes 95-99/100")));
    assert_eq!(b, body[95..]);
    let (s, _, b) = fetch(Some("bytes=50-"), Some("\"abc\"")).await;
    assert_eq!((s, b.len()), (206, 50));
    let (s, _, b) = fetch(Some("bytes=50-"), Some(lm)).await;
    assert_eq!((s, b.len()), (206, 50));
    let (s, cr, b) = fetch(Some("bytes=50-"), Some("\"other\"")).await;
    assert_eq!((s, cr, b), (200, None, body.clone()));
    let (s, cr, b) = fetch(None, None).await;
    assert_eq!((s, cr, b), (200, None, body.clone()));
    let (s, cr, b) = fetch(Some("bytes=200-"), None).await;
    assert_eq!((s, cr.as_deref(), b.len()), (416, Some("bytes */100"), 0));
    // Multiple ranges are not supported: full body.
    let (s, _, b) = fetch(Some("bytes=0-1,5-6"), None).await;
    assert_eq!((s, b.len()), (200, 100));
}

#[tokio::test]
async fn conditional_requests() {
    let up = Upstream::start().await;
    let lm = "Wed, 21 Oct 2015 07:28:00 GMT";
    up.route(
        "/cond",
        Route::ok("data")
            .header("ETag", "\"v2\"")
            .header("Last-Modified", lm)
            .conditional(),
    );
    let c = client();
    let status = |name: &'static str, value: &'static str| {
        let req = c.get(up.url("/cond")).header(name, value);
        async move {
            let resp = req.send().await.unwrap();
            let s = resp.status().as_u16();
            (s, resp.bytes().await.unwrap().len())
        }
    };
    assert_eq!(status("If-None-Match", "\"v2\"").await, (304, 0));
    assert_eq!(status("If-None-Match", "W/\"v2\"").await, (304, 0));
    assert_eq!(status("If-None-Match", "\"v1\"").await, (200, 4));
    assert_eq!(status("If-Modified-Since", lm).await, (304, 0));
    let older = "Tue, 20 Oct 2015 07:28:00 GMT";
    assert_eq!(status("If-Modified-Since", older).await, (200, 4));
    // 304s carry no framing yet keep the connection usable.
    assert_eq!(up.connections(), 1);
}

#[tokio::test]
async fn hang_and_drop() {
    let up = Upstream::start().await;
    up.route("/hang", Route::ok("never").hang());
    let c = client();
    let res = c
        .get(up.url("/hang"))
        .timeout(Duration::from_millis(100))
        .send()
        .await;
    assert!(res.unwrap_err().is_timeout());
    assert_eq!(up.hits("/hang"), 1);

    // A hanging connection and the listener both go away with the server.
    let mut stream = TcpStream::connect(up.addr()).await.unwrap();
    stream.write_all(get("/hang").as_bytes()).await.unwrap();
    let addr = up.addr();
    // Wait until the request is recorded so the drop below really hits a hanging handler.
    while up.hits("/hang") < 2 {
        tokio::task::yield_now().await;
    }
    let clone = up.clone();
    drop(up);
    assert_eq!(clone.hits("/hang"), 2, "a clone keeps the server alive");
    drop(clone);
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut buf))
        .await
        .expect("connection not closed on drop");
    assert!(n.is_err() || buf.is_empty());
    let refused = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if TcpStream::connect(addr).await.is_err() {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(refused.is_ok(), "listener still accepting after drop");
}

#[test]
fn random_bytes_is_deterministic() {
    let a = random_bytes(1001, 7);
    assert_eq!(a.len(), 1001);
    assert_eq!(a, random_bytes(1001, 7));
    assert_ne!(a, random_bytes(1001, 8));
    // A prefix of a longer stream, so tests can compare ranges against one generator.
    assert_eq!(random_bytes(100, 7), a[..100]);
    // Roughly uniform: no byte value dominates (cheap sanity check against a broken mixer).
    let big = random_bytes(1 << 16, 9);
    let mut counts = [0usize; 256];
    for b in big.iter() {
        counts[*b as usize] += 1;
    }
    assert!(counts.iter().all(|&n| n > 128 && n < 400), "{counts:?}");
}
