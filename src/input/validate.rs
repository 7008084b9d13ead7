//! Local validation of identifiers, so that a malformed value costs nothing.
//!
//! Each validator returns the normalised value (what is sent and what duplicates are detected
//! on) or the rule it broke, which becomes `bv_reason` for an `invalid_input` row.

use crate::outcome::Reason;

/// The rule a value broke, named for `bv_reason`, with words for `bv_message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub reason: Reason,
    pub message: String,
}

impl Invalid {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
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
            Reason::MISSING_VALUE,
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
            Reason::UDYAM_FORMAT,
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
            Reason::VPA_FORMAT,
            "not a UPI address of the form handle@psp (letters, digits, '.', '-', '_')",
        )),
    }
}

/// Verhoeff multiplication table: the dihedral group D5, whose non-commutativity is what lets
/// the checksum see swapped digits.
const VERHOEFF_D: [[u8; 10]; 10] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
];

/// Verhoeff position permutations: row `i % 8` is applied to the digit `i` places from the right,
/// so that equal digits in different places weigh differently.
const VERHOEFF_P: [[u8; 10]; 8] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
];

/// Inverse of each element of D5 under `VERHOEFF_D`: the digit that brings a checksum back to 0.
const VERHOEFF_INV: [u8; 10] = [0, 4, 3, 2, 1, 5, 6, 7, 8, 9];

/// The Verhoeff accumulator over `digits`, the rightmost digit taken at position `first`;
/// `None` when a character is not an ASCII digit.
fn verhoeff_accumulate(digits: &str, first: usize) -> Option<u8> {
    digits.bytes().rev().enumerate().try_fold(0u8, |c, (i, b)| {
        b.is_ascii_digit().then(|| {
            VERHOEFF_D[usize::from(c)]
                [usize::from(VERHOEFF_P[(i + first) % 8][usize::from(b - b'0')])]
        })
    })
}

/// Whether `digits` ends in its Verhoeff check digit. UIDAI uses Verhoeff because it catches
/// every single-digit typo and every swap of two adjacent digits, the two commonest errors in a
/// hand-typed Aadhaar number; catching them locally saves a paid call that could only fail.
/// Anything that is not a non-empty string of ASCII digits is not valid.
pub fn verhoeff_valid(digits: &str) -> bool {
    !digits.is_empty() && verhoeff_accumulate(digits, 0) == Some(0)
}

/// The digit to append to `digits` so that the result passes [`verhoeff_valid`]: tests and
/// synthetic inputs need well-formed Aadhaar numbers that were made up, not copied from people.
///
/// # Panics
/// If `digits` holds anything but ASCII digits: that is a bug in the caller, not bad input.
pub fn verhoeff_check_digit(digits: &str) -> char {
    let c = verhoeff_accumulate(digits, 1).expect("verhoeff_check_digit takes ASCII digits only");
    char::from(b'0' + VERHOEFF_INV[usize::from(c)])
}

/// Aadhaar number: 12 digits, not starting with 0 or 1, ending in a Verhoeff check digit.
/// People write it in groups (`2341 2341 2346`, `2341-2341-2346`), so spaces and hyphens are
/// dropped; the normalised value is the 12 digits. The messages never quote the value, because
/// an Aadhaar number must not be displayed in full (Aadhaar Act s.29(4)).
pub fn aadhaar(value: &str) -> Result<String, Invalid> {
    let v: String = required(value, "Aadhaar number")?
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect();
    let format = |message: &str| Err(Invalid::new(Reason::AADHAAR_FORMAT, message));
    if !v.bytes().all(|b| b.is_ascii_digit()) {
        return format("an Aadhaar number has only digits (spaces and hyphens aside)");
    }
    if v.len() != 12 {
        return format("an Aadhaar number has exactly 12 digits");
    }
    if v.starts_with(['0', '1']) {
        return format("an Aadhaar number never starts with 0 or 1");
    }
    if !verhoeff_valid(&v) {
        return Err(Invalid::new(
            Reason::AADHAAR_CHECKSUM,
            "the Aadhaar number's check digit does not match (a digit is mistyped or two are swapped)",
        ));
    }
    Ok(v)
}

