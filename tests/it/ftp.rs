//! FTP upstreams against a real FTP server (pyftpdlib on loopback): the three request forms,
//! anonymous and `user:password@` logins, size from SIZE, 550 as 404, stream-through and single
//! flight, resume with REST after a broken transfer, HEAD, the SSRF guard, password redaction,
//! and real curl and wget as `ftp_proxy` clients.

use std::process::Command;

use crate::common::fixtures::{output, sha256};
use crate::common::ftp::FtpServer;
use crate::common::server::*;
use crate::common::upstream::random_bytes;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A raw absolute-form request (`GET ftp://... HTTP/1.1`), as wget and curl send it to an
/// HTTP proxy; returns the status line and the body.
async fn proxy_get(srv: &TestServer, target: &str) -> (String, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(srv.base.trim_start_matches("http://"))
        .await
        .unwrap();
    s.write_all(
        format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = head.lines().next().unwrap().to_owned();
    let mut body = raw[end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&raw[..line_end]).unwrap(), 16).unwrap();
        raw = &raw[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ftp_in_all_three_forms_one_transfer_then_hits() {
    let ftp = FtpServer::start();
    let body = random_bytes(300_000, 81);
    ftp.put("gnu/hello/hello-2.12.tar.gz", &body);
    let url = ftp.url("gnu/hello/hello-2.12.tar.gz");
    let srv = TestServer::start().await;

    let r = srv.get(&srv.fetch_url(&url)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cache"], "MISS");
    assert_eq!(
        r.headers()["content-length"],
        "300000",
        "the size from SIZE is passed on"
    );
    assert_eq!(
        r.headers()["content-disposition"],
        "attachment; filename=\"hello-2.12.tar.gz\""
    );
    assert_eq!(r.bytes().await.unwrap(), body);
    srv.app.flights.wait_idle().await;

    let (s, h, b) = srv.get_bytes(&srv.mirror_url(&url)).await;
    assert_eq!((s.as_u16(), h["x-cache"].to_str().unwrap()), (200, "HIT"));
    assert_eq!(h["x-checksum-sha256"], sha256(&body).as_str());
    assert_eq!(b, body);
    let (status, b) = proxy_get(&srv, &url).await;
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(b, body);

    assert_eq!(ftp.commands_of("RETR").await, ["RETR hello-2.12.tar.gz"]);
    let cmds = ftp.commands().await;
    for expected in ["USER anonymous", "TYPE I", "CWD gnu", "CWD hello", "PASV"] {
        assert!(cmds.iter().any(|c| c == expected), "{expected} in {cmds:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ftp_user_and_password_from_the_url_and_never_shown() {
    let ftp = FtpServer::start();
    let body = random_bytes(10_000, 82);
    std::fs::write(ftp.private().join("secret-1.0.tar.gz"), &body).unwrap();
    let url = ftp.user_url("secret-1.0.tar.gz");
    let srv = TestServer::start().await;

    let (s, _, b) = srv.get_bytes(&srv.fetch_url(&url)).await;
    assert_eq!(s, 200);
    assert_eq!(b, body);
    srv.app.flights.wait_idle().await;
    let cmds = ftp.commands().await;
    assert!(cmds.contains(&"USER alice".to_owned()), "{cmds:?}");

    // Anonymous users do not see alice's files: FTP 550 is 404.
    let r = srv.get(&srv.fetch_url(&ftp.url("secret-1.0.tar.gz"))).await;
    assert_eq!(error_code(r).await.1, "not_found");

    // The password never appears in the journal or in API answers.
    let journal = std::fs::read_to_string(srv.data_dir().join("journal.jsonl")).unwrap();
    assert!(journal.contains("fetched"), "{journal}");
    assert!(!journal.contains("s3cret"), "{journal}");
    assert!(journal.contains("alice:***@"), "{journal}");
    let lookup = srv
        .get(&srv.url(&format!("/api/v1/lookup?url={}", enc(&url))))
        .await;
    assert_eq!(lookup.status(), 200);
    let text = lookup.text().await.unwrap();
    assert!(!text.contains("s3cret"), "{text}");

    // A wrong password is refused by the server: 502, and the message does not repeat it.
    let wrong = url.replace("s3cret", "guess-me");
    let (code, error, message) = error_code(srv.get(&srv.fetch_url(&wrong)).await).await;
    assert_eq!(
        (code, error.as_str()),
        (502, "upstream_failed"),
        "{message}"
    );
    assert!(!message.contains("guess-me"), "{message}");
    assert!(message.contains("530"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_in_the_url_is_never_in_an_error_message() {
    let ftp = FtpServer::start();
    std::fs::write(
        ftp.private().join("big-1.0.tar.gz"),
        random_bytes(30_000, 83),
    )
    .unwrap();
    std::fs::write(
        ftp.private().join("small-1.0.tar.gz"),
        random_bytes(1_000, 84),
    )
    .unwrap();
    let srv = TestServer::start_with(|c| c.upstream.max_object_size = 20_000).await;
    // Over the size limit (the policy's check of the head).
    let r = srv
        .get(&srv.fetch_url(&ftp.user_url("big-1.0.tar.gz")))
        .await;
    let (code, error, message) = error_code(r).await;
    assert_eq!((code, error.as_str()), (413, "too_large"), "{message}");
    assert!(!message.contains("s3cret"), "{message}");
    // Content that is not what the client expected (the fill's own check).
    let url = format!(
        "{}&md5={}",
        srv.fetch_url(&ftp.user_url("small-1.0.tar.gz")),
        "0".repeat(32)
    );
    let r = srv.get(&url).await;
    match r.status().as_u16() {
        200 => {
            // The body was already under way: it is cut, never complete.
            assert!(r.bytes().await.is_err());
        }
        _ => {
            let (_, error, message) = error_code(r).await;
            assert_eq!(error, "integrity_mismatch", "{message}");
            assert!(!message.contains("s3cret"), "{message}");
        }
    }
    srv.app.flights.wait_idle().await;
    let journal = std::fs::read_to_string(srv.data_dir().join("journal.jsonl")).unwrap();
    assert!(!journal.contains("s3cret"), "{journal}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ftp_missing_file_is_404_and_remembered() {
    let ftp = FtpServer::start();
    let srv = TestServer::start().await;
    let url = ftp.url("pub/nope-1.0.tar.gz");
    let (code, error, _) = error_code(srv.get(&srv.fetch_url(&url)).await).await;
    assert_eq!((code, error.as_str()), (404, "not_found"));
    srv.app.flights.wait_idle().await;
    let users = ftp.commands_of("USER").await.len();
    let (code, _, _) = error_code(srv.get(&srv.fetch_url(&url)).await).await;
    assert_eq!(code, 404);
    assert_eq!(
        ftp.commands_of("USER").await.len(),
        users,
        "the second 404 came from the negative cache"
    );
    // A missing directory is 404 too.
    let r = srv
        .get(&srv.fetch_url(&ftp.url("no/such/dir/x.tar.gz")))
        .await;
    assert_eq!(error_code(r).await.1, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ftp_streams_through_and_concurrent_clients_share_one_transfer() {
    let ftp = FtpServer::start();
    let body = random_bytes(1_000_000, 83);
    ftp.put("big-hold.tar.gz", &body);
    let url = ftp.url("big-hold.tar.gz");
    let srv = TestServer::start().await;

    let first = srv.get(&srv.fetch_url(&url)).await;
    assert_eq!(first.headers()["x-cache"], "MISS");
    ftp.reached("big-hold.tar.gz").await;
    // Half the file was sent before the server stopped: the client has bytes already.
    let mut stream = first.bytes_stream();
    let mut got = Vec::new();
    while got.len() < 100_000 {
        got.extend_from_slice(&stream.next().await.unwrap().unwrap());
    }
    // Others join the transfer in progress.
    let joiners =
        futures::future::join_all((0..5).map(|_| srv.client.get(srv.fetch_url(&url)).send())).await;
    ftp.release("big-hold.tar.gz");
    while let Some(chunk) = stream.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(got, body);
    for r in joiners {
        let r = r.unwrap();
        assert_eq!(r.headers()["x-cache"], "MISS");
        assert_eq!(r.bytes().await.unwrap(), body);
    }
    assert_eq!(ftp.commands_of("RETR").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ftp_broken_transfer_resumes_with_rest() {
    let ftp = FtpServer::start();
    let body = random_bytes(600_000, 84);
    ftp.put("pkg-break-once.tar.gz", &body);
    let srv = TestServer::start().await;
    let (s, _, b) = srv
        .get_bytes(&srv.fetch_url(&ftp.url("pkg-break-once.tar.gz")))
        .await;
    assert_eq!(s, 200);
    assert_eq!(b, body);
    srv.app.flights.wait_idle().await;
    let cmds = ftp.commands().await;
    let retr = cmds.iter().filter(|c| c.starts_with("RETR")).count();
    assert_eq!(retr, 2, "{cmds:?}");
    assert!(
        cmds.contains(&"REST 300000".to_owned()),
        "the retry continues where the first transfer broke: {cmds:?}"
    );
    let (_, h, _) = srv
        .get_bytes(&srv.mirror_url(&ftp.url("pkg-break-once.tar.gz")))
        .await;
    assert_eq!(h["x-cache"], "HIT");
    assert_eq!(h["x-checksum-sha256"], sha256(&body).as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ftp_head_on_a_miss_stores_nothing() {
    let ftp = FtpServer::start();
    ftp.put("h/tool-1.0.tar.xz", &random_bytes(4321, 85));
    let srv = TestServer::start().await;
    let url = ftp.url("h/tool-1.0.tar.xz");
    let r = srv.client.head(srv.fetch_url(&url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cache"], "MISS");
    assert_eq!(r.headers()["content-length"], "4321");
    assert!(r.headers().contains_key("last-modified"));
    assert!(ftp.commands_of("RETR").await.is_empty());
    let r = srv
        .client
        .head(srv.fetch_url(&ftp.url("h/absent.tar.xz")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ftp_to_a_private_address_is_refused_without_connecting() {
    let ftp = FtpServer::start();
    ftp.put("x.tar.gz", b"x");
    let srv = TestServer::start_with(|c| c.upstream.allow_private = false).await;
    let (code, error, _) = error_code(srv.get(&srv.fetch_url(&ftp.url("x.tar.gz"))).await).await;
    assert_eq!((code, error.as_str()), (403, "forbidden_destination"));
    let r = srv.get(&srv.fetch_url("ftp://localhost:21/x.tar.gz")).await;
    assert_eq!(error_code(r).await.1, "forbidden_destination");
    assert!(ftp.commands().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ftp_scheme_can_be_disallowed() {
    let srv = TestServer::start_with(|c| {
        c.upstream.allowed_schemes = vec!["http".into(), "https".into()]
    })
    .await;
    let r = srv
        .get(&srv.fetch_url("ftp://ftp.example.org/x.tar.gz"))
        .await;
    assert_eq!(error_code(r).await.1, "unsupported_scheme");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_and_wget_fetch_ftp_through_upcache_as_their_proxy() {
    let ftp = FtpServer::start();
    let body = random_bytes(200_000, 86);
    ftp.put("pub/app-1.0.tar.gz", &body);
    let secret = random_bytes(5_000, 87);
    std::fs::write(ftp.private().join("own-1.0.tar.gz"), &secret).unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let p = Process::spawn(
        cwd.path(),
        &[],
        &[("UPCACHE__UPSTREAM__ALLOW_PRIVATE", "true")],
    );
    let out = |n: &str| cwd.path().join(n);

    let mut curl = Command::new("curl");
    curl.args(["-sS", "-f", "-x", &p.base, "-o"])
        .arg(out("curl.tar.gz"))
        .arg(ftp.url("pub/app-1.0.tar.gz"));
    let mut wget = Command::new("wget");
    wget.args(["-q", "-O"])
        .arg(out("wget.tar.gz"))
        .arg(ftp.url("pub/app-1.0.tar.gz"))
        .env("ftp_proxy", &p.base)
        .env_remove("no_proxy")
        .env_remove("NO_PROXY");
    let mut curl_user = Command::new("curl");
    curl_user
        .args(["-sS", "-f", "-x", &p.base, "-o"])
        .arg(out("own.tar.gz"))
        .arg(ftp.user_url("own-1.0.tar.gz"));
    for cmd in [curl, wget, curl_user] {
        let o = output(cmd).await;
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert_eq!(std::fs::read(out("curl.tar.gz")).unwrap(), body);
    assert_eq!(std::fs::read(out("wget.tar.gz")).unwrap(), body);
    assert_eq!(std::fs::read(out("own.tar.gz")).unwrap(), secret);
    assert_eq!(
        ftp.commands_of("RETR").await,
        ["RETR app-1.0.tar.gz", "RETR own-1.0.tar.gz"]
    );
    let mut p = p;
    // SAFETY: plain kill(2) on our own child's pid; a graceful stop flushes the access log.
    unsafe { libc::kill(p.child.id() as i32, libc::SIGTERM) };
    assert!(p.child.wait().unwrap().success());
    let log = p.log();
    assert!(log.contains("own-1.0.tar.gz"), "{log}");
    assert!(
        !log.contains("s3cret"),
        "the password is never logged:\n{log}"
    );
    let journal = std::fs::read_to_string(out("upcache-data/journal.jsonl")).unwrap();
    assert!(!journal.contains("s3cret"), "{journal}");
}
