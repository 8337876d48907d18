//! `upcache spec list` and `upcache spec check`: read a spec from disk, make sure a server
//! holds each of its sources (fetching them through it), compare them with the files kept in
//! the package repository and with a dist-git `sources` file, and print a report.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::client::{ClientError, enc, server_error};
use crate::spec::{self, Define, Entry, SourcesLine, Spec, Tag};
use crate::store::{Algo, Digester, Digests};

/// Sources fetched through the server at the same time.
const PARALLEL_FETCHES: usize = 4;
/// How long to keep asking for a URL's metadata after a miss: the server may answer the last
/// byte a moment before the URL is bound in its index.
const BIND_WAIT: Duration = Duration::from_secs(10);

/// `upcache spec list`: the expanded entries as a table or JSON; no network. With `rpmspec`,
/// rpm's own `rpmspec -P` expands the spec (running its shell and Lua code).
pub fn list(path: &Path, defines: &[Define], json: bool, rpmspec: bool) -> ExitCode {
    let spec = if rpmspec {
        expand_with_rpmspec(path, defines)
    } else {
        read_spec(path, defines)
    };
    let spec = match spec {
        Ok(s) => s,
        Err(msg) => {
            eprintln!("upcache spec list: {msg}");
            return ExitCode::from(1);
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string(&spec.entries).expect("entries serialize")
        );
    } else {
        let rows: Vec<Vec<String>> = spec
            .entries
            .iter()
            .map(|e| {
                let kind = if e.url.is_some() { "url" } else { "local" };
                vec![e.label(), kind.into(), e.file.clone(), e.value.clone()]
            })
            .collect();
        print!("{}", table(&["ENTRY", "KIND", "FILE", "VALUE"], &rows));
    }
    ExitCode::SUCCESS
}

/// What `upcache spec check` is asked to do.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    pub spec: PathBuf,
    /// The package repository: local files are compared with the cached ones.
    pub dir: Option<PathBuf>,
    /// A dist-git `sources` file to check as well.
    pub sources: Option<PathBuf>,
    /// Server base URL.
    pub server: String,
    pub json: bool,
    pub defines: Vec<Define>,
}

/// The verdict on one row of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The server has it, and every comparison made matched.
    Ok,
    /// A local-only entry that was not checked (no `--dir`, or it is in the `sources` file,
    /// whose row checks it).
    Local,
    /// A local-only entry found in `--dir`.
    Present,
    /// The server could not fetch it, has no blob with that checksum, or a local-only file is
    /// not in `--dir`.
    Missing,
    /// A local file or a `sources` checksum differs from what the server holds.
    Mismatch,
    /// The server could not be asked, or a local file could not be read.
    Error,
}

impl Status {
    fn is_failure(self) -> bool {
        matches!(self, Status::Missing | Status::Mismatch | Status::Error)
    }
}

/// One row of the report: a spec entry or a `sources` line.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `Source`/`Patch`; null for a `sources` line.
    pub tag: Option<Tag>,
    pub number: Option<u32>,
    /// The file name rpm uses (spec entries) or the name the `sources` line gives.
    pub file: String,
    /// What was fetched through the server; null for local entries and `sources` lines.
    pub url: Option<String>,
    /// Of the blob the server holds (or, for a local-only entry, of the local file).
    pub size: Option<u64>,
    pub md5: Option<String>,
    pub sha256: Option<String>,
    /// `X-Cache` of the fetch: `HIT` or `MISS`.
    pub cache: Option<String>,
    /// Comparison with the file in `--dir`: `match`, `mismatch`, or null when not compared.
    pub local: Option<&'static str>,
    /// For a `sources` line, the checksum it names (`sha512:<hex>`).
    pub checksum: Option<String>,
    pub status: Status,
    /// Why the status is not good: the server's message, both checksums of a mismatch, ...
    pub error: Option<String>,
    /// The blob's SHA-512, for comparisons with `sources` lines.
    #[serde(skip)]
    sha512: Option<String>,
}

