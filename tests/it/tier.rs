//! The storage-tier conformance suite: one set of cases, each run against the local-only
//! tier (`backend = "fs"`) and the bucket tier on a real S3 server (moto, as in `s3.rs`),
//! through the library API (`upcache::cache::Cache` + `upcache::tier`): store a blob, open
//! it for serving (File, Redirect or Stream as configured), drop the local copy and get it
//! back, delete it, a missing blob, and a blob whose bytes are corrupt in the tier.

use std::sync::Arc;
use std::time::Duration;

use upcache::audit::Event;
use upcache::cache::{Actor, Cache};
use upcache::config::ServeMode;
use upcache::index::{BlobMeta, Origin, Placement, UrlRecord};
use upcache::store::{Digester, TempWriter};
use upcache::tier::{DynTier, Serving};

use crate::common::fixtures::eventually;
use crate::common::s3::*;
use crate::common::upstream::random_bytes;

/// Which tier a case runs against.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Fs,
    /// The bucket, blobs streamed through (`serve = "stream"`).
    Bucket,
    /// The bucket, presigned redirects (`serve = "redirect"`).
    Redirect,
}

const KINDS: [Kind; 3] = [Kind::Fs, Kind::Bucket, Kind::Redirect];

/// A cache and its tier over a temp data directory (and, for the bucket, a moto server).
struct Rig {
    kind: Kind,
    cache: Arc<Cache>,
    tier: DynTier,
    s3: Option<Arc<S3Server>>,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn open(kind: Kind) -> Rig {
        let s3 = (kind != Kind::Fs).then(|| Arc::new(S3Server::start()));
        Rig::on(kind, s3).await
    }

    /// Another instance sharing `self`'s bucket (fs: a tier of its own).
    async fn another(&self) -> Rig {
        Rig::on(self.kind, self.s3.clone()).await
    }

