//! `CONNECT` with `proxy.connect = "tunnel"`: a blind relay to port 443 only, through the SSRF
//! guard and the host policy, nothing cached; tested with real `curl -p -x`.
//!
//! The relay's destination must listen on port 443. Tests bind it on a random address of
//! 127.0.0.0/8 (all of it is loopback on Linux), so parallel tests do not collide; binding a
//! port below 1024 needs root (as `scripts/test.sh` runs in CI). Without it the test that needs
//! the port says so and returns.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Command;

use crate::common::server::*;
use crate::common::upstream::*;
use upcache::config::ConnectMode;

async fn tunnel_server(f: impl FnOnce(&mut upcache::Config)) -> TestServer {
    TestServer::start_with(|c| {
        c.proxy.connect = ConnectMode::Tunnel;
        f(c);
    })
    .await
}

/// An origin on `<random 127.x.y.z>:443`, or `None` when this process may not bind port 443.
async fn origin_on_443() -> Option<Upstream> {
    for _ in 0..20 {
        let r: u32 = rand_u32();
        let ip = Ipv4Addr::new(
            127,
            100 + (r % 100) as u8,
            (r >> 8) as u8,
            1 + (r >> 16) as u8 % 250,
        );
        match Upstream::start_at(SocketAddrV4::new(ip, 443)).await {
            Ok(up) => return Some(up),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                eprintln!(
                    "skipped: binding port 443 needs root (scripts/test.sh runs as root): {e}"
                );
                return None;
            }
            Err(_) => continue, // taken: another address
        }
    }
    panic!("no free 127.x.y.z:443 found");
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() as u32
}

/// Send a raw CONNECT and return the status line and the whole answer.
async fn connect_status(srv: &TestServer, target: &str) -> (String, String) {
    let text = srv.raw_connect(target).await;
    let status = text.lines().next().unwrap_or_default().to_owned();
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_tunnels_through_connect_and_nothing_is_cached() {
    assert!(
        Command::new("curl").arg("--version").output().is_ok(),
        "curl is required (scripts/test.sh installs it)"
    );
    let Some(origin) = origin_on_443().await else {
        return;
    };
    let body = random_bytes(300_000, 110);
    origin.route("/secret/app-1.0.tar.gz", Route::ok(body.clone()));
    let srv = tunnel_server(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let url = format!("http://{}/secret/app-1.0.tar.gz", origin.addr());
    let mut curl = Command::new("curl");
    // -p: CONNECT even for an http:// URL, the bytes inside the tunnel are the origin's.
    curl.args(["-sS", "-f", "-p", "-x", &srv.base, "-o"])
        .arg(&out)
        .arg(&url);
    let o = tokio::task::spawn_blocking(move || curl.output().unwrap())
        .await
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&out).unwrap(), body);
    assert_eq!(origin.hits("/secret/app-1.0.tar.gz"), 1);
    // The origin saw the client's own request, not one of ours.
    let req = &origin.requests("/secret/app-1.0.tar.gz")[0];
    assert!(req.header("user-agent").unwrap().starts_with("curl/"));
    // Nothing was stored.
    srv.app.flights.wait_idle().await;
    let stats: serde_json::Value = srv
        .get(&srv.url("/api/v1/stats"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stats["blobs"], 0, "{stats}");
    assert_eq!(stats["urls"], 0, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_go_to_port_443_only() {
    let up = Upstream::start().await;
    let srv = tunnel_server(|_| {}).await;
    let (status, text) = connect_status(&srv, &up.addr().to_string()).await;
    assert!(status.contains(" 403 "), "{text}");
    assert!(text.contains("forbidden_destination"), "{text}");
    assert!(text.contains("port 443 only"), "{text}");
    assert_eq!(up.total_hits(), 0);
    assert_eq!(up.connections(), 0, "no connection was made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_obey_the_ssrf_guard_and_allow_hosts() {
    let srv = tunnel_server(|c| c.upstream.allow_private = false).await;
    for target in [
        "127.0.0.1:443",
        "localhost:443",
        "[::1]:443",
        "169.254.169.254:443",
    ] {
        let (status, text) = connect_status(&srv, target).await;
        assert!(status.contains(" 403 "), "{target}: {text}");
        assert!(text.contains("forbidden_destination"), "{target}: {text}");
    }
    let srv = tunnel_server(|c| c.upstream.allow_hosts = vec!["ftp.gnu.org".into()]).await;
    let (status, text) = connect_status(&srv, "example.org:443").await;
    assert!(status.contains(" 403 "), "{text}");
    assert!(text.contains("allow_hosts"), "{text}");
}
