//! The provenance journal: append-only JSON lines in `data_dir`, fsynced before a binding is
//! acknowledged. With the blob files it is the durable truth the index can be rebuilt from.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::store::Digests;

/// Upstream facts recorded with an event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UpstreamInfo {
    pub status: Option<u16>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub final_url: Option<String>,
}

/// One audit event (SPEC 4.3). Fields that do not apply are null.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    /// RFC 3339, UTC.
    pub time: String,
    pub event: String,
    pub url: Option<String>,
    pub blake3: Option<String>,
    pub sha256: Option<String>,
    pub md5: Option<String>,
    pub size: Option<u64>,
    pub client: Option<String>,
    pub actor: Option<String>,
    pub instance: Option<String>,
    pub upstream: Option<UpstreamInfo>,
    pub detail: Option<String>,
}

impl Event {
    /// A new event of `kind`; `seq`, `time` and `instance` are filled in by the journal.
    pub fn new(kind: &str) -> Event {
        Event {
            event: kind.to_owned(),
            ..Event::default()
        }
    }

    pub fn with_digests(mut self, d: &Digests, size: u64) -> Event {
        self.blake3 = Some(d.blake3.clone());
        self.sha256 = Some(d.sha256.clone());
        self.md5 = Some(d.md5.clone());
        self.size = Some(size);
        self
    }
}

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
#[error("audit journal {path}: {source}")]
pub struct JournalError {
    path: PathBuf,
    #[source]
    source: io::Error,
}

/// The append-only journal file.
pub struct Journal {
    path: PathBuf,
    instance: String,
    inner: Mutex<(File, u64)>,
    /// The latest events, newest last, for the status page.
    recent: Mutex<VecDeque<Event>>,
}

/// Events kept in memory for the status page.
const RECENT: usize = 50;

impl Journal {
    /// Open (or create) the journal; the next sequence number follows the last line.
    pub fn open(path: &Path, instance: &str) -> Result<Journal, JournalError> {
        let err = |source| JournalError {
            path: path.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(err)?;
        let recent = tail_events(&mut file).map_err(err)?;
        let last = recent.back().map_or(0, |e| e.seq);
        end_with_newline(&mut file).map_err(err)?;
        Ok(Journal {
            path: path.to_owned(),
            instance: instance.to_owned(),
            inner: Mutex::new((file, last)),
            recent: Mutex::new(recent),
        })
    }

    /// Append and fsync one event. Blocking; returns the event as written.
    pub fn append(&self, event: Event) -> Result<Event, JournalError> {
        let mut written = self.append_batch(vec![event])?;
        Ok(written.pop().expect("one event written"))
    }

    /// Append several events with one fsync (the sweeper's evictions): all of them are
    /// durable when this returns. Blocking; returns the events as written.
    pub fn append_batch(&self, events: Vec<Event>) -> Result<Vec<Event>, JournalError> {
        if events.is_empty() {
            return Ok(events);
        }
        let mut inner = self.inner.lock();
        let time = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let mut lines = Vec::new();
        let mut seq = inner.1;
        let events: Vec<Event> = events
            .into_iter()
            .map(|mut event| {
                seq += 1;
                event.seq = seq;
                event.time = time.clone();
                if event.instance.is_none() {
                    event.instance = Some(self.instance.clone());
                }
                serde_json::to_writer(&mut lines, &event).expect("serializable");
                lines.push(b'\n');
                event
            })
            .collect();
        let (file, last) = &mut *inner;
        file.write_all(&lines)
            .and_then(|()| file.sync_data())
            .map_err(|source| JournalError {
                path: self.path.clone(),
                source,
            })?;
        *last = seq;
        drop(inner);
        let mut recent = self.recent.lock();
        for event in events.iter().skip(events.len().saturating_sub(RECENT)) {
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(event.clone());
        }
        Ok(events)
    }

    /// The latest events, newest first.
    pub fn recent(&self) -> Vec<Event> {
        self.recent.lock().iter().rev().cloned().collect()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every event, oldest first (for export and index rebuilds).
    pub fn read_all(&self) -> Result<Vec<Event>, JournalError> {
        let err = |source| JournalError {
            path: self.path.clone(),
            source,
        };
        let file = File::open(&self.path).map_err(err)?;
        let mut events = Vec::new();
        for line in BufReader::new(file).lines() {
            let line = line.map_err(err)?;
            // A torn last line (crash mid-append) is skipped, not fatal.
            if let Ok(ev) = serde_json::from_str(&line) {
                events.push(ev);
            }
        }
        Ok(events)
    }
}

/// The CSV columns of an event: the JSON fields, `upstream` flattened.
pub const CSV_HEADER: [&str; 16] = [
    "seq",
    "time",
    "event",
    "url",
    "blake3",
    "sha256",
    "md5",
    "size",
    "client",
    "actor",
    "instance",
    "upstream_status",
    "upstream_etag",
    "upstream_last_modified",
    "upstream_final_url",
    "detail",
];

impl Event {
    /// The event's CSV row, in [`CSV_HEADER`] order (empty cells for null), each cell made
    /// inert for spreadsheets ([`csv_cell`]).
    pub fn csv_row(&self) -> [String; 16] {
        let o = |v: &Option<String>| v.clone().unwrap_or_default();
        let up = self.upstream.clone().unwrap_or_default();
        let row = [
            self.seq.to_string(),
            self.time.clone(),
            self.event.clone(),
            o(&self.url),
            o(&self.blake3),
            o(&self.sha256),
            o(&self.md5),
            self.size.map(|s| s.to_string()).unwrap_or_default(),
            o(&self.client),
            o(&self.actor),
            o(&self.instance),
            up.status.map(|s| s.to_string()).unwrap_or_default(),
            o(&up.etag),
            o(&up.last_modified),
            o(&up.final_url),
            o(&self.detail),
        ];
        row.map(csv_cell)
    }
}

/// OWASP's CSV injection rule: a cell that starts with `=`, `+`, `-`, `@`, TAB or CR would be
/// read as a formula by a spreadsheet (an upstream's `ETag: =HYPERLINK(...)` becomes a live
/// link), so it gets a leading `'`. JSONL, a format no spreadsheet evaluates, stays verbatim.
pub fn csv_cell(cell: String) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell
    }
}

