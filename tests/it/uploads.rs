//! Uploads for dead upstream URLs, tokens and scopes, admin endpoints, the audit export.

use crate::common::fixtures::{admin, digests, journal_events, output, token, upcache};
use crate::common::server::*;
use crate::common::upstream::*;

/// A server with an upload token and an admin token.
struct Setup {
    srv: TestServer,
    upload: String,
    admin: String,
}

async fn setup(f: impl FnOnce(&mut upcache::Config)) -> Setup {
    let (upload, uploader) = token("ci", &["upload"]);
    let (admin, admin_config) = admin();
    let srv = TestServer::start_with(|c| {
        c.auth.tokens = vec![uploader, admin_config];
        c.server.public_url = "http://cache.example:8080".into();
        f(c);
    })
    .await;
    Setup { srv, upload, admin }
}

impl Setup {
    async fn put(
        &self,
        query: &str,
        token: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        let mut rb = self
            .srv
            .client
            .put(self.srv.url(&format!("/api/v1/upload?{query}")))
            .body(body);
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        rb.send().await.unwrap()
    }

    async fn admin(&self, method: reqwest::Method, path: &str, token: &str) -> reqwest::Response {
        self.srv
            .client
            .request(method, self.srv.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    fn journal(&self) -> Vec<serde_json::Value> {
        journal_events(&self.srv)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_for_a_dead_url_makes_every_form_a_hit() {
    let s = setup(|_| {}).await;
    let up = Upstream::start().await;
    up.route("/dead/pkg-1.0.tar.gz", Route::status(404));
    up.route("/elsewhere/pkg-1.0.tar.gz", Route::status(404));
    let url = up.url("/dead/pkg-1.0.tar.gz");
    // The dead URL is remembered as not found before the upload...
    assert_eq!(s.srv.get(&s.srv.fetch_url(&url)).await.status(), 404);

    let body = random_bytes(200_000, 31);
    let d = digests(&body);
    let q = format!("url={}&md5={}", enc(&url), d.md5);
    let r = s.put(&q, Some(&s.upload), body.clone()).await;
    assert_eq!(r.status(), 201);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["md5"], d.md5.as_str());
    assert_eq!(v["sha256"], d.sha256.as_str());
    assert_eq!(v["blake3"], d.blake3.as_str());
    assert_eq!(v["size"], 200_000);
    assert_eq!(v["origin"], "upload");
    assert_eq!(v["pinned"], true);
    assert_eq!(v["urls"], serde_json::json!([url]));
    let links: Vec<&str> = v["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(
        links,
        [
            format!("http://cache.example:8080/by-md5/{}/pkg-1.0.tar.gz", d.md5).as_str(),
            format!(
                "http://cache.example:8080/http/127.0.0.1:{}/dead/pkg-1.0.tar.gz",
                up.addr().port()
            )
            .as_str(),
        ]
    );

    // ... and after it, every form is a hit with the uploaded bytes.
    for u in [s.srv.fetch_url(&url), s.srv.mirror_url(&url)] {
        let (st, h, got) = s.srv.get_bytes(&u).await;
        assert_eq!(
            (st.as_u16(), h["x-cache"].to_str().unwrap()),
            (200, "HIT"),
            "{u}"
        );
        assert_eq!(got, body);
    }
    let r = s.srv.proxy_client().get(&url).send().await.unwrap();
    assert_eq!(r.headers()["x-cache"], "HIT");
    assert_eq!(r.bytes().await.unwrap(), body);
    // Another dead URL, found by the md5 the spec file carries.
    let other = up.url("/elsewhere/pkg-1.0.tar.gz");
    let (st, _, got) = s
        .srv
        .get_bytes(&format!("{}&md5={}", s.srv.fetch_url(&other), d.md5))
        .await;
    assert_eq!((st.as_u16(), got), (200, body.clone()));
    assert_eq!(up.hits("/elsewhere/pkg-1.0.tar.gz"), 0);
    // The same content again: 200, not 201.
    let r = s.put(&q, Some(&s.upload), body.clone()).await;
    assert_eq!(r.status(), 200);
    let uploaded: Vec<_> = s
        .journal()
        .into_iter()
        .filter(|e| e["event"] == "uploaded")
        .collect();
    assert_eq!(uploaded.len(), 2);
    assert_eq!(uploaded[0]["actor"], "ci");
    assert_eq!(uploaded[0]["client"], "127.0.0.1");
    assert_eq!(uploaded[0]["url"], url.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_scopes() {
    let s = setup(|_| {}).await;
    // No token, a wrong token, a token in the query string: 401.
    let r = s.put("", None, "x").await;
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(error_code(r).await.1, "unauthorized");
    let r = s.put("", Some("upc_wrong"), "x").await;
    assert_eq!(error_code(r).await.1, "unauthorized");
    let r = s.put(&format!("token={}", s.upload), None, "x").await;
    assert_eq!(
        error_code(r).await.0,
        401,
        "tokens are never read from the query"
    );
    // Upload scope is not admin: 403.
    let b3 = "0".repeat(64);
    for (method, path) in [
        (reqwest::Method::POST, format!("/api/v1/pin/{b3}")),
        (reqwest::Method::DELETE, format!("/api/v1/pin/{b3}")),
        (reqwest::Method::DELETE, format!("/api/v1/blobs/{b3}")),
        (reqwest::Method::GET, "/api/v1/audit".to_owned()),
    ] {
        let r = s.admin(method.clone(), &path, &s.upload).await;
        let (status, code, _) = error_code(r).await;
        assert_eq!(
            (status, code.as_str()),
            (403, "forbidden"),
            "{method} {path}"
        );
        let r = s.admin(method.clone(), &path, "nope").await;
        assert_eq!(error_code(r).await.0, 401);
    }
    // Admin implies upload.
    let r = s.put("", Some(&s.admin), "admin bytes").await;
    assert_eq!(r.status(), 201);
    let r = s
        .srv
        .client
        .get(s.srv.url("/api/v1/upload"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await.1, "method_not_allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatching_checksums_conflicts_and_size_limits_store_nothing() {
    let s = setup(|c| c.limits.max_upload_size = 100_000).await;
    let body = random_bytes(50_000, 32);
    let d = digests(&body);
    let url = "https://example.org/pkg/foo-1.0.tar.gz";

    let r = s
        .put(
            &format!("md5={}", "0".repeat(32)),
            Some(&s.upload),
            body.clone(),
        )
        .await;
    let (status, code, msg) = error_code(r).await;
    assert_eq!(
        (status, code.as_str()),
        (422, "integrity_mismatch"),
        "{msg}"
    );
    let r = s
        .put(
            &format!("sha256={}", "1".repeat(64)),
            Some(&s.upload),
            body.clone(),
        )
        .await;
    assert_eq!(error_code(r).await.0, 422);
    let r = s.put("md5=nothex", Some(&s.upload), body.clone()).await;
    assert_eq!(error_code(r).await.1, "bad_request");
    assert_eq!(s.srv.app.cache.index.stats().blobs, 0, "nothing stored");
    assert!(s.srv.temp_files().is_empty());

    // Too large, declared and undeclared (chunked).
    let big = random_bytes(150_000, 33);
    let r = s.put("", Some(&s.upload), big.clone()).await;
    assert_eq!(error_code(r).await.1, "too_large");
    let stream = futures::stream::iter(
        big.chunks(10_000)
            .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let r = s
        .put("", Some(&s.upload), reqwest::Body::wrap_stream(stream))
        .await;
    assert_eq!(error_code(r).await.1, "too_large");
    assert_eq!(s.srv.app.cache.index.stats().blobs, 0);
    assert!(s.srv.temp_files().is_empty());

    // A URL bound to other content: 409; replace=true needs admin; then it rebinds.
    let q = format!("url={}", enc(url));
    assert_eq!(s.put(&q, Some(&s.upload), body.clone()).await.status(), 201);
    let other = random_bytes(60_000, 34);
    let r = s.put(&q, Some(&s.upload), other.clone()).await;
    assert_eq!(error_code(r).await.1, "conflict");
    let r = s
        .put(&format!("{q}&replace=true"), Some(&s.upload), other.clone())
        .await;
    assert_eq!(error_code(r).await.1, "forbidden");
    let r = s
        .put(&format!("{q}&replace=true"), Some(&s.admin), other.clone())
        .await;
    assert_eq!(r.status(), 201);
    let (_, _, got) = s.srv.get_bytes(&s.srv.mirror_url(url)).await;
    assert_eq!(got, other, "the URL now serves the replacement");
    let old: serde_json::Value = s
        .srv
        .get(&s.srv.url(&format!("/api/v1/lookup?md5={}", d.md5)))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        old["urls"],
        serde_json::json!([]),
        "the old blob is unbound but kept"
    );
    let rebind = s
        .journal()
        .into_iter()
        .find(|e| {
            e["event"] == "uploaded" && e["detail"].as_str().unwrap_or("").contains("rebound from")
        })
        .expect("the rebinding is in the journal");
    assert_eq!(rebind["actor"], "ops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_unpin_and_delete() {
    let s = setup(|_| {}).await;
    let up = Upstream::start().await;
    let body = random_bytes(30_000, 35);
    up.route("/a/b-2.tar.xz", Route::ok(body.clone()));
    let url = up.url("/a/b-2.tar.xz");
    s.srv.get_bytes(&s.srv.fetch_url(&url)).await;
    s.srv.app.flights.wait_idle().await;
    let b3 = digests(&body).blake3;

    let r = s
        .admin(
            reqwest::Method::POST,
            &format!("/api/v1/pin/{b3}"),
            &s.admin,
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["pinned"], true);
    let r = s
        .admin(
            reqwest::Method::DELETE,
            &format!("/api/v1/pin/{b3}"),
            &s.admin,
        )
        .await;
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["pinned"],
        false
    );
    let r = s
        .admin(
            reqwest::Method::POST,
            &format!("/api/v1/pin/{}", "a".repeat(64)),
            &s.admin,
        )
        .await;
    assert_eq!(error_code(r).await.1, "not_found");
    let r = s
        .admin(reqwest::Method::POST, "/api/v1/pin/xyz", &s.admin)
        .await;
    assert_eq!(error_code(r).await.1, "bad_request");

    let r = s
        .admin(
            reqwest::Method::DELETE,
            &format!("/api/v1/blobs/{b3}"),
            &s.admin,
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = s
        .srv
        .get(&s.srv.url(&format!("/api/v1/lookup?url={}", enc(&url))))
        .await;
    assert_eq!(r.status(), 404);
    let (_, h, got) = s.srv.get_bytes(&s.srv.fetch_url(&url)).await;
    assert_eq!(
        (h["x-cache"].to_str().unwrap(), got),
        ("MISS", body),
        "refetched after delete"
    );
    s.srv.app.flights.wait_idle().await;
    let events: Vec<String> = s
        .journal()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        events,
        ["fetched", "pinned", "unpinned", "deleted", "fetched"]
    );
    let deleted = &s.journal()[3];
    assert_eq!(deleted["actor"], "ops");
    assert_eq!(deleted["blake3"], b3.as_str());
}

/// Issue 11, item 4: values from upstream reach the CSV export; a spreadsheet must not read
/// them as formulas (OWASP: a leading `'`), while JSONL keeps them verbatim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_export_defuses_formulas_from_upstream() {
    let s = setup(|_| {}).await;
    let up = Upstream::start().await;
    let etag = r#"=HYPERLINK("http://evil.example/","click")"#;
    let modified = "@SUM(1+1)*cmd|' /C calc'!A0";
    up.route(
        "/f/formula.tar.gz",
        Route::ok(random_bytes(100, 37))
            .header("ETag", etag)
            .header("Last-Modified", modified),
    );
    let (status, _, _) = s
        .srv
        .get_bytes(&s.srv.fetch_url(&up.url("/f/formula.tar.gz")))
        .await;
    assert_eq!(status, 200);
    s.srv.app.flights.wait_idle().await;
    let export = |q: &'static str| {
        let s = &s;
        async move {
            let r = s
                .admin(reqwest::Method::GET, &format!("/api/v1/audit{q}"), &s.admin)
                .await;
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        }
    };

    let csv = export("?format=csv").await;
    let mut rows = csv::Reader::from_reader(csv.as_bytes());
    let header = rows.headers().unwrap().clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let row = rows
        .records()
        .map(Result::unwrap)
        .find(|r| &r[col("event")] == "fetched")
        .expect("a fetched event");
    assert_eq!(&row[col("upstream_etag")], format!("'{etag}"), "{csv}");
    assert_eq!(
        &row[col("upstream_last_modified")],
        format!("'{modified}"),
        "{csv}"
    );
    // Nothing else in the export starts a formula.
    for record in csv::Reader::from_reader(csv.as_bytes()).records() {
        for cell in record.unwrap().iter() {
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "{cell:?} in {csv}"
            );
        }
    }

    // JSONL is data, not a spreadsheet: unchanged.
    let jsonl = export("").await;
    let fetched: serde_json::Value = jsonl
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["event"] == "fetched")
        .unwrap();
    assert_eq!(fetched["upstream"]["etag"], etag);
    assert_eq!(fetched["upstream"]["last_modified"], modified);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_export_jsonl_and_csv_match_the_schema() {
    let s = setup(|_| {}).await;
    let up = Upstream::start().await;
    up.route(
        "/f/x.tar.gz",
        Route::ok(random_bytes(1_000, 36)).header("ETag", "\"v1\""),
    );
    up.route("/f/bad.tar.gz", Route::status(500));
    s.srv
        .get_bytes(&s.srv.fetch_url(&up.url("/f/x.tar.gz")))
        .await;
    s.srv
        .get_bytes(&s.srv.fetch_url(&up.url("/f/bad.tar.gz")))
        .await;
    // The failed fill journals its upstream_failed event after its client got the 502: wait
    // for it, so that the upload's event comes after it (under load it could come first).
    s.srv.app.flights.wait_idle().await;
    s.put(
        "url=https%3A%2F%2Fexample.org%2Fy.tar.gz",
        Some(&s.upload),
        "uploaded",
    )
    .await;
    s.srv.app.flights.wait_idle().await;

    let export = |q: &'static str| {
        let s = &s;
        async move {
            s.admin(reqwest::Method::GET, &format!("/api/v1/audit{q}"), &s.admin)
                .await
                .text()
                .await
                .unwrap()
        }
    };
    let jsonl = export("").await;
    let events: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["fetched", "upstream_failed", "uploaded"]);
    assert_eq!(events[0]["upstream"]["etag"], "\"v1\"");
    assert_eq!(events[0]["upstream"]["status"], 200);
    assert_eq!(events[1]["upstream"]["status"], 500);
    assert_eq!(events[2]["actor"], "ci");

    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("schema/audit-event.schema.json").unwrap())
            .unwrap();
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    for e in &events {
        let errors: Vec<String> = validator
            .iter_errors(e)
            .map(|err| err.to_string())
            .collect();
        assert!(errors.is_empty(), "{e}: {errors:?}");
    }

    let csv = export("?format=csv").await;
    let mut rows = csv::Reader::from_reader(csv.as_bytes());
    let header: Vec<String> = rows.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(header, upcache::audit::CSV_HEADER);
    assert_eq!(rows.records().count(), 3);

    // Time filters.
    assert_eq!(export("?since=2999-01-01T00:00:00Z").await, "");
    assert_eq!(
        export("?until=2000-01-01T00:00:00Z").await.lines().count(),
        0
    );
    assert_eq!(
        export("?since=2000-01-01T00:00:00Z").await.lines().count(),
        3
    );
    let r = s
        .admin(
            reqwest::Method::GET,
            "/api/v1/audit?since=yesterday",
            &s.admin,
        )
        .await;
    assert_eq!(error_code(r).await.1, "bad_request");
    let r = s
        .admin(reqwest::Method::GET, "/api/v1/audit?format=xml", &s.admin)
        .await;
    assert_eq!(error_code(r).await.1, "bad_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_token_upload_and_audit_export() {
    // `token new` prints a token and config lines that load.
    let out = upcache()
        .args(["token", "new", "packager", "--scope", "upload,admin"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let token = text
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .unwrap()
        .to_owned();
    let toml_part: String = text
        .lines()
        .skip_while(|l| !l.starts_with("[[auth.tokens]]"))
        .collect::<Vec<_>>()
        .join("\n");
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("c.toml");
    std::fs::write(&cfg_path, &toml_part).unwrap();
    let cfg =
        upcache::Config::load_from(Some(&cfg_path), std::collections::HashMap::new()).unwrap();
    assert_eq!(cfg.auth.tokens[0].name, "packager");
    assert_eq!(cfg.auth.tokens[0].scopes, ["upload", "admin"]);
    let out = upcache()
        .args(["token", "new", "x", "--scope", "root"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    let srv = TestServer::start_with(|c| c.auth = cfg.auth.clone()).await;
    let file = dir.path().join("dead-0.9.tar.bz2");
    let body = random_bytes(300_000, 37);
    std::fs::write(&file, &body).unwrap();
    let d = digests(&body);
    let mut cmd = upcache();
    cmd.arg("upload")
        .arg(&file)
        .args([
            "--url",
            "https://gone.example/dead-0.9.tar.bz2",
            "--md5",
            &d.md5,
            "--server",
            &srv.base,
        ])
        .env("UPCACHE_TOKEN", &token);
    let out = output(cmd).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let links = String::from_utf8(out.stdout).unwrap();
    assert!(
        links.contains(&format!("/by-md5/{}/dead-0.9.tar.bz2", d.md5)),
        "{links}"
    );
    assert!(
        links.contains("/https/gone.example/dead-0.9.tar.bz2"),
        "{links}"
    );
    let (_, h, got) = srv
        .get_bytes(&srv.mirror_url("https://gone.example/dead-0.9.tar.bz2"))
        .await;
    assert_eq!((h["x-cache"].to_str().unwrap(), got), ("HIT", body));

    // A wrong md5 fails with the server's message and exit 1.
    let mut cmd = upcache();
    cmd.arg("upload").arg(&file).args([
        "--md5",
        &"0".repeat(32),
        "--server",
        &srv.base,
        "--token",
        &token,
    ]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected"));

    let mut cmd = upcache();
    cmd.args(["audit", "export", "--format", "csv", "--server", &srv.base])
        .env("UPCACHE_TOKEN", &token);
    let out = output(cmd).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = String::from_utf8(out.stdout).unwrap();
    assert!(csv.starts_with("seq,time,event,"), "{csv}");
    assert!(
        csv.contains(",uploaded,https://gone.example/dead-0.9.tar.bz2,"),
        "{csv}"
    );
    let mut cmd = upcache();
    cmd.args(["audit", "export", "--server", &srv.base, "--token", "wrong"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1));
}

/// Issue 11, item 8: bidi controls and line separators in a file name (an upload's
/// `filename=`, a URL's last segment) never reach `Content-Disposition`, in either parameter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidi_controls_never_reach_content_disposition() {
    let s = setup(|c| c.server.public_url = String::new()).await;
    let hidden = [
        "%E2%80%AA",
        "%E2%80%AB",
        "%E2%80%AC",
        "%E2%80%AD",
        "%E2%80%AE",
        "%E2%81%A6",
        "%E2%81%A7",
        "%E2%81%A8",
        "%E2%81%A9",
        "%E2%80%A8",
        "%E2%80%A9",
    ];
    let check = |what: &str, h: &reqwest::header::HeaderMap, want: &str| {
        let cd = h["content-disposition"].to_str().unwrap().to_owned();
        for enc in hidden {
            assert!(!cd.to_ascii_uppercase().contains(enc), "{what}: {cd}");
        }
        assert_eq!(cd, want, "{what}");
    };

    // An upload named "evil<RLO>zg.rat.exe" (shown as "evilexe.tar.gz" by a bidi renderer).
    let body = random_bytes(1_000, 38);
    let d = digests(&body);
    let r = s
        .put(
            "filename=evil%E2%80%AEzg.rat.exe",
            Some(&s.upload),
            body.clone(),
        )
        .await;
    assert_eq!(r.status(), 201);
    let v: serde_json::Value = r.json().await.unwrap();
    let link = v["links"][0].as_str().unwrap().to_owned();
    let (st, h, got) = s.srv.get_bytes(&link).await;
    assert_eq!((st.as_u16(), got), (200, body));
    check(&link, &h, "attachment; filename=\"evilzg.rat.exe\"");
    let by_md5 = s
        .srv
        .url(&format!("/by-md5/{}/a%E2%80%A8b%E2%81%A6c.tar.gz", d.md5));
    let (st, h, _) = s.srv.get_bytes(&by_md5).await;
    assert_eq!(st, 200);
    check(&by_md5, &h, "attachment; filename=\"abc.tar.gz\"");

    // A URL whose last segment hides a right-to-left override and a line separator, with a
    // non-ASCII letter so that `filename*` is sent too.
    let up = Upstream::start().await;
    let path = "/dl/%C3%BC%E2%80%AEzg.rat%E2%80%A8.exe";
    up.route(path, Route::ok(random_bytes(500, 39)));
    let url = up.url(path);
    let want = "attachment; filename=\"_zg.rat.exe\"; filename*=UTF-8''%C3%BCzg.rat.exe";
    for (what, u) in [
        ("miss", s.srv.fetch_url(&url)),
        ("hit", s.srv.mirror_url(&url)),
    ] {
        let (st, h, _) = s.srv.get_bytes(&u).await;
        assert_eq!(st, 200, "{what}");
        check(what, &h, want);
        s.srv.app.flights.wait_idle().await;
    }
}
