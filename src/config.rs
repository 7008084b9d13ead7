//! The configuration file and the environment, turned into settings before any call is made.
//!
//! Secrets come only from the environment or from a credentials file the config names: never
//! from argv (visible in `ps`) and never from the config file itself (it gets copied around).

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::secret::Secret;

/// The name of the config file read from the working directory when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "bulkverify.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}, line {line}, column {column}: {message}")]
    Syntax {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {setting}: {message}")]
    Invalid {
        path: String,
        setting: String,
        message: String,
    },
    #[error(
        "no credentials for {provider}: set {vars} in the environment, or name a \
         credentials_file in [providers.{provider}] of the config"
    )]
    MissingCredentials {
        provider: &'static str,
        /// The variables, joined for the message (`A and B`).
        vars: String,
    },
    #[error("{check} reads no column called `{column}`; its columns are: {known}")]
    UnknownColumn {
        check: &'static str,
        column: String,
        known: String,
    },
    #[error("credentials file {path}: {message}")]
    CredentialsFile { path: String, message: String },
}

/// The config file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    #[serde(default)]
    pub checks: BTreeMap<String, CheckConfig>,
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

/// One `[providers.NAME]` section.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub base_url: Option<String>,
    pub per_second: Option<u32>,
    pub per_minute: Option<u32>,
    pub per_day: Option<u32>,
    pub concurrency: Option<usize>,
    pub credentials_file: Option<PathBuf>,
    pub connect_timeout_secs: Option<f64>,
    pub read_timeout_secs: Option<f64>,
    pub max_attempts: Option<u32>,
    pub pacing_guard_ms: Option<u64>,
    /// Whether the provider counts polls and downloads against the quota (default: yes).
    pub polls_count: Option<bool>,
    /// Retries allowed, as a share of calls (default 0.2).
    pub retry_budget: Option<f64>,
    /// How long the provider may stay down before the run gives up on it (default 600 s).
    pub give_up_after_secs: Option<f64>,
    /// Cashfree's `x-api-version` (a date), sent when set.
    pub api_version: Option<String>,
    /// Cashfree's public key (PEM) for the `x-cf-signature` of accounts that use public-key 2FA
    /// instead of an IP allow-list.
    pub public_key_file: Option<PathBuf>,
    /// Hosts result files may be downloaded from (exact, or `*.suffix`), besides the
    /// provider's own base URL.
    pub download_hosts: Option<Vec<String>>,
    /// The largest result file fetched, in MiB (default 2048).
    pub max_download_mb: Option<u64>,
    /// The longest a result file's download may take (default 1800 s).
    pub download_timeout_secs: Option<f64>,
}

/// One `[checks.NAME]` section.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    pub chunk_size: Option<usize>,
    pub poll_initial_secs: Option<f64>,
    pub poll_max_secs: Option<f64>,
    pub poll_deadline_secs: Option<f64>,
    /// Two-step checks: how long an OTP stays valid after it is sent.
    pub otp_valid_secs: Option<f64>,
    /// `equal-aadhaar-otp`: the journey Equal set up for the account (or `EQUAL_JOURNEY_ID`).
    pub journey_id: Option<String>,
    /// How long a final answer serves later jobs on the same account (`30d`; `0`: never).
    pub reuse_within: Option<String>,
    /// What one paid call costs, in the account's currency: `plan` prices the job with it and
    /// `max_spend` needs it.
    pub price_per_call: Option<f64>,
    /// The most paid calls one run makes (`--max-paid-calls` replaces it).
    pub max_paid_calls: Option<u64>,
    /// The most one run spends, at `price_per_call`.
    pub max_spend: Option<f64>,
}

