//! Prefetch jobs (`POST /api/v1/prefetch`, status, `upcache prefetch`) and revalidation with
//! drift detection (`POST /api/v1/revalidate`, `upcache prefetch --revalidate`).

use crate::common::fixtures::{admin, output, sha256, upcache};
use crate::common::server::*;
use crate::common::upstream::*;
use serde_json::{Value, json};
use upcache::jobs::Kind;

async fn post_job(
    srv: &TestServer,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> reqwest::Response {
    let mut rb = srv.client.post(srv.url(path)).json(&body);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    rb.send().await.unwrap()
}

/// Start a job, wait for it to finish, return its status as the API reports it.
async fn run_job(srv: &TestServer, kind: Kind, token: Option<&str>, urls: &[String]) -> Value {
    let r = post_job(srv, kind.path(), token, json!({ "urls": urls })).await;
    assert_eq!(r.status(), 202);
    let started: Value = r.json().await.unwrap();
    let id = started["id"].as_str().unwrap().to_owned();
    let status_url = started["status_url"].as_str().unwrap().to_owned();
    assert_eq!(status_url, format!("{}/{id}", kind.path()), "a path");
    srv.app.jobs.get(kind, &id).unwrap().wait().await;
    let mut rb = srv.client.get(srv.url(&status_url));
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    let r = rb.send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_caches_every_url_and_reports_each_one() {
    let up = Upstream::start().await;
    let bodies: Vec<_> = (0..3)
        .map(|i| random_bytes(50_000 + i, 90 + i as u64))
        .collect();
    for (i, b) in bodies.iter().enumerate() {
        up.route(&format!("/p/pkg-{i}.tar.gz"), Route::ok(b.clone()));
    }
    let srv = TestServer::start().await;
    let mut urls: Vec<String> = (0..3)
        .map(|i| up.url(&format!("/p/pkg-{i}.tar.gz")))
        .collect();
    urls.push(up.url("/p/missing.tar.gz"));
    urls.push("gopher://example.org/x".into());
    let status = run_job(&srv, Kind::Prefetch, None, &urls).await;
    assert_eq!(
        (&status["total"], &status["done"], &status["failed"]),
        (&json!(5), &json!(3), &json!(2)),
        "{status}"
    );
    let items = status["items"].as_array().unwrap();
    for (i, b) in bodies.iter().enumerate() {
        assert_eq!(items[i]["url"], urls[i].as_str());
        assert_eq!(items[i]["state"], "cached");
        assert_eq!(items[i]["sha256"], sha256(b).as_str());
        assert_eq!(items[i]["size"], b.len());
        assert!(items[i]["md5"].is_string());
        assert!(items[i]["error"].is_null());
    }
    assert_eq!(items[3]["state"], "failed");
    assert!(items[3]["error"].as_str().unwrap().contains("not found"));
    assert_eq!(items[4]["state"], "failed");
    assert!(
        items[4]["error"]
            .as_str()
            .unwrap()
            .contains("unsupported scheme")
    );
    // Cached: hits, one upstream request each.
    for (i, b) in bodies.iter().enumerate() {
        let (_, h, got) = srv.get_bytes(&srv.fetch_url(&urls[i])).await;
        assert_eq!(h["x-cache"], "HIT");
        assert_eq!(&got, b);
        assert_eq!(up.hits(&format!("/p/pkg-{i}.tar.gz")), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_joins_a_download_in_progress() {
    let up = Upstream::start().await;
    let body = random_bytes(400_000, 95);
    let gate = Gate::new();
    up.route(
        "/j/big.tar.gz",
        Route::ok(body.clone()).hold_at(100_000, gate.clone()),
    );
    let srv = TestServer::start().await;
    let url = up.url("/j/big.tar.gz");
    let client_get = srv.get(&srv.fetch_url(&url)).await;
    gate.reached().await;
    let r = post_job(&srv, "/api/v1/prefetch", None, json!({ "urls": [url] })).await;
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    gate.open();
    assert_eq!(client_get.bytes().await.unwrap(), body);
    srv.app.jobs.get(Kind::Prefetch, &id).unwrap().wait().await;
    let status = srv.app.jobs.get(Kind::Prefetch, &id).unwrap().status();
    assert_eq!(status["items"][0]["state"], "cached", "{status}");
    assert_eq!(
        up.hits("/j/big.tar.gz"),
        1,
        "the prefetch joined the client's fill"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_downloads_are_bounded() {
    let up = Upstream::start().await;
    let gates: Vec<Gate> = (0..3).map(|_| Gate::new()).collect();
    for (i, g) in gates.iter().enumerate() {
        up.route(
            &format!("/b/{i}.tar.gz"),
            Route::ok(random_bytes(1000, 96)).hold_headers(g.clone()),
        );
    }
    // upstream_concurrency 2: jobs take at most half of it, one download at a time.
    let srv = TestServer::start_with(|c| c.limits.upstream_concurrency = 2).await;
    assert_eq!(srv.app.jobs.parallel(), 1);
    let urls: Vec<String> = (0..3).map(|i| up.url(&format!("/b/{i}.tar.gz"))).collect();
    let r = post_job(&srv, "/api/v1/prefetch", None, json!({ "urls": urls })).await;
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (i, g) in gates.iter().enumerate() {
        g.reached().await;
        assert_eq!(srv.app.flights.len(), 1, "item {i}: one download at a time");
        assert_eq!(up.total_hits(), i + 1);
        let status = srv.app.jobs.get(Kind::Prefetch, &id).unwrap().status();
        let fetching = status["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["state"] == "fetching")
            .count();
        assert_eq!(fetching, 1, "{status}");
        g.open();
    }
    srv.app.jobs.get(Kind::Prefetch, &id).unwrap().wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_requests_are_validated() {
    let srv = TestServer::start().await;
    for (body, what) in [
        (json!({ "urls": [] }), "empty"),
        (json!({ "url": ["http://a/b"] }), "unknown field"),
        (json!(["http://a/b"]), "not an object"),
    ] {
        let r = post_job(&srv, "/api/v1/prefetch", None, body).await;
        let (code, error, _) = error_code(r).await;
        assert_eq!((code, error.as_str()), (400, "bad_request"), "{what}");
    }
    let too_many: Vec<String> = (0..=upcache::jobs::MAX_URLS)
        .map(|i| format!("http://a.example/{i}.tar.gz"))
        .collect();
    let r = post_job(&srv, "/api/v1/prefetch", None, json!({ "urls": too_many })).await;
    assert_eq!(error_code(r).await.0, 400);
    let r = srv.get(&srv.url("/api/v1/prefetch/0123456789abcdef")).await;
    assert_eq!(error_code(r).await.1, "not_found");
    let r = srv.get(&srv.url("/api/v1/prefetch")).await;
    assert_eq!(error_code(r).await.1, "method_not_allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_command_prints_lines_and_exits_1_listing_failures() {
    let up = Upstream::start().await;
    up.route("/c/a-1.0.tar.gz", Route::ok(random_bytes(1234, 97)));
    up.route("/c/b-1.0.tar.gz", Route::ok(random_bytes(2345, 98)));
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("urls.txt");
    std::fs::write(
        &list,
        format!(
            "# release 1.0\n{}\n\n  {}  \n",
            up.url("/c/a-1.0.tar.gz"),
            up.url("/c/b-1.0.tar.gz")
        ),
    )
    .unwrap();
    let mut cmd = upcache();
    cmd.args(["prefetch", "-f"])
        .arg(&list)
        .args(["--server", &srv.base]);
    let out = output(cmd).await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.lines().count(), 2, "one line per URL:\n{stdout}");
    assert!(stdout.lines().all(|l| l.starts_with("cached")), "{stdout}");
    assert!(stdout.contains(&up.url("/c/a-1.0.tar.gz")), "{stdout}");
    assert!(stderr.contains("2 cached, 0 failed"), "{stderr}");

    let mut cmd = upcache();
    cmd.args([
        "prefetch",
        &up.url("/c/a-1.0.tar.gz"),
        &up.url("/c/gone.tar.gz"),
    ])
    .env("UPCACHE_SERVER", &srv.base);
    let out = output(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("1 cached, 1 failed"), "{stderr}");
    assert!(
        stderr.contains(&format!("failed     {}", up.url("/c/gone.tar.gz"))),
        "the failed URL is listed:\n{stderr}"
    );
    assert!(stderr.contains("1 of 2 urls failed"), "{stderr}");

    let mut c = upcache();
    c.arg("prefetch");
    let out = output(c).await;
    assert_eq!(out.status.code(), Some(2), "no URL is a usage error");
}

/// A server with an admin token whose alerts go to `hook`.
async fn admin_server(hook: &str) -> (TestServer, String) {
    let (token, admin) = admin();
    let hook = hook.to_owned();
    let srv = TestServer::start_with(move |c| {
        c.auth.tokens = vec![admin];
        c.alerts.webhook_url = hook;
    })
    .await;
    (srv, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revalidation_detects_drift_and_keeps_serving_the_bound_bytes() {
    let up = Upstream::start().await;
    let original = random_bytes(80_000, 99);
    let regenerated = random_bytes(80_000, 100);
    let stable = random_bytes(5_000, 101);
    up.route("/gh/v1.0.tar.gz", Route::ok(original.clone()));
    up.route("/gh/stable.tar.gz", Route::ok(stable.clone()));
    let hook_gate = Gate::new();
    up.route("/hook", Route::status(204).hold_headers(hook_gate.clone()));
    let (srv, admin) = admin_server(&up.url("/hook")).await;
    let url = up.url("/gh/v1.0.tar.gz");
    let stable_url = up.url("/gh/stable.tar.gz");
    run_job(
        &srv,
        Kind::Prefetch,
        None,
        &[url.clone(), stable_url.clone()],
    )
    .await;

    // Upstream regenerates the tarball under the same URL.
    up.route("/gh/v1.0.tar.gz", Route::ok(regenerated.clone()));

    let body = json!({ "urls": [url] });
    let r = post_job(&srv, "/api/v1/revalidate", None, body.clone()).await;
    assert_eq!(error_code(r).await.1, "unauthorized");
    let status = run_job(
        &srv,
        Kind::Revalidate,
        Some(&admin),
        &[url.clone(), stable_url.clone()],
    )
    .await;
    assert_eq!(
        (&status["done"], &status["failed"], &status["drift"]),
        (&json!(2), &json!(0), &json!(1)),
        "{status}"
    );
    let drifted = &status["items"][0];
    assert_eq!(drifted["state"], "drift");
    assert_eq!(drifted["sha256"], sha256(&original).as_str());
    assert_eq!(drifted["drift"]["sha256"], sha256(&regenerated).as_str());
    assert_eq!(status["items"][1]["state"], "unchanged");

    // The URL keeps serving the original bytes.
    let (_, h, b) = srv.get_bytes(&srv.fetch_url(&url)).await;
    assert_eq!(h["x-cache"], "HIT");
    assert_eq!(b, original);
    // The new bytes are kept, unbound and pinned, for inspection.
    let r = srv
        .get(&srv.url(&format!("/api/v1/lookup?sha256={}", sha256(&regenerated))))
        .await;
    let new: Value = r.json().await.unwrap();
    assert_eq!(new["urls"], json!([]));
    assert_eq!(new["pinned"], true);
    assert_eq!(new["present"], true);
    // A drift event with both digests and the admin as actor.
    let journal = std::fs::read_to_string(srv.data_dir().join("journal.jsonl")).unwrap();
    let drift: Value = journal
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["event"] == "drift")
        .expect("a drift event");
    assert_eq!(drift["url"], url.as_str());
    assert_eq!(drift["actor"], "ops");
    assert_eq!(drift["sha256"], sha256(&regenerated).as_str());
    let detail = drift["detail"].as_str().unwrap();
    assert!(detail.contains(&sha256(&original)), "{detail}");
    assert!(detail.contains(&sha256(&regenerated)), "{detail}");
    // And a drift alert went to the webhook.
    hook_gate.reached().await;
    hook_gate.open();
    let hook = &up.requests("/hook")[0];
    assert_eq!(hook.method, "POST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_revalidate_command_reports_drift_and_exits_1() {
    let up = Upstream::start().await;
    up.route("/r/x-2.0.tar.gz", Route::ok(random_bytes(3000, 102)));
    let (srv, admin) = admin_server("").await;
    let url = up.url("/r/x-2.0.tar.gz");
    run_job(&srv, Kind::Prefetch, None, std::slice::from_ref(&url)).await;

    let revalidate = |token: Option<String>| {
        let mut cmd = upcache();
        cmd.args(["prefetch", "--revalidate", &url, "--server", &srv.base]);
        if let Some(t) = token {
            cmd.env("UPCACHE_TOKEN", t);
        }
        output(cmd)
    };
    let out = revalidate(Some(admin.clone())).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("unchanged"), "{stdout}");

    up.route("/r/x-2.0.tar.gz", Route::ok(random_bytes(3000, 103)));
    let out = revalidate(Some(admin)).await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("drift"), "{stdout}");
    assert!(stderr.contains("1 drifted"), "{stderr}");

    // Without a token the command says how to give one, before asking the server (issue 16).
    let out = revalidate(None).await;
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("set UPCACHE_TOKEN or --token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
