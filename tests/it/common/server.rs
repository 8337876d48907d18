//! A real upcache server for tests: in-process on 127.0.0.1:0 with a fresh data directory,
//! or the real binary as a child process (for crash tests).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;
use upcache::{Config, Server, Service};

/// Configuration for tests: loopback upstreams allowed, fast retries, no per-client limits.
pub fn test_config(data_dir: &Path) -> Config {
    let mut cfg = Config::default();
    cfg.server.listen = "127.0.0.1:0".into();
    cfg.storage.data_dir = data_dir.to_owned();
    cfg.upstream.allow_private = true;
    cfg.upstream.retry_backoff = Duration::from_millis(10);
    cfg.upstream.read_timeout = Duration::from_secs(10);
    cfg.server.instance = "test".into();
    // Every test client is 127.0.0.1: per-client limits are for tests/it/limits.rs to turn on.
    cfg.limits.per_client_rps = 0;
    cfg.limits.per_client_concurrency = 0;
    // Measure "full" by what the test stores, not by how full this machine's disk is.
    cfg.cache.max_size = 8 << 30;
    cfg
}

/// An in-process server. Dropping it stops nothing gracefully; call `stop` for that.
pub struct TestServer {
    pub app: Arc<Service>,
    server: Option<Server>,
    pub base: String,
    pub dir: Arc<TempDir>,
    pub client: reqwest::Client,
    config: Config,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(f: impl FnOnce(&mut Config)) -> TestServer {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let mut cfg = test_config(&dir.path().join("data"));
        f(&mut cfg);
        Self::start_in(dir, cfg)
    }

    /// [`TestServer::start_with`], keeping time with `clock`: advance a manual one instead
    /// of sleeping until a one-second timestamp has passed.
    pub async fn start_with_clock(
        clock: upcache::time::Clock,
        f: impl FnOnce(&mut Config),
    ) -> TestServer {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let mut cfg = test_config(&dir.path().join("data"));
        f(&mut cfg);
        Self::start_in_with_clock(dir, cfg, clock)
    }

    /// Start on an existing directory with a given configuration (restarts).
    pub fn start_in(dir: Arc<TempDir>, cfg: Config) -> TestServer {
        Self::start_in_with_clock(dir, cfg, upcache::time::Clock::system())
    }

    fn start_in_with_clock(
        dir: Arc<TempDir>,
        cfg: Config,
        clock: upcache::time::Clock,
    ) -> TestServer {
        let listener = TcpListener::bind(&cfg.server.listen).unwrap();
        let (app, server) =
            upcache::start_with_clock(cfg.clone(), listener, clock).expect("server starts");
        let base = format!("http://{}", server.addr);
        TestServer {
            app,
            server: Some(server),
            base,
            dir,
            client: client(),
            config: cfg,
        }
    }

