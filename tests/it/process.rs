//! The real binary: default start-up, crash safety under `kill -9`, the CLI commands, real
//! proxy clients (curl, wget), log formats, and `/metrics` as curl and promtool see it.

use crate::common;

use std::process::Command;

use crate::common::fixtures::{config_with_admin, output, upcache};
use crate::common::server::*;
use crate::common::upstream::*;
use futures::StreamExt;

const PRIVATE_OK: (&str, &str) = ("UPCACHE__UPSTREAM__ALLOW_PRIVATE", "true");

fn terminate(p: &mut Process) {
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(p.child.id() as i32, libc::SIGTERM) };
    let status = p.child.wait().unwrap();
    assert!(
        status.success(),
        "graceful shutdown exits 0: {status:?}\n{}",
        p.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_any_configuration_uses_the_defaults() {
    let cwd = tempfile::tempdir().unwrap();
    let mut p = Process::spawn(cwd.path(), &[], &[]);
    let c = client();
    let r = c.get(format!("{}/healthz", p.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(format!("{}/readyz", p.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    for sub in [
        "upcache-data/index",
        "upcache-data/blobs",
        "upcache-data/tmp",
    ] {
        assert!(cwd.path().join(sub).is_dir(), "{sub} created");
    }
    terminate(&mut p);
    // And the default listen address is the documented one.
    let out = upcache()
        .args(["config", "check"])
        .current_dir(cwd.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("listen = \"127.0.0.1:8080\""), "{text}");
    assert!(text.contains("data_dir = \"./upcache-data\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_fill_leaves_no_partial_file_and_the_url_refetches() {
    let up = Upstream::start().await;
    let body = random_bytes(2_000_000, 21);
    let gate = Gate::new();
    up.route_seq(
        "/x/big.tar.gz",
        vec![
            Route::ok(body.clone()).hold_at(500_000, gate.clone()),
            Route::ok(body.clone()),
        ],
    );
    let cwd = tempfile::tempdir().unwrap();
    let mut p = Process::spawn(cwd.path(), &[], &[PRIVATE_OK]);
    let c = client();
    let url = format!("{}/fetch?url={}", p.base, enc(&up.url("/x/big.tar.gz")));
    let r = c.get(&url).send().await.unwrap();
    let mut stream = r.bytes_stream();
    stream.next().await.unwrap().unwrap();
    gate.reached().await;
    let tmp = cwd.path().join("upcache-data/tmp");
    assert_eq!(list_files(&tmp).len(), 1, "a temp file while filling");
    p.kill9();
    drop(stream);

    let p = Process::spawn(cwd.path(), &[], &[PRIVATE_OK]);
    assert!(
        list_files(&tmp).is_empty(),
        "temp files removed at start-up"
    );
    let lookup = c
        .get(format!(
            "{}/api/v1/lookup?url={}",
            p.base,
            enc(&up.url("/x/big.tar.gz"))
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        lookup.status(),
        404,
        "no index entry for the interrupted fill"
    );
    let url = format!("{}/fetch?url={}", p.base, enc(&up.url("/x/big.tar.gz")));
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.headers()["x-cache"], "MISS");
    assert_eq!(r.bytes().await.unwrap(), body);
    // Once stored it is a hit with the right digests.
    let r = loop {
        let r = c.get(&url).send().await.unwrap();
        if r.headers()["x-cache"] == "HIT" {
            break r;
        }
        r.bytes().await.unwrap();
    };
    let mut d = upcache::store::Digester::new();
    d.update(&body);
    assert_eq!(r.headers()["x-checksum-sha256"], d.finish().sha256.as_str());
    assert_eq!(r.bytes().await.unwrap(), body);
}

#[test]
fn config_check_reports_valid_and_invalid_files() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[server]\nlisten = \"0.0.0.0:9000\"\n").unwrap();
    let out = upcache()
        .args(["config", "check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("0.0.0.0:9000"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nlistn = \"0.0.0.0:9000\"\n").unwrap();
    let out = upcache()
        .args(["config", "check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.listn"),
        "the message names the key: {err}"
    );

    let out = upcache()
        .args(["config", "check"])
        .env("UPCACHE__CACHE__HIGH_WATERMARK", "1.5")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("high_watermark"));

    let out = upcache()
        .args(["serve", "--config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = upcache().arg("no-such-command").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_command_downloads_through_the_server() {
    let up = Upstream::start().await;
    let body = random_bytes(123_456, 22);
    up.route("/r/tool-1.2.tar.bz2", Route::ok(body.clone()));
    up.route("/r/missing.tar.gz", Route::status(404));
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();

    let mut cmd = upcache();
    cmd.args([
        "fetch",
        &up.url("/r/tool-1.2.tar.bz2"),
        "--server",
        &srv.base,
    ])
    .current_dir(dir.path());
    let out = output(cmd).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(dir.path().join("tool-1.2.tar.bz2")).unwrap(),
        body
    );

    let mut cmd = upcache();
    cmd.args(["fetch", &up.url("/r/missing.tar.gz"), "-o", "out.tar.gz"])
        .env("UPCACHE_SERVER", &srv.base)
        .current_dir(dir.path());
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    assert!(!dir.path().join("out.tar.gz").exists());
    assert!(!dir.path().join("out.tar.gz.part").exists());
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_and_wget_as_proxy_and_mirror_clients() {
    for tool in ["curl", "wget"] {
        assert!(
            have(tool),
            "{tool} is required (scripts/test.sh installs it)"
        );
    }
    let up = Upstream::start().await;
    let body = random_bytes(77_777, 23);
    up.route("/src/app-3.1.tar.gz", Route::ok(body.clone()));
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = up.url("/src/app-3.1.tar.gz");
    let out = |name: &str| dir.path().join(name);

    let mut curl = Command::new("curl");
    curl.args(["-sS", "-f", "-x", &srv.base, "-o"])
        .arg(out("curl-proxy"))
        .arg(&url);
    let mut wget = Command::new("wget");
    wget.args(["-q", "-O"])
        .arg(out("wget-proxy"))
        .arg(&url)
        .env("http_proxy", &srv.base)
        .env_remove("no_proxy")
        .env_remove("NO_PROXY");
    let mut curl_mirror = Command::new("curl");
    curl_mirror
        .args(["-sS", "-f", "-O", "-J", &srv.mirror_url(&url)])
        .current_dir(dir.path());
    for cmd in [curl, wget, curl_mirror] {
        let o = output(cmd).await;
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    for f in ["curl-proxy", "wget-proxy", "app-3.1.tar.gz"] {
        assert_eq!(std::fs::read(out(f)).unwrap(), body, "{f}");
    }
    assert_eq!(up.hits("/src/app-3.1.tar.gz"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_have_one_line_per_request() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::start().await;
    up.route("/l/a.tar.gz", Route::ok(random_bytes(1000, 24)));
    // Larger than the kernel socket buffers, so the abandoned hit cannot complete.
    up.route("/l/big.tar.gz", Route::ok(random_bytes(32_000_000, 25)));
    let cwd = tempfile::tempdir().unwrap();
    let mut p = Process::spawn(
        cwd.path(),
        &[],
        &[PRIVATE_OK, ("UPCACHE__LOG__FORMAT", "json")],
    );
    let r = client()
        .get(format!(
            "{}/fetch?url={}",
            p.base,
            enc(&up.url("/l/a.tar.gz"))
        ))
        .send()
        .await
        .unwrap();
    r.bytes().await.unwrap();
    // A hit abandoned by its client is logged as incomplete.
    let big = format!("{}/fetch?url={}", p.base, enc(&up.url("/l/big.tar.gz")));
    client()
        .get(&big)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let lookup = format!(
        "{}/api/v1/lookup?url={}",
        p.base,
        enc(&up.url("/l/big.tar.gz"))
    );
    while client().get(&lookup).send().await.unwrap().status() != 200 {
        tokio::task::yield_now().await;
    }
    let mut s = tokio::net::TcpStream::connect(p.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let target = format!("/fetch?url={}", enc(&up.url("/l/big.tar.gz")));
    s.write_all(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    s.read_exact(&mut buf).await.unwrap();
    drop(s);
    terminate(&mut p);
    let log = p.log();
    let aborted = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["x_cache"] == "HIT" && v["complete"] == false);
    assert!(aborted.is_some(), "no incomplete HIT line in:\n{log}");
    let line = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["target"] == "upcache::access" || v["message"] == "request")
        .unwrap_or_else(|| panic!("no JSON request line in:\n{log}"));
    assert_eq!(line["method"], "GET");
    assert_eq!(line["form"], "fetch");
    assert_eq!(line["url"], up.url("/l/a.tar.gz"));
    assert_eq!(line["status"], 200);
    assert_eq!(line["x_cache"], "MISS");
    assert_eq!(line["bytes"], 1000);
    assert!(line["ms"].is_number());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpmbuild_fetches_sources_through_upcache() {
    if !have("rpmbuild") {
        // scripts/test.sh installs Debian's rpm package; say so rather than pass silently.
        panic!("rpmbuild is required (apt-get install rpm; scripts/test.sh does it)");
    }
    let up = Upstream::start().await;
    let (src0, src1) = (random_bytes(40_000, 25), random_bytes(3_000, 26));
    up.route("/pub/hello-1.0.tar.gz", Route::ok(src0.clone()));
    up.route("/pub/fix-build.patch", Route::ok(src1.clone()));
    let srv = TestServer::start().await;
    let top = tempfile::tempdir().unwrap();
    for d in ["SOURCES", "SPECS", "SRPMS", "BUILD"] {
        std::fs::create_dir(top.path().join(d)).unwrap(); // what rpmdev-setuptree makes
    }
    let spec = top.path().join("hello.spec");
    // Source0 via the mirror path form, Patch0 via rpm's own proxy support (proxy form).
    let mirror = srv.mirror_url(&up.url("/pub/hello-%{version}.tar.gz"));
    std::fs::write(
        &spec,
        format!(
            "Name: hello\nVersion: 1.0\nRelease: 1\nSummary: t\nLicense: MIT\n\
             Source0: {mirror}\nPatch0: {}\n\n%description\nt\n",
            up.url("/pub/fix-build.patch")
        ),
    )
    .unwrap();
    let port = srv.base.rsplit(':').next().unwrap().to_owned();
    let mut cmd = Command::new("rpmbuild");
    cmd.arg("-bs")
        .arg("--define")
        .arg(format!("_topdir {}", top.path().display()))
        .args(["--define", "_disable_source_fetch 0"])
        .args(["--define", "_httpproxy http://127.0.0.1"])
        .arg("--define")
        .arg(format!("_httpport {port}"))
        .arg(&spec);
    let out = output(cmd).await;
    assert!(
        out.status.success(),
        "rpmbuild failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let sources = top.path().join("SOURCES");
    assert_eq!(
        std::fs::read(sources.join("hello-1.0.tar.gz")).unwrap(),
        src0
    );
    assert_eq!(
        std::fs::read(sources.join("fix-build.patch")).unwrap(),
        src1
    );
    assert_eq!(up.hits("/pub/hello-1.0.tar.gz"), 1);
    assert_eq!(up.hits("/pub/fix-build.patch"), 1);
    srv.app.flights.wait_idle().await;
    assert_eq!(
        srv.app.cache.index.stats().urls,
        2,
        "both sources are cached"
    );
}

/// After a crash: no temp files, every index entry has its file, every file its digests.
async fn assert_consistent_after_restart(cwd: &std::path::Path, cfg: &std::path::Path) {
    let tmp = cwd.join("upcache-data/tmp");
    let p = Process::spawn(cwd, &["--config", cfg.to_str().unwrap()], &[]);
    assert!(
        list_files(&tmp).is_empty(),
        "temp files removed at start-up"
    );
    drop(p); // kill: verify runs offline
    let out = upcache()
        .args(["verify", "--config"])
        .arg(cfg)
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["corrupt"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_an_upload_leaves_nothing_behind() {
    use tokio::io::AsyncWriteExt;
    let cwd = tempfile::tempdir().unwrap();
    let (cfg, token) = config_with_admin(cwd.path(), "");
    let mut p = Process::spawn(cwd.path(), &["--config", cfg.to_str().unwrap()], &[]);
    // Announce 10 MiB, send 5 MiB, and hold the connection open.
    let mut s = tokio::net::TcpStream::connect(p.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "PUT /api/v1/upload?url=https%3A%2F%2Fx.example%2Fbig.tar.gz HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n",
        10 << 20
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&random_bytes(5 << 20, 95)).await.unwrap();
    s.flush().await.unwrap();
    let tmp = cwd.path().join("upcache-data/tmp");
    // Wait until the server has written part of it to its temp file.
    let written = || {
        list_files(&tmp)
            .iter()
            .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
            .sum::<u64>()
    };
    while written() < 1 << 20 {
        tokio::task::yield_now().await;
    }
    p.kill9();
    drop(s);
    assert_consistent_after_restart(cwd.path(), &cfg).await;
    let p = Process::spawn(cwd.path(), &["--config", cfg.to_str().unwrap()], &[]);
    let r = client()
        .get(format!(
            "{}/api/v1/lookup?url={}",
            p.base,
            enc("https://x.example/big.tar.gz")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "an interrupted upload is not bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_sweep_leaves_a_consistent_store() {
    let up = Upstream::start().await;
    let cwd = tempfile::tempdir().unwrap();
    // Every blob unused for a second is evicted by the next sweep.
    let (cfg, token) = config_with_admin(cwd.path(), "[cache]\nmax_unused = \"1s\"\n");
    let mut p = Process::spawn(cwd.path(), &["--config", cfg.to_str().unwrap()], &[]);
    let c = client();
    for i in 0..60u64 {
        let path = format!("/s/{i}.tar.gz");
        up.route(&path, Route::ok(random_bytes(60_000, 200 + i)));
        let r = c
            .get(format!("{}/fetch?url={}", p.base, enc(&up.url(&path))))
            .send()
            .await
            .unwrap();
        r.bytes().await.unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await; // 1 s resolution
    // Sweep (60 evictions, each journaled and fsynced) and kill the server while it runs
    // (or just after: both must leave a consistent store).
    let sweep = tokio::spawn({
        let url = format!("{}/api/v1/sweep", p.base);
        let c = c.clone();
        async move { c.post(url).bearer_auth(token).send().await }
    });
    let journal = cwd.path().join("upcache-data/journal.jsonl");
    while !std::fs::read_to_string(&journal)
        .unwrap_or_default()
        .contains("\"evicted\"")
    {
        tokio::task::yield_now().await;
    }
    p.kill9();
    let _ = sweep.await;
    assert_consistent_after_restart(cwd.path(), &cfg).await;
    // Every URL is either served correctly or refetched.
    let p = Process::spawn(cwd.path(), &["--config", cfg.to_str().unwrap()], &[]);
    for i in (0..60u64).step_by(7) {
        let path = format!("/s/{i}.tar.gz");
        let r = c
            .get(format!("{}/fetch?url={}", p.base, enc(&up.url(&path))))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.bytes().await.unwrap(),
            random_bytes(60_000, 200 + i),
            "{path}"
        );
    }
}

/// The sample `name` (with its labels, as written) in `exposition`.
fn sample(exposition: &str, name: &str) -> f64 {
    let line = exposition
        .lines()
        .find(|l| l.rsplit_once(' ').is_some_and(|(n, _)| n == name))
        .unwrap_or_else(|| panic!("no sample {name} in:\n{exposition}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// `curl -sS -D headers URL` with `args`: (headers, body).
async fn curl_get(url: &str, args: &[&str]) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-f", "-D"])
        .arg(dir.path().join("headers"))
        .args(["-o"])
        .arg(dir.path().join("body"))
        .args(args)
        .arg(url);
    let o = output(cmd).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
    (read("headers").to_lowercase(), read("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_negotiate_their_format_and_promtool_accepts_the_default() {
    let promtool = "/usr/bin/promtool";
    assert!(
        std::path::Path::new(promtool).exists(),
        "{promtool} is missing: install Debian's prometheus (scripts/test.sh does)"
    );
    let up = Upstream::start().await;
    let body = random_bytes(123_456, 31);
    up.route("/m/src-2.0.tar.gz", Route::ok(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let p = Process::spawn(
        dir.path(),
        &[],
        &[
            PRIVATE_OK,
            ("UPCACHE__CACHE__MAX_SIZE", "1GiB"),
            ("UPCACHE__CACHE__HIGH_WATERMARK", "0.9"),
            ("UPCACHE__CACHE__LOW_WATERMARK", "0.7"),
        ],
    );
    let c = common::server::client();
    let url = format!("{}/fetch?url={}", p.base, enc(&up.url("/m/src-2.0.tar.gz")));
    // A miss, then hits until it is committed; and two 404s.
    get_until_hit(&c, &url, &body).await;
    for _ in 0..2 {
        let r = c
            .get(format!("{}/no-such-endpoint", p.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }

    // curl's default (`Accept: */*`): the Prometheus text format 0.0.4. A response is counted
    // once its body has ended, which the server may note just after the client has it: ask
    // until the 404s are in.
    let metrics = format!("{}/metrics", p.base);
    let class_in = |text: &str, c: &str| {
        sample(
            text,
            &format!("upcache_http_requests_total{{class=\"{c}\"}}"),
        )
    };
    let (headers, text) = loop {
        let (headers, text) = curl_get(&metrics, &[]).await;
        if class_in(&text, "4xx") >= 2.0 {
            break (headers, text);
        }
    };
    assert!(
        headers.contains("\r\ncontent-type: text/plain; version=0.0.4"),
        "{headers}"
    );
    assert!(headers.contains("\r\nvary: accept"), "{headers}");
    assert!(!text.contains("# EOF"), "{text}");
    assert!(
        text.contains("# TYPE upcache_requests_total counter\n"),
        "{text}"
    );
    assert!(text.contains("# TYPE upcache_build_info gauge\n"), "{text}");
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        sample(
            &text,
            &format!("upcache_build_info{{version=\"{version}\"}}")
        ),
        1.0
    );
    assert_eq!(sample(&text, "upcache_ready"), 1.0);
    assert_eq!(
        sample(&text, "upcache_disk_total_bytes"),
        (1u64 << 30) as f64
    );
    assert_eq!(sample(&text, "upcache_disk_used_bytes"), body.len() as f64);
    assert_eq!(sample(&text, "upcache_disk_high_watermark_ratio"), 0.9);
    assert_eq!(sample(&text, "upcache_disk_low_watermark_ratio"), 0.7);
    // Counted when each body ended: the fills and hits above, the 404s; nothing else yet.
    let class = |c: &str| class_in(&text, c);
    assert!(class("2xx") >= 2.0, "{text}");
    assert_eq!(class("4xx"), 2.0);
    assert_eq!((class("1xx"), class("3xx"), class("5xx")), (0.0, 0.0, 0.0));

    // promtool reads it without a complaint.
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, &text).unwrap();
    let mut check = Command::new(promtool);
    check
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap());
    let o = output(check).await;
    assert!(
        o.status.success() && o.stdout.is_empty() && o.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );

    // What Prometheus asks for: OpenMetrics, with the same samples.
    let accept = "Accept: application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                  version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (headers, om) = curl_get(&metrics, &["-H", accept]).await;
    assert!(
        headers.contains("\r\ncontent-type: application/openmetrics-text; version=1.0.0"),
        "{headers}"
    );
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE upcache_requests counter\n"), "{om}");
    assert!(om.contains("# TYPE upcache_build info\n"), "{om}");
    assert_eq!(
        sample(&om, &format!("upcache_build_info{{version=\"{version}\"}}")),
        1.0
    );
    assert!(class_in(&om, "2xx") >= class("2xx"), "{om}");
    assert_eq!(class_in(&om, "4xx"), 2.0);
    // Asking for text explicitly, or ranking it higher, gets text.
    for accept in [
        "Accept: text/plain;version=0.0.4",
        "Accept: application/openmetrics-text;q=0.3, text/plain;q=0.9",
    ] {
        let (headers, _) = curl_get(&metrics, &["-H", accept]).await;
        assert!(
            headers.contains("content-type: text/plain; version=0.0.4"),
            "{accept}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_downloads_in_progress_finish_and_keeps_them() {
    let up = Upstream::start().await;
    let (followed, abandoned) = (random_bytes(1_500_000, 31), random_bytes(1_200_000, 32));
    let (gate_f, gate_a) = (Gate::new(), Gate::new());
    up.route(
        "/g/followed.tar.gz",
        Route::ok(followed.clone()).hold_at(400_000, gate_f.clone()),
    );
    up.route(
        "/g/abandoned.tar.gz",
        Route::ok(abandoned.clone()).hold_at(400_000, gate_a.clone()),
    );
    let cwd = tempfile::tempdir().unwrap();
    let mut p = Process::spawn(cwd.path(), &[], &[PRIVATE_OK]);
    let c = client();
    let fetch = |p: &Process, path: &str| format!("{}/fetch?url={}", p.base, enc(&up.url(path)));
    // One client follows its download (on a connection closed after it, so the HTTP server
    // has nothing left to wait for once it ends); the other download goes on without its
    // client (fills are not tied to a connection).
    let r = c
        .get(fetch(&p, "/g/followed.tar.gz"))
        .header("connection", "close")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-cache"], "MISS");
    let mut stream = r.bytes_stream();
    let mut got = stream.next().await.unwrap().unwrap().to_vec();
    let r = c
        .get(fetch(&p, "/g/abandoned.tar.gz"))
        .send()
        .await
        .unwrap();
    let mut other = r.bytes_stream();
    other.next().await.unwrap().unwrap();
    drop(other);
    gate_f.reached().await;
    gate_a.reached().await;

    // SIGTERM while both are held; once the server is shutting down, the followed one goes on
    // and completes.
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(p.child.id() as i32, libc::SIGTERM) };
    while !p.log().contains("shutting down") {
        tokio::task::yield_now().await;
    }
    gate_f.open();
    while let Some(piece) = stream.next().await {
        got.extend_from_slice(&piece.expect("the download is not cut"));
    }
    assert!(
        got == followed,
        "the followed download completed byte for byte"
    );
    // No connection is left; the abandoned download is still held upstream. The process
    // must wait for it rather than exit (which would lose it).
    loop {
        if p.child.try_wait().unwrap().is_some()
            || p.log().contains("waiting for downloads in progress")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    gate_a.open();
    let status = tokio::task::spawn_blocking(move || {
        let status = p.child.wait().unwrap();
        (status, p.log())
    })
    .await
    .unwrap();
    assert!(status.0.success(), "exits 0: {:?}\n{}", status.0, status.1);

    // Both fills were committed before the process exited: hits, upstream not asked again.
    let p = Process::spawn(cwd.path(), &[], &[PRIVATE_OK]);
    for (path, body) in [
        ("/g/followed.tar.gz", &followed),
        ("/g/abandoned.tar.gz", &abandoned),
    ] {
        let r = c.get(fetch(&p, path)).send().await.unwrap();
        assert_eq!(r.headers()["x-cache"], "HIT", "{path}");
        assert!(r.bytes().await.unwrap() == body, "{path}");
        assert_eq!(up.hits(path), 1, "{path}");
    }
}

/// Issue 14: the start-up file walk runs in the background, after a clean shutdown (SIGTERM)
/// and after kill -9 (no marker) alike: the instance serves at once and the walk adopts what
/// the index does not know meanwhile. (tests/it/durability.rs holds the walk back to see the
/// instance serving before it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_up_walk_runs_in_the_background_after_a_clean_shutdown_and_after_a_crash() {
    let up = Upstream::start().await;
    let body = random_bytes(50_000, 90);
    up.route("/c/a.tar.gz", Route::ok(body.clone()));
    let cwd = tempfile::tempdir().unwrap();
    let data = cwd.path().join("upcache-data");
    let marker = data.join("clean-shutdown");
    let c = client();
    // A valid blob file the index does not know: adopted by the start-up walk.
    let plant = |seed: u64| {
        let bytes = random_bytes(10_000, seed);
        let mut d = upcache::store::Digester::new();
        d.update(&bytes);
        let b3 = d.finish().blake3;
        let dir = data.join("blobs").join(&b3[..2]).join(&b3[2..4]);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(&b3), &bytes).unwrap();
        b3
    };
    let present = |base: String, b3: String| {
        let c = c.clone();
        async move {
            let r = c
                .get(format!("{base}/api/v1/lookup?blake3={b3}"))
                .send()
                .await
                .unwrap();
            r.status() == 200 && r.json::<serde_json::Value>().await.unwrap()["present"] == true
        }
    };
    let mut p = Process::spawn(cwd.path(), &[], &[PRIVATE_OK]);
    let url = format!("{}/fetch?url={}", p.base, enc(&up.url("/c/a.tar.gz")));
    get_until_hit(&c, &url, &body).await;
    terminate(&mut p);
    assert!(marker.exists(), "a clean shutdown leaves the marker");

    let first = plant(91);
    let mut p = Process::spawn(cwd.path(), &[], &[PRIVATE_OK]);
    assert!(!marker.exists(), "taken at start-up");
    assert!(
        p.log()
            .contains("start-up reconciliation runs in the background"),
        "{}",
        p.log()
    );
    let url = format!("{}/fetch?url={}", p.base, enc(&up.url("/c/a.tar.gz")));
    get_until_hit(&c, &url, &body).await;
    // The background walk adopts the planted file while the instance serves.
    while !present(p.base.clone(), first.clone()).await {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    p.kill9();
    assert!(!marker.exists(), "no marker after a crash");

    let second = plant(92);
    let p = Process::spawn(cwd.path(), &[], &[PRIVATE_OK]);
    assert!(
        p.log()
            .contains("unclean shutdown: start-up reconciliation runs in the background"),
        "{}",
        p.log()
    );
    let url = format!("{}/fetch?url={}", p.base, enc(&up.url("/c/a.tar.gz")));
    get_until_hit(&c, &url, &body).await;
    while !present(p.base.clone(), second.clone()).await {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(up.hits("/c/a.tar.gz"), 1);
}
