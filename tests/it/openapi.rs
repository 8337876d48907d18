//! The OpenAPI document, `schema/openapi.json`, checked both ways: it is valid OpenAPI 3.1 (it
//! parses, every `$ref` resolves, every schema compiles, every example fits its schema); every
//! route the router registers is documented and every documented operation is routed; and real
//! answers of a running server (hits, misses, lookups, uploads, jobs, statistics, sweeps, the
//! pages and the errors) validate against what the document says for their status: required
//! headers, header values, media type and body.
//!
//! `scripts/schemathesis.sh` (run by `scripts/test.sh`) adds the reference validator
//! (openapi-spec-validator) and fuzzing of every operation.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::fixtures::{assert_none, root, token};
use crate::common::server::{TestServer, client, enc};
use crate::common::source::rust_files;
use crate::common::upstream::{Route, Upstream, random_bytes};

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn read_json(rel: &str) -> Value {
    let text = std::fs::read_to_string(root().join(rel))
        .unwrap_or_else(|e| panic!("cannot read {rel}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{rel} is not JSON: {e}"))
}

/// Where the document lives, as the base of its relative references.
fn doc_uri() -> String {
    format!("file://{}/schema/openapi.json", root().display())
}

fn audit_uri() -> String {
    format!("file://{}/schema/audit-event.schema.json", root().display())
}

/// The document with what it refers to, and JSON Schema validation of values against it.
struct Doc {
    root: Value,
    audit: Value,
    registry: jsonschema::Registry<'static>,
}

impl Doc {
    fn load() -> Doc {
        let root = read_json("schema/openapi.json");
        let audit = read_json("schema/audit-event.schema.json");
        let registry = jsonschema::Registry::new()
            .draft(jsonschema::Draft::Draft202012)
            .add(doc_uri(), root.clone())
            .and_then(|b| b.add(audit_uri(), audit.clone()))
            .and_then(|b| b.prepare())
            .expect("the document and the audit-event schema form a registry");
        Doc {
            root,
            audit,
            registry,
        }
    }

    /// What a `$ref` points at: inside the document, or in the audit-event schema next to it.
    fn resolve(&self, reference: &str) -> Option<&Value> {
        let (file, pointer) = reference.split_once('#').unwrap_or((reference, ""));
        let target = match file {
            "" => &self.root,
            "audit-event.schema.json" => &self.audit,
            _ => return None,
        };
        target.pointer(pointer)
    }

    /// `value`, or what its `$ref` (followed through) points at: for responses, parameters and
    /// headers, whose references replace them. Null if it does not resolve (the validity test
    /// reports that).
    fn deref<'a>(&'a self, mut value: &'a Value) -> &'a Value {
        static NULL: Value = Value::Null;
        for _ in 0..8 {
            match value.get("$ref").and_then(Value::as_str) {
                Some(r) => value = self.resolve(r).unwrap_or(&NULL),
                None => return value,
            }
        }
        &NULL
    }

    /// A validator for the schema at `pointer` (a JSON pointer into the document).
    fn validator(&self, pointer: &str) -> Result<jsonschema::Validator, String> {
        // The pointer goes into a URI fragment, which cannot hold the braces of the path
        // templates (the only such characters in the document's keys).
        let pointer = pointer.replace('{', "%7B").replace('}', "%7D");
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .with_registry(&self.registry)
            .should_validate_formats(true)
            .build(&json!({ "$ref": format!("{}#{pointer}", doc_uri()) }))
            .map_err(|e| e.to_string())
    }

    /// Errors of `instance` against the schema at `pointer`.
    fn errors(&self, pointer: &str, instance: &Value) -> Vec<String> {
        match self.validator(pointer) {
            Ok(v) => v.iter_errors(instance).map(|e| e.to_string()).collect(),
            Err(e) => vec![format!("the schema at {pointer} does not compile: {e}")],
        }
    }

    /// `(template, method, operation)` of every operation.
    fn operations(&self) -> Vec<(String, String, &Value)> {
        let mut out = Vec::new();
        for (template, item) in self.root["paths"].as_object().expect("paths") {
            for method in METHODS {
                if let Some(op) = item.get(method) {
                    out.push((template.clone(), method.to_owned(), op));
                }
            }
        }
        out
    }

    /// The parameters of an operation: its path item's, overridden by its own.
    fn parameters(&self, template: &str, method: &str) -> Vec<&Value> {
        let item = &self.root["paths"][template];
        let mut by_key: BTreeMap<(String, String), &Value> = BTreeMap::new();
        for list in [&item["parameters"], &item[method]["parameters"]] {
            for p in list.as_array().into_iter().flatten() {
                let p = self.deref(p);
                let key = (
                    p["in"].as_str().unwrap_or_default().to_owned(),
                    p["name"].as_str().unwrap_or_default().to_owned(),
                );
                by_key.insert(key, p);
            }
        }
        by_key.into_values().collect()
    }
}