impl Row {
    fn new(file: &str) -> Row {
        Row {
            tag: None,
            number: None,
            file: file.to_owned(),
            url: None,
            size: None,
            md5: None,
            sha256: None,
            cache: None,
            local: None,
            checksum: None,
            status: Status::Ok,
            error: None,
            sha512: None,
        }
    }

    fn with_blob(mut self, b: &Blob) -> Row {
        self.size = Some(b.size);
        self.md5 = Some(b.md5.clone());
        self.sha256 = Some(b.sha256.clone());
        self.sha512 = Some(b.sha512.clone());
        self
    }

    fn fail(&mut self, status: Status, error: String) {
        self.status = status;
        self.error = Some(match self.error.take() {
            Some(previous) => format!("{previous}; {error}"),
            None => error,
        });
    }

    fn digest(&self, algo: Algo) -> Option<&str> {
        match algo {
            Algo::Md5 => self.md5.as_deref(),
            Algo::Sha256 => self.sha256.as_deref(),
            Algo::Sha512 => self.sha512.as_deref(),
            Algo::Blake3 => None,
        }
    }

    fn name(&self) -> String {
        match (self.tag, self.number) {
            (Some(t), Some(n)) => format!("{t}{n} {}", self.file),
            _ => format!("sources {}", self.file),
        }
    }
}

/// The whole report, as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct Report {
    /// No row is `missing`, `mismatch` or `error`.
    pub ok: bool,
    /// Spec entries in spec order, then `sources` lines in file order.
    pub entries: Vec<Row>,
}

/// Blob metadata from `GET /api/v1/lookup`.
#[derive(Debug, Clone, Deserialize)]
struct Blob {
    size: u64,
    md5: String,
    sha256: String,
    sha512: String,
}

/// `upcache spec check`: exit 0 when everything is present and matching, 1 otherwise.
pub async fn check(opts: &CheckOptions) -> ExitCode {
    match run_check(opts).await {
        Ok(report) => {
            if opts.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("report serializes")
                );
            } else {
                print_report(&report);
            }
            let failed = report
                .entries
                .iter()
                .filter(|r| r.status.is_failure())
                .count();
            if failed == 0 {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "upcache spec check: {failed} of {} checks failed",
                    report.entries.len()
                );
                ExitCode::from(1)
            }
        }
        Err(msg) => {
            eprintln!("upcache spec check: {msg}");
            ExitCode::from(1)
        }
    }
}

async fn run_check(opts: &CheckOptions) -> Result<Report, String> {
    let spec = read_spec(&opts.spec, &opts.defines)?;
    if let Some(d) = &opts.dir {
        if !d.is_dir() {
            return Err(format!("{} is not a directory", d.display()));
        }
    }
    let sources = match &opts.sources {
        Some(p) => {
            let text = std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            spec::parse_sources(&String::from_utf8_lossy(&text))
                .map_err(|e| format!("{}: {e}", p.display()))?
        }
        None => Vec::new(),
    };
    let client = crate::client::http(Duration::from_secs(120)).map_err(|e| e.to_string())?;
    let server = opts.server.trim_end_matches('/');
    let dir = opts.dir.as_deref();
    let in_sources = |file: &str| sources.iter().any(|s| s.file == file);

    let mut rows: Vec<Row> = futures::stream::iter(&spec.entries)
        .map(|e| check_entry(&client, server, dir, e, in_sources(&e.file)))
        .buffered(PARALLEL_FETCHES)
        .collect()
        .await;
    let mut source_rows = Vec::new();
    for line in &sources {
        source_rows.push(check_sources_line(&client, server, dir, line, &rows).await);
    }
    rows.extend(source_rows);
    Ok(Report {
        ok: !rows.iter().any(|r| r.status.is_failure()),
        entries: rows,
    })
}

