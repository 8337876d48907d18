//! The access log: one line per request, formatted directly into a shared buffer that a
//! background thread writes out every 200 ms or 64 KiB (like nginx's `access_log ...
//! buffer= flush=`), so a hit costs neither a subscriber's generic field formatting nor a
//! `write(2)` or a thread wake-up of its own.
//!
//! Lines look like the rest of the log (tracing's text or JSON format, target
//! `upcache::access`) and obey the same level filter.

use std::cell::RefCell;
use std::io::Write;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

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
    #[serde(serialize_with = "client_str")]
    pub client: Option<IpAddr>,
}

fn client_str<S: serde::Serializer>(ip: &Option<IpAddr>, s: S) -> Result<S::Ok, S::Error> {
    match ip {
        Some(ip) => s.collect_str(ip),
        None => s.serialize_str("-"),
    }
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
            client = rec.client.map_or_else(|| "-".to_owned(), |ip| ip.to_string()),
            "request"
        );
        return;
    };
    thread_local! {
        static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(256));
    }
    LINE.with_borrow_mut(|line| {
        line.clear();
        format_line(line, log.format, SystemTime::now(), rec);
        let mut buf = log.buf.lock();
        if buf.len() + line.len() > MAX_BUFFERED {
            log.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        buf.extend_from_slice(line);
        if buf.len() >= FLUSH_AT {
            log.wake.notify_one();
        }
    });
}

/// `ip` as text, as its `Display` writes it; an IPv4 address (the common case) without the
/// `fmt` machinery, which costs more than the rest of an access line.
pub fn ip_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let mut s = String::with_capacity(15);
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    s.push('.');
                }
                s.push_str(itoa::Buffer::new().format(octet));
            }
            s
        }
        IpAddr::V6(_) => ip.to_string(),
    }
}

/// Access lines dropped because the writer could not keep up.
pub fn dropped() -> u64 {
    LOG.get().map_or(0, |l| l.dropped.load(Ordering::Relaxed))
}

/// Append the line of `rec` at `now` to `line`. The text format is written piece by piece
/// (no `fmt` machinery for an IPv4 client; the timestamp's date and time are formatted
/// once a second).
fn format_line(line: &mut Vec<u8>, format: LogFormat, now: SystemTime, rec: &Record<'_>) {
    match format {
        LogFormat::Text => {
            timestamp(line, now);
            line.extend_from_slice(b"  INFO upcache::access: request method=");
            line.extend_from_slice(rec.method.as_bytes());
            line.extend_from_slice(b" form=");
            line.extend_from_slice(rec.form.as_bytes());
            line.extend_from_slice(b" url=");
            line.extend_from_slice(rec.url.as_bytes());
            line.extend_from_slice(b" status=");
            line.extend_from_slice(itoa::Buffer::new().format(rec.status).as_bytes());
            line.extend_from_slice(b" x_cache=");
            line.extend_from_slice(rec.x_cache.as_bytes());
            line.extend_from_slice(b" bytes=");
            line.extend_from_slice(itoa::Buffer::new().format(rec.bytes).as_bytes());
            line.extend_from_slice(if rec.complete {
                b" complete=true ms="
            } else {
                b" complete=false ms="
            });
            // Milliseconds with three decimals, as `{:.3}` gives for a finite `ms` >= 0.
            let micros = (rec.ms * 1000.0).round() as u64;
            line.extend_from_slice(itoa::Buffer::new().format(micros / 1000).as_bytes());
            let frac = micros % 1000;
            line.extend_from_slice(&[
                b'.',
                b'0' + (frac / 100) as u8,
                b'0' + (frac / 10 % 10) as u8,
                b'0' + (frac % 10) as u8,
            ]);
            line.extend_from_slice(b" client=");
            match rec.client {
                Some(ip) => line.extend_from_slice(ip_text(ip).as_bytes()),
                None => line.push(b'-'),
            }
            line.push(b'\n');
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
                &mut *line,
                &Line {
                    timestamp: humantime::format_rfc3339_micros(now).to_string(),
                    level: "INFO",
                    target: "upcache::access",
                    message: "request",
                    rec,
                },
            );
            line.push(b'\n');
        }
    }
}