/// JSON pointer escaping of one reference token.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Every `(pointer, value)` in `value`, depth first.
fn walk<'a>(value: &'a Value, pointer: String, out: &mut Vec<(String, &'a Value)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                walk(v, format!("{pointer}/{}", escape(k)), out);
            }
        }
        Value::Array(list) => {
            for (i, v) in list.iter().enumerate() {
                walk(v, format!("{pointer}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push((pointer, value));
}

/// Pointers of every Schema Object the document holds outside `components/schemas` (which are
/// checked whole): those of parameters, headers and media types, and the line schemas of
/// streamed media types (`x-item-schema`).
fn schema_pointers(doc: &Value) -> Vec<String> {
    let mut all = Vec::new();
    walk(doc, String::new(), &mut all);
    let mut out: Vec<String> = doc["components"]["schemas"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, _)| format!("/components/schemas/{}", escape(name)))
        .collect();
    for (pointer, value) in all {
        let in_components = pointer.starts_with("/components/schemas/");
        let is_schema_slot = pointer.ends_with("/schema") || pointer.ends_with("/x-item-schema");
        if !in_components && is_schema_slot && value.is_object() {
            out.push(pointer);
        }
    }
    out
}

#[test]
fn document_is_valid_openapi_3_1() {
    let doc = Doc::load();
    let root = &doc.root;
    let mut problems = Vec::new();
    if !root["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.1."))
    {
        problems.push(format!("\"openapi\" is {}, not 3.1.x", root["openapi"]));
    }
    if root["info"]["version"] != env!("CARGO_PKG_VERSION") {
        problems.push(format!(
            "info.version is {}, the crate is {}: update schema/openapi.json",
            root["info"]["version"],
            env!("CARGO_PKG_VERSION")
        ));
    }

    // Every reference resolves.
    let mut all = Vec::new();
    walk(root, String::new(), &mut all);
    for (pointer, value) in &all {
        if pointer.ends_with("/$ref") {
            let r = value.as_str().unwrap_or_default();
            if doc.resolve(r).is_none() {
                problems.push(format!("{pointer}: $ref {r:?} does not resolve"));
            }
        }
    }

    // Every schema compiles (with everything it refers to).
    for pointer in schema_pointers(root) {
        if let Err(e) = doc.validator(&pointer) {
            problems.push(format!("{pointer}: the schema does not compile: {e}"));
        }
    }

    // Operations: unique ids, responses with descriptions, known security schemes and scopes,
    // path parameters that match their template, examples that fit their schemas.
    let schemes = root["components"]["securitySchemes"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut ids = BTreeSet::new();
    for (template, method, op) in doc.operations() {
        let at = format!("{} {template}", method.to_uppercase());
        match op["operationId"].as_str() {
            Some(id) if ids.insert(id.to_owned()) => {}
            id => problems.push(format!("{at}: operationId {id:?} missing or not unique")),
        }
        let responses = op["responses"].as_object().cloned().unwrap_or_default();
        if !responses
            .keys()
            .any(|k| k.starts_with('2') || k.starts_with('3'))
        {
            problems.push(format!("{at}: no success response"));
        }
        for (status, response) in &responses {
            if !doc.deref(response)["description"].is_string() {
                problems.push(format!("{at}: response {status} has no description"));
            }
        }
        for requirement in op["security"].as_array().into_iter().flatten() {
            for (scheme, scopes) in requirement.as_object().into_iter().flatten() {
                if !schemes.contains_key(scheme) {
                    problems.push(format!("{at}: unknown security scheme {scheme}"));
                }
                for scope in scopes.as_array().into_iter().flatten() {
                    if !["upload", "admin"].contains(&scope.as_str().unwrap_or_default()) {
                        problems.push(format!("{at}: unknown scope {scope}"));
                    }
                }
            }
        }
        let params = doc.parameters(&template, &method);
        let in_template: BTreeSet<&str> = template
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        let declared: BTreeSet<&str> = params
            .iter()
            .filter(|p| p["in"] == "path")
            .filter_map(|p| p["name"].as_str())
            .collect();
        if in_template != declared {
            problems.push(format!(
                "{at}: the template has parameters {in_template:?}, the operation declares \
                 {declared:?}"
            ));
        }
        for p in &params {
            let name = p["name"].as_str().unwrap_or_default();
            if p["in"] == "path" && (p["required"] != true || p.get("example").is_none()) {
                problems.push(format!(
                    "{at}: path parameter {name} needs \"required\": true and an example"
                ));
            }
        }
    }

    // Examples fit their schemas (the probe test sends them).
    for (pointer, value) in &all {
        let Some(parent) = pointer.strip_suffix("/example") else {
            continue;
        };
        let Some(owner) = root.pointer(parent) else {
            continue;
        };
        let schema = if owner.get("in").is_some() {
            format!("{parent}/schema")
        } else if owner.get("type").is_some() || owner.get("properties").is_some() {
            parent.to_owned()
        } else {
            continue;
        };
        for e in doc.errors(&schema, value) {
            problems.push(format!(
                "{pointer}: the example does not fit its schema: {e}"
            ));
        }
    }
    assert_none(&problems, "schema/openapi.json is not valid OpenAPI 3.1");
}

// --- routes ----------------------------------------------------------------------------------

/// A route of the router: its path pattern (actix syntax) and methods.
#[derive(Debug)]
struct Routed {
    pattern: String,
    methods: BTreeSet<String>,
    file: String,
}

/// The text of the balanced parentheses that open at `text[open]`.
fn balanced(text: &str, open: usize) -> &str {
    let mut depth = 0;
    for (i, c) in text[open..].char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => {
                depth -= 1;
                if depth == 0 {
                    return &text[open + 1..open + i];
                }
            }
            _ => {}
        }
    }
    &text[open + 1..]
}

