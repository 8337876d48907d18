//! A stored blob's lifecycle: every change of its [`Placement`] (and its removal) in one
//! place, each in the same order: the journal first (the durable record the index is rebuilt
//! from), then the index, then the store. A crash between two steps leaves what start-up
//! reconciliation repairs: a journaled deletion or eviction whose file is still there is
//! removed, a file the index does not know is re-hashed and adopted or quarantined.
//!
//! Committing new bytes is the one operation in the other order (the file must be durable
//! before anything points at it): `Cache::commit_blob`.
//!
//! ```text
//!   Local --replicated--> Replicated --drop_local--> RemoteOnly
//!                              ^                          |
//!                              +------restore_local-------+
//!   any --evict--> Evicted (a new binding revives it, Local)
//!   any --delete / quarantine / forget--> (no record)
//! ```

use std::path::PathBuf;

use crate::audit::{Event, Journal};
use crate::error::Error;
pub use crate::index::Placement;
use crate::index::{BlobMeta, Index};
use crate::store::{Digests, LocalStore};

/// Who did something, for the audit trail.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    pub name: Option<String>,
    pub client: Option<String>,
}

impl Actor {
    pub(crate) fn stamp(&self, event: &mut Event) {
        event.actor = self.name.clone();
        event.client = self.client.clone();
    }
}

/// What [`Lifecycle::trim`] did to a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trimmed {
    /// The bucket holds it: only the local copy went, its URLs stay hits.
    DroppedLocal,
    /// Evicted: the bytes are gone, its URLs are misses again.
    Evicted,
}

/// The lifecycle operations over the journal, index and store of one data directory.
/// Blocking (fsyncs, renames): call it on a blocking thread.
#[derive(Clone, Copy)]
pub struct Lifecycle<'a> {
    pub journal: &'a Journal,
    pub index: &'a Index,
    pub store: &'a LocalStore,
}

