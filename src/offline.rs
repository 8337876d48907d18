//! The offline commands (`upcache gc`, `upcache verify`): they open the data directory
//! themselves, so they first make sure there is one, with upcache data in it, and that no
//! running server holds it — answering at once with a sentence, never a raw lock error or a
//! data directory created where there was none.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::ExitCode;

use std::sync::Arc;

use crate::alerts::Alerter;
use crate::cache::{Cache, OpenError};
use crate::config::Config;
use crate::error::Error;

/// An offline command, for messages.
#[derive(Debug, Clone, Copy)]
pub enum Offline {
    Gc,
    Verify,
}

impl Offline {
    fn name(self) -> &'static str {
        match self {
            Offline::Gc => "gc",
            Offline::Verify => "verify",
        }
    }

    /// What the running server offers instead.
    fn online(self) -> &'static str {
        match self {
            Offline::Gc => "POST /api/v1/sweep (admin token) runs a sweeper pass in it now",
            Offline::Verify => {
                "every sweeper pass re-hashes part of the store, and POST /api/v1/sweep \
                 (admin token) runs one now"
            }
        }
    }
}

/// Why an offline command cannot open the data directory.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(
        "{dir} holds no upcache data (no index, journal or blobs); give the data directory with \
         --data-dir or --config"
    )]
    NoData { dir: String },
    #[error(
        "{dir} is in use by a running upcache server; `upcache {command}` works on a stopped \
         server only. Stop the server first, or let it do the work: {online}"
    )]
    InUse {
        dir: String,
        command: &'static str,
        online: &'static str,
    },
    #[error("cannot check {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Files and directories whose presence means "this is an upcache data directory".
const MARKERS: [&str; 3] = ["index", "journal.jsonl", "blobs"];

/// Check `data_dir` for `command` without creating or changing anything.
pub fn check(data_dir: &Path, command: Offline) -> Result<(), Refusal> {
    let dir = data_dir.display().to_string();
    if !data_dir.is_dir() || !MARKERS.iter().any(|m| data_dir.join(m).exists()) {
        return Err(Refusal::NoData { dir });
    }
    if index_in_use(&data_dir.join("index"))? {
        return Err(Refusal::InUse {
            dir,
            command: command.name(),
            online: command.online(),
        });
    }
    Ok(())
}

/// Whether another process holds the index lock: redb takes an exclusive `flock` on
/// `<index>/index.redb` for as long as the database is open (sled, in earlier versions, on
/// `<index>/db`: a running instance of one of them). We take and release it at once,
/// without waiting.
fn index_in_use(index: &Path) -> Result<bool, Refusal> {
    for file in ["index.redb", "db"] {
        if file_locked(&index.join(file))? {
            return Ok(true);
        }
    }
    Ok(false)
}

fn file_locked(db: &Path) -> Result<bool, Refusal> {
    let file = match File::open(db) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(Refusal::Io {
                path: db.display().to_string(),
                source,
            });
        }
    };
    // SAFETY: flock on a descriptor we own; the lock goes with the descriptor when `file`
    // is dropped.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(false);
    }
    let e = io::Error::last_os_error();
    match e.kind() {
        io::ErrorKind::WouldBlock => Ok(true),
        _ => Err(Refusal::Io {
            path: db.display().to_string(),
            source: e,
        }),
    }
}

/// Run `f` on the data directory of `cfg` without serving.
pub fn run(
    cfg: Config,
    command: Offline,
    runtime: &tokio::runtime::Runtime,
    f: impl FnOnce(&DataDir) -> Result<ExitCode, String>,
) -> ExitCode {
    if let Err(e) = check(&cfg.storage.data_dir, command) {
        eprintln!("upcache: {e}");
        return ExitCode::from(1);
    }
    let dir = cfg.storage.data_dir.display().to_string();
    let remote = match cfg.storage.backend {
        crate::config::Backend::Fs => None,
        _ => match crate::remote::Remote::new(&cfg.storage, cfg.cache.index_refresh) {
            Ok(remote) => Some(remote),
            Err(e) => {
                eprintln!("upcache: cannot open the data directory: {e}");
                return ExitCode::from(1);
            }
        },
    };
    let (clock, alerts) = (crate::time::Clock::system(), Alerter::off());
    let opened = Cache::open(Arc::new(cfg), runtime.handle().clone(), clock, alerts);
    let cache = match opened {
        Ok(opened) => opened.cache,
        // A server that started after the check: the same sentence.
        Err(OpenError::Index(e)) if e.is_locked() => {
            let e = Refusal::InUse {
                dir,
                command: command.name(),
                online: command.online(),
            };
            eprintln!("upcache: {e}");
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("upcache: cannot open the data directory: {e}");
            return ExitCode::from(1);
        }
    };
    // The bucket of s3/obs, for its own cleanup: nothing is started (no uploads, no probes).
    let tier = remote.map(|remote| {
        crate::tier::Bucket::new(
            cache.clone(),
            remote,
            Default::default(),
            Default::default(),
        )
    });
    let dir = DataDir {
        cache,
        tier,
        runtime: runtime.handle().clone(),
    };
    let code = match f(&dir) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("upcache: {msg}");
            ExitCode::from(1)
        }
    };
    if let Err(e) = dir.cache.index.flush_blocking() {
        eprintln!("upcache: cannot flush the index: {e}");
        return ExitCode::from(1);
    }
    code
}

/// What an offline command works on: the data directory and, with s3/obs, the bucket.
pub struct DataDir {
    pub cache: Arc<Cache>,
    tier: Option<Arc<crate::tier::Bucket>>,
    runtime: tokio::runtime::Handle,
}

impl DataDir {
    /// One sweeper pass (`upcache gc`): no fill is running; the bucket, if any, runs its
    /// own cleanup.
    pub fn sweep(&self) -> Result<crate::sweeper::Report, Error> {
        use crate::tier::Tier;
        let remote = || {
            let tier = self.tier.as_ref()?;
            tier.sweep().map(|f| self.runtime.block_on(f))
        };
        crate::sweeper::run_once(&self.cache, Default::default, &remote)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_directory_without_data_and_creates_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("upcache-data");
        assert!(matches!(
            check(&missing, Offline::Verify),
            Err(Refusal::NoData { .. })
        ));
        assert!(!missing.exists());
        std::fs::create_dir(&missing).unwrap();
        std::fs::write(missing.join("unrelated"), b"x").unwrap();
        assert!(matches!(
            check(&missing, Offline::Gc),
            Err(Refusal::NoData { .. })
        ));
        assert_eq!(std::fs::read_dir(&missing).unwrap().count(), 1);
    }

    #[test]
    fn an_open_index_is_in_use() {
        let tmp = tempfile::tempdir().unwrap();
        let index = crate::index::Index::open(&tmp.path().join("index"), 16).unwrap();
        let e = check(tmp.path(), Offline::Gc).unwrap_err();
        assert!(matches!(e, Refusal::InUse { .. }), "{e}");
        assert!(e.to_string().contains("POST /api/v1/sweep"), "{e}");
        drop(index);
        check(tmp.path(), Offline::Verify).unwrap();
    }
}
