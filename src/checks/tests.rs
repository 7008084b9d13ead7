//! The checks' registry and readers against hostile and documented answers.

use super::*;
use crate::config::ProviderSettings;
use crate::http::Answer;
use crate::outcome::Status;

/// The README's table of how long each check reuses answers is the checks' own defaults
/// and reasons, row for row.
#[test]
fn the_readme_gives_each_checks_reuse_default_and_why() {
    let readme = std::fs::read_to_string(crate::util::package_dir().join("README.md"))
        .expect("the README is readable");
    for info in CHECKS.iter().map(|c| c.0) {
        let row = format!(
            "| `{}` | {} | {} |",
            info.name,
            info.reuse.within.describe(),
            info.reuse.why
        );
        assert!(readme.contains(&row), "the README lacks the row {row}");
    }
}

#[test]
fn reuse_within_is_read_from_the_config_and_refused_for_otp_checks() {
    let config = |text: &str| ConfigFile::parse(text, std::path::Path::new("b.toml")).unwrap();
    let udyam = &crate::checks::deepvue_udyam::INFO;
    let within = |text: &str, no_reuse| udyam.reuse_within(&config(text), no_reuse);
    assert_eq!(within("", false).unwrap(), ReuseWithin::Secs(30 * 86_400));
    let set = "[checks.deepvue-udyam]\nreuse_within = \"12h\"\n";
    assert_eq!(within(set, false).unwrap(), ReuseWithin::Secs(43_200));
    assert_eq!(within(set, true).unwrap(), ReuseWithin::Never, "--no-reuse");
    let always = "[checks.deepvue-udyam]\nreuse_within = \"always\"\n";
    assert_eq!(within(always, false).unwrap(), ReuseWithin::Always);
    let off = within("[checks.deepvue-udyam]\nreuse_within = \"0\"\n", false).unwrap();
    assert_eq!(off.since(1_000), None);
    let bad = within(
        "[checks.deepvue-udyam]\nreuse_within = \"a month\"\n",
        false,
    );
    let message = bad.unwrap_err().to_string();
    assert!(
        message.contains("reuse_within") && message.contains("30d"),
        "{message}"
    );
    let otp = &crate::checks::equal_aadhaar_otp::INFO;
    let wants = config("[checks.equal-aadhaar-otp]\nreuse_within = \"30d\"\n");
    let message = otp.reuse_within(&wants, false).unwrap_err().to_string();
    assert!(message.contains("consent"), "{message}");
    let off = config("[checks.equal-aadhaar-otp]\nreuse_within = \"0\"\n");
    assert_eq!(otp.reuse_within(&off, false).unwrap().since(0), None);
    assert!(!otp.reuse.keeps() && udyam.reuse.keeps());
}

/// What `bulkverify checks` lists is what the client reads: with only the listed variables
/// set, every check and its provider resolve, and no variable of the provider's prefix is
/// asked for that the list leaves out.
#[test]
fn every_check_lists_the_variables_it_and_its_provider_read() {
    for name in CHECKS {
        let info = name.info();
        let listed: Vec<String> = info.variables().into_iter().map(|(v, _)| v).collect();
        let asked = std::sync::Mutex::new(Vec::new());
        let env = |k: &str| {
            asked.lock().unwrap().push(k.to_string());
            listed.iter().any(|v| v == k).then(|| {
                if k.ends_with("_BASE_URL") {
                    "https://provider.example".to_string()
                } else {
                    "set".to_string()
                }
            })
        };
        let config = ConfigFile::default();
        if let Err(e) = ProviderSettings::resolve(info.provider, &config, &env, None) {
            panic!("{}: {e}", info.name);
        }
        if let Err(e) = info.build(&config, &env) {
            panic!("{}: {e}", info.name);
        }
        let prefix = format!("{}_", info.provider.env_prefix);
        for k in asked.lock().unwrap().iter() {
            assert!(
                !k.starts_with(&prefix) || listed.contains(k),
                "{} reads {k}, which `bulkverify checks` does not list",
                info.name
            );
        }
    }
    let attestr = CheckName::named("attestr-udyam-otp")
        .unwrap()
        .info()
        .variables();
    assert_eq!(attestr[0].0, "ATTESTR_AUTH_TOKEN");
    let equal = CheckName::named("equal-aadhaar-otp")
        .unwrap()
        .info()
        .variables();
    assert!(equal.iter().any(|(v, _)| v == "EQUAL_JOURNEY_ID"));
}

