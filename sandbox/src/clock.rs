//! Wall-clock time and the provider's date formats.
//!
//! Times travel as unix milliseconds: they are persisted, compared across restarts and aligned to
//! UTC boundaries, which a monotonic clock cannot do.

use std::time::{SystemTime, UNIX_EPOCH};

use time::macros::{format_description, offset};
use time::{OffsetDateTime, PrimitiveDateTime};

/// Milliseconds since the unix epoch; a clock set before 1970 reads as the epoch.
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

fn utc(secs: u64) -> OffsetDateTime {
    i64::try_from(secs)
        .ok()
        .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// `2026-03-08T00:00:00Z`: the token expiry and S3's error dates.
pub(super) fn rfc3339_utc(secs: u64) -> String {
    format(
        utc(secs),
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z"),
    )
}

/// `2025-01-30T14:00:55+05:30`: the provider's async result timestamps, in India time.
pub(super) fn ist(ms: u64) -> String {
    format(
        utc(ms / 1000).to_offset(offset!(+5:30)),
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]+05:30"),
    )
}

/// `20260308T000000Z`: the `X-Amz-Date` of a pre-signed URL.
pub(super) fn amz_date(secs: u64) -> String {
    format(
        utc(secs),
        format_description!("[year][month][day]T[hour][minute][second]Z"),
    )
}

fn format(
    t: OffsetDateTime,
    description: &[time::format_description::BorrowedFormatItem<'_>],
) -> String {
    // Formatting a valid date with these fixed descriptions cannot fail.
    t.format(description).unwrap_or_default()
}

/// The unix seconds of an `X-Amz-Date`, if it is one.
pub(super) fn parse_amz_date(text: &str) -> Option<u64> {
    let format = format_description!("[year][month][day]T[hour][minute][second]Z");
    let t = PrimitiveDateTime::parse(text, format).ok()?.assume_utc();
    u64::try_from(t.unix_timestamp()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_the_provider_dates() {
        // 2025-01-30T08:30:55Z is 14:00:55 in India.
        let secs = 1_738_225_855;
        assert_eq!(rfc3339_utc(secs), "2025-01-30T08:30:55Z");
        assert_eq!(ist(secs * 1000 + 999), "2025-01-30T14:00:55+05:30");
        assert_eq!(amz_date(secs), "20250130T083055Z");
        assert_eq!(parse_amz_date("20250130T083055Z"), Some(secs));
        assert_eq!(parse_amz_date("2025-01-30"), None);
    }
}
