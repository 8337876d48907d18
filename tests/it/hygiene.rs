//! HTTP/1.1 hygiene (SPEC 5, RFC 9112) of the real binary, with raw TCP clients: size limits
//! on the request head, framing conflicts, unread bodies that must never be taken for a
//! request, and slow clients that must not starve others. And code hygiene: no import cycle
//! between the top-level modules of `src/`.

use std::time::Duration;

use crate::common::raw::Answer;
use crate::common::server::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(p: &Process) -> String {
    p.base.trim_start_matches("http://").to_owned()
}

fn spawn() -> (tempfile::TempDir, Process) {
    let cwd = tempfile::tempdir().unwrap();
    let p = Process::spawn(cwd.path(), &[], &[]);
    (cwd, p)
}

/// Send `request` and read until the server closes the connection; every response in it.
async fn exchange(addr: &str, request: &[u8]) -> Vec<Answer> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut all = Vec::new();
    // A reset after the answers (the server closing with unread input) ends the stream too.
    let _ = s.read_to_end(&mut all).await;
    parse_all(&all)
}

fn parse_all(mut data: &[u8]) -> Vec<Answer> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let end = data
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("incomplete head: {:?}", String::from_utf8_lossy(data)));
        let head = std::str::from_utf8(&data[..end]).unwrap();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.trim().to_ascii_lowercase(), v.trim().to_owned())
            })
            .collect();
        data = &data[end + 4..];
        let len = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.parse::<usize>().unwrap());
        let chunked = headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
        let mut body = Vec::new();
        if chunked {
            loop {
                let eol = data.windows(2).position(|w| w == b"\r\n").unwrap();
                let size =
                    usize::from_str_radix(std::str::from_utf8(&data[..eol]).unwrap().trim(), 16)
                        .unwrap();
                data = &data[eol + 2..];
                body.extend_from_slice(&data[..size]);
                data = &data[size + 2..];
                if size == 0 {
                    break;
                }
            }
        } else if let Some(len) = len {
            body.extend_from_slice(&data[..len]);
            data = &data[len..];
        }
        out.push(Answer {
            status,
            headers,
            body,
        });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_targets_over_8_kib_get_414() {
    let (_cwd, p) = spawn();
    let get = |path: String| {
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes()
    };
    let long = format!("/no-such-endpoint?{}", "a".repeat(8 * 1024));
    let r = exchange(&addr(&p), &get(long)).await;
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].status, 414);
    assert_eq!(r[0].json()["error"], "too_large");
    assert!(r[0].header("x-served-by").is_some());
    // Just under the limit is routed normally.
    let fits = format!("/no-such-endpoint?{}", "a".repeat(8 * 1024 - 40));
    let r = exchange(&addr(&p), &get(fits)).await;
    assert_eq!(r[0].status, 404);
    // The same for an absolute-form (proxy) target.
    let long = format!("http://example.org/{}", "a".repeat(8 * 1024));
    let r = exchange(&addr(&p), &get(long)).await;
    assert_eq!(r[0].status, 414);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_headers_over_16_kib_get_431() {
    let (_cwd, p) = spawn();
    let with_headers = |n: usize| {
        let mut req = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
        for i in 0..n {
            req.push_str(&format!("x-filler-{i:03}: {}\r\n", "v".repeat(1000)));
        }
        req.push_str("\r\n");
        req.into_bytes()
    };
    let r = exchange(&addr(&p), &with_headers(17)).await;
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].status, 431);
    assert_eq!(r[0].json()["error"], "too_large");
    let r = exchange(&addr(&p), &with_headers(15)).await;
    assert_eq!(r[0].status, 200);
    // A head beyond what the HTTP layer buffers (128 KiB) is refused there, still 431.
    let r = exchange(&addr(&p), &with_headers(140)).await;
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].status, 431);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_framing_gets_400_and_the_connection_closed() {
    let (_cwd, p) = spawn();
    let smuggled = "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n";
    let cases = [
        format!(
            "POST /fetch HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\
             Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST /fetch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
             Content-Length: 5\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST /fetch HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\
             Content-Length: 6\r\n\r\nhello!{smuggled}"
        ),
        format!("POST /fetch HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!{smuggled}"),
    ];
    for req in cases {
        // Read to EOF: the server must close, and answer nothing after the 400.
        let r = exchange(&addr(&p), req.as_bytes()).await;
        assert_eq!(r.len(), 1, "one answer, then closed: {req:?} -> {r:?}");
        assert_eq!(r[0].status, 400, "{req:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unread_body_is_never_taken_for_a_request() {
    let (_cwd, p) = spawn();
    let inner = "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n";
    let last = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let chunked_inner = format!("{:x}\r\n{inner}\r\n0\r\n\r\n", inner.len());
    let big = "x".repeat(200_000);
    let cases = [
        // A body the handler never reads (405 before any body is wanted).
        (
            405,
            format!(
                "POST /fetch HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{inner}{last}",
                inner.len()
            ),
        ),
        (
            405,
            format!(
                "POST /fetch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
             {chunked_inner}{last}"
            ),
        ),
        // Larger than anything buffered while the answer is made.
        (
            405,
            format!(
                "PUT /fetch HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{big}{inner}{last}",
                big.len() + inner.len()
            ),
        ),
        // An upload refused before its body is read.
        (
            401,
            format!(
                "PUT /api/v1/upload?filename=a.tar.gz HTTP/1.1\r\nHost: x\r\n\
             Content-Length: {}\r\n\r\n{inner}{last}",
                inner.len()
            ),
        ),
        (
            401,
            format!(
                "PUT /api/v1/upload?filename=a.tar.gz HTTP/1.1\r\nHost: x\r\n\
             Transfer-Encoding: chunked\r\n\r\n{chunked_inner}{last}"
            ),
        ),
    ];
    for (status, req) in cases {
        let r = exchange(&addr(&p), req.as_bytes()).await;
        // Either the body was drained and the next real request answered, or the
        // connection was closed after the first answer; never an answer to `inner`.
        assert!(matches!(r.len(), 1 | 2), "{r:?}");
        assert_eq!(r[0].status, status, "{req:?}");
        if let Some(second) = r.get(1) {
            assert_eq!(second.status, 200);
            assert_eq!(second.json()["status"], "ok", "the /healthz answer");
        }
        for resp in &r {
            assert!(
                !String::from_utf8_lossy(&resp.body).contains("\"ready\""),
                "the body was answered as a request: {r:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_do_not_starve_others_and_are_cut_off() {
    let (_cwd, p) = spawn();
    let a = addr(&p);
    // Slowloris: many connections, each sending its head one byte a second.
    let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut slow = Vec::new();
    for _ in 0..64 {
        let a = a.clone();
        slow.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(&a).await.unwrap();
            for b in head.iter() {
                if s.write_all(&[*b]).await.is_err() {
                    break;
                }
                let mut buf = [0u8; 512];
                // Wait a second for the next byte, unless the server answers or closes first.
                match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
                    Ok(Ok(n)) => return buf[..n].to_vec(),
                    Ok(Err(_)) => return Vec::new(),
                    Err(_) => {}
                }
            }
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
            rest
        }));
    }
    // Meanwhile, normal clients are served.
    let c = client();
    for _ in 0..20 {
        let r = c.get(format!("{}/healthz", p.base)).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    // And the slow ones are cut off (408 or closed) before their head is complete, which
    // would take longer than the test: the server did not wait for them forever.
    for t in slow {
        let answer = t.await.unwrap();
        let text = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || text.starts_with("HTTP/1.1 408"),
            "a slow head was answered: {text}"
        );
    }
}

// Code hygiene: the top-level modules of `src/` form a one-way graph (docs/ARCHITECTURE.md).

/// The top-level module graph of `src/`: for each module (a file or folder below `src/`,
/// `main` and `lib` aside), the other top-level modules it names as `crate::x` (or in
/// `crate::{x, ...}`), outside comments and its `#[cfg(test)] mod tests`.
fn module_graph() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let tests = regex::Regex::new(r"#\[cfg\(test\)\]\s*mod tests").unwrap();
    let comment = regex::Regex::new(r"//.*").unwrap();
    let path = regex::Regex::new(r"crate::(\w+)").unwrap();
    let group = regex::Regex::new(r"crate::\{([^}]*)\}").unwrap();
    let member = regex::Regex::new(r"(?:^|,)\s*(\w+)").unwrap();
    let mut graph = std::collections::BTreeMap::<String, std::collections::BTreeSet<String>>::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
                continue;
            }
            if p.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = p.strip_prefix(&src).unwrap();
            let first = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_str()
                .unwrap();
            let top = first.trim_end_matches(".rs").to_owned();
            if top == "main" || top == "lib" {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            let code = tests.split(&text).next().unwrap();
            let code = comment.replace_all(code, "");
            let names = graph.entry(top.clone()).or_default();
            names.extend(path.captures_iter(&code).map(|c| c[1].to_owned()));
            for g in group.captures_iter(&code) {
                names.extend(member.captures_iter(&g[1]).map(|c| c[1].to_owned()));
            }
            names.remove(&top);
        }
    }
    let known: std::collections::BTreeSet<String> = graph.keys().cloned().collect();
    for names in graph.values_mut() {
        names.retain(|n| known.contains(n));
    }
    graph
}

