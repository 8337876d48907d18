//! The command line as a user meets it, through the real binary: help on every argument,
//! a hint where a token is missing, connection errors that keep their cause, each failure
//! printed once, size and duration errors that say what is expected, "did you mean" for
//! mistyped configuration keys (issue 16); `upload --sha256 --filename --replace`, offline
//! `gc`/`verify` that refuse a directory a server holds or one without data, and
//! `audit export --until` (issue 13).

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use crate::common::fixtures::{digests, run, upcache};
use crate::common::server::Process;

/// A loopback URL where nothing listens: connecting is refused.
fn refused_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}/")
}

/// A small file to upload, in a fresh directory.
fn tarball() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-1.0.tar.gz");
    std::fs::write(&file, b"tarball").unwrap();
    let file = file.to_str().unwrap().to_owned();
    (dir, file)
}

/// The help text clap prints after `name` in `--help` output (the rest of that line, or the
/// next line when the name fills the first).
fn help_of(help: &str, name: &str) -> String {
    let mut lines = help
        .lines()
        .skip_while(|l| !l.trim_start().starts_with(name));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("{name} not in\n{help}"));
    let rest = first.trim_start()[name.len()..].trim();
    match rest.is_empty() {
        true => lines.next().unwrap_or_default().trim().to_owned(),
        false => rest.to_owned(),
    }
}

#[test]
fn arguments_that_had_no_help_have_it() {
    for (args, name) in [
        (&["upload", "--help"][..], "<FILE>"),
        (&["gc", "--help"], "--config <FILE>"),
        (&["verify", "--help"], "--config <FILE>"),
        (&["config", "check", "--help"], "--config <FILE>"),
        (&["serve", "--help"], "--config <FILE>"),
        (&["audit", "export", "--help"], "--format <FORMAT>"),
    ] {
        let (code, out, _) = run(upcache().args(args));
        assert_eq!(code, Some(0), "{args:?}");
        let help = help_of(&out, name);
        assert!(
            help.len() > 10 && !help.starts_with('['),
            "{args:?}: {name} has no help: {help:?}\n{out}"
        );
    }
}

#[test]
fn commands_that_need_a_token_say_how_to_give_one() {
    let (_dir, file) = tarball();
    // Nothing listens there: the hint must come before any attempt to connect.
    let server = refused_server();
    let file = file.as_str();
    for (args, command) in [
        (&["upload", file][..], "upload"),
        (&["audit", "export"], "audit export"),
        (
            &["prefetch", "--revalidate", "https://example.org/a.tar.gz"],
            "prefetch --revalidate",
        ),
    ] {
        let (code, _, err) = run(upcache().args(args).args(["--server", &server]));
        assert_eq!(
            err,
            format!("upcache: {command} needs a token: set UPCACHE_TOKEN or --token\n"),
            "{args:?}"
        );
        assert_eq!(code, Some(2), "{args:?}: a usage error");
    }
}

#[test]
fn connection_errors_keep_their_cause_and_show_the_url_as_given() {
    let (dir, file) = tarball();
    let server = refused_server();
    let url = "https://example.org/pub/a-1.0.tar.gz";
    let file = file.as_str();
    for args in [
        &["fetch", url][..],
        &["upload", file, "--url", url, "--token", "t"],
        &["prefetch", url],
        &["audit", "export", "--token", "t"],
    ] {
        let (code, _, err) = run(upcache()
            .args(args)
            .args(["--server", &server])
            .current_dir(dir.path()));
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(
            err.starts_with(&format!("upcache: cannot reach {server}: ")),
            "{args:?}: the server URL as given: {err}"
        );
        assert!(
            err.trim_end().ends_with("connection refused"),
            "{args:?}: the cause: {err}"
        );
        assert!(
            !err.contains('%'),
            "{args:?}: nothing percent-encoded: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
    }
}

/// `data_dir` points at a regular file: opening the data directory fails.
fn data_dir_is_a_file(dir: &Path) -> std::path::PathBuf {
    let bogus = dir.join("not-a-directory");
    std::fs::write(&bogus, b"").unwrap();
    let config = dir.join("upcache.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\ndata_dir = {:?}\n",
            bogus.to_str().unwrap()
        ),
    )
    .unwrap();
    config
}

