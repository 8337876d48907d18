//! `upcache spec list` against rpm's own macro engine on realistic specs, and `upcache spec
//! check` through the real binary against an in-process server and a scripted upstream.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::fixtures::{digests, upcache};
use crate::common::server::*;
use crate::common::upstream::*;
use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/specs");

/// Each fixture is expanded for several distributions, given as `--define`s to both tools.
const FLAVOURS: &[&[&str]] = &[
    &["dist .oe2403", "openEuler 1"],
    &["dist .fc40", "fedora 40"],
    &["dist .fc41", "fedora 41", "_without_docs 1", "use_mirror 1"],
    &[],
];

/// Where `rpmspec --shell` is told the sources live, so file names can be cut out of paths.
const SOURCEDIR: &str = "/upcache-test-sources";

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn require_rpmspec() {
    if Command::new("rpmspec").arg("--version").output().is_err() {
        panic!(
            "rpmspec is required to compare spec expansion with rpm's own \
             (Debian package rpm; scripts/test.sh installs it)"
        );
    }
}

fn fixtures() -> Vec<PathBuf> {
    let mut specs: Vec<PathBuf> = std::fs::read_dir(FIXTURES)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "spec"))
        .collect();
    specs.sort();
    assert!(specs.len() >= 8, "fixtures missing in {FIXTURES}");
    specs
}

/// One entry: tag, number, value, file.
type Item = (String, u32, String, String);

fn define_args(defines: &[&str]) -> Vec<String> {
    defines
        .iter()
        .flat_map(|d| ["--define".to_owned(), d.to_string()])
        .collect()
}

