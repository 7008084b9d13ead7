//! A job rehearsed on the built-in sandbox (`run --sandbox`): the simulator started in-process
//! and the environment that points the job at it. A build without the `sandbox` feature, for
//! production, has no simulator in it, and says so when asked for one.

use std::path::Path;

use crate::config::{ConfigFile, ProviderDefaults, ProviderSettings};

/// The simulator a rehearsed job talks to, running until it is shut down.
#[cfg(feature = "sandbox")]
pub struct Rehearsal(bulkverify_sandbox::Sandbox);

/// No simulator can run in a build without one.
#[cfg(not(feature = "sandbox"))]
pub enum Rehearsal {}

#[cfg(feature = "sandbox")]
impl Rehearsal {
    /// Starts the simulator, keeping its jobs in the state directory so that a resumed run's
    /// polls find the requests the previous run's sandbox accepted.
    pub async fn start(
        config: &ConfigFile,
        provider: &'static ProviderDefaults,
        state_dir: &Path,
    ) -> anyhow::Result<(Rehearsal, ProviderSettings)> {
        use anyhow::Context;
        use bulkverify_sandbox::{Sandbox, SandboxConfig};

        let sandbox_config = SandboxConfig {
            data_dir: Some(state_dir.join("sandbox")),
            ..SandboxConfig::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot open a loopback port for the sandbox")?;
        let sb = Sandbox::start(sandbox_config, listener).await?;
        let base_url = sb.base_url();
        let env = move |k: &str| Rehearsal::env(&base_url, k);
        let settings = ProviderSettings::resolve(provider, config, &env, Some(Self::quotas()))?;
        Ok((Rehearsal(sb), settings))
    }

    /// The settings a rehearsal runs under, without starting the simulator: what `plan`
    /// counts its time with. The address is never called.
    pub fn settings(
        config: &ConfigFile,
        provider: &'static ProviderDefaults,
    ) -> anyhow::Result<ProviderSettings> {
        let env = |k: &str| Rehearsal::env("http://127.0.0.1:9", k);
        Ok(ProviderSettings::resolve(
            provider,
            config,
            &env,
            Some(Self::quotas()),
        )?)
    }

    /// The simulator's own quotas, which a rehearsal paces at.
    fn quotas() -> crate::config::Quotas {
        use std::num::NonZeroU32;
        let defaults = bulkverify_sandbox::SandboxConfig::default();
        let quota = |n: u64| u32::try_from(n).ok().and_then(NonZeroU32::new);
        crate::config::Quotas {
            per_second: quota(defaults.per_second),
            per_minute: quota(defaults.per_minute),
            per_day: quota(defaults.per_day),
        }
    }

    /// The environment a job on the built-in sandbox sees: every provider's base URL on it and
    /// the sandbox's public credentials.
    pub fn env(base_url: &str, var: &str) -> Option<String> {
        use bulkverify_sandbox as sb;
        let value = match var {
            "DEEPVUE_BASE_URL" | "ATTESTR_BASE_URL" | "EQUAL_BASE_URL" => base_url.to_string(),
            "CASHFREE_BASE_URL" => format!("{base_url}/verification"),
            "DEEPVUE_CLIENT_ID" => sb::CLIENT_ID.into(),
            "DEEPVUE_CLIENT_SECRET" => sb::CLIENT_SECRET.into(),
            "CASHFREE_CLIENT_ID" => sb::CASHFREE_CLIENT_ID.into(),
            "CASHFREE_CLIENT_SECRET" => sb::CASHFREE_CLIENT_SECRET.into(),
            "ATTESTR_AUTH_TOKEN" => sb::ATTESTR_AUTH_TOKEN.into(),
            "EQUAL_CLIENT_ID" => sb::EQUAL_CLIENT_ID.into(),
            "EQUAL_CLIENT_SECRET" => sb::EQUAL_CLIENT_SECRET.into(),
            "EQUAL_JOURNEY_ID" => sb::EQUAL_JOURNEY_ID.into(),
            _ => return None,
        };
        Some(value)
    }

    /// Stops the simulator before the output is written: its answers are all in the journal.
    pub async fn shutdown(self) {
        self.0.shutdown().await;
    }
}

#[cfg(not(feature = "sandbox"))]
impl Rehearsal {
    /// Refuses: there is no simulator in this build.
    pub async fn start(
        _config: &ConfigFile,
        _provider: &'static ProviderDefaults,
        _state_dir: &Path,
    ) -> anyhow::Result<(Rehearsal, ProviderSettings)> {
        anyhow::bail!(
            "this bulkverify was built without the sandbox (--no-default-features); run the job \
             against the provider, or use a build with the default features to rehearse it"
        )
    }

    /// Refuses, as `start` does.
    pub fn settings(
        _config: &ConfigFile,
        _provider: &'static ProviderDefaults,
    ) -> anyhow::Result<ProviderSettings> {
        anyhow::bail!(
            "this bulkverify was built without the sandbox (--no-default-features); plan the job \
             against the provider's settings, or use a build with the default features"
        )
    }

    /// Nothing: a job without a simulator sees only the real environment.
    pub fn env(_base_url: &str, _var: &str) -> Option<String> {
        None
    }

    /// Unreachable: no value of an empty enum exists.
    pub async fn shutdown(self) {
        match self {}
    }
}
