//! Expected checksums and read-your-writes (SPEC 9, issue 13 items 3 and 4), against the real
//! binary: `sha512=`/`blake3=` and `X-Upcache-Expect-Sha512|Blake3` have the guarantees of
//! md5/sha256 on every request form; an unknown `/fetch` parameter is refused by name; and a
//! file a client has read to its last byte is at once found by every lookup form, in the audit
//! export, and as a HIT.

use std::path::PathBuf;

use crate::common::fixtures::{config_with_admin, digests};
use crate::common::server::*;
use crate::common::upstream::*;
use upcache::store::Digests;

/// The real binary with an admin token.
struct Binary {
    p: Process,
    token: String,
    client: reqwest::Client,
    cwd: tempfile::TempDir,
}

impl Binary {
    fn start() -> Binary {
        let cwd = tempfile::tempdir().unwrap();
        let (cfg, token) = config_with_admin(cwd.path(), "");
        let p = Process::spawn(cwd.path(), &["--config", cfg.to_str().unwrap()], &[]);
        Binary {
            p,
            token,
            client: client(),
            cwd,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.p.base)
    }

    /// The data directory (the default, `./upcache-data` in the server's working directory).
    fn data_dir(&self) -> PathBuf {
        self.cwd.path().join("upcache-data")
    }

    fn fetch_url(&self, upstream: &str) -> String {
        self.url(&format!("/fetch?url={}", enc(upstream)))
    }

    fn mirror_url(&self, upstream: &str) -> String {
        let (scheme, rest) = upstream.split_once("://").unwrap();
        self.url(&format!("/{scheme}/{rest}"))
    }