/// String literals in `code`.
fn literals(code: &str) -> Vec<&str> {
    code.split('"').skip(1).step_by(2).collect()
}

/// The items of the nearest `for x in [a, b, c]` before `at`: string literals as they are,
/// enum variants (`Algo::Md5`) lower-cased, as the router's `format!` turns them into paths.
fn loop_items(text: &str, at: usize) -> Vec<String> {
    let Some(start) = text[..at].rfind("for ") else {
        return Vec::new();
    };
    let Some(open) = text[start..at].find('[').map(|i| start + i) else {
        return Vec::new();
    };
    balanced(text, open)
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| match item.strip_prefix('"') {
            Some(lit) => lit.trim_end_matches('"').to_owned(),
            None => item
                .rsplit("::")
                .next()
                .unwrap_or(item)
                .to_ascii_lowercase(),
        })
        .collect()
}

/// A `format!` pattern of a route with its one argument (`{x}`) replaced by each loop item,
/// and its escaped braces (`{{p}}`, an actix parameter) unescaped.
fn expand_format(pattern: &str, items: &[String]) -> Vec<String> {
    let arg = pattern.char_indices().find(|&(i, c)| {
        c == '{' && !pattern[i..].starts_with("{{") && !pattern[..i].ends_with('{')
    });
    let unescape = |p: &str| p.replace("{{", "{").replace("}}", "}");
    match arg {
        Some((i, _)) => {
            let close = i + pattern[i..].find('}').unwrap_or(0);
            let (before, after) = (&pattern[..i], &pattern[close + 1..]);
            items
                .iter()
                .map(|item| unescape(&format!("{before}{item}{after}")))
                .collect()
        }
        None => vec![unescape(pattern)],
    }
}

/// The routes registered under src/http: every `resource("/...")` call (also with
/// `format!("/{x}/...")` inside a `for x in [...]` loop, and with a list of patterns), with
/// the methods of the `.route(...)`s that follow it up to the next resource.
fn router_routes() -> Vec<Routed> {
    let mut routes = Vec::new();
    for file in rust_files(&root().join("src/http")) {
        let text = std::fs::read_to_string(&file).unwrap();
        let rel = file.strip_prefix(root()).unwrap().display().to_string();
        let calls: Vec<usize> = text.match_indices("resource(").map(|(i, _)| i).collect();
        for (n, &at) in calls.iter().enumerate() {
            let open = at + "resource".len();
            let args = balanced(&text, open);
            let patterns: Vec<&str> = literals(args)
                .into_iter()
                .filter(|l| l.starts_with('/'))
                .collect();
            if patterns.is_empty() {
                continue; // the helper's own definition, or a closure wrapping it
            }
            // The methods: `.route(...)` calls before the next resource or the function's end.
            let end = calls.get(n + 1).copied().unwrap_or(text.len());
            let end = text[open..end].find("\n}").map_or(end, |i| open + i);
            let chain = &text[open..end];
            let mut methods = BTreeSet::new();
            for (token, names) in [
                ("get_or_head()", &["GET", "HEAD"][..]),
                ("web::get()", &["GET"]),
                ("web::head()", &["HEAD"]),
                ("web::post()", &["POST"]),
                ("web::put()", &["PUT"]),
                ("web::delete()", &["DELETE"]),
                ("web::patch()", &["PATCH"]),
            ] {
                if chain.contains(token) {
                    methods.extend(names.iter().map(|m| (*m).to_owned()));
                }
            }
            for pattern in patterns {
                let expanded = if args.contains("format!") {
                    expand_format(pattern, &loop_items(&text, at))
                } else {
                    vec![pattern.to_owned()]
                };
                for p in expanded {
                    routes.push(Routed {
                        pattern: p,
                        methods: methods.clone(),
                        file: rel.clone(),
                    });
                }
            }
        }
    }
    assert!(
        routes.len() >= 30,
        "found only {} routes under src/http: has the router changed form? Update \
         router_routes in tests/it/openapi.rs. Found: {routes:?}",
        routes.len()
    );
    routes
}

/// Whether an actix pattern matches a concrete path: `{p}` is one segment, `{p:.*}` the rest.
fn pattern_matches(pattern: &str, path: &str) -> bool {
    let mut rest = path;
    let mut pat = pattern;
    loop {
        match pat.find('{') {
            None => return rest == pat,
            Some(i) => {
                let Some(r) = rest.strip_prefix(&pat[..i]) else {
                    return false;
                };
                let close = i + pat[i..].find('}').unwrap();
                let param = &pat[i + 1..close];
                pat = &pat[close + 1..];
                if param.ends_with(":.*") {
                    return pat.is_empty() && !r.is_empty();
                }
                let seg_end = r.find('/').unwrap_or(r.len());
                if seg_end == 0 {
                    return false;
                }
                rest = &r[seg_end..];
            }
        }
    }
}

/// The catch-all route of absolute-form (proxy) requests.
const PROXY_PATTERN: &str = "/{tail:.*}";

/// A documented operation made concrete with its parameters' examples.
struct Probe {
    template: String,
    method: String,
    path: String,
    query: Vec<(String, String)>,
    body: Option<(String, Vec<u8>)>,
    secured: bool,
}

