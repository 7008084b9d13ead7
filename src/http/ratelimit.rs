//! What a provider's answer says about its limits, read from whichever headers it sends.
//!
//! Providers disagree on the spelling: `Retry-After` in seconds or as an HTTP date,
//! `X-RateLimit-Limit/-Remaining/-Reset` (Reset in seconds, or a Unix time as GitHub sends),
//! and the IETF drafts' `RateLimit` / `RateLimit-Policy` fields, in the structured form
//! (`"name";r=..;t=..`, `"name";q=..;w=..`) or the older dictionary and split forms. All are
//! parsed leniently: a value that cannot be read is ignored, never an error, because a header
//! a provider garbles must not fail a row that the body answered.

use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;

use crate::quota::hints::{Hints, LONGEST_WAIT, Policy};

/// Reset values above this are Unix times, not delays (no window is 30 years long).
const UNIX_TIME_FLOOR: u64 = 1_000_000_000;

impl Hints {
    /// Reads every rate-limit header of an answer received at `now`.
    pub fn read(headers: &HeaderMap, now: SystemTime) -> Hints {
        let text = |name: &str| -> Vec<&str> {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect()
        };
        let mut hints = Hints::default();
        let long = |d: Duration, hints: &mut Hints| {
            if d > LONGEST_WAIT {
                hints.beyond_reach = true;
            }
            d.min(LONGEST_WAIT)
        };

        if let Some(d) = text("retry-after")
            .first()
            .and_then(|v| retry_after(v, now))
        {
            hints.retry_after = Some(long(d, &mut hints));
        }

        // The IETF structured fields, then the older spellings of the same facts.
        let mut windows: Vec<Window> = Vec::new();
        for v in text("ratelimit") {
            windows.extend(structured(v));
        }
        let policies: Vec<(Option<String>, Policy)> = text("ratelimit-policy")
            .into_iter()
            .flat_map(policy)
            .collect();
        for prefix in ["x-ratelimit", "ratelimit"] {
            let number = |suffix: &str| {
                text(&format!("{prefix}-{suffix}"))
                    .first()
                    .and_then(|v| leading(v))
            };
            let remaining = number("remaining");
            let reset = number("reset").map(|r| reset_delay(r, now));
            if remaining.is_some() || reset.is_some() {
                windows.push(Window {
                    name: None,
                    remaining,
                    reset,
                });
            }
            if let (Some(quota), Some(w)) = (
                number("limit"),
                text(&format!("{prefix}-limit"))
                    .first()
                    .and_then(|v| param(v, "w")),
            ) {
                hints.policy = hints.policy.or(Some(Policy {
                    quota,
                    window: Duration::from_secs(w),
                }));
            }
        }

        // The most constrained window decides: the fewest requests left.
        if let Some(w) = windows
            .iter()
            .filter(|w| w.remaining.is_some() || w.reset.is_some())
            .min_by_key(|w| w.remaining.unwrap_or(u64::MAX))
        {
            hints.remaining = w.remaining;
            hints.reset = w.reset.map(|d| long(d, &mut hints));
            if let Some(name) = &w.name
                && let Some((_, p)) = policies.iter().find(|(n, _)| n.as_ref() == Some(name))
            {
                hints.policy = Some(*p);
            }
        }
        // Without a named match, the policy with the slowest pace is the one that binds.
        if hints.policy.is_none() {
            hints.policy = policies
                .iter()
                .map(|(_, p)| *p)
                .filter(|p| p.period().is_some())
                .max_by_key(|p| p.period());
        }
        hints
    }
}

/// One window's state as a `RateLimit` field describes it.
struct Window {
    name: Option<String>,
    remaining: Option<u64>,
    reset: Option<Duration>,
}

