//! The deployment artifacts. The Docker deployment is checked by reading it (no Docker engine
//! runs here): only the nginx gateway is published, the instances share an internal network
//! with it, keep their data on named volumes, trust the gateway's network, read upload tokens
//! from a mounted file, are scraped by the monitoring profile's Prometheus, and agree with
//! `deploy/nginx.conf` and the Dockerfile. The RPM spec and the systemd unit (`dist/`) are
//! checked by rpm's and systemd's own tools.

use crate::common;
use crate::common::fixtures::root;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_norway::Value;

const COMPOSE: &str = include_str!("../../docker-compose.yml");
const DOCKERFILE: &str = include_str!("../../Dockerfile");
const NGINX_CONF: &str = include_str!("../../deploy/nginx.conf");
const PROMETHEUS: &str = include_str!("../../deploy/prometheus.yml");
const README: &str = include_str!("../../README.md");
const SPEC: &str = include_str!("../../dist/upcache.spec");
const UNIT: &str = include_str!("../../dist/upcache.service");
const SYSUSERS: &str = include_str!("../../dist/upcache.sysusers");
/// The upload token that deploy/tokens.toml accepts, as the README documents it.
const DEMO_TOKEN: &str = "compose-demo-upload-token";

fn compose() -> Value {
    let mut v: Value = serde_norway::from_str(COMPOSE).expect("docker-compose.yml is YAML");
    // `<<: *upcache` merge keys, as Compose applies them.
    v.apply_merge().unwrap();
    v
}

