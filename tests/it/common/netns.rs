//! Tests that need "public" addresses run in a network namespace of their own, so that they
//! never change the host's network (DESIGN, "Test environment rules").
//!
//! The outer test re-executes its own test binary under `unshare --net` (root only), asking
//! libtest for one `#[ignore]`d inner test by its exact name. The inner test, in the new
//! namespace, brings `lo` up, puts the addresses it needs on it and runs server and upstreams
//! in-process there: traffic to those addresses never leaves the namespace, and an address
//! that is not on `lo` is unreachable (nothing is routed out of it).
//!
//! ```ignore
//! #[test]
//! fn outer() {
//!     common::netns::run_inner("inner");
//! }
//!
//! #[tokio::test]
//! #[ignore = "runs inside the network namespace made by outer"]
//! async fn inner() {
//!     if !common::netns::enter("inner", &["203.0.113.7/32"]) {
//!         return;
//!     }
//!     // ...
//! }
//! ```

use std::process::Command;

/// Set for the inner run; an inner test started any other way does nothing.
const ENV: &str = "UPCACHE_TEST_NETNS";

/// Run the inner test `name` of `module` (the caller's `module_path!()`) of this test binary in
/// a new network namespace and fail if it fails; skip with a message when namespaces cannot be
/// made (not root, no `unshare`).
pub fn run_inner(module: &str, name: &str) {
    // libtest names a test by its path below the crate: `policy::inner` in `it::policy`.
    let test = match module.split_once("::") {
        Some((_crate, path)) => format!("{path}::{name}"),
        None => name.to_owned(),
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: {name} needs root to create a network namespace (unshare --net)");
        return;
    }
    let probe = Command::new("unshare").args(["--net", "true"]).output();
    match probe {
        Ok(out) if out.status.success() => {}
        other => {
            eprintln!("skipped: {name}: cannot create a network namespace: {other:?}");
            return;
        }
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new("unshare")
        .arg("--net")
        .arg(&exe)
        .args([
            test.as_str(),
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV, name)
        .output()
        .expect("unshare runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} in a network namespace: {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    // Show what the inner test printed, as if it ran here.
    eprint!("{stderr}");
}

/// In the inner test: whether this process runs in the namespace made for `name` by
/// [`run_inner`]; if so, bring `lo` up and add `addrs` (CIDR notation, v4 or v6) to it.
/// Anywhere else (e.g. `--run-ignored`), prints why and returns false: the host's network is
/// never touched.
pub fn enter(name: &str, addrs: &[&str]) -> bool {
    if std::env::var(ENV).as_deref() != Ok(name) {
        eprintln!("skipped: {name} runs only inside the network namespace its outer test makes");
        return false;
    }
    ip(&["link", "set", "lo", "up"]);
    for addr in addrs {
        if addr.contains(':') {
            // Without `nodad` a new IPv6 address may be "tentative" for a moment, and binding
            // it fails with EADDRNOTAVAIL.
            ip(&["-6", "addr", "add", addr, "dev", "lo", "nodad"]);
        } else {
            ip(&["-4", "addr", "add", addr, "dev", "lo"]);
        }
    }
    true
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2) runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
