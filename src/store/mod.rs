//! Blob bytes on the local file system: temp files, atomic commit, reads, disk usage.
//!
//! Layout under `data_dir`: `blobs/<b3[0..2]>/<b3[2..4]>/<b3>` for committed blobs and
//! `tmp/<random>.part` for fills in progress. A blob becomes visible only by the rename that
//! follows a full fsync, so a crash leaves either the complete file or a temp file that the
//! next start-up deletes. Nothing derived from a URL or a file name is ever used as a path.

mod digest;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::num::NonZeroUsize;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lru::LruCache;
use parking_lot::Mutex;

pub use digest::{Algo, Digester, Digests, Expected};

/// Errors of the blob store; each names the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O failure on a file or directory of the store.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl StoreError {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        StoreError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    }

    /// What failed, without the server's path: for clients and `/readyz` (the log gets the
    /// whole error).
    pub fn reason(&self) -> String {
        let StoreError::Io { op, source, .. } = self;
        format!("{op}: {source}")
    }

    /// True when the failure means the volume is full or read-only (the store is unavailable,
    /// not the request malformed).
    pub fn is_out_of_space(&self) -> bool {
        let StoreError::Io { source, .. } = self;
        matches!(
            source.raw_os_error(),
            Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EROFS)
        )
    }
}

/// Result of committing a temp file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// The blob is new.
    New,
    /// A blob with the same content was already stored; the temp file was discarded.
    Existing,
}

/// Disk usage of the volume holding `data_dir`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DiskUsage {
    pub used_bytes: u64,
    pub total_bytes: u64,
}

impl DiskUsage {
    pub fn used_ratio(&self) -> f64 {
        if self.total_bytes == 0 {
            0.0
        } else {
            self.used_bytes as f64 / self.total_bytes as f64
        }
    }
}

/// The local blob store (the only tier with the fs backend, the L1 tier with s3/obs).
pub struct LocalStore {
    root: PathBuf,
    blobs: PathBuf,
    tmp: PathBuf,
    /// Open descriptors of recently served blobs, so a hit costs an `fstat` instead of
    /// `open` + `fstat` + `close` (nginx's `open_file_cache`).
    open_files: Mutex<LruCache<String, Arc<File>>>,
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore")
            .field("root", &self.root)
            .finish()
    }
}

/// Descriptors kept open at most (bounded by the process's file limit too).
const OPEN_FILES: usize = 1024;

