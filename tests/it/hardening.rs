//! Hardening (SPEC 10, issue 11): bounded memory for anonymous input, no panic reachable
//! from a request, JSON answers for every head actix-http would refuse, per-client bounds on
//! background downloads, bounded caches of request-derived data, HTML pages that forbid
//! scripts and framing, IPv6 clients limited per /64, a bounded alert de-duplication map.
//! Bounds are asserted on the state the server exposes (counts and bytes), never on timing
//! or RSS.

use std::net::IpAddr;
use std::time::Duration;

use crate::common::fixtures::eventually;
use crate::common::raw::Answer;
use crate::common::server::*;
use crate::common::upstream::*;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use upcache::jobs::{self as prefetch, Kind};

const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// A raw HTTP/1.1 connection: requests go out exactly as written, answers are parsed by
/// hand (Content-Length or chunked).
struct Raw {
    io: BufReader<TcpStream>,
}

impl Raw {
    async fn connect(base: &str) -> Raw {
        let addr = base.trim_start_matches("http://");
        Raw {
            io: BufReader::new(TcpStream::connect(addr).await.unwrap()),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.unwrap();
    }

    async fn get(&mut self, target: &str) -> Answer {
        self.send(format!("GET {target} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
            .await;
        self.answer()
            .await
            .unwrap_or_else(|| panic!("the connection was closed instead of answering {target}"))
    }

    /// The next answer; `None` if the server closed the connection first.
    async fn answer(&mut self) -> Option<Answer> {
        let mut line = String::new();
        if self.io.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let status = line.split(' ').nth(1)?.parse().ok()?;
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            self.io.read_line(&mut h).await.ok()?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (n, v) = h.split_once(':')?;
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        let mut a = Answer {
            status,
            headers,
            body: Vec::new(),
        };
        if let Some(len) = a.header("content-length") {
            let mut body = vec![0; len.parse().ok()?];
            self.io.read_exact(&mut body).await.ok()?;
            a.body = body;
        } else if a.header("transfer-encoding") == Some("chunked") {
            loop {
                let mut size = String::new();
                self.io.read_line(&mut size).await.ok()?;
                let n = usize::from_str_radix(size.trim(), 16).ok()?;
                let mut chunk = vec![0; n + 2];
                self.io.read_exact(&mut chunk).await.ok()?;
                a.body.extend_from_slice(&chunk[..n]);
                if n == 0 {
                    break;
                }
            }
        }
        Some(a)
    }

    /// Everything until the server closes the connection.
    async fn rest(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        let _ = self.io.read_to_end(&mut all).await;
        all
    }
}

fn process(env: &[(&str, &str)]) -> (tempfile::TempDir, Process) {
    let cwd = tempfile::tempdir().unwrap();
    let mut all = vec![
        ("UPCACHE__UPSTREAM__ALLOW_PRIVATE", "true"),
        ("UPCACHE__LIMITS__PER_CLIENT_RPS", "0"),
        ("UPCACHE__LIMITS__PER_CLIENT_CONCURRENCY", "0"),
    ];
    all.extend_from_slice(env);
    let p = Process::spawn(cwd.path(), &[], &all);
    (cwd, p)
}

/// Every form of `path` with one unreserved character of its path percent-encoded.
fn encoded_variants(target: &str) -> Vec<String> {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, format!("?{q}")),
        None => (target, String::new()),
    };
    let mut out = Vec::new();
    for (i, c) in path.char_indices() {
        if c.is_ascii_alphanumeric() || "-._~".contains(c) {
            let hex = if i % 2 == 0 {
                format!("%{:02X}", c as u8)
            } else {
                format!("%{:02x}", c as u8)
            };
            out.push(format!("{}{hex}{}{query}", &path[..i], &path[i + 1..]));
        }
    }
    out
}

// Issue 11, item 3: `GET /by-%6Dd5/<md5>` reached an `.expect()` (a dropped connection and
// a backtrace in the log per request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_and_malformed_paths_route_or_get_json_errors_and_never_panic() {
    let up = Upstream::start().await;
    let body = random_bytes(3000, 11);
    up.route("/pkg/a-1.0.tar.gz", Route::ok(body.clone()));
    let (_cwd, p) = process(&[]);
    let c = client();
    let fetched = c
        .get(format!(
            "{}/fetch?url={}",
            p.base,
            enc(&up.url("/pkg/a-1.0.tar.gz"))
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.bytes().await.unwrap(), body);
    let lookup = format!(
        "{}/api/v1/lookup?url={}",
        p.base,
        enc(&up.url("/pkg/a-1.0.tar.gz"))
    );
    // The fill commits just after the last byte was sent: ask until it has.
    let blob: Value = eventually("the fill to commit", async || {
        let r = c.get(&lookup).send().await.unwrap();
        match r.status() {
            reqwest::StatusCode::OK => Some(r.json().await.unwrap()),
            _ => None,
        }
    })
    .await;
    let md5 = blob["md5"].as_str().unwrap().to_owned();
    let sha256 = blob["sha256"].as_str().unwrap().to_owned();

    // The observed request, and its relatives: they route, and find the blob.
    let mut raw = Raw::connect(&p.base).await;
    for target in [
        format!("/by-%6Dd5/{md5}"),
        format!("/by-%6dd5/{md5}/a.tar.gz"),
        format!("/b%79-sha256/{sha256}"),
        format!("/by-sha%32%35%36/{sha256}/x.tgz"),
        format!("/repo/pkgs/rpms/a/a-1.0.tar.gz/%6Dd5/{md5}/a-1.0.tar.gz"),
    ] {
        let a = raw.get(&target).await;
        assert_eq!(
            a.status,
            200,
            "{target}: {:?}",
            String::from_utf8_lossy(&a.body)
        );
        assert_eq!(a.body, body, "{target}");
    }

    let zeros = |n| "0".repeat(n);
    let templates = [
        format!("/by-md5/{md5}"),
        format!("/by-sha256/{sha256}/name.tar.gz"),
        format!("/by-sha512/{}", zeros(128)),
        format!("/by-blake3/{}/x", zeros(64)),
        format!("/repo/pkgs/rpms/x/f.tar.gz/sha512/{}/f.tar.gz", zeros(128)),
        "/fetch?url=file%3A%2F%2F%2Fetc%2Fpasswd".to_owned(),
        "/api/v1/lookup?md5=zz".to_owned(),
        "/api/v1/prefetch/0123".to_owned(),
        "/api/v1/pin/zz".to_owned(),
        "/ui/blob/zz".to_owned(),
        "/https/".to_owned(),
        "/ftp/user@host/x.tgz".to_owned(),
        "/healthz".to_owned(),
    ];
    let junk = [
        "%00",
        "%ff",
        "%c0%ae%c0%ae",
        "..",
        "%2e%2e",
        "%2f",
        "%5c",
        ";x",
        "%",
        "%g1",
        "%%",
        "a%2",
        "%C3%A9",
        "%C3%28",
        "%E2%80%AE",
        "%0d%0a",
        "?",
        "%3F",
        "//",
        "./.",
    ];
    let long = "a".repeat(4000);
    let mut targets: Vec<String> = templates.iter().flat_map(|t| encoded_variants(t)).collect();
    // (Junk after `/https/` would name hosts, and be looked up in DNS.)
    for t in templates.iter().filter(|t| *t != "/https/") {
        let path = t.split('?').next().unwrap();
        for j in junk.iter().copied().chain([long.as_str()]) {
            targets.push(format!("{path}{j}"));
            targets.push(format!("{path}/{j}/more"));
        }
    }
    for prefix in ["/by-md5/", "/by-", "/repo/pkgs/", "/api/v1/", "/ui/blob/"] {
        for j in junk {
            targets.push(format!("{prefix}{j}"));
        }
    }
    // Mirror paths that can never name a host.
    for bad in [
        "/http/",
        "/http/%00/x",
        "/ftp/a@b/x",
        "/http/a%2fb@c/x",
        "/gopher/h/x",
    ] {
        targets.push(bad.to_owned());
    }
    assert!(targets.len() > 500, "{} targets", targets.len());
    for target in &targets {
        // Everything on one connection: it must stay usable after every answer.
        let a = raw.get(target).await;
        assert!(
            (200..500).contains(&a.status),
            "{target}: {} {:?}",
            a.status,
            String::from_utf8_lossy(&a.body)
        );
        if a.status >= 400 {
            a.error();
        }
    }
    let a = raw.get("/healthz").await;
    assert_eq!(
        a.status,
        200,
        "the connection survived {} requests",
        targets.len()
    );
    let log = p.log();
    assert!(!log.contains("panicked"), "a panic in the log:\n{log}");
}

/// Send `request` on a fresh connection, read until the server closes it.
async fn exchange(base: &str, request: &[u8]) -> (Vec<Answer>, Vec<u8>) {
    let mut raw = Raw::connect(base).await;
    raw.send(request).await;
    let mut answers = Vec::new();
    while let Some(a) = raw.answer().await {
        answers.push(a);
    }
    (answers, raw.rest().await)
}

// Issue 11, item 9: a target over 64 KiB got actix's empty 400, a 1 MB query an empty 431;
// every other head actix-http refused got an empty answer too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refused_head_gets_a_json_answer_from_the_first_byte() {
    let (_cwd, p) = process(&[]);
    let get = |target: &str, extra: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: test\r\n{extra}\r\n").into_bytes()
    };
    let one = |answers: Vec<Answer>, rest: Vec<u8>| {
        assert_eq!(answers.len(), 1, "{answers:?} then {rest:?}");
        assert!(rest.is_empty(), "nothing after the refusal: {rest:?}");
        let a = answers.into_iter().next().unwrap();
        assert_eq!(a.header("connection"), Some("close"));
        assert!(a.header("x-served-by").is_some(), "{a:?}");
        a
    };
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        // Over 64 KiB: beyond what a URI may hold in actix-http (was an empty 400).
        (
            get(&format!("/fetch?url={}", "a".repeat(70_000)), ""),
            414,
            "too_large",
        ),
        // A 1 MB query: beyond actix-http's head buffer (was an empty 431).
        (
            get(&format!("/api/v1/stats?{}", "q".repeat(1 << 20)), ""),
            414,
            "too_large",
        ),
        // Headers far beyond 16 KiB, and more fields than actix-http takes (96).
        (
            get("/healthz", &format!("x-big: {}\r\n", "v".repeat(200_000))),
            431,
            "too_large",
        ),
        (
            get(
                "/healthz",
                &(0..100)
                    .map(|i| format!("x-{i}: y\r\n"))
                    .collect::<String>(),
            ),
            431,
            "too_large",
        ),
        // What actix-http's parser refuses.
        (
            b"GET /healthz HTTP/1.1\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (get("/healthz", "Bad Name: x\r\n"), 400, "bad_request"),
        (
            b"POST /api/v1/prefetch HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\
              Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
            400,
            "bad_request",
        ),
        (
            get("/healthz", "Content-Length: 1\r\nContent-Length: 2\r\n"),
            400,
            "bad_request",
        ),
        (
            b"G\x01T / HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            b"GET / HTTP/7.0\r\nHost: t\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        // A TLS ClientHello on the plain port.
        (
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03".to_vec(),
            400,
            "bad_request",
        ),
    ];
    for (request, status, code) in cases {
        let (answers, rest) = exchange(&p.base, &request).await;
        let a = one(answers, rest);
        let shown = String::from_utf8_lossy(&request[..request.len().min(60)]).into_owned();
        assert_eq!(a.status, status, "{shown}");
        assert_eq!(a.error()["error"], code, "{shown}");
    }

    // Pipelined behind a good request: the good one is answered first, then the refusal.
    let mut both = get("/healthz", "");
    both.extend(get(&format!("/{}", "x".repeat(9000)), ""));
    let (answers, _) = exchange(&p.base, &both).await;
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(answers[0].status, 200);
    assert_eq!(answers[1].status, 414);
    answers[1].error();

    // A head that never completes gets a JSON 408 (the wait is the server's head timeout):
    // on a new connection, and after a first request on one (where the clock starts at the
    // head's first byte). Both wait at once.
    let mut first = Raw::connect(&p.base).await;
    let mut later = Raw::connect(&p.base).await;
    assert_eq!(later.get("/healthz").await.status, 200);
    first.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n").await;
    later.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n").await;
    for (raw, which) in [(&mut first, "first"), (&mut later, "second")] {
        let a = raw.answer().await;
        let a = a.unwrap_or_else(|| panic!("the {which} stalled head was not answered"));
        assert_eq!(a.status, 408, "{which}");
        a.error();
    }

    // Bodies pass through the checks intact: a chunked and a sized body on one connection.
    let mut raw = Raw::connect(&p.base).await;
    let urls = json!({ "urls": ["gopher://x/y"] }).to_string();
    let chunked = format!(
        "POST /api/v1/prefetch HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x}\r\n{urls}\r\n0\r\n\r\n",
        urls.len()
    );
    let sized = format!(
        "POST /api/v1/prefetch HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{urls}",
        urls.len()
    );
    raw.send(format!("{chunked}{sized}").as_bytes()).await;
    for _ in 0..2 {
        let a = raw.answer().await.unwrap();
        assert_eq!(a.status, 202, "{:?}", String::from_utf8_lossy(&a.body));
    }
    assert_eq!(raw.get("/healthz").await.status, 200);
    let log = p.log();
    assert!(!log.contains("panicked"), "{log}");
}

