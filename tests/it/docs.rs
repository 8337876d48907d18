//! The reference under `docs/` checked against what it describes, so that neither can drift:
//! configuration keys and defaults against the JSON Schema, the example file and the built-in
//! defaults; error codes against the source's one status mapping and real answers; metric
//! names against a live scrape; the example alert rules with promtool; routes against
//! `docs/api.md`; and every relative link and anchor in the Markdown files.
//!
//! Each failure says which file to change and what to add or fix there.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use upcache::Config;
use upcache::config::TokenConfig;

use crate::common::fixtures::{assert_none, root};
use crate::common::server::{TestServer, client, enc};
use crate::common::source::rust_files;

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

// --- Markdown -------------------------------------------------------------------------------

/// Lines outside fenced code blocks, with their line numbers.
fn prose_lines(markdown: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, line) in markdown.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push((i + 1, line));
        }
    }
    out
}

/// A Markdown table: the `##`-or-deeper heading above it, its header cells and its rows.
struct Table {
    heading: String,
    header: Vec<String>,
    rows: Vec<(usize, Vec<String>)>,
}

/// The cells of a table row; `\|` is a literal pipe.
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|');
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    let mut cells = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cells.last_mut().unwrap().push('|');
                chars.next();
            }
            '|' => cells.push(String::new()),
            c => cells.last_mut().unwrap().push(c),
        }
    }
    cells.into_iter().map(|c| c.trim().to_owned()).collect()
}

fn tables(markdown: &str) -> Vec<Table> {
    let mut tables: Vec<Table> = Vec::new();
    let mut heading = String::new();
    let mut in_table = false;
    for (n, line) in prose_lines(markdown) {
        if let Some(h) = line.strip_prefix("##") {
            heading = h.trim_start_matches('#').trim().to_owned();
        }
        if !line.trim_start().starts_with('|') {
            in_table = false;
            continue;
        }
        let row = cells(line);
        if !in_table {
            in_table = true;
            tables.push(Table {
                heading: heading.clone(),
                header: row,
                rows: Vec::new(),
            });
        } else if !row
            .iter()
            .all(|c| !c.is_empty() && c.chars().all(|c| matches!(c, '-' | ':')))
        {
            tables.last_mut().unwrap().rows.push((n, row));
        }
    }
    tables
}

/// The text of a cell that is one code span, such as `` `server.listen` ``.
fn code(cell: &str) -> Option<&str> {
    let inner = cell.strip_prefix('`')?.strip_suffix('`')?;
    (!inner.contains('`')).then_some(inner)
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of every heading in `markdown`; repeated headings get `-1`, `-2`, ...
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for (_, line) in prose_lines(markdown) {
        let Some(text) = line.strip_prefix('#') else {
            continue;
        };
        let base = slug(
            text.trim_start_matches('#')
                .replace("&lt;", "")
                .replace("&gt;", "")
                .as_str(),
        );
        let n = seen.entry(base.clone()).or_insert(0);
        out.insert(match *n {
            0 => base.clone(),
            n => format!("{base}-{n}"),
        });
        *n += 1;
    }
    out
}

// --- configuration --------------------------------------------------------------------------

/// Every key of the schema as `section.key` (fields of list entries as `section.key[].field`),
/// with its default if it has one.
fn schema_keys() -> BTreeMap<String, Option<Value>> {
    fn walk(node: &Value, path: &str, keys: &mut BTreeMap<String, Option<Value>>) {
        let Some(properties) = node["properties"].as_object() else {
            return;
        };
        for (name, property) in properties {
            if path.is_empty() {
                // A section: `[server]`, `[storage]`, ...
                walk(property, name, keys);
                continue;
            }
            let key = format!("{path}.{name}");
            keys.insert(key.clone(), property.get("default").cloned());
            walk(property, &key, keys);
            walk(&property["items"], &format!("{key}[]"), keys);
        }
    }
    let schema: Value = serde_json::from_str(&read("schema/config.schema.json"))
        .expect("schema/config.schema.json is JSON");
    let mut keys = BTreeMap::new();
    walk(&schema, "", &mut keys);
    assert!(
        keys.len() > 40,
        "only {} keys found in schema/config.schema.json: has its layout changed?",
        keys.len()
    );
    keys
}