/// The only form in which an Aadhaar number may be shown: logs, progress lines, the journal and
/// reports must never hold the full number, and the last four digits are what UIDAI itself
/// displays so that a person can tell their own number apart. Works on any text (valid or not,
/// grouped or not) so that callers can mask before validating; with fewer than four digits
/// nothing is revealed.
pub fn mask_aadhaar(value: &str) -> String {
    let digits: Vec<char> = value.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 4 {
        return "XXXX XXXX XXXX".to_owned();
    }
    let last4: String = digits[digits.len() - 4..].iter().collect();
    format!("XXXX XXXX {last4}")
}

/// Udyog Aadhaar Memorandum number, the pre-2020 MSME registration some exports still carry:
/// state letters, district digits, a category letter and a 7-digit serial (`MH26A0012345`).
/// Lower case is accepted and normalised to upper case.
pub fn uam(value: &str) -> Result<String, Invalid> {
    let v = required(value, "Udyog Aadhaar number")?.to_ascii_uppercase();
    let b = v.as_bytes();
    let ok = b.len() == 12
        && b[..2].iter().all(u8::is_ascii_uppercase)
        && b[2..4].iter().all(u8::is_ascii_digit)
        && b[4].is_ascii_uppercase()
        && b[5..].iter().all(u8::is_ascii_digit);
    if ok {
        Ok(v)
    } else {
        Err(Invalid::new(
            Reason::UAM_FORMAT,
            "not a Udyog Aadhaar number of the form XX00X0000000 (12 characters)",
        ))
    }
}

/// The PAN holder types, by the 4th letter of the PAN.
const PAN_HOLDER_TYPES: [(u8, &str); 11] = [
    (b'P', "individual"),
    (b'C', "company"),
    (b'F', "firm"),
    (b'H', "hindu_undivided_family"),
    (b'A', "association_of_persons"),
    (b'B', "body_of_individuals"),
    (b'G', "government"),
    (b'J', "artificial_juridical_person"),
    (b'L', "local_authority"),
    (b'T', "trust"),
    (b'K', "krish"),
];

/// Who holds a PAN, in words, from its 4th letter: a name match against a company's PAN is a
/// different check from one against a person's, and reports group on it. Anything without a
/// known 4th letter (including text that is not a PAN at all) is `"unknown"`; pass a value that
/// went through [`pan`] to be sure of an answer.
pub fn pan_holder_type(pan: &str) -> &'static str {
    pan.as_bytes()
        .get(3)
        .map(u8::to_ascii_uppercase)
        .and_then(|code| PAN_HOLDER_TYPES.iter().find(|(c, _)| *c == code))
        .map_or("unknown", |(_, words)| words)
}

/// Whether `b` is shaped like a PAN (`AAAAA9999A`), whatever its serial and holder type.
fn pan_shaped(b: &[u8]) -> bool {
    b.len() == 10
        && b[..5].iter().all(u8::is_ascii_uppercase)
        && b[5..9].iter().all(u8::is_ascii_digit)
        && b[9].is_ascii_uppercase()
}

/// The PAN rule a correctly shaped PAN breaks, if any.
fn pan_rules(b: &[u8]) -> Result<(), Invalid> {
    if &b[5..9] == b"0000" {
        return Err(Invalid::new(
            Reason::PAN_SERIAL,
            "a PAN's four digits are never 0000",
        ));
    }
    if !PAN_HOLDER_TYPES.iter().any(|(c, _)| *c == b[3]) {
        return Err(Invalid::new(
            Reason::PAN_HOLDER_TYPE,
            "a PAN's 4th letter must be a holder type (one of P C F H A B G J L T K)",
        ));
    }
    Ok(())
}

