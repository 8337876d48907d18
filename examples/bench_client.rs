//! A load client for `scripts/bench.sh`: N concurrent GETs of one URL, each on its own
//! connection, reporting time to first byte and total time per request as JSON.
//!
//! ```text
//! bench_client --url http://127.0.0.1:8080/fetch?url=... --concurrency 600 --expect-size 10485760
//! ```

use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Every body must have exactly this many bytes.
    #[arg(long)]
    expect_size: Option<u64>,
    /// Give up on the whole run after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

struct Sample {
    ttfb: Duration,
    total: Duration,
    bytes: u64,
}

async fn one(client: reqwest::Client, url: String) -> Result<Sample, String> {
    let start = Instant::now();
    let resp = client.get(&url).send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    let mut stream = resp.bytes_stream();
    let mut ttfb = None;
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        ttfb.get_or_insert_with(|| start.elapsed());
        bytes += chunk.len() as u64;
    }
    Ok(Sample {
        ttfb: ttfb.unwrap_or_else(|| start.elapsed()),
        total: start.elapsed(),
        bytes,
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    // One pool: concurrent HTTP/1.1 requests each get their own connection.
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("http client");
    let start = Instant::now();
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|_| tokio::spawn(one(client.clone(), args.url.clone())))
        .collect();
    let all = tokio::time::timeout(
        Duration::from_secs(args.timeout),
        futures::future::join_all(tasks),
    )
    .await
    .expect("bench_client: run timed out");
    let wall = start.elapsed();
    let (mut ttfb, mut total, mut failed, mut bytes) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for r in all {
        match r.expect("task") {
            Ok(s) => {
                if args.expect_size.is_some_and(|n| n != s.bytes) {
                    failed.push(format!("got {} bytes", s.bytes));
                    continue;
                }
                ttfb.push(s.ttfb.as_secs_f64() * 1000.0);
                total.push(s.total.as_secs_f64() * 1000.0);
                bytes += s.bytes;
            }
            Err(e) => failed.push(e),
        }
    }
    ttfb.sort_by(f64::total_cmp);
    total.sort_by(f64::total_cmp);
    let summary = serde_json::json!({
        "requests": args.concurrency,
        "ok": ttfb.len(),
        "failed": failed.len(),
        "first_error": failed.first(),
        "bytes": bytes,
        "wall_ms": wall.as_secs_f64() * 1000.0,
        "ttfb_ms": {"p50": percentile(&ttfb, 0.5), "p99": percentile(&ttfb, 0.99), "max": ttfb.last()},
        "total_ms": {"p50": percentile(&total, 0.5), "p99": percentile(&total, 0.99), "max": total.last()},
    });
    println!("{summary}");
    if !failed.is_empty() {
        std::process::exit(1);
    }
}