/// Bodies no provider should send, but a proxy, a bug or an attacker on the path might:
/// empty, not JSON, not UTF-8, the wrong types, nested past any parser's depth, 1 MB.
fn hostile_bodies() -> Vec<Vec<u8>> {
    vec![
        b"".to_vec(),
        b"null".to_vec(),
        b"[]".to_vec(),
        b"{}".to_vec(),
        b"\"SUCCESS\"".to_vec(),
        b"<html>gateway</html>".to_vec(),
        br#"{"status":5,"valid":"yes","data":[],"entries":{},"code":[1],"_id":7}"#.to_vec(),
        br#"{"status":{"a":1},"data":{"keys":5},"result":"x","decision":3}"#.to_vec(),
        br#"{"status":"completed","result":null,"data":"s","request_id":null}"#.to_vec(),
        vec![0xff, 0xfe, b'{', 0x80],
        "[".repeat(100_000).into_bytes(),
        format!(r#"{{"status":"{}"}}"#, "A".repeat(1 << 20)).into_bytes(),
    ]
}

/// A 2xx answer that makes no sense is never read as a verdict: only `error` or `pending`,
/// with a reason. Anything else may be a refusal, or a stop with a message.
fn judge(who: &str, status: u16, body: &[u8], outcome: Option<&Outcome>) {
    let Some(o) = outcome else { return };
    if (200..300).contains(&status) {
        assert!(
            matches!(o.status, Status::Error | Status::Pending),
            "{who}: HTTP {status} {:?} read as {:?}",
            String::from_utf8_lossy(&body[..body.len().min(80)]),
            o.status
        );
    }
    if o.status == Status::Error {
        assert!(o.reason.as_deref().is_some_and(|r| !r.is_empty()), "{o:?}");
    }
}

#[test]
fn hostile_answers_never_panic_nor_pass_for_verdicts() {
    for status in [200, 202, 400, 404, 409, 422, 500] {
        for body in hostile_bodies() {
            let a = Answer {
                status: reqwest::StatusCode::from_u16(status).unwrap(),
                headers: reqwest::header::HeaderMap::new(),
                body: bytes::Bytes::from(body.clone()),
                attempts: 1,
            };
            let step = |s: Step| match s {
                Step::Done(o) => judge("deepvue udyam", status, &body, Some(&o)),
                Step::Running(id) => assert!(!id.is_empty() && status < 300),
                Step::Lost(_) => {}
            };
            if let Ok(s) = deepvue_udyam::read_submit(&a) {
                step(s);
            }
            step(deepvue_udyam::read_result(&a, "r"));
            if let Ok(Uploaded::Refused(o)) = deepvue_upi_batch::read_upload(&a) {
                judge("upi upload", status, &body, Some(&o));
            }
            if let deepvue_upi_batch::BatchStatus::Failed(o) = deepvue_upi_batch::read_status(&a) {
                judge("upi status", status, &body, Some(&o));
            }
            judge(
                "digilocker",
                status,
                &body,
                cashfree_digilocker::read_status(&a).ok().as_ref(),
            );
            if let Ok(Uploaded::Refused(o)) = cashfree_bulk::read_upload(&a, "x", "n") {
                judge("bulk upload", status, &body, Some(&o));
            }
            for kind in [cashfree_bulk::Kind::Bank, cashfree_bulk::Kind::Pan] {
                match cashfree_bulk::read_status(kind, &a, "r") {
                    Ok(BatchStep::Done(rows)) => {
                        for (_, o) in &rows {
                            judge("bulk entries", status, &body, Some(o));
                        }
                    }
                    Ok(BatchStep::Failed(o)) => judge("bulk status", status, &body, Some(&o)),
                    _ => {}
                }
            }
            if let Ok(OtpSent::Done(o)) = attestr_udyam_otp::read_sent(&a) {
                judge("attestr otp-gen", status, &body, Some(&o));
            }
            let otp = |who: &str, r: Result<OtpAnswer, CallError>| {
                if let Ok(OtpAnswer::Done(o) | OtpAnswer::Refused(o) | OtpAnswer::Closed(o)) = r {
                    judge(who, status, &body, Some(&o));
                }
            };
            otp("attestr otp-verify", attestr_udyam_otp::read_verified(&a));
            otp(
                "equal journey",
                equal_aadhaar_otp::read_journey(&a, "234123412346"),
            );
        }
    }
}

#[test]
fn poll_delays_grow_and_cap() {
    let s = PollSchedule {
        first: Duration::from_secs(3),
        max: Duration::from_secs(30),
        deadline: Duration::from_secs(900),
    };
    assert_eq!(s.delay(0), Duration::from_secs(3));
    assert_eq!(s.delay(1), Duration::from_millis(4500));
    assert_eq!(s.delay(10), Duration::from_secs(30));
    assert_eq!(s.delay(u32::MAX), Duration::from_secs(30));
}