fn services(v: &Value) -> Vec<(String, &Value)> {
    v["services"]
        .as_mapping()
        .expect("services")
        .iter()
        .map(|(k, s)| (k.as_str().unwrap().to_owned(), s))
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .map(|x| x.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn upcache_services(v: &Value) -> Vec<(String, &Value)> {
    services(v)
        .into_iter()
        .filter(|(_, s)| {
            s["image"]
                .as_str()
                .unwrap_or_default()
                .starts_with("upcache:")
        })
        .collect()
}

/// `upcache-N:8080` for every instance: where the gateway and Prometheus reach them.
fn instance_addresses(v: &Value) -> BTreeSet<String> {
    upcache_services(v)
        .iter()
        .map(|(name, _)| format!("{name}:8080"))
        .collect()
}

#[test]
fn only_the_gateway_is_published() {
    let v = compose();
    let published: Vec<String> = services(&v)
        .into_iter()
        .filter(|(_, s)| !s["ports"].is_null())
        .map(|(name, _)| name)
        .collect();
    assert_eq!(published, ["gateway", "prometheus"], "services with ports:");
    // Prometheus (an optional profile) is for this host only: it must not face the network.
    let prometheus = &v["services"]["prometheus"];
    assert_eq!(strings(&prometheus["profiles"]), ["monitoring"]);
    for port in strings(&prometheus["ports"]) {
        assert!(
            port.starts_with("127.0.0.1:"),
            "prometheus publishes {port}"
        );
    }
    let gw = &v["services"]["gateway"];
    assert!(gw["image"].as_str().unwrap().starts_with("nginx:"));
    let ups = upcache_services(&v);
    assert_eq!(ups.len(), 3, "three instances");
    for (name, s) in services(&v) {
        assert!(s["network_mode"].is_null(), "{name} uses network_mode");
        assert!(s["expose"].is_null(), "{name} exposes ports");
    }
    for (name, s) in &ups {
        assert!(s["profiles"].is_null(), "{name} always runs");
        assert_eq!(
            s["build"].as_str(),
            Some("."),
            "{name} is built from the Dockerfile"
        );
    }
}

#[test]
fn instances_share_an_internal_network_with_the_gateway_only() {
    let v = compose();
    let ups = upcache_services(&v);
    let nets_of = |s: &Value| -> BTreeSet<String> { strings(&s["networks"]).into_iter().collect() };
    let shared: BTreeSet<String> = ups
        .iter()
        .map(|(_, s)| nets_of(s))
        .reduce(|a, b| a.intersection(&b).cloned().collect())
        .unwrap();
    let gw = nets_of(&v["services"]["gateway"]);
    let private: Vec<&String> = shared
        .iter()
        .filter(|n| v["networks"][n.as_str()]["internal"].as_bool() == Some(true))
        .filter(|n| gw.contains(*n))
        .collect();
    assert_eq!(
        private.len(),
        1,
        "one internal network shared by the instances and the gateway"
    );
    let private = private[0];
    assert!(gw.contains(private), "the gateway is on {private}");
    // Nothing else joins it, and the gateway is also on a network of its own for clients.
    for (name, s) in services(&v) {
        if nets_of(s).contains(private) {
            assert!(
                name == "gateway" || ups.iter().any(|(n, _)| *n == name),
                "{name}"
            );
        }
    }
    assert!(
        gw.iter().any(|n| !shared.contains(n)),
        "a client-facing network"
    );
    // The instances trust X-Forwarded-For from exactly that network.
    let subnet = v["networks"][private.as_str()]["ipam"]["config"][0]["subnet"]
        .as_str()
        .expect("a fixed subnet");
    for (name, s) in &ups {
        assert_eq!(
            s["environment"]["UPCACHE__SERVER__TRUSTED_PROXIES"].as_str(),
            Some(subnet),
            "{name}"
        );
    }
}

#[test]
fn each_instance_keeps_its_data_on_a_named_volume() {
    let v = compose();
    let declared: BTreeSet<String> = v["volumes"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    let mut used = BTreeSet::new();
    for (name, s) in upcache_services(&v) {
        let mounts = strings(&s["volumes"]);
        assert!(
            mounts.contains(&"./deploy/tokens.toml:/etc/upcache/tokens.toml:ro".into()),
            "{name} mounts the tokens file read-only: {mounts:?}"
        );
        let data = mounts
            .iter()
            .find(|m| m.ends_with(":/var/cache/upcache"))
            .unwrap_or_else(|| panic!("{name} mounts /var/cache/upcache: {mounts:?}"));
        let volume = data.split(':').next().unwrap();
        assert!(
            declared.contains(volume),
            "{name}: {volume} is a named volume"
        );
        assert!(used.insert(volume.to_owned()), "{volume} is not shared");
        assert_eq!(
            s["environment"]["UPCACHE__SERVER__INSTANCE"].as_str(),
            Some(name.as_str())
        );
    }
}

#[test]
fn the_gateway_runs_deploy_nginx_conf_and_routes_to_the_instances() {
    let v = compose();
    let gw = &v["services"]["gateway"];
    assert!(
        strings(&gw["volumes"]).contains(&"./deploy/nginx.conf:/etc/nginx/nginx.conf:ro".into()),
        "{:?}",
        gw["volumes"]
    );
    let port = strings(&gw["ports"]);
    assert_eq!(port.len(), 1);
    assert!(port[0].ends_with(":80"), "{port:?}");
    assert!(NGINX_CONF.contains("listen 80;"));
    // The upstream blocks (the hashed one, and one per instance for its status page) name
    // exactly the instances, on the port the image listens on.
    let servers: BTreeSet<String> = NGINX_CONF
        .lines()
        .map(str::trim)
        .filter(|l| l.ends_with(';'))
        .filter_map(|l| l.strip_prefix("server "))
        .filter_map(|l| l.split_whitespace().next())
        .map(|a| a.trim_end_matches(';').to_owned())
        .collect();
    assert_eq!(servers, instance_addresses(&v));
    assert!(DOCKERFILE.contains("UPCACHE__SERVER__LISTEN=0.0.0.0:8080"));
    assert!(DOCKERFILE.contains("EXPOSE 8080"));
    // Upload sizes agree between the gateway and the instances.
    assert!(NGINX_CONF.contains("client_max_body_size 20g;"));
    assert_eq!(
        upcache::Config::default().limits.max_upload_size,
        20 << 30,
        "client_max_body_size follows limits.max_upload_size"
    );
    for (name, s) in upcache_services(&v) {
        assert_eq!(
            s["environment"]["UPCACHE__LIMITS__MAX_UPLOAD_SIZE"].as_str(),
            Some("20GiB"),
            "{name}"
        );
    }
}

#[test]
fn the_s3_profile_is_optional() {
    let v = compose();
    let s3: Vec<String> = services(&v)
        .into_iter()
        .filter(|(_, s)| strings(&s["profiles"]).contains(&"s3".to_owned()))
        .map(|(n, _)| n)
        .collect();
    assert!(s3.contains(&"minio".to_owned()), "{s3:?}");
    for (name, s) in upcache_services(&v) {
        assert_eq!(
            s["environment"]["UPCACHE__STORAGE__BACKEND"].as_str(),
            Some("${UPCACHE_BACKEND:-fs}"),
            "{name}: fs unless the s3 profile's variables say otherwise"
        );
    }
}

#[test]
fn the_image_is_multi_stage_small_non_root_and_health_checked() {
    let froms: Vec<&str> = DOCKERFILE
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(froms.len(), 2, "{froms:?}");
    assert!(froms[0].starts_with("FROM rust:1.95-bookworm AS "));
    assert_eq!(froms[1], "FROM debian:bookworm-slim");
    let runtime = DOCKERFILE
        .split("FROM debian:bookworm-slim")
        .nth(1)
        .unwrap();
    assert!(runtime.contains("COPY --from=build /usr/local/bin/upcache"));
    assert!(runtime.contains("USER upcache"), "runs as a non-root user");
    assert!(runtime.contains("useradd --system --uid 10001"));
    assert!(runtime.contains("VOLUME [\"/var/cache/upcache\"]"));
    assert!(runtime.contains("UPCACHE__STORAGE__DATA_DIR=/var/cache/upcache"));
    let health = runtime
        .split("HEALTHCHECK")
        .nth(1)
        .expect("a HEALTHCHECK")
        .split("\n\n")
        .next()
        .unwrap();
    assert!(
        health.contains("/readyz") && health.contains("8080"),
        "{health}"
    );
}

/// `value` as Compose interpolates it when no variable is set: `${VAR:-default}` becomes
/// `default`, `$$` a `$`.
fn interpolate(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(after) = rest.strip_prefix("${") {
            let end = after.find('}').expect("a closing brace");
            let (_, default) = after[..end]
                .split_once(":-")
                .unwrap_or_else(|| panic!("{value}: every variable has a default"));
            out.push_str(default);
            rest = &after[end + 1..];
        } else {
            panic!("{value}: a bare $");
        }
    }
    out.push_str(rest);
    out
}

/// An instance's environment as the container sees it with no variables set: the image's
/// `ENV` lines, then the service's `environment:`.
fn instance_env(service: &Value) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "UPCACHE__SERVER__LISTEN".to_owned(),
            "0.0.0.0:8080".to_owned(),
        ),
        (
            "UPCACHE__STORAGE__DATA_DIR".to_owned(),
            "/var/cache/upcache".to_owned(),
        ),
    ];
    for (k, v) in service["environment"].as_mapping().expect("environment") {
        let value = match v {
            Value::String(s) => interpolate(s),
            other => serde_norway::to_string(other).unwrap().trim().to_owned(),
        };
        env.push((k.as_str().unwrap().to_owned(), value));
    }
    env
}

