//! Request policy: the SSRF guard, schemes, malformed URLs, allow_hosts, CONNECT.

use crate::common;

use crate::common::server::*;
use crate::common::upstream::*;

async fn code_of(srv: &TestServer, url: &str) -> (u16, String, String) {
    error_code(srv.get(url).await).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_destinations_are_forbidden_by_default() {
    let up = Upstream::start().await;
    up.route("/a.tar.gz", Route::ok("secret"));
    let port = up.addr().port();
    let srv = TestServer::start_with(|c| c.upstream.allow_private = false).await;
    for target in [
        format!("http://127.0.0.1:{port}/a.tar.gz"),
        format!("http://localhost:{port}/a.tar.gz"), // by name: checked on the resolved address
        format!("http://[::1]:{port}/a.tar.gz"),
        format!("http://[::ffff:127.0.0.1]:{port}/a.tar.gz"),
        format!("http://0x7f.1:{port}/a.tar.gz"),
        format!("http://2130706433:{port}/a.tar.gz"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://10.0.0.1/x.tar.gz".to_owned(),
        "http://192.168.1.1/x.tar.gz".to_owned(),
        "http://[fd00::1]/x.tar.gz".to_owned(),
        "http://0.0.0.0/x.tar.gz".to_owned(),
    ] {
        for url in [srv.fetch_url(&target), srv.mirror_url(&target)] {
            let (status, code, msg) = code_of(&srv, &url).await;
            assert_eq!(
                (status, code.as_str()),
                (403, "forbidden_destination"),
                "{target}: {msg}"
            );
        }
    }
    // The proxy form too.
    let r = srv
        .proxy_client()
        .get(format!("http://127.0.0.1:{port}/a.tar.gz"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await.1, "forbidden_destination");
    assert_eq!(up.total_hits(), 0, "nothing reached the private address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemes_and_malformed_urls() {
    let srv = TestServer::start().await;
    for (url, want) in [
        ("file:///etc/passwd", "unsupported_scheme"),
        ("gopher://example.com/x", "unsupported_scheme"),
        ("data:text/plain,hello", "unsupported_scheme"),
        ("javascript:alert(1)", "unsupported_scheme"),
        ("not a url", "invalid_url"),
        ("http://", "invalid_url"),
        ("http://exa mple.com/x", "invalid_url"),
        ("/relative/path", "invalid_url"),
    ] {
        let (status, code, msg) = code_of(&srv, &srv.fetch_url(url)).await;
        assert_eq!((status, code.as_str()), (400, want), "{url}: {msg}");
    }
    let (status, code, _) = code_of(&srv, &srv.url("/fetch")).await;
    assert_eq!((status, code.as_str()), (400, "bad_request"));
    let (status, code, _) = code_of(&srv, &srv.url("/https/")).await;
    assert_eq!((status, code.as_str()), (400, "invalid_url"));
    // A scheme the server supports but the configuration does not allow.
    let srv = TestServer::start_with(|c| c.upstream.allowed_schemes = vec!["https".into()]).await;
    let (status, code, _) = code_of(&srv, &srv.fetch_url("http://example.com/a.tar.gz")).await;
    assert_eq!((status, code.as_str()), (400, "unsupported_scheme"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_hosts_limits_destinations() {
    let up = Upstream::start().await;
    up.route("/a.tar.gz", Route::ok("ok"));
    let srv =
        TestServer::start_with(|c| c.upstream.allow_hosts = vec![".example.org".into()]).await;
    let (status, code, _) = code_of(&srv, &srv.fetch_url(&up.url("/a.tar.gz"))).await;
    assert_eq!((status, code.as_str()), (403, "forbidden_destination"));
    let srv = TestServer::start_with(|c| c.upstream.allow_hosts = vec!["127.0.0.1".into()]).await;
    assert_eq!(
        srv.get(&srv.fetch_url(&up.url("/a.tar.gz"))).await.status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_refused_with_a_pointer_to_the_mirror_form() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let srv = TestServer::start().await;
    let mut s = tokio::net::TcpStream::connect(srv.base.trim_start_matches("http://"))
        .await
        .unwrap();
    s.write_all(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        .await
        .unwrap();
    // Head and body may arrive in separate reads: read until the whole body is in.
    let mut buf = Vec::new();
    let text = loop {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.parse().unwrap())
                })
                .expect("content-length");
            if body.len() >= len {
                break text;
            }
        }
    };
    assert!(text.starts_with("HTTP/1.1 405"), "{text}");
    assert!(
        text.contains("method_not_allowed") && text.contains("mirror path"),
        "{text}"
    );
}

/// A "public" address (TEST-NET-3, RFC 5737), on the `lo` of the test's own network
/// namespace (see `common::netns`).
const PUBLIC_TEST_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(203, 0, 113, 7);

#[test]
fn every_redirect_hop_is_checked_against_the_ssrf_guard() {
    common::netns::run_inner(module_path!(), "redirect_hops_in_netns");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the network namespace made by every_redirect_hop_is_checked_against_the_ssrf_guard"]
async fn redirect_hops_in_netns() {
    if !common::netns::enter("redirect_hops_in_netns", &[&format!("{PUBLIC_TEST_IP}/32")]) {
        return;
    }
    let public = Upstream::start_on(PUBLIC_TEST_IP).await.unwrap();
    let private = Upstream::start().await;
    private.route("/secret.tar.gz", Route::ok("internal"));
    public.route("/ok.tar.gz", Route::ok("public bytes"));
    public.route(
        "/to-private.tar.gz",
        Route::redirect(302, &private.url("/secret.tar.gz")),
    );
    public.route(
        "/to-metadata.tar.gz",
        Route::redirect(302, "http://169.254.169.254/latest/meta-data/"),
    );
    public.route("/to-file", Route::redirect(302, "file:///etc/passwd"));
    let srv = TestServer::start_with(|c| c.upstream.allow_private = false).await;

    // A public destination is fine with the guard on.
    let (s, _, body) = srv
        .get_bytes(&srv.fetch_url(&public.url("/ok.tar.gz")))
        .await;
    assert_eq!((s.as_u16(), &body[..]), (200, &b"public bytes"[..]));
    for hop in ["/to-private.tar.gz", "/to-metadata.tar.gz"] {
        let (status, code, msg) = code_of(&srv, &srv.fetch_url(&public.url(hop))).await;
        assert_eq!(
            (status, code.as_str()),
            (403, "forbidden_destination"),
            "{hop}: {msg}"
        );
    }
    let (status, _, msg) = code_of(&srv, &srv.fetch_url(&public.url("/to-file"))).await;
    assert!(status >= 400, "redirect to file: refused: {msg}");
    assert_eq!(
        private.total_hits(),
        0,
        "the private upstream was never contacted"
    );
}

/// Issue 11, item 7: address classes that must count as internal. Each listens (or would be
/// routed, for the forms that cannot be put on an interface) inside the test's namespace;
/// with the guard on, none is contacted.
#[test]
fn benchmarking_translated_and_tunnel_addresses_are_forbidden() {
    common::netns::run_inner(module_path!(), "address_classes_in_netns");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the network namespace made by benchmarking_translated_and_tunnel_addresses_are_forbidden"]
async fn address_classes_in_netns() {
    let listening = [
        "198.18.0.1",   // 198.18.0.0/15 benchmarking
        "198.19.255.1", // its other half
        "64:ff9b:1::1", // local-use NAT64
        "2001::1",      // Teredo
        "2001:2::1",    // IPv6 benchmarking
        "100::1",       // discard-only
    ];
    let cidrs: Vec<String> = listening
        .iter()
        .map(|a| {
            let bits = if a.contains(':') { 128 } else { 32 };
            format!("{a}/{bits}")
        })
        .collect();
    let cidrs: Vec<&str> = cidrs.iter().map(String::as_str).collect();
    if !common::netns::enter("address_classes_in_netns", &cidrs) {
        return;
    }
    let mut upstreams = Vec::new();
    for a in listening {
        let up = Upstream::start_on(a.parse::<std::net::IpAddr>().unwrap())
            .await
            .unwrap();
        up.route("/a.tar.gz", Route::ok("internal"));
        upstreams.push(up);
    }
    let srv = TestServer::start_with(|c| {
        c.upstream.allow_private = false;
        c.upstream.retries = 0;
    })
    .await;
    let mut targets: Vec<String> = upstreams.iter().map(|u| u.url("/a.tar.gz")).collect();
    // Forms that embed a private IPv4 address, and the IPv4-translated prefix.
    for host in [
        "[::ffff:0:7f00:1]",         // translated 127.0.0.1
        "[::ffff:0:c612:1]",         // translated 198.18.0.1
        "[::ffff:198.18.0.1]",       // mapped
        "[64:ff9b::c612:1]",         // NAT64
        "[2002:c612:1::1]",          // 6to4
        "[2002:c0a8:101::1]",        // 6to4 of 192.168.1.1
        "[64:ff9b:1:ffff::808:808]", // local-use NAT64, whatever it embeds
    ] {
        targets.push(format!(
            "http://{host}:{}/a.tar.gz",
            upstreams[0].addr().port()
        ));
    }
    for target in &targets {
        for url in [srv.fetch_url(target), srv.mirror_url(target)] {
            let (status, code, msg) = code_of(&srv, &url).await;
            assert_eq!(
                (status, code.as_str()),
                (403, "forbidden_destination"),
                "{target}: {msg}"
            );
        }
    }
    for up in &upstreams {
        assert_eq!(up.total_hits(), 0, "{} was contacted", up.addr());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_form_naming_this_server_is_not_proxied_to_itself() {
    let up = Upstream::start().await;
    up.route("/a.tar.gz", Route::ok("bytes"));
    let srv = TestServer::start().await;
    let proxy = srv.proxy_client();
    let r = proxy.get(srv.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = proxy
        .get(srv.mirror_url(&up.url("/a.tar.gz")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), "bytes");
    srv.app.flights.wait_idle().await;
    assert_eq!(
        srv.app.cache.index.stats().urls,
        1,
        "only the upstream URL, not our own"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_methods_get_a_json_405_everywhere() {
    let srv = TestServer::start().await;
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/lookup",
        "/api/v1/stats",
        "/",
        "/ui/search",
        "/fetch",
        "/https/example.org/a.tar.gz",
        "/by-md5/0123456789abcdef0123456789abcdef",
        "/repo/pkgs/a/b/md5/0123456789abcdef0123456789abcdef/b",
        "/api/v1/upload",
        "/api/v1/sweep",
    ] {
        let r = srv.client.patch(srv.url(path)).send().await.unwrap();
        let (status, code, _) = error_code(r).await;
        assert_eq!(
            (status, code.as_str()),
            (405, "method_not_allowed"),
            "PATCH {path}"
        );
    }
}