fn probes(doc: &Doc) -> Vec<Probe> {
    let mut out = Vec::new();
    for (template, method, op) in doc.operations() {
        let mut path = template.clone();
        let mut query = Vec::new();
        for p in doc.parameters(&template, &method) {
            let name = p["name"].as_str().unwrap_or_default();
            let example = match &p["example"] {
                Value::String(s) => s.clone(),
                Value::Null => continue,
                other => other.to_string(),
            };
            match p["in"].as_str() {
                Some("path") => path = path.replace(&format!("{{{name}}}"), &example),
                Some("query") if p["required"] == true => query.push((name.to_owned(), example)),
                _ => {}
            }
        }
        let body = op.get("requestBody").map(|rb| {
            let content = doc.deref(rb)["content"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            match content.get("application/json") {
                Some(media) => {
                    let example = &doc.deref(&media["schema"])["example"];
                    (
                        "application/json".to_owned(),
                        example.to_string().into_bytes(),
                    )
                }
                None => ("application/octet-stream".to_owned(), b"probe".to_vec()),
            }
        });
        out.push(Probe {
            template,
            method: method.to_uppercase(),
            path,
            query,
            body,
            secured: op.get("security").is_some(),
        });
    }
    out
}

#[test]
fn every_route_is_documented() {
    let doc = Doc::load();
    let probes = probes(&doc);
    let mut problems = Vec::new();
    for route in router_routes() {
        if route.pattern == PROXY_PATTERN {
            let documented: BTreeSet<String> = doc.root["x-upcache-proxy-form"]["methods"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m.as_str().map(str::to_owned))
                .collect();
            if documented != route.methods {
                problems.push(format!(
                    "{}: the proxy form answers {:?}; x-upcache-proxy-form.methods says \
                     {documented:?}",
                    route.file, route.methods
                ));
            }
            continue;
        }
        for method in &route.methods {
            let found = probes
                .iter()
                .any(|p| &p.method == method && pattern_matches(&route.pattern, &p.path));
            if !found {
                problems.push(format!(
                    "{} routes {method} {} but schema/openapi.json has no operation for it \
                     (or its path parameters' examples do not fit the route): add one",
                    route.file, route.pattern
                ));
            }
        }
    }
    assert_none(&problems, "routes missing from schema/openapi.json");
}

#[test]
fn every_documented_operation_is_routed() {
    let doc = Doc::load();
    let routes = router_routes();
    let mut problems = Vec::new();
    for probe in probes(&doc) {
        let routed = routes.iter().any(|r| {
            r.pattern != PROXY_PATTERN
                && r.methods.contains(&probe.method)
                && pattern_matches(&r.pattern, &probe.path)
        });
        if !routed {
            problems.push(format!(
                "schema/openapi.json documents {} {} ({}), which no route under src/http \
                 answers: remove it or fix the path",
                probe.method, probe.template, probe.path
            ));
        }
    }
    if doc.root.get("x-upcache-proxy-form").is_none() {
        problems.push("x-upcache-proxy-form is missing".into());
    }
    if doc.root.get("x-upcache-connect").is_none() {
        problems.push("x-upcache-connect (CONNECT) is missing".into());
    }
    assert_none(&problems, "documented operations the router does not have");
}

// --- real answers ------------------------------------------------------------------------------

/// An answer as received.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: bytes::Bytes,
}

async fn send(rb: reqwest::RequestBuilder) -> Answer {
    let r = rb.send().await.expect("the server answers");
    Answer {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.bytes().await.unwrap_or_default(),
    }
}

impl Doc {
    /// Follow `$ref`s from the value at `pointer`; the final pointer and value.
    fn follow(&self, pointer: String) -> (String, &Value) {
        let mut pointer = pointer;
        for _ in 0..8 {
            let value = self
                .root
                .pointer(&pointer)
                .unwrap_or_else(|| panic!("nothing at {pointer}"));
            match value.get("$ref").and_then(Value::as_str) {
                Some(r) if r.starts_with('#') => pointer = r[1..].to_owned(),
                _ => return (pointer, value),
            }
        }
        panic!("$ref chain too long at {pointer}")
    }

