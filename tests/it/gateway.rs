//! The production gateway for real: Debian's nginx running `deploy/nginx.conf` (listen port,
//! instance addresses and file paths templated) in front of three `upcache serve` processes
//! and a scripted origin, all on loopback. Needs root (nginx's temp paths, tmpfs mounts) and
//! /usr/sbin/nginx; `scripts/test.sh` installs it. The build host exempted from per-client
//! limits (nginx's geo block, `limits.exempt`) is 127.0.0.2; other clients are 127.0.0.1.

use std::collections::{BTreeSet, HashMap};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::server::*;
use crate::common::upstream::*;
use futures::StreamExt;

const NGINX: &str = "/usr/sbin/nginx";
const CONF: &str = include_str!("../../deploy/nginx.conf");
/// The build host exempted from per-client limits: another loopback address of this host.
const BUILD_HOST: &str = "127.0.0.2";

/// nginx on a config generated from `deploy/nginx.conf`.
struct Nginx {
    child: Child,
    dir: PathBuf,
    base: String,
}

impl Nginx {
    /// Start nginx in `dir` with the instances at `backends` (in the order of upcache-1..3).
    fn start(dir: &Path, backends: &[String]) -> Nginx {
        assert!(
            Path::new(NGINX).exists(),
            "{NGINX} is missing: install Debian's nginx (scripts/test.sh does)"
        );
        let port = free_port();
        let conf = render(dir, port, backends);
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        for sub in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let mut cmd = Command::new(NGINX);
        // If the test process is killed before `Drop` runs, nginx goes with it.
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let mut n = Nginx {
            child,
            dir: dir.to_owned(),
            base: format!("http://127.0.0.1:{port}"),
        };
        // nginx gives no readiness signal but its listening socket.
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = n.child.try_wait().unwrap() {
                panic!("nginx exited with {status}: {}", n.error_log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        n
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers too (SIGKILL would orphan them).
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `deploy/nginx.conf` with test ports and paths. Every replaced piece must be found exactly
/// once, so the test cannot silently drift away from the shipped file.
fn render(dir: &Path, port: u16, backends: &[String]) -> String {
    let d = dir.display();
    let mut conf = CONF.to_owned();
    let mut replace = |from: &str, to: &str| {
        assert_eq!(
            conf.matches(from).count(),
            1,
            "deploy/nginx.conf should contain {from:?} exactly once"
        );
        conf = conf.replace(from, to);
    };
    // Workers must reach the temp directories of a root-owned test directory.
    replace("worker_processes auto;", "user root;\nworker_processes 2;");
    replace("pid /var/run/nginx.pid;", &format!("pid {d}/nginx.pid;"));
    replace(
        "error_log /dev/stderr warn;",
        &format!("error_log {d}/error.log info;"),
    );
    replace(
        "access_log /dev/stdout gateway;",
        &format!(
            "access_log {d}/access.log gateway;\n    \
             client_body_temp_path {d}/client_body;\n    proxy_temp_path {d}/proxy;\n    \
             fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    \
             scgi_temp_path {d}/scgi;"
        ),
    );
    replace("listen 80;", &format!("listen 127.0.0.1:{port};"));
    // The exempt build host of these tests, as an operator lists one.
    replace(
        "default 1;",
        &format!("default 1;\n        {BUILD_HOST}/32 0;"),
    );
    for (i, backend) in backends.iter().enumerate() {
        replace(
            &format!("server upcache-{}:8080 ", i + 1),
            &format!("server {backend} "),
        );
        // The instance's own upstream, for its status page.
        replace(
            &format!("server upcache-{}:8080;", i + 1),
            &format!("server {backend};"),
        );
    }
    conf
}

/// Three upcache processes behind nginx, each with its own data directory.
struct Cluster {
    nginx: Nginx,
    instances: Vec<Option<Process>>,
    /// Instance name -> address.
    addrs: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// `data_dirs[i]`, when given, is instance i's data directory (e.g. a tmpfs mount).
    fn start(env: &[(&str, &str)], data_dirs: &[Option<PathBuf>]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut instances = Vec::new();
        let mut addrs = Vec::new();
        for i in 1..=3 {
            let cwd = dir.path().join(format!("upcache-{i}"));
            std::fs::create_dir_all(&cwd).unwrap();
            let name = format!("upcache-{i}");
            let mut env: Vec<(&str, &str)> = env.to_vec();
            env.extend([
                ("UPCACHE__SERVER__INSTANCE", name.as_str()),
                ("UPCACHE__SERVER__TRUSTED_PROXIES", "127.0.0.1/32"),
                ("UPCACHE__UPSTREAM__ALLOW_PRIVATE", "true"),
                ("UPCACHE__UPSTREAM__RETRY_BACKOFF", "10ms"),
            ]);
            let data: Option<String> = data_dirs
                .get(i - 1)
                .cloned()
                .flatten()
                .map(|p| p.display().to_string());
            let mut args = Vec::new();
            if let Some(d) = &data {
                args.extend(["--data-dir", d.as_str()]);
            }
            let p = Process::spawn(&cwd, &args, &env);
            addrs.push(p.base.trim_start_matches("http://").to_owned());
            instances.push(Some(p));
        }
        let ngx_dir = dir.path().join("nginx");
        std::fs::create_dir_all(&ngx_dir).unwrap();
        let nginx = Nginx::start(&ngx_dir, &addrs);
        Cluster {
            nginx,
            instances,
            addrs,
            _dir: dir,
        }
    }

    /// The mirror path form of `upstream_url` through the gateway.
    fn mirror(&self, upstream_url: &str) -> String {
        let (scheme, rest) = upstream_url.split_once("://").unwrap();
        self.nginx.url(&format!("/{scheme}/{rest}"))
    }

    fn direct(&self, i: usize, path: &str) -> String {
        format!("http://{}{path}", self.addrs[i])
    }

    fn stop(&mut self, i: usize) {
        if let Some(mut p) = self.instances[i].take() {
            p.kill9();
        }
    }
}

fn served_by(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-served-by")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// Instances without per-client limits of their own: these tests look at nginx's.
const NO_APP_LIMITS: [(&str, &str); 2] = [
    ("UPCACHE__LIMITS__PER_CLIENT_RPS", "0"),
    ("UPCACHE__LIMITS__PER_CLIENT_CONCURRENCY", "0"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_through_nginx_are_correct_and_each_url_stays_on_one_instance() {
    let up = Upstream::start().await;
    let files: Vec<(String, bytes::Bytes)> = (0..24)
        .map(|i| {
            let size = if i == 0 { 3 << 20 } else { 10_000 + i * 1000 };
            (format!("/g/pkg-{i}.tar.gz"), random_bytes(size, i as u64))
        })
        .collect();
    for (path, body) in &files {
        up.route(path, Route::ok(body.clone()));
    }
    let cluster = Cluster::start(&NO_APP_LIMITS, &[]);
    let c = client();
    let mut owner = HashMap::new();
    for (path, body) in &files {
        let r = c.get(cluster.mirror(&up.url(path))).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["x-cache"], "MISS");
        let by = served_by(&r);
        assert!(by.starts_with("upcache-"), "{by:?}");
        assert_eq!(&r.bytes().await.unwrap(), body, "{path} through nginx");
        owner.insert(path.clone(), by);
    }
    // The same URL always lands on the instance that filled it, and is a hit there once
    // that instance has committed it (a request before that joins the finishing download).
    for (path, body) in &files {
        loop {
            let r = c.get(cluster.mirror(&up.url(path))).send().await.unwrap();
            assert_eq!(served_by(&r), owner[path], "{path}");
            let hit = r.headers()["x-cache"] == "HIT";
            assert_eq!(&r.bytes().await.unwrap(), body);
            if hit {
                break;
            }
        }
    }
    for _ in 0..2 {
        for (path, body) in &files {
            let r = c.get(cluster.mirror(&up.url(path))).send().await.unwrap();
            assert_eq!(served_by(&r), owner[path], "{path}");
            assert_eq!(r.headers()["x-cache"], "HIT", "{path}");
            assert_eq!(&r.bytes().await.unwrap(), body);
        }
    }
    for (path, _) in &files {
        assert_eq!(
            up.hits(path),
            1,
            "{path} was downloaded once, by one instance"
        );
    }
    let used: BTreeSet<&String> = owner.values().collect();
    assert!(used.len() >= 2, "URLs spread over the instances: {used:?}");

    // The proxy form through the gateway (`http_proxy=http://gateway`) is the same URL.
    let proxied = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(&cluster.nginx.base).unwrap())
        .build()
        .unwrap();
    let (path, body) = &files[3];
    let r = proxied.get(up.url(path)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cache"], "HIT", "same URL, same instance");
    assert_eq!(served_by(&r), owner[path]);
    assert_eq!(&r.bytes().await.unwrap(), body);

    // The fetch form: its own request URI, so possibly another instance, but always the same.
    let (path, body) = &files[5];
    let fetch = cluster
        .nginx
        .url(&format!("/fetch?url={}", enc(&up.url(path))));
    let mut seen = BTreeSet::new();
    for _ in 0..3 {
        let r = c.get(&fetch).send().await.unwrap();
        assert_eq!(r.status(), 200);
        seen.insert(served_by(&r));
        assert_eq!(&r.bytes().await.unwrap(), body);
    }
    assert_eq!(seen.len(), 1, "{seen:?}");

    // Large bodies went through without nginx spooling them to disk.
    let log = cluster.nginx.error_log();
    assert!(!log.contains("buffered to a temporary file"), "{log}");
}

// Issue 16, item 2: behind the gateway, each instance's status page shows that instance,
// named, and its refresh and links stay on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_instance_has_its_own_status_page_behind_nginx() {
    let cluster = Cluster::start(&NO_APP_LIMITS, &[]);
    let c = client();
    for i in 1..=3 {
        let name = format!("upcache-{i}");
        let base = cluster.nginx.url(&format!("/instance/{name}/"));
        let page = c.get(&base).send().await.unwrap();
        assert_eq!(page.status(), 200, "{base}");
        assert_eq!(served_by(&page), name);
        let html = page.text().await.unwrap();
        assert!(html.contains(&format!("<h1>upcache {name}</h1>")), "{html}");
        // What the page loads and links, relative to it, is answered by the same instance.
        for link in ["ui/style.css", "ui/status.js", "api/v1/status"] {
            assert!(html.contains(&format!("\"{link}\"")), "{link} in {html}");
            let r = c.get(format!("{base}{link}")).send().await.unwrap();
            assert_eq!((r.status().as_u16(), served_by(&r)), (200, name.clone()));
            if link == "api/v1/status" {
                let s: serde_json::Value = r.json().await.unwrap();
                assert_eq!(s["instance"], name.as_str());
            }
        }
        let search = c
            .get(format!("{base}ui/search?q=nothing"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            (search.status().as_u16(), served_by(&search)),
            (404, name.clone())
        );
        // A blob page's download link, relative to it, asks the same instance.
        let blob = c
            .get(format!("{base}ui/blob/../../by-blake3/{}", "0".repeat(64)))
            .send()
            .await
            .unwrap();
        assert_eq!((blob.status().as_u16(), served_by(&blob)), (404, name));
    }
    // Without the slash: sent to the page.
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(cluster.nginx.url("/instance/upcache-2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 301);
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .ends_with("/instance/upcache-2/")
    );
    // Only the pages: the API, artifacts and unknown instances are not reached this way.
    for path in [
        "/instance/upcache-1/api/v1/stats",
        "/instance/upcache-1/metrics",
        "/instance/upcache-1/http/example.org/a.tar.gz",
        "/instance/upcache-4/",
    ] {
        let r = c.get(cluster.nginx.url(path)).send().await.unwrap();
        // Through the hash to some instance, which has no such route.
        assert_eq!(r.status(), 404, "{path}");
    }
    // The gateway's own / is the page of the instance / hashes to, named, and its refresh
    // (the same URI) reaches the same one.
    let first = c.get(cluster.nginx.url("/")).send().await.unwrap();
    let by = served_by(&first);
    let html = first.text().await.unwrap();
    assert!(html.contains(&format!("<h1>upcache {by}</h1>")), "{html}");
    let again = c.get(cluster.nginx.url("/")).send().await.unwrap();
    assert_eq!(served_by(&again), by);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_limit_clients_get_429_from_nginx() {
    let up = Upstream::start().await;
    let body = random_bytes(1 << 20, 9);
    let gate = Gate::new();
    up.route(
        "/l/slow.tar.gz",
        Route::ok(body.clone()).hold_at(200_000, gate.clone()),
    );
    let cluster = Cluster::start(&NO_APP_LIMITS, &[]);
    let c = client();
    let url = cluster.mirror(&up.url("/l/slow.tar.gz"));
    // limit_conn 32: 32 downloads in progress from this address...
    let mut held = Vec::new();
    for _ in 0..32 {
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let mut s = r.bytes_stream();
        let first = s.next().await.unwrap().unwrap().len();
        held.push((first, s));
    }
    // ... and the 33rd is refused by nginx itself (no instance answered it), in JSON that
    // names the limit.
    let r = c.get(&url).send().await.unwrap();
    assert_gateway_refused(r, "limit_conn upcache_conn").await;
    // The exempt build host is not counted: 40 more downloads at once.
    let build_host = client_from(BUILD_HOST);
    for _ in 0..40 {
        let r = build_host.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let mut s = r.bytes_stream();
        let first = s.next().await.unwrap().unwrap().len();
        held.push((first, s));
    }
    gate.open();
    for (first, mut s) in held {
        let mut n = first;
        while let Some(chunk) = s.next().await {
            n += chunk.unwrap().len();
        }
        assert_eq!(n, body.len());
    }

    // limit_req 50 r/s with a burst of 200: a client asking as fast as it can is refused
    // after about 200 requests (unless it is slower than 50 requests a second).
    let probe = cluster.nginx.url("/no-such-endpoint");
    let mut refused = None;
    for i in 0..2000 {
        let r = c.get(&probe).send().await.unwrap();
        if r.status() == 429 {
            refused = Some((i, r));
            break;
        }
        assert_eq!(r.status(), 404);
    }
    let (i, r) = refused.expect("rate limited by nginx");
    // The 33 requests above drew from the same bucket.
    assert!(i + 33 >= 200, "the burst is allowed: refused after {i}");
    assert_gateway_refused(r, "limit_req upcache_rate").await;
    // The build host asks as fast, and far more often than the burst: never refused.
    let answers = curl_parallel(BUILD_HOST, &probe, 600, &[]).await;
    assert_eq!(count(&answers, 404), 600);
}

/// nginx's own 429 (no instance answered it): JSON naming `limit`, with `Retry-After`.
async fn assert_gateway_refused(r: reqwest::Response, limit: &str) {
    assert_eq!(r.status(), 429);
    assert_eq!(served_by(&r), "", "answered by nginx");
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: serde_json::Value = r.json().await.expect("a JSON body");
    assert_eq!(body["error"], "rate_limited", "{body}");
    assert_eq!(body["limit"], limit, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(limit) && message.contains("127.0.0.1"),
        "{body}"
    );
}

/// The whole chain for a build farm: nginx and the instances both exempt the build host
/// (geo block, `limits.exempt` on the address from `X-Forwarded-For`); any other client is
/// limited by whichever comes first, and every refusal names its limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_host_is_exempt_at_the_gateway_and_the_instances() {
    let up = Upstream::start().await;
    let body = random_bytes(30_000, 21);
    up.route("/farm/src.tar.gz", Route::ok(body.clone()));
    let exempt = format!("{BUILD_HOST}/32");
    let cluster = Cluster::start(
        &[
            ("UPCACHE__LIMITS__PER_CLIENT_RPS", "1"),
            ("UPCACHE__LIMITS__PER_CLIENT_BURST", "5"),
            ("UPCACHE__LIMITS__PER_CLIENT_CONCURRENCY", "4"),
            ("UPCACHE__LIMITS__EXEMPT", exempt.as_str()),
        ],
        &[],
    );
    let url = cluster.mirror(&up.url("/farm/src.tar.gz"));
    let build_host = client_from(BUILD_HOST);
    get_until_hit(&build_host, &url, &body).await;
    let answers = curl_parallel(BUILD_HOST, &url, 300, &[]).await;
    assert_eq!(count(&answers, 200), 300);
    assert!(answers.iter().all(|a| a.2.len() == body.len()));

    let answers = curl_parallel("127.0.0.1", &url, 300, &[]).await;
    let refused: Vec<serde_json::Value> = answers
        .iter()
        .filter(|a| a.0 == 429)
        .map(|a| serde_json::from_slice(&a.2).expect("every 429 is JSON"))
        .collect();
    assert!(!refused.is_empty());
    assert_eq!(refused.len() + count(&answers, 200), 300);
    let known = [
        "limits.per_client_rps",
        "limits.per_client_concurrency",
        "limit_req upcache_rate",
        "limit_conn upcache_conn",
    ];
    let mut seen = BTreeSet::new();
    for body in &refused {
        let limit = body["limit"].as_str().unwrap_or_default();
        assert!(known.contains(&limit), "{body}");
        assert!(body["message"].as_str().unwrap().contains(limit), "{body}");
        seen.insert(limit.to_owned());
    }
    // With a burst of 5 at the instance and 200 at nginx, the instance refuses first.
    assert!(
        seen.iter().any(|l| l.starts_with("limits.")),
        "the instance's own limits apply behind the gateway: {seen:?}"
    );
    assert_eq!(up.hits("/farm/src.tar.gz"), 1);
}

/// A tmpfs mounted for one test (as root), unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            path: path.to_owned(),
        }
    }

    /// Write zeros until the volume is full.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 1 << 16];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_or_unready_instances_are_taken_out_of_rotation() {
    let up = Upstream::start().await;
    let files: Vec<(String, bytes::Bytes)> = (0..60)
        .map(|i| (format!("/f/src-{i}.tar.gz"), random_bytes(50_000, 100 + i)))
        .collect();
    for (path, body) in &files {
        up.route(path, Route::ok(body.clone()));
    }
    let scratch = tempfile::tempdir().unwrap();
    let tmpfs = Tmpfs::mount(&scratch.path().join("data-3"), "64m");
    let mut cluster = Cluster::start(&NO_APP_LIMITS, &[None, None, Some(tmpfs.path.clone())]);
    let c = client();

    // Which instance owns which URL: HEAD misses are answered without storing anything.
    let mut by_owner: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, (path, _)) in files.iter().enumerate() {
        let r = c.head(cluster.mirror(&up.url(path))).send().await.unwrap();
        assert_eq!(r.status(), 200);
        by_owner.entry(served_by(&r)).or_default().push(i);
    }
    let owned = |name: &str| by_owner.get(name).cloned().unwrap_or_default();
    let (one, three) = (owned("upcache-1"), owned("upcache-3"));
    assert!(one.len() >= 2 && three.len() >= 2, "{by_owner:?}");

    // upcache-3 stores one of its URLs, then its volume fills up.
    let (kept, kept_body) = &files[three[0]];
    let r = c.get(cluster.mirror(&up.url(kept))).send().await.unwrap();
    assert_eq!(served_by(&r), "upcache-3");
    assert_eq!(&r.bytes().await.unwrap(), kept_body);
    // Committed (an event inside another process: ask until it is).
    let lookup = cluster.direct(2, &format!("/api/v1/lookup?url={}", enc(&up.url(kept))));
    while c.get(&lookup).send().await.unwrap().status() != 200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let filler = tmpfs.fill();
    let ready = c.get(cluster.direct(2, "/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "a full volume is not ready");
    assert_eq!(
        metric(&c, &cluster.direct(2, "/metrics"), "upcache_ready").await,
        0.0
    );
    assert_eq!(
        metric(&c, &cluster.direct(1, "/metrics"), "upcache_ready").await,
        1.0
    );

    // Unready: what it would have to store goes elsewhere...
    let (path, body) = &files[three[1]];
    let direct = c
        .get(cluster.direct(2, &format!("/fetch?url={}", enc(&up.url(path)))))
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(direct).await;
    assert_eq!((status, code.as_str()), (503, "unavailable"));
    let r = c.get(cluster.mirror(&up.url(path))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let by = served_by(&r);
    assert!(by == "upcache-1" || by == "upcache-2", "{by}");
    assert_eq!(&r.bytes().await.unwrap(), body);
    // ... while what it holds can still be read from it.
    let r = c
        .get(cluster.direct(2, &format!("/fetch?url={}", enc(&up.url(kept)))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-cache"], "HIT");
    assert_eq!(&r.bytes().await.unwrap(), kept_body);

    // A stopped instance: its URLs are served by the one instance left in rotation.
    cluster.stop(0);
    for &i in &one[..2] {
        let (path, body) = &files[i];
        let r = c.get(cluster.mirror(&up.url(path))).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(served_by(&r), "upcache-2", "{path}");
        assert_eq!(&r.bytes().await.unwrap(), body);
    }

    // Space again: ready, and storing again.
    std::fs::remove_file(filler).unwrap();
    let ready = c.get(cluster.direct(2, "/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        metric(&c, &cluster.direct(2, "/metrics"), "upcache_ready").await,
        1.0
    );
    let (path, body) = &files[three[1]];
    let r = c
        .get(cluster.direct(2, &format!("/fetch?url={}", enc(&up.url(path)))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(&r.bytes().await.unwrap(), body);
    drop(cluster);
}

/// The value of the sample `name` (without labels) in the exposition at `url`.
async fn metric(c: &reqwest::Client, url: &str, name: &str) -> f64 {
    let text = c.get(url).send().await.unwrap().text().await.unwrap();
    let line = text
        .lines()
        .find(|l| l.split(' ').next() == Some(name))
        .unwrap_or_else(|| panic!("{name} is not in {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Files in `dir` other than the readiness probe's, with their sizes.
fn spooled(dir: &Path) -> Vec<(PathBuf, u64)> {
    list_files(dir)
        .into_iter()
        .filter(|p| {
            !p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".probe")
        })
        .filter_map(|p| Some((p.clone(), std::fs::metadata(&p).ok()?.len())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mib_upload_streams_through_nginx_unbuffered() {
    use md5::Digest;
    let (token, token_sha) = upcache::auth::new_token();
    let scratch = tempfile::tempdir().unwrap();
    let config = scratch.path().join("upcache.toml");
    std::fs::write(
        &config,
        format!(
            "[[auth.tokens]]\nname = \"ci\"\nsha256 = \"{token_sha}\"\nscopes = [\"upload\"]\n"
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let mut env = NO_APP_LIMITS.to_vec();
    env.push(("UPCACHE_CONFIG", config.as_str()));
    let cluster = Cluster::start(&env, &[]);
    let tmp_dirs: Vec<PathBuf> = (1..=3)
        .map(|i| {
            cluster
                ._dir
                .path()
                .join(format!("upcache-{i}/upcache-data/tmp"))
        })
        .collect();

    const MIB: usize = 1 << 20;
    const TOTAL: usize = 200;
    let chunk = |i: usize| random_bytes(MIB, 1000 + i as u64);
    let mut md5 = md5::Md5::new();
    for i in 0..TOTAL {
        md5.update(chunk(i));
    }
    let expected_md5 = hex::encode(md5.finalize());

    // The second half is sent only once an instance has received part of the first: a
    // gateway that spooled the request body before passing it on would never get there.
    let watch = tmp_dirs.clone();
    // nginx unlinks its temp files as it creates them, but says so in its log.
    let nginx_log = cluster.nginx.dir.join("error.log");
    let body = async_stream::stream! {
        for i in 0..TOTAL {
            if i == TOTAL / 2 {
                loop {
                    let log = std::fs::read_to_string(&nginx_log).unwrap_or_default();
                    assert!(
                        !log.contains("buffered to a temporary file"),
                        "nginx spooled the request body to disk: {log}"
                    );
                    if watch.iter().any(|d| spooled(d).iter().any(|(_, n)| *n > 0)) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            yield Ok::<_, std::io::Error>(chunk(i));
        }
    };
    let url = cluster.nginx.url(&format!(
        "/api/v1/upload?filename=big-1.0.tar.gz&md5={expected_md5}"
    ));
    let r = client()
        .put(url)
        .bearer_auth(&token)
        .header("content-length", (TOTAL * MIB).to_string())
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    let by = served_by(&r);
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["md5"], expected_md5.as_str());
    assert_eq!(v["size"], (TOTAL * MIB) as u64);

    // Stored on the instance that took it, byte for byte.
    let i: usize = by.trim_start_matches("upcache-").parse().unwrap();
    let r = client()
        .get(cluster.direct(i - 1, &format!("/by-md5/{expected_md5}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut got = md5::Md5::new();
    let mut n = 0;
    let mut stream = r.bytes_stream();
    while let Some(c) = stream.next().await {
        let c = c.unwrap();
        n += c.len();
        got.update(&c);
    }
    assert_eq!(n, TOTAL * MIB);
    assert_eq!(hex::encode(got.finalize()), expected_md5);
    let log = cluster.nginx.error_log();
    assert!(!log.contains("buffered to a temporary file"), "{log}");
}
