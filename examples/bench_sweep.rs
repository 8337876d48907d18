//! Sweeper benchmark for `scripts/bench.sh`: a data directory with N blobs (each bound to a
//! URL, written in bulk), then, each in a fresh process so that memory is measured from
//! nothing: start-up after a clean shutdown, start-up after a crash (ready; then the time
//! until the background walk is done) plus one sweeper pass with nothing to evict, and
//! start-up plus a pass that evicts 10 %, and admission into the full cache (100 downloads of
//! one blob's size, each needing one blob evicted: the first walks the index, the others take
//! from what it listed). Prints the time of each (the scrub's apart) and each process's RSS as
//! JSON.
//!
//! ```text
//! bench_sweep --blobs 100000
//! bench_sweep --blobs 1000000 --dir /var/tmp/sweep1m   # keep the set, reuse it next time
//! bench_sweep --blobs 1000000 --phase probe --data /var/tmp/sweep1m/data
//! ```
//!
//! With `--dir` the set is kept there and the next run reuses it: the setup phase then only
//! writes the blobs that are missing (those the evicting pass removed), which takes a minute
//! at 1M instead of nine. `--phase probe` times the steps of a start-up after a crash apart
//! (open, the missing-file check, the walk) with the RSS after each.
//!
//! The process uses mimalloc, as `upcache serve` does, so that RSS is the server's.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use clap::Parser;
use serde_json::{Value, json};
use upcache::Service;
use upcache::index::{BlobMeta, Origin, UrlRecord};
use upcache::store::Digester;

