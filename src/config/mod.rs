//! Configuration: defaults, the TOML file, `UPCACHE__SECTION__KEY` environment overrides, validation.
//!
//! Layering is defaults -> file -> environment -> CLI flags. Every struct denies unknown
//! fields so that a typo in a key is an error rather than a silently ignored setting.
//!
//! The types and their defaults are in `types`, loading and showing back in `load`, the rules
//! a type cannot express in `validate`, the `UPCACHE__*` variables in `env`, sizes, durations
//! and "did you mean" in `human`; the errors, and where a value came from, are here.

use std::fmt;
use std::path::PathBuf;

mod env;
mod human;
mod load;
mod types;
mod validate;

pub use human::{parse_duration, parse_size};
pub use types::*;

/// Environment variables `UPCACHE__<SECTION>__<KEY>` override the file; compared lowercased.
const ENV_PREFIX: &str = "upcache__";
/// Schemes the upstream clients can fetch.
const SCHEMES: [&str; 3] = ["http", "https", "ftp"];
/// Token scopes; `admin` implies `upload`.
const SCOPES: [&str; 2] = ["upload", "admin"];
/// Stands for the crate version in `upstream.user_agent`.
const VERSION_PLACEHOLDER: &str = "<version>";
/// Shown instead of a secret in [`Config::to_toml_string`].
const REDACTED: &str = "<redacted>";

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read (missing, unreadable).
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The config file is not valid TOML.
    #[error("cannot parse config file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    /// A key no setting has, usually a typo; `key` is the full dotted path, `suggestion`
    /// the existing key closest to it.
    #[error("unknown key \"{key}\" {origin}{}", did_you_mean(.key, .suggestion.as_deref(), .origin))]
    UnknownKey {
        key: String,
        origin: Origin,
        suggestion: Option<String>,
    },
    /// A value of the wrong type or format, such as `retries = "many"` or `presign_ttl = "5x"`.
    #[error("invalid value for \"{key}\" {origin}: {message}")]
    Value {
        key: String,
        origin: Origin,
        message: String,
    },
    /// An `UPCACHE__...` variable whose name is not `UPCACHE__<SECTION>__<KEY>` (`UPCACHE__`,
    /// `UPCACHE__SERVER__`, `UPCACHE__SERVER____LISTEN`, characters other than letters,
    /// digits and `_`).
    #[error(
        "environment variable {name} names no setting: expected UPCACHE__<SECTION>__<KEY>, such as UPCACHE__SERVER__LISTEN"
    )]
    BadVariable { name: String },
    /// A well-formed value that breaks a rule, such as `low_watermark` above `high_watermark`.
    #[error("invalid {key} = {value}: {reason}")]
    Invalid {
        key: String,
        /// The value as it would be written in TOML.
        value: String,
        reason: String,
    },
}

/// Where a setting came from, so that an error points at the line or variable to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The config file.
    File(PathBuf),
    /// An environment variable, by name.
    Env(String),
    /// Neither; only the built-in defaults were involved.
    Defaults,
}

