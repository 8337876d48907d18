//! Index-store benchmark for issue 14 (docs/BENCHMARKS.md, "What holds the index's memory"):
//! N blobs' worth of index records written with sled 0.34 in three layouts and with redb in
//! one, then each store opened in a fresh process: RSS right after open, and 100,000 random
//! point reads of a blob record with RSS after them. Synthetic keys and values of the sizes
//! the index writes; no upcache code is involved, so the figures are the store's own.
//!
//! ```text
//! bench_index_store write-sled json6 1000000 /var/tmp/ix/json6   # today's layout
//! bench_index_store write-sled bin5  1000000 /var/tmp/ix/bin5
//! bench_index_store write-sled bin2  1000000 /var/tmp/ix/bin2
//! bench_index_store write-redb       1000000 /var/tmp/ix/redb5.db
//! bench_index_store open-sled /var/tmp/ix/json6
//! bench_index_store open-redb /var/tmp/ix/redb5.db
//! bench_index_store write-sled-v1 1000000 /var/tmp/ix/v1   # what earlier versions wrote
//! bench_index_store migrate /var/tmp/ix/v1                # upcache's migration to redb
//! ```
//!
//! Layouts (keys per blob, value sizes):
//! - `json6`: today's index (6 keys: blobs, urls, md5, sha256, sha512, blob_urls; JSON values
//!   of about 560 and 430 bytes);
//! - `bin5`: binary values (190 and 90 bytes), the three digests in one tree under a tag byte
//!   and a 16-byte prefix (5 keys);
//! - `bin2`: only the blob record (with its URL list inside) and the URL record (2 keys): a
//!   floor, with no digest lookups at all;
//! - redb: the `bin5` keys and values in four tables, committed 10,000 blobs at a time.
//!
//! `write-sled-v1` is the exception: it writes the sled index the earlier versions of upcache
//! wrote (their trees, upcache's own JSON records of the blobs `bench_sweep` makes), and
//! `migrate` opens it with `upcache::index::Index`, which migrates it to redb once, and prints
//! the time and the peak RSS of that.
//!
//! Both stores get a 16 MiB cache, as the index gives sled. The process uses mimalloc, as
//! `upcache serve` does.

use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CACHE_BYTES: usize = 16 << 20;
const READS: u64 = 100_000;

fn rss() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |field: &str| {
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    format!(
        "RSS {} MiB (peak {} MiB)",
        kib("VmRSS:") / 1024,
        kib("VmHWM:") / 1024
    )
}

/// `n` pseudo-random bytes for blob `i` (xorshift; `salt` tells the digests apart).
fn bytes(i: u64, salt: u64, n: usize) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt.wrapping_mul(0xD1B5_4A32_D192_ED03);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn blake3(i: u64) -> Vec<u8> {
    bytes(i, 1, 32)
}

fn url(i: u64) -> Vec<u8> {
    format!("http://origin.example:8080/sources/pkg-{i}/pkg-{i}-1.2.3.tar.gz").into_bytes()
}

/// Tag byte + 16-byte prefix of each of the blob's md5, sha256 and sha512.
fn sum_keys(i: u64) -> [Vec<u8>; 3] {
    [(2, b'm'), (3, b's'), (4, b'S')].map(|(salt, tag)| [vec![tag], bytes(i, salt, 16)].concat())
}

fn sled_config(dir: &str) -> sled::Config {
    sled::Config::new()
        .path(dir)
        .cache_capacity(CACHE_BYTES as u64)
        .flush_every_ms(None)
}