/// A JSON value as it is written in TOML: `"15m"`, `0.8`, `["http", "https"]`.
fn toml_literal(value: &Value) -> String {
    toml::Value::try_from(value).map_or_else(|_| value.to_string(), |v| v.to_string())
}

/// A TOML value (such as a default in the docs) as JSON.
fn parse_toml_value(literal: &str) -> Result<Value, String> {
    let table: toml::Table =
        toml::from_str(&format!("v = {literal}")).map_err(|e| e.message().to_owned())?;
    serde_json::to_value(&table["v"]).map_err(|e| e.to_string())
}

/// The keys `docs/configuration.md` documents, with the default it gives (`None`: "required").
fn documented_keys(problems: &mut Vec<String>) -> BTreeMap<String, Option<Value>> {
    let doc = read("docs/configuration.md");
    let mut keys = BTreeMap::new();
    for table in tables(&doc).iter().filter(|t| t.header[0] == "key") {
        // The heading is the section, `[server]`.
        let section = table.heading.trim_matches(|c| c == '[' || c == ']');
        for (line, row) in &table.rows {
            let at = format!("docs/configuration.md:{line}");
            let Some(key) = code(&row[0]) else {
                problems.push(format!("{at}: the first cell must be a key in backticks"));
                continue;
            };
            if !key.starts_with(&format!("{section}.")) {
                problems.push(format!(
                    "{at}: {key} is under \"## {}\"; move it to \"## [{}]\"",
                    table.heading,
                    key.split('.').next().unwrap_or_default()
                ));
            }
            let default = match (
                row.get(1).map(String::as_str),
                row.get(1).and_then(|c| code(c)),
            ) {
                (Some("required"), _) => None,
                (_, Some(literal)) => match parse_toml_value(literal) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        problems.push(format!("{at}: the default of {key} is not TOML: {e}"));
                        continue;
                    }
                },
                (cell, None) => {
                    problems.push(format!(
                        "{at}: the default of {key} must be a TOML value in backticks, or \
                         \"required\"; found {cell:?}"
                    ));
                    continue;
                }
            };
            if keys.insert(key.to_owned(), default).is_some() {
                problems.push(format!("{at}: {key} is documented twice"));
            }
        }
    }
    keys
}

#[test]
fn configuration_reference_lists_every_schema_key_with_its_default() {
    let schema = schema_keys();
    let mut problems = Vec::new();
    let documented = documented_keys(&mut problems);
    for (key, default) in &schema {
        let shown = default
            .as_ref()
            .map_or("required".to_owned(), |v| format!("`{}`", toml_literal(v)));
        let section = key.split('.').next().unwrap_or_default();
        match documented.get(key) {
            None => problems.push(format!(
                "{key} is in schema/config.schema.json but not in docs/configuration.md: add \
                 the row \"| `{key}` | {shown} | <what it does> |\" to the table under \
                 \"## [{section}]\""
            )),
            Some(doc) if doc != default => problems.push(format!(
                "{key}: docs/configuration.md gives the default {}, schema/config.schema.json \
                 {shown}: fix the one that is wrong",
                doc.as_ref()
                    .map_or("required".to_owned(), |v| format!("`{}`", toml_literal(v)))
            )),
            Some(_) => {}
        }
    }
    for key in documented.keys().filter(|k| !schema.contains_key(*k)) {
        problems.push(format!(
            "docs/configuration.md documents {key}, which schema/config.schema.json does not \
             have: remove the row, or add the key to the schema (and to src/config.rs)"
        ));
    }
    assert_none(
        &problems,
        "docs/configuration.md disagrees with schema/config.schema.json",
    );
}

