//! A real FTP server for tests: pyftpdlib (`ftp_server.py` beside this file) on
//! 127.0.0.1:<ephemeral>, serving a fresh temporary directory. `scripts/test.sh` installs
//! pyftpdlib when it is missing; without it these tests fail with a message saying so.
//!
//! Anonymous logins see `public/`, `alice:s3cret` sees `private/`. Every command the server
//! receives is recorded ([`FtpServer::commands`]); files named `*break-once*` break mid-body on
//! their first transfer, files named `*hold*` stop halfway until [`FtpServer::release`].

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};

use tempfile::TempDir;
use tokio::sync::watch;

pub struct FtpServer {
    pub port: u16,
    child: Child,
    stdin: Mutex<ChildStdin>,
    dir: TempDir,
    commands: Arc<Mutex<Vec<String>>>,
    reached: watch::Receiver<Vec<String>>,
    pongs: watch::Receiver<u64>,
    pings: Mutex<u64>,
}

impl FtpServer {
    pub fn start() -> FtpServer {
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/common/ftp_server.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs (scripts/test.sh installs it with pyftpdlib)");
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = match lines.next() {
            Some(Ok(line)) if line.starts_with("port ") => line[5..].trim().parse().unwrap(),
            other => panic!(
                "the FTP test server did not start ({other:?}); is pyftpdlib installed? \
                 (python3 -m pip install pyftpdlib, or run scripts/test.sh)"
            ),
        };
        let commands = Arc::new(Mutex::new(Vec::new()));
        let (reached_tx, reached) = watch::channel(Vec::new());
        let (pongs_tx, pongs) = watch::channel(0u64);
        let cmds = commands.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Some(cmd) = line.strip_prefix("cmd ") {
                    cmds.lock().unwrap().push(cmd.to_owned());
                } else if let Some(name) = line.strip_prefix("reached ") {
                    reached_tx.send_modify(|v| v.push(name.to_owned()));
                } else if let Some(n) = line.strip_prefix("pong ") {
                    pongs_tx.send_replace(n.trim().parse().unwrap());
                }
            }
        });
        FtpServer {
            port,
            child,
            stdin: Mutex::new(stdin),
            dir,
            commands,
            reached,
            pongs,
            pings: Mutex::new(0),
        }
    }

    /// `ftp://127.0.0.1:<port>/<path>` (anonymous).
    pub fn url(&self, path: &str) -> String {
        format!(
            "ftp://127.0.0.1:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }

    /// `ftp://alice:s3cret@127.0.0.1:<port>/<path>`.
    pub fn user_url(&self, path: &str) -> String {
        format!(
            "ftp://alice:s3cret@127.0.0.1:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }

    /// Where anonymous users are (`public/`).
    pub fn public(&self) -> PathBuf {
        self.dir.path().join("public")
    }

    /// Where alice is (`private/`).
    pub fn private(&self) -> PathBuf {
        self.dir.path().join("private")
    }

    /// Put a file for anonymous users, creating directories.
    pub fn put(&self, path: &str, data: &[u8]) {
        let p = self.public().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }

    /// Commands received so far, as `VERB ARG` (PASS arguments hidden): every command the
    /// server received before this call is in the list.
    pub async fn commands(&self) -> Vec<String> {
        let n = {
            let mut pings = self.pings.lock().unwrap();
            *pings += 1;
            let mut stdin = self.stdin.lock().unwrap();
            writeln!(stdin, "ping {}", *pings).unwrap();
            stdin.flush().unwrap();
            *pings
        };
        let mut rx = self.pongs.clone();
        rx.wait_for(|p| *p >= n).await.unwrap();
        self.commands.lock().unwrap().clone()
    }

    /// Commands received so far whose verb is `verb`.
    pub async fn commands_of(&self, verb: &str) -> Vec<String> {
        self.commands()
            .await
            .into_iter()
            .filter(|c| c.split(' ').next() == Some(verb))
            .collect()
    }

    /// Resolves once a `*hold*` file's transfer has stopped halfway.
    pub async fn reached(&self, name: &str) {
        let mut rx = self.reached.clone();
        rx.wait_for(|v| v.iter().any(|n| n == name)).await.unwrap();
    }

    /// Let held transfers of `name` go on.
    pub fn release(&self, name: &str) {
        let mut stdin = self.stdin.lock().unwrap();
        writeln!(stdin, "release {name}").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for FtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