/// `now` as RFC 3339 in UTC with microseconds (`2026-12-06T02:47:35.123456Z`, what
/// `humantime::format_rfc3339_micros` writes), the part up to the seconds formatted once a
/// second per thread.
fn timestamp(line: &mut Vec<u8>, now: SystemTime) {
    thread_local! {
        static SECOND: RefCell<(u64, [u8; 19])> = const { RefCell::new((u64::MAX, [0; 19])) };
    }
    let since = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != secs {
            let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            let formatted = humantime::format_rfc3339_seconds(whole).to_string();
            text.copy_from_slice(&formatted.as_bytes()[..19]);
            *cached = secs;
        }
        line.extend_from_slice(&text[..]);
    });
    let micros = since.subsec_micros();
    let mut frac = [b'.', b'0', b'0', b'0', b'0', b'0', b'0', b'Z'];
    let mut n = micros;
    for d in frac[1..7].iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    line.extend_from_slice(&frac);
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
            client: Some([127, 0, 0, 1].into()),
        }
    }

    fn line(format: LogFormat, now: SystemTime, rec: &Record<'_>) -> String {
        let mut line = Vec::new();
        format_line(&mut line, format, now, rec);
        String::from_utf8(line).unwrap()
    }

    #[test]
    fn text_and_json_lines() {
        let now = SystemTime::now();
        let text = line(LogFormat::Text, now, &rec());
        assert!(text.ends_with("ms=1.500 client=127.0.0.1\n"), "{text}");
        assert!(text.contains(" INFO upcache::access: request method=GET form=fetch"));
        let json: serde_json::Value =
            serde_json::from_str(&line(LogFormat::Json, now, &rec())).unwrap();
        assert_eq!(json["url"], "http://h/a \"b\"");
        assert_eq!(json["target"], "upcache::access");
        assert_eq!(json["bytes"], 10);
    }

    #[test]
    fn ip_text_is_display() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.200.3.45",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }

    /// The text line, piece by piece, is what the `writeln!` of `{:.3}` milliseconds and
    /// humantime's timestamp wrote before, for every kind of value.
    #[test]
    fn text_lines_match_the_formatted_reference() {
        let times = [
            SystemTime::UNIX_EPOCH,
            SystemTime::UNIX_EPOCH + Duration::new(1_796_000_000, 7_000),
            SystemTime::UNIX_EPOCH + Duration::new(1_796_000_000, 999_999_999),
            SystemTime::UNIX_EPOCH + Duration::new(1_796_000_001, 120_000_000),
        ];
        let clients = [
            None,
            Some("10.1.2.3".parse().unwrap()),
            Some("2001:db8::1".parse().unwrap()),
        ];
        for (i, now) in times.into_iter().enumerate() {
            for ms in [0.0, 0.0004, 0.0005, 1.5, 2.0996, 999.9995, 123456.789] {
                let rec = Record {
                    complete: i % 2 == 0,
                    ms,
                    client: clients[i % clients.len()],
                    status: [200, 206, 304, 404][i],
                    bytes: [0, 1, u64::MAX, 1 << 40][i],
                    ..rec()
                };
                let want = format!(
                    "{}  INFO upcache::access: request method={} form={} url={} status={} \
                     x_cache={} bytes={} complete={} ms={:.3} client={}\n",
                    humantime::format_rfc3339_micros(now),
                    rec.method,
                    rec.form,
                    rec.url,
                    rec.status,
                    rec.x_cache,
                    rec.bytes,
                    rec.complete,
                    rec.ms,
                    rec.client.map_or("-".to_owned(), |ip| ip.to_string()),
                );
                assert_eq!(line(LogFormat::Text, now, &rec), want);
            }
        }
    }
}