impl Lifecycle<'_> {
    /// Evict a blob: journal `evicted` (with `detail`), mark it evicted in the index (its
    /// URLs become misses, its history stays), remove its file. Readers that have the file
    /// open finish normally (unlink keeps open files).
    pub fn evict(&self, digests: &Digests, size: u64, detail: String) -> Result<(), Error> {
        let mut event = Event::new("evicted").with_digests(digests, size);
        event.detail = Some(detail);
        self.journal.append(event)?;
        self.index.evict(&digests.blake3)?;
        self.store.remove(&digests.blake3)?;
        Ok(())
    }

    /// Free a blob's local bytes, the sweeper's way: a blob the bucket holds only leaves the
    /// local tier ([`Lifecycle::drop_local`]); any other is evicted.
    pub fn trim(&self, meta: &BlobMeta, why: &str) -> Result<Trimmed, Error> {
        if meta.placement.in_bucket() {
            self.drop_local(meta.blake3())?;
            Ok(Trimmed::DroppedLocal)
        } else {
            self.evict(&meta.digests, meta.size, why.to_owned())?;
            Ok(Trimmed::Evicted)
        }
    }

    /// [`Lifecycle::trim`] for many blobs, with one journal write (one fsync) for all the
    /// evictions and one index transaction: journal, then index, then files, for the batch as a
    /// whole.
    pub fn trim_batch(&self, metas: &[BlobMeta], why: &str) -> Result<(), Error> {
        let (remote, local): (Vec<&BlobMeta>, Vec<&BlobMeta>) =
            metas.iter().partition(|m| m.placement.in_bucket());
        for meta in remote {
            self.drop_local(meta.blake3())?;
        }
        let events = local
            .iter()
            .map(|meta| {
                let mut event = Event::new("evicted").with_digests(&meta.digests, meta.size);
                event.detail = Some(why.to_owned());
                event
            })
            .collect();
        self.journal.append_batch(events)?;
        let blake3s: Vec<&str> = local.iter().map(|m| m.blake3()).collect();
        self.index.evict_all(&blake3s)?;
        for meta in &local {
            self.store.remove(meta.blake3())?;
        }
        Ok(())
    }

    /// s3/obs: the bucket holds a replicated blob; remove the local copy. Nothing is
    /// journaled (the blob is still stored, in the bucket). A blob the bucket does not hold
    /// is left alone (its local copy is the only one). Returns the blob as now recorded.
    pub fn drop_local(&self, blake3: &str) -> Result<Option<BlobMeta>, Error> {
        let meta = self.index.set_placement(blake3, |p| match p {
            Placement::Replicated => Placement::RemoteOnly,
            other => other,
        })?;
        if meta
            .as_ref()
            .is_some_and(|m| m.placement == Placement::RemoteOnly)
        {
            self.store.remove(blake3)?;
        }
        Ok(meta)
    }

    /// s3/obs: the bucket now holds the blob (uploaded and confirmed). A blob not in the
    /// bucket before becomes [`Placement::Replicated`]; the others keep their placement.
    pub fn replicated(&self, blake3: &str) -> Result<Option<BlobMeta>, Error> {
        Ok(self.index.set_placement(blake3, |p| match p {
            Placement::Local => Placement::Replicated,
            other => other,
        })?)
    }

    /// s3/obs: the local copy of a bucket-only blob is back (the caller committed the file
    /// first, as for any new bytes).
    pub fn restore_local(&self, blake3: &str) -> Result<Option<BlobMeta>, Error> {
        Ok(self.index.set_placement(blake3, |p| match p {
            Placement::RemoteOnly => Placement::Replicated,
            other => other,
        })?)
    }

    /// Pin or unpin a blob: journal, then index. `None` if there is no such blob.
    pub fn pin(&self, blake3: &str, pinned: bool, who: &Actor) -> Result<Option<BlobMeta>, Error> {
        let Some(meta) = self.index.blob(blake3)? else {
            return Ok(None);
        };
        let mut event = Event::new(if pinned { "pinned" } else { "unpinned" })
            .with_digests(&meta.digests, meta.size);
        who.stamp(&mut event);
        self.journal.append(event)?;
        Ok(Some(self.index.set_pinned(blake3, pinned)?.unwrap_or(meta)))
    }

    /// Delete a blob and its URL bindings: journal `deleted` (naming its URLs), then the
    /// index, then the file. `None` if there is no such blob.
    pub fn delete(&self, blake3: &str, who: &Actor) -> Result<Option<BlobMeta>, Error> {
        let Some(meta) = self.index.blob(blake3)? else {
            return Ok(None);
        };
        let mut event = Event::new("deleted").with_digests(&meta.digests, meta.size);
        event.detail = Some(format!("urls: {}", self.index.urls_of(blake3)?.join(" ")));
        who.stamp(&mut event);
        self.journal.append(event)?;
        self.index.remove_blob(blake3)?;
        self.store.remove(blake3)?;
        Ok(Some(meta))
    }

    /// A stored blob's bytes hash to `actual` (`size` bytes): journal `integrity_failed`,
    /// drop it from the index (the next request refetches it), move the file to quarantine.
    /// Returns where the file went.
    pub fn quarantine(
        &self,
        meta: &BlobMeta,
        actual: &Digests,
        size: u64,
    ) -> Result<PathBuf, Error> {
        let b3 = meta.blake3();
        let dest = self.store.quarantine_path(b3);
        let mut event = Event::new("integrity_failed").with_digests(&meta.digests, meta.size);
        event.detail = Some(format!(
            "stored bytes hash to blake3 {} ({size} bytes); moved to {}",
            actual.blake3,
            dest.display()
        ));
        self.journal.append(event)?;
        self.index.remove_blob(b3)?;
        self.store.quarantine_to(b3, &dest)?;
        Ok(dest)
    }

    /// Forget a blob whose bytes are gone from everywhere we could serve it (its file
    /// vanished behind our back, or the bucket lost it): no journal event (nothing was
    /// decided here), the index entry and its URLs go, so they are misses again.
    pub fn forget(&self, blake3: &str) -> Result<Option<BlobMeta>, Error> {
        Ok(self.index.remove_blob(blake3)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{Origin, UrlRecord};
    use crate::store::{Digester, TempWriter};

    struct Dir {
        _tmp: tempfile::TempDir,
        journal: Journal,
        index: Index,
        store: LocalStore,
    }

    impl Dir {
        fn new() -> Dir {
            let tmp = tempfile::tempdir().unwrap();
            let store = LocalStore::open(tmp.path()).unwrap();
            let journal = Journal::open(&tmp.path().join("journal.jsonl"), "t").unwrap();
            let index = Index::open(&tmp.path().join("index"), 10).unwrap();
            Dir {
                _tmp: tmp,
                journal,
                index,
                store,
            }
        }

        fn lc(&self) -> Lifecycle<'_> {
            Lifecycle {
                journal: &self.journal,
                index: &self.index,
                store: &self.store,
            }
        }

        /// Store `content` bound to `url`, with `placement`.
        fn blob(&self, content: &[u8], url: &str, placement: Placement) -> BlobMeta {
            let mut d = Digester::new();
            d.update(content);
            let digests = d.finish();
            let mut w = TempWriter::new(self.store.create_temp().unwrap());
            w.append(content).unwrap();
            let (temp, _, _) = w.finish();
            self.store.commit(temp, &digests.blake3).unwrap();
            let meta = BlobMeta {
                placement,
                ..BlobMeta::new(digests.clone(), content.len() as u64, Origin::Upstream, 1)
            };
            let record = UrlRecord {
                url: url.into(),
                blake3: digests.blake3.clone(),
                status: 200,
                content_type: None,
                etag: None,
                last_modified: None,
                final_url: url.into(),
                fetched_at: 1,
                instance: "t".into(),
            };
            self.index.bind(&meta, &record).unwrap();
            meta
        }

        fn events(&self) -> Vec<String> {
            self.journal
                .read_all()
                .unwrap()
                .into_iter()
                .map(|e| e.event)
                .collect()
        }

        fn placement(&self, b3: &str) -> Option<Placement> {
            self.index.blob(b3).unwrap().map(|m| m.placement)
        }
    }

    #[test]
    fn trimming_evicts_a_local_blob_and_only_drops_the_local_copy_of_a_replicated_one() {
        let d = Dir::new();
        let local = d.blob(b"local", "http://h/l", Placement::Local);
        let repl = d.blob(b"replicated", "http://h/r", Placement::Local);
        d.lc().replicated(repl.blake3()).unwrap();
        let repl = d.index.blob(repl.blake3()).unwrap().unwrap();
        assert_eq!(repl.placement, Placement::Replicated);
        let before = d.index.stats();

        assert_eq!(d.lc().trim(&local, "why").unwrap(), Trimmed::Evicted);
        assert_eq!(d.placement(local.blake3()), Some(Placement::Evicted));
        assert!(!d.store.exists(local.blake3()));
        assert!(d.index.url("http://h/l").unwrap().is_none(), "a miss again");

        assert_eq!(d.lc().trim(&repl, "why").unwrap(), Trimmed::DroppedLocal);
        assert_eq!(d.placement(repl.blake3()), Some(Placement::RemoteOnly));
        assert!(!d.store.exists(repl.blake3()));
        let hit = d.index.url("http://h/r").unwrap().unwrap();
        assert_eq!(hit.blob.placement, Placement::RemoteOnly, "still a hit");
        assert_eq!(d.events(), ["evicted"], "dropping a local copy is no event");
        assert_eq!(
            d.index.stats().bytes,
            before.bytes - local.size - repl.size,
            "neither counts against the local tier"
        );

        // Back into the local tier, and published again: still replicated.
        d.lc().restore_local(repl.blake3()).unwrap();
        assert_eq!(d.placement(repl.blake3()), Some(Placement::Replicated));
        d.lc().replicated(repl.blake3()).unwrap();
        assert_eq!(d.placement(repl.blake3()), Some(Placement::Replicated));
        assert_eq!(d.index.stats().bytes, before.bytes - local.size);
    }

    #[test]
    fn dropping_the_local_copy_of_a_blob_the_bucket_lacks_keeps_it() {
        let d = Dir::new();
        let local = d.blob(b"only here", "http://h/x", Placement::Local);
        d.lc().drop_local(local.blake3()).unwrap();
        assert_eq!(d.placement(local.blake3()), Some(Placement::Local));
        assert!(d.store.exists(local.blake3()), "the only copy stays");
        // An evicted blob is not revived by a placement change.
        d.lc()
            .evict(&local.digests, local.size, "x".into())
            .unwrap();
        d.lc().replicated(local.blake3()).unwrap();
        d.lc().restore_local(local.blake3()).unwrap();
        assert_eq!(d.placement(local.blake3()), Some(Placement::Evicted));
    }

    #[test]
    fn delete_pin_quarantine_and_forget_journal_before_they_change_anything() {
        let d = Dir::new();
        let who = Actor {
            name: Some("admin".into()),
            client: Some("127.0.0.1".into()),
        };
        let a = d.blob(b"a", "http://h/a", Placement::Local);
        let b = d.blob(b"b", "http://h/b", Placement::Local);
        let c = d.blob(b"c", "http://h/c", Placement::Local);

        assert!(d.lc().pin(a.blake3(), true, &who).unwrap().unwrap().pinned);
        assert!(d.index.blob(a.blake3()).unwrap().unwrap().pinned);
        assert!(!d.lc().pin(a.blake3(), false, &who).unwrap().unwrap().pinned);

        d.lc().delete(a.blake3(), &who).unwrap().unwrap();
        assert_eq!(d.placement(a.blake3()), None);
        assert!(!d.store.exists(a.blake3()));
        assert!(d.lc().delete(a.blake3(), &who).unwrap().is_none());
        assert!(d.lc().pin(a.blake3(), true, &who).unwrap().is_none());

        let path = d.lc().quarantine(&b, &c.digests, 1).unwrap();
        assert!(path.exists() && !d.store.exists(b.blake3()));
        assert_eq!(d.placement(b.blake3()), None);

        d.lc().forget(c.blake3()).unwrap();
        assert_eq!(d.placement(c.blake3()), None);
        assert!(d.index.url("http://h/c").unwrap().is_none());

        let events = d.journal.read_all().unwrap();
        let kinds: Vec<_> = events.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(kinds, ["pinned", "unpinned", "deleted", "integrity_failed"]);
        assert_eq!(events[2].actor.as_deref(), Some("admin"));
        assert_eq!(events[2].detail.as_deref(), Some("urls: http://h/a"));
        assert!(
            events[3]
                .detail
                .as_ref()
                .is_some_and(|t| t.contains(&path.display().to_string())),
            "{:?}",
            events[3].detail
        );
    }

    #[test]
    fn a_failed_journal_write_changes_nothing() {
        let d = Dir::new();
        let a = d.blob(b"a", "http://h/a", Placement::Local);
        // Every write to /dev/full fails (ENOSPC): a full journal volume.
        let full = Journal::open(std::path::Path::new("/dev/full"), "t").unwrap();
        let lc = Lifecycle {
            journal: &full,
            ..d.lc()
        };
        let who = Actor::default();
        assert!(lc.delete(a.blake3(), &who).is_err());
        assert!(lc.evict(&a.digests, a.size, "x".into()).is_err());
        assert!(lc.trim(&a, "x").is_err());
        assert!(lc.pin(a.blake3(), true, &who).is_err());
        assert!(lc.quarantine(&a, &a.digests, 1).is_err());
        let m = d.index.blob(a.blake3()).unwrap().unwrap();
        assert_eq!((m.placement, m.pinned), (Placement::Local, false));
        assert!(d.store.exists(a.blake3()));
    }
}