/// A cycle in `graph`, as the path `a -> b -> ... -> a`, if there is one.
fn find_cycle(
    graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
) -> Option<Vec<String>> {
    // Depth-first search: 0 unvisited, 1 on the current path, 2 done.
    fn visit(
        graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        node: &str,
        state: &mut std::collections::BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_owned(), 1);
        path.push(node.to_owned());
        for next in &graph[node] {
            match state.get(next).copied().unwrap_or(0) {
                1 => {
                    let start = path.iter().position(|n| n == next).unwrap();
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(graph, next, state, path) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    let mut state = std::collections::BTreeMap::new();
    for node in graph.keys() {
        if state.get(node).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(graph, node, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn the_top_level_modules_import_each_other_one_way() {
    let graph = module_graph();
    // The graph was read: the service names the cache, the cache names the index.
    assert!(graph["service"].contains("cache") && graph["cache"].contains("index"));
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "import cycle between top-level modules: {} (dependencies must point one way, \
             see docs/ARCHITECTURE.md)",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn a_cycle_is_found_and_named() {
    let graph = [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")]
        .into_iter()
        .fold(std::collections::BTreeMap::new(), |mut g, (from, to)| {
            g.entry(from.to_owned())
                .or_insert_with(std::collections::BTreeSet::new)
                .insert(to.to_owned());
            g.entry(to.to_owned()).or_default();
            g
        });
    assert_eq!(find_cycle(&graph).unwrap().join(" -> "), "a -> b -> c -> a");
    let mut acyclic = graph.clone();
    acyclic.get_mut("c").unwrap().clear();
    assert_eq!(find_cycle(&acyclic), None);
}