async fn post_prefetch(
    srv: &TestServer,
    client: Option<&str>,
    urls: &[String],
) -> reqwest::Response {
    let mut req = srv
        .client
        .post(srv.url("/api/v1/prefetch"))
        .json(&json!({ "urls": urls }));
    if let Some(ip) = client {
        req = req.header("x-forwarded-for", ip);
    }
    req.send().await.unwrap()
}

async fn assert_429(r: reqwest::Response, needle: &str) {
    assert!(r.headers().contains_key("retry-after"));
    let (status, code, message) = error_code(r).await;
    assert_eq!((status, code.as_str()), (429, "rate_limited"), "{message}");
    assert!(message.contains(needle), "{message:?} names {needle}");
}

// Issue 11, item 1: jobs kept every raw URL of any length, up to 1,000 jobs for an hour
// (20 posts of one 8 MB URL: +210 MB of RSS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_input_is_bounded_per_url_per_client_and_in_total() {
    let up = Upstream::start().await;
    let gate = Gate::new();
    up.route(
        "/slow.tar.gz",
        Route::ok(random_bytes(1000, 3)).hold_headers(gate.clone()),
    );
    let srv = TestServer::start_with(|c| {
        c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;

    // A URL over the 8 KiB target limit refuses the job; nothing is kept.
    let long = format!("http://a.example/{}.tar.gz", "a".repeat(8200));
    let r = post_prefetch(&srv, None, &["http://a.example/x.tgz".into(), long]).await;
    let (status, code, message) = error_code(r).await;
    assert_eq!((status, code.as_str()), (400, "bad_request"), "{message}");
    assert!(
        message.contains("urls[1]") && message.contains("8192"),
        "{message}"
    );
    // A body over the job body limit is refused as such.
    let huge = vec!["x".repeat(1 << 20); 5];
    let (status, code, _) = error_code(post_prefetch(&srv, None, &huge).await).await;
    assert_eq!((status, code.as_str()), (413, "too_large"));
    assert_eq!(srv.app.jobs.retained(), (0, 0));

    // Running jobs of ~7.5 MB each (450 URLs of 8 KB, all waiting for upstream).
    let job = |client: u32| -> Vec<String> {
        (0..450)
            .map(|i| {
                let pad = "p".repeat(7900);
                up.url(&format!("/slow.tar.gz?c={client}&i={i}&{pad}"))
            })
            .collect()
    };
    let ip = |n: u32| format!("198.51.100.{n}");
    let r = post_prefetch(&srv, Some(&ip(1)), &job(1)).await;
    assert_eq!(r.status(), 202);
    let r = post_prefetch(&srv, Some(&ip(1)), &job(2)).await;
    assert_eq!(r.status(), 202);
    // A third would take the client over its 16 MiB.
    let r = post_prefetch(&srv, Some(&ip(1)), &job(3)).await;
    assert_429(r, &prefetch::MAX_CLIENT_BYTES.to_string()).await;
    let (n, bytes) = srv.app.jobs.retained_by(ip(1).parse().unwrap());
    assert_eq!(n, 2);
    assert!(bytes <= prefetch::MAX_CLIENT_BYTES, "{bytes}");
    // Other clients fill the instance up to its total.
    let mut refused = None;
    for client in 2..20 {
        let r = post_prefetch(&srv, Some(&ip(client)), &job(client)).await;
        if r.status() == 429 {
            refused = Some(r);
            break;
        }
        assert_eq!(r.status(), 202);
    }
    assert_429(
        refused.expect("the total bound refuses a job"),
        &prefetch::MAX_RETAINED_BYTES.to_string(),
    )
    .await;
    let (_, total) = srv.app.jobs.retained();
    assert!(total <= prefetch::MAX_RETAINED_BYTES, "{total}");
    drop(gate);
}

// Issue 11, item 1: finished jobs keep a summary, not every URL, once room is needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_make_room_as_summaries() {
    let srv = TestServer::start().await;
    // Jobs that finish at once (every URL has an unsupported scheme), ~7.5 MB each.
    let job = |n: u32| -> Vec<String> {
        (0..450)
            .map(|i| format!("gopher://h/{n}-{i}-{}", "g".repeat(7950)))
            .collect()
    };
    let mut ids = Vec::new();
    for n in 0..4 {
        let r = post_prefetch(&srv, None, &job(n)).await;
        assert_eq!(r.status(), 202, "job {n}");
        let v: Value = r.json().await.unwrap();
        ids.push(v["id"].as_str().unwrap().to_owned());
        let (_, bytes) = srv.app.jobs.retained_by(LOCAL);
        assert!(bytes <= prefetch::MAX_CLIENT_BYTES, "{bytes} after job {n}");
    }
    let first = srv.app.jobs.get(Kind::Prefetch, &ids[0]).unwrap();
    assert!(
        first.is_summarized(),
        "the oldest finished job was summarized"
    );
    let status = first.status();
    assert_eq!(status["summarized"], true);
    assert_eq!(status["total"], 450);
    assert_eq!(status["failed"], 450);
    assert_eq!(status["counts"]["failed"], 450);
    let kept = status["items"].as_array().unwrap().len();
    assert!(kept < 450 && kept > 0, "{kept} items kept");
    assert_eq!(status["items_omitted"], 450 - kept);
    // The newest keeps every item.
    let last = srv.app.jobs.get(Kind::Prefetch, &ids[3]).unwrap();
    assert_eq!(last.status()["items"].as_array().unwrap().len(), 450);
}