    /// What is wrong with `answer` as an answer of `method template`, by the document: its
    /// status must be documented (`explicit`: listed, not only covered by `default`), the
    /// required headers present, every documented header's value fit its schema, the media
    /// type be documented, and a JSON body (or each line of a JSON-lines body) fit its schema.
    fn check(&self, template: &str, method: &str, answer: &Answer, explicit: bool) -> Vec<String> {
        let mut problems = Vec::new();
        let op_ptr = format!("/paths/{}/{}", escape(template), method.to_lowercase());
        let Some(op) = self.root.pointer(&op_ptr) else {
            return vec![format!("no operation {method} {template}")];
        };
        let status = answer.status.to_string();
        let key = if op["responses"].get(&status).is_some() {
            status.clone()
        } else if !explicit && answer.status >= 400 && op["responses"].get("default").is_some() {
            "default".to_owned()
        } else {
            return vec![format!(
                "status {status} is not documented (body: {})",
                String::from_utf8_lossy(&answer.body)
            )];
        };
        let (resp_ptr, response) = self.follow(format!("{op_ptr}/responses/{}", escape(&key)));

        for (name, _) in response["headers"].as_object().into_iter().flatten() {
            let (h_ptr, header) = self.follow(format!("{resp_ptr}/headers/{}", escape(name)));
            match answer.headers.get(name.as_str()) {
                None if header["required"] == true => {
                    problems.push(format!("{status}: the required header {name} is missing"));
                }
                None => {}
                Some(value) => {
                    let text = value.to_str().unwrap_or_default();
                    let (s_ptr, schema) = self.follow(format!("{h_ptr}/schema"));
                    let instance = match schema["type"].as_str() {
                        Some("integer") => text.parse::<i64>().map_or(json!(text), |n| json!(n)),
                        _ => json!(text),
                    };
                    for e in self.errors(&s_ptr, &instance) {
                        problems.push(format!("{status}: header {name}: {text:?}: {e}"));
                    }
                }
            }
        }

        let content = response["content"].as_object();
        let media_type = answer
            .headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
            });
        let Some(content) = content else {
            if !answer.body.is_empty() {
                problems.push(format!("{status}: a body where the document says none"));
            }
            return problems;
        };
        let Some(media_type) = media_type else {
            problems.push(format!("{status}: no Content-Type"));
            return problems;
        };
        let major = media_type.split('/').next().unwrap_or_default();
        let Some(key) = content
            .keys()
            .find(|k| **k == media_type || *k == "*/*" || **k == format!("{major}/*"))
        else {
            problems.push(format!(
                "{status}: Content-Type {media_type} is not one of {:?}",
                content.keys().collect::<Vec<_>>()
            ));
            return problems;
        };
        if method.eq_ignore_ascii_case("HEAD") {
            return problems;
        }
        let media_ptr = format!("{resp_ptr}/content/{}", escape(key));
        if key == "application/json" {
            match serde_json::from_slice::<Value>(&answer.body) {
                Ok(body) => {
                    for e in self.errors(&format!("{media_ptr}/schema"), &body) {
                        problems.push(format!("{status}: body: {e}: {body}"));
                    }
                }
                Err(e) => problems.push(format!("{status}: the body is not JSON: {e}")),
            }
        }
        if content[key].get("x-item-schema").is_some() {
            let text = String::from_utf8_lossy(&answer.body);
            for line in text.lines().filter(|l| !l.is_empty()) {
                match serde_json::from_str::<Value>(line) {
                    Ok(item) => {
                        for e in self.errors(&format!("{media_ptr}/x-item-schema"), &item) {
                            problems.push(format!("{status}: line {line}: {e}"));
                        }
                    }
                    Err(e) => problems.push(format!("{status}: line {line:?} is not JSON: {e}")),
                }
            }
        }
        problems
    }
}

/// Every documented operation, sent with its examples to a server that refuses every upstream
/// URL: each answers a status the operation lists (never the router's fallback 404 or 405),
/// as the document describes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_answers_as_documented() {
    let doc = Doc::load();
    let (admin, admin_config) = token("ops", &["admin"]);
    let server = TestServer::start_with(|c| {
        c.auth.tokens = vec![admin_config];
        // No example URL may reach anything: only 127.0.0.1 is allowed, and it is private.
        c.upstream.allow_private = false;
        c.upstream.allow_hosts = vec!["127.0.0.1".into()];
    })
    .await;
    let mut problems = Vec::new();
    for probe in probes(&doc) {
        let mut url = server.url(&probe.path);
        for (i, (k, v)) in probe.query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&format!("{k}={}", enc(v)));
        }
        let method = Method::from_bytes(probe.method.as_bytes()).unwrap();
        let mut rb = client().request(method, &url);
        if let Some((content_type, body)) = &probe.body {
            rb = rb.header("Content-Type", content_type).body(body.clone());
        }
        if probe.secured {
            rb = rb.bearer_auth(&admin);
        }
        let answer = send(rb).await;
        for p in doc.check(&probe.template, &probe.method, &answer, true) {
            problems.push(format!("{} {}: {p}", probe.method, probe.path));
        }
    }
    assert_none(
        &problems,
        "answers that schema/openapi.json does not describe",
    );
}

/// Real exchanges and what the document says about each.
struct Cases {
    doc: Doc,
    problems: Vec<String>,
}

impl Cases {
    fn new() -> Cases {
        Cases {
            doc: Doc::load(),
            problems: Vec::new(),
        }
    }

    /// Send `rb`, an exchange of the operation `op` ("GET /fetch"), which must answer `status`
    /// as the document describes it; the answer, for what follows.
    async fn add(
        &mut self,
        what: &str,
        op: &str,
        status: u16,
        rb: reqwest::RequestBuilder,
    ) -> Answer {
        let answer = send(rb).await;
        self.record(what, op, status, &answer);
        answer
    }

