//! How the report writes text, numbers and times: escaped for HTML, UTC, plainly.

use std::borrow::Cow;

/// Text for HTML: `&`, `<`, `>`, `"` and `'` as entities.
pub(super) fn esc(text: &str) -> Cow<'_, str> {
    if !text.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn date_time(unix_s: i64) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::from_unix_timestamp(unix_s).ok()
}

/// A moment, plainly: `2026-11-22 03:14:05 UTC`.
pub(super) fn utc(ms: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    date_time(ms.div_euclid(1000))
        .and_then(|t| t.format(&format).ok())
        .map_or_else(|| format!("{ms} ms after 1970"), |t| format!("{t} UTC"))
}

/// The time of day of a Unix second: `03:14:05`, or `03:14` without seconds.
pub(super) fn utc_clock(unix_s: i64, seconds: bool) -> String {
    let t = date_time(unix_s);
    let text = if seconds {
        t.and_then(|t| {
            t.format(time::macros::format_description!(
                "[hour]:[minute]:[second]"
            ))
            .ok()
        })
    } else {
        t.and_then(|t| {
            t.format(time::macros::format_description!("[hour]:[minute]"))
                .ok()
        })
    };
    text.unwrap_or_default()
}

/// The day of a Unix second: `22 Nov`.
pub(super) fn utc_day(unix_s: i64) -> String {
    let format = time::macros::format_description!("[day padding:none] [month repr:short]");
    date_time(unix_s)
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

/// A length of time as people say it: `850 ms`, `4.2 s`, `12 s`, `4 min 05 s`, `5 min`,
/// `3 h 12 min`.
pub(super) fn duration_ms(ms: i64) -> String {
    let ms = ms.max(0);
    let s = ms / 1000;
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..10_000 => format!("{:.1} s", ms as f64 / 1000.0),
        10_000..60_000 => format!("{s} s"),
        60_000..3_600_000 if s % 60 == 0 => format!("{} min", s / 60),
        60_000..3_600_000 => format!("{} min {:02} s", s / 60, s % 60),
        _ if s / 60 % 60 == 0 => format!("{} h", s / 3600),
        _ => format!("{} h {:02} min", s / 3600, s / 60 % 60),
    }
}

/// A latency: `0.8 ms`, `240 ms`, `12.4 s`.
pub(super) fn ms_text(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else if ms < 10_000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.1} s", ms / 1000.0)
    }
}

/// A count with its thousands apart: `1,234,567`.
pub(super) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(super) fn rows(n: u64) -> String {
    format!("{} row{}", count(n), if n == 1 { "" } else { "s" })
}

/// A rate a second: `25`, `0.5`, `1.25`.
pub(super) fn rate_text(r: f64) -> String {
    let text = format!("{r:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// An amount to the hundredth: `1,234.50`.
pub(super) fn money(v: f64) -> String {
    let cents = (v.max(0.0) * 100.0).round() as u64;
    format!("{}.{:02}", count(cents / 100), cents % 100)
}