impl ConfigFile {
    /// Reads `path`, or `bulkverify.toml` in the working directory when it exists, or nothing.
    pub fn load(path: Option<&Path>) -> Result<ConfigFile, ConfigError> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None if Path::new(DEFAULT_CONFIG).is_file() => PathBuf::from(DEFAULT_CONFIG),
            None => return Ok(ConfigFile::default()),
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut config = ConfigFile::parse(&text, &path)?;
        config.path = Some(path);
        Ok(config)
    }

    /// Parses config text. Errors carry line and column but never the offending line itself:
    /// it may hold a secret pasted in by mistake.
    pub fn parse(text: &str, path: &Path) -> Result<ConfigFile, ConfigError> {
        toml::from_str(text).map_err(|e: toml::de::Error| {
            let offset = e.span().map_or(0, |s| s.start);
            let before = &text[..offset.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            let mut message = without_quoted_values(e.message().trim());
            if message.contains("unknown field") && message.contains("secret") {
                message.push_str(
                    "; credentials are read only from the environment or a credentials_file",
                );
            }
            ConfigError::Syntax {
                path: path.display().to_string(),
                line,
                column,
                message,
            }
        })
    }

    pub fn display_path(&self) -> String {
        self.path
            .as_ref()
            .map_or_else(|| "(no config file)".into(), |p| p.display().to_string())
    }

    pub fn invalid(&self, setting: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.display_path(),
            setting: setting.into(),
            message: message.into(),
        }
    }
}

/// Requests allowed per window. Every configured window is enforced at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    pub per_second: Option<NonZeroU32>,
    pub per_minute: Option<NonZeroU32>,
    pub per_day: Option<NonZeroU32>,
}

/// The slack always added to each paced window: about the jitter of our own timers and
/// loopback on a busy machine, 0.5% of a one-second window. What the provider's counting or
/// the network path needs beyond it is learned from its 429s (the gate's margin), not guessed
/// here.
pub const DEFAULT_PACING_GUARD: Duration = Duration::from_millis(5);

/// How a provider is reached: resolved from the config, the environment and the defaults.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    pub defaults: &'static ProviderDefaults,
    pub base_url: reqwest::Url,
    pub quotas: Quotas,
    /// Slack added to each paced window against the jitter between our send and the
    /// provider's arrival count.
    pub pacing_guard: Duration,
    pub concurrency: usize,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub max_attempts: u32,
    /// Whether polls and downloads pass the quota gate's pacing and day window.
    pub polls_count: bool,
    /// Retries allowed as a share of calls, so that a sick provider is not hammered.
    pub retry_budget: f64,
    /// How long the circuit breaker waits for a provider that is down before the run ends.
    pub give_up_after: Duration,
    /// The credentials, in the order of [`ProviderDefaults::credentials`].
    pub credentials: Vec<Secret>,
    /// Cashfree's `x-api-version`.
    pub api_version: Option<String>,
    /// Cashfree's public key, PEM text, for `x-cf-signature`.
    pub public_key: Option<String>,
    pub downloads: DownloadPolicy,
}

/// What the configuration allows for one provider's downloads.
#[derive(Debug, Clone)]
pub struct DownloadPolicy {
    /// The provider's base URL: its own origin is trusted.
    pub base: reqwest::Url,
    /// Host names, exact or `*.suffix`.
    pub hosts: Vec<String>,
    pub max_bytes: u64,
    pub max_time: Duration,
}

/// A provider's published defaults, used where the config is silent.
#[derive(Debug)]
pub struct ProviderDefaults {
    pub name: &'static str,
    pub env_prefix: &'static str,
    pub base_url: &'static str,
    /// The credentials it needs, as environment variables after the prefix (`CLIENT_ID`):
    /// Deepvue, Cashfree and Equal take an id and a secret, Attestr one opaque token.
    pub credentials: &'static [&'static str],
    /// Hosts its result files come from, when it hands out download URLs.
    pub download_hosts: &'static [&'static str],
}

impl ProviderDefaults {
    /// The environment variables that carry the credentials, for messages.
    pub fn credential_vars(&self) -> String {
        self.credentials
            .iter()
            .map(|c| format!("{}_{c}", self.env_prefix))
            .collect::<Vec<_>>()
            .join(" and ")
    }
}