/// Read and parse a spec; its warnings go to stderr.
fn read_spec(path: &Path, defines: &[Define]) -> Result<Spec, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    // Changelogs of old specs are often Latin-1; nothing we need is outside ASCII.
    let text = String::from_utf8_lossy(&bytes);
    let spec = spec::parse(&text, defines).map_err(|e| format!("{}: {e}", path.display()))?;
    for w in &spec.warnings {
        eprintln!("{}:{}: warning: {}", path.display(), w.line, w.message);
    }
    Ok(spec)
}

/// The entries as `rpmspec -P` expands them.
fn expand_with_rpmspec(path: &Path, defines: &[Define]) -> Result<Spec, String> {
    let mut cmd = std::process::Command::new("rpmspec");
    cmd.arg("-P");
    for d in defines {
        let head = match &d.opts {
            Some(opts) => format!("{}({opts})", d.name),
            None => d.name.clone(),
        };
        cmd.arg("--define").arg(format!("{head} {}", d.body));
    }
    let out = cmd
        .arg("--")
        .arg(path)
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                "--rpmspec needs rpmspec, which is not installed (it comes with rpm: \
             apt-get install rpm, or dnf install rpm-build)"
                    .to_owned()
            }
            _ => format!("cannot run rpmspec: {e}"),
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "rpmspec -P {} failed: {}",
            path.display(),
            stderr.trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    spec::parse_expanded(&text)
        .map_err(|e| format!("{} (as rpmspec -P expands it): {e}", path.display()))
}

async fn check_entry(
    client: &reqwest::Client,
    server: &str,
    dir: Option<&Path>,
    entry: &Entry,
    in_sources: bool,
) -> Row {
    let mut row = Row::new(&entry.file);
    row.tag = Some(entry.tag);
    row.number = Some(entry.number);
    row.url = entry.url.clone();
    let local = match dir {
        Some(d) => local_digests(d, &entry.file).await,
        None => Ok(None),
    };
    let local = match local {
        Ok(l) => l,
        Err(e) => {
            row.fail(Status::Error, e);
            return row;
        }
    };
    let Some(url) = &entry.url else {
        match (dir, local) {
            (_, Some((size, d))) => {
                row.status = Status::Present;
                row.size = Some(size);
                row.md5 = Some(d.md5);
                row.sha256 = Some(d.sha256);
                row.sha512 = Some(d.sha512);
            }
            (Some(d), None) if !in_sources => {
                row.fail(
                    Status::Missing,
                    format!("local file {:?} is not in {}", entry.file, d.display()),
                );
            }
            _ => row.status = Status::Local,
        }
        return row;
    };
    let (blob, cache) = match fetch_and_lookup(client, server, url).await {
        Ok(found) => found,
        Err((status, msg)) => {
            row.fail(status, msg);
            return row;
        }
    };
    row = row.with_blob(&blob);
    row.cache = Some(cache);
    if let Some((_, d)) = local {
        if d.md5 == blob.md5 {
            row.local = Some("match");
        } else {
            row.local = Some("mismatch");
            row.fail(
                Status::Mismatch,
                format!(
                    "the local file has md5 {}, the server's copy of {url} has md5 {}",
                    d.md5, blob.md5
                ),
            );
        }
    }
    row
}