/// `upcache spec list --json`, in spec order. These specs must not produce warnings.
fn ours(spec: &Path, defines: &[&str]) -> Vec<Item> {
    let out = upcache()
        .args(["spec", "list", "--json"])
        .arg(spec)
        .args(define_args(defines))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        out.stderr.is_empty(),
        "no warnings expected for {}:\n{}",
        spec.display(),
        text(&out)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let obj = e.as_object().unwrap();
            let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
            assert_eq!(keys.len(), 5, "exactly tag, number, value, url, file: {e}");
            let value = e["value"].as_str().unwrap().to_owned();
            match e["url"].as_str() {
                Some(url) => {
                    assert!(value.contains("://"), "{e}");
                    assert_eq!(url, value.split('#').next().unwrap(), "{e}");
                }
                None => assert!(e["url"].is_null() && !value.contains("://"), "{e}"),
            }
            (
                e["tag"].as_str().unwrap().to_owned(),
                e["number"].as_u64().unwrap() as u32,
                value,
                e["file"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// `rpmspec -P` output parsed for Source/Patch lines in preambles and `%sourcelist`/
/// `%patchlist` sections, numbered as rpm numbers unnumbered tags: one more than the highest
/// number seen for that tag (from 0). In spec order; the file is not known here.
fn rpm_parsed(spec: &Path, defines: &[&str]) -> Vec<(String, u32, String)> {
    let out = Command::new("rpmspec")
        .arg("-P")
        .args(define_args(defines))
        .arg(spec)
        .output()
        .unwrap();
    assert!(out.status.success(), "rpmspec -P failed: {}", text(&out));
    const SECTIONS: &[&str] = &[
        "package",
        "description",
        "prep",
        "build",
        "install",
        "check",
        "clean",
        "files",
        "changelog",
        "pre",
        "post",
        "preun",
        "postun",
        "pretrans",
        "posttrans",
        "verifyscript",
        "sourcelist",
        "patchlist",
        "generate_buildrequires",
    ];
    let mut section = "preamble".to_owned();
    let mut highest: [Option<u32>; 2] = [None, None];
    let mut items = Vec::new();
    let mut add = |tag: &str, number: Option<u32>, value: &str| {
        let i = usize::from(tag == "Patch");
        let n = number.unwrap_or_else(|| highest[i].map_or(0, |h| h + 1));
        highest[i] = Some(highest[i].map_or(n, |h| h.max(n)));
        items.push((tag.to_owned(), n, value.to_owned()));
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(word) = line.strip_prefix('%') {
            let word = word.split_whitespace().next().unwrap_or("").to_lowercase();
            if SECTIONS.contains(&word.as_str()) {
                section = if word == "package" {
                    "preamble".to_owned()
                } else {
                    word
                };
                continue;
            }
        }
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        match section.as_str() {
            "sourcelist" => add("Source", None, t),
            "patchlist" => add("Patch", None, t),
            "preamble" => {
                let lower = t.to_lowercase();
                let tag = if lower.starts_with("source") {
                    "Source"
                } else if lower.starts_with("patch") {
                    "Patch"
                } else {
                    continue;
                };
                let Some((head, value)) = t.split_once(':') else {
                    continue;
                };
                let digits = head[tag.len()..].trim();
                let number = (!digits.is_empty()).then(|| digits.parse::<u32>().unwrap());
                add(tag, number, value.trim());
            }
            _ => {}
        }
    }
    items
}

/// Every entry as rpm itself numbered and named it: `%{SOURCEURLn}` and `%{SOURCEn}` (and the
/// PATCH ones) from `rpmspec --shell` after parsing the spec. Sorted by tag and number.
fn rpm_macros(spec: &Path, defines: &[&str]) -> Vec<Item> {
    use std::io::Write;
    let lua = r#"%{lua: for i = 0, 20000 do for _, t in ipairs({"SOURCE", "PATCH"}) do local u = rpm.expand("%{?" .. t .. "URL" .. i .. "}"); if u ~= "" then print("UPCACHE\t" .. t .. "\t" .. i .. "\t" .. rpm.expand("%{" .. t .. i .. "}") .. "\t" .. u .. "\n") end end end}"#;
    let mut child = Command::new("rpmspec")
        .arg("--shell")
        .args(define_args(defines))
        .args(["--define", &format!("_sourcedir {SOURCEDIR}")])
        .arg(spec)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{lua}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "rpmspec --shell failed: {}",
        text(&out)
    );
    let mut items: Vec<Item> = String::from_utf8_lossy(&out.stdout)
        .lines()
        // The shell echoes a prompt; the marker finds our lines wherever they start.
        .filter_map(|l| l.find("UPCACHE\t").map(|i| &l[i + "UPCACHE\t".len()..]))
        .map(|l| {
            let f: Vec<&str> = l.splitn(4, '\t').collect();
            let tag = if f[0] == "SOURCE" { "Source" } else { "Patch" };
            let path = f[2];
            let file = path
                .strip_prefix(SOURCEDIR)
                .unwrap_or_else(|| panic!("{path} is not under {SOURCEDIR}"))
                .trim_start_matches('/');
            (
                tag.to_owned(),
                f[1].parse().unwrap(),
                f[3].to_owned(),
                file.to_owned(),
            )
        })
        .collect();
    items.sort();
    items
}

#[test]
fn spec_list_agrees_with_rpmspec_on_every_fixture() {
    require_rpmspec();
    let mut compared = 0;
    for spec in fixtures() {
        for defines in FLAVOURS {
            let name = format!("{} with {defines:?}", spec.display());
            let ours = ours(&spec, defines);
            assert!(!ours.is_empty(), "{name}: no entries");
            let parsed = rpm_parsed(&spec, defines);
            let ours_in_order: Vec<(String, u32, String)> = ours
                .iter()
                .map(|(t, n, v, _)| (t.clone(), *n, v.clone()))
                .collect();
            assert_eq!(ours_in_order, parsed, "{name}: against rpmspec -P");
            let mut sorted = ours.clone();
            sorted.sort();
            assert_eq!(
                sorted,
                rpm_macros(&spec, defines),
                "{name}: against rpm's %{{SOURCEURLn}}/%{{SOURCEn}}"
            );
            compared += 1;
        }
    }
    assert_eq!(compared, fixtures().len() * FLAVOURS.len());
}

#[test]
fn rpmspec_flag_lets_rpm_expand_the_spec() {
    require_rpmspec();
    let run = |spec: &Path, extra: &[&str], path: Option<&str>| {
        let mut cmd = upcache();
        cmd.args(["spec", "list", "--json"]).args(extra).arg(spec);
        if let Some(p) = path {
            cmd.env("PATH", p);
        }
        cmd.output().unwrap()
    };
    let json = |out: &Output| -> Value {
        assert!(out.status.success(), "{}", text(out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // The same answer as the built-in expansion on every fixture and flavour.
    for spec in fixtures() {
        for defines in FLAVOURS {
            let defs = define_args(defines);
            let mut with: Vec<&str> = defs.iter().map(String::as_str).collect();
            let ours = json(&run(&spec, &with, None));
            with.push("--rpmspec");
            let rpms = json(&run(&spec, &with, None));
            assert_eq!(ours, rpms, "{} with {defines:?}", spec.display());
        }
    }
    // What the built-in evaluator refuses, rpm runs when asked to.
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("arith.spec");
    std::fs::write(
        &spec,
        "Name: a\nVersion: 1\nRelease: 1\nSummary: s\nLicense: MIT\n\
         Source0: https://example.org/a-%(echo $((1 + 2))).tgz\n%description\nd\n",
    )
    .unwrap();
    let out = run(&spec, &[], None);
    assert_eq!(
        json(&out)[0]["value"],
        "https://example.org/a-%(echo $((1 + 2))).tgz"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "shell expansion %(echo $((1 + 2))) is left unexpanded: arithmetic expansion (upcache never runs a shell)"
        ),
        "{}",
        text(&out)
    );
    let out = run(&spec, &["--rpmspec"], None);
    assert_eq!(json(&out)[0]["value"], "https://example.org/a-3.tgz");
    // Without rpmspec: a clear error, exit 1.
    let out = run(&spec, &["--rpmspec"], Some(dir.path().to_str().unwrap()));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--rpmspec needs rpmspec, which is not installed"),
        "{}",
        text(&out)
    );
}

#[test]
fn flavours_choose_different_sources() {
    // The comparison above is only as good as the branches it exercises.
    let spec = Path::new(FIXTURES).join("conditional-sources.spec");
    let source0 = |defines: &[&str]| ours(&spec, defines)[0].2.clone();
    assert!(source0(FLAVOURS[0]).contains("repo.openeuler.org"));
    assert!(source0(FLAVOURS[1]).contains("/v2/libfoo-2.4.7.tar.xz"));
    assert!(source0(FLAVOURS[3]).ends_with("/releases/libfoo-2.4.7.tar.gz"));
    let git = Path::new(FIXTURES).join("git.spec");
    assert_eq!(ours(&git, FLAVOURS[0]).len(), 15, "with docs");
    assert_eq!(ours(&git, FLAVOURS[2]).len(), 14, "--without docs");
    let heavy = Path::new(FIXTURES).join("macro-heavy.spec");
    assert!(
        ours(&heavy, FLAVOURS[2])[0]
            .2
            .starts_with("https://mirrors.example.org/")
    );
}

#[test]
fn spec_list_table_warnings_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("w.spec");
    std::fs::write(
        &spec,
        "Name: w\nVersion: 1\nRelease: 1\nSummary: s\nLicense: MIT\n\
         Source0: https://example.org/%{name}-%{version}.tgz\n\
         Source1: https://example.org/%{nosuch}/%{lua: os.exit(1)}.tgz\nPatch0: local.patch\n",
    )
    .unwrap();
    let out = upcache()
        .args(["spec", "list"])
        .arg(&spec)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("ENTRY"), "{stdout}");
    let row = |label: &str| {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no {label} in {stdout}"));
        line.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        row("Source0"),
        ["Source0", "url", "w-1.tgz", "https://example.org/w-1.tgz"]
    );
    assert_eq!(
        row("Patch0"),
        ["Patch0", "local", "local.patch", "local.patch"]
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(":7: warning: Source1: macro %{nosuch} is not defined; left unexpanded"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            ":7: warning: Source1: Lua macro %{lua: os.exit(1)} is left unexpanded: \"os\" is not available"
        ),
        "{stderr}"
    );

    let out = upcache()
        .args(["spec", "list"])
        .arg(dir.path().join("missing.spec"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "unreadable: {}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));

    std::fs::write(&spec, "Name: w\nSource0: a\nSource0: b\n").unwrap();
    let out = upcache()
        .args(["spec", "list"])
        .arg(&spec)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "unparsable: {}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 3: Source 0 is defined twice"));

    let out = upcache()
        .args(["spec", "list", "--define", "novalue"])
        .arg(&spec)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "usage: {}", text(&out));
    let out = upcache().args(["spec", "list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "usage: {}", text(&out));
}

// ---------------------------------------------------------------------------------------------
// spec check

/// A spec whose sources live on `up`.
fn write_spec(dir: &Path, up: &Upstream, sources: &str) -> PathBuf {
    let spec = dir.join("hello.spec");
    std::fs::write(
        &spec,
        format!(
            "%global origin {}\n\
             Name: hello\nVersion: 1.0\nRelease: 1%{{?dist}}\nSummary: t\nLicense: MIT\n\
             {sources}\n%description\nt\n",
            up.base_url()
        ),
    )
    .unwrap();
    spec
}

async fn check(args: Vec<String>, env: Vec<(&'static str, String)>) -> Output {
    let mut cmd = upcache();
    cmd.args(["spec", "check"]).args(args).envs(env);
    tokio::task::spawn_blocking(move || cmd.output().expect("upcache runs"))
        .await
        .unwrap()
}

async fn check_json(spec: &Path, srv: &TestServer, extra: &[String]) -> (Output, Value) {
    let mut args = vec![
        spec.display().to_string(),
        "--json".to_owned(),
        "--server".to_owned(),
        srv.base.clone(),
    ];
    args.extend(extra.iter().cloned());
    let out = check(args, vec![]).await;
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out)));
    (out, v)
}

