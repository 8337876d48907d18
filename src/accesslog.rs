//! The access log: one line per request, formatted directly into a shared buffer that a
//! background thread writes out every 200 ms or 64 KiB (like nginx's `access_log ...
//! buffer= flush=`), so a hit costs neither a subscriber's generic field formatting nor a
//! `write(2)` or a thread wake-up of its own.
//!
//! Lines look like the rest of the log (tracing's text or JSON format, target
//! `upcache::access`) and obey the same level filter.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use serde::Serialize;

use crate::config::LogFormat;

/// One finished request.
#[derive(Debug, Serialize)]
pub struct Record<'a> {
    pub method: &'a str,
    pub form: &'a str,
    pub url: &'a str,
    pub status: u16,
    pub x_cache: &'a str,
    pub bytes: u64,
    pub complete: bool,
    pub ms: f64,
    pub client: &'a str,
}

struct Log {
    /// Lines not yet written. Requests only append; the writer swaps it out.
    buf: Mutex<Vec<u8>>,
    wake: Condvar,
    stop: AtomicBool,
    format: LogFormat,
    dropped: AtomicU64,
}

static LOG: OnceLock<Log> = OnceLock::new();

/// The writer is woken once this much is buffered, else every [`FLUSH_EVERY`].
const FLUSH_AT: usize = 64 * 1024;
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Beyond this much unwritten log, lines are dropped (and counted) rather than letting a
/// stuck stderr grow memory without bound.
const MAX_BUFFERED: usize = 16 * 1024 * 1024;

/// Writes what is buffered and stops the writer when dropped.
pub struct Guard(Option<JoinHandle<()>>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(log) = LOG.get() {
            log.stop.store(true, Ordering::SeqCst);
            log.wake.notify_one();
        }
        if let Some(t) = self.0.take() {
            let _ = t.join();
        }
    }
}

/// Start writing access lines to stderr in `format`. Without this (tests, embedding), lines
/// go through `tracing` like any other event.
pub fn start(format: LogFormat) -> Guard {
    let log = Log {
        buf: Mutex::new(Vec::with_capacity(FLUSH_AT * 2)),
        wake: Condvar::new(),
        stop: AtomicBool::new(false),
        format,
        dropped: AtomicU64::new(0),
    };
    if LOG.set(log).is_err() {
        return Guard(None);
    }
    let thread = std::thread::Builder::new()
        .name("upcache-access".into())
        .spawn(writer)
        .expect("spawn the access log writer");
    Guard(Some(thread))
}

fn writer() {
    let log = LOG.get().expect("set before the writer starts");
    let mut stderr = std::io::stderr();
    loop {
        let data = {
            let mut buf = log.buf.lock();
            if buf.len() < FLUSH_AT && !log.stop.load(Ordering::SeqCst) {
                log.wake.wait_for(&mut buf, FLUSH_EVERY);
            }
            std::mem::take(&mut *buf)
        };
        if !data.is_empty() {
            let _ = stderr.write_all(&data);
        }
        if log.stop.load(Ordering::SeqCst) && log.buf.lock().is_empty() {
            return;
        }
    }
}

/// Whether access lines are wanted at all (the level filter).
pub fn enabled() -> bool {
    tracing::enabled!(target: "upcache::access", tracing::Level::INFO)
}

/// Log one request.
pub fn write(rec: &Record<'_>) {
    let Some(log) = LOG.get() else {
        tracing::info!(
            target: "upcache::access",
            method = rec.method,
            form = rec.form,
            url = rec.url,
            status = rec.status,
            x_cache = rec.x_cache,
            bytes = rec.bytes,
            complete = rec.complete,
            ms = rec.ms,
            client = rec.client,
            "request"
        );
        return;
    };
    let line = format_line(log.format, rec);
    let mut buf = log.buf.lock();
    if buf.len() + line.len() > MAX_BUFFERED {
        log.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    buf.extend_from_slice(&line);
    if buf.len() >= FLUSH_AT {
        log.wake.notify_one();
    }
}

/// Access lines dropped because the writer could not keep up.
pub fn dropped() -> u64 {
    LOG.get().map_or(0, |l| l.dropped.load(Ordering::Relaxed))
}

fn format_line(format: LogFormat, rec: &Record<'_>) -> Vec<u8> {
    let now = humantime::format_rfc3339_micros(std::time::SystemTime::now());
    let mut line = Vec::with_capacity(256);
    match format {
        LogFormat::Text => {
            let _ = writeln!(
                line,
                "{now}  INFO upcache::access: request method={} form={} url={} status={} \
                 x_cache={} bytes={} complete={} ms={:.3} client={}",
                rec.method,
                rec.form,
                rec.url,
                rec.status,
                rec.x_cache,
                rec.bytes,
                rec.complete,
                rec.ms,
                rec.client
            );
        }
        LogFormat::Json => {
            #[derive(Serialize)]
            struct Line<'a> {
                timestamp: String,
                level: &'static str,
                target: &'static str,
                message: &'static str,
                #[serde(flatten)]
                rec: &'a Record<'a>,
            }
            let _ = serde_json::to_writer(
                &mut line,
                &Line {
                    timestamp: now.to_string(),
                    level: "INFO",
                    target: "upcache::access",
                    message: "request",
                    rec,
                },
            );
            line.push(b'\n');
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> Record<'static> {
        Record {
            method: "GET",
            form: "fetch",
            url: "http://h/a \"b\"",
            status: 200,
            x_cache: "HIT",
            bytes: 10,
            complete: true,
            ms: 1.5,
            client: "127.0.0.1",
        }
    }

    #[test]
    fn text_and_json_lines() {
        let text = String::from_utf8(format_line(LogFormat::Text, &rec())).unwrap();
        assert!(text.ends_with("ms=1.500 client=127.0.0.1\n"), "{text}");
        assert!(text.contains(" INFO upcache::access: request method=GET form=fetch"));
        let json: serde_json::Value =
            serde_json::from_slice(&format_line(LogFormat::Json, &rec())).unwrap();
        assert_eq!(json["url"], "http://h/a \"b\"");
        assert_eq!(json["target"], "upcache::access");
        assert_eq!(json["bytes"], 10);
    }
}
