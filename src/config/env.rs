//! The `UPCACHE__<SECTION>__<KEY>` environment variables as a config source, and errors that
//! name the key and where it was set.

use std::path::Path;

use super::{Config, ConfigError, ENV_PREFIX, Origin};

/// The `UPCACHE__<SECTION>__<KEY>` variables as a config source.
///
/// Each value is converted to the kind of the setting's default: a number, a boolean, or
/// a comma-separated list that replaces the file's list as a whole. The config crate's own
/// `Environment` guesses the kind from the value instead, which turns a string setting that
/// looks like a number (`instance = "007"`) into `7`.
#[derive(Debug, Clone)]
pub(super) struct EnvSource {
    /// `(dotted key, variable name, value)`, such as `("server.listen", "UPCACHE__SERVER__LISTEN", ..)`.
    vars: Vec<(String, String, String)>,
    /// `Config::default()` as TOML: the kind of every setting.
    defaults: toml::Table,
}

impl EnvSource {
    pub(super) fn new(
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut vars = Vec::new();
        for (name, value) in env {
            let Some(key) = name
                .to_lowercase()
                .strip_prefix(ENV_PREFIX)
                .map(str::to_owned)
            else {
                continue;
            };
            // The config crate reads `.`, `[n]` and empty segments as paths of its own; such a
            // name must be reported as itself, not as a problem somewhere else.
            let segments_ok = key.split("__").all(|s| {
                !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            });
            if !segments_ok {
                return Err(ConfigError::BadVariable { name });
            }
            vars.push((key.replace("__", "."), name, value));
        }
        let defaults = toml::Table::try_from(Config::default()).unwrap_or_default();
        Ok(Self { vars, defaults })
    }

    /// `raw` as the kind of the default at `key`. A value that does not parse as that kind
    /// stays a string, for serde to report as a wrong type with the key and the variable.
    fn typed(&self, key: &str, raw: &str) -> config::ValueKind {
        let default = key
            .split_once('.')
            .and_then(|(section, key)| self.defaults.get(section)?.get(key));
        let parsed = match default {
            Some(toml::Value::Array(defaults)) => {
                let items = raw.split(',').map(str::trim).filter(|s| !s.is_empty());
                // Items of a list of numbers (`proxy.connect_ports`) are numbers.
                let numbers = matches!(defaults.first(), Some(toml::Value::Integer(_)));
                Some(
                    items
                        .map(|s| match s.parse::<i64>() {
                            Ok(n) if numbers => config::Value::new(None, n),
                            _ => config::Value::new(None, s),
                        })
                        .collect::<Vec<_>>()
                        .into(),
                )
            }
            Some(toml::Value::Integer(_)) => raw.parse::<i64>().ok().map(Into::into),
            Some(toml::Value::Float(_)) => raw.parse::<f64>().ok().map(Into::into),
            Some(toml::Value::Boolean(_)) => {
                raw.to_lowercase().parse::<bool>().ok().map(Into::into)
            }
            _ => None,
        };
        parsed.unwrap_or_else(|| raw.into())
    }

    /// Turns a deserialization error into one naming the full key and where it was set.
    pub(super) fn describe(
        &self,
        error: serde_path_to_error::Error<serde_json::Error>,
        merged: &serde_json::Value,
        file: Option<&Path>,
    ) -> ConfigError {
        use serde_path_to_error::Segment;
        let key = error.path().to_string();
        let value = error
            .path()
            .iter()
            .try_fold(merged, |value, segment| match segment {
                Segment::Seq { index } => value.get(index),
                Segment::Map { key } => value.get(key),
                _ => None,
            });
        let mut message = error.into_inner().to_string();
        // serde's wording for `deny_unknown_fields`; the path already ends with the key.
        let unknown = message.starts_with("unknown field");
        // serde names a value of the wrong type, but not one a type's parser rejected.
        let raw = match value {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        if let Some(raw) = raw.filter(|raw| !message.contains(raw.as_str())) {
            message = format!("{raw:?}: {message}");
        }
        // A key is related to a variable that sets it, a table above it or a value inside it.
        let within = |outer: &str, inner: &str| {
            inner
                .strip_prefix(outer)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        };
        let origin = match self
            .vars
            .iter()
            .find(|(k, ..)| within(k, &key) || within(&key, k))
        {
            Some((_, name, _)) => Origin::Env(name.clone()),
            None => file.map_or(Origin::Defaults, |path| Origin::File(path.into())),
        };
        if unknown {
            let suggestion = suggest_key(&key, &message);
            ConfigError::UnknownKey {
                key,
                origin,
                suggestion,
            }
        } else {
            ConfigError::Value {
                key,
                origin,
                message,
            }
        }
    }
}

impl config::Source for EnvSource {
    fn clone_into_box(&self) -> Box<dyn config::Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<config::Map<String, config::Value>, config::ConfigError> {
        let values = self
            .vars
            .iter()
            .map(|(key, _, raw)| (key.clone(), config::Value::new(None, self.typed(key, raw))));
        Ok(values.collect())
    }
}

/// The full key most likely meant by the unknown `key`, from the fields serde listed in its
/// `message` ("unknown field `listn`, expected one of `listen`, `public_url`, ...").
fn suggest_key(key: &str, message: &str) -> Option<String> {
    let (parent, field) = match key.rsplit_once('.') {
        Some((parent, field)) => (Some(parent), field),
        None => (None, key),
    };
    let expected = message.split_once(", expected ")?.1;
    let fields = expected.split('`').skip(1).step_by(2);
    let best = super::human::did_you_mean(field, fields)?;
    Some(match parent {
        Some(parent) => format!("{parent}.{best}"),
        None => best.to_owned(),
    })
}
