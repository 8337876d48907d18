//! Sweeper benchmark for `scripts/bench.sh`: a data directory with N blobs (each bound to a
//! URL), then one sweeper pass with nothing to evict and one that evicts 10 %; prints the
//! time of each and the process's peak RSS as JSON.
//!
//! ```text
//! bench_sweep --blobs 100000
//! ```

use std::time::Instant;

use clap::Parser;
use upcache::App;
use upcache::index::{BlobMeta, Origin, UrlRecord};
use upcache::store::{Digester, TempWriter};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 100_000)]
    blobs: u64,
    /// Bytes per blob.
    #[arg(long, default_value_t = 256)]
    size: usize,
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn main() {
    let args = Args::parse();
    let dir = tempfile::tempdir().expect("temp dir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut cfg = upcache::Config::default();
    cfg.storage.data_dir = dir.path().join("data");
    cfg.cache.max_size = args.blobs * args.size as u64 * 2; // half full: nothing to evict
    let app = App::open(cfg.clone(), rt.handle().clone()).expect("open");

    let start = Instant::now();
    for i in 0..args.blobs {
        let mut content = vec![0u8; args.size];
        content[..8].copy_from_slice(&i.to_le_bytes());
        let mut d = Digester::new();
        d.update(&content);
        let digests = d.finish();
        let mut w = TempWriter::new(app.store.create_temp().expect("temp"));
        w.append(&content).expect("write");
        let (temp, _, _) = w.finish();
        app.store.commit(temp, &digests.blake3).expect("commit");
        let meta = BlobMeta {
            digests: digests.clone(),
            size: args.size as u64,
            content_type: None,
            first_seen: i as i64,
            last_access: i as i64,
            access_count: 0,
            origin: Origin::Upstream,
            pinned: false,
            evicted: false,
            remote: false,
            remote_only: false,
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
        app.index.bind(&meta, &record).expect("bind");
    }
    app.index.flush_blocking().expect("flush");
    let setup_s = start.elapsed().as_secs_f64();
    drop(app);

    // Reopen (start-up reconciliation walks the files too) and sweep with nothing to evict.
    reset_peak();
    let t = Instant::now();
    let app = App::open(cfg.clone(), rt.handle().clone()).expect("reopen");
    let open_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let idle = upcache::sweeper::run_once(&app).expect("sweep");
    let idle_s = t.elapsed().as_secs_f64();
    let idle_rss = peak_rss_kib();
    drop(app);

    // Now with a cache limit that forces 10 % out (down to the low watermark).
    let mut small = cfg.clone();
    small.cache.max_size = args.blobs * args.size as u64 * 100 / 85; // 85 % full
    small.cache.high_watermark = 0.80;
    small.cache.low_watermark = 0.765; // ~10 % of the blobs go
    let app = App::open(small, rt.handle().clone()).expect("reopen");
    reset_peak();
    let t = Instant::now();
    let evicting = upcache::sweeper::run_once(&app).expect("sweep");
    let evict_s = t.elapsed().as_secs_f64();
    let evict_rss = peak_rss_kib();
    println!(
        "{}",
        serde_json::json!({
            "blobs": args.blobs,
            "setup_s": setup_s,
            "startup_reconcile_s": open_s,
            "idle_pass_s": idle_s,
            "idle_pass_peak_rss_mib": idle_rss / 1024,
            "idle_scrubbed": idle.scrubbed,
            "evicting_pass_s": evict_s,
            "evicting_pass_peak_rss_mib": evict_rss / 1024,
            "evicted": evicting.evicted,
        })
    );
}
