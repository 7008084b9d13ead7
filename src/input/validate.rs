//! Local validation of identifiers, so that a malformed value costs nothing.
//!
//! Each validator returns the normalised value (what is sent and what duplicates are detected
//! on) or the rule it broke, which becomes `bv_reason` for an `invalid_input` row.

/// The rule a value broke, named for `bv_reason`, with words for `bv_message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub reason: &'static str,
    pub message: String,
}

impl Invalid {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Invalid {
            reason,
            message: message.into(),
        }
    }
}

/// A value is required where a check needs it; an empty cell is the commonest bad input.
pub fn required<'a>(value: &'a str, what: &str) -> Result<&'a str, Invalid> {
    let value = value.trim();
    if value.is_empty() {
        Err(Invalid::new(
            "missing_value",
            format!("the {what} cell is empty"),
        ))
    } else {
        Ok(value)
    }
}

/// Udyam registration number: `UDYAM-XX-00-0000000` (state letters, district digits, serial).
/// Lower case is accepted and normalised to upper case.
pub fn udyam(value: &str) -> Result<String, Invalid> {
    let v = required(value, "Udyam number")?.to_ascii_uppercase();
    let parts: Vec<&str> = v.split('-').collect();
    let ok = parts.len() == 4
        && parts[0] == "UDYAM"
        && parts[1].len() == 2
        && parts[1].bytes().all(|b| b.is_ascii_uppercase())
        && parts[2].len() == 2
        && parts[2].bytes().all(|b| b.is_ascii_digit())
        && parts[3].len() == 7
        && parts[3].bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(v)
    } else {
        Err(Invalid::new(
            "udyam_format",
            "not a Udyam number of the form UDYAM-XX-00-0000000",
        ))
    }
}

/// UPI virtual payment address: `handle@psp`, each side letters, digits, `.`, `-`, `_`.
/// VPAs are case-insensitive, so the normalised form is lower case.
pub fn vpa(value: &str) -> Result<String, Invalid> {
    let v = required(value, "VPA")?.to_ascii_lowercase();
    let allowed = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    };
    match v.split_once('@') {
        Some((handle, psp)) if allowed(handle) && allowed(psp) && handle.len() <= 256 => Ok(v),
        _ => Err(Invalid::new(
            "vpa_format",
            "not a UPI address of the form handle@psp (letters, digits, '.', '-', '_')",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udyam_accepts_the_documented_form() {
        assert_eq!(udyam("UDYAM-MH-01-0000001").unwrap(), "UDYAM-MH-01-0000001");
        assert_eq!(
            udyam(" udyam-ka-12-1234567 ").unwrap(),
            "UDYAM-KA-12-1234567"
        );
    }

    #[test]
    fn udyam_rejects_everything_else() {
        for bad in [
            "UDYAM-MH-1-0000001",
            "UDYAM-M1-01-0000001",
            "UDYAM-MH-01-000001",
            "UDYAM-MH-01-00000011",
            "UDYAMMH010000001",
            "UDYOG-MH-01-0000001",
            "UDYAM-MH-01-000000A",
            "MH01A0000001",
        ] {
            assert_eq!(udyam(bad).unwrap_err().reason, "udyam_format", "{bad}");
        }
        assert_eq!(udyam("  ").unwrap_err().reason, "missing_value");
    }

    #[test]
    fn vpa_rules() {
        assert_eq!(vpa("Ravi.Kumar99@OKICICI").unwrap(), "ravi.kumar99@okicici");
        assert_eq!(vpa("a_b-c@ybl").unwrap(), "a_b-c@ybl");
        for bad in [
            "ravi",
            "@ybl",
            "ravi@",
            "ra vi@ybl",
            "ravi@ok@icici",
            "ravi#1@ybl",
        ] {
            assert_eq!(vpa(bad).unwrap_err().reason, "vpa_format", "{bad}");
        }
        assert_eq!(vpa("").unwrap_err().reason, "missing_value");
    }
}