    /// Stop gracefully and start again on the same data directory.
    pub async fn restart(mut self) -> TestServer {
        self.stop().await;
        let (dir, cfg) = (self.dir.clone(), self.config.clone());
        drop(self);
        Self::start_in(dir, cfg)
    }

    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop(true).await;
        }
        // As `upcache serve` does: fills, then the background workers, which hold the app
        // (and its index lock) while they run; an offline command may follow at once.
        self.app.shutdown(std::time::Duration::from_secs(10)).await;
        self.app.cache.index.flush_blocking().unwrap();
    }

    /// Stop gracefully and release the data directory (the index lock), keeping the files:
    /// returns what is needed to start again with [`TestServer::start_in`].
    pub async fn shut_down(mut self) -> (Arc<TempDir>, Config) {
        self.stop().await;
        let kept = (self.dir.clone(), self.config.clone());
        drop(self);
        kept
    }

    pub fn data_dir(&self) -> PathBuf {
        self.config.storage.data_dir.clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `/fetch?url=<encoded>`
    pub fn fetch_url(&self, upstream: &str) -> String {
        format!("{}/fetch?url={}", self.base, enc(upstream))
    }

    /// `/<scheme>/<host:port>/<path>`
    pub fn mirror_url(&self, upstream: &str) -> String {
        let (scheme, rest) = upstream.split_once("://").unwrap();
        format!("{}/{scheme}/{rest}", self.base)
    }

    pub async fn get(&self, url: &str) -> reqwest::Response {
        self.client.get(url).send().await.unwrap()
    }

    /// GET and read the whole body; panics on transport errors.
    pub async fn get_bytes(
        &self,
        url: &str,
    ) -> (
        reqwest::StatusCode,
        reqwest::header::HeaderMap,
        bytes::Bytes,
    ) {
        let r = self.get(url).await;
        let (s, h) = (r.status(), r.headers().clone());
        (s, h, r.bytes().await.unwrap())
    }

    /// A client that sends absolute-form requests through this server as an HTTP proxy.
    pub fn proxy_client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::http(&self.base).unwrap())
            .build()
            .unwrap()
    }

    /// Send a raw `CONNECT target` and return the whole answer: the status line and headers,
    /// and the JSON error body if it is one (read until it is complete or the server closes).
    pub async fn raw_connect(&self, target: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(self.base.trim_start_matches("http://"))
            .await
            .unwrap();
        s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let mut n = 0;
        loop {
            let m = s.read(&mut buf[n..]).await.unwrap();
            n += m;
            let text = String::from_utf8_lossy(&buf[..n]);
            if m == 0 || (text.contains("\r\n\r\n") && text.trim_end().ends_with('}')) {
                return text.into_owned();
            }
        }
    }

    pub fn temp_files(&self) -> Vec<PathBuf> {
        list_files(&self.data_dir().join("tmp"))
    }

    /// The audit journal's events, oldest first.
    pub fn journal_events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.data_dir().join("journal.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// SHA-256 of `data`, lowercase hex (as upcache reports it).
pub fn sha256_hex(data: &[u8]) -> String {
    let mut d = upcache::store::Digester::new();
    d.update(data);
    d.finish().sha256
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub fn list_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// The JSON error body of a response.
pub async fn error_code(r: reqwest::Response) -> (u16, String, String) {
    let status = r.status().as_u16();
    let v: serde_json::Value = r.json().await.expect("error body is JSON");
    (
        status,
        v["error"].as_str().unwrap_or_default().to_owned(),
        v["message"].as_str().unwrap_or_default().to_owned(),
    )
}

/// The real `upcache serve` binary as a child process.
pub struct Process {
    pub child: Child,
    pub base: String,
    pub stderr_log: PathBuf,
}

impl Process {
    /// Start `upcache serve` with `args` (plus `--listen 127.0.0.1:0`) in `cwd`, with `env`,
    /// and wait until it listens.
    pub fn spawn(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Process {
        let stderr_log = cwd.join(format!("server-{}.log", std::process::id()));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_upcache"));
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .current_dir(cwd)
            .env_remove("RUST_LOG")
            // "Full" by what the test stores, not by this machine's disk (tests may override).
            .env("UPCACHE__CACHE__MAX_SIZE", "8GiB")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_log).unwrap());
        // If the test process dies (a timeout kill), its servers die with it.
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn upcache");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("upcache listening on ") {
                        break url.trim().to_owned();
                    }
                }
                _ => panic!(
                    "upcache exited before listening: {}",
                    std::fs::read_to_string(&stderr_log).unwrap_or_default()
                ),
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Process {
            child,
            base,
            stderr_log,
        }
    }

    pub fn kill9(&mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` GETs of `url` by curl from `source` (an address of this host), up to 100 at once
/// (`--parallel`), with `headers`: the status, `Retry-After` and body of each.
pub async fn curl_parallel(
    source: &str,
    url: &str,
    n: usize,
    headers: &[String],
) -> Vec<(u16, String, Vec<u8>)> {
    let dir = tempfile::tempdir().unwrap();
    let mut list = String::new();
    for i in 0..n {
        list += &format!(
            "url = \"{url}\"\noutput = \"{}/{i}\"\n",
            dir.path().display()
        );
    }
    let list_file = dir.path().join("list");
    std::fs::write(&list_file, list).unwrap();
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args([
        "-sS",
        "--parallel",
        "--parallel-immediate",
        "--parallel-max",
        "100",
    ])
    .args(["--interface", source])
    .args([
        "-w",
        "%{http_code} %header{retry-after} %{filename_effective}\n",
    ])
    .arg("-K")
    .arg(&list_file);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.output().await.expect("curl runs");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<(u16, String, Vec<u8>)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let mut parts = l.splitn(3, ' ');
            let status = parts.next().unwrap().parse().unwrap();
            let retry_after = parts.next().unwrap().to_owned();
            let body = std::fs::read(parts.next().unwrap()).unwrap_or_default();
            (status, retry_after, body)
        })
        .collect();
    assert_eq!(answers.len(), n);
    answers
}

/// How many of `answers` (from [`curl_parallel`]) have `status`.
pub fn count(answers: &[(u16, String, Vec<u8>)], status: u16) -> usize {
    answers.iter().filter(|a| a.0 == status).count()
}

/// A client whose connections leave from `ip`, an address of this host (127.0.0.2 is
/// another loopback client).
pub fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// GET `url` until it is a hit (a miss is committed in the background), checking each
/// answer is 200 with `body`.
pub async fn get_until_hit(c: &reqwest::Client, url: &str, body: &[u8]) {
    loop {
        let r = c.get(url).send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        let hit = r.headers()["x-cache"] == "HIT";
        assert_eq!(r.bytes().await.unwrap(), body, "{url}");
        if hit {
            return;
        }
    }
}
