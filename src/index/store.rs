//! The redb database under the index: its tables, opening it (waiting for a previous owner's
//! lock), and the one writer with its durability policy.
//!
//! Writes commit without an fsync (`Durability::None`), as sled's writes went to memory
//! until its flush: [`Store::durable`] (the index's `flush`) makes every earlier commit
//! durable at once, and a crash loses only what no flush covered (the index is a rebuildable
//! view; the start-up walk repairs it). redb frees the pages a non-durable commit replaced
//! only at the next durable one, so the records changed without one are bounded
//! ([`MAX_NONDURABLE_CHANGES`]): the file and the backlog stay bounded during a sweep that
//! evicts 100,000 blobs or a bulk load of a million. (Counting commits instead let a file
//! grow to 13 GB in a minute of bulk binds, 1,000 blobs per commit: every commit copies the
//! pages it changes, and none of the old copies could be reused.)

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use redb::{Database, Durability, Table, TableDefinition, WriteTransaction};

use super::IndexError;
use crate::store::Algo;

type Def = TableDefinition<'static, &'static [u8], &'static [u8]>;

/// blake3 (32 bytes) -> the blob's metadata (JSON, as `StoredBlobMeta`).
pub(super) const BLOBS: Def = TableDefinition::new("blobs/v2");
/// normalized URL -> its `UrlRecord` (JSON).
pub(super) const URLS: Def = TableDefinition::new("urls/v2");
/// tag byte ([`sum_key`]) ++ md5/sha256/sha512 -> blake3.
pub(super) const SUMS: Def = TableDefinition::new("sums/v2");
/// blake3 ++ URL -> (), so a blob's URLs are one range read.
pub(super) const BLOB_URLS: Def = TableDefinition::new("blob_urls/v2");
/// blake3 -> the reads of the blob not yet folded into its record (16 bytes: [`Reads`]).
/// The periodic access flush writes only here: rewriting each read blob's whole record cost
/// a fifth of a core with a million blobs read at random.
pub(super) const READS: Def = TableDefinition::new("reads/v2");
/// The index's own records ([`TOTALS_KEY`]).
pub(super) const META: Def = TableDefinition::new("meta/v2");

/// Key (in [`META`]) of the totals saved at a clean shutdown, so that the next start need
/// not count every blob record (4 s at 1,000,000 blobs). Taken, durably, at open: after a
/// crash there are none and the totals are counted again.
pub(super) const TOTALS_KEY: &[u8] = b"totals";

/// The database file in the index directory.
pub(super) const FILE: &str = "index.redb";

/// redb's page cache: the same bound sled had. The LRU of `cache.memory_entries` in front
/// holds the hot URL entries.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Records changed (inserted, replaced or removed, as the caller counts them) by non-durable
/// commits at most: a commit that would reach it is durable. A bind changes about 6 records,
/// so one in ~340 single binds is durable; a batch of 1,000 binds or evictions always is
/// (one fsync for the batch).
const MAX_NONDURABLE_CHANGES: u64 = 2048;

/// How long to wait for another process (or a previous instance) to release the index.
pub(super) const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The key of a checksum in [`SUMS`]: a tag byte for the algorithm, then the digest.
pub(super) fn sum_key(algo: Algo, digest: &[u8]) -> Vec<u8> {
    let tag = match algo {
        Algo::Md5 => 1u8,
        Algo::Sha256 => 2,
        Algo::Sha512 => 3,
        Algo::Blake3 => unreachable!("blake3 is the blobs' own key"),
    };
    [&[tag][..], digest].concat()
}

/// What the one writer knows between commits.
#[derive(Default)]
pub(super) struct Writer {
    /// Records changed by the commits since the last durable one.
    pending: u64,
    /// Whether [`TOTALS_KEY`] holds the totals: the first change after they were saved
    /// removes them, in the same transaction.
    pub totals_saved: bool,
}

/// The tables, open in one write transaction.
pub(super) struct Tables<'t> {
    pub blobs: Table<'t, &'static [u8], &'static [u8]>,
    pub urls: Table<'t, &'static [u8], &'static [u8]>,
    pub sums: Table<'t, &'static [u8], &'static [u8]>,
    pub blob_urls: Table<'t, &'static [u8], &'static [u8]>,
    pub reads: Table<'t, &'static [u8], &'static [u8]>,
    pub meta: Table<'t, &'static [u8], &'static [u8]>,
}