// Issue 11, item 5: with `miss = "redirect"`, 1,000 requests from one address left 1,001
// background fills and temp files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_fills_count_against_the_clients_concurrency() {
    let up = Upstream::start().await;
    let gate = Gate::new();
    up.route(
        "/r.tar.gz",
        Route::ok(random_bytes(5000, 5)).hold_at(100, gate.clone()),
    );
    let srv = TestServer::start_with(|c| {
        c.upstream.miss = upcache::config::MissMode::Redirect;
        c.limits.per_client_concurrency = 3;
    })
    .await;
    let url = |i: usize| srv.fetch_url(&up.url(&format!("/r.tar.gz?i={i}")));
    for i in 0..3 {
        let r = srv.get(&url(i)).await;
        assert_eq!(r.status(), 302, "request {i}");
    }
    gate.reached_n(3).await;
    assert_eq!(srv.app.flights.len(), 3);
    assert_eq!(srv.app.limits.active_requests(LOCAL), 3);
    // A fourth download from the same client: refused, nothing started.
    let r = srv.get(&url(3)).await;
    let (status, code, message) = error_code(r).await;
    assert_eq!((status, code.as_str()), (429, "rate_limited"), "{message}");
    assert!(message.contains("per_client_concurrency = 3"), "{message}");
    assert_eq!(srv.app.flights.len(), 3);
    assert_eq!(srv.temp_files().len(), 3);
    // Once they end, the slots are free again.
    gate.open();
    srv.app.flights.wait_idle().await;
    srv.app.limits.until_active_at_most(LOCAL, 0).await;
    let r = srv.get(&url(3)).await;
    assert_eq!(r.status(), 302);
}