#[test]
fn schema_defaults_are_the_built_in_defaults_and_the_example() {
    let schema = schema_keys();
    let defaults = Config::default();
    let built_in = toml::Table::try_from(&defaults).expect("the defaults serialize");
    let built_in_value = |section: &str, name: &str| {
        built_in
            .get(section)
            .and_then(|s| s.get(name))
            .map_or("nothing".to_owned(), |v| v.to_string())
    };
    let example: toml::Table =
        toml::from_str(&read("config.example.toml")).expect("config.example.toml is TOML");
    let mut problems = Vec::new();
    for (key, default) in schema.iter().filter(|(k, _)| !k.contains("[]")) {
        let (section, name) = key.split_once('.').expect("section.key");
        let Some(default) = default else {
            problems.push(format!(
                "{key} has no \"default\" in schema/config.schema.json: add the built-in \
                 default, {}",
                built_in_value(section, name)
            ));
            continue;
        };
        let literal = toml_literal(default);
        // The schema's default, loaded as a setting, must give the built-in configuration.
        match toml::from_str::<Config>(&format!("[{section}]\n{name} = {literal}\n")) {
            Ok(loaded) if loaded == defaults => {}
            Ok(_) => problems.push(format!(
                "{key}: the schema's default {literal} is not the built-in default {} \
                 (src/config.rs): fix the one that is wrong",
                built_in_value(section, name)
            )),
            Err(e) => problems.push(format!(
                "{key}: the schema's default {literal} does not load: {}",
                e.message()
            )),
        }
        match example.get(section).and_then(|s| s.get(name)) {
            None => problems.push(format!(
                "config.example.toml lacks {key}: add \"{name} = {literal}\" under [{section}], \
                 with a comment saying what it does"
            )),
            Some(v) if serde_json::to_value(v).ok().as_ref() != Some(default) => problems.push(
                format!("{key}: config.example.toml has {v}, the schema's default is {literal}"),
            ),
            Some(_) => {}
        }
    }
    for (section, table) in &built_in {
        for name in table
            .as_table()
            .map(|t| t.keys().collect())
            .unwrap_or(Vec::new())
        {
            let key = format!("{section}.{name}");
            if !schema.contains_key(&key) {
                problems.push(format!(
                    "{key} is a setting (src/config.rs) but not in schema/config.schema.json: \
                     add it with its type, description and default {}",
                    built_in_value(section, name)
                ));
            }
        }
    }
    assert_none(
        &problems,
        "the schema's defaults, the built-in defaults and config.example.toml disagree",
    );
}

// --- errors ---------------------------------------------------------------------------------

/// `StatusCode` constants by name, for reading the status mapping.
const STATUS_CODES: [(&str, u16); 22] = [
    ("BAD_REQUEST", 400),
    ("UNAUTHORIZED", 401),
    ("FORBIDDEN", 403),
    ("NOT_FOUND", 404),
    ("METHOD_NOT_ALLOWED", 405),
    ("NOT_ACCEPTABLE", 406),
    ("REQUEST_TIMEOUT", 408),
    ("CONFLICT", 409),
    ("GONE", 410),
    ("LENGTH_REQUIRED", 411),
    ("PRECONDITION_FAILED", 412),
    ("PAYLOAD_TOO_LARGE", 413),
    ("URI_TOO_LONG", 414),
    ("UNSUPPORTED_MEDIA_TYPE", 415),
    ("RANGE_NOT_SATISFIABLE", 416),
    ("UNPROCESSABLE_ENTITY", 422),
    ("TOO_MANY_REQUESTS", 429),
    ("REQUEST_HEADER_FIELDS_TOO_LARGE", 431),
    ("INTERNAL_SERVER_ERROR", 500),
    ("BAD_GATEWAY", 502),
    ("SERVICE_UNAVAILABLE", 503),
    ("GATEWAY_TIMEOUT", 504),
];

/// A run of `[a-z_]` at the start of `s`, if the run is then closed by a quote.
fn quoted_code(s: &str) -> Option<&str> {
    let end = s.find('"')?;
    let code = &s[..end];
    (!code.is_empty() && code.chars().all(|c| c.is_ascii_lowercase() || c == '_')).then_some(code)
}

