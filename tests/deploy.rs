//! The Docker deployment, checked by reading it (no Docker engine runs here): only the nginx
//! gateway is published, the instances share an internal network with it, keep their data on
//! named volumes, and agree with `deploy/nginx.conf` and the Dockerfile.

use std::collections::BTreeSet;

use serde_norway::Value;

const COMPOSE: &str = include_str!("../docker-compose.yml");
const DOCKERFILE: &str = include_str!("../Dockerfile");
const NGINX_CONF: &str = include_str!("../deploy/nginx.conf");

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
        .filter(|(_, s)| s["image"].as_str() == Some("upcache:latest"))
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
    assert_eq!(published, ["gateway"], "services with ports:");
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
        .collect();
    assert_eq!(
        private.len(),
        1,
        "one internal network shared by the instances"
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
    // The upstream block names exactly the instances, on the port the image listens on.
    let servers: BTreeSet<String> = NGINX_CONF
        .lines()
        .map(str::trim)
        .filter(|l| l.ends_with(';'))
        .filter_map(|l| l.strip_prefix("server "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let expected: BTreeSet<String> = upcache_services(&v)
        .iter()
        .map(|(name, _)| format!("{name}:8080"))
        .collect();
    assert_eq!(servers, expected);
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
