//! Issue 16, item 2: the live status page and `GET /api/v1/status`. Over plain HTTP: the JSON
//! document's fields (a download in flight with its progress and clients, an open circuit
//! breaker, a failure with its reason, the hit ratio, disk against the watermarks) and the
//! page's escaping. In a real browser (Debian's chromium, headless, driven over the DevTools
//! protocol): the page refreshes itself, a download's row appears while it runs and
//! disappears when it ends, without a reload; and markup in a failure's reason is text.

use std::time::Duration;

use crate::common::server::TestServer;
use crate::common::upstream::{Gate, Route, Upstream};
use bytes::Bytes;
use serde_json::Value;

/// Wait for a condition no event announces (the status is polled). Bounded only by the test
/// harness's timeout.
async fn until<T>(mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET /api/v1/status`, checked against its schema in schema/openapi.json.
async fn status(srv: &TestServer) -> Value {
    let r = srv.get(&srv.url("/api/v1/status")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let s: Value = r.json().await.unwrap();
    let errors: Vec<String> = schema().iter_errors(&s).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?} in {s}");
    s
}

/// The `Status` schema of the OpenAPI document (the document itself, pointed at it, so that
/// its references resolve).
fn schema() -> jsonschema::Validator {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/openapi.json");
    let mut doc: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    doc["$ref"] = "#/components/schemas/Status".into();
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&doc)
        .unwrap()
}

async fn page(srv: &TestServer) -> String {
    let r = srv.get(&srv.url("/")).await;
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

/// A body of `n` bytes that is not all one value.
fn body(n: usize) -> Bytes {
    (0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into()
}

/// Markup an upstream can put in a failure's reason: a denied content type is quoted.
const PAYLOAD: &str = "video/x-<script>window.pwned=1</script>";

/// A download of `/pub/clip.tar.gz` that fails with [`PAYLOAD`] in its reason, recorded.
async fn fail_with_markup(srv: &TestServer, up: &Upstream) {
    up.route(
        "/pub/clip.tar.gz",
        Route::ok(body(10)).header("Content-Type", PAYLOAD),
    );
    let r = srv.get(&srv.fetch_url(&up.url("/pub/clip.tar.gz"))).await;
    assert_eq!(r.status(), 403);
    // The client hears of the failure before the fill task records it.
    srv.app.flights.wait_idle().await;
}

/// A port on 127.0.0.1 that refuses connections.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_shows_flights_breakers_failures_ratio_and_disk() {
    let srv = TestServer::start_with(|c| {
        c.cache.max_size = 1 << 30;
        c.cache.high_watermark = 0.9;
        c.cache.low_watermark = 0.7;
    })
    .await;
    let up = Upstream::start().await;

    // The schema every answer is checked against does check.
    assert!(!schema().is_valid(&serde_json::json!({"instance": "test"})));
    let s = status(&srv).await;
    assert_eq!(s["instance"], "test");
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s["ready"], true);
    assert_eq!(s["reason"], Value::Null);
    assert!(s["uptime_seconds"].is_u64() && s["started_at"].is_string());
    assert_eq!(s["disk"]["high_watermark"], 0.9);
    assert_eq!(s["disk"]["low_watermark"], 0.7);
    assert_eq!(s["disk"]["max_size"], 1u64 << 30);
    assert_eq!(s["disk"]["total_bytes"], 1u64 << 30);
    assert_eq!(s["downloads"], serde_json::json!([]));
    assert_eq!(s["hit_ratio"]["ratio"], Value::Null);

    // A download held after 64 KiB of 256 KiB, followed by two clients.
    let gate = Gate::new();
    up.route(
        "/pub/slow-1.0.tar.gz",
        Route::ok(body(256 << 10)).hold_at(64 << 10, gate.clone()),
    );
    let url = up.url("/pub/slow-1.0.tar.gz");
    let fetch = srv.fetch_url(&url);
    let first = tokio::spawn(srv.client.get(&fetch).send());
    gate.reached().await;
    let second = tokio::spawn(srv.client.get(&fetch).send());
    let flight = until(async || {
        let s = status(&srv).await;
        let d = s["downloads"].as_array().unwrap().first()?.clone();
        (d["clients"] == 2 && d["bytes"] == 64 << 10).then_some(d)
    })
    .await;
    assert_eq!(flight["url"], url.as_str());
    assert_eq!(flight["total"], 256 << 10);
    assert_eq!(flight["phase"], "streaming");
    assert_eq!(page(&srv).await.matches("class=\"download\"").count(), 1);
    gate.open();
    for client in [first, second] {
        let r = client.await.unwrap().unwrap();
        assert_eq!(r.bytes().await.unwrap(), body(256 << 10));
    }
    srv.app.flights.wait_idle().await;
    assert_eq!(status(&srv).await["downloads"], serde_json::json!([]));
    assert!(!page(&srv).await.contains("class=\"download\""));

    // One hit after the miss: a ratio of 1/3 over the last hour.
    let hit = srv.get(&fetch).await;
    assert_eq!(hit.headers()["x-cache"], "HIT");
    hit.bytes().await.unwrap();
    // A request is counted once its response is over on the server's side too.
    let ratio = until(async || {
        let ratio = status(&srv).await["hit_ratio"].clone();
        (ratio["hits"] == 1 && ratio["misses"] == 2).then_some(ratio)
    })
    .await;
    assert_eq!(ratio["window_seconds"], 3600);
    assert!((ratio["ratio"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);

    // A failure keeps its reason and error code, in JSON as it is (escaped in HTML below).
    fail_with_markup(&srv, &up).await;
    let s = status(&srv).await;
    let failure = &s["failures"][0];
    assert_eq!(failure["url"], up.url("/pub/clip.tar.gz").as_str());
    assert_eq!(failure["error"], "denied_by_policy");
    assert!(
        failure["reason"].as_str().unwrap().contains(PAYLOAD),
        "{failure}"
    );

    // A host refusing connections opens its breaker after a few attempts.
    let dead = format!("http://127.0.0.1:{}/x.tar.gz", closed_port());
    let breaker = until(async || {
        srv.get(&srv.fetch_url(&dead)).await;
        let s = status(&srv).await;
        let b = s["breakers"].as_array().unwrap().first()?.clone();
        (b["state"] == "open").then_some(b)
    })
    .await;
    assert!(
        dead.starts_with(breaker["host"].as_str().unwrap()),
        "{breaker}"
    );
    assert!(breaker["failures"].as_u64().unwrap() >= 5);
    assert!(breaker["retry_in_seconds"].as_u64().unwrap() > 0);
    srv.app.flights.wait_idle().await;
    let s = status(&srv).await;
    assert_eq!(s["failures"][0]["url"], dead.as_str());
    assert_eq!(s["failures"][0]["error"], "upstream_failed");

    // A URL with markup in it: refused upstream (404), listed as a failure.
    let marked = up.url("/pub/<script>window.pwned=1</script>.tar.gz");
    let r = srv.get(&srv.fetch_url(&marked)).await;
    assert_eq!(r.status(), 404);
    srv.app.flights.wait_idle().await;
    assert_eq!(status(&srv).await["failures"][0]["error"], "not_found");

    // The page shows it all, markup from upstream as text.
    let html = page(&srv).await;
    assert_eq!(html.matches("<script").count(), 1, "{html}");
    assert!(!html.contains("<script>window"), "{html}");
    assert!(
        html.contains("video/x-&lt;script&gt;window.pwned=1&lt;/script&gt;"),
        "{html}"
    );
    assert!(html.contains("<h1>upcache test</h1>"));
    for part in [
        "id=\"ready\"><span class=\"good\">ready</span>",
        "low=\"0.7\" high=\"0.9\"",
        "<code>max_size</code> 1.0 GiB",
        "class=\"breaker\"",
        ">open<",
        "class=\"failure\"",
        "denied_by_policy",
        "33.3 % (1 hits, 2 misses)",
        "<script src=\"ui/status.js\" defer></script>",
    ] {
        assert!(html.contains(part), "{part} in {html}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unready_instance_says_why() {
    let srv = TestServer::start().await;
    // The data volume's temp directory is gone: the probe cannot write.
    std::fs::remove_dir_all(srv.data_dir().join("tmp")).unwrap();
    let r = srv.get(&srv.url("/readyz")).await;
    assert_eq!(r.status(), 503);
    let s = status(&srv).await;
    assert_eq!(s["ready"], false);
    let reason = s["reason"].as_str().unwrap();
    assert!(!reason.is_empty());
    let html = page(&srv).await;
    assert!(html.contains("class=\"bad\">not ready</span>"), "{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_script_is_a_separate_file_allowed_by_the_policy() {
    let srv = TestServer::start().await;
    let r = srv.get(&srv.url("/")).await;
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"));
    assert!(!csp.contains("unsafe"), "{csp}");
    let html = r.text().await.unwrap();
    // One script element, loaded from us; nothing inline.
    assert_eq!(html.matches("<script").count(), 1);
    let r = srv.get(&srv.url("/ui/status.js")).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let js = r.text().await.unwrap();
    assert!(js.contains("getElementById(\"live\")"));
    // It builds no markup from data.
    assert!(!js.contains("innerHTML") && !js.contains("insertAdjacentHTML"));
}

/// Run blocking browser work from an async test.
fn browse<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// The text of the page's download rows.
const ROWS: &str = "[...document.querySelectorAll('#downloads tr.download')]\
    .map(r => r.textContent).join('\\n')";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_chromium_a_download_row_appears_and_goes_without_a_reload() {
    if !crate::common::browser::Browser::available() {
        // scripts/test.sh installs chromium; only a machine where it cannot be installed
        // gets here.
        eprintln!("SKIPPED: chromium is not installed (apt-get install chromium)");
        return;
    }
    let srv = TestServer::start().await;
    let up = Upstream::start().await;
    // A failure whose reason carries markup, before the page is loaded.
    fail_with_markup(&srv, &up).await;

    let mut b = browse(crate::common::browser::Browser::launch);
    browse(|| b.navigate(&srv.url("/")));
    // Anything a reload would wipe out.
    browse(|| b.eval("window.loadedOnce = 'yes'"));
    assert_eq!(browse(|| b.eval(ROWS)), "");
    // The markup in the reason is text: shown as written, never run.
    let check_escaped = |b: &mut crate::common::browser::Browser| {
        let failures = b.eval("document.getElementById('failures').textContent");
        assert!(failures.as_str().unwrap().contains(PAYLOAD), "{failures}");
        assert_eq!(b.eval("typeof window.pwned"), "undefined");
        assert_eq!(b.eval("document.scripts.length"), 1);
    };
    browse(|| check_escaped(&mut b));

    // A download starts after the page was loaded: its row appears by itself.
    let gate = Gate::new();
    up.route(
        "/pub/slow-2.0.tar.gz",
        Route::ok(body(256 << 10)).hold_at(64 << 10, gate.clone()),
    );
    let url = up.url("/pub/slow-2.0.tar.gz");
    let client = tokio::spawn(srv.client.get(srv.fetch_url(&url)).send());
    gate.reached().await;
    let row = until(async || {
        let rows = browse(|| b.eval(ROWS));
        let rows = rows.as_str().unwrap();
        (rows.contains(&url) && rows.contains("64.0 KiB of 256.0 KiB")).then(|| rows.to_owned())
    })
    .await;
    assert!(row.contains("streaming"), "{row}");
    assert_eq!(browse(|| b.eval("window.loadedOnce")), "yes", "reloaded");
    let note = browse(|| b.eval("document.getElementById('refreshed').textContent"));
    assert!(note.as_str().unwrap().starts_with("Updated"), "{note}");
    browse(|| check_escaped(&mut b));

    // It ends: the row goes, still without a reload.
    gate.open();
    let r = client.await.unwrap().unwrap();
    assert_eq!(r.bytes().await.unwrap(), body(256 << 10));
    srv.app.flights.wait_idle().await;
    until(async || (browse(|| b.eval(ROWS)) == "").then_some(())).await;
    assert_eq!(browse(|| b.eval("window.loadedOnce")), "yes", "reloaded");
    // What ended is now a recent event.
    let events = browse(|| b.eval("document.getElementById('events').textContent"));
    assert!(events.as_str().unwrap().contains(&url), "{events}");
}
