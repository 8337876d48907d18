//! Small fixtures many areas share: digests of test data, waiting for a condition, an admin
//! token, the sweep and the journal of a test server, and running the real `upcache` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use upcache::config::TokenConfig;
use upcache::store::{Digester, Digests};

use super::server::TestServer;

/// The repository's root (where `Cargo.toml` is).
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The digests upcache computes for `data`.
pub fn digests(data: &[u8]) -> Digests {
    let mut d = Digester::new();
    d.update(data);
    d.finish()
}

/// The sha256 of `data`, in hex.
pub fn sha256(data: &[u8]) -> String {
    digests(data).sha256
}

/// How long [`eventually`] waits before it fails the test: far longer than any condition
/// takes on a loaded machine, so it never decides a result, it only ends a hung test.
const PATIENCE: Duration = Duration::from_secs(60);

/// Poll `probe` until it gives `Some`, and return that; for conditions no event announces
/// (a background commit, the next readiness probe, an upload to the bucket). Fails the test
/// with `what` if it never comes.
pub async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {PATIENCE:?} in vain for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A new admin token and its configuration entry (`name = "ops"`).
pub fn admin() -> (String, TokenConfig) {
    token("ops", &["admin"])
}

/// A new token with `scopes` and its configuration entry.
pub fn token(name: &str, scopes: &[&str]) -> (String, TokenConfig) {
    let (token, sha256) = upcache::auth::new_token();
    let config = TokenConfig {
        name: name.into(),
        sha256,
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
    };
    (token, config)
}

/// A config file in `dir` for the real binary: private upstreams allowed, `extra` TOML, and
/// an admin token, which is returned with the file's path.
pub fn config_with_admin(dir: &Path, extra: &str) -> (PathBuf, String) {
    let (token, sha) = upcache::auth::new_token();
    let path = dir.join("upcache.toml");
    std::fs::write(
        &path,
        format!(
            "[upstream]\nallow_private = true\n{extra}\n[[auth.tokens]]\nname = \"ops\"\nsha256 = \"{sha}\"\nscopes = [\"admin\"]\n"
        ),
    )
    .unwrap();
    (path, token)
}

/// `POST /api/v1/sweep` with an admin `token`: the sweep's report.
pub async fn sweep(srv: &TestServer, token: &str) -> serde_json::Value {
    let r = srv
        .client
        .post(srv.url("/api/v1/sweep"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// Every event in the server's journal, oldest first.
pub fn journal_events(srv: &TestServer) -> Vec<serde_json::Value> {
    std::fs::read_to_string(srv.data_dir().join("journal.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The real `upcache` binary, without the variables of the environment the tests run in
/// that would change what it does.
pub fn upcache() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_upcache"));
    for var in [
        "RUST_LOG",
        "UPCACHE_SERVER",
        "UPCACHE_CONFIG",
        "UPCACHE_TOKEN",
    ] {
        c.env_remove(var);
    }
    c
}

/// Run `cmd` to its end: exit code, stdout and stderr.
pub fn run(cmd: &mut Command) -> (Option<i32>, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("the command runs");
    (
        status.code(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// Fail with every one of `problems`, one a line, under `what`.
pub fn assert_none(problems: &[String], what: &str) {
    assert!(
        problems.is_empty(),
        "{what}:\n  - {}\n",
        problems.join("\n  - ")
    );
}

/// Run `cmd` to its end off the async runtime (the server under test keeps serving).
pub async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("the command runs"))
        .await
        .unwrap()
}