/// Permanent Account Number: five letters, four digits, a letter (`ABCPE1234F`). The serial
/// `0000` is never issued and the 4th letter must name a holder type, so either mistake is
/// caught here instead of by a paid "not found". Lower case is normalised to upper case.
pub fn pan(value: &str) -> Result<String, Invalid> {
    let v = required(value, "PAN")?.to_ascii_uppercase();
    if !pan_shaped(v.as_bytes()) {
        return Err(Invalid::new(
            Reason::PAN_FORMAT,
            "not a PAN of the form AAAAA9999A (five letters, four digits, a letter)",
        ));
    }
    pan_rules(v.as_bytes())?;
    Ok(v)
}

/// GST state codes in use: the states and union territories (01–38), "other territory" (97)
/// and "centre jurisdiction" (99).
fn gst_state_code(code: &[u8]) -> bool {
    code.len() == 2
        && code.iter().all(u8::is_ascii_digit)
        && matches!((code[0] - b'0') * 10 + (code[1] - b'0'), 1..=38 | 97 | 99)
}

/// Value of a GSTIN character in base 36 (`0-9A-Z`); `None` for anything else.
fn base36(b: u8) -> Option<u32> {
    match b {
        b'0'..=b'9' => Some(u32::from(b - b'0')),
        b'A'..=b'Z' => Some(u32::from(b - b'A') + 10),
        _ => None,
    }
}

/// The GSTIN check character for its first 14 characters (Luhn mod 36): tests and synthetic
/// inputs need well-formed GSTINs that were made up, not copied from real taxpayers.
///
/// # Panics
/// If `first14` holds anything but upper-case ASCII letters and digits: that is a bug in the
/// caller, not bad input.
pub fn gstin_check_char(first14: &str) -> char {
    let sum: u32 = first14
        .bytes()
        .enumerate()
        .map(|(i, b)| {
            let v = base36(b).expect("gstin_check_char takes 0-9 and A-Z only");
            let p = v * if i % 2 == 0 { 1 } else { 2 };
            p / 36 + p % 36
        })
        .sum();
    let check = (36 - sum % 36) % 36;
    char::from_digit(check, 36)
        .expect("a value below 36 is a base-36 digit")
        .to_ascii_uppercase()
}

/// GST identification number of a regular taxpayer: state code, the holder's PAN, an entity
/// number (1–9, A–Z), `Z`, and a check character (`27AAPFU0939F1ZV`). The check character
/// catches any single mistyped character, so a typo costs nothing. Lower case is normalised to
/// upper case.
pub fn gstin(value: &str) -> Result<String, Invalid> {
    let v = required(value, "GSTIN")?.to_ascii_uppercase();
    let b = v.as_bytes();
    let format = |message: &str| Err(Invalid::new(Reason::GSTIN_FORMAT, message));
    if b.len() != 15 || !b.iter().all(u8::is_ascii_alphanumeric) {
        return format("a GSTIN has exactly 15 letters and digits");
    }
    if !gst_state_code(&b[..2]) {
        return format("a GSTIN starts with a GST state code (01 to 38, 97 or 99)");
    }
    if !pan_shaped(&b[2..12]) || pan_rules(&b[2..12]).is_err() {
        return format("characters 3 to 12 of a GSTIN are a valid PAN");
    }
    if b[12] == b'0' {
        return format("the 13th character of a GSTIN (the entity number) is 1-9 or A-Z");
    }
    if b[13] != b'Z' {
        return format("the 14th character of a GSTIN is Z");
    }
    if char::from(b[14]) != gstin_check_char(&v[..14]) {
        return Err(Invalid::new(
            Reason::GSTIN_CHECKSUM,
            "the GSTIN's check character does not match (a character is mistyped)",
        ));
    }
    Ok(v)
}