/// The server's allocator (src/main.rs), so that RSS figures are the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 100_000)]
    blobs: u64,
    /// Bytes per blob.
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Internal: run one phase (setup, startup, crash, idle, evict, admit, probe) on this data
    /// directory.
    #[arg(long, requires = "data")]
    phase: Option<String>,
    #[arg(long)]
    data: Option<PathBuf>,
    /// Keep the set in this directory (`<dir>/data`) and reuse it if it is there.
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn config(args: &Args, data: &Path, phase: &str) -> upcache::Config {
    let mut cfg = upcache::Config::default();
    cfg.storage.data_dir = data.to_owned();
    let bytes = args.blobs * args.size as u64;
    if phase == "admit" {
        // Exactly at the high watermark: every download needs room.
        cfg.cache.high_watermark = 0.80;
        cfg.cache.low_watermark = 0.765;
        cfg.cache.max_size = bytes * 5 / 4;
    } else if phase == "evict" {
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
    if phase == "probe" {
        return probe(&args, &data);
    }
    if phase == "crash" {
        // What a crash leaves: the index opened (which takes the saved totals), no marker.
        let index = upcache::index::Index::open(&data.join("index"), 1).expect("index");
        drop(index);
        let _ = std::fs::remove_file(data.join("clean-shutdown"));
        return println!("{{}}");
    }
    let log = Log::install();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let t = Instant::now();
    let app = Service::open(config(&args, &data, &phase), rt.handle().clone()).expect("open");
    let open_s = t.elapsed().as_secs_f64();
    // Start-up reconciliation runs in the background: a pass waits for it (the sweep lock),
    // so it is timed apart, from the start.
    let reconciled_s = (phase != "startup" && log.contains("runs in the background")).then(|| {
        log.wait_for("background reconciliation ");
        assert!(
            !log.contains("background reconciliation failed"),
            "reconciliation failed"
        );
        t.elapsed().as_secs_f64()
    });
    let out = if phase == "setup" {
        let written = setup(&args, &app);
        json!({"setup_s": t.elapsed().as_secs_f64(), "setup_written": written})
    } else if phase == "startup" {
        json!({"startup_s": open_s})
    } else if phase == "admit" {
        let mut ms = Vec::new();
        let size = args.size as u64;
        // The set may lack what an earlier phase evicted: the first download is the room
        // left under the high watermark, plus one blob.
        let usage = app.cache.used().expect("usage");
        let high = (app.cache.config.cache.high_watermark * usage.total_bytes as f64) as u64;
        let room = high.saturating_sub(usage.used_bytes);
        for i in 1..=100 {
            // Nothing is stored here, so the i-th download asks for i blobs' room more: one
            // more blob has to go each time, as if each download before it had been stored.
            let t = Instant::now();
            assert!(rt.block_on(app.admit(room + i * size)), "not admitted");
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        json!({
            "admit_first_ms": ms[0],
            "admit_next_mean_ms": ms[1..].iter().sum::<f64>() / (ms.len() - 1) as f64,
            "admit_next_max_ms": ms[1..].iter().cloned().fold(0.0, f64::max),
            "admit_peak_rss_mib": status_kib("VmHWM:") / 1024,
        })
    } else {
        let rss_before = status_kib("VmRSS:");
        let peak_before = status_kib("VmHWM:");
        let t = Instant::now();
        let r = app.sweep().expect("sweep");
        json!({
            "startup_s": open_s,
            "reconciled_s": reconciled_s,
            "rss_after_startup_mib": rss_before / 1024,
            "peak_rss_startup_mib": peak_before / 1024,
            "pass_s": t.elapsed().as_secs_f64(),
            "peak_rss_mib": status_kib("VmHWM:") / 1024,
            "scrubbed": r.scrubbed,
            "scrub_s": r.scrub_ms as f64 / 1000.0,
            "evicted": r.evicted,
        })
    };
    println!("{out}");
}

/// The process's log lines, kept in memory, so that a phase can wait for one.
#[derive(Clone, Default)]
struct Log(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Log {
    fn install() -> Log {
        let log = Log::default();
        let writer = log.clone();
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .init();
        log
    }

    fn contains(&self, text: &str) -> bool {
        String::from_utf8_lossy(&self.0.lock().expect("log")).contains(text)
    }

    fn wait_for(&self, text: &str) {
        while !self.contains(text) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Run each phase in a fresh process and merge their reports.
fn driver(args: &Args) {
    let temp = tempfile::tempdir().expect("temp dir");
    let data = args.dir.as_deref().unwrap_or(temp.path()).join("data");
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
    // As after a crash: no marker, no saved totals.
    run("crash");
    let idle = run("idle");
    let evict = run("evict");
    let admit = run("admit");
    println!(
        "{}",
        json!({
            "blobs": args.blobs,
            "setup_s": setup["setup_s"],
            "setup_written": setup["setup_written"],
            "startup_clean_s": clean["startup_s"],
            "startup_after_crash_s": idle["startup_s"],
            "reconciled_after_crash_s": idle["reconciled_s"],
            "rss_after_startup_mib": idle["rss_after_startup_mib"],
            "startup_peak_rss_mib": idle["peak_rss_startup_mib"],
            "idle_pass_s": idle["pass_s"],
            "idle_pass_peak_rss_mib": idle["peak_rss_mib"],
            "idle_scrubbed": idle["scrubbed"],
            "idle_scrub_s": idle["scrub_s"],
            "evicting_pass_s": evict["pass_s"],
            "evicting_pass_peak_rss_mib": evict["peak_rss_mib"],
            "evicted": evict["evicted"],
            "evicting_scrub_s": evict["scrub_s"],
            "admit_first_ms": admit["admit_first_ms"],
            "admit_next_mean_ms": admit["admit_next_mean_ms"],
            "admit_next_max_ms": admit["admit_next_max_ms"],
            "admit_peak_rss_mib": admit["admit_peak_rss_mib"],
        })
    );
}

/// Time and RSS of the steps of a start-up after a crash, apart: opening the index (the
/// database's recovery and the recount of the totals), dropping entries whose file is gone, and the
/// walk of the blob files. Read-only on a complete set.
fn probe(args: &Args, data: &Path) {
    let cfg = config(args, data, "probe");
    let rss = || status_kib("VmRSS:") / 1024;
    let base = rss();
    let t = Instant::now();
    let index =
        upcache::index::Index::open(&data.join("index"), cfg.cache.memory_entries).expect("index");
    let open_s = t.elapsed().as_secs_f64();
    let after_open = rss();
    let t = Instant::now();
    let mut stored = 0u64;
    index
        .visit_stored_blobs(None, |_| {
            stored += 1;
            Ok::<_, upcache::index::IndexError>(true)
        })
        .expect("visit");
    let visit_s = t.elapsed().as_secs_f64();
    let after_visit = rss();
    let store = upcache::store::LocalStore::open(data).expect("store");
    let t = Instant::now();
    let dropped = index.drop_missing(|b3| store.exists(b3)).expect("drop");
    let drop_s = t.elapsed().as_secs_f64();
    let after_drop = rss();
    let t = Instant::now();
    let r = upcache::recovery::reconcile(&index, &store, || Ok(Vec::new()), false).expect("walk");
    let walk_s = t.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "rss_base_mib": base,
            "index_open_s": open_s, "rss_after_open_mib": after_open,
            "visit_all_s": visit_s, "stored": stored, "rss_after_visit_mib": after_visit,
            "drop_missing_s": drop_s, "dropped": dropped, "rss_after_drop_missing_mib": after_drop,
            "walk_s": walk_s, "adopted": r.adopted, "rss_after_walk_mib": rss(),
            "peak_rss_mib": status_kib("VmHWM:") / 1024,
        })
    );
}

/// N blobs of `size` bytes, each bound to its own URL; on a set kept from an earlier run, only
/// the blobs that are not stored (evicted by its last phase). Returns how many were written.
fn setup(args: &Args, app: &Service) -> u64 {
    let reuse = app.cache.index.stats().blobs > 0;
    let mut written = 0;
    // Bound in batches: one index commit per BATCH blobs.
    const BATCH: usize = 1000;
    let mut batch: Vec<(BlobMeta, UrlRecord)> = Vec::with_capacity(BATCH);
    let bind = |batch: &mut Vec<(BlobMeta, UrlRecord)>| {
        let pairs: Vec<_> = batch.iter().map(|(m, r)| (m, r)).collect();
        app.cache.index.bind_all(&pairs).expect("bind");
        batch.clear();
    };
    for i in 0..args.blobs {
        let mut content = vec![0u8; args.size];
        content[..8].copy_from_slice(&i.to_le_bytes());
        let mut d = Digester::new();
        d.update(&content);
        let digests = d.finish();
        // In bulk: the file written in place, no fsync per blob (the service's commit fsyncs
        // the file and its directory, which made a 1M set take 1,107 s); one sync at the end.
        let path = app.cache.store.blob_path(&digests.blake3);
        if reuse
            && path.exists()
            && app
                .cache
                .index
                .blob(&digests.blake3)
                .expect("index")
                .is_some_and(|m| m.is_stored())
        {
            continue;
        }
        written += 1;
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
        batch.push((meta, record));
        if batch.len() == BATCH {
            bind(&mut batch);
        }
    }
    bind(&mut batch);
    app.cache.index.flush_blocking().expect("flush");
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    // As a clean shutdown leaves it: the next start is ready at once.
    app.cache.mark_clean_shutdown().expect("marker");
    written
}