    /// Check `answer` as [`Cases::add`] does.
    fn record(&mut self, what: &str, op: &str, status: u16, answer: &Answer) {
        let (method, template) = op.split_once(' ').expect("\"METHOD /template\"");
        if answer.status != status {
            self.problems.push(format!(
                "{what} ({op}): status {}, expected {status}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            ));
        }
        for p in self.doc.check(template, method, answer, false) {
            self.problems.push(format!("{what} ({op}): {p}"));
        }
    }

    fn assert_described(self) {
        assert_none(
            &self.problems,
            "real answers that schema/openapi.json does not describe",
        );
    }
}

/// An upstream with a few files, and a server that has downloaded `/pub/a-1.0.tar.gz`
/// (a miss, checked) and holds an admin and an upload token.
struct Setup {
    client: reqwest::Client,
    up: Upstream,
    server: TestServer,
    admin: String,
    uploader: String,
    /// The upstream URL of the stored file, and its digests by name.
    a_url: String,
    digests: BTreeMap<&'static str, String>,
}

async fn setup() -> (Cases, Setup) {
    let mut cases = Cases::new();
    let up = Upstream::start().await;
    up.route("/pub/a-1.0.tar.gz", Route::ok(random_bytes(20_000, 16)));
    up.route("/pub/b-1.0.tar.gz", Route::ok(random_bytes(3_000, 17)));
    up.route("/pub/c-1.0.tar.gz", Route::ok(random_bytes(3_000, 18)));
    up.route("/pub/gone.tar.gz", Route::status(404));
    let (admin, admin_config) = token("ops", &["admin"]);
    let (uploader, uploader_config) = token("ci", &["upload"]);
    let server = TestServer::start_with(|c| {
        c.auth.tokens = vec![admin_config, uploader_config];
        c.limits.max_upload_size = 4096;
    })
    .await;
    let a_url = up.url("/pub/a-1.0.tar.gz");
    let miss = cases
        .add(
            "a miss",
            "GET /fetch",
            200,
            client().get(server.fetch_url(&a_url)),
        )
        .await;
    assert_eq!(miss.headers["x-cache"], "MISS");
    server.app.flights.wait_idle().await;
    let hit = send(client().get(server.fetch_url(&a_url))).await;
    assert_eq!(hit.headers["x-cache"], "HIT");
    let digests = ["md5", "sha256", "sha512", "blake3"]
        .into_iter()
        .map(|algo| {
            let header = format!("x-checksum-{algo}");
            (
                algo,
                hit.headers[header.as_str()].to_str().unwrap().to_owned(),
            )
        })
        .collect();
    let setup = Setup {
        client: client(),
        up,
        server,
        admin,
        uploader,
        a_url,
        digests,
    };
    (cases, setup)
}

impl Setup {
    /// A GET of `path` on the server.
    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.server.url(path))
    }
}

/// Hits and misses in every request form, ranges, conditionals and artifact errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifact_answers_validate_against_the_document() {
    let (mut cases, s) = setup().await;
    let (c, server, d) = (&s.client, &s.server, &s.digests);
    let fetch_a = format!("/fetch?url={}", enc(&s.a_url));

    let hit = cases.add("a hit", "GET /fetch", 200, s.get(&fetch_a)).await;
    assert!(hit.headers.contains_key("etag"), "a hit has its ETag");
    cases
        .add(
            "HEAD on a hit",
            "HEAD /fetch",
            200,
            c.head(server.url(&fetch_a)),
        )
        .await;
    let range = s.get(&fetch_a).header("Range", "bytes=0-9");
    cases
        .add("a range of a hit", "GET /fetch", 206, range)
        .await;
    let past = s.get(&fetch_a).header("Range", "bytes=999999-");
    cases
        .add("a range past the end", "GET /fetch", 416, past)
        .await;
    let etag = format!("\"{}\"", d["blake3"]);
    let inm = s.get(&fetch_a).header("If-None-Match", &etag);
    cases
        .add("a matching If-None-Match", "GET /fetch", 304, inm)
        .await;
    let mirror = c.get(server.mirror_url(&s.a_url));
    cases
        .add(
            "the mirror path form",
            "GET /http/{host}/{path}",
            200,
            mirror,
        )
        .await;
    let proxied = server.proxy_client().get(&s.a_url);
    cases
        .add("the proxy form, as /fetch", "GET /fetch", 200, proxied)
        .await;
    let b = c.head(server.fetch_url(&s.up.url("/pub/b-1.0.tar.gz")));
    cases.add("HEAD on a miss", "HEAD /fetch", 200, b).await;
    let gone = c.get(server.fetch_url(&s.up.url("/pub/gone.tar.gz")));
    cases.add("upstream 404", "GET /fetch", 404, gone).await;
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let refused = format!("http://127.0.0.1:{closed_port}/x-1.0.tar.gz");
    cases
        .add(
            "upstream refusing",
            "GET /fetch",
            502,
            c.get(server.fetch_url(&refused)),
        )
        .await;
    cases
        .add("not a URL", "GET /fetch", 400, s.get("/fetch?url=nope"))
        .await;
    let wrong = s.get(&format!("{fetch_a}&md5={}", "0".repeat(32)));
    cases
        .add(
            "an expected md5 that does not match",
            "GET /fetch",
            502,
            wrong,
        )
        .await;

    let by_md5 = s.get(&format!("/by-md5/{}", d["md5"]));
    cases.add("by md5", "GET /by-md5/{hex}", 200, by_md5).await;
    let named = s.get(&format!("/by-sha256/{}/a.tar.gz", d["sha256"]));
    cases
        .add(
            "by sha256, named",
            "GET /by-sha256/{hex}/{filename}",
            200,
            named,
        )
        .await;
    let head = c.head(server.url(&format!("/by-sha512/{}", d["sha512"])));
    cases
        .add("HEAD by sha512", "HEAD /by-sha512/{hex}", 200, head)
        .await;
    let cond = s
        .get(&format!("/by-blake3/{}", d["blake3"]))
        .header("If-None-Match", &etag);
    cases
        .add("by blake3, not modified", "GET /by-blake3/{hex}", 304, cond)
        .await;
    let unknown = s.get(&format!("/by-md5/{}", "0".repeat(32)));
    cases
        .add("by an unknown md5", "GET /by-md5/{hex}", 404, unknown)
        .await;
    cases
        .add(
            "by a malformed md5",
            "GET /by-md5/{hex}",
            400,
            s.get("/by-md5/xyz"),
        )
        .await;
    for (what, op, path) in [
        (
            "lookaside with a namespace",
            "GET /repo/pkgs/{namespace}/{name}/{filename}/{algo}/{hex}/{file}",
            format!(
                "/repo/pkgs/rpms/a/a-1.0.tar.gz/sha512/{}/a-1.0.tar.gz",
                d["sha512"]
            ),
        ),
        (
            "lookaside",
            "GET /repo/pkgs/{name}/{filename}/{algo}/{hex}/{file}",
            format!(
                "/repo/pkgs/a/a-1.0.tar.gz/sha256/{}/a-1.0.tar.gz",
                d["sha256"]
            ),
        ),
        (
            "lookaside, the md5 layout",
            "GET /repo/pkgs/{name}/{filename}/{md5}/{file}",
            format!("/repo/pkgs/a/a-1.0.tar.gz/{}/a-1.0.tar.gz", d["md5"]),
        ),
    ] {
        cases.add(what, op, 200, s.get(&path)).await;
    }
    cases.assert_described();
}

