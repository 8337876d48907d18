//! A real browser for tests of pages: Debian's `chromium`, headless, driven over the DevTools
//! protocol on a pipe (`--remote-debugging-pipe`: it reads commands on fd 3 and writes answers
//! and events on fd 4, each a JSON message ending in a NUL byte). No port, no websocket.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

/// Where Debian's package puts it.
const CHROMIUM: &str = "/usr/bin/chromium";

/// Longest wait for one answer: a browser that says nothing for this long is stuck.
const ANSWER_WITHIN: Duration = Duration::from_secs(60);

pub struct Browser {
    child: Child,
    commands: File,
    answers: mpsc::Receiver<Value>,
    next_id: u64,
    /// The page's session (messages without one go to the browser itself).
    session: Option<String>,
    profile: tempfile::TempDir,
}

impl Browser {
    /// Whether chromium is installed (scripts/test.sh installs it).
    pub fn available() -> bool {
        Path::new(CHROMIUM).exists()
    }

    /// Start chromium with one blank page.
    pub fn launch() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let (their_in, commands) = pipe();
        let (answers_out, their_out) = pipe();
        let log = File::create(profile.path().join("chromium.log")).unwrap();
        let mut cmd = Command::new(CHROMIUM);
        cmd.args([
            "--headless",
            // Tests run as root, which chromium's sandbox refuses.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--remote-debugging-pipe",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
        let (r, w) = (their_in.as_raw_fd(), their_out.as_raw_fd());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Out of the way first, in case either already is fd 3 or 4.
                let (r, w) = (
                    libc::fcntl(r, libc::F_DUPFD, 10),
                    libc::fcntl(w, libc::F_DUPFD, 10),
                );
                if r < 0 || w < 0 || libc::dup2(r, 3) < 0 || libc::dup2(w, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("chromium starts");
        drop((their_in, their_out));
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            let mut from = BufReader::new(answers_out);
            loop {
                let mut msg = Vec::new();
                match from.read_until(0, &mut msg) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if msg.last() == Some(&0) {
                            msg.pop();
                        }
                        let parsed = serde_json::from_slice(&msg).expect("DevTools sends JSON");
                        if tx.send(parsed).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let mut b = Browser {
            child,
            commands,
            answers,
            next_id: 0,
            session: None,
            profile,
        };
        let target = b.call("Target.createTarget", json!({"url": "about:blank"}));
        let attached = b.call(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        b.session = Some(attached["sessionId"].as_str().unwrap().to_owned());
        b
    }

    /// Send a command to the page (or, before there is one, the browser); its result.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            msg["sessionId"] = s.clone().into();
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.commands.write_all(&bytes).unwrap();
        loop {
            let answer = self
                .answers
                .recv_timeout(ANSWER_WITHIN)
                .unwrap_or_else(|e| {
                    panic!("no answer to {method} ({e}); chromium said: {}", self.log())
                });
            // Events (no id) and answers to others are not ours.
            if answer["id"] != id {
                continue;
            }
            if let Some(err) = answer.get("error") {
                panic!("{method} failed: {err}");
            }
            return answer["result"].clone();
        }
    }

    /// Load `url` in the page and wait until it has loaded.
    pub fn navigate(&mut self, url: &str) {
        let nav = self.call("Page.navigate", json!({"url": url}));
        assert!(nav.get("errorText").is_none(), "{url}: {nav}");
        while self.eval("document.readyState") != "complete" {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Evaluate a JavaScript expression in the page; its value.
    pub fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expression} threw: {e}");
        }
        r["result"]["value"].clone()
    }

    /// What chromium wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.profile.path().join("chromium.log")).unwrap_or_default()
    }
}

/// A pipe (read end, write end), closed on exec: chromium gets only the ends made its fd 3
/// and 4.
fn pipe() -> (File, File) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills both descriptors, which the Files then own.
    unsafe {
        assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0);
        (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1]))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
