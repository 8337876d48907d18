//! Request policy: the SSRF guard, schemes, malformed URLs, allow_hosts, CONNECT.

mod common;

use common::server::*;
use common::upstream::*;

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
    let srv = TestServer::start_with(|c| c.upstream.allow_hosts = vec![".example.org".into()]).await;
    let (status, code, _) = code_of(&srv, &srv.fetch_url(&up.url("/a.tar.gz"))).await;
    assert_eq!((status, code.as_str()), (403, "forbidden_destination"));
    let srv = TestServer::start_with(|c| c.upstream.allow_hosts = vec!["127.0.0.1".into()]).await;
    assert_eq!(srv.get(&srv.fetch_url(&up.url("/a.tar.gz"))).await.status(), 200);
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
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 405"), "{text}");
    assert!(text.contains("method_not_allowed") && text.contains("mirror path"), "{text}");
}