#[test]
fn data_dir_errors_are_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = data_dir_is_a_file(dir.path());
    for command in ["serve", "gc", "verify"] {
        let (code, _, err) = run(upcache().arg(command).arg("--config").arg(&config));
        assert_eq!(code, Some(1), "{command}: {err}");
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| l.contains("not-a-directory"))
            .collect();
        assert_eq!(lines.len(), 1, "{command}: printed once:\n{err}");
        assert!(lines[0].starts_with("upcache: "), "{command}: {err}");
    }
}

#[test]
fn size_and_duration_errors_say_what_is_expected() {
    let cases = [
        (
            "UPCACHE__CACHE__MAX_SIZE",
            "",
            r#"invalid value for "cache.max_size" (from UPCACHE__CACHE__MAX_SIZE): invalid size "": empty; expected a number of bytes, or a number and a unit, such as "512MiB" or "20GiB""#,
        ),
        (
            "UPCACHE__LIMITS__MAX_UPLOAD_SIZE",
            "GiB",
            r#"invalid size "GiB": it does not start with a number; expected a number of bytes, or a number and a unit"#,
        ),
        (
            "UPCACHE__UPSTREAM__READ_TIMEOUT",
            "",
            r#"invalid duration "": empty; expected a number and a unit, such as "500ms", "90s", "15m", "1h" or "30d""#,
        ),
        (
            "UPCACHE__CACHE__SWEEP_INTERVAL",
            "90",
            r#"invalid duration "90": a unit is needed, such as "90s" or "90m""#,
        ),
    ];
    for (var, value, want) in cases {
        let (code, _, err) = run(upcache().args(["config", "check"]).env(var, value));
        assert_eq!(code, Some(1), "{var}={value:?}");
        assert!(
            err.contains(want),
            "{var}={value:?}:\n got: {err}\nwant: {want}"
        );
        assert!(!err.contains("float"), "{var}={value:?}: {err}");
    }
    let (code, _, err) = run(upcache().args([
        "fetch",
        "https://example.org/a.tar.gz",
        "--read-timeout",
        "5x",
    ]));
    assert_eq!(code, Some(2), "a usage error: {err}");
    assert!(
        err.contains(r#"unknown unit "x"; expected a number and a unit, such as "500ms""#),
        "{err}"
    );
}

#[test]
fn unknown_keys_suggest_the_key_meant() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("upcache.toml");
    std::fs::write(&config, "[cache]\nhigh_watermrk = 0.9\n").unwrap();
    let (code, _, err) = run(upcache().args(["config", "check", "--config"]).arg(&config));
    assert_eq!(code, Some(1));
    assert!(
        err.contains(r#"unknown key "cache.high_watermrk" in "#)
            && err
                .trim_end()
                .ends_with(r#"did you mean "cache.high_watermark"?"#),
        "{err}"
    );
    let (code, _, err) = run(upcache()
        .args(["config", "check"])
        .env("UPCACHE__STORAGE__DATADIR", "/srv/upcache"));
    assert_eq!(code, Some(1));
    assert!(
        err.trim_end().ends_with(
            r#"unknown key "storage.datadir" (from UPCACHE__STORAGE__DATADIR); did you mean "storage.data_dir" (UPCACHE__STORAGE__DATA_DIR)?"#
        ),
        "{err}"
    );
}

/// A config file for `data_dir` with an upload token and an admin token; returns (path,
/// upload token, admin token).
fn config_with_tokens(dir: &Path, data_dir: &Path) -> (std::path::PathBuf, String, String) {
    let (upload, up_sha) = upcache::auth::new_token();
    let (admin, adm_sha) = upcache::auth::new_token();
    let path = dir.join("upcache.toml");
    std::fs::write(
        &path,
        format!(
            "[storage]\ndata_dir = {:?}\n\n[[auth.tokens]]\nname = \"ci\"\nsha256 = \"{up_sha}\"\nscopes = [\"upload\"]\n\n[[auth.tokens]]\nname = \"ops\"\nsha256 = \"{adm_sha}\"\nscopes = [\"admin\"]\n",
            data_dir.to_str().unwrap()
        ),
    )
    .unwrap();
    (path, upload, admin)
}

#[test]
fn upload_takes_sha256_filename_and_replace() {
    let dir = tempfile::tempdir().unwrap();
    let (config, upload, admin) = config_with_tokens(dir.path(), &dir.path().join("data"));
    let srv = Process::spawn(dir.path(), &["--config", config.to_str().unwrap()], &[]);
    let (a, b) = (dir.path().join("a.tar.gz"), dir.path().join("b.tar.gz"));
    std::fs::write(&a, b"first content").unwrap();
    std::fs::write(&b, b"second content").unwrap();
    let (da, db) = (digests(b"first content"), digests(b"second content"));
    let url = "https://dead.example.org/pub/foo-1.0.tar.gz";
    let up = |file: &Path, token: &str, extra: &[&str]| {
        run(upcache()
            .arg("upload")
            .arg(file)
            .args(["--url", url, "--server", &srv.base, "--token", token])
            .args(extra))
    };

    // A wrong sha256: refused, nothing stored.
    let (code, _, err) = up(&a, &upload, &["--sha256", &"0".repeat(64)]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("expected") && err.contains("sha256"), "{err}");

    // The right one, with a file name for the links.
    let (code, out, err) = up(
        &a,
        &upload,
        &[
            "--sha256",
            &da.sha256,
            "--md5",
            &da.md5,
            "--filename",
            "foo-1.0.tar.gz",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.lines()
            .any(|l| l.ends_with(&format!("/by-md5/{}/foo-1.0.tar.gz", da.md5))),
        "{out}"
    );

    // Other content for the bound URL: a conflict that says how to replace.
    let (code, _, err) = up(&b, &upload, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("409") && err.contains("--replace"), "{err}");
    // --replace needs the admin scope ...
    let (code, _, err) = up(&b, &upload, &["--replace"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("403") && err.contains("admin"), "{err}");
    // ... with which the URL is rebound.
    let (code, _, err) = up(&b, &admin, &["--replace", "--sha256", &db.sha256]);
    assert_eq!(code, Some(0), "{err}");
    let lookup = format!(
        "{}/api/v1/lookup?url={}",
        srv.base,
        percent_encoding::utf8_percent_encode(url, percent_encoding::NON_ALPHANUMERIC)
    );
    let out = Command::new("curl")
        .args(["-sS", "-f", &lookup])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sha256"], db.sha256.as_str());

    // --replace without --url is a usage error.
    let (code, _, err) = run(upcache().arg("upload").arg(&b).args([
        "--replace",
        "--server",
        &srv.base,
        "--token",
        &admin,
    ]));
    assert_eq!(code, Some(2), "{err}");
}

/// The data directory as the three offline spellings give it: `--data-dir`, `--config`, and
/// the default `./upcache-data` in the working directory.
fn offline(command: &str, cwd: &Path, how: &[&std::ffi::OsStr]) -> (Option<i32>, String, String) {
    run(upcache().arg(command).args(how).current_dir(cwd))
}

#[test]
fn gc_and_verify_refuse_at_once_while_a_server_holds_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("upcache-data");
    let (config, _, _) = config_with_tokens(dir.path(), &data);
    let mut srv = Process::spawn(dir.path(), &["--config", config.to_str().unwrap()], &[]);
    let ways: [Vec<&std::ffi::OsStr>; 3] = [
        vec!["--data-dir".as_ref(), data.as_os_str()],
        vec!["--config".as_ref(), config.as_os_str()],
        vec![],
    ];
    for command in ["gc", "verify"] {
        for how in &ways {
            let (code, out, err) = offline(command, dir.path(), how);
            assert_eq!(code, Some(1), "{command} {how:?}: {out}{err}");
            assert_eq!(
                err.lines().count(),
                1,
                "{command} {how:?}: one sentence: {err}"
            );
            assert!(
                err.contains("in use by a running upcache server")
                    && err.contains("POST /api/v1/sweep")
                    && err.contains("upcache-data"),
                "{command} {how:?}: {err}"
            );
            assert!(
                !err.contains("WouldBlock") && !err.contains("could not acquire lock"),
                "{command} {how:?}: no raw lock error: {err}"
            );
        }
    }
    // The server stopped: both work.
    srv.kill9();
    for command in ["gc", "verify"] {
        let (code, out, err) = offline(command, dir.path(), &ways[0]);
        assert_eq!(code, Some(0), "{command}: {out}{err}");
    }
}

#[test]
fn verify_and_gc_where_there_is_no_data_exit_1_and_create_nothing() {
    let cwd = tempfile::tempdir().unwrap();
    let empty = cwd.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let missing = cwd.path().join("missing");
    for command in ["verify", "gc"] {
        for how in [
            vec![],
            vec!["--data-dir".as_ref(), empty.as_os_str()],
            vec!["--data-dir".as_ref(), missing.as_os_str()],
        ] {
            let (code, out, err) = offline(command, cwd.path(), &how);
            assert_eq!(code, Some(1), "{command} {how:?}: {out}{err}");
            assert!(
                err.contains("holds no upcache data"),
                "{command} {how:?}: {err}"
            );
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }
    // Nothing created: not ./upcache-data, not the missing directory, nothing in the empty one.
    let mut left: Vec<_> = std::fs::read_dir(cwd.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(left, ["empty"]);
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
}

#[test]
fn audit_export_until_and_since() {
    let dir = tempfile::tempdir().unwrap();
    let (config, upload, admin) = config_with_tokens(dir.path(), &dir.path().join("data"));
    let srv = Process::spawn(dir.path(), &["--config", config.to_str().unwrap()], &[]);
    let export = |extra: &[&str]| -> Vec<serde_json::Value> {
        let (code, out, err) = run(upcache()
            .args(["audit", "export", "--server", &srv.base, "--token", &admin])
            .args(extra));
        assert_eq!(code, Some(0), "{extra:?}: {err}");
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let upload_file = |name: &str, body: &[u8]| {
        let file = dir.path().join(name);
        std::fs::write(&file, body).unwrap();
        let (code, _, err) = run(upcache()
            .arg("upload")
            .arg(&file)
            .args(["--server", &srv.base, "--token", &upload]));
        assert_eq!(code, Some(0), "{err}");
    };
    upload_file("one.tar.gz", b"one");
    let first = export(&[]);
    assert_eq!(first.len(), 1);
    let t1 = first[0]["time"].as_str().unwrap().to_owned();
    // Times have whole seconds: wait for the clock to pass t1 before the second event.
    let t1_at = humantime::parse_rfc3339(&t1).unwrap();
    while std::time::SystemTime::now() < t1_at + std::time::Duration::from_secs(1) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    upload_file("two.tar.gz", b"two");
    let all = export(&[]);
    assert_eq!(all.len(), 2);
    let t2 = all[1]["time"].as_str().unwrap().to_owned();
    assert!(t2 > t1, "{t1} {t2}");

    let until = export(&["--until", &t1]);
    assert_eq!(until.len(), 1, "{until:?}");
    assert_eq!(until[0]["seq"], all[0]["seq"]);
    let since = export(&["--since", &t2]);
    assert_eq!(since.len(), 1, "{since:?}");
    assert_eq!(since[0]["seq"], all[1]["seq"]);
    assert_eq!(export(&["--since", &t1, "--until", &t2]).len(), 2);
    assert!(export(&["--until", "2000-01-01T00:00:00Z"]).is_empty());
    let (code, _, err) = run(upcache()
        .args(["audit", "export", "--server", &srv.base, "--token", &admin])
        .args(["--until", "yesterday"]));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("until") && err.contains("RFC 3339"), "{err}");
}