/// `; did you mean "server.listen"?` after an unknown `key`; when the key came from a
/// variable, also the variable that would set the suggested key.
fn did_you_mean(key: &str, suggestion: Option<&str>, origin: &Origin) -> String {
    let Some(suggestion) = suggestion else {
        return String::new();
    };
    let as_var = |key: &str| {
        format!(
            "{}{}",
            ENV_PREFIX.to_uppercase(),
            key.replace('.', "__").to_uppercase()
        )
    };
    // UPCACHE__LOGGING__LEVEL: the key is "logging", the rest of the name stays.
    let var = match origin {
        Origin::Env(name) if !suggestion.contains('[') => name
            .to_uppercase()
            .strip_prefix(&as_var(key))
            .map(|rest| format!(" ({}{rest})", as_var(suggestion))),
        _ => None,
    };
    format!(
        "; did you mean \"{suggestion}\"{}?",
        var.unwrap_or_default()
    )
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "in {}", path.display()),
            Origin::Env(name) => write!(f, "(from {name})"),
            Origin::Defaults => f.write_str("in the defaults"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;

    /// Environment variables as `(name, value)`.
    type Env = [(&'static str, &'static str)];

    /// Loads `toml` (if any) from a temp file with the variables `env`; in error messages
    /// the file's path reads `FILE`.
    fn load(toml: Option<&str>, env: &Env) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upcache.toml");
        if let Some(text) = toml {
            std::fs::write(&path, text).unwrap();
        }
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::load_from(toml.map(|_| path.as_path()), env)
            .map_err(|e| e.to_string().replace(&path.display().to_string(), "FILE"))
    }

    fn example_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml")
    }

    #[test]
    fn defaults_match_the_spec() {
        let c = load(None, &[]).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.server.listen, "127.0.0.1:8080");
        assert_eq!(c.storage.data_dir, Path::new("./upcache-data"));
        assert_eq!(c.storage.presign_ttl, Duration::from_secs(900));
        assert_eq!(
            (c.cache.high_watermark, c.cache.low_watermark),
            (0.80, 0.75)
        );
        assert_eq!(c.upstream.allowed_schemes, ["http", "https", "ftp"]);
        assert_eq!(c.upstream.deny_extensions.len(), 12);
        assert_eq!(c.upstream.max_object_size, 20 * 1024 * 1024 * 1024);
        assert_eq!(c.upstream.user_agent, "upcache/<version>");
        assert_eq!(
            c.user_agent(),
            format!("upcache/{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(c.public_url(), "http://127.0.0.1:8080");
        assert!(!c.instance_name().is_empty());
        c.validate().unwrap();
    }

    #[test]
    fn file_overrides_defaults() {
        let c = load(
            Some(
                r#"
                [server]
                listen = "0.0.0.0:9000"
                public_url = "https://cache.example.org/"
                trusted_proxies = ["10.0.0.0/8"]
                instance = "007"
                [storage]
                backend = "s3"
                bucket = "sources"
                [cache]
                max_size = "512MiB"
                max_unused = 0
                sweep_interval = "1h 30m"
                [limits]
                max_upload_size = 1024
                [[upstream.mirrors]]
                prefix = "https://ftp.gnu.org/gnu/"
                alternates = ["https://ftpmirror.gnu.org/gnu/"]
                [[auth.tokens]]
                name = "ci"
                sha256 = "ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
                scopes = ["upload"]
                "#,
            ),
            &[],
        )
        .unwrap();
        assert_eq!(c.server.listen, "0.0.0.0:9000");
        assert_eq!(c.public_url(), "https://cache.example.org");
        assert_eq!(c.server.trusted_proxies, ["10.0.0.0/8".parse().unwrap()]);
        assert_eq!(c.instance_name(), "007");
        assert_eq!(c.storage.backend, Backend::S3);
        assert_eq!(c.cache.max_size, 512 << 20);
        assert_eq!(c.cache.max_unused, Duration::ZERO);
        assert_eq!(c.cache.sweep_interval, Duration::from_secs(5400));
        assert_eq!(c.limits.max_upload_size, 1024);
        assert_eq!(c.upstream.mirrors[0].alternates.len(), 1);
        assert_eq!(c.auth.tokens[0].sha256, "abcdef0123456789".repeat(4));
        // Untouched keys keep their defaults, in touched sections and others.
        assert_eq!(
            c.server.cache_control,
            ServerConfig::default().cache_control
        );
        assert_eq!(
            c.upstream,
            UpstreamConfig {
                mirrors: c.upstream.mirrors.clone(),
                ..Default::default()
            }
        );
    }

    #[test]
    fn env_overrides_every_kind_of_value() {
        let c = load(
            None,
            &[
                ("UPCACHE__SERVER__LISTEN", "0.0.0.0:8080"),
                (
                    "UPCACHE__SERVER__PUBLIC_URL",
                    "https://Cache.Example.org/Path",
                ),
                ("UPCACHE__SERVER__INSTANCE", "007"),
                ("UPCACHE__UPSTREAM__RETRIES", "5"),
                ("UPCACHE__CACHE__HIGH_WATERMARK", "0.9"),
                ("UPCACHE__UPSTREAM__ALLOW_PRIVATE", "true"),
                ("UPCACHE__UPSTREAM__ALLOWED_SCHEMES", "http, https"),
                ("UPCACHE__UPSTREAM__DENY_EXTENSIONS", ".MP3,ogg"),
                ("UPCACHE__UPSTREAM__ALLOW_HOSTS", ""),
                ("UPCACHE__UPSTREAM__CONNECT_TIMEOUT", "90s"),
                ("UPCACHE__UPSTREAM__MAX_OBJECT_SIZE", "1GiB"),
                ("UPCACHE__CACHE__MAX_SIZE", "1048576"),
                ("UPCACHE__STORAGE__SERVE", "redirect"),
                // Not ours: one underscore, or no prefix at all.
                ("UPCACHE_SERVER", "http://elsewhere:1"),
                ("UPCACHE_TOKEN", "secret"),
                ("UPCACHE_CONFIG", "/nonexistent.toml"),
                ("HOME", "/root"),
            ],
        )
        .unwrap();
        assert_eq!(c.server.listen, "0.0.0.0:8080");
        assert_eq!(c.public_url(), "https://Cache.Example.org/Path");
        assert_eq!(c.server.instance, "007");
        assert_eq!(c.upstream.retries, 5);
        assert_eq!(c.cache.high_watermark, 0.9);
        assert!(c.upstream.allow_private);
        assert_eq!(c.upstream.allowed_schemes, ["http", "https"]);
        assert_eq!(c.upstream.deny_extensions, ["mp3", "ogg"]);
        assert!(c.upstream.allow_hosts.is_empty());
        assert_eq!(c.upstream.connect_timeout, Duration::from_secs(90));
        assert_eq!(c.upstream.max_object_size, 1 << 30);
        assert_eq!(c.cache.max_size, 1 << 20);
        assert_eq!(c.storage.serve, ServeMode::Redirect);
    }

    #[test]
    fn proxy_interception_settings_load_from_file_and_env() {
        let c = load(
            Some(
                "[proxy]\nconnect = \"intercept\"\nca_cert = \"/etc/upcache/ca.pem\"\n\
                 ca_key = \"/etc/upcache/ca-key.pem\"\nintercept_hosts = [\".kernel.org\"]\n\
                 [upstream]\nca_file = \"/etc/pki/corp.pem\"",
            ),
            &[("UPCACHE__PROXY__CONNECT_PORTS", "443, 8443")],
        )
        .unwrap();
        assert_eq!(c.proxy.connect, ConnectMode::Intercept);
        assert_eq!(c.proxy.ca_cert, Path::new("/etc/upcache/ca.pem"));
        assert_eq!(c.proxy.ca_key, Path::new("/etc/upcache/ca-key.pem"));
        assert_eq!(c.proxy.intercept_hosts, [".kernel.org"]);
        assert_eq!(c.proxy.connect_ports, [443, 8443]);
        assert_eq!(c.upstream.ca_file, Path::new("/etc/pki/corp.pem"));
        assert_eq!(Config::default().proxy.connect_ports, [443]);
    }

    #[test]
    fn env_wins_over_file_and_replaces_lists() {
        let file = "[server]\nlisten = \"127.0.0.1:1\"\n[upstream]\nretries = 1\n\
                    allowed_schemes = [\"http\", \"https\", \"ftp\"]\n";
        let env = [
            ("UPCACHE__SERVER__LISTEN", "[::1]:2"),
            ("UPCACHE__UPSTREAM__ALLOWED_SCHEMES", "https"),
        ];
        let c = load(Some(file), &env).unwrap();
        assert_eq!(c.server.listen, "[::1]:2");
        assert_eq!(c.upstream.retries, 1);
        assert_eq!(c.upstream.allowed_schemes, ["https"]);
    }

    #[test]
    fn unknown_keys_name_the_key_and_where_it_was_set() {
        let err = |toml, env: &Env| load(toml, env).unwrap_err();
        assert_eq!(
            err(Some("[server]\nlistn = \"x\""), &[]),
            r#"unknown key "server.listn" in FILE; did you mean "server.listen"?"#
        );
        assert_eq!(
            err(Some("[servr]\nlisten = \"x\""), &[]),
            r#"unknown key "servr" in FILE; did you mean "server"?"#
        );
        assert_eq!(
            err(
                Some("[[upstream.mirrors]]\nprefix = \"http://a/\"\nalternates = []\nalt = 1"),
                &[]
            ),
            r#"unknown key "upstream.mirrors[0].alt" in FILE; did you mean "upstream.mirrors[0].alternates"?"#
        );
        assert_eq!(
            err(Some(""), &[("UPCACHE__SERVER__LISTN", "x")]),
            r#"unknown key "server.listn" (from UPCACHE__SERVER__LISTN); did you mean "server.listen" (UPCACHE__SERVER__LISTEN)?"#
        );
        assert_eq!(
            err(None, &[("UPCACHE__LOGGING__LEVEL", "x")]),
            r#"unknown key "logging" (from UPCACHE__LOGGING__LEVEL); did you mean "log" (UPCACHE__LOG__LEVEL)?"#
        );
        // Nothing close: no guess.
        assert_eq!(
            err(Some("[cache]\nzzz = 1"), &[]),
            r#"unknown key "cache.zzz" in FILE"#
        );
    }

    /// Found by the `config_load` fuzz target (fuzz/corpus/config_load/finding-*): a variable
    /// named `UPCACHE__` was reported as the unknown key "".
    #[test]
    fn malformed_variable_names_are_named() {
        for name in [
            "UPCACHE__",
            "UPCACHE__SERVER__",
            "UPCACHE____SERVER",
            "UPCACHE__SERVER____LISTEN",
            "UPCACHE__SERVER__LIS.TEN",
            "UPCACHE__SERVER__LISTEN[0]",
            "UPCACHE__SERVER__LIS-TEN",
        ] {
            assert_eq!(
                load(None, &[(name, "x")]).unwrap_err(),
                format!(
                    "environment variable {name} names no setting: expected \
                     UPCACHE__<SECTION>__<KEY>, such as UPCACHE__SERVER__LISTEN"
                ),
                "{name}"
            );
        }
    }

    #[test]
    fn bad_values_name_the_key_and_value() {
        let err = |toml: &str, env: &Env| load(Some(toml), env).unwrap_err();
        let cases: &[(&str, &Env, &str)] = &[
            (
                "[storage]\npresign_ttl = \"5x\"",
                &[],
                r#"invalid value for "storage.presign_ttl" in FILE: invalid duration "5x": "#,
            ),
            (
                "[cache]\nmax_size = \"MiB\"",
                &[],
                r#"invalid value for "cache.max_size" in FILE: invalid size "MiB": it does not start with a number; expected a number of bytes, or a number and a unit, such as "512MiB" or "20GiB""#,
            ),
            (
                "",
                &[("UPCACHE__CACHE__MAX_SIZE", "")],
                r#"invalid value for "cache.max_size" (from UPCACHE__CACHE__MAX_SIZE): invalid size "": empty; expected a number of bytes"#,
            ),
            (
                "",
                &[("UPCACHE__UPSTREAM__READ_TIMEOUT", "")],
                r#"invalid value for "upstream.read_timeout" (from UPCACHE__UPSTREAM__READ_TIMEOUT): invalid duration "": empty; expected a number and a unit, such as "500ms", "90s", "15m", "1h" or "30d""#,
            ),
            (
                "[cache]\nmax_unused = 90",
                &[],
                r#"invalid value for "cache.max_unused" in FILE: invalid duration 90: a unit is needed"#,
            ),
            (
                "",
                &[("UPCACHE__CACHE__MAX_SIZE", "12 parsecs")],
                r#"invalid value for "cache.max_size" (from UPCACHE__CACHE__MAX_SIZE): invalid size "12 parsecs": "#,
            ),
            (
                "",
                &[("UPCACHE__UPSTREAM__RETRIES", "many")],
                r#"invalid value for "upstream.retries" (from UPCACHE__UPSTREAM__RETRIES): invalid type: string "many""#,
            ),
            (
                "[storage]\nbackend = \"s4\"",
                &[],
                r#"invalid value for "storage.backend" in FILE: unknown variant `s4`, expected one of `fs`, `s3`, `obs`"#,
            ),
            (
                "[[auth.tokens]]\nname = \"ci\"\nscopes = []",
                &[],
                r#"invalid value for "auth.tokens[0]" in FILE: missing field `sha256`"#,
            ),
            (
                "[server]\nlisten = \"localhost\"",
                &[],
                r#"invalid server.listen = "localhost": "#,
            ),
            (
                "[cache]\nlow_watermark = 0.9",
                &[],
                "invalid cache.low_watermark = 0.9: must be above 0 and below cache.high_watermark (0.8)",
            ),
            (
                "[cache]\nhigh_watermark = 1.5",
                &[],
                "invalid cache.high_watermark = 1.5: ",
            ),
            (
                "[upstream]\nallowed_schemes = [\"http\", \"gopher\"]",
                &[],
                r#"invalid upstream.allowed_schemes = "gopher": expected http, https or ftp"#,
            ),
            (
                "[upstream]\nallowed_schemes = []",
                &[],
                "invalid upstream.allowed_schemes = []: ",
            ),
            (
                "[[auth.tokens]]\nname = \"ci\"\nsha256 = \"abc\"\nscopes = [\"upload\"]",
                &[],
                r#"invalid auth.tokens[0].sha256 = "abc": expected 64 hex digits"#,
            ),
            (
                &format!(
                    "[[auth.tokens]]\nname = \"ci\"\nsha256 = \"{}\"\nscopes = [\"root\"]",
                    "0".repeat(64)
                ),
                &[],
                r#"invalid auth.tokens[0].scopes = "root": "#,
            ),
            (
                &format!(
                    "[[auth.tokens]]\nname = \"ci\"\nsha256 = \"{0}\"\nscopes = []\n\
                     [[auth.tokens]]\nname = \"ci\"\nsha256 = \"{0}\"\nscopes = []",
                    "0".repeat(64)
                ),
                &[],
                r#"invalid auth.tokens[1].name = "ci": "#,
            ),
            (
                "[storage]\nbackend = \"obs\"",
                &[],
                r#"invalid storage.bucket = "": required"#,
            ),
            (
                "[storage]\nbackend = \"obs\"\nbucket = \"b\"",
                &[],
                r#"invalid storage.endpoint = "": required when storage.backend is obs"#,
            ),
            (
                "[storage]\nbackend = \"s3\"\nbucket = \"b\"\nendpoint = \"minio:9000\"",
                &[],
                r#"invalid storage.endpoint = "minio:9000": expected empty or an absolute http(s) url"#,
            ),
            (
                "[[upstream.mirrors]]\nprefix = \"ftp.gnu.org/gnu/\"\nalternates = []",
                &[],
                r#"invalid upstream.mirrors[0].prefix = "ftp.gnu.org/gnu/": expected an absolute url"#,
            ),
            (
                "[server]\npublic_url = \"ftp://x/\"",
                &[],
                r#"invalid server.public_url = "ftp://x/": "#,
            ),
            (
                "[alerts]\nwebhook_url = \"hooks\"",
                &[],
                r#"invalid alerts.webhook_url = "hooks": "#,
            ),
            (
                "[log]\nlevel = \"info,=x=\"",
                &[],
                r#"invalid log.level = "info,=x=": "#,
            ),
            (
                "[log]\nlevel = \"warning\"",
                &[],
                r#"invalid log.level = "warning": "#,
            ),
            (
                "[server]\ntrusted_proxies = [\"10.0.0.0/33\"]",
                &[],
                r#"invalid value for "server.trusted_proxies[0]" in FILE: "10.0.0.0/33": "#,
            ),
            (
                "[upstream]\nretries = 1.5",
                &[],
                r#"invalid value for "upstream.retries" in FILE: invalid type: floating point `1.5`"#,
            ),
            (
                "",
                &[("UPCACHE__UPSTREAM__ALLOW_PRIVATE", "maybe")],
                r#"invalid value for "upstream.allow_private" (from UPCACHE__UPSTREAM__ALLOW_PRIVATE): invalid type: string "maybe""#,
            ),
            (
                "[cache]\nmemory_entries = 0",
                &[],
                "invalid cache.memory_entries = 0: must be above 0",
            ),
            (
                "[proxy]\nconnect = \"intercept\"",
                &[],
                r#"invalid proxy.ca_cert = "": required when proxy.connect is "intercept""#,
            ),
            (
                "[proxy]\nconnect = \"intercept\"\nca_cert = \"ca.pem\"",
                &[],
                r#"invalid proxy.ca_key = "": required when proxy.connect is "intercept""#,
            ),
            (
                "[proxy]\nconnect_ports = []",
                &[],
                "invalid proxy.connect_ports = []: expected a non-empty list",
            ),
            (
                "",
                &[("UPCACHE__PROXY__CONNECT_PORTS", "443,0")],
                "invalid proxy.connect_ports = [443, 0]: ",
            ),
            (
                "[proxy]\nconnect_ports = [70000]",
                &[],
                r#"invalid value for "proxy.connect_ports[0]" in FILE: "#,
            ),
            (
                "[proxy]\nintercept_hosts = [\"https://example.org/\"]",
                &[],
                r#"invalid proxy.intercept_hosts = "https://example.org/": expected host names"#,
            ),
            (
                "[proxy]\nconnect = \"bump\"",
                &[],
                r#"invalid value for "proxy.connect" in FILE: unknown variant `bump`"#,
            ),
            (
                "[server\nlisten = 1",
                &[],
                "cannot parse config file FILE: ",
            ),
        ];
        for (toml, env, want) in cases {
            let got = err(toml, env);
            assert!(
                got.starts_with(want),
                "{toml:?} {env:?}:\n got: {got}\nwant: {want}"
            );
        }
    }

    #[test]
    fn missing_file_is_an_error_naming_it() {
        let err = Config::load_from(Some(Path::new("/nonexistent/upcache.toml")), []).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(
            err.to_string()
                .starts_with("cannot read config file /nonexistent/upcache.toml: ")
        );
    }

    #[test]
    fn sizes_and_durations_print_as_human_strings() {
        let mut c = Config::default();
        c.cache.max_size = 1536 << 10;
        c.limits.max_upload_size = 1000;
        c.cache.max_unused = Duration::from_secs(30 * 86400);
        let toml = c.to_toml_string();
        for line in [
            "max_size = \"1536KiB\"",
            "max_upload_size = \"1000\"",
            "max_object_size = \"20GiB\"",
            "max_unused = \"30days\"",
            "remote_max_unused = \"0s\"",
            "retry_backoff = \"500ms\"",
            "presign_ttl = \"15m\"",
        ] {
            assert!(toml.contains(line), "{line} not in\n{toml}");
        }
    }

    #[test]
    fn printed_config_loads_back_equal_with_the_secret_redacted() {
        let mut c = load(Some(&std::fs::read_to_string(example_path()).unwrap()), &[]).unwrap();
        c.server.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        c.storage.secret_access_key = "hunter2".into();
        c.cache.high_watermark = 0.9;
        c.cache.max_size = 3 << 40;
        c.upstream.retry_backoff = Duration::from_millis(1500);
        c.upstream.mirrors = vec![MirrorConfig {
            prefix: "https://ftp.gnu.org/gnu/".into(),
            alternates: vec!["https://ftpmirror.gnu.org/gnu/".into()],
        }];
        c.auth.tokens = vec![TokenConfig {
            name: "ci".into(),
            sha256: "0".repeat(64),
            scopes: vec!["upload".into(), "admin".into()],
        }];
        let toml = c.to_toml_string();
        assert!(!toml.contains("hunter2"));
        let mut back = load(Some(&toml), &[]).unwrap();
        assert_eq!(back.storage.secret_access_key, REDACTED);
        back.storage.secret_access_key = c.storage.secret_access_key.clone();
        assert_eq!(back, c);
    }

    #[test]
    fn example_file_is_the_defaults() {
        let c = Config::load_from(Some(&example_path()), []).unwrap();
        assert_eq!(c, Config::default());
    }

    /// What the JSON Schema finds wrong with the TOML `text`, one line per error.
    fn schema_errors(text: &str) -> Vec<String> {
        let schema = include_str!("../../schema/config.schema.json");
        let schema: serde_json::Value = serde_json::from_str(schema).unwrap();
        jsonschema::meta::validate(&schema).unwrap();
        let validator = jsonschema::draft202012::new(&schema).unwrap();
        let instance: serde_json::Value = toml::from_str(text).unwrap();
        let errors = validator.iter_errors(&instance);
        errors
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect()
    }

    #[test]
    fn schema_accepts_the_example_and_the_printed_config() {
        let example = std::fs::read_to_string(example_path()).unwrap();
        assert_eq!(schema_errors(&example), Vec::<String>::new());
        assert_eq!(
            schema_errors(&Config::default().to_toml_string()),
            Vec::<String>::new()
        );
        let mut c = Config::default();
        c.server.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()];
        c.cache.max_size = 1000;
        c.cache.sweep_interval = Duration::from_millis(90_500);
        c.upstream.mirrors = vec![MirrorConfig {
            prefix: "https://ftp.gnu.org/gnu/".into(),
            alternates: vec!["https://ftpmirror.gnu.org/gnu/".into()],
        }];
        c.auth.tokens = vec![TokenConfig {
            name: "ci".into(),
            sha256: "0".repeat(64),
            scopes: vec!["upload".into()],
        }];
        c.upstream.ca_file = "/etc/pki/corp.pem".into();
        c.proxy = ProxyConfig {
            connect: ConnectMode::Intercept,
            ca_cert: "/etc/upcache/ca.pem".into(),
            ca_key: "/etc/upcache/ca-key.pem".into(),
            intercept_hosts: vec![".kernel.org".into()],
            connect_ports: vec![443, 8443],
        };
        assert_eq!(schema_errors(&c.to_toml_string()), Vec::<String>::new());
    }

    #[test]
    fn schema_rejects_what_loading_rejects() {
        for bad in [
            "[server]\nlistn = \"x\"",
            "[servr]",
            "[[upstream.mirrors]]\nprefix = \"http://a/\"\nalternates = []\nalt = 1",
            "[storage]\npresign_ttl = \"5x\"",
            "[cache]\nmax_size = \"12 parsecs\"",
            "[upstream]\nallowed_schemes = [\"gopher\"]",
            "[upstream]\nretries = 1.5",
            "[log]\nformat = \"xml\"",
            "[proxy]\nconnect = \"intercept\"",
            "[proxy]\nconnect_ports = []",
            "[proxy]\nconnect_ports = [0]",
        ] {
            assert!(!schema_errors(bad).is_empty(), "schema accepts {bad:?}");
            assert!(load(Some(bad), &[]).is_err(), "loading accepts {bad:?}");
        }
    }
}
