//! Reading a blob only the bucket holds: streamed to the client, verified against its
//! BLAKE3 before the last byte, and copied back into the local tier when there is room.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use tracing::warn;

use super::{Body, Bucket};
use crate::alerts::Kind;
use crate::error::Error;
use crate::index::BlobMeta;

impl Bucket {
    /// `[start, end)` of a blob from the bucket; `None` if the bucket no longer has it (its
    /// index entry is dropped: the next request is a miss). A whole-blob read is verified
    /// against its BLAKE3 before its last byte is released (a mismatch aborts the
    /// connection) and, when the local tier has room, copied into it on the way.
    pub(super) async fn remote_body(
        self: Arc<Self>,
        meta: &BlobMeta,
        start: u64,
        end: u64,
    ) -> Result<Option<Body>, Error> {
        let b3 = meta.blake3().to_owned();
        let mut stream = Box::pin(match self.remote.read_blob(&b3, start, end).await {
            Ok(s) => s,
            Err(e) if e.is_not_found() => return self.remote_gone(&b3).await.map(|_| None),
            Err(e) => return Err(e.into()),
        });
        // The first piece (or the error) arrives before any header is sent.
        let first = if start < end {
            match stream.next().await {
                Some(Ok(b)) => Some(b),
                Some(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                    return self.remote_gone(&b3).await.map(|_| None);
                }
                Some(Err(e)) => {
                    return Err(Error::Unavailable(format!(
                        "cannot read blob {b3} from the object store: {e}"
                    )));
                }
                None => None,
            }
        } else {
            None
        };
        let rest = futures::stream::iter(first.map(Ok)).chain(stream);
        if start != 0 || end != meta.size {
            // A range: passed through as it comes (it cannot be verified on its own).
            return Ok(Some(Box::pin(rest)));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let size = meta.size;
        let bucket = self.clone();
        self.cache
            .runtime()
            .spawn(async move { bucket.copy_from_bucket(b3, size, Box::pin(rest), tx).await });
        let mut rx = rx;
        Ok(Some(Box::pin(futures::stream::poll_fn(move |cx| {
            rx.poll_recv(cx)
        }))))
    }

    /// The bucket lost a blob this instance believed it had (remote cleanup by another
    /// instance, or a manual delete): forget it here.
    async fn remote_gone(&self, b3: &str) -> Result<(), Error> {
        warn!(
            blake3 = b3,
            "blob is gone from the object store; dropping its index entry"
        );
        // An index write may be the durable commit (an fsync): off the async workers.
        let (cache, b3) = (self.cache.clone(), b3.to_owned());
        tokio::task::spawn_blocking(move || cache.lifecycle().forget(&b3)).await??;
        Ok(())
    }

    /// Relay a whole blob from the bucket to one client, hashing it, and, if nobody else
    /// is doing it and there is room, writing it to the local tier; the last piece goes out
    /// only once the BLAKE3 matches.
    async fn copy_from_bucket(
        self: Arc<Self>,
        b3: String,
        size: u64,
        mut stream: Body,
        tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    ) {
        let claimed = self.refilling.lock().insert(b3.clone());
        let _release = claimed.then(|| Release(self.clone(), b3.clone()));
        let mut temp = None;
        if claimed && self.admission.admit(&self.cache, size).await {
            temp = self.cache.store.create_temp().ok();
        }
        let mut hasher = blake3::Hasher::new();
        let mut pos = 0u64;
        let mut held: Option<Bytes> = None;
        let mut client = true;
        while let Some(piece) = stream.next().await {
            let piece = match piece {
                Ok(p) => p,
                Err(e) => {
                    warn!(blake3 = %b3, error = %e, "reading a blob from the object store failed");
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            hasher.update(&piece);
            if let Some(t) = &temp {
                if let Err(e) = t.write_at(pos, &piece) {
                    warn!(blake3 = %b3, error = %e, "cannot copy a blob into the local tier");
                    temp = None;
                }
            }
            pos += piece.len() as u64;
            if let Some(prev) = held.replace(piece) {
                if client && tx.send(Ok(prev)).await.is_err() {
                    client = false;
                    if temp.is_none() {
                        return;
                    }
                }
            }
        }
        let actual = hasher.finalize().to_hex().to_string();
        if actual != b3 || pos != size {
            let msg = format!(
                "blob {b3} from the object store is corrupt: {pos} bytes with blake3 {actual}, \
                 expected {size} bytes"
            );
            warn!("{msg}");
            self.cache
                .alerts
                .raise(Kind::IntegrityFailed, &b3, msg.clone());
            let _ = tx.send(Err(std::io::Error::other(msg))).await;
            return;
        }
        if let Some(last) = held {
            if client {
                let _ = tx.send(Ok(last)).await;
            }
        }
        drop(tx);
        let Some(temp) = temp else { return };
        let cache = self.cache.clone();
        let stored = tokio::task::spawn_blocking(move || -> Result<(), Error> {
            cache.store.commit(temp, &b3)?;
            cache.lifecycle().restore_local(&b3)?;
            Ok(())
        })
        .await;
        match stored {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "cannot keep a blob read from the object store"),
            Err(e) => warn!(error = %e, "local copy task failed"),
        }
    }
}

/// Ends a refill claim however the copy ends.
struct Release(Arc<Bucket>, String);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.refilling.lock().remove(&self.1);
    }
}
