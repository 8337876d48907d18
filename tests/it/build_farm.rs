//! The recipes of docs/build-farm.md, each tried with the real tool (issue 13 items 2 and 8):
//! dnf with `proxy=` against a createrepo_c repository that gains a new version, rpmbuild
//! fetching `Source0:` through `http_proxy`, curl and wget through `http_proxy`, pip through
//! `https_proxy` with interception, and installing the CA with Debian's
//! `update-ca-certificates` (into a private directory: nothing on the host changes).
//!
//! Clients run as child processes on the blocking pool, so the in-process server keeps its
//! runtime threads.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::intercept::*;
use crate::common::server::*;
use crate::common::upstream::*;
use serde_json::Value;

/// Run `cmd` to its end off the runtime threads: (exit code, stdout, stderr).
async fn run(mut cmd: Command) -> (i32, String, String) {
    let shown = format!("{cmd:?}");
    let o = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `cmd` with no proxy settings from the environment, then `vars`.
fn clean_env(cmd: &mut Command, vars: &[(&str, &str)]) {
    clear_proxy_env(cmd);
    for (k, v) in vars {
        cmd.env(k, v);
    }
}

const HELLO_SPEC: &str = "\
Name: upcache-hello
Version: %{ver}
Release: 1
Summary: a package for the build-farm tests
License: MIT
BuildArch: noarch
%description
A package for the build-farm tests.
%install
mkdir -p %{buildroot}/usr/share/upcache-hello
echo %{ver} > %{buildroot}/usr/share/upcache-hello/version
%files
/usr/share/upcache-hello/version
";

/// Build `upcache-hello-<ver>` with rpmbuild into `repo`, and (re)generate the repository
/// metadata there with createrepo_c.
async fn add_to_repo(work: &Path, repo: &Path, ver: &str) {
    let spec = work.join("hello.spec");
    std::fs::write(&spec, HELLO_SPEC).unwrap();
    let top = work.join(format!("top-{ver}"));
    let mut cmd = Command::new("rpmbuild");
    cmd.arg("-bb")
        .arg("--define")
        .arg(format!("_topdir {}", top.display()))
        .arg("--define")
        .arg(format!("ver {ver}"))
        .arg(&spec);
    let (code, out, err) = run(cmd).await;
    assert_eq!(code, 0, "rpmbuild: {out}\n{err}");
    let rpm = format!("upcache-hello-{ver}-1.noarch.rpm");
    std::fs::create_dir_all(repo).unwrap();
    std::fs::copy(top.join("RPMS/noarch").join(&rpm), repo.join(&rpm)).unwrap();
    let mut cmd = Command::new("createrepo_c");
    cmd.arg("-q").arg(repo);
    let (code, out, err) = run(cmd).await;
    assert_eq!(code, 0, "createrepo_c: {out}\n{err}");
}

/// Serve every file under `dir` at `prefix/<relative path>`, with an ETag of its content and
/// conditional requests honoured, as a real web server would.
fn serve_dir(up: &Upstream, dir: &Path, prefix: &str) {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, &mut files);
    for file in files {
        let rel = file.strip_prefix(dir).unwrap().to_str().unwrap();
        let body = std::fs::read(&file).unwrap();
        let etag = format!("\"{}\"", &sha256_hex(&body)[..16]);
        let modified = httpdate::fmt_http_date(file.metadata().unwrap().modified().unwrap());
        up.route(
            &format!("{prefix}/{rel}"),
            Route::ok(body)
                .header("ETag", &etag)
                .header("Last-Modified", &modified)
                .conditional(),
        );
    }
}