impl ProviderSettings {
    /// Resolves a provider's settings. `env` is the process environment in production and a
    /// map in tests; `quotas` replaces the configured ones (the sandbox knows its own).
    pub fn resolve(
        defaults: &'static ProviderDefaults,
        config: &ConfigFile,
        env: &dyn Fn(&str) -> Option<String>,
        quotas: Option<Quotas>,
    ) -> Result<ProviderSettings, ConfigError> {
        let name = defaults.name;
        let section = config.providers.get(name).cloned().unwrap_or_default();
        let s = Section {
            config,
            name,
            section: &section,
        };

        let base_var = format!("{}_BASE_URL", defaults.env_prefix);
        let (base_url, base_from) = match env(&base_var) {
            Some(v) => (v, base_var.clone()),
            None => match &section.base_url {
                Some(v) => (v.clone(), s.setting("base_url")),
                None => (defaults.base_url.to_string(), "the default".into()),
            },
        };
        // The value is not repeated: a URL that was refused may carry credentials.
        let base_url = parse_base_url(&base_url).map_err(|m| config.invalid(base_from, m))?;
        let quotas = match quotas {
            Some(q) => q,
            None => s.quotas()?,
        };
        if quotas.per_second.is_none() && quotas.per_minute.is_none() {
            tracing::info!(
                "no per_second or per_minute quota configured for {name}: the rate adapts to \
                 the provider's answers; set them in [providers.{name}] to pace at your plan's \
                 rate from the first request"
            );
        }
        let concurrency = section.concurrency.unwrap_or(16);
        if !(1..=1024).contains(&concurrency) {
            return Err(s.invalid("concurrency", "must be between 1 and 1024"));
        }
        let retry_budget = section.retry_budget.unwrap_or(0.2);
        if !(0.0..=10.0).contains(&retry_budget) {
            return Err(s.invalid(
                "retry_budget",
                "must be between 0 and 10 (retries per call)",
            ));
        }
        let max_attempts = section.max_attempts.unwrap_or(5);
        if !(1..=20).contains(&max_attempts) {
            return Err(s.invalid("max_attempts", "must be between 1 and 20"));
        }
        let pacing_guard = match section.pacing_guard_ms {
            None => DEFAULT_PACING_GUARD,
            Some(ms) if ms <= 1000 => Duration::from_millis(ms),
            Some(_) => return Err(s.invalid("pacing_guard_ms", "must be at most 1000")),
        };
        Ok(ProviderSettings {
            defaults,
            quotas,
            pacing_guard,
            concurrency,
            connect_timeout: s.secs("connect_timeout_secs", section.connect_timeout_secs, 10.0)?,
            read_timeout: s.secs("read_timeout_secs", section.read_timeout_secs, 60.0)?,
            max_attempts,
            polls_count: section.polls_count.unwrap_or(true),
            retry_budget,
            give_up_after: s.secs("give_up_after_secs", section.give_up_after_secs, 600.0)?,
            credentials: s.credentials(defaults, env)?,
            api_version: section.api_version.clone(),
            public_key: s.public_key()?,
            downloads: s.downloads(defaults, &base_url)?,
            base_url,
        })
    }
}

/// A parser's message without the values it quotes (`invalid type: string "live_…"`): the
/// value in a wrong place may be a secret.
fn without_quoted_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut quoted = false;
    for c in message.chars() {
        if c == '"' {
            quoted = !quoted;
            if quoted && out.ends_with(' ') {
                out.pop();
            }
        } else if !quoted {
            out.push(c);
        }
    }
    out
}

/// One `[providers.<name>]` section, read with errors that name the setting.
struct Section<'a> {
    config: &'a ConfigFile,
    name: &'static str,
    section: &'a ProviderConfig,
}

