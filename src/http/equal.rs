//! Equal: `Authorization: Basic base64(client_id:client_secret)` on every call. 429s come
//! from its gateway with no body.

use base64::Engine as _;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};

use super::{CallError, FixedHeaders};
use crate::config::{ProviderDefaults, ProviderSettings};

pub const DEFAULTS: ProviderDefaults = ProviderDefaults {
    name: "equal",
    env_prefix: "EQUAL",
    base_url: "https://business-api.equal.in",
    credentials: &["CLIENT_ID", "CLIENT_SECRET"],
    download_hosts: &[],
};

pub fn provider(settings: &ProviderSettings) -> Result<FixedHeaders, CallError> {
    let pair = format!(
        "{}:{}",
        settings.credentials[0].expose(),
        settings.credentials[1].expose()
    );
    let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
        .map_err(|_| CallError::Fatal("the equal credentials cannot be sent".into()))?;
    value.set_sensitive(true);
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, value);
    Ok(FixedHeaders::new(headers, |_| false))
}