/// Terminate a line torn by a crash, so the next event starts on a line of its own.
fn end_with_newline(file: &mut File) -> io::Result<()> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(());
    }
    file.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    if last[0] != b'\n' {
        file.write_all(b"\n")?;
        file.sync_data()?;
    }
    Ok(())
}

/// The last complete events (at most [`RECENT`]), reading only the file's tail.
fn tail_events(file: &mut File) -> io::Result<VecDeque<Event>> {
    let len = file.seek(SeekFrom::End(0))?;
    let start = len.saturating_sub(64 * 1024);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.take(len - start).read_to_end(&mut tail)?;
    // The window may start inside a line (or a multi-byte character); only whole lines parse.
    let tail = String::from_utf8_lossy(&tail);
    let mut events: VecDeque<Event> = tail
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    while events.len() > RECENT {
        events.pop_front();
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_and_reopen_continue_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let j = Journal::open(&path, "i1").unwrap();
        let e = j.append(Event::new("fetched")).unwrap();
        assert_eq!((e.seq, e.instance.as_deref()), (1, Some("i1")));
        j.append(Event::new("fetched")).unwrap();
        drop(j);
        // A torn line from a crash is ignored.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"seq\":3,\"ti")
            .unwrap();
        let j = Journal::open(&path, "i1").unwrap();
        assert_eq!(j.append(Event::new("fetched")).unwrap().seq, 3);
        let seqs: Vec<u64> = j.read_all().unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2, 3], "torn line skipped, the next event intact");
        let recent: Vec<u64> = j.recent().iter().map(|e| e.seq).collect();
        assert_eq!(recent, [3, 2, 1]);
    }

    #[test]
    fn csv_cells_cannot_start_a_formula() {
        for (cell, want) in [
            (
                "=HYPERLINK(\"http://x/\",\"y\")",
                "'=HYPERLINK(\"http://x/\",\"y\")",
            ),
            ("+1", "'+1"),
            ("-1+2", "'-1+2"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("\rx", "'\rx"),
            ("\"v1\"", "\"v1\""),
            ("https://example.org/a=b", "https://example.org/a=b"),
            ("", ""),
        ] {
            assert_eq!(csv_cell(cell.to_owned()), want, "{cell:?}");
        }
        let mut e = Event::new("fetched");
        e.upstream = Some(UpstreamInfo {
            etag: Some("=1+1".into()),
            ..UpstreamInfo::default()
        });
        e.detail = Some("-2".into());
        let row = e.csv_row();
        assert_eq!(row[12], "'=1+1");
        assert_eq!(row[15], "'-2");
    }
}
