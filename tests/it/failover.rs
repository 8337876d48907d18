//! When upstream misbehaves: resuming a broken transfer with `Range` + `If-Range`, mirror
//! alternates when the primary is down, and the per-host circuit breaker.

use crate::common;

use crate::common::fixtures::{journal_events, sha256};
use crate::common::server::*;
use crate::common::upstream::*;

const PATH: &str = "/gnu/hello/hello-2.12.tar.gz";

/// A loopback port nobody listens on: connections to it are refused.
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
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
    assert!(srv.app.cache.index.url(&up.url(PATH)).unwrap().is_none());
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

/// Twice the breaker's threshold of anonymous `/fetch`es of `http://127.0.0.1:<port>/...`, a
/// port that does not speak HTTP: each fails with 502, none because of an open breaker.
async fn ask_http_of(srv: &TestServer, port: u16) {
    for i in 0..2 * upcache::upstream::breaker::THRESHOLD {
        let url = format!("http://127.0.0.1:{port}/x-{i}.tar.gz");
        let (status, code, message) = error_code(srv.get(&srv.fetch_url(&url)).await).await;
        assert_eq!(
            (status, code.as_str()),
            (502, "upstream_failed"),
            "{message}"
        );
        assert!(!message.contains("is failing"), "{i}: {message}");
    }
}

/// A real FTP server with `pkg/ok-1.0.tar.gz` for anonymous users.
fn ftp_with_a_file() -> (common::ftp::FtpServer, bytes::Bytes) {
    let ftp = common::ftp::FtpServer::start();
    let data = random_bytes(3_000, 70);
    ftp.put("pkg/ok-1.0.tar.gz", &data);
    (ftp, data)
}

/// The file of [`ftp_with_a_file`] is still fetched (its host's breaker is closed).
async fn assert_ftp_still_serves(srv: &TestServer, ftp: &common::ftp::FtpServer, data: &[u8]) {
    let (status, _, body) = srv
        .get_bytes(&srv.fetch_url(&ftp.url("pkg/ok-1.0.tar.gz")))
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, data);
}

/// Issue 11, item 2: `/fetch` of `http://FTPHOST:PORT/...` gets an FTP banner instead of an
/// HTTP answer. That error is caused by the request, not by the host being down: however
/// often anonymous clients ask it, the FTP service on that host and port stays reachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ftp_banner_on_an_http_url_does_not_open_the_breaker() {
    let (ftp, data) = ftp_with_a_file();
    let srv = TestServer::start().await;
    ask_http_of(&srv, ftp.port).await;
    assert_ftp_still_serves(&srv, &ftp, &data).await;
}

/// Issue 11, item 2: an FTP path with an encoded CR LF would inject a command; it is refused
/// before anything is sent (400), and never counts against the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ftp_paths_with_crlf_are_refused_and_do_not_open_the_breaker() {
    let (ftp, data) = ftp_with_a_file();
    let srv = TestServer::start().await;
    for i in 0..2 * upcache::upstream::breaker::THRESHOLD {
        let url = ftp.url(&format!("pkg/x-{i}%0d%0aDELE%20ok-1.0.tar.gz"));
        for request in [srv.fetch_url(&url), srv.mirror_url(&url)] {
            let (status, code, message) = error_code(srv.get(&request).await).await;
            assert_eq!((status, code.as_str()), (400, "invalid_url"), "{message}");
            assert!(message.contains("CR, LF or NUL"), "{message}");
        }
    }
    assert_ftp_still_serves(&srv, &ftp, &data).await;
    assert_eq!(ftp.commands_of("DELE").await, Vec::<String>::new());
}

/// A real TLS server (`openssl s_server`, self-signed) on 127.0.0.1:<ephemeral>.
struct TlsServer {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    fn start() -> TlsServer {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let made = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(made.success(), "openssl req failed");
        let mut child = Command::new("openssl")
            .args(["s_server", "-accept", "127.0.0.1:0", "-www", "-cert"])
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server starts");
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let port = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(addr) = line.strip_prefix("ACCEPT ") {
                        break addr.rsplit(':').next().unwrap().parse().unwrap();
                    }
                }
                other => panic!("openssl s_server did not start: {other:?}"),
            }
        };
        std::thread::spawn(move || for _ in lines {});
        TlsServer {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Issue 11, item 2: plain HTTP asked of a TLS port fails (the server hangs up), but the host
/// answered: its breaker, keyed by scheme, host and port, stays closed for `https://`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_a_tls_port_does_not_open_the_breaker() {
    let tls = TlsServer::start();
    let srv = TestServer::start().await;
    ask_http_of(&srv, tls.port).await;
    // https to the same port is tried for real: the TLS handshake happens (and fails, the
    // certificate being self-signed), rather than an open breaker failing it at once.
    let url = format!("https://127.0.0.1:{}/x.tar.gz", tls.port);
    let (status, code, message) = error_code(srv.get(&srv.fetch_url(&url)).await).await;
    assert_eq!(
        (status, code.as_str()),
        (502, "upstream_failed"),
        "{message}"
    );
    assert!(message.contains("cannot connect"), "{message}");
    assert!(
        message.to_ascii_lowercase().contains("certificate"),
        "{message}"
    );
}

/// Issue 11, item 2: refused connections still open the breaker, for FTP too; it is keyed
/// by scheme, so `http://` at the same host and port is not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_ftp_connections_still_open_the_breaker() {
    let port = dead_port();
    let srv = TestServer::start_with(|c| c.upstream.retries = 0).await;
    let url = |i: u32| format!("ftp://127.0.0.1:{port}/f-{i}.tar.gz");
    for i in 0..upcache::upstream::breaker::THRESHOLD {
        let (code, error, message) = error_code(srv.get(&srv.fetch_url(&url(i))).await).await;
        assert_eq!((code, error.as_str()), (502, "upstream_failed"));
        assert!(message.contains("cannot connect"), "{i}: {message}");
    }
    let (code, _, message) = error_code(srv.get(&srv.fetch_url(&url(99))).await).await;
    assert_eq!(code, 502);
    assert!(
        message.contains(&format!("ftp://127.0.0.1:{port} is failing")),
        "{message}"
    );
    let http = format!("http://127.0.0.1:{port}/f.tar.gz");
    let (code, _, message) = error_code(srv.get(&srv.fetch_url(&http)).await).await;
    assert_eq!(code, 502);
    assert!(message.contains("cannot connect"), "{message}");
}