/// `upcache_memory_<what>{state="<state>"}` from `/metrics`.
async fn memory(srv: &TestServer, what: &str, state: &str) -> u64 {
    let text = srv.get(&srv.url("/metrics")).await.text().await.unwrap();
    let prefix = format!("upcache_memory_{what}{{state=\"{state}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

// Issue 11, item 6: normalized targets were cached before the policy check (16,384 entries
// of up to 16 KB: 16,500 refused 8 KB requests took RSS from 24 to 284 MB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_targets_take_no_room_and_caches_are_bounded_in_bytes() {
    let up = Upstream::start().await;
    let body = random_bytes(2000, 9);
    up.route("/ok.tar.gz", Route::ok(body.clone()));
    up.route("/gone.tar.gz", Route::status(404));
    let srv = TestServer::start_with(|c| {
        c.upstream.allow_hosts = vec!["127.0.0.1".into()];
    })
    .await;
    for i in 0..300 {
        let target = format!("/http/forbidden.example/{i}-{}.tar.gz", "f".repeat(8000));
        let (status, code, _) = error_code(srv.get(&srv.url(&target)).await).await;
        assert_eq!((status, code.as_str()), (403, "forbidden_destination"));
    }
    assert_eq!(memory(&srv, "entries", "targets").await, 0);
    assert_eq!(memory(&srv, "bytes", "targets").await, 0);
    // A miss is not cached either; the hit after it is, bytes counted.
    let mirror = srv.mirror_url(&up.url("/ok.tar.gz"));
    assert_eq!(srv.get_bytes(&mirror).await.2, body);
    srv.app.flights.wait_idle().await;
    assert_eq!(memory(&srv, "entries", "targets").await, 0);
    let (status, headers, got) = srv.get_bytes(&mirror).await;
    assert_eq!(
        (status.as_u16(), &headers["x-cache"]),
        (200, &"HIT".parse().unwrap())
    );
    assert_eq!(got, body);
    assert_eq!(memory(&srv, "entries", "targets").await, 1);
    let bytes = memory(&srv, "bytes", "targets").await;
    assert!(bytes > mirror.len() as u64, "{bytes}");

    // The negative cache is bounded in bytes: lowered here to 64 KiB, 8 KB URLs fit 7.
    srv.app.negative.set_bounds(1000, 64 << 10);
    for i in 0..40 {
        let gone = format!("{}?{i}-{}", up.url("/gone.tar.gz"), "n".repeat(8000));
        let (status, ..) = error_code(srv.get(&srv.fetch_url(&gone)).await).await;
        assert_eq!(status, 404);
        srv.app.flights.wait_idle().await;
        let (entries, bytes) = srv.app.negative.size();
        assert!(
            bytes <= 64 << 10 && entries <= 8,
            "{entries} entries, {bytes} bytes"
        );
    }
    assert_eq!(
        memory(&srv, "bytes", "negative").await as usize,
        srv.app.negative.size().1
    );
    assert!(srv.app.negative.size().0 >= 7);
}

// Issue 11, item 11: HTML pages had no nosniff, no framing ban and no CSP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_pages_forbid_sniffing_framing_and_inline_scripts() {
    let up = Upstream::start().await;
    up.route("/p.tar.gz", Route::ok(random_bytes(100, 1)));
    let srv = TestServer::start().await;
    srv.get_bytes(&srv.fetch_url(&up.url("/p.tar.gz"))).await;
    srv.app.flights.wait_idle().await;
    let b3 = srv
        .app
        .cache
        .index
        .url(&up.url("/p.tar.gz"))
        .unwrap()
        .unwrap()
        .blob
        .digests
        .blake3
        .clone();
    for (path, status) in [
        ("/".to_owned(), 200),
        (format!("/ui/blob/{b3}"), 200),
        ("/ui/search?q=nothing".to_owned(), 404),
    ] {
        let r = srv.get(&srv.url(&path)).await;
        assert_eq!(r.status(), status, "{path}");
        let h = r.headers().clone();
        assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "frame-ancestors 'none'",
            "form-action 'self'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        // Scripts only from us (the status page's refresh), nothing inline.
        assert!(
            !csp.contains("unsafe-") && csp.contains("script-src 'self'"),
            "{csp}"
        );
        let html = r.text().await.unwrap();
        assert!(!html.contains("<style"), "{path}");
        assert_eq!(
            html.matches("<script").count(),
            html.matches("<script src=\"").count(),
            "{path}"
        );
        assert!(html.contains("ui/style.css\""), "{path}");
    }
    let r = srv.get(&srv.url("/ui/style.css")).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
}