async fn check_sources_line(
    client: &reqwest::Client,
    server: &str,
    dir: Option<&Path>,
    line: &SourcesLine,
    entries: &[Row],
) -> Row {
    let mut row = Row::new(&line.file);
    row.checksum = Some(format!("{}:{}", line.algo.name(), line.hex));
    let algo = line.algo.name();
    match lookup(client, server, algo, &line.hex).await {
        Ok(Some(blob)) => row = row.with_blob(&blob),
        Ok(None) => row.fail(
            Status::Missing,
            format!("the server has no blob with {algo} {}", line.hex),
        ),
        Err(e) => {
            row.fail(Status::Error, e);
            return row;
        }
    }
    // The spec's URL for the same file must be the same content.
    for e in entries
        .iter()
        .filter(|e| e.file == line.file && e.url.is_some())
    {
        if let Some(theirs) = e.digest(line.algo).filter(|d| *d != line.hex) {
            row.fail(
                Status::Mismatch,
                format!(
                    "{} is cached from {} with {algo} {theirs}",
                    e.name(),
                    e.url.as_deref().unwrap_or_default()
                ),
            );
        }
    }
    if let Some(d) = dir {
        match local_digests(d, &line.file).await {
            Ok(Some((_, digests))) => {
                if digests.get(line.algo) == line.hex {
                    row.local = Some("match");
                } else {
                    row.local = Some("mismatch");
                    row.fail(
                        Status::Mismatch,
                        format!("the local file has {algo} {}", digests.get(line.algo)),
                    );
                }
            }
            Ok(None) => {}
            Err(e) => row.fail(Status::Error, e),
        }
    }
    row
}

/// Fetch `url` through the server (reading and discarding the body), then look up its
/// digests. The error carries the status to report.
async fn fetch_and_lookup(
    client: &reqwest::Client,
    server: &str,
    url: &str,
) -> Result<(Blob, String), (Status, String)> {
    let endpoint = format!("{server}/fetch?url={}", enc(url));
    let mut resp = client
        .get(&endpoint)
        .send()
        .await
        .map_err(|e| (Status::Error, ClientError::http(server, &e).to_string()))?;
    if !resp.status().is_success() {
        return Err((Status::Missing, server_error(resp).await.to_string()));
    }
    let cache = resp
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mut received = 0u64;
    loop {
        match resp.chunk().await {
            Ok(Some(bytes)) => received += bytes.len() as u64,
            Ok(None) => break,
            Err(e) => {
                return Err((
                    Status::Missing,
                    format!(
                        "the download of {url} broke after {received} bytes: {}",
                        crate::client::cause(&e)
                    ),
                ));
            }
        }
    }
    if cache == "BYPASS" {
        return Err((
            Status::Missing,
            format!("the server fetched {url} but could not store it (X-Cache: BYPASS)"),
        ));
    }
    // After a miss the URL may be bound a moment after the last byte was sent.
    let deadline = tokio::time::Instant::now() + BIND_WAIT;
    let mut pause = Duration::from_millis(20);
    loop {
        match lookup(client, server, "url", url).await {
            Ok(Some(blob)) => return Ok((blob, cache)),
            Ok(None) if cache != "HIT" && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            Ok(None) => {
                return Err((
                    Status::Missing,
                    format!("the server served {url} ({cache}) but has no record of it"),
                ));
            }
            Err(e) => return Err((Status::Error, e)),
        }
    }
}

/// `GET /api/v1/lookup?<key>=<value>`: `None` on 404.
async fn lookup(
    client: &reqwest::Client,
    server: &str,
    key: &str,
    value: &str,
) -> Result<Option<Blob>, String> {
    let endpoint = format!("{server}/api/v1/lookup?{key}={}", enc(value));
    let resp = client
        .get(&endpoint)
        .send()
        .await
        .map_err(|e| ClientError::http(server, &e).to_string())?;
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !resp.status().is_success() {
        return Err(format!("lookup failed: {}", server_error(resp).await));
    }
    resp.json::<Blob>()
        .await
        .map(Some)
        .map_err(|e| format!("lookup answer from {server} is not the lookup JSON: {e}"))
}

/// Size and digests of `dir/file`, `None` when there is no such file.
async fn local_digests(dir: &Path, file: &str) -> Result<Option<(u64, Digests)>, String> {
    // A name from a spec must not walk out of the directory.
    if file.is_empty() || file == "." || file == ".." || file.contains('/') {
        return Ok(None);
    }
    let path = dir.join(file);
    tokio::task::spawn_blocking(move || {
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let mut d = Digester::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            use std::io::Read;
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => d.update(&buf[..n]),
                Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
            }
        }
        let size = d.len();
        Ok(Some((size, d.finish())))
    })
    .await
    .map_err(|e| format!("hashing task failed: {e}"))?
}

