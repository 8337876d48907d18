//! The command line as a user meets it, through the real binary: help on every argument,
//! a hint where a token is missing, connection errors that keep their cause, each failure
//! printed once, size and duration errors that say what is expected, "did you mean" for
//! mistyped configuration keys (issue 16).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};

fn upcache() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_upcache"));
    for var in [
        "RUST_LOG",
        "UPCACHE_SERVER",
        "UPCACHE_CONFIG",
        "UPCACHE_TOKEN",
    ] {
        c.env_remove(var);
    }
    c
}

fn run(cmd: &mut Command) -> (Option<i32>, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("upcache runs");
    (
        status.code(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

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