/// Lookups, uploads, jobs, statistics and administration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_api_answers_validate_against_the_document() {
    use upcache::jobs::Kind;
    let (mut cases, s) = setup().await;
    let (c, server, d) = (&s.client, &s.server, &s.digests);
    let as_admin =
        |method: Method, path: &str| c.request(method, server.url(path)).bearer_auth(&s.admin);

    let lookup = s.get(&format!("/api/v1/lookup?url={}", enc(&s.a_url)));
    cases
        .add("lookup by url", "GET /api/v1/lookup", 200, lookup)
        .await;
    let lookup = s.get(&format!("/api/v1/lookup?sha512={}", d["sha512"]));
    cases
        .add("lookup by sha512", "GET /api/v1/lookup", 200, lookup)
        .await;
    let lookup = s.get(&format!("/api/v1/lookup?md5={}", "1".repeat(32)));
    cases
        .add("lookup of nothing", "GET /api/v1/lookup", 404, lookup)
        .await;
    cases
        .add(
            "lookup without a key",
            "GET /api/v1/lookup",
            400,
            s.get("/api/v1/lookup"),
        )
        .await;

    let upload = |query: &str, body: &'static [u8], token: &str| {
        let rb = c
            .put(server.url(&format!("/api/v1/upload?{query}")))
            .body(body);
        if token.is_empty() {
            rb
        } else {
            rb.bearer_auth(token)
        }
    };
    let bind = format!(
        "url={}&filename=d-1.0.tar.gz",
        enc("https://dead.example.org/d-1.0.tar.gz")
    );
    let first = upload(&bind, b"dead upstream", &s.uploader);
    let first = cases
        .add("a new upload", "PUT /api/v1/upload", 201, first)
        .await;
    let uploaded: Value = serde_json::from_slice(&first.body).unwrap_or_default();
    let again = upload(&bind, b"dead upstream", &s.uploader);
    cases
        .add("the same upload again", "PUT /api/v1/upload", 200, again)
        .await;
    let other = upload(&bind, b"other bytes", &s.uploader);
    cases
        .add("an upload conflicting", "PUT /api/v1/upload", 409, other)
        .await;
    let replace = upload(&format!("{bind}&replace=true"), b"x", &s.uploader);
    cases
        .add("replace without admin", "PUT /api/v1/upload", 403, replace)
        .await;
    let anonymous = upload(&bind, b"x", "");
    cases
        .add(
            "an upload without a token",
            "PUT /api/v1/upload",
            401,
            anonymous,
        )
        .await;
    let mismatch = upload(&format!("md5={}", "0".repeat(32)), b"bytes", &s.uploader);
    cases
        .add(
            "an upload not matching its md5",
            "PUT /api/v1/upload",
            422,
            mismatch,
        )
        .await;
    let large = upload("", &[b'x'; 8192], &s.uploader);
    cases
        .add("an upload too large", "PUT /api/v1/upload", 413, large)
        .await;

    let urls = json!({"urls": [s.up.url("/pub/c-1.0.tar.gz"), "gopher://example.org/x"]});
    for (kind, path) in [
        (Kind::Prefetch, "/api/v1/prefetch"),
        (Kind::Revalidate, "/api/v1/revalidate"),
    ] {
        // Revalidation needs the admin scope; prefetching takes it too.
        let started = as_admin(Method::POST, path).json(&urls);
        let started = cases
            .add("a job started", &format!("POST {path}"), 202, started)
            .await;
        let job: Value = serde_json::from_slice(&started.body).unwrap_or_default();
        let id = job["id"].as_str().unwrap_or_default();
        server.app.jobs.get(kind, id).expect("the job").wait().await;
        let status_op = format!("GET {path}/{{id}}");
        let status = as_admin(Method::GET, job["status_url"].as_str().unwrap_or_default());
        cases.add("a finished job", &status_op, 200, status).await;
        let unknown = as_admin(Method::GET, &format!("{path}/no-such-job"));
        cases.add("an unknown job", &status_op, 404, unknown).await;
    }
    let bad = c.post(server.url("/api/v1/prefetch")).body("{\"url\": []}");
    cases
        .add(
            "a job body that is not one",
            "POST /api/v1/prefetch",
            400,
            bad,
        )
        .await;
    let anonymous = c.post(server.url("/api/v1/revalidate")).json(&urls);
    cases
        .add(
            "revalidate without a token",
            "POST /api/v1/revalidate",
            401,
            anonymous,
        )
        .await;

    cases
        .add("stats", "GET /api/v1/stats", 200, s.get("/api/v1/stats"))
        .await;
    let sweep = as_admin(Method::POST, "/api/v1/sweep");
    cases.add("a sweep", "POST /api/v1/sweep", 200, sweep).await;
    let sweep = c.post(server.url("/api/v1/sweep")).bearer_auth(&s.uploader);
    cases
        .add("a sweep without admin", "POST /api/v1/sweep", 403, sweep)
        .await;
    let pin = format!("/api/v1/pin/{}", d["blake3"]);
    cases
        .add(
            "pin",
            "POST /api/v1/pin/{blake3}",
            200,
            as_admin(Method::POST, &pin),
        )
        .await;
    cases
        .add(
            "unpin",
            "DELETE /api/v1/pin/{blake3}",
            200,
            as_admin(Method::DELETE, &pin),
        )
        .await;
    let nothing = as_admin(Method::POST, &format!("/api/v1/pin/{}", "0".repeat(64)));
    cases
        .add("pin nothing", "POST /api/v1/pin/{blake3}", 404, nothing)
        .await;
    let audit = as_admin(Method::GET, "/api/v1/audit");
    let audit = cases
        .add("the audit export", "GET /api/v1/audit", 200, audit)
        .await;
    let events = String::from_utf8_lossy(&audit.body).lines().count();
    assert!(
        events >= 4,
        "fetched, uploaded, pinned, unpinned: {events} events"
    );
    let csv = as_admin(Method::GET, "/api/v1/audit?format=csv");
    cases
        .add("the audit export as CSV", "GET /api/v1/audit", 200, csv)
        .await;
    let since = as_admin(Method::GET, "/api/v1/audit?since=yesterday");
    cases
        .add(
            "an audit export since nonsense",
            "GET /api/v1/audit",
            400,
            since,
        )
        .await;
    let delete = format!(
        "/api/v1/blobs/{}",
        uploaded["blake3"].as_str().unwrap_or_default()
    );
    let delete = as_admin(Method::DELETE, &delete);
    cases
        .add(
            "delete a blob",
            "DELETE /api/v1/blobs/{blake3}",
            200,
            delete,
        )
        .await;
    cases.assert_described();
}