fn write_sled(layout: &str, n: u64, dir: &str) {
    let db = sled_config(dir).open().expect("open sled");
    let tree = |name: &str| db.open_tree(name).expect("open tree");
    let (blobs, urls, md5, sha256, sha512, blob_urls, sums) = (
        tree("blobs"),
        tree("urls"),
        tree("md5"),
        tree("sha256"),
        tree("sha512"),
        tree("blob_urls"),
        tree("sums"),
    );
    let started = Instant::now();
    for i in 0..n {
        let (b3, url) = (blake3(i), url(i));
        let put = |t: &sled::Tree, k: &[u8], v: &[u8]| {
            t.insert(k, v).expect("insert");
        };
        match layout {
            "json6" => {
                put(&blobs, &b3, &[b'x'; 560]);
                put(&urls, &url, &[b'y'; 430]);
                put(&md5, &bytes(i, 2, 16), &b3);
                put(&sha256, &bytes(i, 3, 32), &b3);
                put(&sha512, &bytes(i, 4, 64), &b3);
                put(&blob_urls, &[b3.as_slice(), &url].concat(), &[]);
            }
            "bin5" => {
                put(&blobs, &b3, &[b'x'; 190]);
                put(&urls, &url, &[b'y'; 90]);
                for k in sum_keys(i) {
                    put(&sums, &k, &b3);
                }
                put(&blob_urls, &[b3.as_slice(), &url].concat(), &[]);
            }
            "bin2" => {
                put(&blobs, &b3, &vec![b'x'; 190 + url.len()]);
                put(&urls, &url, &[b'y'; 90]);
            }
            other => panic!("unknown layout {other}: json6, bin5 or bin2"),
        }
    }
    db.flush().expect("flush");
    println!(
        "written in {:.1} s; {}",
        started.elapsed().as_secs_f64(),
        rss()
    );
}

/// The sled index of earlier versions (trees `*/v1`, JSON values), for the blobs
/// `bench_sweep` makes: blob `i` is 256 bytes, `i` little-endian then zeros.
fn write_sled_v1(n: u64, dir: &str) {
    use upcache::index::{BlobMeta, Origin, UrlRecord};
    let db = sled_config(dir).open().expect("open sled");
    let tree = |name: &str| db.open_tree(name).expect("open tree");
    let [blobs, urls, md5, sha256, sha512, blob_urls] =
        ["blobs", "urls", "md5", "sha256", "sha512", "blob_urls"].map(|t| tree(&format!("{t}/v1")));
    let key = |h: &str| hex::decode(h).expect("hex");
    let started = Instant::now();
    for i in 0..n {
        let mut content = vec![0u8; 256];
        content[..8].copy_from_slice(&i.to_le_bytes());
        let mut d = upcache::store::Digester::new();
        d.update(&content);
        let meta = BlobMeta::new(d.finish(), 256, Origin::Upstream, i as i64);
        let url = format!("https://example.org/pkg/{i}.tar.gz");
        let record = UrlRecord {
            url: url.clone(),
            blake3: meta.blake3().into(),
            status: 200,
            content_type: None,
            etag: None,
            last_modified: None,
            final_url: url.clone(),
            fetched_at: i as i64,
            instance: "bench".into(),
        };
        let b3 = key(meta.blake3());
        let put = |t: &sled::Tree, k: &[u8], v: &[u8]| {
            t.insert(k, v).expect("insert");
        };
        put(&blobs, &b3, &serde_json::to_vec(&meta).expect("json"));
        put(
            &urls,
            url.as_bytes(),
            &serde_json::to_vec(&record).expect("json"),
        );
        put(&md5, &key(&meta.digests.md5), &b3);
        put(&sha256, &key(&meta.digests.sha256), &b3);
        put(&sha512, &key(&meta.digests.sha512), &b3);
        put(&blob_urls, &[b3.as_slice(), url.as_bytes()].concat(), &[]);
    }
    db.flush().expect("flush");
    println!(
        "written in {:.1} s; {}",
        started.elapsed().as_secs_f64(),
        rss()
    );
}

/// Open a sled index with upcache's `Index`: the one-time migration to redb.
fn migrate(dir: &str) {
    let started = Instant::now();
    let index = upcache::index::Index::open(std::path::Path::new(dir), 1).expect("open index");
    println!(
        "opened (migrated) in {:.1} s: {:?}; {}",
        started.elapsed().as_secs_f64(),
        index.stats(),
        rss()
    );
}