impl LocalStore {
    /// Open (creating directories as needed) the store under `data_dir`.
    ///
    /// The caller must hold the data directory exclusively (the index lock does that) before
    /// calling [`LocalStore::remove_temp_files`].
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let store = LocalStore {
            root: data_dir.to_owned(),
            blobs: data_dir.join("blobs"),
            tmp: data_dir.join("tmp"),
            open_files: Mutex::new(LruCache::new(
                NonZeroUsize::new(open_files_capacity()).expect("at least 1"),
            )),
        };
        for dir in [&store.root, &store.blobs, &store.tmp] {
            fs::create_dir_all(dir).map_err(|e| StoreError::io("create directory", dir, e))?;
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Delete every temp file: leftovers of fills a crash interrupted. Returns how many.
    pub fn remove_temp_files(&self) -> Result<usize, StoreError> {
        let mut removed = 0;
        let entries = fs::read_dir(&self.tmp).map_err(|e| StoreError::io("list", &self.tmp, e))?;
        for entry in entries.flatten() {
            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io("remove temp file", &path, e)),
            }
        }
        Ok(removed)
    }

    /// Where the blob named `blake3` (64 lowercase hex, validated by the caller) lives.
    pub fn blob_path(&self, blake3: &str) -> PathBuf {
        debug_assert!(Algo::Blake3.normalize_hex(blake3).as_deref() == Some(blake3));
        self.blobs
            .join(&blake3[0..2])
            .join(&blake3[2..4])
            .join(blake3)
    }

    /// A new, empty temp file for a fill or an upload.
    pub fn create_temp(&self) -> Result<TempBlob, StoreError> {
        let name = format!("{}-{:016x}.part", std::process::id(), rand::random::<u64>());
        let path = self.tmp.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| StoreError::io("create temp file", &path, e))?;
        Ok(TempBlob {
            path,
            file: Arc::new(file),
            keep: false,
        })
    }

    /// Make a fully written temp file the blob `blake3`: fsync, rename, fsync the directory.
    /// Blocking; call from a blocking thread.
    pub fn commit(&self, mut temp: TempBlob, blake3: &str) -> Result<Committed, StoreError> {
        let dest = self.blob_path(blake3);
        if dest.exists() {
            // Same content already stored (another URL, or an upload): one copy is enough.
            return Ok(Committed::Existing);
        }
        temp.file
            .sync_all()
            .map_err(|e| StoreError::io("fsync", &temp.path, e))?;
        let shard = dest.parent().expect("blob path has a parent");
        if !shard.exists() {
            fs::create_dir_all(shard).map_err(|e| StoreError::io("create directory", shard, e))?;
            // The new shard directories must survive a crash too.
            sync_dir(shard.parent().expect("shard has a parent"))?;
            sync_dir(&self.blobs)?;
        }
        fs::rename(&temp.path, &dest).map_err(|e| StoreError::io("rename", &dest, e))?;
        temp.keep = true;
        sync_dir(shard)?;
        Ok(Committed::New)
    }

    /// Open a committed blob for reading (shared, position-free: use `pread`/`sendfile`
    /// with offsets); `None` if its file is gone.
    pub fn open_blob(&self, blake3: &str) -> Result<Option<(Arc<File>, u64)>, StoreError> {
        use std::os::unix::fs::MetadataExt;
        let cached = self.open_files.lock().get(blake3).cloned();
        if let Some(file) = cached {
            // Still linked? A blob deleted behind our back must not be served (nor keep
            // its disk space) just because we hold a descriptor.
            if let Ok(meta) = file.metadata() {
                if meta.nlink() > 0 {
                    return Ok(Some((file, meta.len())));
                }
            }
            self.open_files.lock().pop(blake3);
        }
        let path = self.blob_path(blake3);
        match File::open(&path) {
            Ok(file) => {
                let len = file
                    .metadata()
                    .map_err(|e| StoreError::io("stat", &path, e))?
                    .len();
                let file = Arc::new(file);
                self.open_files.lock().put(blake3.to_owned(), file.clone());
                Ok(Some((file, len)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("open", &path, e)),
        }
    }

    pub fn exists(&self, blake3: &str) -> bool {
        self.blob_path(blake3).exists()
    }

    /// Delete a blob file (missing is fine).
    pub fn remove(&self, blake3: &str) -> Result<(), StoreError> {
        self.open_files.lock().pop(blake3);
        let path = self.blob_path(blake3);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io("remove", &path, e)),
        }
    }

    /// Call `visit` with the name (blake3) of each blob file on disk, one directory at a time,
    /// without collecting them (a directory walk: for reconciliation, rebuilds and sweeps, not
    /// for serving). Names that are not a BLAKE3 digest are skipped.
    pub fn visit_blob_files<E: From<StoreError>>(
        &self,
        mut visit: impl FnMut(&str) -> Result<(), E>,
    ) -> Result<(), E> {
        let read = |dir: &Path| fs::read_dir(dir).map_err(|e| StoreError::io("list", dir, e));
        for l1 in read(&self.blobs)?.flatten() {
            if !l1.path().is_dir() {
                continue;
            }
            for l2 in read(&l1.path())?.flatten() {
                if !l2.path().is_dir() {
                    continue;
                }
                for f in read(&l2.path())?.flatten() {
                    let name = f.file_name().to_string_lossy().into_owned();
                    if Algo::Blake3.normalize_hex(&name).as_deref() == Some(name.as_str()) {
                        visit(&name)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Re-hash a stored blob from disk (for scrubs and rebuilds). Blocking.
    pub fn hash_blob(&self, blake3: &str) -> Result<(Digests, u64), StoreError> {
        use std::io::Read;
        let path = self.blob_path(blake3);
        let mut f = File::open(&path).map_err(|e| StoreError::io("open", &path, e))?;
        let mut d = Digester::new();
        let mut buf = vec![0u8; 1024 * 1024];
        loop {
            let n = f
                .read(&mut buf)
                .map_err(|e| StoreError::io("read", &path, e))?;
            if n == 0 {
                break;
            }
            d.update(&buf[..n]);
        }
        let len = d.len();
        Ok((d.finish(), len))
    }

    /// Move a blob whose bytes do not match its name out of the store, to
    /// `data_dir/quarantine/<blake3>.<unix time>`, for inspection. Returns the new path.
    pub fn quarantine(&self, blake3: &str) -> Result<PathBuf, StoreError> {
        let dest = self.quarantine_path(blake3);
        self.quarantine_to(blake3, &dest)?;
        Ok(dest)
    }

    /// Where [`LocalStore::quarantine`] would move a blob's file now.
    pub fn quarantine_path(&self, blake3: &str) -> PathBuf {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.root
            .join("quarantine")
            .join(format!("{blake3}.{secs}"))
    }

    /// Move a blob's file to `dest` (from [`LocalStore::quarantine_path`]).
    pub fn quarantine_to(&self, blake3: &str, dest: &Path) -> Result<(), StoreError> {
        self.open_files.lock().pop(blake3);
        let dir = dest.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(|e| StoreError::io("create directory", dir, e))?;
        let src = self.blob_path(blake3);
        fs::rename(&src, dest).map_err(|e| StoreError::io("quarantine", &src, e))?;
        Ok(())
    }

    /// Temp files not in `active` and not modified for `older_than`: leftovers to delete.
    pub fn stale_temp_files(
        &self,
        older_than: std::time::Duration,
        active: &std::collections::HashSet<PathBuf>,
    ) -> Result<Vec<PathBuf>, StoreError> {
        let now = std::time::SystemTime::now();
        let entries = fs::read_dir(&self.tmp).map_err(|e| StoreError::io("list", &self.tmp, e))?;
        Ok(entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| !active.contains(p))
            .filter(|p| {
                fs::metadata(p)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| now.duration_since(t).unwrap_or_default() >= older_than)
            })
            .collect())
    }

    /// Modification time of a blob file (its arrival, for orphans and rebuilds).
    pub fn blob_mtime(&self, blake3: &str) -> Option<std::time::SystemTime> {
        fs::metadata(self.blob_path(blake3))
            .and_then(|m| m.modified())
            .ok()
    }

    /// Write, fsync and delete a small file: proves the volume accepts writes (`/readyz`).
    pub fn write_probe(&self) -> Result<(), StoreError> {
        write_probe_in(&self.tmp)
    }

    /// Where temp files (and the write probe) go.
    pub fn temp_dir(&self) -> &Path {
        &self.tmp
    }

    /// statvfs of the volume holding `data_dir`.
    pub fn disk_usage(&self) -> Result<DiskUsage, StoreError> {
        statvfs(&self.root).map_err(|e| StoreError::io("statvfs", &self.root, e))
    }
}

/// Write, fsync and delete a small file in `dir`: proves the volume accepts writes. A free
/// function so a background prober can run it without holding the store.
pub fn write_probe_in(dir: &Path) -> Result<(), StoreError> {
    let path = dir.join(format!(".probe-{}", std::process::id()));
    let result = (|| {
        let f = File::create(&path)?;
        f.write_all_at(b"probe", 0)?;
        f.sync_all()
    })();
    let _ = fs::remove_file(&path);
    result.map_err(|e| StoreError::io("write probe", &path, e))
}

/// A temp file being filled. Dropping it without a successful commit deletes the file, so
/// every early return or failed fill cleans up after itself.
#[derive(Debug)]
pub struct TempBlob {
    path: PathBuf,
    file: Arc<File>,
    keep: bool,
}

impl TempBlob {
    /// The open file, shared with readers that follow the fill (`pread` is position-free,
    /// and the descriptor stays valid across the final rename).
    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write `data` at `offset`. Blocking (page cache in the common case).
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), StoreError> {
        self.file
            .write_all_at(data, offset)
            .map_err(|e| StoreError::io("write", &self.path, e))
    }

    /// Drop everything after `len` (a retried download restarting part-way).
    pub fn truncate(&self, len: u64) -> Result<(), StoreError> {
        self.file
            .set_len(len)
            .map_err(|e| StoreError::io("truncate", &self.path, e))
    }
}

impl Drop for TempBlob {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A tenth of the process's file-descriptor limit, at most [`OPEN_FILES`]: connections need
/// descriptors more.
fn open_files_capacity() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur as usize
    } else {
        1024
    };
    (soft / 10).clamp(1, OPEN_FILES)
}

