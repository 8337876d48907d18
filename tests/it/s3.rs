//! The object-store tier against a real S3 server (moto, `tests/it/common/s3.rs`): several
//! instances sharing one bucket, the local tier as a cache in front of it, checksum lookups
//! across instances, presigned redirects, redirect misses, the bucket going down, multipart
//! uploads, integrity of bytes read back, L1 trimming and remote cleanup.

use std::sync::Arc;
use std::time::Duration;

use crate::common::fixtures::{admin, eventually, sha256, sweep, token};
use crate::common::s3::*;
use crate::common::server::*;
use crate::common::upstream::*;

const PATH: &str = "/dist/tool-2.0.tar.gz";

/// An in-process instance on the bucket under `prefix`, with an admin token.
async fn instance(
    s3: &S3Server,
    prefix: &str,
    f: impl FnOnce(&mut upcache::Config),
) -> (TestServer, String) {
    instance_with_clock(s3, prefix, upcache::time::Clock::system(), f).await
}

/// [`instance`] keeping time with `clock` (advanced by the test instead of sleeping).
async fn instance_with_clock(
    s3: &S3Server,
    prefix: &str,
    clock: upcache::time::Clock,
    f: impl FnOnce(&mut upcache::Config),
) -> (TestServer, String) {
    let (admin, admin_config) = admin();
    let srv = TestServer::start_with_clock(clock, |c| {
        s3.configure(c, prefix);
        c.auth.tokens = vec![admin_config];
        f(c);
    })
    .await;
    (srv, admin)
}

/// A bucket, and an upstream serving `size` random bytes at [`PATH`].
async fn fixture(size: usize, seed: u64) -> (S3Server, Upstream, bytes::Bytes) {
    let s3 = S3Server::start();
    let up = Upstream::start().await;
    let body = random_bytes(size, seed);
    up.route(PATH, Route::ok(body.clone()));
    (s3, up, body)
}

/// Wait until every fill has ended and every blob it stored is in the bucket.
async fn settle(srv: &TestServer) {
    srv.app.flights.wait_idle().await;
    let tier = &srv.app.tier;
    tokio::time::timeout(Duration::from_secs(30), tier.wait_published())
        .await
        .expect("publishing to the bucket finishes");
}

/// GET `url` through `base`'s fetch form.
fn fetch(base: &str, upstream: &str) -> String {
    format!("{base}/fetch?url={}", enc(upstream))
}