// Issue 11, item 11: limits were kept per full IPv6 address, so a /64 had no limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_clients_are_limited_per_64() {
    let srv = TestServer::start_with(|c| {
        c.limits.per_client_rps = 1;
        c.limits.per_client_burst = 3;
        c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let get = |xff: String| {
        srv.client
            .get(srv.url("/api/v1/lookup?md5=00000000000000000000000000000000"))
            .header("x-forwarded-for", xff)
            .send()
    };
    // Every request from another address of one /64: one bucket (a token a second).
    let mut refused = None;
    for i in 1..30u32 {
        let r = get(format!("2001:db8:1:2:{i:x}::{i:x}")).await.unwrap();
        if r.status() == 429 {
            refused = Some(r);
            break;
        }
        assert_eq!(r.status(), 404);
    }
    let (status, _, message) = error_code(refused.expect("the /64 runs out of tokens")).await;
    assert_eq!(status, 429);
    assert!(message.contains("2001:db8:1:2::/64"), "{message}");
    // The next /64 has its own bucket; IPv4 clients are still one address each.
    assert_eq!(get("2001:db8:1:3::1".into()).await.unwrap().status(), 404);
    assert_eq!(get("198.51.100.7".into()).await.unwrap().status(), 404);
}

// Issue 11, item 11: the alert de-duplication map grew past its bound within one
// `min_interval` (nothing was old enough to forget).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_deduplication_stays_bounded_within_min_interval() {
    // Ports with nothing listening: every download is refused at once.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let srv = TestServer::start_with(|c| {
        c.alerts.webhook_url = format!("http://127.0.0.1:{closed}/hook");
        c.alerts.min_interval = Duration::from_secs(3600);
        c.upstream.retries = 0;
    })
    .await;
    let bound = 16;
    srv.app.cache.alerts.set_remembered_max(bound);
    for i in 2..50 {
        let url = format!("http://127.0.0.{i}:{closed}/x.tar.gz");
        let r = srv.get(&srv.fetch_url(&url)).await;
        assert_eq!(r.status(), 502, "{url}");
        srv.app.flights.wait_idle().await;
        let (n, _) = srv.app.cache.alerts.size();
        assert!(n <= bound, "{n} alert keys remembered after {i} hosts");
    }
    assert_eq!(
        srv.app.cache.alerts.size().0,
        bound,
        "every host raised its alert"
    );
    assert_eq!(memory(&srv, "entries", "alerts").await, bound as u64);
}