/// What the source answers errors with: `(status, code)`, and the file mapping it, from every
/// `(StatusCode::NAME, "code")` pair (the one mapping, `Error::status_and_code`), and the codes
/// of JSON bodies built elsewhere (`"error": "code"`).
fn source_error_codes(
    problems: &mut Vec<String>,
) -> (BTreeMap<(u16, String), String>, BTreeSet<String>) {
    let (mut pairs, mut loose) = (BTreeMap::new(), BTreeSet::new());
    for file in rust_files(&root().join("src")) {
        let text = std::fs::read_to_string(&file).unwrap();
        let rel = file.strip_prefix(root()).unwrap().display().to_string();
        for (at, _) in text.match_indices("StatusCode::") {
            let rest = &text[at + "StatusCode::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let after = rest[name.len()..].trim_start();
            let Some(code) = after
                .strip_prefix(',')
                .map(str::trim_start)
                .and_then(|s| s.strip_prefix('"'))
                .and_then(quoted_code)
            else {
                continue;
            };
            match STATUS_CODES.iter().find(|(n, _)| *n == name) {
                Some((_, status)) => {
                    pairs.insert((*status, code.to_owned()), rel.clone());
                }
                None => problems.push(format!(
                    "{rel} maps StatusCode::{name} to {code:?}: add StatusCode::{name} to \
                     STATUS_CODES in tests/it/docs.rs"
                )),
            }
        }
        for (at, _) in text.match_indices("\"error\": \"") {
            if let Some(code) = quoted_code(&text[at + "\"error\": \"".len()..]) {
                loose.insert(code.to_owned());
            }
        }
    }
    // If the mapping is ever written differently, say so rather than pass on nothing.
    assert!(
        pairs.len() >= 15,
        "found only {} (StatusCode::X, \"code\") pairs under src/: has the error mapping \
         changed form? Update source_error_codes in tests/it/docs.rs",
        pairs.len()
    );
    (pairs, loose)
}

/// `(status, code)` pairs of the tables in docs/errors.md.
fn documented_errors(problems: &mut Vec<String>) -> BTreeSet<(u16, String)> {
    let doc = read("docs/errors.md");
    let mut pairs = BTreeSet::new();
    for table in tables(&doc).iter().filter(|t| t.header[0] == "code") {
        for (line, row) in &table.rows {
            let Some(code) = code(&row[0]) else {
                problems.push(format!(
                    "docs/errors.md:{line}: the first cell must be a code in backticks"
                ));
                continue;
            };
            let status = row.get(1).and_then(|s| s.parse::<u16>().ok());
            match status {
                Some(status) => {
                    if !pairs.insert((status, code.to_owned())) {
                        problems.push(format!(
                            "docs/errors.md:{line}: {code} {status} is documented twice"
                        ));
                    }
                }
                None => problems.push(format!(
                    "docs/errors.md:{line}: the second cell must be one status, such as 400 \
                     (give a code with two statuses two rows)"
                )),
            }
        }
    }
    pairs
}

#[test]
fn error_reference_lists_every_code_the_source_answers() {
    let mut problems = Vec::new();
    let (source, loose) = source_error_codes(&mut problems);
    let documented = documented_errors(&mut problems);
    for ((status, code), file) in source.iter().filter(|(p, _)| !documented.contains(*p)) {
        problems.push(format!(
            "the server answers {status} {code:?} ({file}) but docs/errors.md does not list \
             it: add the row \"| `{code}` | {status} | <when> | <what to do> |\""
        ));
    }
    for (status, code) in documented.iter().filter(|p| !source.contains_key(*p)) {
        problems.push(format!(
            "docs/errors.md lists {status} {code:?}, which the server never answers: remove \
             the row, or fix its status"
        ));
    }
    let codes: BTreeSet<&String> = documented.iter().map(|(_, c)| c).collect();
    for code in loose.iter().filter(|c| !codes.contains(c)) {
        problems.push(format!(
            "a JSON body under src/ has \"error\": {code:?}, which docs/errors.md does not list"
        ));
    }
    assert_none(&problems, "docs/errors.md disagrees with the source");
}

/// Real error answers of a running server: each is JSON `{"error", "message"}`, not cached,
/// and its status and code are in docs/errors.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_error_answers_are_documented() {
    use sha2::Digest;
    const UPLOAD_TOKEN: &str = "docs-upload-token";
    let server = TestServer::start_with(|c| {
        c.auth.tokens = vec![TokenConfig {
            name: "uploader".into(),
            sha256: hex::encode(sha2::Sha256::digest(UPLOAD_TOKEN)),
            scopes: vec!["upload".into()],
        }];
        c.upstream.allow_hosts = vec!["127.0.0.1".into()];
        c.limits.max_upload_size = 1024;
    })
    .await;
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let upload = |query: &str, body: &'static [u8]| {
        client()
            .put(server.url(&format!("/api/v1/upload?{query}")))
            .bearer_auth(UPLOAD_TOKEN)
            .body(body)
    };
    let first = upload(
        &format!("url={}", enc("http://127.0.0.1:1/a-1.0.tar.gz")),
        b"hello",
    );
    let first = first.send().await.unwrap();
    assert_eq!(first.status(), 201, "the first upload is stored");
    let stored: Value = first.json().await.unwrap();
    let blake3 = stored["blake3"]
        .as_str()
        .expect("the upload's blake3")
        .to_owned();
    let get = |path: String| client().get(server.url(&path));
    let cases = vec![
        (
            "/fetch without url",
            get("/fetch".into()),
            400,
            "bad_request",
        ),
        (
            "a malformed URL",
            get("/fetch?url=nope".into()),
            400,
            "invalid_url",
        ),
        (
            "a file: URL",
            get(format!("/fetch?url={}", enc("file:///etc/passwd"))),
            400,
            "unsupported_scheme",
        ),
        (
            "a malformed checksum",
            get("/by-md5/xyz".into()),
            400,
            "bad_request",
        ),
        (
            "no token",
            client().post(server.url("/api/v1/sweep")),
            401,
            "unauthorized",
        ),
        (
            "a token without the admin scope",
            client()
                .post(server.url("/api/v1/sweep"))
                .bearer_auth(UPLOAD_TOKEN),
            403,
            "forbidden",
        ),
        (
            "a host outside allow_hosts",
            get(format!(
                "/fetch?url={}",
                enc("http://127.0.0.2/x-1.0.tar.gz")
            )),
            403,
            "forbidden_destination",
        ),
        (
            "a denied extension",
            get(format!("/fetch?url={}", enc("http://127.0.0.1:1/song.mp3"))),
            403,
            "denied_by_policy",
        ),
        (
            "an unknown checksum",
            get(format!("/by-md5/{}", "0".repeat(32))),
            404,
            "not_found",
        ),
        ("an unknown path", get("/nowhere".into()), 404, "not_found"),
        (
            "POST on /fetch",
            client().post(server.url("/fetch")),
            405,
            "method_not_allowed",
        ),
        (
            "a URL bound to other content",
            upload(
                &format!("url={}", enc("http://127.0.0.1:1/a-1.0.tar.gz")),
                b"other",
            ),
            409,
            "conflict",
        ),
        (
            "an upload over max_upload_size",
            upload("", &[b'x'; 2048]),
            413,
            "too_large",
        ),
        (
            "a target over 8 KiB",
            get(format!("/fetch?url={}", "x".repeat(9000))),
            414,
            "too_large",
        ),
        (
            "a range past the end",
            get(format!("/by-blake3/{blake3}")).header("Range", "bytes=100-"),
            416,
            "range_not_satisfiable",
        ),
        (
            "an upload not matching its md5",
            upload(&format!("md5={}", "0".repeat(32)), b"bytes"),
            422,
            "integrity_mismatch",
        ),
        (
            "an upstream refusing connections",
            get(format!(
                "/fetch?url={}",
                enc(&format!("http://127.0.0.1:{closed_port}/x-1.0.tar.gz"))
            )),
            502,
            "upstream_failed",
        ),
    ];
    let mut problems = Vec::new();
    let documented = documented_errors(&mut problems);
    for (what, request, status, code) in cases {
        let r = request.send().await.unwrap();
        let got = r.status().as_u16();
        let no_store = r.headers().get("cache-control").map(|v| v.as_bytes()) == Some(b"no-store");
        let body: Value = r.json().await.unwrap_or(Value::Null);
        let keys: BTreeSet<&str> = body
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let got_code = body["error"].as_str().unwrap_or_default();
        assert_eq!((got, got_code), (status, code), "{what}: {body}");
        assert_eq!(keys, BTreeSet::from(["error", "message"]), "{what}: {body}");
        assert!(body["message"].is_string() && no_store, "{what}: {body}");
        if !documented.contains(&(got, got_code.to_owned())) {
            problems.push(format!(
                "{what} answers {got} {got_code:?}, which docs/errors.md does not list"
            ));
        }
    }
    assert_none(&problems, "real answers missing from docs/errors.md");
}