/// Indian Financial System Code of a bank branch: bank letters, a reserved `0`, then the branch
/// code (`SBIN0001234`). Lower case is normalised to upper case.
pub fn ifsc(value: &str) -> Result<String, Invalid> {
    let v = required(value, "IFSC")?.to_ascii_uppercase();
    let b = v.as_bytes();
    let ok = b.len() == 11
        && b[..4].iter().all(u8::is_ascii_uppercase)
        && b[4] == b'0'
        && b[5..].iter().all(u8::is_ascii_alphanumeric);
    if ok {
        Ok(v)
    } else {
        Err(Invalid::new(
            Reason::IFSC_FORMAT,
            "not an IFSC of the form AAAA0XXXXXX (four letters, a zero, six letters or digits)",
        ))
    }
}

/// Indian mobile number. Exports carry it as `+91 98765 43210`, `919876543210`,
/// `09876543210` or `98765-43210`; the APIs and duplicate detection want the bare 10 digits, which
/// start with 6, 7, 8 or 9. A `91` prefix is dropped only from 12 digits, so a 10-digit number
/// that happens to start with 91 is kept whole.
pub fn mobile(value: &str) -> Result<String, Invalid> {
    let v: String = required(value, "mobile number")?
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect();
    let national = if let Some(rest) = v.strip_prefix("+91") {
        rest
    } else if v.len() == 12 && v.starts_with("91") {
        &v[2..]
    } else if v.len() == 11 && v.starts_with('0') {
        &v[1..]
    } else {
        &v
    };
    let b = national.as_bytes();
    if b.len() == 10 && matches!(b[0], b'6'..=b'9') && b.iter().all(u8::is_ascii_digit) {
        Ok(national.to_owned())
    } else {
        Err(Invalid::new(
            Reason::MOBILE_FORMAT,
            "not an Indian mobile number (10 digits starting with 6-9, optionally after +91 or 0)",
        ))
    }
}

/// Bank account number: banks print it in groups, so spaces are dropped; Indian account numbers
/// are 9 to 18 digits. Leading zeros are significant and kept.
pub fn bank_account(value: &str) -> Result<String, Invalid> {
    let v: String = required(value, "bank account number")?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    if (9..=18).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit()) {
        Ok(v)
    } else {
        Err(Invalid::new(
            Reason::BANK_ACCOUNT_FORMAT,
            "a bank account number has 9 to 18 digits and nothing else",
        ))
    }
}

/// DigiLocker `verification_id` (Cashfree): the caller's own reference for a consent flow, so it
/// is kept exactly as written apart from surrounding blanks; Cashfree accepts up to 50 letters,
/// digits, `.`, `-` and `_`.
pub fn digilocker_id(value: &str) -> Result<String, Invalid> {
    let v = required(value, "verification id")?;
    if v.len() <= 50
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        Ok(v.to_owned())
    } else {
        Err(Invalid::new(
            Reason::VERIFICATION_ID_FORMAT,
            "a verification id has 1 to 50 letters, digits, '.', '-' or '_'",
        ))
    }
}

/// One-time password as the OTP flows (Aadhaar, Udyam) take it: exactly six digits. A wrong
/// shape is caught here because providers count every wrong OTP against a small allowance.
pub fn otp(value: &str) -> Result<String, Invalid> {
    let v = required(value, "OTP")?;
    if v.len() == 6 && v.bytes().all(|b| b.is_ascii_digit()) {
        Ok(v.to_owned())
    } else {
        Err(Invalid::new(
            Reason::OTP_FORMAT,
            "an OTP is exactly 6 digits",
        ))
    }
}

/// A person's or business's name for a name match: blanks are trimmed and runs of blanks
/// collapsed, since exports are full of double spaces that would otherwise lower a match score.
/// Names are compared, never parsed, so any script is accepted as long as there is at least one
/// letter; at most 100 characters.
pub fn person_name(value: &str) -> Result<String, Invalid> {
    let v = required(value, "name")?
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if v.chars().count() > 100 {
        return Err(Invalid::new(
            Reason::NAME_FORMAT,
            "a name has at most 100 characters",
        ));
    }
    if !v.chars().any(char::is_alphabetic) {
        return Err(Invalid::new(
            Reason::NAME_FORMAT,
            "a name has at least one letter",
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests;
