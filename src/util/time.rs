//! The wall-clock forms the output and the state files use.

/// Now, as RFC 3339 in UTC with second precision: the form of `bv_checked_at`.
pub fn now_rfc3339() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}

/// A time as RFC 3339 in UTC with second precision.
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// When something started, by the wall clock, to say when, and by the monotonic clock, to say
/// how long it took whatever the wall clock does meanwhile.
#[derive(Debug, Clone, Copy)]
pub struct Started {
    pub at: time::OffsetDateTime,
    pub instant: std::time::Instant,
}

impl Started {
    pub fn now() -> Started {
        Started {
            at: time::OffsetDateTime::now_utc(),
            instant: std::time::Instant::now(),
        }
    }

    /// When, in Unix milliseconds.
    pub fn unix_ms(&self) -> i64 {
        (self.at.unix_timestamp_nanos() / 1_000_000) as i64
    }
}

/// `bv_checked_at` read back as Unix seconds; `None` for text that is not RFC 3339.
pub fn rfc3339_unix(text: &str) -> Option<i64> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(time::OffsetDateTime::unix_timestamp)
}

/// Now, in Unix seconds.
pub fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Now, in Unix milliseconds: the unit of the journal's record of runs and their seconds.
pub fn unix_ms() -> i64 {
    Started::now().unix_ms()
}

/// An age as the config and the command line write it: a whole number and a unit (`45s`,
/// `90m`, `12h`, `30d`, `2w`), or `0`. `None` for anything else, so that the caller can name
/// the setting in its error.
pub fn parse_age(text: &str) -> Option<std::time::Duration> {
    let text = text.trim();
    if text == "0" {
        return Some(std::time::Duration::ZERO);
    }
    let unit_at = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(unit_at);
    let n: u64 = number.parse().ok()?;
    let secs = match unit.trim() {
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    n.checked_mul(secs).map(std::time::Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_in_every_unit() {
        let secs = |t: &str| parse_age(t).map(|d| d.as_secs());
        assert_eq!(secs("0"), Some(0));
        assert_eq!(secs("45s"), Some(45));
        assert_eq!(secs("90m"), Some(5_400));
        assert_eq!(secs("12h"), Some(43_200));
        assert_eq!(secs("30d"), Some(2_592_000));
        assert_eq!(secs("2w"), Some(1_209_600));
        for bad in ["", "d", "30", "30 days", "-1d", "1.5d", "30y"] {
            assert_eq!(secs(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn checked_at_reads_back() {
        assert_eq!(rfc3339_unix("1970-01-02T00:00:00Z"), Some(86_400));
        assert_eq!(rfc3339_unix("yesterday"), None);
        let now = now_rfc3339();
        assert!((rfc3339_unix(&now).unwrap() - unix_now()).abs() <= 1);
    }
}
