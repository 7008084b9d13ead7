use super::*;

/// Deepvue's shape: an id and a secret, downloads from S3.
const DEFAULTS: ProviderDefaults = ProviderDefaults {
    name: "deepvue",
    env_prefix: "DEEPVUE",
    base_url: "https://production.deepvue.tech",
    credentials: &["CLIENT_ID", "CLIENT_SECRET"],
    download_hosts: &["*.amazonaws.com"],
};

fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |k| {
        pairs
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    }
}

const CREDS: &[(&str, &str)] = &[
    ("DEEPVUE_CLIENT_ID", "id"),
    ("DEEPVUE_CLIENT_SECRET", "live_s3cret"),
];

#[test]
fn full_section_resolves() {
    let c = ConfigFile::parse(
        "[providers.deepvue]\nbase_url = \"https://example.test/\"\nper_second = 17\n\
         per_minute = 1000\nper_day = 50000\nconcurrency = 32\n",
        Path::new("b.toml"),
    )
    .unwrap();
    let s = ProviderSettings::resolve(&DEFAULTS, &c, &env(CREDS), None).unwrap();
    assert_eq!(s.base_url.as_str(), "https://example.test/");
    assert_eq!(s.quotas.per_second, NonZeroU32::new(17));
    assert_eq!(s.quotas.per_day, NonZeroU32::new(50000));
    assert_eq!(s.concurrency, 32);
    assert_eq!(s.credentials[1].expose(), "live_s3cret");
    assert!(!format!("{s:?}").contains("live_s3cret"));
}

#[test]
fn environment_overrides_base_url_and_defaults_apply() {
    let c = ConfigFile::default();
    let e = env(&[
        ("DEEPVUE_CLIENT_ID", "id"),
        ("DEEPVUE_CLIENT_SECRET", "x"),
        ("DEEPVUE_BASE_URL", "http://127.0.0.1:9"),
    ]);
    let s = ProviderSettings::resolve(&DEFAULTS, &c, &e, None).unwrap();
    assert_eq!(s.base_url.as_str(), "http://127.0.0.1:9/");
    assert_eq!(
        s.quotas,
        Quotas {
            per_second: None,
            per_minute: None,
            per_day: None
        },
        "no quota configured: the rate adapts"
    );
    assert!(s.polls_count);
    assert_eq!(s.give_up_after, Duration::from_secs(600));
}

#[test]
fn mistakes_are_named_without_echoing_values() {
    let err = ConfigFile::parse(
        "[providers.deepvue]\nclient_secret = \"live_leak\"\n",
        Path::new("b.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("b.toml, line 2, column 1:"), "{err}");
    assert!(err.contains("credentials are read only from the environment"));
    assert!(!err.contains("live_leak"), "{err}");

    let err = ConfigFile::parse(
        "[providers.deepvue]\nper_second = \"live_in_the_wrong_place\"\n",
        Path::new("b"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("line 2"), "{err}");
    assert!(!err.contains("live_in_the_wrong_place"), "{err}");

    let c = ConfigFile::parse("[providers.deepvue]\nper_minute = 0\n", Path::new("b")).unwrap();
    let err = ProviderSettings::resolve(&DEFAULTS, &c, &env(CREDS), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("per_minute: must be at least 1"), "{err}");

    let c = ConfigFile::parse(
        "[providers.deepvue]\nbase_url = \"ftp://x\"\n",
        Path::new("b"),
    )
    .unwrap();
    let err = ProviderSettings::resolve(&DEFAULTS, &c, &env(CREDS), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("http or https"), "{err}");

    let c = ConfigFile::parse(
        "[providers.deepvue]\nbase_url = \"https://u:live_pw@example.test\"\n",
        Path::new("b"),
    )
    .unwrap();
    let err = ProviderSettings::resolve(&DEFAULTS, &c, &env(CREDS), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("must not carry"), "{err}");
    assert!(!err.contains("live_pw"), "{err}");
}

#[test]
fn missing_credentials_say_where_to_put_them() {
    let err = ProviderSettings::resolve(&DEFAULTS, &ConfigFile::default(), &env(&[]), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("DEEPVUE_CLIENT_ID and DEEPVUE_CLIENT_SECRET"),
        "{err}"
    );
}

#[test]
fn credentials_file_is_read_and_env_wins() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("deepvue.env");
    std::fs::write(
        &f,
        "# deepvue\nexport DEEPVUE_CLIENT_ID=\"file_id\"\nDEEPVUE_CLIENT_SECRET='file_secret'\n",
    )
    .unwrap();
    let text = format!("[providers.deepvue]\ncredentials_file = {:?}\n", f);
    let c = ConfigFile::parse(&text, Path::new("b")).unwrap();
    let s = ProviderSettings::resolve(&DEFAULTS, &c, &env(&[]), None).unwrap();
    assert_eq!(s.credentials[0].expose(), "file_id");
    assert_eq!(s.credentials[1].expose(), "file_secret");
    let s = ProviderSettings::resolve(&DEFAULTS, &c, &env(CREDS), None).unwrap();
    assert_eq!(s.credentials[1].expose(), "live_s3cret");
}