// --- metrics and alert rules ----------------------------------------------------------------

/// The names to query, by family type, from `# TYPE` lines: counters as `<name>_total`.
fn metric_families(exposition: &str) -> BTreeMap<String, String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| {
            let name = match kind {
                "counter" if !name.ends_with("_total") => format!("{name}_total"),
                "info" if !name.ends_with("_info") => format!("{name}_info"),
                _ => name.to_owned(),
            };
            (name, kind.to_owned())
        })
        .collect()
}

/// Every `upcache_...` word in `text`.
fn metric_mentions(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (at, _) in text.match_indices("upcache_") {
        let before = text[..at].chars().next_back();
        // `$upcache_uri` is an nginx variable.
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let word: String = text[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        // "upcache_*" and the like name the prefix, not a metric.
        if word != "upcache_" {
            out.insert(word);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_reference_lists_every_exported_family() {
    let server = TestServer::start().await;
    // One artifact request, so that every kind of sample has been through the registry.
    let r = server
        .get(&server.url(&format!("/by-md5/{}", "0".repeat(32))))
        .await;
    assert_eq!(r.status(), 404);
    let scrape = server
        .get(&server.url("/metrics"))
        .await
        .text()
        .await
        .unwrap();
    let exported = metric_families(&scrape);
    assert!(
        exported.len() >= 10,
        "/metrics has only {} families:\n{scrape}",
        exported.len()
    );
    let samples: BTreeSet<String> = scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_owned())
        .collect();

    let doc = read("docs/operations.md");
    let mut problems = Vec::new();
    let mut documented = BTreeMap::new();
    for table in tables(&doc).iter().filter(|t| t.header[0] == "metric") {
        for (line, row) in &table.rows {
            match code(&row[0]) {
                Some(name) => {
                    documented.insert(name.to_owned(), row.get(1).cloned().unwrap_or_default());
                }
                None => problems.push(format!(
                    "docs/operations.md:{line}: the first cell must be a metric name in backticks"
                )),
            }
        }
    }
    for (name, kind) in &exported {
        match documented.get(name) {
            None => problems.push(format!(
                "/metrics exports {name} ({kind}) but docs/operations.md does not list it: add \
                 the row \"| `{name}` | {kind} | <labels> | <meaning> |\" to the table under \
                 \"## Metrics\""
            )),
            Some(doc_kind) if doc_kind != kind => problems.push(format!(
                "docs/operations.md gives {name} the type {doc_kind}; it is a {kind}"
            )),
            Some(_) => {}
        }
    }
    for name in documented.keys().filter(|n| !exported.contains_key(*n)) {
        problems.push(format!(
            "docs/operations.md lists {name}, which /metrics does not export: remove the row or \
             fix the name"
        ));
    }
    // Names in prose, queries and the alert rules must be real too (a histogram's
    // `_bucket`, `_sum` and `_count` series included).
    for (file, text) in [
        ("docs/operations.md", doc.clone()),
        (
            "deploy/prometheus-alerts.yml",
            read("deploy/prometheus-alerts.yml"),
        ),
        ("README.md", read("README.md")),
    ] {
        for name in metric_mentions(&text) {
            if !exported.contains_key(&name) && !samples.contains(&name) {
                problems.push(format!(
                    "{file} mentions {name}, which /metrics does not export"
                ));
            }
        }
    }
    assert_none(&problems, "the documented metrics disagree with /metrics");
}

fn promtool(args: &[&str]) {
    let binary = "/usr/bin/promtool";
    assert!(
        Path::new(binary).exists(),
        "{binary} is missing: install Debian's prometheus (scripts/test.sh does)"
    );
    let out = Command::new(binary)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool {}: {}\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The example alert rules are valid, fire on the series their unit tests give, and are
/// loaded by the compose deployment's Prometheus.
#[test]
fn example_alert_rules_pass_promtool() {
    promtool(&["check", "rules", "deploy/prometheus-alerts.yml"]);
    promtool(&["test", "rules", "deploy/prometheus-alerts.test.yml"]);
    let config: Value = serde_norway::from_str(&read("deploy/prometheus.yml")).unwrap();
    let rule_files: Vec<&str> = config["rule_files"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert_eq!(
        rule_files,
        ["prometheus-alerts.yml"],
        "deploy/prometheus.yml rule_files"
    );
    assert!(
        read("docker-compose.yml")
            .contains("./deploy/prometheus-alerts.yml:/etc/prometheus/prometheus-alerts.yml:ro"),
        "docker-compose.yml mounts deploy/prometheus-alerts.yml next to prometheus.yml"
    );
}

// --- API routes and links -------------------------------------------------------------------

/// The literal paths of the routes registered under src/ (`resource("/api/v1/lookup")`), up
/// to their first `{parameter}`.
fn registered_routes() -> BTreeSet<String> {
    let mut routes = BTreeSet::new();
    for file in rust_files(&root().join("src")) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (at, _) in text.match_indices("resource(\"/") {
            let rest = &text[at + "resource(\"".len()..];
            let path = &rest[..rest.find('"').unwrap_or(0)];
            routes.insert(path.split('{').next().unwrap_or_default().to_owned());
        }
    }
    assert!(
        routes.len() >= 15,
        "found only {} resource(\"/...\") routes under src/: has the router changed form? \
         Update registered_routes in tests/it/docs.rs. Found: {routes:?}",
        routes.len()
    );
    routes
}

#[test]
fn api_reference_has_a_section_for_every_route() {
    let doc = read("docs/api.md");
    let headings: Vec<String> = prose_lines(&doc)
        .into_iter()
        .filter(|(_, l)| l.starts_with("### "))
        .map(|(_, l)| l.replace("&lt;", "<").replace("&gt;", ">"))
        .collect();
    let mut problems = Vec::new();
    for route in registered_routes() {
        // "/" is the status page; every heading contains a slash.
        let found = match route.as_str() {
            "/" => headings.iter().any(|h| h.ends_with(" /")),
            r => headings.iter().any(|h| h.contains(r)),
        };
        if !found {
            problems.push(format!(
                "the server routes {route}... but docs/api.md has no \"### <METHOD> {route}...\" \
                 section: add one with its parameters, answers and a curl example"
            ));
        }
    }
    assert_none(&problems, "docs/api.md misses routes");
}

#[test]
fn relative_links_and_anchors_resolve() {
    let mut files = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut problems = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(root()).unwrap().display().to_string();
        let text = std::fs::read_to_string(file).unwrap();
        for (line, content) in prose_lines(&text) {
            for (at, _) in content.match_indices("](") {
                let rest = &content[at + 2..];
                let Some(end) = rest.find(')') else { continue };
                let target = &rest[..end];
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
                let linked = if path.is_empty() {
                    file.clone()
                } else {
                    file.parent().unwrap().join(path)
                };
                if !linked.exists() {
                    problems.push(format!("{rel}:{line}: {target}: no such file"));
                    continue;
                }
                if anchor.is_empty() || linked.is_dir() {
                    continue;
                }
                let linked_text = std::fs::read_to_string(&linked).unwrap_or_default();
                if !anchors(&linked_text).contains(anchor) {
                    problems.push(format!(
                        "{rel}:{line}: {target}: no heading with that anchor in {}",
                        linked.strip_prefix(root()).unwrap_or(&linked).display()
                    ));
                }
            }
        }
    }
    assert_none(&problems, "broken links in the Markdown files");
}
