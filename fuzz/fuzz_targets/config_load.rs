//! Configuration from TOML text and `UPCACHE__*` variables: every input either loads, and
//! then shows as TOML that loads back to the same configuration, or fails with an error that
//! names the key (or, for TOML syntax, the file and position).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use upcache::config::{Config, ConfigError, Origin};

fuzz_target!(|data: &[u8]| {
    // TOML, then after a NUL byte one `NAME=VALUE` variable per line (the prefix is added so
    // that every variable reaches the configuration).
    let text = String::from_utf8_lossy(data);
    let (toml, vars) = text.split_once('\0').unwrap_or((&text, ""));
    let env: Vec<(String, String)> = vars
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (format!("UPCACHE__{k}"), v.to_owned()))
        .collect();
    let path = Path::new("fuzz.toml");
    match Config::from_toml(toml, path, env.clone()) {
        Ok(config) => {
            if !config.storage.secret_access_key.is_empty() {
                return; // shown redacted
            }
            let shown = config.to_toml_string();
            let again = Config::from_toml(&shown, path, Vec::new())
                .unwrap_or_else(|e| panic!("the shown configuration does not load: {e}\n{shown}"));
            assert_eq!(again, config, "{shown}");
        }
        Err(e) => match &e {
            ConfigError::Parse { path: p, .. } => assert_eq!(p, path, "{e}"),
            // `"" = 1` in the file is a key, the empty one (TOML allows it), and is named as
            // `unknown key ""`; a variable never yields an empty key (that is BadVariable).
            ConfigError::UnknownKey { key, origin, .. } => assert!(
                !key.is_empty() || matches!(origin, Origin::File(_)),
                "no key in: {e}"
            ),
            ConfigError::Value { key, .. }
            | ConfigError::Invalid { key, .. } => assert!(!key.is_empty(), "no key in: {e}"),
            ConfigError::BadVariable { name } => assert!(name.starts_with("UPCACHE__"), "{e}"),
            ConfigError::Read { .. } => panic!("nothing is read: {e}"),
        },
    }
});