const TABLES: [redb::TableDefinition<&[u8], &[u8]>; 4] = [
    redb::TableDefinition::new("blobs"),
    redb::TableDefinition::new("urls"),
    redb::TableDefinition::new("sums"),
    redb::TableDefinition::new("blob_urls"),
];

fn write_redb(n: u64, file: &str) {
    let db = redb::Builder::new()
        .set_cache_size(CACHE_BYTES)
        .create(file)
        .expect("create redb");
    let started = Instant::now();
    for first in (0..n).step_by(10_000) {
        let tx = db.begin_write().expect("begin");
        {
            let mut t: Vec<_> = TABLES
                .iter()
                .map(|d| tx.open_table(*d).expect("table"))
                .collect();
            for i in first..(first + 10_000).min(n) {
                let (b3, url) = (blake3(i), url(i));
                t[0].insert(b3.as_slice(), [b'x'; 190].as_slice())
                    .expect("insert");
                t[1].insert(url.as_slice(), [b'y'; 90].as_slice())
                    .expect("insert");
                for k in sum_keys(i) {
                    t[2].insert(k.as_slice(), b3.as_slice()).expect("insert");
                }
                let link = [b3.as_slice(), &url].concat();
                t[3].insert(link.as_slice(), [].as_slice()).expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    println!(
        "written in {:.1} s; {}",
        started.elapsed().as_secs_f64(),
        rss()
    );
}

/// `READS` random blob records of an `n`-blob set; returns how many were found.
fn random_reads(n: u64, mut get: impl FnMut(&[u8]) -> bool) -> u64 {
    (0..READS)
        .filter(|i| get(&blake3(i.wrapping_mul(7_919) % n)))
        .count() as u64
}

fn report_reads(started: Instant, found: u64) {
    let us = started.elapsed().as_secs_f64() * 1e6 / READS as f64;
    println!(
        "{READS} random reads: {us:.1} µs each, {found} found; {}",
        rss()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    match arg(1) {
        "write-sled" => write_sled(arg(2), arg(3).parse().expect("N"), arg(4)),
        "write-redb" => write_redb(arg(2).parse().expect("N"), arg(3)),
        "write-sled-v1" => write_sled_v1(arg(2).parse().expect("N"), arg(3)),
        "migrate" => migrate(arg(2)),
        "open-sled" => {
            let started = Instant::now();
            let db = sled_config(arg(2)).open().expect("open sled");
            let trees: Vec<_> = db
                .tree_names()
                .iter()
                .map(|name| db.open_tree(name).expect("open tree"))
                .collect();
            println!(
                "opened in {:.2} s; {}",
                started.elapsed().as_secs_f64(),
                rss()
            );
            let blobs = db.open_tree("blobs").expect("open tree");
            let n = blobs.len() as u64;
            let started = Instant::now();
            let found = random_reads(n, |k| blobs.get(k).expect("get").is_some());
            report_reads(started, found);
            drop(trees);
        }
        "open-redb" => {
            use redb::ReadableTableMetadata;
            let started = Instant::now();
            let db = redb::Builder::new()
                .set_cache_size(CACHE_BYTES)
                .open(arg(2))
                .expect("open redb");
            println!(
                "opened in {:.2} s; {}",
                started.elapsed().as_secs_f64(),
                rss()
            );
            let tx = db.begin_read().expect("begin");
            let blobs = tx.open_table(TABLES[0]).expect("table");
            let n = blobs.len().expect("len");
            let started = Instant::now();
            let found = random_reads(n, |k| blobs.get(k).expect("get").is_some());
            report_reads(started, found);
        }
        _ => {
            eprintln!(
                "usage: bench_index_store write-sled json6|bin5|bin2 N DIR | write-redb N FILE | \
                 open-sled DIR | open-redb FILE | \
                 write-sled-v1 N DIR | migrate DIR"
            );
            std::process::exit(2);
        }
    }
}
