//! Loading: defaults, then the TOML file, then the `UPCACHE__*` variables, then validation;
//! and showing the effective configuration back as TOML.

use std::path::Path;

use super::env::EnvSource;
use super::{Config, ConfigError, REDACTED};

impl Config {
    /// Loads defaults, then `file` (if given), then the process's `UPCACHE__*` variables,
    /// and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        // Lossy rather than `std::env::vars()`, which panics on a non-UTF-8 variable.
        let env = std::env::vars_os().map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        });
        Self::load_from(file, env)
    }

    /// [`Config::load`] with the environment given as `(name, value)` pairs, for tests.
    /// Variables not starting with `UPCACHE__` are ignored.
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = match file {
            Some(path) => {
                Some(
                    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                        path: path.into(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        Self::from_parts(text.as_deref().zip(file), env)
    }

    /// [`Config::load`] from the text of a config file (called `path` in messages) and the
    /// environment as `(name, value)` pairs. Pure: reads nothing.
    pub fn from_toml(
        toml: &str,
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Self::from_parts(Some((toml, path)), env)
    }

    fn from_parts(
        toml: Option<(&str, &Path)>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let file = toml.map(|(_, path)| path);
        let env = EnvSource::new(env)?;
        let mut builder = config::Config::builder();
        if let Some((text, _)) = toml {
            builder = builder.add_source(config::File::from_str(text, config::FileFormat::Toml));
        }
        // The merged tree goes through JSON because the config crate's own deserializer is
        // lenient: it would round `retries = 1.5` to 2 and read `"yes"` as 1. Only the file
        // can fail here: the environment source never errors.
        let merged: serde_json::Value = builder
            .add_source(env.clone())
            .build()
            .and_then(|merged| merged.try_deserialize())
            .map_err(|e| ConfigError::Parse {
                path: file.map(Path::to_path_buf).unwrap_or_default(),
                message: e.to_string(),
            })?;
        // Missing keys come from `Default` through `#[serde(default)]` on every struct.
        let mut config: Config = serde_path_to_error::deserialize(&merged)
            .map_err(|e| env.describe(e, &merged, file))?;
        config.normalize();
        config.validate()?;
        Ok(config)
    }

    /// Lowercases what is case-insensitive and strips the leading dot users tend to write
    /// in extensions, so that the rest of the code compares plain strings.
    fn normalize(&mut self) {
        let upstream = &mut self.upstream;
        for ext in &mut upstream.deny_extensions {
            *ext = ext.trim().trim_start_matches('.').to_lowercase();
        }
        for scheme in &mut upstream.allowed_schemes {
            *scheme = scheme.to_lowercase();
        }
        for token in &mut self.auth.tokens {
            token.sha256 = token.sha256.to_lowercase();
        }
    }

    /// The effective configuration as TOML, for `upcache config check`; secrets are redacted.
    /// Loading the output gives back this configuration.
    pub fn to_toml_string(&self) -> String {
        let mut shown = self.clone();
        if !shown.storage.secret_access_key.is_empty() {
            shown.storage.secret_access_key = REDACTED.into();
        }
        // Only a non-UTF-8 data_dir can fail here, and it cannot come from a file or variable.
        toml::to_string(&shown)
            .unwrap_or_else(|e| format!("# cannot show the configuration: {e}\n"))
    }
}