    async fn on(kind: Kind, s3: Option<Arc<S3Server>>) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = upcache::Config::default();
        cfg.storage.data_dir = dir.path().to_owned();
        if let Some(s3) = &s3 {
            s3.configure(&mut cfg, "conformance");
        }
        if kind == Kind::Redirect {
            cfg.storage.serve = ServeMode::Redirect;
        }
        let bucket = s3
            .as_ref()
            .map(|_| upcache::remote::Remote::new(&cfg.storage, cfg.cache.index_refresh).unwrap());
        let rt = tokio::runtime::Handle::current();
        let (clock, alerts) = (
            upcache::time::Clock::system(),
            upcache::alerts::Alerter::off(),
        );
        let cache = Cache::open(Arc::new(cfg), rt, clock, alerts).unwrap().cache;
        let tier = upcache::tier::open(&cache, bucket, Default::default(), Default::default());
        tier.start().unwrap();
        Rig {
            kind,
            cache,
            tier,
            s3,
            _dir: dir,
        }
    }

    /// Commit `content` under `url` and hand it to the tier; wait until it is published.
    async fn store(&self, url: &str, content: &[u8]) -> BlobMeta {
        let mut d = Digester::new();
        d.update(content);
        let digests = d.finish();
        let mut w = TempWriter::new(self.cache.store.create_temp().unwrap());
        w.append(content).unwrap();
        let (temp, _, size) = w.finish();
        let meta = BlobMeta::new(digests.clone(), size, Origin::Upstream, 1);
        let record = UrlRecord {
            url: url.to_owned(),
            blake3: digests.blake3.clone(),
            status: 200,
            content_type: None,
            etag: None,
            last_modified: None,
            final_url: url.to_owned(),
            fetched_at: 1,
            instance: "conformance".into(),
        };
        let event = Event::new("fetched").with_digests(&digests, size);
        let (stored, new) = self
            .cache
            .commit_blob(temp, meta, Some(record), event)
            .await
            .unwrap();
        assert!(new, "{:?}: the bytes are new", self.kind);
        self.tier.stored(stored.blake3());
        tokio::time::timeout(Duration::from_secs(30), self.tier.wait_published())
            .await
            .expect("publishing ends");
        self.meta(stored.blake3()).expect("stored")
    }

    fn meta(&self, b3: &str) -> Option<BlobMeta> {
        self.cache.index.blob(b3).unwrap().filter(|m| m.is_stored())
    }

    /// Open `meta` for serving and read all of it, as the HTTP layer would: the file, the
    /// redirect's target, or the stream. `None`: the tier no longer has it.
    async fn read(&self, meta: &BlobMeta) -> Option<Result<(Served, Vec<u8>), String>> {
        let serving = self.tier.clone().open_for_serving(meta).await.unwrap()?;
        Some(match serving {
            Serving::File(file) => {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0; meta.size as usize];
                file.read_exact_at(&mut buf, 0).unwrap();
                Ok((Served::File, buf))
            }
            Serving::Redirect(url) => {
                let r = reqwest::get(&url).await.unwrap();
                if r.status() != 200 {
                    return Some(Err(format!(
                        "the redirect's target answered {}",
                        r.status()
                    )));
                }
                Ok((Served::Redirect, r.bytes().await.unwrap().to_vec()))
            }
            Serving::Stream(streamer) => {
                use futures::StreamExt;
                let mut body = streamer.body(0, meta.size).await.unwrap()?;
                let mut got = Vec::new();
                while let Some(piece) = body.next().await {
                    match piece {
                        Ok(p) => got.extend_from_slice(&p),
                        Err(e) => return Some(Err(e.to_string())),
                    }
                }
                Ok((Served::Stream, got))
            }
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Served {
    File,
    Redirect,
    Stream,
}

/// Run `case` against every tier.
async fn each(case: impl AsyncFn(Rig)) {
    for kind in KINDS {
        case(Rig::open(kind).await).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_blob_is_served_as_configured() {
    each(async |rig: Rig| {
        let body = random_bytes(300_000, 1);
        let meta = rig.store("http://h/a.tar.gz", &body).await;
        let expected = match rig.kind {
            Kind::Fs => (Placement::Local, Served::File),
            Kind::Bucket => (Placement::Replicated, Served::File),
            Kind::Redirect => (Placement::Replicated, Served::Redirect),
        };
        let (served, got) = rig.read(&meta).await.expect("stored").unwrap();
        assert_eq!((meta.placement, served), expected, "{:?}", rig.kind);
        assert!(
            got == body,
            "{:?}: the bytes served are the bytes stored",
            rig.kind
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_whose_local_copy_went_comes_back_only_from_a_bucket() {
    each(async |rig: Rig| {
        let body = random_bytes(200_000, 2);
        let meta = rig.store("http://h/b.tar.gz", &body).await;
        let b3 = meta.blake3().to_owned();
        rig.cache.lifecycle().trim_batch(&[meta], "test").unwrap();
        assert!(
            !rig.cache.store.exists(&b3),
            "{:?}: the local copy went",
            rig.kind
        );
        let now = rig.cache.index.blob(&b3).unwrap().unwrap();
        match rig.kind {
            Kind::Fs => {
                // Evicted: the only copy is gone, its URLs are misses again.
                assert!(now.placement.is_evicted());
                assert!(rig.meta(&b3).is_none());
            }
            Kind::Bucket | Kind::Redirect => {
                assert_eq!(now.placement, Placement::RemoteOnly);
                let (served, got) = rig.read(&now).await.expect("in the bucket").unwrap();
                let via = match rig.kind {
                    Kind::Redirect => Served::Redirect,
                    _ => Served::Stream,
                };
                assert_eq!(served, via);
                assert!(got == body, "{:?}: the bucket's bytes", rig.kind);
                if rig.kind == Kind::Bucket {
                    // Streamed whole: copied back into the local tier on the way.
                    eventually("the copy back into the local tier", async || {
                        (rig.cache.store.exists(&b3)
                            && rig.meta(&b3).unwrap().placement == Placement::Replicated)
                            .then_some(())
                    })
                    .await;
                }
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_blob_is_gone_from_the_tier_and_the_cache() {
    each(async |rig: Rig| {
        let body = random_bytes(50_000, 3);
        let meta = rig.store("http://h/c.tar.gz", &body).await;
        let b3 = meta.blake3().to_owned();
        let urls = rig.cache.index.urls_of(&b3).unwrap();
        rig.tier.delete(&meta, urls).await.unwrap();
        rig.cache
            .lifecycle()
            .delete(&b3, &Actor::default())
            .unwrap()
            .expect("it was stored");
        assert!(rig.meta(&b3).is_none() && !rig.cache.store.exists(&b3));
        match (rig.kind, rig.read(&meta).await) {
            (Kind::Fs | Kind::Bucket, None) => {}
            // A presigned URL is made without asking the bucket: its target is gone.
            (Kind::Redirect, Some(Err(e))) => assert!(e.contains("404"), "{e}"),
            (kind, other) => panic!("{kind:?}: {:?}", other.map(|r| r.map(|(s, _)| s))),
        }
        // Another instance on the same tier learns nothing of it.
        let other = rig.another().await;
        other
            .tier
            .learn_checksum(upcache::store::Algo::Blake3, &b3)
            .await
            .unwrap();
        assert!(
            other.meta(&b3).is_none(),
            "{:?}: deleted in the tier",
            rig.kind
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_learns_a_published_blob_only_from_a_bucket() {
    each(async |rig: Rig| {
        let body = random_bytes(10_000, 4);
        let meta = rig.store("http://h/d.tar.gz", &body).await;
        let other = rig.another().await;
        let url = upcache::url::UpstreamUrl::parse("http://h/d.tar.gz").unwrap();
        other.tier.learn_url(&url).await.unwrap();
        let learned = other.cache.index.url(url.as_str()).unwrap();
        match rig.kind {
            Kind::Fs => assert!(learned.is_none(), "a local tier shares nothing"),
            _ => {
                let entry = learned.expect("the shared index has it");
                assert_eq!(entry.blob.blake3(), meta.blake3());
                assert_eq!(entry.blob.placement, Placement::RemoteOnly);
                let (_, got) = other.read(&entry.blob).await.expect("served").unwrap();
                assert!(got == body);
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_blob_is_not_served_and_its_entry_goes() {
    each(async |rig: Rig| {
        let body = random_bytes(20_000, 5);
        let meta = rig.store("http://h/e.tar.gz", &body).await;
        let b3 = meta.blake3().to_owned();
        // Gone behind our back: the local file, and (bucket) the bucket's copy too.
        if let Some(s3) = &rig.s3 {
            let op = s3.operator("conformance");
            op.delete(&blob_key(&b3)).await.unwrap();
            rig.cache.lifecycle().drop_local(&b3).unwrap();
        } else {
            std::fs::remove_file(rig.cache.store.blob_path(&b3)).unwrap();
        }
        let now = rig.cache.index.blob(&b3).unwrap().unwrap();
        match (rig.kind, rig.read(&now).await) {
            (Kind::Fs | Kind::Bucket, None) => {
                assert!(
                    rig.meta(&b3).is_none(),
                    "{:?}: its entry is dropped",
                    rig.kind
                );
            }
            // A presigned URL is made without asking the bucket: what it points at is gone.
            (Kind::Redirect, Some(Err(e))) => assert!(e.contains("404"), "{e}"),
            (kind, other) => panic!("{kind:?}: {:?}", other.map(|r| r.map(|(s, _)| s))),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_bytes_in_the_tier_are_never_served_as_good() {
    each(async |rig: Rig| {
        let body = random_bytes(100_000, 6);
        let meta = rig.store("http://h/f.tar.gz", &body).await;
        let b3 = meta.blake3().to_owned();
        let garbage = vec![0x5a; body.len()];
        match rig.kind {
            Kind::Fs => {
                // The local tier's bytes are checked by the scrub, which quarantines them.
                std::fs::write(rig.cache.store.blob_path(&b3), &garbage).unwrap();
                assert!(upcache::sweeper::check_blob(&rig.cache, &meta).unwrap());
                assert!(rig.meta(&b3).is_none());
                assert!(rig.read(&meta).await.is_none());
            }
            Kind::Bucket | Kind::Redirect => {
                let op = rig.s3.as_ref().unwrap().operator("conformance");
                op.write(&blob_key(&b3), garbage).await.unwrap();
                let now = rig.cache.lifecycle().drop_local(&b3).unwrap().unwrap();
                if rig.kind == Kind::Redirect {
                    // The client gets the bucket's bytes directly; the blake3 in the URL
                    // is what it verifies. Nothing is copied into the local tier.
                    let (served, got) = rig.read(&now).await.unwrap().unwrap();
                    assert_eq!(served, Served::Redirect);
                    assert!(got != body);
                } else {
                    // The stream fails before its last byte, and nothing is kept locally.
                    let read = rig.read(&now).await.expect("in the bucket");
                    let e = read.expect_err("a corrupt stream must fail");
                    assert!(e.contains("corrupt"), "{e}");
                }
                assert!(!rig.cache.store.exists(&b3));
                assert_eq!(rig.meta(&b3).unwrap().placement, Placement::RemoteOnly);
            }
        }
    })
    .await;
}