/// `dnf repoquery --refresh` of the test repository with upcache as its `proxy=`, in its own
/// installroot, config and cache: nothing of the host's dnf setup is read or written.
async fn dnf_versions(work: &Path, baseurl: &str, proxy: &str) -> Vec<String> {
    let conf = work.join("dnf.conf");
    let repos = work.join("repos.d");
    std::fs::create_dir_all(&repos).unwrap();
    std::fs::write(
        &conf,
        format!(
            "[main]\nreposdir={}\ncachedir={}\ngpgcheck=0\n\n[farm]\nname=farm\nbaseurl={baseurl}\ngpgcheck=0\n",
            repos.display(),
            work.join("dnf-cache").display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new("dnf");
    cmd.arg("-q")
        .arg(format!("--config={}", conf.display()))
        .arg(format!("--installroot={}", work.join("root").display()))
        .args(["--releasever=1", "--disablerepo=*", "--enablerepo=farm"])
        .arg(format!("--setopt=proxy={proxy}"))
        .args(["--refresh", "repoquery", "--qf", "%{name}-%{version}"])
        .arg("upcache-hello");
    clean_env(&mut cmd, &[]);
    let (code, out, err) = run(cmd).await;
    assert_eq!(code, 0, "dnf: {out}\n{err}");
    let mut versions: Vec<String> = out.lines().map(str::to_owned).collect();
    versions.sort();
    versions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dnf_through_upcache_sees_a_new_package_once_volatile_ttl_has_passed() {
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    let up = Upstream::start().await;
    add_to_repo(work.path(), &repo, "1.0").await;
    serve_dir(&up, &repo, "/repo");
    let v1_repomd = std::fs::read(repo.join("repodata/repomd.xml")).unwrap();
    let baseurl = up.url("/repo/");
    let repomd = "/repo/repodata/repomd.xml";

    let srv = TestServer::start_with(|c| c.cache.volatile_ttl = Duration::from_secs(3600)).await;
    let versions = dnf_versions(work.path(), &baseurl, &srv.base).await;
    assert_eq!(versions, ["upcache-hello-1.0"]);
    assert_eq!(up.hits(repomd), 1);
    let ua = up.requests(repomd)[0]
        .header("user-agent")
        .unwrap()
        .to_owned();
    assert!(ua.starts_with("upcache/"), "dnf went through upcache: {ua}");
    srv.app.flights.wait_idle().await;

    // Version 2.0 is published: a new package and new metadata under the same repomd.xml.
    add_to_repo(work.path(), &repo, "2.0").await;
    serve_dir(&up, &repo, "/repo");
    // Within volatile_ttl, the cached metadata is served without asking upstream.
    let versions = dnf_versions(work.path(), &baseurl, &srv.base).await;
    assert_eq!(versions, ["upcache-hello-1.0"]);
    assert_eq!(up.hits(repomd), 1);

    // The TTL has passed (driven by the configuration: a restart with volatile_ttl = 0).
    let (dir, mut cfg) = srv.shut_down().await;
    cfg.cache.volatile_ttl = Duration::ZERO;
    let srv = TestServer::start_in(dir, cfg);
    let versions = dnf_versions(work.path(), &baseurl, &srv.base).await;
    assert_eq!(versions, ["upcache-hello-1.0", "upcache-hello-2.0"]);
    // dnf may read repomd.xml more than once in a run; with volatile_ttl = 0 each read after
    // the first revalidates (a 304 once rebound), unless it joins the one in flight.
    let asked = up.requests(repomd);
    assert!(asked.len() >= 2, "{asked:#?}");
    let v1_etag = format!("\"{}\"", &sha256_hex(&v1_repomd)[..16]);
    assert_eq!(
        asked[1].header("if-none-match"),
        Some(v1_etag.as_str()),
        "a conditional revalidation quoting the stored copy's ETag"
    );
    srv.app.flights.wait_idle().await;
    let events = srv.journal_events();
    let updated: Vec<&Value> = events.iter().filter(|e| e["event"] == "updated").collect();
    assert_eq!(updated.len(), 1, "{events:?}");
    assert!(updated[0]["url"].as_str().unwrap().ends_with(repomd));
    assert!(!events.iter().any(|e| e["event"] == "drift"));

    // Unchanged since: upstream answers 304 and dnf still sees both.
    let before = up.hits(repomd);
    let versions = dnf_versions(work.path(), &baseurl, &srv.base).await;
    assert_eq!(versions, ["upcache-hello-1.0", "upcache-hello-2.0"]);
    assert!(up.hits(repomd) > before);
    srv.app.flights.wait_idle().await;
    let updated = srv.journal_events();
    let updated = updated.iter().filter(|e| e["event"] == "updated");
    assert_eq!(updated.count(), 1, "no new content, no new binding");
    let m = srv.get(&srv.url("/metrics")).await.text().await.unwrap();
    assert!(
        m.lines()
            .any(|l| l.contains("result=\"revalidated\"") && !l.ends_with(" 0")),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpmbuild_fetches_source0_through_http_proxy_and_the_second_build_is_a_hit() {
    let up = Upstream::start().await;
    let tarball = random_bytes(40_000, 13);
    up.route("/src/hello-1.0.tar.gz", Route::ok(tarball.clone()));
    let srv = TestServer::start().await;
    let work = tempfile::tempdir().unwrap();
    let spec = work.path().join("hello.spec");
    let source = up.url("/src/hello-1.0.tar.gz");
    std::fs::write(
        &spec,
        format!(
            "Name: hello\nVersion: 1.0\nRelease: 1\nSummary: s\nLicense: MIT\n\
             Source0: {source}\n%description\nd\n%files\n"
        ),
    )
    .unwrap();
    for build in ["a", "b"] {
        let top = work.path().join(build);
        // rpmbuild downloads into SOURCES but does not create it.
        std::fs::create_dir_all(top.join("SOURCES")).unwrap();
        let mut cmd = Command::new("rpmbuild");
        cmd.arg("-bs")
            .arg("--define")
            .arg(format!("_topdir {}", top.display()))
            .args(["--define", "_disable_source_fetch 0"])
            .arg(&spec);
        clean_env(&mut cmd, &[("http_proxy", &srv.base)]);
        let (code, out, err) = run(cmd).await;
        assert_eq!(code, 0, "rpmbuild: {out}\n{err}");
        let fetched = std::fs::read(top.join("SOURCES/hello-1.0.tar.gz")).unwrap();
        assert_eq!(fetched, tarball);
        srv.app.flights.wait_idle().await;
    }
    assert_eq!(
        up.hits("/src/hello-1.0.tar.gz"),
        1,
        "the second build hit the cache"
    );
    assert!(srv.app.cache.index.url(&source).unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_and_wget_through_http_proxy() {
    let up = Upstream::start().await;
    let body = random_bytes(20_000, 14);
    up.route("/gnu/hello-2.12.tar.gz", Route::ok(body.clone()));
    let srv = TestServer::start().await;
    let url = up.url("/gnu/hello-2.12.tar.gz");
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let mut x_cache = Vec::new();
    for tool in ["wget", "curl", "wget"] {
        let mut cmd = Command::new(tool);
        match tool {
            "wget" => cmd.args(["-q", "-S", "-O"]).arg(&out).arg(&url),
            _ => cmd
                .args(["-sS", "-f", "-D", "/dev/stderr", "-o"])
                .arg(&out)
                .arg(&url),
        };
        clean_env(&mut cmd, &[("http_proxy", &srv.base)]);
        let (code, stdout, stderr) = run(cmd).await;
        assert_eq!(code, 0, "{tool}: {stdout}\n{stderr}");
        assert_eq!(std::fs::read(&out).unwrap(), body);
        let seen = stderr
            .lines()
            .find_map(|l| {
                let (n, v) = l.trim().split_once(':')?;
                n.eq_ignore_ascii_case("x-cache")
                    .then(|| v.trim().to_owned())
            })
            .unwrap_or_else(|| panic!("{tool} showed no X-Cache: {stderr}"));
        x_cache.push(seen);
        srv.app.flights.wait_idle().await;
    }
    assert_eq!(x_cache, ["MISS", "HIT", "HIT"]);
    assert_eq!(up.hits("/gnu/hello-2.12.tar.gz"), 1);
}

/// A wheel for `name` `ver`, made by Python's zipfile (a wheel is a zip with metadata).
async fn make_wheel(dir: &Path, name: &str, ver: &str) -> (String, Vec<u8>) {
    let file = format!("{name}-{ver}-py3-none-any.whl");
    let script = r#"
import sys, zipfile
path, name, ver = sys.argv[1:4]
di = f"{name}-{ver}.dist-info"
files = {
    f"{name}/__init__.py": "",
    f"{di}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {ver}\n",
    f"{di}/WHEEL": "Wheel-Version: 1.0\nGenerator: upcache-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = "".join(f"{n},,\n" for n in files) + f"{di}/RECORD,,\n"
with zipfile.ZipFile(path, "w") as z:
    for n, text in files.items():
        z.writestr(n, text)
    z.writestr(f"{di}/RECORD", record)
"#;
    let path = dir.join(&file);
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(script).arg(&path).args([name, ver]);
    let (code, out, err) = run(cmd).await;
    assert_eq!(code, 0, "{out}\n{err}");
    (file, std::fs::read(&path).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pip_download_through_https_proxy_with_interception() {
    // The index pages are metadata: made volatile here, as docs/build-farm.md recommends.
    let s = Setup::start(|c| {
        c.cache.volatile.push("*/simple/*".into());
        c.cache.volatile_ttl = Duration::ZERO;
    })
    .await;
    let work = tempfile::tempdir().unwrap();
    let (wheel, bytes) = make_wheel(work.path(), "upcachehello", "1.0").await;
    let index = format!(
        "<!DOCTYPE html><html><body><a href=\"/packages/{wheel}#sha256={}\">{wheel}</a></body></html>\n",
        sha256_hex(&bytes)
    );
    s.up.route(
        "/simple/upcachehello/",
        Route::ok(index.into_bytes())
            .header("Content-Type", "text/html")
            .header("ETag", "\"index-1\"")
            .conditional(),
    );
    s.up.route(&format!("/packages/{wheel}"), Route::ok(bytes.clone()));
    for round in ["first", "second"] {
        let dest = work.path().join(round);
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "pip", "download", "--no-deps", "--no-cache-dir"])
            .args([
                "--disable-pip-version-check",
                "--retries",
                "0",
                "--index-url",
            ])
            .arg(s.url("/simple/"))
            .arg("--cert")
            .arg(&s.ca_pem)
            .arg("-d")
            .arg(&dest)
            .arg("upcachehello");
        via_proxy(&mut cmd, &s.srv.base);
        // This machine's environment points requests (and so pip) at its own bundle and a
        // local wheel directory; either would override the recipe under test.
        for var in [
            "REQUESTS_CA_BUNDLE",
            "CURL_CA_BUNDLE",
            "PIP_CERT",
            "PIP_FIND_LINKS",
            "PIP_INDEX_URL",
            "PIP_EXTRA_INDEX_URL",
        ] {
            cmd.env_remove(var);
        }
        let (code, out, err) = run(cmd).await;
        assert_eq!(code, 0, "pip: {out}\n{err}");
        assert_eq!(std::fs::read(dest.join(&wheel)).unwrap(), bytes);
        s.srv.app.flights.wait_idle().await;
    }
    // The wheel came from upstream once; the index page was revalidated (304) the second time.
    assert_eq!(s.up.hits(&format!("/packages/{wheel}")), 1);
    let asked = s.up.requests("/simple/upcachehello/");
    assert_eq!(asked.len(), 2);
    assert_eq!(asked[1].header("if-none-match"), Some("\"index-1\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_installed_with_update_ca_certificates_is_trusted_through_https_proxy() {
    // Debian's tool (package ca-certificates, there with curl); Fedora has update-ca-trust.
    if !Path::new("/usr/sbin/update-ca-certificates").exists() {
        eprintln!("skipped: no update-ca-certificates here (not a Debian-like host)");
        return;
    }
    let s = Setup::start(|_| {}).await;
    s.up.route("/f/x-1.0.tar.gz", Route::ok(random_bytes(3000, 15)));
    // Debian's recipe, relocated into a private directory tree.
    let root = tempfile::tempdir().unwrap();
    let dir = |d: &str| {
        let p = root.path().join(d);
        std::fs::create_dir_all(&p).unwrap();
        p
    };
    let (local, etc, share, hooks) = (dir("local"), dir("etc"), dir("share"), dir("hooks"));
    std::fs::copy(&s.ca_pem, local.join("upcache.crt")).unwrap();
    let conf = root.path().join("ca-certificates.conf");
    std::fs::write(&conf, "").unwrap();
    let mut cmd = Command::new("update-ca-certificates");
    cmd.arg("--certsconf")
        .arg(&conf)
        .arg("--certsdir")
        .arg(&share)
        .arg("--localcertsdir")
        .arg(&local)
        .arg("--etccertsdir")
        .arg(&etc)
        .arg("--hooksdir")
        .arg(&hooks);
    let (code, out, err) = run(cmd).await;
    assert_eq!(code, 0, "update-ca-certificates: {out}\n{err}");
    assert!(out.contains("1 added"), "{out}");
    let bundle = etc.join("ca-certificates.crt");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-f", "-o", "/dev/null", "-D", "-", "--cacert"])
        .arg(&bundle)
        .arg(s.url("/f/x-1.0.tar.gz"));
    via_proxy(&mut cmd, &s.srv.base);
    let (code, out, err) = run(cmd).await;
    assert_eq!(code, 0, "curl: {out}\n{err}");
    assert!(out.to_ascii_lowercase().contains("x-cache: miss"), "{out}");
    // With a bundle that lacks it (the origin's own CA only), the handshake fails.
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-f", "-o", "/dev/null", "--cacert"])
        .arg(&s.origin_ca.cert_path)
        .arg(s.url("/f/x-1.0.tar.gz"));
    via_proxy(&mut cmd, &s.srv.base);
    let (code, _, _) = run(cmd).await;
    assert_ne!(
        code, 0,
        "curl must not trust an interception CA it was not given"
    );
}
