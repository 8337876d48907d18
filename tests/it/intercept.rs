//! HTTPS through the proxy with `proxy.connect = "intercept"` (SPEC 9), driven by real
//! clients: curl, Python's urllib / http.client and openssl s_client, through `https_proxy`.
//!
//! The origin is the request-counting test upstream behind a real TLS front whose certificate
//! comes from a test CA; upcache trusts that CA through `upstream.ca_file`, and the clients
//! trust upcache's own CA (made by `upcache::intercept::ca::create`, as `upcache ca new`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::fixtures::sha256;
use crate::common::intercept::*;
use crate::common::server::*;
use crate::common::tls::*;
use crate::common::upstream::*;
use upcache::config::ConnectMode;

/// What a curl run gave.
#[derive(Debug)]
struct Curl {
    exit: i32,
    status: u16,
    /// Header blocks as received (the proxy's CONNECT answer first).
    headers: String,
    body: Vec<u8>,
    stderr: String,
}

impl Curl {
    /// A header of the last response (the origin's, not the proxy's CONNECT answer).
    fn header(&self, name: &str) -> Option<String> {
        let last = self.headers.trim_end().rsplit("\r\n\r\n").next()?;
        last.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// `curl` through `https_proxy`, trusting `cacert` (else the system's roots).
async fn curl(proxy: &str, cacert: Option<&Path>, url: &str, extra: &[&str]) -> Curl {
    let dir = tempfile::tempdir().unwrap();
    let (hdr, out) = (dir.path().join("headers"), dir.path().join("body"));
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-w", "%{http_code}", "-D"])
        .arg(&hdr)
        .arg("-o")
        .arg(&out);
    if let Some(ca) = cacert {
        cmd.arg("--cacert").arg(ca);
    }
    cmd.args(extra).arg(url);
    via_proxy(&mut cmd, proxy);
    let o = tokio::task::spawn_blocking(move || cmd.output().expect("curl is installed"))
        .await
        .unwrap();
    Curl {
        exit: o.status.code().unwrap_or(-1),
        status: String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .unwrap_or(0),
        headers: std::fs::read_to_string(&hdr).unwrap_or_default(),
        body: std::fs::read(&out).unwrap_or_default(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Python's urllib through `https_proxy` (its default ProxyHandler reads it), trusting
/// `cafile` (else the system's roots); one JSON object per URL.
const PY_URLLIB: &str = r#"
import hashlib, json, ssl, sys, urllib.error, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[1] or None)
opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx))
out = []
for url in sys.argv[2:]:
    try:
        with opener.open(url) as r:
            body = r.read()
            out.append({"status": r.status, "x_cache": r.headers.get("X-Cache"),
                        "sha256": hashlib.sha256(body).hexdigest()})
    except urllib.error.URLError as e:
        out.append({"error": type(e.reason).__name__ + ": " + str(e.reason)})
print(json.dumps(out))
"#;

/// Python's http.client through a CONNECT tunnel: the response and the peer certificate.
const PY_PEERCERT: &str = r#"
import http.client, json, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
proxy_host, proxy_port = sys.argv[2].rsplit(":", 1)
c = http.client.HTTPSConnection(proxy_host, int(proxy_port), context=ctx)
c.set_tunnel(sys.argv[3], int(sys.argv[4]))
c.request("GET", sys.argv[5])
r = c.getresponse()
r.read()
cert = c.sock.getpeercert()
print(json.dumps({"status": r.status, "x_cache": r.getheader("X-Cache"),
                  "san": cert["subjectAltName"], "issuer": cert["issuer"]}))
"#;

async fn python(script: &str, args: Vec<String>, proxy: &str) -> serde_json::Value {
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(script).args(args);
    via_proxy(&mut cmd, proxy);
    let o = tokio::task::spawn_blocking(move || cmd.output().expect("python3 is installed"))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(&stdout).unwrap_or_else(|_| {
        panic!(
            "python printed {stdout:?}; stderr: {}",
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

fn journal(srv: &TestServer) -> String {
    std::fs::read_to_string(srv.data_dir().join("journal.jsonl")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_and_python_through_https_proxy_miss_then_hit() {
    let s = Setup::start(|_| {}).await;
    // Over 128 KiB: hits are streamed from the file through TLS, not read inline.
    let body = random_bytes(300_000, 130);
    s.up.route("/pub/app-1.0.tar.gz", Route::ok(body.clone()));
    let url = s.url("/pub/app-1.0.tar.gz");
    let first = curl(&s.srv.base, Some(&s.ca_pem), &url, &[]).await;
    assert_eq!((first.exit, first.status), (0, 200), "{first:?}");
    assert_eq!(first.body, body);
    assert_eq!(
        first.header("x-cache").as_deref(),
        Some("MISS"),
        "{first:?}"
    );
    // The fill commits after the last byte (read-your-writes is issue 13 item 4).
    s.srv.app.flights.wait_idle().await;
    let second = curl(&s.srv.base, Some(&s.ca_pem), &url, &[]).await;
    assert_eq!((second.exit, second.status), (0, 200), "{second:?}");
    assert_eq!(second.body, body);
    assert_eq!(second.header("x-cache").as_deref(), Some("HIT"));
    assert_eq!(
        second.header("x-checksum-sha256"),
        Some(sha256(&body)),
        "hit headers inside the tunnel"
    );
    assert_eq!(s.up.hits("/pub/app-1.0.tar.gz"), 1, "origin asked once");
    // upcache fetched it (its own User-Agent), as it would for the proxy form...
    let req = &s.up.requests("/pub/app-1.0.tar.gz")[0];
    assert!(req.header("user-agent").unwrap().starts_with("upcache/"));
    // ... into the same cache: the other request forms hit it.
    let (status, headers, got) = s.srv.get_bytes(&s.srv.fetch_url(&url)).await;
    assert_eq!(
        (status.as_u16(), headers["x-cache"].to_str().unwrap()),
        (200, "HIT")
    );
    assert_eq!(got, body);
    // The audit record names the real client.
    let fetched = journal(&s.srv);
    assert!(
        fetched.contains("\"event\":\"fetched\"") && fetched.contains("\"client\":\"127.0.0.1\""),
        "{fetched}"
    );

    // Python's urllib, through the same https_proxy, trusting the same CA.
    let py_body = random_bytes(50_000, 131);
    s.up.route("/pub/py-1.0.zip", Route::ok(py_body.clone()));
    let py_url = s.url("/pub/py-1.0.zip");
    let ca = s.ca_pem.display().to_string();
    let sha = sha256(&py_body);
    let got = python(PY_URLLIB, vec![ca.clone(), py_url.clone()], &s.srv.base).await;
    let miss = serde_json::json!([{"status": 200, "x_cache": "MISS", "sha256": sha}]);
    assert_eq!(got, miss);
    s.srv.app.flights.wait_idle().await;
    let got = python(PY_URLLIB, vec![ca, py_url], &s.srv.base).await;
    let hit = serde_json::json!([{"status": 200, "x_cache": "HIT", "sha256": sha}]);
    assert_eq!(got, hit);
    assert_eq!(s.up.hits("/pub/py-1.0.zip"), 1, "origin asked once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leaf_certificate_names_the_connect_host() {
    let s = Setup::start(|_| {}).await;
    s.up.route("/f.tar.gz", Route::ok(random_bytes(1000, 132)));
    // A DNS name: Python's http.client through a CONNECT, checking hostname and chain.
    let port = s.front.port().to_string();
    let args = vec![
        s.ca_pem.display().to_string(),
        s.srv.base.trim_start_matches("http://").to_owned(),
        "localhost".into(),
        port.clone(),
        "/f.tar.gz".into(),
    ];
    let got = python(PY_PEERCERT, args, &s.srv.base).await;
    assert_eq!(got["status"], 200, "{got}");
    assert_eq!(got["x_cache"], "MISS", "{got}");
    assert_eq!(
        got["san"],
        serde_json::json!([["DNS", "localhost"]]),
        "{got}"
    );
    assert_eq!(
        got["issuer"],
        serde_json::json!([[["commonName", "upcache interception CA"]]]),
        "{got}"
    );
    // An IP literal: an IP SAN, as openssl s_client (verifying the address) sees it.
    let script = format!(
        "openssl s_client -proxy {proxy} -connect 127.0.0.1:{port} -CAfile {ca} \
         -verify_return_error -verify_ip 127.0.0.1 </dev/null 2>/dev/null \
         | openssl x509 -noout -ext subjectAltName",
        proxy = s.srv.base.trim_start_matches("http://"),
        ca = s.ca_pem.display(),
    );
    let o = tokio::task::spawn_blocking(move || {
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(text.contains("IP Address:127.0.0.1"), "{text}");
    assert!(!text.contains("DNS:"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_do_not_trust_the_ca_fail_their_handshake() {
    let s = Setup::start(|_| {}).await;
    s.up.route("/secret.tar.gz", Route::ok(random_bytes(10_000, 133)));
    let url = s.url("/secret.tar.gz");
    // The system's roots only.
    let c = curl(&s.srv.base, None, &url, &[]).await;
    assert_eq!(
        c.exit, 60,
        "curl: peer certificate cannot be verified: {c:?}"
    );
    assert!(c.body.is_empty(), "{c:?}");
    assert!(c.stderr.contains("certificate"), "{}", c.stderr);
    // The origin's own CA is no help either: the certificate is upcache's.
    let c = curl(&s.srv.base, Some(&s.origin_ca.cert_path), &url, &[]).await;
    assert_eq!(c.exit, 60, "{c:?}");
    let got = python(PY_URLLIB, vec![String::new(), url], &s.srv.base).await;
    let error = got[0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("CERTIFICATE_VERIFY_FAILED"), "{got}");
    // Nothing was served, so nothing was fetched.
    assert_eq!(s.up.total_hits(), 0);
    assert_eq!(s.srv.app.cache.index.stats().urls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_outside_connect_ports_gets_403() {
    let s = Setup::start(|_| {}).await;
    let other = Upstream::start().await;
    let text = s.srv.raw_connect(&other.addr().to_string()).await;
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(text.contains("forbidden_destination"), "{text}");
    assert!(
        text.contains(&format!("port {} only", s.front.port())) && text.contains("connect_ports"),
        "{text}"
    );
    assert_eq!(other.connections(), 0);
    // Tunnels obey the same list (no longer a fixed 443).
    let t = TestServer::start_with(|c| {
        c.proxy.connect = ConnectMode::Tunnel;
        c.proxy.connect_ports = vec![8443, 9443];
    })
    .await;
    let text = t.raw_connect(&other.addr().to_string()).await;
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(text.contains("ports 8443, 9443 only"), "{text}");
    assert_eq!(other.connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intercepted_connects_obey_the_ssrf_guard_and_allow_hosts() {
    let s = Setup::start(|c| c.upstream.allow_private = false).await;
    let port = s.front.port();
    for target in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        format!("169.254.169.254:{port}"),
    ] {
        let text = s.srv.raw_connect(&target).await;
        assert!(text.starts_with("HTTP/1.1 403"), "{target}: {text}");
        assert!(text.contains("forbidden_destination"), "{target}: {text}");
    }
    assert_eq!(s.srv.app.cache.index.stats().urls, 0);
    let s = Setup::start(|c| c.upstream.allow_hosts = vec!["ftp.gnu.org".into()]).await;
    let text = s
        .srv
        .raw_connect(&format!("example.org:{}", s.front.port()))
        .await;
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(text.contains("allow_hosts"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tunnel_serves_many_requests_and_head() {
    let s = Setup::start(|_| {}).await;
    let (a, b) = (random_bytes(70_000, 139), random_bytes(5_000, 140));
    s.up.route("/a.tar.gz", Route::ok(a.clone()));
    s.up.route("/b.tar.gz", Route::ok(b.clone()));
    // HEAD on a miss: upstream's headers, nothing stored.
    let c = curl(&s.srv.base, Some(&s.ca_pem), &s.url("/a.tar.gz"), &["-I"]).await;
    assert_eq!((c.exit, c.status), (0, 200), "{c:?}");
    assert_eq!(c.header("x-cache").as_deref(), Some("MISS"));
    assert_eq!(c.header("content-length").as_deref(), Some("70000"));
    // Three requests over one kept-alive tunnel (curl reuses the connection: one CONNECT).
    let dir = tempfile::tempdir().unwrap();
    let outs: Vec<PathBuf> = (0..3).map(|i| dir.path().join(format!("o{i}"))).collect();
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-f", "-v", "--cacert"]).arg(&s.ca_pem);
    for (out, path) in outs.iter().zip(["/a.tar.gz", "/b.tar.gz", "/a.tar.gz"]) {
        cmd.arg("-o").arg(out).arg(s.url(path));
    }
    via_proxy(&mut cmd, &s.srv.base);
    let o = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{log}");
    assert_eq!(log.matches("> CONNECT ").count(), 1, "{log}");
    assert_eq!(std::fs::read(&outs[0]).unwrap(), a);
    assert_eq!(std::fs::read(&outs[1]).unwrap(), b);
    assert_eq!(std::fs::read(&outs[2]).unwrap(), a);
    // The third request is served by the cache (a HIT, or a join of the fill that has just
    // finished but not yet committed: read-your-writes is issue 13 item 4): one upstream GET.
    assert_eq!(s.up.hits("/a.tar.gz"), 2, "one HEAD and one GET");
    assert_eq!(s.up.hits("/b.tar.gz"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_outside_intercept_hosts_are_tunneled_and_not_cached() {
    let s = Setup::start(|c| c.proxy.intercept_hosts = vec![".example.org".into()]).await;
    let body = random_bytes(40_000, 134);
    s.up.route("/blind.tar.gz", Route::ok(body.clone()));
    let url = s.url("/blind.tar.gz");
    // Blind: the client sees the origin's own certificate, so it must trust the origin's CA.
    let c = curl(&s.srv.base, Some(&s.origin_ca.cert_path), &url, &[]).await;
    assert_eq!((c.exit, c.status), (0, 200), "{c:?}");
    assert_eq!(c.body, body);
    assert_eq!(c.header("x-cache"), None, "not served by upcache: {c:?}");
    let c = curl(&s.srv.base, Some(&s.ca_pem), &url, &[]).await;
    assert_eq!(c.exit, 60, "upcache's CA signs nothing here: {c:?}");
    // The origin saw curl's own request, and nothing was stored.
    let req = &s.up.requests("/blind.tar.gz")[0];
    assert!(req.header("user-agent").unwrap().starts_with("curl/"));
    s.srv.app.flights.wait_idle().await;
    let stats = s.srv.app.cache.index.stats();
    assert_eq!((stats.blobs, stats.urls), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_upstream_certificate_fails_even_when_intercepted() {
    // upstream.ca_file holds another CA: the origin's certificate verifies against nothing.
    let other = TestCa::new("unrelated CA");
    let s = Setup::start(|c| c.upstream.ca_file = other.cert_path.clone()).await;
    s.up.route("/f.tar.gz", Route::ok(random_bytes(1000, 135)));
    let c = curl(&s.srv.base, Some(&s.ca_pem), &s.url("/f.tar.gz"), &[]).await;
    assert_eq!((c.exit, c.status), (0, 502), "{c:?}");
    let error: serde_json::Value = serde_json::from_slice(&c.body).unwrap();
    assert_eq!(error["error"], "upstream_failed", "{error}");
    assert_eq!(
        s.up.total_hits(),
        0,
        "no request was sent over the unverified connection"
    );
    assert_eq!(s.srv.app.cache.index.stats().urls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expected_checksum_headers_are_honoured_inside_the_tunnel() {
    let s = Setup::start(|_| {}).await;
    let body = random_bytes(100_000, 136);
    s.up.route("/sum.tar.gz", Route::ok(body.clone()));
    let url = s.url("/sum.tar.gz");
    let wrong = format!("X-Upcache-Expect-Sha256: {}", "0".repeat(64));
    // A miss whose content does not match: never a complete successful response.
    let c = curl(&s.srv.base, Some(&s.ca_pem), &url, &["-H", &wrong]).await;
    assert!(
        c.exit != 0 || c.status != 200 || c.body.len() < body.len(),
        "complete body delivered: {c:?}"
    );
    s.srv.app.flights.wait_idle().await;
    assert!(
        s.srv.app.cache.index.url(&url).unwrap().is_none(),
        "not bound"
    );
    assert!(journal(&s.srv).contains("\"event\":\"integrity_failed\""));
    // The right checksum: a normal miss.
    let right = format!("X-Upcache-Expect-Sha256: {}", sha256(&body));
    let c = curl(&s.srv.base, Some(&s.ca_pem), &url, &["-H", &right]).await;
    assert_eq!((c.exit, c.status), (0, 200), "{c:?}");
    assert_eq!(c.body, body);
    s.srv.app.flights.wait_idle().await;
    // A hit whose content does not match: 502 before any body.
    let c = curl(&s.srv.base, Some(&s.ca_pem), &url, &["-H", &wrong]).await;
    assert_eq!(c.status, 502, "{c:?}");
    let error: serde_json::Value = serde_json::from_slice(&c.body).unwrap();
    assert_eq!(error["error"], "integrity_mismatch", "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_inside_the_tunnel_count_against_the_clients_limits() {
    // One request at a time per client: the intercepted CONNECT must not hold that slot
    // itself (the request inside would be refused), while the request inside does hold it.
    let s = Setup::start(|c| c.limits.per_client_concurrency = 1).await;
    let body = random_bytes(200_000, 137);
    let gate = Gate::new();
    s.up.route(
        "/slow.tar.gz",
        Route::ok(body.clone()).hold_at(4096, gate.clone()),
    );
    s.up.route("/other.tar.gz", Route::ok(random_bytes(100, 138)));
    let (base, ca, url) = (s.srv.base.clone(), s.ca_pem.clone(), s.url("/slow.tar.gz"));
    let slow = tokio::spawn(async move { curl(&base, Some(&ca), &url, &[]).await });
    gate.reached().await;
    // The same client (127.0.0.1), in plain proxy form, while the intercepted one runs.
    let r = s
        .srv
        .proxy_client()
        .get(s.up.url("/other.tar.gz"))
        .send()
        .await
        .unwrap();
    let (status, code, msg) = error_code(r).await;
    assert_eq!((status, code.as_str()), (429, "rate_limited"), "{msg}");
    assert!(msg.contains("127.0.0.1"), "{msg}");
    gate.open();
    let c = slow.await.unwrap();
    assert_eq!((c.exit, c.status), (0, 200), "{c:?}");
    assert_eq!(c.body, body);
}

/// The real binary with `args`, its exit code and stderr.
fn upcache(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_upcache"))
        .args(args)
        .env_remove("UPCACHE_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn ca_new_writes_a_private_key_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ca");
    let (code, stdout, stderr) = upcache(&["ca", "new", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("connect = \"intercept\""), "{stdout}");
    let (cert, key) = (out.join("ca.pem"), out.join("ca-key.pem"));
    assert_eq!(mode(&key), 0o600);
    let (cert_pem, key_pem) = (
        std::fs::read_to_string(&cert).unwrap(),
        std::fs::read_to_string(&key).unwrap(),
    );
    assert!(cert_pem.contains("BEGIN CERTIFICATE") && key_pem.contains("PRIVATE KEY"));
    // openssl reads it as a CA named as documented.
    let o = Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-subject",
            "-ext",
            "basicConstraints,keyUsage",
            "-in",
        ])
        .arg(&cert)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("CN = upcache interception CA"), "{text}");
    assert!(text.contains("CA:TRUE"), "{text}");
    assert!(text.contains("Certificate Sign"), "{text}");
    let (code, _, stderr) = upcache(&["ca", "new", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("exists") && stderr.contains("ca.pem"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&cert).unwrap(), cert_pem);
    assert_eq!(std::fs::read_to_string(&key).unwrap(), key_pem);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_key_readable_by_others_refuses_to_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = upcache::intercept::ca::create(dir.path()).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = dir.path().join("upcache.toml");
    std::fs::write(
        &config,
        format!(
            "[proxy]\nconnect = \"intercept\"\nca_cert = {:?}\nca_key = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let args: Vec<String> = vec![
        "serve".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--config".into(),
        config.display().to_string(),
        "--data-dir".into(),
        data.display().to_string(),
    ];
    let (code, _, stderr) = tokio::task::spawn_blocking(move || {
        upcache(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("proxy.ca_key"), "{stderr}");
    assert!(stderr.contains(&key.display().to_string()), "{stderr}");
    assert!(stderr.contains("0644"), "{stderr}");
    // Made private, the same configuration starts.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = upcache::Config::load(Some(&config)).unwrap();
    let srv = TestServer::start_with(|c| c.proxy = cfg.proxy.clone()).await;
    assert_eq!(srv.get(&srv.url("/healthz")).await.status(), 200);
}