#[test]
fn images_are_pinned() {
    let v = compose();
    for (name, s) in services(&v) {
        let image = s["image"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: image"));
        let (_, tag) = image
            .rsplit_once(':')
            .unwrap_or_else(|| panic!("{name}: {image} has no tag"));
        assert!(
            !tag.is_empty() && tag != "latest" && !tag.contains('$'),
            "{name}: {image} is not pinned"
        );
    }
    for (name, s) in upcache_services(&v) {
        assert_eq!(
            s["image"].as_str(),
            Some(format!("upcache:{}", env!("CARGO_PKG_VERSION")).as_str()),
            "{name}: upcache's tag is the crate version"
        );
    }
}

#[test]
fn trusted_proxies_follow_the_backend_network() {
    let v = compose();
    let subnet = v["networks"]["backend"]["ipam"]["config"][0]["subnet"]
        .as_str()
        .unwrap();
    let default = interpolate(subnet);
    let subnet_net: ipnet::IpNet = default.parse().expect("a CIDR");
    // Declared once, so that changing it cannot leave the instances trusting another subnet.
    assert_eq!(
        COMPOSE.matches(&default).count(),
        1,
        "{default} is written once in docker-compose.yml"
    );
    assert!(subnet.contains("${UPCACHE_BACKEND_SUBNET:-"), "{subnet}");
    for (name, s) in upcache_services(&v) {
        assert_eq!(
            s["environment"]["UPCACHE__SERVER__TRUSTED_PROXIES"].as_str(),
            Some(subnet),
            "{name}"
        );
        let cfg = upcache::Config::load_from(None, instance_env(s)).unwrap();
        assert_eq!(cfg.server.trusted_proxies, [subnet_net], "{name}");
    }
}

/// The CIDRs exempted from the gateway's per-IP limits: the `CIDR 0;` entries of the geo
/// block that sets `$upcache_limited` in `conf`.
fn gateway_exempt(conf: &str) -> BTreeSet<ipnet::IpNet> {
    let block = conf
        .split_once("geo $upcache_limited {")
        .expect("deploy/nginx.conf has the geo block")
        .1;
    let block = &block[..block.find('}').expect("the geo block ends")];
    block
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let (key, value) = l.trim_end_matches(';').split_once(char::is_whitespace)?;
            match (key, value.trim()) {
                ("default", "1") => None,
                (cidr, "0") => Some(cidr.parse().unwrap_or_else(|e| panic!("{l}: {e}"))),
                _ => panic!("geo $upcache_limited: unexpected entry {l:?}"),
            }
        })
        .collect()
}