/// A temp file being written in one pass: every byte appended is hashed on the way, so the
/// digests are known the moment the last byte is written. Fills and uploads both use it.
pub struct TempWriter {
    temp: TempBlob,
    digester: Digester,
}

impl TempWriter {
    pub fn new(temp: TempBlob) -> Self {
        TempWriter {
            temp,
            digester: Digester::new(),
        }
    }

    /// Append `data` (blocking: page-cache writes in the common case).
    pub fn append(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.temp.write_at(self.digester.len(), data)?;
        self.digester.update(data);
        Ok(())
    }

    /// Bytes written (and hashed) so far.
    pub fn len(&self) -> u64 {
        self.digester.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digester.is_empty()
    }

    pub fn temp(&self) -> &TempBlob {
        &self.temp
    }

    /// The temp file, ready for [`LocalStore::commit`], and the digests of its bytes.
    pub fn finish(self) -> (TempBlob, Digests, u64) {
        let len = self.digester.len();
        (self.temp, self.digester.finish(), len)
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io("fsync directory", dir, e))
}

fn statvfs(path: &Path) -> io::Result<DiskUsage> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let frsize = st.f_frsize as u64;
    // As df computes Use%: used / (used + available to unprivileged writers). Blocks
    // reserved for root count neither way.
    let used = (st.f_blocks as u64).saturating_sub(st.f_bfree as u64) * frsize;
    let avail = st.f_bavail as u64 * frsize;
    Ok(DiskUsage {
        used_bytes: used,
        total_bytes: used + avail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(data: &[u8]) -> Digests {
        let mut d = Digester::new();
        d.update(data);
        d.finish()
    }

    #[test]
    fn commit_makes_blob_visible_and_dedupes() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let d = digest_of(b"abc");
        let t = store.create_temp().unwrap();
        t.write_at(0, b"abc").unwrap();
        let temp_path = t.path().to_owned();
        assert!(!store.exists(&d.blake3));
        assert_eq!(store.commit(t, &d.blake3).unwrap(), Committed::New);
        assert!(store.exists(&d.blake3));
        assert!(!temp_path.exists());
        let (f, len) = store.open_blob(&d.blake3).unwrap().unwrap();
        assert_eq!(len, 3);
        let mut buf = [0u8; 3];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"abc");

        let t2 = store.create_temp().unwrap();
        t2.write_at(0, b"abc").unwrap();
        let p2 = t2.path().to_owned();
        assert_eq!(store.commit(t2, &d.blake3).unwrap(), Committed::Existing);
        assert!(!p2.exists(), "duplicate temp file is removed");
    }

    #[test]
    fn dropped_temp_is_removed_and_startup_cleans_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let t = store.create_temp().unwrap();
        let p = t.path().to_owned();
        drop(t);
        assert!(!p.exists());
        fs::write(dir.path().join("tmp/123-abc.part"), b"partial").unwrap();
        assert_eq!(store.remove_temp_files().unwrap(), 1);
    }

    #[test]
    fn probe_and_usage() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        store.write_probe().unwrap();
        let u = store.disk_usage().unwrap();
        assert!(u.total_bytes > 0 && u.used_ratio() <= 1.0);
    }
}
