//! The one-time migration of an index written by an earlier version (sled 0.34: the files
//! `conf` and `db` in the index directory) to redb, at the first open.
//!
//! The records are copied unchanged (the same keys and JSON values; the three checksum trees
//! become one table under a tag byte) into `index.redb.migrating`, a batch per transaction,
//! which is renamed to `index.redb` only once complete. A crash before the rename leaves the
//! sled index as it was (the next open migrates again); after it, the redb index is
//! complete and the sled files are removed (again at the next open, if a crash came first).
//! The sled lock is held throughout, so two processes never migrate at once.

use std::path::Path;

use tracing::{info, warn};

use super::IndexError;
use super::store::{self, BLOB_URLS, BLOBS, SUMS, URLS, sum_key};
use crate::store::Algo;

/// Records copied per write transaction.
const BATCH: usize = 10_000;

/// The sled trees of the earlier versions and where their records go.
const TREES: [(&str, Target); 6] = [
    ("blobs/v1", Target::Same(BLOBS)),
    ("urls/v1", Target::Same(URLS)),
    ("md5/v1", Target::Sum(Algo::Md5)),
    ("sha256/v1", Target::Sum(Algo::Sha256)),
    ("sha512/v1", Target::Sum(Algo::Sha512)),
    ("blob_urls/v1", Target::Same(BLOB_URLS)),
];

#[derive(Clone, Copy)]
enum Target {
    Same(redb::TableDefinition<'static, &'static [u8], &'static [u8]>),
    Sum(Algo),
}

/// The files sled 0.34 keeps in its directory (`blobs/` holds its large values).
fn is_sled_file(name: &str) -> bool {
    matches!(name, "conf" | "db" | "blobs") || name.starts_with("snap.")
}

fn has_sled(dir: &Path) -> bool {
    dir.join("conf").exists() && dir.join("db").exists()
}

pub(super) fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IndexError + '_ {
    move |source| IndexError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn open_sled(dir: &Path) -> Result<sled::Db, IndexError> {
    let config = sled::Config::new()
        .path(dir)
        .cache_capacity(16 * 1024 * 1024)
        .flush_every_ms(None);
    let deadline = std::time::Instant::now() + store::LOCK_WAIT;
    loop {
        match config.open() {
            Ok(db) => return Ok(db),
            Err(e) if is_lock_error(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(source) => {
                return Err(IndexError::Sled {
                    path: dir.display().to_string(),
                    source,
                });
            }
        }
    }
}

/// If `dir` holds a sled index and no redb one, migrate it.
pub(super) fn from_sled_if_any(dir: &Path) -> Result<(), IndexError> {
    let target = store::file_in(dir);
    if target.exists() || !has_sled(dir) {
        return Ok(());
    }
    let sled = open_sled(dir)?;
    // Another process may have migrated it while we waited for the lock.
    if target.exists() {
        return Ok(());
    }
    let sled_err = |source| IndexError::Sled {
        path: dir.display().to_string(),
        source,
    };
    let temp = dir.join(format!("{}.migrating", store::FILE));
    // Left by a migration that did not finish: ours now (we hold the sled lock).
    if temp.exists() {
        std::fs::remove_file(&temp).map_err(io(&temp))?;
    }
    let started = std::time::Instant::now();
    let db = store::open_database(&temp)?;
    store::create_tables(&db)?;
    let mut copied = 0u64;
    for (name, to) in TREES {
        let tree = sled.open_tree(name).map_err(sled_err)?;
        let mut records = tree.iter().peekable();
        while records.peek().is_some() {
            let tx = db.begin_write()?;
            {
                let mut table = tx.open_table(match to {
                    Target::Same(def) => def,
                    Target::Sum(_) => SUMS,
                })?;
                for item in records.by_ref().take(BATCH) {
                    let (k, v) = item.map_err(sled_err)?;
                    match to {
                        Target::Same(_) => table.insert(k.as_ref(), v.as_ref())?,
                        Target::Sum(algo) => {
                            table.insert(sum_key(algo, &k).as_slice(), v.as_ref())?
                        }
                    };
                    copied += 1;
                }
            }
            tx.commit()?;
        }
    }
    drop(db);
    std::fs::rename(&temp, &target).map_err(io(&target))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    info!(
        index = %dir.display(),
        records = copied,
        seconds = started.elapsed().as_secs_f64(),
        "migrated the index from sled to redb"
    );
    drop(sled);
    Ok(())
}

/// Remove the files of a migrated sled index (the redb one is complete and open).
pub(super) fn remove_sled_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !is_sled_file(&name.to_string_lossy()) {
            continue;
        }
        let path = entry.path();
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if let Err(e) = removed {
            warn!(path = %path.display(), error = %e, "could not remove a file of the migrated sled index");
        }
    }
}