/// Hits send most of their headers as pre-rendered lines spliced into the head actix wrote
/// (issue 14): on the wire, a small hit (its body from memory, one `writev`) and a large one
/// (`sendfile`) carry every header exactly once, full and ranged, pipelined on one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hit_heads_on_the_wire_carry_every_header_exactly_once() {
    let up = Upstream::start().await;
    let small = random_bytes(1024, 21);
    let large = random_bytes(100 * 1024, 22);
    up.route("/pkg/small-1.0.tar.gz", Route::ok(small.clone()));
    up.route("/pkg/large-1.0.tar.gz", Route::ok(large.clone()));
    let (_cwd, p) = process(&[]);
    let c = client();
    let port = up.addr().port();
    let every = [
        "content-length",
        "date",
        "x-served-by",
        "x-cache",
        "etag",
        "last-modified",
        "cache-control",
        "content-type",
        "accept-ranges",
        "x-checksum-md5",
        "x-checksum-sha256",
        "x-checksum-sha512",
        "x-checksum-blake3",
        "content-disposition",
    ];
    for (name, body) in [("small", &small), ("large", &large)] {
        let target = format!("/http/127.0.0.1:{port}/pkg/{name}-1.0.tar.gz");
        let url = format!("{}{target}", p.base);
        eventually("the fill to commit", async || {
            let r = c.get(&url).send().await.unwrap();
            (r.headers()["x-cache"] == "HIT").then_some(())
        })
        .await;
        let mut raw = Raw::connect(&p.base).await;
        let get = |extra: &str| format!("GET {target} HTTP/1.1\r\nHost: t\r\n{extra}\r\n");
        let pipelined = [get(""), get("Range: bytes=10-19\r\n"), get("")].concat();
        raw.send(pipelined.as_bytes()).await;
        for (i, status) in [200, 206, 200].into_iter().enumerate() {
            let a = raw.answer().await.expect("an answer");
            assert_eq!(a.status, status, "{name} #{i}");
            let mut names: Vec<&str> = a.headers.iter().map(|(n, _)| n.as_str()).collect();
            names.sort_unstable();
            let mut once = names.clone();
            once.dedup();
            assert_eq!(
                names, once,
                "{name} #{i}: a header twice in {:?}",
                a.headers
            );
            for h in every {
                assert!(
                    a.header(h).is_some(),
                    "{name} #{i}: no {h} in {:?}",
                    a.headers
                );
            }
            assert_eq!(a.header("x-cache"), Some("HIT"), "{name} #{i}");
            let want = if status == 206 {
                &body[10..20]
            } else {
                &body[..]
            };
            assert_eq!(a.body, want, "{name} #{i}");
        }
    }
}