    fn proxy_client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::http(&self.p.base).unwrap())
            .build()
            .unwrap()
    }

    async fn status(&self, path: &str) -> u16 {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// The audit export (JSON lines), parsed.
    async fn audit(&self) -> Vec<serde_json::Value> {
        let r = self
            .client
            .get(self.url("/api/v1/audit?format=jsonl"))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text()
            .await
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// The four ways to state an expectation, each a different path through the server.
#[derive(Debug, Clone, Copy)]
enum Form {
    FetchParam,
    FetchHeader,
    MirrorHeader,
    ProxyHeader,
}

const FORMS: [Form; 4] = [
    Form::FetchParam,
    Form::FetchHeader,
    Form::MirrorHeader,
    Form::ProxyHeader,
];

/// GET `upstream` through `srv` in `form`, expecting `algo` = `hex`.
async fn get_expecting(
    srv: &Binary,
    form: Form,
    upstream: &str,
    algo: &str,
    hex: &str,
) -> reqwest::Response {
    let header = format!("X-Upcache-Expect-{algo}");
    let req = match form {
        Form::FetchParam => srv.client.get(format!(
            "{}&{}={hex}",
            srv.fetch_url(upstream),
            algo.to_ascii_lowercase()
        )),
        Form::FetchHeader => srv.client.get(srv.fetch_url(upstream)).header(&header, hex),
        Form::MirrorHeader => srv
            .client
            .get(srv.mirror_url(upstream))
            .header(&header, hex),
        Form::ProxyHeader => srv.proxy_client().get(upstream).header(&header, hex),
    };
    req.send().await.unwrap()
}

/// A response that must not be a complete successful one: an error status before the body
/// (`integrity_mismatch`), or a body cut short.
async fn assert_not_delivered(r: reqwest::Response, full: usize, what: &str) {
    let status = r.status().as_u16();
    if status == 200 {
        match r.bytes().await {
            Err(_) => {}
            Ok(b) => assert!(b.len() < full, "{what}: the complete body was delivered"),
        }
    } else {
        let (status, code, msg) = error_code(r).await;
        assert_eq!(
            (status, code.as_str()),
            (502, "integrity_mismatch"),
            "{what}: {msg}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha512_and_blake3_expectations_hold_on_every_form() {
    let up = Upstream::start().await;
    let srv = Binary::start();
    let mut seed = 100;
    let mut mismatches = 0;
    for algo in ["Sha512", "Blake3"] {
        let pick = |d: &Digests| match algo {
            "Sha512" => d.sha512.clone(),
            _ => d.blake3.clone(),
        };
        let wrong = "0".repeat(if algo == "Sha512" { 128 } else { 64 });
        for form in FORMS {
            let what = format!("{algo} {form:?}");
            // A miss whose content does not match: never a complete response, not stored.
            seed += 1;
            let body = random_bytes(150_000, seed);
            let path = format!("/{algo}/{form:?}/bad-1.0.tar.gz");
            up.route(&path, Route::ok(body.clone()));
            let r = get_expecting(&srv, form, &up.url(&path), algo, &wrong).await;
            assert_not_delivered(r, body.len(), &what).await;
            mismatches += 1;
            let lookup = format!("/api/v1/lookup?url={}", enc(&up.url(&path)));
            assert_eq!(srv.status(&lookup).await, 404, "{what}: not bound");
            let by = format!("/api/v1/lookup?sha512={}", digests(&body).sha512);
            assert_eq!(srv.status(&by).await, 404, "{what}: not stored");

            // A miss whose content matches: served whole, and stored.
            seed += 1;
            let body = random_bytes(150_000, seed);
            let d = digests(&body);
            let path = format!("/{algo}/{form:?}/good-1.0.tar.gz");
            up.route(&path, Route::ok(body.clone()));
            let r = get_expecting(&srv, form, &up.url(&path), algo, &pick(&d)).await;
            assert_eq!(r.status(), 200, "{what}");
            assert_eq!(r.headers()["x-cache"], "MISS", "{what}");
            assert_eq!(r.bytes().await.unwrap(), body, "{what}");

            // The same URL, now a hit, with the wrong expectation: 502 before any body.
            let r = get_expecting(&srv, form, &up.url(&path), algo, &wrong).await;
            let (status, code, msg) = error_code(r).await;
            assert_eq!(
                (status, code.as_str()),
                (502, "integrity_mismatch"),
                "{what}: {msg}"
            );
            mismatches += 1;
            // ... and with the right one (upper case hex too): a hit.
            let r = get_expecting(&srv, form, &up.url(&path), algo, &pick(&d).to_uppercase()).await;
            assert_eq!(r.headers()["x-cache"], "HIT", "{what}");
            assert_eq!(r.bytes().await.unwrap(), body, "{what}");

            // A dead URL: the expected checksum finds the stored blob, upstream is not asked.
            let dead = format!("/{algo}/{form:?}/dead/good-1.0.tar.gz");
            up.route(&dead, Route::status(404));
            let r = get_expecting(&srv, form, &up.url(&dead), algo, &pick(&d)).await;
            assert_eq!(r.status(), 200, "{what}");
            assert_eq!(r.headers()["x-cache"], "HIT", "{what}");
            assert_eq!(r.bytes().await.unwrap(), body, "{what}");
            assert_eq!(up.hits(&dead), 0, "{what}: upstream not asked");
        }
    }
    // Every refused delivery is in the audit trail (a hit's event is written in the
    // background: poll for it).
    let mut failed = 0;
    for _ in 0..500 {
        failed = srv
            .audit()
            .await
            .iter()
            .filter(|e| e["event"] == "integrity_failed")
            .count();
        if failed >= mismatches {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(failed, mismatches);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fetch_parameters_and_expect_headers_are_refused_by_name() {
    let up = Upstream::start().await;
    let body = random_bytes(10_000, 7);
    up.route("/pkg-1.0.tar.gz", Route::ok(body.clone()));
    let url = up.url("/pkg-1.0.tar.gz");
    let srv = Binary::start();
    let fetch = srv.fetch_url(&url);
    for (target, named) in [
        (format!("{fetch}&sha1=abc"), "\"sha1\""),
        (format!("{fetch}&MD5={}", "0".repeat(32)), "\"MD5\""),
        (format!("{fetch}&md5sum={}", "0".repeat(32)), "\"md5sum\""),
        // The URL's own query, not percent-encoded: its second half is a parameter of ours.
        (format!("{}/fetch?url={url}?a=1&b=2", srv.p.base), "\"b\""),
    ] {
        let r = srv.client.get(&target).send().await.unwrap();
        let (status, code, msg) = error_code(r).await;
        assert_eq!(
            (status, code.as_str()),
            (400, "bad_request"),
            "{target}: {msg}"
        );
        assert!(msg.contains(named), "{target}: names {named}: {msg}");
    }
    // An expect header for an algorithm we do not know, on every form that takes headers.
    for form in &FORMS[1..] {
        let form = *form;
        let r = get_expecting(&srv, form, &url, "Sha1", "abc").await;
        let (status, code, msg) = error_code(r).await;
        assert_eq!(
            (status, code.as_str()),
            (400, "bad_request"),
            "{form:?}: {msg}"
        );
        let lower = msg.to_ascii_lowercase();
        assert!(lower.contains("x-upcache-expect-sha1"), "{form:?}: {msg}");
    }
    // Malformed values of the new algorithms.
    for (algo, bad) in [("Sha512", "0".repeat(64)), ("Blake3", "xyz".to_owned())] {
        for form in FORMS {
            let r = get_expecting(&srv, form, &url, algo, &bad).await;
            let (status, code, msg) = error_code(r).await;
            assert_eq!(
                (status, code.as_str()),
                (400, "bad_request"),
                "{algo} {form:?}: {msg}"
            );
            assert!(msg.contains(&algo.to_ascii_lowercase()), "{msg}");
        }
    }
    assert_eq!(up.hits("/pkg-1.0.tar.gz"), 0, "refused before upstream");
    // The known ones still work together.
    let d = digests(&body);
    let r = srv
        .client
        .get(format!(
            "{fetch}&md5={}&sha256={}&sha512={}&blake3={}",
            d.md5, d.sha256, d.sha512, d.blake3
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_is_found_everywhere_as_soon_as_its_last_byte_is_read() {
    let up = Upstream::start().await;
    let srv = Binary::start();
    for i in 0..20u64 {
        let body = random_bytes(50_000 + 7_919 * i as usize, 1_000 + i);
        let d = digests(&body);
        let name = format!("pkg{i}-1.0.tar.gz");
        let path = format!("/pub/{name}");
        up.route(&path, Route::ok(body.clone()));
        let url = up.url(&path);
        // Alternate the forms; read the whole body.
        let r = match i % 3 {
            0 => srv.client.get(srv.fetch_url(&url)).send().await.unwrap(),
            1 => srv.client.get(srv.mirror_url(&url)).send().await.unwrap(),
            _ => srv.proxy_client().get(&url).send().await.unwrap(),
        };
        assert_eq!(r.headers()["x-cache"], "MISS", "{i}");
        assert_eq!(r.bytes().await.unwrap(), body, "{i}");

        // At once, with no waiting of any kind: every lookup form finds it.
        for lookup in [
            format!("/by-md5/{}", d.md5),
            format!("/by-sha512/{}", d.sha512),
            format!("/api/v1/lookup?md5={}", d.md5),
            format!("/api/v1/lookup?sha512={}", d.sha512),
            format!("/api/v1/lookup?url={}", enc(&url)),
            format!("/repo/pkgs/rpms/pkg{i}/{name}/sha512/{}/{name}", d.sha512),
        ] {
            assert_eq!(srv.status(&lookup).await, 200, "{i}: {lookup}");
        }
        let fetched = srv.audit().await.into_iter().any(|e| {
            e["event"] == "fetched" && e["blake3"] == d.blake3.as_str() && e["url"] == url.as_str()
        });
        assert!(fetched, "{i}: the audit export has the fetch");
        let r = srv.client.get(srv.fetch_url(&url)).send().await.unwrap();
        assert_eq!(r.headers()["x-cache"], "HIT", "{i}");
        assert_eq!(r.bytes().await.unwrap(), body, "{i}");
        assert_eq!(up.hits(&path), 1, "{i}: fetched once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_that_cannot_be_stored_never_ends_cleanly() {
    let up = Upstream::start().await;
    let srv = Binary::start();
    let body = random_bytes(120_000, 4_242);
    let d = digests(&body);
    up.route("/pub/pkg-2.0.tar.gz", Route::ok(body.clone()));
    up.route("/pub/pkg-2.0.zip", Route::ok(body.clone()).chunked());
    // A file where the blob's shard directory must go: committing the blob fails.
    let shard = srv.data_dir().join("blobs").join(&d.blake3[..2]);
    std::fs::write(&shard, b"in the way").unwrap();
    for path in ["/pub/pkg-2.0.tar.gz", "/pub/pkg-2.0.zip"] {
        let url = up.url(path);
        let r = srv.client.get(srv.fetch_url(&url)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}: the miss started");
        // Every byte arrived and matched, but nothing was stored: no clean end.
        assert_not_delivered(r, body.len(), path).await;
        for lookup in [
            format!("/by-md5/{}", d.md5),
            format!("/api/v1/lookup?url={}", enc(&url)),
        ] {
            assert_eq!(srv.status(&lookup).await, 404, "{path}: {lookup}");
        }
    }
    // Storage repaired: the next request downloads again, stores, and ends cleanly.
    std::fs::remove_file(&shard).unwrap();
    let url = up.url("/pub/pkg-2.0.tar.gz");
    let r = srv.client.get(srv.fetch_url(&url)).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), body);
    assert_eq!(srv.status(&format!("/by-md5/{}", d.md5)).await, 200);
    assert_eq!(up.hits("/pub/pkg-2.0.tar.gz"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_expected_checksum_given_must_match() {
    let up = Upstream::start().await;
    let srv = Binary::start();
    let body = random_bytes(90_000, 5_151);
    let d = digests(&body);
    up.route("/pub/multi-1.0.tar.gz", Route::ok(body.clone()));
    let url = up.url("/pub/multi-1.0.tar.gz");
    let with = |md5: &str, header: (&str, &str)| {
        srv.client
            .get(format!("{}&md5={md5}", srv.fetch_url(&url)))
            .header(header.0, header.1)
            .send()
    };
    let wrong512 = "0".repeat(128);

    // A miss: the md5 matches, the sha512 given with it does not. Not delivered, not stored.
    let r = with(&d.md5, ("X-Upcache-Expect-Sha512", &wrong512))
        .await
        .unwrap();
    assert_not_delivered(r, body.len(), "md5 right, sha512 wrong").await;
    let lookup = format!("/api/v1/lookup?url={}", enc(&url));
    assert_eq!(srv.status(&lookup).await, 404);
    // Both right: stored.
    let r = with(&d.md5, ("X-Upcache-Expect-Sha512", &d.sha512))
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), body);
    assert_eq!(srv.status(&lookup).await, 200);

    // A hit: a wrong second checksum is 502, naming it.
    let r = with(&d.md5, ("X-Upcache-Expect-Blake3", &"0".repeat(64)))
        .await
        .unwrap();
    let (status, code, msg) = error_code(r).await;
    assert_eq!(
        (status, code.as_str()),
        (502, "integrity_mismatch"),
        "{msg}"
    );
    assert!(msg.contains("blake3"), "{msg}");

    // A dead URL: the blob found by md5 lacks the sha512 asked for, so it is not served;
    // upstream is asked instead (and has nothing).
    up.route("/dead/multi-1.0.tar.gz", Route::status(404));
    let dead = up.url("/dead/multi-1.0.tar.gz");
    let r = srv
        .client
        .get(format!(
            "{}&md5={}&sha512={wrong512}",
            srv.fetch_url(&dead),
            d.md5
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await.1, "not_found");
    assert_eq!(up.hits("/dead/multi-1.0.tar.gz"), 1);
    let r = srv
        .client
        .get(format!(
            "{}&md5={}&sha512={}",
            srv.fetch_url(&dead),
            d.md5,
            d.sha512
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-cache"], "HIT");
    assert_eq!(r.bytes().await.unwrap(), body);

    // Two different values for one algorithm contradict each other: refused.
    let r = with(&d.md5, ("X-Upcache-Expect-Md5", &"0".repeat(32)))
        .await
        .unwrap();
    let (status, code, msg) = error_code(r).await;
    assert_eq!((status, code.as_str()), (400, "bad_request"), "{msg}");
    assert!(msg.contains("md5"), "{msg}");
}