impl Section<'_> {
    fn setting(&self, key: &str) -> String {
        format!("[providers.{}] {key}", self.name)
    }

    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        self.config.invalid(self.setting(key), message)
    }

    /// A number of seconds between 0 and an hour, or `default`.
    fn secs(&self, key: &str, v: Option<f64>, default: f64) -> Result<Duration, ConfigError> {
        let v = v.unwrap_or(default);
        if v.is_finite() && v > 0.0 && v <= 3600.0 {
            Ok(Duration::from_secs_f64(v))
        } else {
            Err(self.invalid(key, "must be between 0 and 3600 seconds"))
        }
    }

    fn quotas(&self) -> Result<Quotas, ConfigError> {
        let window = |key: &str, v: Option<u32>| -> Result<Option<NonZeroU32>, ConfigError> {
            match v {
                None => Ok(None),
                Some(n) => NonZeroU32::new(n).map(Some).ok_or_else(|| {
                    self.invalid(
                        key,
                        "must be at least 1; leave it out when the plan has no such limit",
                    )
                }),
            }
        };
        Ok(Quotas {
            per_second: window("per_second", self.section.per_second)?,
            per_minute: window("per_minute", self.section.per_minute)?,
            per_day: window("per_day", self.section.per_day)?,
        })
    }

    /// The provider's credentials, from the environment or the section's credentials file.
    fn credentials(
        &self,
        defaults: &'static ProviderDefaults,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<Secret>, ConfigError> {
        let from_file = match &self.section.credentials_file {
            Some(p) => read_credentials_file(p)?,
            None => BTreeMap::new(),
        };
        let lookup = |var: &str| {
            env(var)
                .filter(|v| !v.is_empty())
                .or_else(|| from_file.get(var).cloned())
        };
        defaults
            .credentials
            .iter()
            .map(|c| lookup(&format!("{}_{c}", defaults.env_prefix)).map(Secret::new))
            .collect::<Option<Vec<Secret>>>()
            .ok_or_else(|| ConfigError::MissingCredentials {
                provider: self.name,
                vars: defaults.credential_vars(),
            })
    }

    /// Cashfree's public key for its signature, from the file the section names.
    fn public_key(&self) -> Result<Option<String>, ConfigError> {
        if self.name != "cashfree" {
            for (key, set) in [
                ("api_version", self.section.api_version.is_some()),
                ("public_key_file", self.section.public_key_file.is_some()),
            ] {
                if set {
                    return Err(self.invalid(key, "only [providers.cashfree] reads it"));
                }
            }
        }
        match &self.section.public_key_file {
            None => Ok(None),
            Some(p) => std::fs::read_to_string(p).map(Some).map_err(|e| {
                self.invalid(
                    "public_key_file",
                    format!("cannot read {}: {e}", p.display()),
                )
            }),
        }
    }

    fn downloads(
        &self,
        defaults: &'static ProviderDefaults,
        base_url: &reqwest::Url,
    ) -> Result<DownloadPolicy, ConfigError> {
        let max_download_mb = self.section.max_download_mb.unwrap_or(2048);
        if !(1..=1 << 20).contains(&max_download_mb) {
            return Err(self.invalid("max_download_mb", "must be between 1 and 1048576"));
        }
        let max_time = match self.section.download_timeout_secs {
            None => Duration::from_secs(1800),
            Some(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Duration::from_secs_f64(v),
            Some(_) => {
                return Err(self.invalid(
                    "download_timeout_secs",
                    "must be between 0 and 86400 seconds",
                ));
            }
        };
        Ok(DownloadPolicy {
            base: base_url.clone(),
            hosts: self.section.download_hosts.clone().unwrap_or_else(|| {
                defaults
                    .download_hosts
                    .iter()
                    .map(|h| (*h).to_string())
                    .collect()
            }),
            max_bytes: max_download_mb * 1024 * 1024,
            max_time,
        })
    }
}

fn parse_base_url(s: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(s.trim_end_matches('/')).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http or https URL".into());
    }
    if url.query().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry a query or credentials".into());
    }
    Ok(url)
}

/// Reads `NAME=value` lines (blank lines and `#` comments allowed, values optionally quoted),
/// the format of an env file that cron jobs and systemd units already use.
fn read_credentials_file(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let err = |message: String| ConfigError::CredentialsFile {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                "credentials file {} can be read by other users; chmod 600 it",
                path.display()
            );
        }
    }
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            return Err(err(format!("line {}: expected NAME=value", i + 1)));
        };
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(v);
        out.insert(k.trim().to_string(), v.to_string());
    }
    Ok(out)
}

/// Reads an optional positive duration setting of a check.
pub fn check_secs(
    config: &ConfigFile,
    check: &str,
    key: &str,
    value: Option<f64>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) if v.is_finite() && v > 0.0 && v <= 7.0 * 86_400.0 => {
            Ok(Duration::from_secs_f64(v))
        }
        Some(_) => Err(config.invalid(
            format!("[checks.{check}] {key}"),
            "must be a positive number of seconds, at most a week",
        )),
    }
}

#[cfg(test)]
mod tests;