impl<'t> Tables<'t> {
    pub fn open(tx: &'t WriteTransaction) -> Result<Tables<'t>, IndexError> {
        Ok(Tables {
            blobs: tx.open_table(BLOBS)?,
            urls: tx.open_table(URLS)?,
            sums: tx.open_table(SUMS)?,
            blob_urls: tx.open_table(BLOB_URLS)?,
            reads: tx.open_table(READS)?,
            meta: tx.open_table(META)?,
        })
    }
}

pub(super) struct Store {
    pub db: Arc<Database>,
    /// Held for a whole write transaction: redb has one writer at a time anyway, and this
    /// keeps [`Writer`] in step with the commits.
    writer: Arc<Mutex<Writer>>,
}

/// Open (or create) the database file `path`, waiting up to [`LOCK_WAIT`] for its lock.
pub(super) fn open_database(path: &Path) -> Result<Database, IndexError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(path)
        {
            Ok(db) => return Ok(db),
            // A previous owner that is just exiting (a restart) releases the lock shortly;
            // another live process does not, and then the error names the file.
            Err(redb::DatabaseError::DatabaseAlreadyOpen)
                if std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(source) => {
                return Err(IndexError::Open {
                    path: path.display().to_string(),
                    source: Box::new(source),
                });
            }
        }
    }
}

/// Create the tables (a new file has none), durably.
pub(super) fn create_tables(db: &Database) -> Result<(), IndexError> {
    let tx = db.begin_write()?;
    Tables::open(&tx)?;
    tx.commit()?;
    Ok(())
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store, IndexError> {
        let db = open_database(&file_in(dir))?;
        create_tables(&db)?;
        Ok(Store {
            db: Arc::new(db),
            writer: Arc::new(Mutex::new(Writer::default())),
        })
    }

    /// One write transaction over every table that changes about `changes` records: `f` runs
    /// with the writer's state, then the transaction commits, durably once the changes since
    /// the last durable commit reach [`MAX_NONDURABLE_CHANGES`]. An error of `f` aborts it.
    pub fn write<T>(
        &self,
        changes: u64,
        f: impl FnOnce(&mut Writer, &mut Tables<'_>) -> Result<T, IndexError>,
    ) -> Result<T, IndexError> {
        let mut w = self.writer.lock();
        let mut tx = self.db.begin_write()?;
        let out = {
            let mut tables = Tables::open(&tx)?;
            f(&mut w, &mut tables)?
        };
        if w.pending + changes.max(1) >= MAX_NONDURABLE_CHANGES {
            tx.commit()?;
            w.pending = 0;
        } else {
            tx.set_durability(Durability::None);
            tx.commit()?;
            w.pending += changes.max(1);
        }
        Ok(out)
    }

    /// Make every commit so far durable (one fsync; nothing if they all are already).
    pub fn durable(&self) -> Result<(), IndexError> {
        durable(&self.db, &self.writer)
    }

    /// [`Store::durable`] on tokio's blocking pool.
    pub async fn durable_async(&self) -> Result<(), IndexError> {
        let (db, writer) = (self.db.clone(), self.writer.clone());
        tokio::task::spawn_blocking(move || durable(&db, &writer))
            .await
            .map_err(|e| IndexError::Io {
                path: "the index flush task".into(),
                source: std::io::Error::other(e),
            })?
    }

    /// A durable write of one record of [`META`] (`None` removes it), for the totals.
    pub fn put_meta_durably(&self, key: &[u8], value: Option<&[u8]>) -> Result<(), IndexError> {
        let mut w = self.writer.lock();
        let tx = self.db.begin_write()?;
        {
            let mut meta = tx.open_table(META)?;
            match value {
                Some(v) => {
                    meta.insert(key, v)?;
                }
                None => {
                    meta.remove(key)?;
                }
            }
        }
        tx.commit()?;
        w.pending = 0;
        w.totals_saved = value.is_some();
        Ok(())
    }
}

fn durable(db: &Database, writer: &Mutex<Writer>) -> Result<(), IndexError> {
    let mut w = writer.lock();
    if w.pending == 0 {
        return Ok(());
    }
    // An empty durable commit persists the non-durable ones before it.
    db.begin_write()?.commit()?;
    w.pending = 0;
    Ok(())
}

/// The database file of the index in `dir`.
pub(super) fn file_in(dir: &Path) -> PathBuf {
    dir.join(FILE)
}
