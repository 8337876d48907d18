//! A scriptable origin server for `scripts/bench.sh`: serves generated files, optionally slow,
//! and keeps a per-path request count in a JSON file. It is the test suite's upstream
//! (`tests/it/common/upstream.rs`) behind a command line.
//!
//! ```text
//! bench_origin --listen 127.0.0.1:9000 --stats /tmp/hits.json \
//!     --file /small.bin=1024 --file /big.bin=1073741824 --slow /slow.bin=10485760 \
//!     --ttfb-ms 50 --rate 20000000
//! ```

#[path = "../tests/it/common/upstream.rs"]
#[allow(dead_code)]
mod upstream;

use std::time::Duration;

use clap::Parser;
use upstream::{Route, Upstream, random_bytes};

#[derive(Parser)]
struct Args {
    /// Address to listen on (IPv4).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddrV4,
    /// A fast file: PATH=SIZE (bytes).
    #[arg(long)]
    file: Vec<String>,
    /// A slow file (first byte after --ttfb-ms, then --rate bytes/s): PATH=SIZE.
    #[arg(long)]
    slow: Vec<String>,
    #[arg(long, default_value_t = 50)]
    ttfb_ms: u64,
    #[arg(long, default_value_t = 20_000_000)]
    rate: u64,
    /// Where the request counts per path are written (every 50 ms).
    #[arg(long)]
    stats: Option<std::path::PathBuf>,
}

fn parse(spec: &str) -> (String, usize) {
    let (path, size) = spec.split_once('=').expect("PATH=SIZE");
    (path.to_owned(), size.parse().expect("size in bytes"))
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let up = Upstream::start_at(args.listen)
        .await
        .expect("bind the origin");
    let mut paths = Vec::new();
    for (i, spec) in args.file.iter().enumerate() {
        let (path, size) = parse(spec);
        up.route(
            &path,
            Route::ok(random_bytes(size, i as u64 + 1)).chunk_size(256 * 1024),
        );
        paths.push(path);
    }
    for (i, spec) in args.slow.iter().enumerate() {
        let (path, size) = parse(spec);
        let route = Route::ok(random_bytes(size, 1000 + i as u64))
            .delay_headers(Duration::from_millis(args.ttfb_ms))
            .rate(args.rate);
        up.route(&path, route);
        paths.push(path);
    }
    println!("origin listening on {}", up.base_url());
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        if let Some(stats) = &args.stats {
            let hits: serde_json::Map<String, serde_json::Value> = paths
                .iter()
                .map(|p| (p.clone(), up.hits(p).into()))
                .collect();
            let tmp = stats.with_extension("tmp");
            std::fs::write(&tmp, serde_json::Value::Object(hits).to_string()).unwrap();
            std::fs::rename(&tmp, stats).unwrap();
        }
    }
}