/// Poll `/api/v1/lookup` of a separate process until the bucket holds the blob of `query`.
async fn wait_remote(base: &str, query: &str) -> serde_json::Value {
    let c = client();
    let what = format!("{query} to reach the bucket through {base}");
    eventually(&what, async || {
        let r = c
            .get(format!("{base}/api/v1/lookup?{query}"))
            .send()
            .await
            .unwrap();
        if r.status() != 200 {
            return None;
        }
        let v: serde_json::Value = r.json().await.unwrap();
        (v["remote"] == true).then_some(v)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_bucket_and_survive_losing_their_disk() {
    let (s3, up, body) = fixture(3_000_000, 61).await;
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let (token, sha) = upcache::auth::new_token();
    let config = format!(
        "{}\n[upstream]\nallow_private = true\n[[auth.tokens]]\nname = \"ci\"\nsha256 = \
         \"{sha}\"\nscopes = [\"upload\"]\n",
        s3.toml("shared")
    );
    std::fs::write(dir_a.path().join("upcache.toml"), &config).unwrap();
    // B takes its credentials from the standard environment variables instead.
    let without_keys: String = config
        .lines()
        .filter(|l| !l.starts_with("access_key_id") && !l.starts_with("secret_access_key"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dir_b.path().join("upcache.toml"), without_keys).unwrap();
    let args = ["--config", "upcache.toml"];
    let mut a = Process::spawn(dir_a.path(), &args, &[]);
    let b = Process::spawn(
        dir_b.path(),
        &args,
        &[
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ],
    );
    let c = client();

    // Filled through A...
    let r = c.get(fetch(&a.base, &up.url(PATH))).send().await.unwrap();
    assert_eq!(r.headers()["x-cache"], "MISS");
    assert_eq!(r.bytes().await.unwrap(), body);
    wait_remote(&a.base, &format!("url={}", enc(&up.url(PATH)))).await;
    // ... a hit on B, which never asked upstream.
    let r = c.get(fetch(&b.base, &up.url(PATH))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cache"], "HIT", "{}", b.log());
    assert_eq!(r.headers()["x-checksum-sha256"], sha256(&body).as_str());
    assert_eq!(r.bytes().await.unwrap(), body);
    assert_eq!(
        up.hits(PATH),
        1,
        "upstream is asked once for both instances"
    );

    // Uploaded through A, found on B by checksum (and in the lookaside layout).
    let dead = random_bytes(200_000, 62);
    let r = c
        .put(format!(
            "{}/api/v1/upload?filename=dead-1.0.tar.gz&url={}",
            a.base,
            enc("https://dead.example/dead-1.0.tar.gz")
        ))
        .bearer_auth(&token)
        .body(dead.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: serde_json::Value = r.json().await.unwrap();
    let md5 = v["md5"].as_str().unwrap().to_owned();
    wait_remote(&a.base, &format!("md5={md5}")).await;
    let r = c
        .get(format!("{}/by-md5/{md5}/dead-1.0.tar.gz", b.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", b.log());
    assert_eq!(r.bytes().await.unwrap(), dead);
    let r = c
        .get(format!(
            "{}/repo/pkgs/rpms/dead/dead-1.0.tar.gz/sha256/{}/dead-1.0.tar.gz",
            b.base,
            sha256(&dead)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), dead);
    // The upload's URL binding is shared too: a hit on B without upstream (there is none).
    let r = c
        .get(fetch(&b.base, "https://dead.example/dead-1.0.tar.gz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-cache"], "HIT");

    // A loses its whole data directory: it still serves the URL, from the bucket, and copies
    // it back into its local tier.
    a.kill9();
    std::fs::remove_dir_all(dir_a.path().join("upcache-data")).unwrap();
    let a = Process::spawn(dir_a.path(), &args, &[]);
    let r = c.get(fetch(&a.base, &up.url(PATH))).send().await.unwrap();
    assert_eq!(r.headers()["x-cache"], "HIT", "{}", a.log());
    assert_eq!(r.bytes().await.unwrap(), body);
    assert_eq!(up.hits(PATH), 1);
    let blake3 = blake3::hash(&body).to_hex().to_string();
    let local = dir_a.path().join(format!(
        "upcache-data/blobs/{}/{}/{blake3}",
        &blake3[..2],
        &blake3[2..4]
    ));
    for _ in 0..200 {
        if local.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(std::fs::read(&local).expect("copied back into L1"), body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_redirect_followed_by_curl_returns_the_bytes() {
    let (s3, up, body) = fixture(700_000, 63).await;
    let (srv, _) = instance(&s3, "redirect", |c| {
        c.storage.serve = upcache::config::ServeMode::Redirect;
        c.storage.presign_ttl = Duration::from_secs(120);
    })
    .await;
    // The first request is a miss, streamed through as usual.
    let (_, h, got) = srv.get_bytes(&srv.fetch_url(&up.url(PATH))).await;
    assert_eq!(
        (h["x-cache"].to_str().unwrap(), got),
        ("MISS", body.clone())
    );
    settle(&srv).await;

    let r = srv.get(&srv.mirror_url(&up.url(PATH))).await;
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["x-cache"], "HIT");
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&s3.endpoint()), "{location}");
    assert!(
        location.contains("X-Amz-Expires=120"),
        "valid for presign_ttl: {location}"
    );

    let out = srv.dir.path().join("curl.out");
    let status = std::process::Command::new("curl")
        .args(["-sS", "-f", "-L", "--noproxy", "*", "-o"])
        .arg(&out)
        .arg(srv.mirror_url(&up.url(PATH)))
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(std::fs::read(&out).unwrap(), body);
    assert_eq!(up.hits(PATH), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miss_redirect_sends_clients_upstream_and_the_fill_reaches_the_bucket() {
    let (s3, up, body) = fixture(400_000, 64).await;
    let (a, _) = instance(&s3, "missredir", |c| {
        c.upstream.miss = upcache::config::MissMode::Redirect;
    })
    .await;
    let r = a.get(&a.fetch_url(&up.url(PATH))).await;
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], up.url(PATH).as_str());
    assert_eq!(r.headers()["x-cache"], "MISS");
    settle(&a).await;
    let (b, _) = instance(&s3, "missredir", |_| {}).await;
    let (_, h, got) = b.get_bytes(&b.fetch_url(&up.url(PATH))).await;
    assert_eq!((h["x-cache"].to_str().unwrap(), got), ("HIT", body));
    assert_eq!(up.hits(PATH), 1, "filled once, in A's background");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_down_means_unready_but_local_hits_are_still_served() {
    let (mut s3, up, body) = fixture(300_000, 65).await;
    up.route("/other.tar.gz", Route::ok(random_bytes(1000, 66)));
    let (srv, _) = instance(&s3, "down", |_| {}).await;
    let r = srv.get(&srv.url("/readyz")).await;
    assert_eq!(r.status(), 200);
    let _ = srv.get_bytes(&srv.fetch_url(&up.url(PATH))).await;
    settle(&srv).await;

    s3.kill();
    let r = srv.get(&srv.url("/readyz")).await;
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["status"], "unavailable");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("s3 bucket upcache-test"),
        "{v}"
    );
    // The local copy still answers...
    let (s, h, got) = srv.get_bytes(&srv.fetch_url(&up.url(PATH))).await;
    assert_eq!((s.as_u16(), h["x-cache"].to_str().unwrap()), (200, "HIT"));
    assert_eq!(got, body);
    // ... new downloads are refused with a clear error, for another instance to take.
    let r = srv.get(&srv.fetch_url(&up.url("/other.tar.gz"))).await;
    let (status, code, message) = error_code(r).await;
    assert_eq!((status, code.as_str()), (503, "unavailable"), "{message}");
    assert_eq!(up.hits("/other.tar.gz"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_uploads_are_multipart_and_read_back_verified_on_another_instance() {
    let s3 = S3Server::start();
    let (token, uploader) = token("ci", &["upload"]);
    let with_token = |c: &mut upcache::Config| {
        c.auth.tokens = vec![uploader.clone()];
    };
    let (a, _) = instance(&s3, "big", with_token).await;
    let body = random_bytes(65 * 1024 * 1024 + 123, 67);
    let r = a
        .client
        .put(a.url("/api/v1/upload?filename=big.tar.xz"))
        .bearer_auth(&token)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    settle(&a).await;
    let blake3 = blake3::hash(&body).to_hex().to_string();
    let meta = s3.operator("big").stat(&blob_key(&blake3)).await.unwrap();
    assert_eq!(meta.content_length(), body.len() as u64);
    let etag = meta.etag().unwrap().trim_matches('"').to_owned();
    // A multipart upload's ETag is "<md5 of the part md5s>-<parts>": 9 parts of 8 MiB.
    assert!(etag.ends_with("-9"), "not a multipart upload: ETag {etag}");

    // Another instance with an empty local tier streams it from the bucket.
    let (b, _) = instance(&s3, "big", |_| {}).await;
    let (s, h, got) = b
        .get_bytes(&b.url(&format!("/by-sha256/{}", sha256(&body))))
        .await;
    assert_eq!((s.as_u16(), h["x-cache"].to_str().unwrap()), (200, "HIT"));
    assert_eq!(h["content-length"], body.len().to_string().as_str());
    assert!(got == body, "bytes read back from the bucket differ");
    // A range is served from the bucket too.
    let r = b
        .client
        .get(b.url(&format!("/by-blake3/{blake3}")))
        .header("range", "bytes=10000000-10000099")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap(), body[10_000_000..10_000_100]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_blob_in_the_bucket_is_never_served_as_complete() {
    let (s3, up, body) = fixture(2_000_000, 68).await;
    let (a, _) = instance(&s3, "corrupt", |_| {}).await;
    let _ = a.get_bytes(&a.fetch_url(&up.url(PATH))).await;
    settle(&a).await;
    // Someone damages the object (same length, one byte flipped).
    let blake3 = blake3::hash(&body).to_hex().to_string();
    let mut bad = body.to_vec();
    bad[1_500_000] ^= 0xff;
    s3.operator("corrupt")
        .write(&blob_key(&blake3), bad)
        .await
        .unwrap();

    let (b, _) = instance(&s3, "corrupt", |_| {}).await;
    let r = b.get(&b.fetch_url(&up.url(PATH))).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.bytes().await.is_err(),
        "a body that does not match its blake3 must end in an aborted connection"
    );
    b.app.flights.wait_idle().await;
    assert!(
        !b.data_dir()
            .join(format!("blobs/{}/{}/{blake3}", &blake3[..2], &blake3[2..4]))
            .exists(),
        "the corrupt bytes are not kept in the local tier"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimming_the_local_tier_keeps_blobs_in_the_bucket() {
    let (s3, up, body) = fixture(500_000, 69).await;
    let clock = upcache::time::Clock::manual();
    let (srv, admin) = instance_with_clock(&s3, "trim", clock.clone(), |c| {
        c.cache.max_unused = Duration::from_secs(1)
    })
    .await;
    let _ = srv.get_bytes(&srv.fetch_url(&up.url(PATH))).await;
    settle(&srv).await;
    clock.advance(Duration::from_secs(2)); // past max_unused (1 s resolution)
    let v = sweep(&srv, &admin).await;
    assert_eq!(v["evicted"], 1, "{v}");
    let blake3 = blake3::hash(&body).to_hex().to_string();
    assert!(
        !srv.app.cache.store.exists(&blake3),
        "the local copy is gone"
    );
    // Still a hit: from the bucket.
    let (_, h, got) = srv.get_bytes(&srv.fetch_url(&up.url(PATH))).await;
    assert_eq!((h["x-cache"].to_str().unwrap(), got), ("HIT", body));
    assert_eq!(up.hits(PATH), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_cleanup_deletes_unused_blobs_but_never_pinned_ones() {
    let (s3, up, old) = fixture(100_000, 70).await;
    let clock = upcache::time::Clock::manual();
    let (srv, admin) = instance_with_clock(&s3, "cleanup", clock.clone(), |c| {
        c.cache.remote_max_unused = Duration::from_secs(1);
    })
    .await;
    let srv = Arc::new(srv);
    let _ = srv.get_bytes(&srv.fetch_url(&up.url(PATH))).await;
    let kept = random_bytes(50_000, 71);
    let r = srv
        .client
        .put(srv.url("/api/v1/upload?url=https%3A%2F%2Fdead.example%2Fkept.tar.gz"))
        .bearer_auth(&admin)
        .body(kept.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "uploads are pinned");
    settle(&srv).await;
    let op = s3.operator("cleanup");
    let (old_b3, kept_b3) = (
        blake3::hash(&old).to_hex().to_string(),
        blake3::hash(&kept).to_hex().to_string(),
    );
    assert!(op.exists(&blob_key(&old_b3)).await.unwrap());
    // Well past remote_max_unused by this instance's clock, whatever the bucket's (real)
    // modification times say.
    clock.advance(Duration::from_secs(3600));

    let v = sweep(&srv, &admin).await;
    assert_eq!(v["remote_deleted"], 1, "{v}");
    assert!(
        !op.exists(&blob_key(&old_b3)).await.unwrap(),
        "unused blob deleted"
    );
    assert!(
        !op.exists(&upcache::remote::url_key(&up.url(PATH)))
            .await
            .unwrap(),
        "its shared URL record too"
    );
    assert!(
        op.exists(&blob_key(&kept_b3)).await.unwrap(),
        "pinned blob kept"
    );
    assert!(
        op.exists(&upcache::remote::url_key(
            "https://dead.example/kept.tar.gz"
        ))
        .await
        .unwrap()
    );
    // The deleted blob's URL is a miss again, refetched from upstream.
    let (_, h, got) = srv.get_bytes(&srv.fetch_url(&up.url(PATH))).await;
    assert_eq!((h["x-cache"].to_str().unwrap(), got), ("MISS", old));
    assert_eq!(up.hits(PATH), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_on_one_instance_keep_a_blob_from_cleanup_by_another() {
    let (s3, up, body) = fixture(80_000, 72).await;
    let unused = |c: &mut upcache::Config| c.cache.remote_max_unused = Duration::from_secs(2);
    let (a, _) = instance(&s3, "touch", unused).await;
    let (b, admin_b) = instance(&s3, "touch", unused).await;
    let _ = a.get_bytes(&a.fetch_url(&up.url(PATH))).await;
    settle(&a).await;
    tokio::time::sleep(Duration::from_millis(3100)).await;
    // A reads it (a hit), and its periodic flush writes the read to the bucket.
    let (_, h, _) = a.get_bytes(&a.fetch_url(&up.url(PATH))).await;
    assert_eq!(h["x-cache"], "HIT");
    let read = a.app.cache.index.flush_access().unwrap();
    a.app.tier.touch(read);
    settle(&a).await;
    // B never read it, but sees A's read: nothing to delete.
    let v = sweep(&b, &admin_b).await;
    assert_eq!(v["remote_deleted"], 0, "{v}");
    let blake3 = blake3::hash(&body).to_hex().to_string();
    assert!(
        s3.operator("touch")
            .exists(&blob_key(&blake3))
            .await
            .unwrap()
    );
    // Unread for longer than remote_max_unused: B deletes it.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let v = sweep(&b, &admin_b).await;
    assert_eq!(v["remote_deleted"], 1, "{v}");
    assert!(
        !s3.operator("touch")
            .exists(&blob_key(&blake3))
            .await
            .unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_while_the_bucket_is_down_stay_local_and_reach_it_when_it_is_back() {
    let mut s3 = S3Server::start();
    let (srv, admin) = instance(&s3, "", |_| {}).await;
    let port = s3.port;
    s3.kill();
    let body = random_bytes(6 * 1024 * 1024, 73);
    let r = srv
        .client
        .put(srv.url("/api/v1/upload?url=https%3A%2F%2Fdead.example%2Fa-1.0.tar.gz"))
        .bearer_auth(&admin)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "the local tier takes it");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["remote"], false);
    // Served locally meanwhile.
    let (s, _, got) = srv
        .get_bytes(&srv.fetch_url("https://dead.example/a-1.0.tar.gz"))
        .await;
    assert_eq!((s.as_u16(), got), (200, body.clone()));
    let tier = &srv.app.tier;
    assert_eq!(tier.pending(), 1, "the upload is waiting for the bucket");

    let s3 = S3Server::start_on(port);
    tokio::time::timeout(Duration::from_secs(30), tier.wait_published())
        .await
        .expect("the upload is retried until the bucket takes it");
    let blake3 = blake3::hash(&body).to_hex().to_string();
    let op = s3.operator("");
    assert_eq!(op.read(&blob_key(&blake3)).await.unwrap().to_bytes(), body);
    assert!(
        op.exists(&upcache::remote::url_key(
            "https://dead.example/a-1.0.tar.gz"
        ))
        .await
        .unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_not_cached_is_trusted_for_index_refresh_only() {
    let (s3, up, _) = fixture(10_000, 74).await;
    let refresh = |c: &mut upcache::Config| c.cache.index_refresh = Duration::from_secs(1);
    let clock = upcache::time::Clock::manual();
    let (a, _) = instance(&s3, "refresh", refresh).await;
    let (b, _) = instance_with_clock(&s3, "refresh", clock.clone(), refresh).await;
    let lookup_url = b.url(&format!("/api/v1/lookup?url={}", enc(&up.url(PATH))));
    let lookup = || b.get(&lookup_url);
    assert_eq!(lookup().await.status(), 404);
    let _ = a.get_bytes(&a.fetch_url(&up.url(PATH))).await;
    settle(&a).await;
    clock.advance(Duration::from_millis(999));
    assert_eq!(
        lookup().await.status(),
        404,
        "B trusts its remembered answer for a while"
    );
    clock.advance(Duration::from_millis(1));
    let r = lookup().await;
    assert_eq!(r.status(), 200, "then asks the shared index again");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["remote"], true);
    assert_eq!(up.hits(PATH), 1);
}
