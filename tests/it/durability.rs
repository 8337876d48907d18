//! The sweeper, admission (BYPASS), index rebuild, integrity scrub, alerts, disk-full
//! behaviour and crash safety.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::common::fixtures::{admin, digests, eventually, journal_events, sweep};
use crate::common::server::*;
use crate::common::upstream::*;

fn blob_path(data_dir: &Path, b3: &str) -> PathBuf {
    data_dir
        .join("blobs")
        .join(&b3[..2])
        .join(&b3[2..4])
        .join(b3)
}

/// A request-recording receiver for alert webhooks.
async fn alert_receiver() -> (Upstream, String) {
    let hook = Upstream::start().await;
    hook.route("/hook", Route::status(204));
    let url = hook.url("/hook");
    (hook, url)
}

fn alerts(hook: &Upstream) -> Vec<serde_json::Value> {
    hook.requests("/hook")
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

async fn wait_for_alert(hook: &Upstream, kind: &str) -> serde_json::Value {
    eventually(&format!("a {kind} alert"), async || {
        alerts(hook).into_iter().find(|a| a["kind"] == kind)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweeper_evicts_least_recently_used_unpinned_blobs_to_the_low_watermark() {
    let (token, tc) = admin();
    let (hook, hook_url) = alert_receiver().await;
    let clock = upcache::time::Clock::manual();
    let srv = TestServer::start_with_clock(clock.clone(), |c| {
        c.auth.tokens = vec![tc];
        c.cache.max_size = 1_000_000;
        c.cache.high_watermark = 0.8;
        c.cache.low_watermark = 0.5;
        c.alerts.webhook_url = hook_url;
    })
    .await;
    let up = Upstream::start().await;
    let mut urls = Vec::new();
    for i in 0..4 {
        let path = format!("/b/{i}.tar.gz");
        up.route(&path, Route::ok(random_bytes(200_000, 40 + i)));
        urls.push(up.url(&path));
    }
    for u in &urls {
        srv.get_bytes(&srv.fetch_url(u)).await;
        srv.app.flights.wait_idle().await;
    }
    // Blob 0 is read again (most recent use), blob 1 pinned: 2 and 3 are the LRU victims.
    let b: Vec<String> = (0..4)
        .map(|i| digests(&random_bytes(200_000, 40 + i)).blake3)
        .collect();
    clock.advance(Duration::from_secs(1)); // last_access has 1 s resolution
    srv.get_bytes(&srv.fetch_url(&urls[0])).await;
    let r = srv
        .client
        .post(srv.url(&format!("/api/v1/pin/{}", b[1])))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // 800 000 of 1 000 000 bytes: at the high watermark, not above: nothing to do.
    assert_eq!(sweep(&srv, &token).await["evicted"], 0);
    // An upload (not subject to admission) takes the cache above the high watermark.
    let r = srv
        .client
        .put(srv.url("/api/v1/upload"))
        .bearer_auth(&token)
        .body(random_bytes(100_000, 44))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // 900 000 > 800 000: evict the least recently used unpinned blobs until <= 500 000.
    let report = sweep(&srv, &token).await;
    assert_eq!(report["evicted"], 2, "{report}");
    assert_eq!(report["freed_bytes"], 400_000);
    assert!(report["used_ratio"].as_f64().unwrap() <= 0.5, "{report}");
    let present = |i: usize| {
        let srv = &srv;
        let b3 = b[i].clone();
        async move {
            let v: serde_json::Value = srv
                .get(&srv.url(&format!("/api/v1/lookup?blake3={b3}")))
                .await
                .json()
                .await
                .unwrap();
            v["present"].as_bool().unwrap()
        }
    };
    assert!(present(0).await, "recently read");
    assert!(present(1).await, "pinned");
    assert!(
        !present(2).await && !present(3).await,
        "evicted, but still known"
    );
    let evicted: Vec<_> = journal_events(&srv)
        .into_iter()
        .filter(|e| e["event"] == "evicted")
        .map(|e| e["blake3"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(evicted.len(), 2);
    assert!(evicted.contains(&b[2]) && evicted.contains(&b[3]));
    // An evicted URL is a miss again, then a hit.
    let (_, h, _) = srv.get_bytes(&srv.fetch_url(&urls[2])).await;
    assert_eq!(h["x-cache"], "MISS");
    srv.app.flights.wait_idle().await;
    assert!(present(2).await);
    assert_eq!(up.hits("/b/2.tar.gz"), 2);
    assert!(alerts(&hook).iter().all(|a| a["kind"] != "disk_high"));

    // Pinned blobs alone above the watermark: nothing can be evicted, disk_high is raised.
    for i in [0usize, 2] {
        srv.client
            .post(srv.url(&format!("/api/v1/pin/{}", b[i])))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
    }
    // 700 000 stored, all pinned; an upload (pinned too) brings it to 900 000.
    let r = srv
        .client
        .put(srv.url("/api/v1/upload"))
        .bearer_auth(&token)
        .body(random_bytes(200_000, 46))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let report = sweep(&srv, &token).await;
    assert_eq!(report["evicted"], 0, "{report}");
    assert!(report["used_ratio"].as_f64().unwrap() > 0.8, "{report}");
    let alert = wait_for_alert(&hook, "disk_high").await;
    assert_eq!(alert["instance"], "test");
    assert!(alert["time"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_unused_temp_files_orphans_and_missing_files() {
    let (token, tc) = admin();
    let clock = upcache::time::Clock::manual();
    let srv = TestServer::start_with_clock(clock.clone(), |c| {
        c.auth.tokens = vec![tc];
        c.cache.max_unused = Duration::from_secs(1);
    })
    .await;
    let up = Upstream::start().await;
    up.route("/old.tar.gz", Route::ok(random_bytes(10_000, 50)));
    srv.get_bytes(&srv.fetch_url(&up.url("/old.tar.gz"))).await;
    srv.app.flights.wait_idle().await;

    let data = srv.data_dir();
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
    let age = |p: &Path| {
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
    };
    // A stale temp file, a fresh one, an old orphan and a fresh orphan.
    let stale = data.join("tmp/999-stale.part");
    std::fs::write(&stale, b"x").unwrap();
    age(&stale);
    let fresh = data.join("tmp/999-fresh.part");
    std::fs::write(&fresh, b"x").unwrap();
    let orphan = digests(b"orphan").blake3;
    let orphan_path = blob_path(&data, &orphan);
    std::fs::create_dir_all(orphan_path.parent().unwrap()).unwrap();
    std::fs::write(&orphan_path, b"orphan").unwrap();
    age(&orphan_path);
    let young = digests(b"young").blake3;
    let young_path = blob_path(&data, &young);
    std::fs::create_dir_all(young_path.parent().unwrap()).unwrap();
    std::fs::write(&young_path, b"young").unwrap();
    // A fill in progress whose temp file looks old must survive.
    let gate = Gate::new();
    up.route(
        "/slow.tar.gz",
        Route::ok(random_bytes(100_000, 51)).hold_at(1000, gate.clone()),
    );
    let slow = srv.get(&srv.fetch_url(&up.url("/slow.tar.gz"))).await;
    gate.reached().await;
    for p in srv.temp_files() {
        if p != fresh {
            age(&p);
        }
    }

    clock.advance(Duration::from_secs(2)); // past max_unused (1 s resolution)
    let report = sweep(&srv, &token).await;
    assert_eq!(report["evicted"], 1, "unused for max_unused: {report}");
    assert_eq!(report["removed_temp"], 1, "{report}");
    assert_eq!(report["removed_orphans"], 1, "{report}");
    assert!(!stale.exists() && fresh.exists());
    assert!(!orphan_path.exists() && young_path.exists());
    gate.open();
    assert_eq!(
        slow.bytes().await.unwrap().len(),
        100_000,
        "the active fill was untouched"
    );
    srv.app.flights.wait_idle().await;

    // A blob file deleted behind our back: its entry is dropped.
    let b3 = digests(&random_bytes(100_000, 51)).blake3;
    std::fs::remove_file(blob_path(&data, &b3)).unwrap();
    let report = sweep(&srv, &token).await;
    assert_eq!(report["dropped_missing"], 1, "{report}");
    // Sweeping needs admin.
    let r = srv
        .client
        .post(srv.url("/api/v1/sweep"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_sweeps_first_and_bypasses_what_cannot_fit() {
    let srv = TestServer::start_with(|c| {
        c.cache.max_size = 1_000_000;
        c.cache.high_watermark = 0.8;
        c.cache.low_watermark = 0.3;
    })
    .await;
    let up = Upstream::start().await;
    for (i, size) in [(0u64, 500_000usize), (1, 500_000), (2, 900_000)] {
        up.route(
            &format!("/a/{i}.tar.gz"),
            Route::ok(random_bytes(size, 60 + i)),
        );
    }
    let get = |i: u64| {
        let u = srv.fetch_url(&up.url(&format!("/a/{i}.tar.gz")));
        let srv = &srv;
        async move { srv.get_bytes(&u).await }
    };
    let (_, h, _) = get(0).await;
    assert_eq!(h["x-cache"], "MISS");
    srv.app.flights.wait_idle().await;
    // 500k + 500k > 800k: a sweep evicts blob 0 to make room, then blob 1 is stored.
    let (_, h, body) = get(1).await;
    assert_eq!(h["x-cache"], "MISS");
    assert_eq!(body, random_bytes(500_000, 61));
    srv.app.flights.wait_idle().await;
    assert_eq!(srv.app.cache.index.stats().blobs, 1);
    // 900k can never fit under 800k: streamed through, not stored.
    let (s, h, body) = get(2).await;
    assert_eq!(
        (s.as_u16(), h["x-cache"].to_str().unwrap()),
        (200, "BYPASS")
    );
    assert_eq!(h["content-length"], "900000");
    assert_eq!(body, random_bytes(900_000, 62));
    srv.app.flights.wait_idle().await;
    assert!(
        srv.app
            .cache
            .index
            .url(&up.url("/a/2.tar.gz"))
            .unwrap()
            .is_none()
    );
    assert!(srv.temp_files().is_empty());
    // A pass-through still honours an expected checksum: never a complete wrong body.
    let r = srv
        .get(&format!(
            "{}&md5={}",
            srv.fetch_url(&up.url("/a/2.tar.gz")),
            "0".repeat(32)
        ))
        .await;
    assert_eq!(r.headers()["x-cache"], "BYPASS");
    assert!(r.bytes().await.is_err());
    let m = srv.get(&srv.url("/metrics")).await.text().await.unwrap();
    assert!(
        m.contains("upcache_requests_total{form=\"fetch\",result=\"bypass\"} 2"),
        "{m}"
    );
}

/// Issue 14, "Admission at scale": right after a room-making eviction, a 2 MiB miss in an
/// 8 MiB cache at about 56 % use used to be passed through (a full sweep, then a refusal
/// window). Now admission evicts just enough least recently used blobs for it, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_evicts_just_enough_lru_blobs_even_right_after_an_eviction() {
    const MIB: usize = 1 << 20;
    let up = Upstream::start().await;
    let sizes = [MIB, MIB, MIB, MIB, MIB, MIB, MIB, MIB / 2, 2 * MIB];
    for (i, size) in sizes.iter().enumerate() {
        up.route(
            &format!("/m/{i}.tar.gz"),
            Route::ok(random_bytes(*size, 80 + i as u64)),
        );
    }
    let cwd = tempfile::tempdir().unwrap();
    let p = Process::spawn(
        cwd.path(),
        &[],
        &[
            ("UPCACHE__UPSTREAM__ALLOW_PRIVATE", "true"),
            ("UPCACHE__CACHE__MAX_SIZE", "8MiB"),
            ("UPCACHE__CACHE__HIGH_WATERMARK", "0.8"),
            ("UPCACHE__CACHE__LOW_WATERMARK", "0.5"),
        ],
    );
    let c = client();
    let fetch = |i: usize| {
        format!(
            "{}/fetch?url={}",
            p.base,
            enc(&up.url(&format!("/m/{i}.tar.gz")))
        )
    };
    let get = |i: usize| {
        let (c, url) = (c.clone(), fetch(i));
        async move {
            let r = c.get(&url).send().await.unwrap();
            let x = r.headers()["x-cache"].to_str().unwrap().to_owned();
            assert_eq!(r.bytes().await.unwrap().len(), sizes[i]);
            x
        }
    };
    // Stored once a hit answers (the commit ends after the response).
    let stored = |i: usize| {
        let c = c.clone();
        let url = fetch(i);
        async move { get_until_hit(&c, &url, &random_bytes(sizes[i], 80 + i as u64)).await }
    };
    let present = |i: usize| {
        let c = c.clone();
        let url = format!(
            "{}/api/v1/lookup?url={}",
            p.base,
            enc(&up.url(&format!("/m/{i}.tar.gz")))
        );
        async move {
            let r = c.get(&url).send().await.unwrap();
            if r.status() == 404 {
                return false;
            }
            let v: serde_json::Value = r.json().await.unwrap();
            v["present"].as_bool().unwrap()
        }
    };
    // 0-2 are the oldest (last access has 1 s resolution), 3-5 newer: 6 MiB, 75 %.
    for i in 0..6 {
        if i == 3 {
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        assert_eq!(get(i).await, "MISS");
        stored(i).await;
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // 7 MiB > 6.4: room is made (the old code swept to the 50 % low watermark here).
    assert_eq!(get(6).await, "MISS");
    stored(6).await;
    assert_eq!(get(7).await, "MISS");
    stored(7).await;
    // At once after that: the 2 MiB download is stored too, not passed through.
    assert_eq!(get(8).await, "MISS");
    stored(8).await;
    assert_eq!(get(8).await, "HIT");
    // The least recently used went; the newest stay.
    for i in 0..3 {
        assert!(!present(i).await, "blob {i}, the oldest, evicted");
    }
    for i in 6..9 {
        assert!(present(i).await, "blob {i}, the newest, kept");
    }
    let mut kept = 0;
    let mut newer_kept = 0;
    for (i, size) in sizes.iter().enumerate() {
        if present(i).await {
            kept += size;
            newer_kept += usize::from((3..6).contains(&i));
        }
    }
    assert!(kept <= 8 * MIB * 4 / 5, "under the high watermark: {kept}");
    // Just enough: of 3-5 (6.5 MiB of 8 with the 2 MiB file), at least two are still here.
    assert!(newer_kept >= 2, "{newer_kept} of blobs 3-5 kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_or_corrupt_index_is_rebuilt_from_blob_files_and_the_journal() {
    let (token, tc) = admin();
    let (upload_token, uploader) = crate::common::fixtures::token("ci", &["upload"]);
    let srv = TestServer::start_with(|c| {
        c.auth.tokens = vec![tc, uploader];
    })
    .await;
    let up = Upstream::start().await;
    let (a, b) = (random_bytes(30_000, 70), random_bytes(40_000, 71));
    up.route("/r/a.tar.gz", Route::ok(a.clone()).header("ETag", "\"a1\""));
    up.route("/r/b.tar.gz", Route::ok(b.clone()));
    srv.get_bytes(&srv.fetch_url(&up.url("/r/a.tar.gz"))).await;
    srv.get_bytes(&srv.fetch_url(&up.url("/r/b.tar.gz"))).await;
    srv.app.flights.wait_idle().await;
    let uploaded = random_bytes(20_000, 72);
    let r = srv
        .client
        .put(srv.url("/api/v1/upload?url=https%3A%2F%2Fdead.example%2Fu.tar.gz"))
        .bearer_auth(&upload_token)
        .body(uploaded.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let db = digests(&b).blake3;
    srv.client
        .post(srv.url(&format!("/api/v1/pin/{db}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let lookup = |srv: &TestServer, url: &str| {
        let u = srv.url(&format!("/api/v1/lookup?url={}", enc(url)));
        let c = srv.client.clone();
        async move {
            c.get(u)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let before = [
        lookup(&srv, &up.url("/r/a.tar.gz")).await,
        lookup(&srv, &up.url("/r/b.tar.gz")).await,
        lookup(&srv, "https://dead.example/u.tar.gz").await,
    ];

    let mut running = Some(srv);
    // "corrupt-sled": an earlier version's (sled) index, unreadable: the migration fails
    // and the index is rebuilt like any other unreadable one.
    for damage in ["delete", "corrupt", "corrupt-sled"] {
        let (dir, cfg) = running.take().unwrap().shut_down().await;
        let index = cfg.storage.data_dir.join("index");
        match damage {
            "delete" => std::fs::remove_dir_all(&index).unwrap(),
            "corrupt-sled" => {
                std::fs::remove_dir_all(&index).unwrap();
                std::fs::create_dir(&index).unwrap();
                std::fs::write(index.join("conf"), b"segment_size: not a number\n").unwrap();
                std::fs::write(index.join("db"), b"this is not a sled database").unwrap();
            }
            _ => {
                for f in std::fs::read_dir(&index).unwrap().flatten() {
                    if f.path().is_file() {
                        std::fs::write(f.path(), b"this is not a sled database").unwrap();
                    }
                }
            }
        }
        let srv2 = TestServer::start_in(dir, cfg);
        for (url, was) in [
            (up.url("/r/a.tar.gz"), &before[0]),
            (up.url("/r/b.tar.gz"), &before[1]),
            ("https://dead.example/u.tar.gz".to_owned(), &before[2]),
        ] {
            let now = lookup(&srv2, &url).await;
            for key in [
                "blake3",
                "sha256",
                "md5",
                "size",
                "origin",
                "pinned",
                "urls",
                "first_seen",
            ] {
                assert_eq!(now[key], was[key], "{damage}: {url}: {key}");
            }
            let (_, h, _) = srv2.get_bytes(&srv2.mirror_url(&url)).await;
            assert_eq!(h["x-cache"], "HIT", "{damage}: {url}");
        }
        assert_eq!(up.hits("/r/a.tar.gz"), 1);
        let rec = srv2
            .app
            .cache
            .index
            .url(&up.url("/r/a.tar.gz"))
            .unwrap()
            .unwrap();
        assert_eq!(
            rec.record.etag.as_deref(),
            Some("\"a1\""),
            "upstream facts from the journal"
        );
        let aside = std::fs::read_dir(srv2.data_dir())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("index.broken-"))
            .count();
        let expected = match damage {
            "delete" => 0,
            "corrupt" => 1,
            _ => 2,
        };
        assert_eq!(
            aside, expected,
            "{damage}: each unreadable index is kept aside for inspection"
        );
        running = Some(srv2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_and_scrub_quarantine_corrupt_blobs_which_are_then_refetched() {
    let (token, tc) = admin();
    let (hook, hook_url) = alert_receiver().await;
    let srv = TestServer::start_with(|c| {
        c.auth.tokens = vec![tc];
        c.alerts.webhook_url = hook_url;
    })
    .await;
    let up = Upstream::start().await;
    let body = random_bytes(50_000, 80);
    up.route("/v/x.tar.gz", Route::ok(body.clone()));
    let url = up.url("/v/x.tar.gz");
    srv.get_bytes(&srv.fetch_url(&url)).await;
    srv.app.flights.wait_idle().await;
    let b3 = digests(&body).blake3;
    let path = blob_path(&srv.data_dir(), &b3);

    // Online scrub: flip a byte, sweep.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let report = sweep(&srv, &token).await;
    assert_eq!(report["quarantined"], 1, "{report}");
    assert!(!path.exists());
    let q: Vec<_> = std::fs::read_dir(srv.data_dir().join("quarantine"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(q.len(), 1);
    let alert = wait_for_alert(&hook, "integrity_failed").await;
    assert_eq!(alert["key"], b3.as_str());
    assert!(
        journal_events(&srv)
            .iter()
            .any(|e| e["event"] == "integrity_failed" && e["blake3"] == b3.as_str())
    );
    let (_, h, got) = srv.get_bytes(&srv.fetch_url(&url)).await;
    assert_eq!(
        (h["x-cache"].to_str().unwrap(), got),
        ("MISS", body.clone()),
        "refetched"
    );
    srv.app.flights.wait_idle().await;

    // Offline `upcache verify` on a stopped server.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let (_data, cfg) = srv.shut_down().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("c.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "[storage]\ndata_dir = {:?}\n[server]\ninstance = \"test\"\n",
            cfg.storage.data_dir.display().to_string()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_upcache"))
        .args(["verify", "--config"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["checked"].as_u64(), report["corrupt"].as_u64()),
        (Some(1), Some(1))
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_upcache"))
        .args(["verify", "--config"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "clean after quarantine");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_upcache"))
        .args(["gc", "--config"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["used_ratio"].is_number());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failure_alerts_are_deduplicated_per_kind_and_key() {
    let (hook, hook_url) = alert_receiver().await;
    let srv = TestServer::start_with(|c| {
        c.alerts.webhook_url = hook_url;
        c.alerts.min_interval = Duration::from_secs(3600);
        c.upstream.retries = 0;
    })
    .await;
    let up = Upstream::start().await;
    up.route("/x/1.tar.gz", Route::status(502));
    up.route("/x/2.tar.gz", Route::status(503));
    for p in ["/x/1.tar.gz", "/x/2.tar.gz", "/x/1.tar.gz"] {
        let r = srv.get(&srv.fetch_url(&up.url(p))).await;
        assert_eq!(error_code(r).await.1, "upstream_failed");
    }
    srv.app.flights.wait_idle().await;
    let a = wait_for_alert(&hook, "upstream_failed").await;
    assert_eq!(a["key"], "127.0.0.1", "keyed by upstream host");
    assert!(a["message"].as_str().unwrap().contains("502"), "{a}");
    // Three failures of one host within min_interval: one alert. Give stragglers a moment
    // to arrive before counting (there is no event for "nothing more was sent").
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(alerts(&hook).len(), 1, "{:?}", alerts(&hook));
}

/// A tmpfs mounted for one test, unmounted (lazily) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(Tmpfs(dir.to_owned()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_fails_cleanly_and_readiness_recovers_by_itself() {
    let scratch = tempfile::tempdir().unwrap();
    let mnt = scratch.path().join("mnt");
    let _tmpfs = match Tmpfs::mount(&mnt, "24m") {
        Ok(t) => t,
        Err(e) => {
            eprintln!("skipped: cannot mount a tmpfs for the disk-full test (needs root): {e}");
            return;
        }
    };
    let (hook, hook_url) = alert_receiver().await;
    let data = mnt.join("data");
    let srv = TestServer::start_with(|c| {
        c.storage.data_dir = data.clone();
        c.cache.max_size = 0; // the volume itself
        c.cache.high_watermark = 0.99;
        c.cache.low_watermark = 0.9;
        c.upstream.retries = 0;
        c.alerts.webhook_url = hook_url;
    })
    .await;
    let up = Upstream::start().await;
    // No Content-Length: admission cannot see it coming; the disk fills up mid-transfer.
    let gate = Gate::new();
    up.route(
        "/huge.tar.gz",
        Route::ok(random_bytes(40 << 20, 90))
            .chunked()
            .hold_at(1 << 20, gate.clone()),
    );
    let r = srv.get(&srv.fetch_url(&up.url("/huge.tar.gz"))).await;
    assert_eq!(r.status(), 200);
    gate.open();
    assert!(
        r.bytes().await.is_err(),
        "a failed store is never a clean end"
    );
    srv.app.flights.wait_idle().await;
    assert!(srv.temp_files().is_empty(), "no partial blob is left");
    assert_eq!(srv.app.cache.index.stats().blobs, 0);
    assert_eq!(
        srv.get(&srv.url("/healthz")).await.status(),
        200,
        "the server stays up"
    );
    let a = wait_for_alert(&hook, "storage_unavailable").await;
    assert!(
        a["message"].as_str().unwrap().contains("No space left"),
        "{a}"
    );

    // Full disk: not ready, with the reason; once space returns, ready again by itself.
    let filler = data.join("filler");
    // Top the volume up to full (again later: space of files closed late comes back).
    let fill_up = |path: &Path| {
        use std::io::Write;
        let mut f = std::fs::File::options()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        let block = vec![0u8; 1 << 20];
        while f.write_all(&block).is_ok() {}
        while f.write_all(&block[..4096]).is_ok() {}
        while f.write_all(&block[..1]).is_ok() {}
    };
    fill_up(&filler);
    // The readiness verdict is cached briefly (src/readiness.rs): wait for the next probe.
    let r = eventually("/readyz to say 503 on a full volume", async || {
        let r = srv.get(&srv.url("/readyz")).await;
        if r.status() == 503 {
            return Some(r);
        }
        fill_up(&filler);
        None
    })
    .await;
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["status"], "unavailable");
    let reason = v["reason"].as_str().unwrap();
    assert!(reason.contains("No space left"), "{v}");
    // What failed, never where: no server path reaches a client (SPEC 10).
    let dir = mnt.to_str().unwrap();
    assert!(!reason.contains(dir), "a server path in /readyz: {v}");
    // A miss that must store fails cleanly too, with JSON, while nothing was sent yet.
    up.route(
        "/small.tar.gz",
        Route::ok(random_bytes(100_000, 91)).chunked(),
    );
    fill_up(&filler);
    let r = srv.get(&srv.fetch_url(&up.url("/small.tar.gz"))).await;
    match r.status().as_u16() {
        503 => {
            let (_, code, message) = error_code(r).await;
            assert_eq!(code, "unavailable");
            assert!(
                !message.contains(dir),
                "a server path in an error: {message}"
            );
        }
        200 => assert!(r.bytes().await.is_err()),
        other => panic!("unexpected status {other}"),
    }
    std::fs::remove_file(&filler).unwrap();
    // Ready again once the next probe (every second, src/readiness.rs) sees the space.
    eventually("/readyz to say 200 once space returned", async || {
        (srv.get(&srv.url("/readyz")).await.status() == 200).then_some(())
    })
    .await;
    srv.app.flights.wait_idle().await;
    let (s, _, got) = srv
        .get_bytes(&srv.fetch_url(&up.url("/small.tar.gz")))
        .await;
    assert_eq!((s.as_u16(), got), (200, random_bytes(100_000, 91)));
    srv.shut_down().await;
}

/// Copy a directory tree (a fixture) to `to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_written_by_0_1_opens_with_its_placements() {
    use upcache::index::{Origin, Placement};
    use upcache::store::Algo;
    // See tests/fixtures/datadir-0.1/README.md: a (3000 bytes) fetched and stored, b (2000
    // bytes) fetched and evicted, c (1000 bytes) uploaded and pinned.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/datadir-0.1");
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let data = dir.path().join("data");
    copy_tree(&fixture, &data);
    let srv = TestServer::start_in(dir.clone(), test_config(&data));
    let sha = |hex: &str| {
        srv.app
            .cache
            .index
            .by_checksum(Algo::Sha256, hex)
            .unwrap()
            .expect("known blob")
    };
    let a = sha("7f08dcfac6944656096aa3b383813df11b452761f72b06110c2797b9b6e6ae9f");
    let b = sha("1f34813ba21f327ed5ce6bc4f28f9b115b7f835b782e34c3979be1d60559ca5f");
    let c = sha("9f21374e12a007a2dd7afef72c403712b1880d61635d18f93c4acfecd8854e40");
    assert_eq!(
        (a.placement, a.origin, a.pinned, a.size),
        (Placement::Local, Origin::Upstream, false, 3000)
    );
    assert_eq!((b.placement, b.size), (Placement::Evicted, 2000));
    assert_eq!(
        (c.placement, c.origin, c.pinned, c.size),
        (Placement::Local, Origin::Upload, true, 1000)
    );
    let stats = srv.app.cache.index.stats();
    assert_eq!((stats.blobs, stats.bytes, stats.urls), (2, 4000, 2));

    // Served as hits, byte for byte (the fixture's upstream is not running).
    let (s, h, body) = srv
        .get_bytes(&srv.fetch_url("http://127.0.0.1:38471/a.tar.gz"))
        .await;
    assert_eq!((s.as_u16(), h["x-cache"].to_str().unwrap()), (200, "HIT"));
    assert_eq!(digests(&body), a.digests);
    let (s, h, body) = srv
        .get_bytes(&srv.fetch_url("https://dead.example.org/c-1.0.tar.gz"))
        .await;
    assert_eq!((s.as_u16(), h["x-cache"].to_str().unwrap()), (200, "HIT"));
    assert_eq!(digests(&body), c.digests);
    // The evicted blob answers lookups with its history, not as present.
    let r = srv
        .get(&srv.url(&format!("/api/v1/lookup?blake3={}", b.blake3())))
        .await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (&v["present"], &v["urls"][0]),
        (
            &serde_json::json!(false),
            &serde_json::json!("http://127.0.0.1:38471/b.tar.gz")
        ),
        "{v}"
    );
    // The journal carries on where 0.1 stopped.
    let events = journal_events(&srv);
    assert_eq!(events.len(), 4);
    assert_eq!(events[1]["event"], "evicted");
    assert!(srv.app.cache.store.exists(a.blake3()) && !srv.app.cache.store.exists(b.blake3()));
}

/// Issue 14: after a crash the instance is ready before the start-up walk, which runs in the
/// background and still adopts blob files the index does not know, drops entries whose file
/// is gone and removes files the journal says were evicted. The walk is held back (the
/// runtime's only blocking thread is busy) to see the instance before it.
#[test]
fn after_a_crash_the_instance_is_ready_before_the_background_walk_which_still_repairs() {
    use upcache::index::{BlobMeta, Origin, UrlRecord};
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(dir.path());
    let data = cfg.storage.data_dir.clone();
    // A blob file with valid content, not in the index (yet).
    let plant = |seed: u64| {
        let bytes = random_bytes(5_000, seed);
        let b3 = digests(&bytes).blake3;
        let path = blob_path(&data, &b3);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        (b3, bytes)
    };
    let (kept, missing, url) = {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let app = upcache::Service::open(cfg.clone(), rt.handle().clone()).unwrap();
        let mut bound = Vec::new();
        for seed in [110, 111] {
            let (b3, bytes) = plant(seed);
            let meta = BlobMeta::new(digests(&bytes), bytes.len() as u64, Origin::Upstream, 1);
            let url = format!("https://crash.example/{seed}.tar.gz");
            let record = UrlRecord {
                url: url.clone(),
                blake3: b3.clone(),
                status: 200,
                content_type: None,
                etag: None,
                last_modified: None,
                final_url: url.clone(),
                fetched_at: 1,
                instance: "test".into(),
            };
            app.cache.index.bind(&meta, &record).unwrap();
            bound.push((b3, url));
        }
        app.cache.index.flush_blocking().unwrap();
        // Journaled as evicted, the crash before its file was unlinked.
        let (gone, _) = plant(112);
        let mut e = upcache::audit::Event::new("evicted");
        e.blake3 = Some(gone);
        app.cache.journal.append(e).unwrap();
        // The crash: no clean shutdown, no marker.
        (bound[0].clone(), bound[1].0.clone(), bound[0].1.clone())
    };
    assert!(!data.join("clean-shutdown").exists());
    std::fs::remove_file(blob_path(&data, &missing)).unwrap();
    let (adopted, _) = plant(113);
    let gone = digests(&random_bytes(5_000, 112)).blake3;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (started_tx, started) = std::sync::mpsc::channel();
    let (release, gate) = std::sync::mpsc::channel::<()>();
    rt.spawn_blocking(move || {
        started_tx.send(()).unwrap();
        let _ = gate.recv();
    });
    started.recv().unwrap();
    let app = upcache::Service::open(cfg, rt.handle().clone()).unwrap();
    // Open and serving, the walk not done: nothing repaired yet.
    let entry = app
        .cache
        .index
        .url(&url)
        .unwrap()
        .expect("a hit right away");
    assert_eq!(entry.blob.blake3(), kept.0);
    assert!(app.cache.index.blob(&adopted).unwrap().is_none());
    assert!(app.cache.index.blob(&missing).unwrap().is_some());
    assert!(blob_path(&data, &gone).exists());

    release.send(()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let repaired = || {
        app.cache
            .index
            .blob(&adopted)
            .unwrap()
            .is_some_and(|m| m.is_stored())
            && app.cache.index.blob(&missing).unwrap().is_none()
            && !blob_path(&data, &gone).exists()
    };
    while !repaired() {
        assert!(
            std::time::Instant::now() < deadline,
            "the background walk did not repair the store"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        app.cache.index.url(&url).unwrap().is_some(),
        "the rest untouched"
    );
    assert_eq!(app.cache.index.stats().blobs, 2);
}