/// `Retry-After`: delay-seconds or an HTTP date; a date in the past means now.
fn retry_after(v: &str, now: SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Some(secs) = leading(v).filter(|_| v.bytes().all(|b| b.is_ascii_digit())) {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A reset value: seconds from now, or a Unix time.
fn reset_delay(v: u64, now: SystemTime) -> Duration {
    if v >= UNIX_TIME_FLOOR {
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(v);
        when.duration_since(now).unwrap_or(Duration::ZERO)
    } else {
        Duration::from_secs(v)
    }
}

/// The integer a value starts with (`"100"`, `"100, 100;w=60"`, `" 7 "`).
fn leading(v: &str) -> Option<u64> {
    let digits: String = v
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// An integer parameter `key=N` anywhere in a `;`-separated value.
fn param(v: &str, key: &str) -> Option<u64> {
    v.split([';', ',']).find_map(|part| {
        let (k, val) = part.split_once('=')?;
        (k.trim().eq_ignore_ascii_case(key))
            .then(|| leading(val.trim().trim_matches('"')))
            .flatten()
    })
}

/// A list item's name: a quoted string or a token before the first `;`; `None` for the older
/// dictionary form (`limit=10, remaining=5`).
fn item_name(item: &str) -> Option<String> {
    let head = item.split(';').next()?.trim();
    if head.is_empty() || head.contains('=') {
        return None;
    }
    Some(head.trim_matches('"').to_string())
}

/// `RateLimit: "default";r=50;t=30, "daily";r=900;t=3600` (structured), or
/// `RateLimit: limit=100, remaining=50, reset=30` (the older dictionary form).
fn structured(v: &str) -> Vec<Window> {
    if item_name(v).is_none() {
        let remaining = param(v, "remaining").or_else(|| param(v, "r"));
        let reset = param(v, "reset")
            .or_else(|| param(v, "t"))
            .map(Duration::from_secs);
        return vec![Window {
            name: None,
            remaining,
            reset,
        }];
    }
    v.split(',')
        .filter_map(|item| {
            let name = item_name(item)?;
            Some(Window {
                name: Some(name),
                remaining: param(item, "r"),
                reset: param(item, "t").map(Duration::from_secs),
            })
        })
        .collect()
}

/// `RateLimit-Policy: "burst";q=100;w=60, "daily";q=1000;w=86400`, or the older `100;w=60`.
fn policy(v: &str) -> Vec<(Option<String>, Policy)> {
    v.split(',')
        .filter_map(|item| {
            // The older form has no name: its first member is the quota.
            let name = item_name(item).filter(|n| leading(n).is_none());
            let quota = param(item, "q").or_else(|| name.is_none().then(|| leading(item))?)?;
            let window = param(item, "w")?;
            (window > 0).then(|| {
                (
                    name,
                    Policy {
                        quota,
                        window: Duration::from_secs(window),
                    },
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};

    fn now() -> SystemTime {
        // Sun, 06 Nov 1994 08:49:37 GMT
        SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777)
    }

    fn read(pairs: &[(&str, &str)]) -> Hints {
        read_at(pairs, now())
    }

    fn read_at(pairs: &[(&str, &str)], now: SystemTime) -> Hints {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v.as_bytes()).unwrap(),
            );
        }
        Hints::read(&h, now)
    }

    fn secs(n: u64) -> Option<Duration> {
        Some(Duration::from_secs(n))
    }

    #[test]
    fn retry_after_in_both_forms_and_garbage() {
        let cases: &[(&str, Option<Duration>, bool)] = &[
            ("7", secs(7), false),
            (" 0 ", secs(0), false),
            ("Sun, 06 Nov 1994 08:49:47 GMT", secs(10), false),
            // RFC 850 and asctime dates are HTTP dates too.
            ("Sunday, 06-Nov-94 08:50:37 GMT", secs(60), false),
            ("Sun Nov  6 08:49:39 1994", secs(2), false),
            ("Sun, 06 Nov 1994 08:40:00 GMT", secs(0), false),
            // Absurd values are clamped and mean "not today".
            ("86400", Some(LONGEST_WAIT), true),
            ("Mon, 07 Nov 1994 08:49:37 GMT", Some(LONGEST_WAIT), true),
            ("99999999999999999999999", None, false),
            ("-5", None, false),
            ("1.5", None, false),
            ("soon", None, false),
            ("", None, false),
        ];
        for (v, want, beyond) in cases {
            let h = read(&[("retry-after", v)]);
            assert_eq!(h.retry_after, *want, "{v:?}");
            assert_eq!(h.beyond_reach, *beyond, "{v:?}");
        }
    }

    #[test]
    fn x_ratelimit_headers_with_reset_as_delay_or_unix_time() {
        let h = read(&[
            ("x-ratelimit-limit", "100"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "12"),
        ]);
        assert_eq!((h.remaining, h.reset, h.policy), (Some(0), secs(12), None));
        let h = read_at(
            &[
                ("X-RateLimit-Remaining", "5"),
                ("X-RateLimit-Reset", "1795000023"),
            ],
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000),
        );
        assert_eq!((h.remaining, h.reset), (Some(5), secs(23)));
        // A limit that names its window is a policy.
        let h = read(&[("x-ratelimit-limit", "100, 100;w=60")]);
        assert_eq!(
            h.policy,
            Some(Policy {
                quota: 100,
                window: Duration::from_secs(60)
            })
        );
        for garbage in ["", "many", "-1", "ten;w=x"] {
            let h = read(&[
                ("x-ratelimit-limit", garbage),
                ("x-ratelimit-remaining", garbage),
                ("x-ratelimit-reset", garbage),
            ]);
            assert_eq!(h, Hints::default(), "{garbage:?}");
        }
    }

    #[test]
    fn ietf_structured_fields_pick_the_tightest_window_and_its_policy() {
        let h = read(&[
            (
                "ratelimit-policy",
                "\"per-second\";q=17;w=1, \"per-minute\";q=1000;w=60",
            ),
            ("ratelimit", "\"per-minute\";r=12;t=40"),
        ]);
        assert_eq!((h.remaining, h.reset), (Some(12), secs(40)));
        assert_eq!(
            h.policy,
            Some(Policy {
                quota: 1000,
                window: Duration::from_secs(60)
            })
        );
        let h = read(&[("ratelimit", "\"a\";r=50;t=30, \"b\";r=3;t=5")]);
        assert_eq!((h.remaining, h.reset), (Some(3), secs(5)));
        // Without a named window, the slowest policy binds.
        let h = read(&[("ratelimit-policy", "\"s\";q=17;w=1, \"m\";q=600;w=60")]);
        assert_eq!(h.policy.unwrap().period(), Some(Duration::from_millis(100)));
        // Tokens instead of strings, and extra parameters, are read too.
        let h = read(&[("ratelimit", "default;r=1;t=2;pk=:abc=:")]);
        assert_eq!((h.remaining, h.reset), (Some(1), secs(2)));
    }

    #[test]
    fn older_ietf_drafts_dictionary_and_split_fields() {
        let h = read(&[("ratelimit", "limit=100, remaining=0, reset=9")]);
        assert_eq!((h.remaining, h.reset), (Some(0), secs(9)));
        let h = read(&[("ratelimit-policy", "100;w=60")]);
        assert_eq!(
            h.policy,
            Some(Policy {
                quota: 100,
                window: Duration::from_secs(60)
            })
        );
        let h = read(&[
            ("ratelimit-limit", "10"),
            ("ratelimit-remaining", "4"),
            ("ratelimit-reset", "3"),
        ]);
        assert_eq!((h.remaining, h.reset), (Some(4), secs(3)));
    }

    #[test]
    fn malformed_structured_fields_are_ignored() {
        for v in [
            "\"x\";r=;t=",
            ";;;,,,",
            "\"unterminated;r=5",
            "r=abc",
            "\u{e9}t\u{e9}",
        ] {
            let h = read(&[("ratelimit", v), ("ratelimit-policy", v)]);
            assert!(h.policy.is_none(), "{v:?}: {h:?}");
            assert!(h.retry_after.is_none());
        }
        let h = read(&[("ratelimit-policy", "\"x\";q=5;w=0")]);
        assert_eq!(h.policy, None, "a zero-length window is no policy");
    }
}
