//! The wall-clock forms the output and the state files use.

/// Now, as RFC 3339 in UTC with second precision: the form of `bv_checked_at`.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