/// This document, health, readiness, metrics, the pages, and a 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_and_page_answers_validate_against_the_document() {
    let (mut cases, s) = setup().await;
    let (c, d) = (&s.client, &s.digests);

    let served = s.get("/api/v1/openapi.json");
    let served = cases
        .add("the document", "GET /api/v1/openapi.json", 200, served)
        .await;
    assert_eq!(
        served.body,
        read_bytes("schema/openapi.json"),
        "the document as committed"
    );
    let schema = s.get("/api/v1/audit-event.schema.json");
    let op = "GET /api/v1/audit-event.schema.json";
    let schema = cases.add("the audit-event schema", op, 200, schema).await;
    assert_eq!(schema.body, read_bytes("schema/audit-event.schema.json"));
    cases
        .add("health", "GET /healthz", 200, s.get("/healthz"))
        .await;
    cases
        .add("readiness", "GET /readyz", 200, s.get("/readyz"))
        .await;
    cases
        .add("metrics", "GET /metrics", 200, s.get("/metrics"))
        .await;
    cases.add("the status page", "GET /", 200, s.get("/")).await;
    let search = s.get(&format!("/ui/search?q={}", d["md5"]));
    cases
        .add("a search that finds", "GET /ui/search", 303, search)
        .await;
    cases
        .add(
            "a search that does not",
            "GET /ui/search",
            404,
            s.get("/ui/search?q=no"),
        )
        .await;
    let page = s.get(&format!("/ui/blob/{}", d["blake3"]));
    cases
        .add("a blob's page", "GET /ui/blob/{blake3}", 200, page)
        .await;
    let page = s.get(&format!("/ui/blob/{}", "0".repeat(64)));
    cases
        .add("an unknown blob's page", "GET /ui/blob/{blake3}", 404, page)
        .await;
    cases
        .add(
            "the style sheet",
            "GET /ui/style.css",
            200,
            s.get("/ui/style.css"),
        )
        .await;

    // A server with a budget of one request a second: of ten back to back, one is refused
    // (unless each took a second).
    let limited = TestServer::start_with(|c| {
        c.limits.per_client_rps = 1;
        c.limits.per_client_burst = 1;
    })
    .await;
    let stats = limited.url("/api/v1/stats");
    let mut answers = Vec::new();
    for _ in 0..10 {
        answers.push(send(c.get(&stats)).await);
    }
    let (over, within): (Vec<_>, Vec<_>) = answers.into_iter().partition(|a| a.status == 429);
    let op = "GET /api/v1/stats";
    cases.record("within the budget", op, 200, &within[0]);
    cases.record(
        "over the budget",
        op,
        429,
        over.first().expect("a 429 of ten"),
    );
    cases.assert_described();
}

fn read_bytes(rel: &str) -> bytes::Bytes {
    std::fs::read(root().join(rel)).unwrap().into()
}