fn print_report(report: &Report) {
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let rows: Vec<Vec<String>> = report
        .entries
        .iter()
        .map(|r| {
            let entry = match (r.tag, r.number) {
                (Some(t), Some(n)) => format!("{t}{n}"),
                _ => "sources".into(),
            };
            let origin = match (&r.url, &r.checksum) {
                (Some(u), _) => u.clone(),
                (None, Some(c)) => c.split(':').next().unwrap_or_default().to_owned(),
                (None, None) => "(local)".into(),
            };
            vec![
                entry,
                r.file.clone(),
                origin,
                r.size.map_or_else(|| "-".into(), |s| s.to_string()),
                dash(&r.md5),
                dash(&r.sha256),
                dash(&r.cache),
                r.local.unwrap_or("-").to_owned(),
                serde_json::to_value(r.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "ENTRY", "FILE", "URL", "SIZE", "MD5", "SHA256", "CACHE", "LOCAL", "STATUS"
            ],
            &rows
        )
    );
    for r in report.entries.iter().filter(|r| r.error.is_some()) {
        println!("{}: {}", r.name(), r.error.as_deref().unwrap_or_default());
    }
}

/// Left-aligned columns separated by two spaces.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len() - 1;
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            out.push_str(cell);
            if i != last {
                // Padded by hand: `format!("{cell:<w$}")` panics for widths beyond u16::MAX,
                // and a spec can expand to a value that long.
                let pad = w.saturating_sub(cell.chars().count()) + 2;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["A", "LONGER"],
            &[
                vec!["xyz".into(), "1".into()],
                vec!["q".into(), "22".into()],
            ],
        );
        assert_eq!(t, "A    LONGER\nxyz  1\nq    22\n");
    }

    #[test]
    fn table_takes_cells_wider_than_format_widths() {
        // A spec can expand to a 1 MiB value; `{:<w$}` panics beyond u16::MAX.
        let wide = "x".repeat(70_000);
        let t = table(&["A", "B"], &[vec![wide.clone(), "1".into()]]);
        assert_eq!(t, format!("A{}B\n{wide}  1\n", " ".repeat(70_001)));
    }

    #[test]
    fn report_json_shape() {
        let mut row = Row::new("a.tgz");
        row.tag = Some(Tag::Source);
        row.number = Some(0);
        row.url = Some("https://x/a.tgz".into());
        row.fail(Status::Missing, "404 Not Found: gone".into());
        let report = Report {
            ok: false,
            entries: vec![row],
        };
        let v = serde_json::to_value(&report).unwrap();
        assert_eq!(v["ok"], false);
        let e = &v["entries"][0];
        for key in [
            "tag", "number", "file", "url", "size", "md5", "sha256", "cache", "local", "checksum",
            "status", "error",
        ] {
            assert!(e.get(key).is_some(), "{key} in {e}");
        }
        assert_eq!(e["status"], "missing");
        assert_eq!(e["tag"], "Source");
        assert!(e.get("sha512").is_none());
    }

    #[tokio::test]
    async fn local_names_cannot_escape_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.tgz"), b"hello world").unwrap();
        let (size, d) = local_digests(dir.path(), "a.tgz").await.unwrap().unwrap();
        assert_eq!(size, 11);
        assert_eq!(d.md5, "5eb63bbbe01eeed093cb22bb8f5acdc3");
        for name in ["", ".", "..", "../etc/passwd", "missing.tgz"] {
            assert!(
                local_digests(dir.path(), name).await.unwrap().is_none(),
                "{name}"
            );
        }
    }
}
