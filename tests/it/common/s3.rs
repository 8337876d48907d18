//! A real S3 server for tests: moto (`s3_server.py` beside this file) on
//! 127.0.0.1:<ephemeral> with one bucket, one server per test. `scripts/test.sh` installs
//! `moto[server]` when it is missing; without it these tests fail with a message saying so.
//!
//! The tests inspect the bucket through OpenDAL (signed requests, as moto requires).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

use upcache::Config;

pub const BUCKET: &str = "upcache-test";
pub const ACCESS_KEY: &str = "test-access-key";
pub const SECRET_KEY: &str = "test-secret-key";

pub struct S3Server {
    pub port: u16,
    child: Child,
    _stdin: Option<ChildStdin>,
}

impl S3Server {
    pub fn start() -> S3Server {
        Self::start_on(0)
    }

    /// A fresh server (empty bucket) on `port` (0: any free port), e.g. the port of one that
    /// was killed: the bucket "comes back".
    pub fn start_on(port: u16) -> S3Server {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/common/s3_server.py");
        let mut cmd = Command::new("python3");
        cmd.arg(&script)
            .arg(BUCKET)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // If the test process dies (a timeout kill), the server dies with it.
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .expect("python3 runs (scripts/test.sh installs it with moto[server])");
        let stdin = child.stdin.take();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = match lines.next() {
            Some(Ok(line)) if line.starts_with("port ") => line[5..].trim().parse().unwrap(),
            other => panic!(
                "the S3 test server did not start ({other:?}); is moto installed? \
                 (python3 -m pip install 'moto[server]', or run scripts/test.sh)"
            ),
        };
        S3Server {
            port,
            child,
            _stdin: stdin,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Point `cfg` at this bucket under `prefix`.
    pub fn configure(&self, cfg: &mut Config, prefix: &str) {
        let s = &mut cfg.storage;
        s.backend = upcache::config::Backend::S3;
        s.bucket = BUCKET.into();
        s.endpoint = self.endpoint();
        s.region = "us-east-1".into();
        s.access_key_id = ACCESS_KEY.into();
        s.secret_access_key = SECRET_KEY.into();
        s.prefix = prefix.into();
    }

    /// The same as a `[storage]` section of a config file.
    pub fn toml(&self, prefix: &str) -> String {
        format!(
            "[storage]\nbackend = \"s3\"\nbucket = \"{BUCKET}\"\nendpoint = \"{}\"\nregion = \
             \"us-east-1\"\naccess_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \
             \"{SECRET_KEY}\"\nprefix = \"{prefix}\"\n",
            self.endpoint()
        )
    }

    /// A signed client of the bucket, rooted at `prefix`.
    pub fn operator(&self, prefix: &str) -> opendal::Operator {
        let b = opendal::services::S3::default()
            .bucket(BUCKET)
            .endpoint(&self.endpoint())
            .region("us-east-1")
            .access_key_id(ACCESS_KEY)
            .secret_access_key(SECRET_KEY)
            .root(&format!("/{prefix}"));
        opendal::Operator::new(b).unwrap()
    }

    /// Take the bucket down for good.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where the bucket keeps a blob's bytes (what upcache's `remote::blob_key` says).
pub fn blob_key(blake3: &str) -> String {
    upcache::remote::blob_key(blake3)
}