#[test]
fn the_gateway_exempts_the_same_clients_as_the_instances() {
    let exempt = gateway_exempt(NGINX_CONF);
    for (name, s) in upcache_services(&compose()) {
        let cfg = upcache::Config::load_from(None, instance_env(s)).unwrap();
        let instance: BTreeSet<ipnet::IpNet> = cfg.limits.exempt.iter().copied().collect();
        assert_eq!(
            instance, exempt,
            "{name}: UPCACHE__LIMITS__EXEMPT and the geo block of deploy/nginx.conf must list \
             the same CIDRs"
        );
    }
    // The parser sees entries (what the gateway test adds) and ignores comments.
    let conf = NGINX_CONF.replacen(
        "default 1;",
        "default 1;\n        10.20.0.0/16 0;  # farm\n        # 10.9.0.0/16 0;",
        1,
    );
    assert_eq!(
        gateway_exempt(&conf),
        BTreeSet::from(["10.20.0.0/16".parse().unwrap()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_work_out_of_the_box_with_the_documented_token() {
    use common::server::TestServer;
    let v = compose();
    let (name, instance) = upcache_services(&v).remove(0);
    let env = instance_env(instance);
    let env_of = |key: &str| env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    // The file the instance reads is the one mounted read-only from the repository.
    let in_container = env_of("UPCACHE_CONFIG").expect("UPCACHE_CONFIG");
    let mount = strings(&instance["volumes"])
        .into_iter()
        .find(|m| m.split(':').nth(1) == Some(in_container.as_str()))
        .unwrap_or_else(|| panic!("{name} mounts {in_container}"));
    assert!(mount.ends_with(":ro"), "{mount}");
    let file = root().join(mount.split(':').next().unwrap());
    assert!(
        README.contains(DEMO_TOKEN),
        "the README documents the token"
    );

    let mut cfg = upcache::Config::load_from(Some(&file), env).unwrap();
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    cfg.server.listen = "127.0.0.1:0".into();
    cfg.storage.data_dir = dir.path().join("data");
    // "Full" by what the test stores, not by how full this machine's disk is.
    cfg.cache.max_size = 1 << 30;
    let srv = TestServer::start_in(dir, cfg);
    let upload = |token: Option<&str>| {
        let mut req = srv
            .client
            .put(srv.url("/api/v1/upload?filename=demo-1.0.tar.gz"))
            .body("demo tarball");
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    assert_eq!(upload(None).await.unwrap().status(), 401);
    assert_eq!(upload(Some("wrong")).await.unwrap().status(), 401);
    let r = upload(Some(DEMO_TOKEN)).await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

/// `binary`, from Debian's prometheus package, which scripts/test.sh installs.
fn from_prometheus_package(binary: &str) -> &str {
    assert!(
        Path::new(binary).exists(),
        "{binary} is missing: install Debian's prometheus (scripts/test.sh does)"
    );
    binary
}

#[test]
fn the_monitoring_profile_scrapes_every_instance() {
    let v = compose();
    let prometheus = &v["services"]["prometheus"];
    assert!(
        prometheus["image"]
            .as_str()
            .unwrap()
            .starts_with("prom/prometheus:v")
    );
    assert!(
        strings(&prometheus["volumes"])
            .contains(&"./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro".into())
    );
    assert!(
        strings(&prometheus["command"])
            .contains(&"--config.file=/etc/prometheus/prometheus.yml".into())
    );
    // Prometheus reaches the instances on a network of their own, not the gateway's.
    let nets: BTreeSet<String> = strings(&prometheus["networks"]).into_iter().collect();
    assert!(!nets.contains("backend"), "{nets:?}");
    let scrape_net: Vec<&String> = nets
        .iter()
        .filter(|n| {
            upcache_services(&v)
                .iter()
                .all(|(_, s)| strings(&s["networks"]).contains(n))
        })
        .collect();
    assert_eq!(
        scrape_net.len(),
        1,
        "one network shared with every instance"
    );
    assert_eq!(
        v["networks"][scrape_net[0].as_str()]["internal"].as_bool(),
        Some(true),
        "{} has no route out",
        scrape_net[0]
    );
    // Every instance is a target, on the port it listens on.
    let config: Value = serde_norway::from_str(PROMETHEUS).unwrap();
    let jobs = config["scrape_configs"].as_sequence().unwrap();
    let targets: BTreeSet<String> = jobs
        .iter()
        .filter(|j| j["metrics_path"].as_str().unwrap_or("/metrics") == "/metrics")
        .flat_map(|j| j["static_configs"].as_sequence().unwrap().iter())
        .flat_map(|c| strings(&c["targets"]))
        .collect();
    assert_eq!(targets, instance_addresses(&v));
    succeed(
        Command::new(from_prometheus_package("/usr/bin/promtool"))
            .args(["check", "config"])
            .arg(root().join("deploy/prometheus.yml")),
    );
}

/// Debian's Prometheus on a copy of `deploy/prometheus.yml` whose targets are `targets`.
struct Prometheus {
    child: std::process::Child,
    base: String,
}

impl Prometheus {
    fn start(dir: &Path, targets: &[String]) -> Prometheus {
        let binary = from_prometheus_package("/usr/bin/prometheus");
        // Only the targets and the interval change, each found exactly once.
        let mut config = PROMETHEUS.to_owned();
        let mut replace = |from: &str, to: &str| {
            assert_eq!(
                config.matches(from).count(),
                1,
                "{from:?} once in prometheus.yml"
            );
            config = config.replace(from, to);
        };
        for (n, target) in targets.iter().enumerate() {
            replace(&format!("- upcache-{}:8080", n + 1), &format!("- {target}"));
        }
        replace("scrape_interval: 15s", "scrape_interval: 1s");
        let path = dir.join("prometheus.yml");
        std::fs::write(&path, config).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new(binary);
        cmd.arg(format!("--config.file={}", path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap());
        // If the test process is killed before `Drop` runs, Prometheus goes with it.
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        Prometheus {
            child: cmd.spawn().expect("start prometheus"),
            base: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prometheus as the monitoring profile runs it, for real: it scrapes three real instances,
/// and every instance's series arrive labelled with its name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_every_instance() {
    use common::server::{TestServer, client};
    // Three loopback addresses, so that the `instance` label (the host) tells them apart,
    // as the container names do in compose.
    let mut servers = Vec::new();
    for n in 1..=3 {
        servers.push(TestServer::start_with(|c| c.server.listen = format!("127.0.0.{n}:0")).await);
    }
    let targets: Vec<String> = servers
        .iter()
        .map(|s| s.base.trim_start_matches("http://").to_owned())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let prometheus = Prometheus::start(dir.path(), &targets);
    let http = client();
    let query = format!(
        "{}/api/v1/query?query=upcache_inflight_downloads",
        prometheus.base
    );
    // Prometheus says when a scrape has happened only through its API: ask until all three
    // instances have been scraped (the deadline only bounds a failure).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let instances = loop {
        let answer = match http.get(&query).send().await {
            Ok(r) if r.status().is_success() => r.json::<serde_json::Value>().await.ok(),
            _ => None,
        };
        let instances: BTreeSet<String> = answer
            .iter()
            .flat_map(|v| v["data"]["result"].as_array().cloned().unwrap_or_default())
            .filter_map(|series| series["metric"]["instance"].as_str().map(str::to_owned))
            .collect();
        if instances.len() == 3 || std::time::Instant::now() > deadline {
            break instances;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let log = std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
    assert_eq!(
        instances,
        BTreeSet::from(["127.0.0.1".into(), "127.0.0.2".into(), "127.0.0.3".into()]),
        "series of every instance, labelled by host; prometheus log:\n{log}"
    );
    let targets: serde_json::Value = http
        .get(format!("{}/api/v1/targets", prometheus.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for target in targets["data"]["activeTargets"].as_array().unwrap() {
        assert_eq!(target["health"], "up", "{target}");
        assert_eq!(target["labels"]["job"], "upcache", "{target}");
    }
}

// --- packages: dist/ ---------------------------------------------------------------------------

/// Run `cmd`, panicking with its output unless it succeeds; returns stdout.
fn succeed(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (scripts/test.sh installs rpm and systemd)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of `Key=` in the unit (the last one, as systemd reads it).
fn unit_value(key: &str) -> String {
    UNIT.lines()
        .rev()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("upcache.service sets no {key}="))
        .to_owned()
}

#[test]
fn rpmspec_accepts_the_spec_and_it_installs_what_the_unit_uses() {
    for with in [&[][..], &["--with", "vendor"]] {
        let parsed = succeed(
            Command::new("rpmspec")
                .arg("-P")
                .args(with)
                .arg(root().join("dist/upcache.spec")),
        );
        assert!(
            parsed.contains("cargo build --release --locked"),
            "{parsed}"
        );
        assert_eq!(
            with.is_empty(),
            !parsed.contains("Source1:"),
            "the vendored crates are Source1 with --with vendor only"
        );
        for installed in [
            "/usr/bin/upcache",
            "/usr/lib/systemd/system/upcache.service",
            "/usr/lib/sysusers.d/upcache.conf",
            "%config(noreplace) %attr(0640,root,upcache) /etc/upcache/upcache.toml",
            "%dir %attr(0750,upcache,upcache) /var/cache/upcache",
        ] {
            assert!(parsed.contains(installed), "{installed} in\n{parsed}");
        }
    }
    let version = succeed(
        Command::new("rpmspec")
            .args(["-q", "--srpm", "--qf", "%{version}"])
            .arg(root().join("dist/upcache.spec")),
    );
    assert_eq!(
        version,
        env!("CARGO_PKG_VERSION"),
        "spec and crate versions agree"
    );
    // The unit runs what the package installs, as the user it creates.
    let exec = unit_value("ExecStart");
    assert_eq!(
        exec,
        "/usr/bin/upcache serve --config /etc/upcache/upcache.toml"
    );
    assert_eq!(unit_value("User"), "upcache");
    assert!(
        SYSUSERS.lines().any(|l| l.starts_with("u upcache ")),
        "{SYSUSERS}"
    );
    assert!(
        SPEC.contains("useradd -r -g upcache"),
        "%pre creates the same user"
    );
}

#[test]
fn the_packaged_configuration_is_valid_and_its_data_dir_writable() {
    let path = root().join("dist/upcache.toml");
    let cfg = upcache::Config::load_from(Some(&path), []).unwrap();
    let data_dir = cfg.storage.data_dir.to_str().unwrap().to_owned();
    assert_eq!(data_dir, "/var/cache/upcache");
    assert_eq!(cfg.server.listen, "127.0.0.1:8080", "loopback until opened");
    // The one directory the hardened unit lets the service write.
    assert_eq!(unit_value("ReadWritePaths"), data_dir);
    assert_eq!(unit_value("CacheDirectory"), "upcache");
    // And the real binary agrees.
    succeed(
        Command::new(env!("CARGO_BIN_EXE_upcache"))
            .args(["config", "check", "--config"])
            .arg(&path)
            .env_remove("UPCACHE_CONFIG"),
    );
}

/// A root directory for `systemd-analyze verify --root`: the host's system units (for the
/// targets ours names), the unit and the binary where the package puts them.
fn unit_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    let units = root.join("usr/lib/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    for entry in std::fs::read_dir("/usr/lib/systemd/system").unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), units.join(entry.file_name())).unwrap();
        }
    }
    std::fs::copy(
        root_file("dist/upcache.service"),
        units.join("upcache.service"),
    )
    .unwrap();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_upcache"), root.join("usr/bin/upcache")).unwrap();
    root
}

fn root_file(path: &str) -> PathBuf {
    root().join(path)
}

#[test]
fn systemd_accepts_the_hardened_unit() {
    for (key, want) in [
        ("User", "upcache"),
        ("Group", "upcache"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("ReadWritePaths", "/var/cache/upcache"),
        ("LimitNOFILE", "65536"),
        ("CapabilityBoundingSet", ""),
    ] {
        assert_eq!(unit_value(key), want, "{key}=");
    }
    let dir = tempfile::tempdir().unwrap();
    let root = unit_root(dir.path());
    let out = Command::new("systemd-analyze")
        .args(["verify", "--root"])
        .arg(&root)
        .arg("upcache.service")
        .output()
        .expect("systemd-analyze runs (scripts/test.sh installs systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.is_empty(),
        "verify: {stderr}"
    );
    // systemd's own rating of the sandbox: "OK" is at most 2.0 on its 0-10 scale of exposure.
    succeed(
        Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--threshold=20"])
            .arg(root_file("dist/upcache.service")),
    );
}

#[test]
fn rpmbuild_makes_a_source_package() {
    let out = tempfile::tempdir().unwrap();
    let listed = succeed(Command::new(root_file("dist/srpm.sh")).arg(out.path()));
    let srpm = PathBuf::from(listed.trim());
    let version = env!("CARGO_PKG_VERSION");
    assert!(srpm.starts_with(out.path()) && srpm.exists(), "{listed}");
    let files: BTreeSet<String> = succeed(Command::new("rpm").arg("-qpl").arg(&srpm))
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        files,
        BTreeSet::from([format!("upcache-{version}.tar.gz"), "upcache.spec".into()])
    );
    let fields: BTreeMap<&str, String> = ["NAME", "VERSION"]
        .into_iter()
        .map(|tag| {
            let value = succeed(
                Command::new("rpm")
                    .args(["-qp", "--qf", &format!("%{{{tag}}}")])
                    .arg(&srpm),
            );
            (tag, value)
        })
        .collect();
    assert_eq!(fields["NAME"], "upcache");
    assert_eq!(fields["VERSION"], version);
}
