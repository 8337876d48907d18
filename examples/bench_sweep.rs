//! Sweeper benchmark for `scripts/bench.sh`: a data directory with N blobs (each bound to a
//! URL, written in bulk), then, each in a fresh process so that memory is measured from
//! nothing: start-up after a clean shutdown (no walk), start-up after a crash (the full walk)
//! plus one sweeper pass with nothing to evict, and start-up plus a pass that evicts 10 %.
//! Prints the time of each (the scrub's apart) and each process's RSS as JSON.
//!
//! ```text
//! bench_sweep --blobs 100000
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use clap::Parser;
use serde_json::{Value, json};
use upcache::Service;
use upcache::index::{BlobMeta, Origin, UrlRecord};
use upcache::store::Digester;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 100_000)]
    blobs: u64,
    /// Bytes per blob.
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Internal: run one phase (setup, idle, evict) on this data directory.
    #[arg(long, requires = "data")]
    phase: Option<String>,
    #[arg(long)]
    data: Option<PathBuf>,
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn config(args: &Args, data: &Path, evicting: bool) -> upcache::Config {
    let mut cfg = upcache::Config::default();
    cfg.storage.data_dir = data.to_owned();
    let bytes = args.blobs * args.size as u64;
    if evicting {
        cfg.cache.max_size = bytes * 100 / 85; // 85 % full
        cfg.cache.high_watermark = 0.80;
        cfg.cache.low_watermark = 0.765; // ~10 % of the blobs go
    } else {
        cfg.cache.max_size = bytes * 2; // half full: nothing to evict
    }
    cfg
}

fn main() {
    let args = Args::parse();
    let Some(phase) = args.phase.clone() else {
        return driver(&args);
    };
    let data = args.data.clone().expect("--data");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let t = Instant::now();
    let app =
        Service::open(config(&args, &data, phase == "evict"), rt.handle().clone()).expect("open");
    let open_s = t.elapsed().as_secs_f64();
    let out = if phase == "setup" {
        setup(&args, &app);
        json!({"setup_s": t.elapsed().as_secs_f64()})
    } else if phase == "startup" {
        json!({"startup_s": open_s})
    } else {
        let rss_before = status_kib("VmRSS:");
        let t = Instant::now();
        let r = app.sweep().expect("sweep");
        json!({
            "startup_s": open_s,
            "rss_after_startup_mib": rss_before / 1024,
            "pass_s": t.elapsed().as_secs_f64(),
            "peak_rss_mib": status_kib("VmHWM:") / 1024,
            "scrubbed": r.scrubbed,
            "scrub_s": r.scrub_ms as f64 / 1000.0,
            "evicted": r.evicted,
        })
    };
    println!("{out}");
}

/// Run each phase in a fresh process and merge their reports.
fn driver(args: &Args) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let me = std::env::current_exe().expect("own path");
    let run = |phase: &str| -> Value {
        let out = Command::new(&me)
            .args([
                "--blobs",
                &args.blobs.to_string(),
                "--size",
                &args.size.to_string(),
            ])
            .args(["--phase", phase, "--data"])
            .arg(&data)
            .output()
            .expect("run a phase");
        assert!(
            out.status.success(),
            "{phase}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("phase report")
    };
    let setup = run("setup");
    // After the clean "shutdown" of the setup: ready without the walk.
    let clean = run("startup");
    // As after a crash: no marker, the full walk before serving.
    let _ = std::fs::remove_file(data.join("clean-shutdown"));
    let idle = run("idle");
    let evict = run("evict");
    println!(
        "{}",
        json!({
            "blobs": args.blobs,
            "setup_s": setup["setup_s"],
            "startup_clean_s": clean["startup_s"],
            "startup_after_crash_s": idle["startup_s"],
            "rss_after_startup_mib": idle["rss_after_startup_mib"],
            "idle_pass_s": idle["pass_s"],
            "idle_pass_peak_rss_mib": idle["peak_rss_mib"],
            "idle_scrubbed": idle["scrubbed"],
            "idle_scrub_s": idle["scrub_s"],
            "evicting_pass_s": evict["pass_s"],
            "evicting_pass_peak_rss_mib": evict["peak_rss_mib"],
            "evicted": evict["evicted"],
            "evicting_scrub_s": evict["scrub_s"],
        })
    );
}

/// N blobs of `size` bytes, each bound to its own URL.
fn setup(args: &Args, app: &Service) {
    for i in 0..args.blobs {
        let mut content = vec![0u8; args.size];
        content[..8].copy_from_slice(&i.to_le_bytes());
        let mut d = Digester::new();
        d.update(&content);
        let digests = d.finish();
        // In bulk: the file written in place, no fsync per blob (the service's commit fsyncs
        // the file and its directory, which made a 1M set take 1,107 s); one sync at the end.
        let path = app.cache.store.blob_path(&digests.blake3);
        let dir = path.parent().expect("fan-out dir");
        if !dir.is_dir() {
            std::fs::create_dir_all(dir).expect("fan-out dir");
        }
        std::fs::write(&path, &content).expect("write");
        let meta = BlobMeta {
            digests: digests.clone(),
            size: args.size as u64,
            content_type: None,
            first_seen: i as i64,
            last_access: i as i64,
            access_count: 0,
            origin: Origin::Upstream,
            pinned: false,
            placement: upcache::index::Placement::Local,
        };
        let url = format!("https://example.org/pkg/{i}.tar.gz");
        let record = UrlRecord {
            url: url.clone(),
            blake3: digests.blake3.clone(),
            status: 200,
            content_type: None,
            etag: None,
            last_modified: None,
            final_url: url,
            fetched_at: i as i64,
            instance: "bench".into(),
        };
        app.cache.index.bind(&meta, &record).expect("bind");
    }
    app.cache.index.flush_blocking().expect("flush");
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    // As a clean shutdown leaves it: the next start is ready at once.
    app.cache.mark_clean_shutdown().expect("marker");
}