fn row<'a>(v: &'a Value, file: &str) -> &'a Value {
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["file"] == file && e["tag"].is_string())
        .unwrap_or_else(|| panic!("no spec entry for {file} in {v:#}"))
}

fn sources_row<'a>(v: &'a Value, file: &str) -> &'a Value {
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["file"] == file && e["tag"].is_null())
        .unwrap_or_else(|| panic!("no sources row for {file} in {v:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fetches_every_source_once_then_hits() {
    let up = Upstream::start().await;
    let tarball = random_bytes(300_000, 41);
    let patch = random_bytes(2_000, 42);
    up.route("/pub/hello-1.0.tar.gz", Route::ok(tarball.clone()));
    up.route("/pub/fix-build.patch", Route::ok(patch.clone()));
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(
        dir.path(),
        &up,
        "Source0: %{origin}/pub/%{name}-%{version}.tar.gz\nPatch: %{origin}/pub/fix-build.patch",
    );

    // Table output, server from the environment.
    let out = check(
        vec![spec.display().to_string()],
        vec![("UPCACHE_SERVER", srv.base.clone())],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let header = stdout.lines().next().unwrap();
    for col in ["FILE", "URL", "SIZE", "MD5", "SHA256", "STATUS"] {
        assert!(header.contains(col), "{header}");
    }
    let want = digests(&tarball);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("Source0"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains("hello-1.0.tar.gz"), "{line}");
    assert!(line.contains(&up.url("/pub/hello-1.0.tar.gz")), "{line}");
    assert!(line.contains("300000"), "{line}");
    assert!(
        line.contains(&want.md5) && line.contains(&want.sha256),
        "{line}"
    );
    assert!(line.contains("MISS") && line.ends_with("ok"), "{line}");

    // Second run: everything is a hit; upstream saw each file once.
    let (out, v) = check_json(&spec, &srv, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(v["ok"], true);
    let s0 = row(&v, "hello-1.0.tar.gz");
    assert_eq!(s0["tag"], "Source");
    assert_eq!(s0["number"], 0);
    assert_eq!(s0["url"], up.url("/pub/hello-1.0.tar.gz"));
    assert_eq!(s0["size"], 300_000);
    assert_eq!(s0["md5"], want.md5.as_str());
    assert_eq!(s0["sha256"], want.sha256.as_str());
    assert_eq!(s0["cache"], "HIT");
    assert_eq!(s0["status"], "ok");
    assert!(s0["error"].is_null());
    let p0 = row(&v, "fix-build.patch");
    assert_eq!(
        (p0["tag"].as_str(), p0["number"].as_u64()),
        (Some("Patch"), Some(0))
    );
    assert_eq!(p0["md5"], digests(&patch).md5.as_str());
    assert_eq!(p0["cache"], "HIT");
    assert_eq!(up.hits("/pub/hello-1.0.tar.gz"), 1);
    assert_eq!(up.hits("/pub/fix-build.patch"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_a_source_upstream_does_not_have() {
    let up = Upstream::start().await;
    up.route("/pub/hello-1.0.tar.gz", Route::ok(random_bytes(5_000, 43)));
    up.route("/pub/gone.patch", Route::status(404));
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(
        dir.path(),
        &up,
        "Source0: %{origin}/pub/%{name}-%{version}.tar.gz\nPatch0: %{origin}/pub/gone.patch",
    );
    let out = check(
        vec![
            spec.display().to_string(),
            "--server".into(),
            srv.base.clone(),
        ],
        vec![],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let message = format!(
        "Patch0 gone.patch: 404 Not Found: {} was not found upstream",
        up.url("/pub/gone.patch")
    );
    assert!(
        stdout.contains(&message),
        "the server's message is shown:\n{stdout}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1 of 2 checks failed"),
        "{}",
        text(&out)
    );

    let (out, v) = check_json(&spec, &srv, &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(v["ok"], false);
    let p0 = row(&v, "gone.patch");
    assert_eq!(p0["status"], "missing");
    assert!(
        p0["error"].as_str().unwrap().contains("not found upstream"),
        "{p0}"
    );
    assert!(p0["md5"].is_null() && p0["size"].is_null());
    assert_eq!(row(&v, "hello-1.0.tar.gz")["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_compares_local_files_by_md5() {
    let up = Upstream::start().await;
    let (a, b) = (random_bytes(10_000, 44), random_bytes(20_000, 45));
    up.route("/pub/hello-1.0.tar.gz", Route::ok(a.clone()));
    up.route("/pub/hello-data-1.0.tar.gz", Route::ok(b.clone()));
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(
        dir.path(),
        &up,
        "Source0: %{origin}/pub/%{name}-%{version}.tar.gz\n\
         Source1: %{origin}/pub/%{name}-data-%{version}.tar.gz",
    );
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    std::fs::write(repo.join("hello-1.0.tar.gz"), &a).unwrap();
    std::fs::write(repo.join("hello-data-1.0.tar.gz"), b"not what upstream has").unwrap();
    let with_dir = ["--dir".to_owned(), repo.display().to_string()];

    let (out, v) = check_json(&spec, &srv, &with_dir).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(v["ok"], false);
    let s0 = row(&v, "hello-1.0.tar.gz");
    assert_eq!(
        (s0["local"].as_str(), s0["status"].as_str()),
        (Some("match"), Some("ok"))
    );
    let s1 = row(&v, "hello-data-1.0.tar.gz");
    assert_eq!(s1["local"], "mismatch");
    assert_eq!(s1["status"], "mismatch");
    let err = s1["error"].as_str().unwrap();
    assert!(
        err.contains(&digests(b"not what upstream has").md5) && err.contains(&digests(&b).md5),
        "both md5s are named: {err}"
    );

    // The same table without --json; then fixed.
    let mut args = vec![
        spec.display().to_string(),
        "--server".into(),
        srv.base.clone(),
    ];
    args.extend(with_dir.iter().cloned());
    let out = check(args.clone(), vec![]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("mismatch"));
    std::fs::write(repo.join("hello-data-1.0.tar.gz"), &b).unwrap();
    let out = check(args, vec![]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(up.hits("/pub/hello-data-1.0.tar.gz"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_verifies_a_dist_git_sources_file() {
    let up = Upstream::start().await;
    let tarball = random_bytes(50_000, 46);
    let patch = random_bytes(3_000, 47);
    up.route("/pub/hello-1.0.tar.gz", Route::ok(tarball.clone()));
    up.route("/pub/fix.patch", Route::ok(patch.clone()));
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(
        dir.path(),
        &up,
        "Source0: %{origin}/pub/%{name}-%{version}.tar.gz\nPatch0: %{origin}/pub/fix.patch",
    );
    let sources = dir.path().join("sources");
    let with_sources = ["--sources".to_owned(), sources.display().to_string()];
    let (t, p) = (digests(&tarball), digests(&patch));

    // Matching: SHA512 (BSD) line for the tarball, old md5 line for the patch.
    std::fs::write(
        &sources,
        format!(
            "SHA512 (hello-1.0.tar.gz) = {}\n{}  fix.patch\n",
            t.sha512, p.md5
        ),
    )
    .unwrap();
    let (out, v) = check_json(&spec, &srv, &with_sources).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let line = sources_row(&v, "hello-1.0.tar.gz");
    assert_eq!(line["status"], "ok");
    assert_eq!(line["checksum"], format!("sha512:{}", t.sha512));
    assert_eq!(line["md5"], t.md5.as_str());
    assert_eq!(line["size"], 50_000);
    assert_eq!(sources_row(&v, "fix.patch")["status"], "ok");

    // Not matching: the tarball's line names other content (here: the patch, which the
    // server holds), and a line names a blob the server has never seen.
    std::fs::write(
        &sources,
        format!(
            "SHA512 (hello-1.0.tar.gz) = {}\nSHA512 (other.tar.gz) = {}\n{}  lost.tar.gz\n",
            p.sha512,
            "0".repeat(128),
            "f".repeat(32)
        ),
    )
    .unwrap();
    let (out, v) = check_json(&spec, &srv, &with_sources).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(v["ok"], false);
    let line = sources_row(&v, "hello-1.0.tar.gz");
    assert_eq!(line["status"], "mismatch", "{line}");
    assert!(
        line["error"].as_str().unwrap().contains(&t.sha512),
        "names what Source0 really is: {line}"
    );
    let line = sources_row(&v, "other.tar.gz");
    assert_eq!(line["status"], "missing");
    assert!(
        line["error"]
            .as_str()
            .unwrap()
            .contains("no blob with sha512"),
        "{line}"
    );
    assert_eq!(sources_row(&v, "lost.tar.gz")["status"], "missing");
    assert_eq!(
        row(&v, "hello-1.0.tar.gz")["status"],
        "ok",
        "the spec entry itself is fine"
    );

    // A malformed sources file is an error of its own.
    std::fs::write(&sources, "SHA1 (a.tgz) = abc\n").unwrap();
    let out = check(
        vec![
            spec.display().to_string(),
            "--server".into(),
            srv.base.clone(),
            "--sources".into(),
            sources.display().to_string(),
        ],
        vec![],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsupported checksum type"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_local_only_sources() {
    let up = Upstream::start().await;
    up.route("/pub/hello-1.0.tar.gz", Route::ok(random_bytes(4_000, 48)));
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(
        dir.path(),
        &up,
        "Source0: %{origin}/pub/%{name}-%{version}.tar.gz\nSource1: %{name}.conf",
    );
    let (out, v) = check_json(&spec, &srv, &[]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "local-only is not an error: {}",
        text(&out)
    );
    let conf = row(&v, "hello.conf");
    assert_eq!(conf["status"], "local");
    assert!(conf["url"].is_null());

    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    let with_dir = ["--dir".to_owned(), repo.display().to_string()];
    let (out, v) = check_json(&spec, &srv, &with_dir).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "absent from --dir: {}",
        text(&out)
    );
    let conf = row(&v, "hello.conf");
    assert_eq!(conf["status"], "missing");
    assert!(
        conf["error"].as_str().unwrap().contains("is not in"),
        "{conf}"
    );

    std::fs::write(repo.join("hello.conf"), b"key = value\n").unwrap();
    let (out, v) = check_json(&spec, &srv, &with_dir).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let conf = row(&v, "hello.conf");
    assert_eq!(conf["status"], "present");
    assert_eq!(conf["md5"], digests(b"key = value\n").md5.as_str());
    assert_eq!(conf["size"], 12);
    assert!(conf["cache"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_json_shape() {
    let up = Upstream::start().await;
    up.route("/pub/hello-1.0.tar.gz", Route::ok(random_bytes(1_000, 49)));
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(
        dir.path(),
        &up,
        "Source: %{origin}/pub/%{name}-%{version}.tar.gz",
    );
    let (out, v) = check_json(&spec, &srv, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mut top: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    top.sort();
    assert_eq!(top, ["entries", "ok"]);
    let e = &v["entries"][0];
    let mut keys: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "cache", "checksum", "error", "file", "local", "md5", "number", "sha256", "size",
            "status", "tag", "url"
        ]
    );
    assert_eq!(e["number"], 0, "an unnumbered Source is Source0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_without_a_server_fails_cleanly() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), &up, "Source0: %{origin}/pub/a.tar.gz");
    // A port nothing listens on: bind one and drop it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = check(
        vec![
            spec.display().to_string(),
            "--server".into(),
            format!("http://127.0.0.1:{port}"),
        ],
        vec![],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("cannot reach"),
        "{}",
        text(&out)
    );
    let out = check(
        vec![
            spec.display().to_string(),
            "--dir".into(),
            dir.path().join("nonexistent").display().to_string(),
        ],
        vec![],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a directory"));
    let out = check(vec!["--json".into()], vec![]).await;
    assert_eq!(out.status.code(), Some(2), "usage error: {}", text(&out));
}
