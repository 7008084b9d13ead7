//! Udyam numbers: their format, the test serials that script faults, and the deterministic
//! registration data a completed lookup returns.

use serde::Serialize;

/// What a Udyam number does, chosen by its 7-digit serial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scenario {
    Completes,
    /// Completes `failed` with `BAD_REQUEST`.
    FailsBadRequest,
    /// Completes `failed` with `NOT_FOUND`.
    FailsNotFound,
    /// Accepted, then 202 for ever.
    NeverCompletes,
    /// Every submission answers 500.
    SubmitAlwaysErrors,
    /// The first submission answers 503, later ones are accepted.
    SubmitUnavailableOnce,
    /// The submission answers a business 400: not registered.
    NotRegistered,
    /// The first fetch of the ready result answers 500, later ones the completed result.
    ResultErrorsOnce,
}

impl Scenario {
    /// The scenario of a number already checked by [`is_udyam_number`].
    pub(super) fn of(number: &str) -> Scenario {
        match serial(number) {
            "9000001" => Scenario::FailsBadRequest,
            "9000002" => Scenario::FailsNotFound,
            "9000003" => Scenario::NeverCompletes,
            "9000004" => Scenario::SubmitAlwaysErrors,
            "9000005" => Scenario::SubmitUnavailableOnce,
            "9000006" => Scenario::NotRegistered,
            "9000007" => Scenario::ResultErrorsOnce,
            _ => Scenario::Completes,
        }
    }
}

/// `^UDYAM-[A-Z]{2}-[0-9]{2}-[0-9]{7}$`
pub(super) fn is_udyam_number(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 19
        && text.starts_with("UDYAM-")
        && b[6..8].iter().all(u8::is_ascii_uppercase)
        && b[8] == b'-'
        && b[9..11].iter().all(u8::is_ascii_digit)
        && b[11] == b'-'
        && b[12..].iter().all(u8::is_ascii_digit)
}

fn state_letters(number: &str) -> &str {
    number.get(6..8).unwrap_or_default()
}

fn district_digits(number: &str) -> &str {
    number.get(9..11).unwrap_or_default()
}

#[derive(Debug, Serialize)]
pub(super) struct NicCode {
    nic_2_digit: &'static str,
    nic_4_digit: &'static str,
    nic_5_digit: &'static str,
    activity: &'static str,
}

/// The registration data, fields in the order the client's fixtures show them.
#[derive(Debug, Serialize)]
pub(super) struct SourceOutput {
    udyam_aadhaar_number: String,
    enterprise_name: String,
    organisation_type: &'static str,
    enterprise_type: &'static str,
    major_activity: &'static str,
    social_category: &'static str,
    date_of_incorporation: &'static str,
    date_of_commencement: &'static str,
    date_of_udyam_registration: &'static str,
    state: String,
    district: String,
    pin: String,
    dic_name: String,
    nic_codes: Vec<NicCode>,
}

/// A handful of real states and their chief district.
const STATES: &[(&str, &str, &str, &str)] = &[
    ("MH", "MAHARASHTRA", "MUMBAI", "400001"),
    ("DL", "DELHI", "NEW DELHI", "110001"),
    ("KA", "KARNATAKA", "BENGALURU URBAN", "560001"),
    ("TN", "TAMIL NADU", "CHENNAI", "600001"),
    ("GJ", "GUJARAT", "AHMEDABAD", "380001"),
    ("UP", "UTTAR PRADESH", "LUCKNOW", "226001"),
    ("WB", "WEST BENGAL", "KOLKATA", "700001"),
];

/// Where a registration is: the state from the number's letters, its district and PIN code.
pub(super) struct Place {
    pub(super) state: String,
    pub(super) district: String,
    pub(super) pin: String,
}

/// The place of a number already checked by [`is_udyam_number`]: a real state for a handful of
/// letters, so rows read plausibly; other letters stand for themselves.
pub(super) fn place(number: &str) -> Place {
    let letters = state_letters(number);
    match STATES.iter().find(|(code, ..)| *code == letters) {
        Some(&(_, state, district, pin)) => Place {
            state: state.to_owned(),
            district: district.to_owned(),
            pin: pin.to_owned(),
        },
        None => Place {
            state: letters.to_owned(),
            district: format!("{letters} DISTRICT {}", district_digits(number)),
            pin: format!("9999{}", district_digits(number)),
        },
    }
}

/// The 7-digit serial of a number already checked by [`is_udyam_number`].
pub(super) fn serial(number: &str) -> &str {
    number.get(12..).unwrap_or_default()
}

/// Deterministic from the number: state from the letters, enterprise type from the serial
/// mod 3, one NIC code or two when the serial is even, so tests can tell rows apart.
pub(super) fn source_output(number: &str) -> SourceOutput {
    let serial_text = serial(number);
    let serial: u64 = serial_text.parse().unwrap_or_default();
    let Place {
        state,
        district,
        pin,
    } = place(number);
    let enterprise_type = ["Medium", "Micro", "Small"][(serial % 3) as usize];
    let mut nic_codes = vec![NicCode {
        nic_2_digit: "62 - Computer programming",
        nic_4_digit: "6201 - Computer programming activities",
        nic_5_digit: "62011 - Writing, modifying, testing of computer program",
        activity: "Services",
    }];
    if serial.is_multiple_of(2) {
        nic_codes.push(NicCode {
            nic_2_digit: "47 - Retail trade, except of motor vehicles and motorcycles",
            nic_4_digit: "4791 - Retail sale via mail order houses or via Internet",
            nic_5_digit: "47912 - Retail sale via e-commerce",
            activity: "Trading",
        });
    }
    SourceOutput {
        udyam_aadhaar_number: number.to_owned(),
        enterprise_name: format!("SANDBOX ENTERPRISES {serial_text}"),
        organisation_type: "Proprietary",
        enterprise_type,
        major_activity: "Services",
        social_category: "General",
        date_of_incorporation: "2019-04-01",
        date_of_commencement: "2019-04-15",
        date_of_udyam_registration: "2020-07-21",
        state,
        dic_name: district.clone(),
        district,
        pin,
        nic_codes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_udyam_format() {
        assert!(is_udyam_number("UDYAM-MH-01-0000001"));
        for bad in [
            "UDYAM-mh-01-0000001",
            "UDYAM-MH-1-0000001",
            "UDYAM-MH-01-000001",
            "UDYAM-MH-01-00000010",
            "UDYAM-M1-01-0000001",
            "UDYAM MH-01-0000001",
            "udyam-MH-01-0000001",
            "UDYAM-MH-01-00000Ω",
            "",
        ] {
            assert!(!is_udyam_number(bad), "{bad}");
        }
    }

    #[test]
    fn scenarios_follow_the_serial_whatever_the_state() {
        assert_eq!(
            Scenario::of("UDYAM-KA-22-9000003"),
            Scenario::NeverCompletes
        );
        assert_eq!(
            Scenario::of("UDYAM-MH-01-9000003"),
            Scenario::NeverCompletes
        );
        assert_eq!(Scenario::of("UDYAM-MH-01-9000008"), Scenario::Completes);
    }

    #[test]
    fn source_output_matches_the_fixture_and_varies_by_number() {
        let fixture = serde_json::json!({"udyam_aadhaar_number":"UDYAM-MH-01-0000001","enterprise_name":"SANDBOX ENTERPRISES 0000001",
            "organisation_type":"Proprietary","enterprise_type":"Micro","major_activity":"Services",
            "social_category":"General","date_of_incorporation":"2019-04-01","date_of_commencement":"2019-04-15",
            "date_of_udyam_registration":"2020-07-21","state":"MAHARASHTRA","district":"MUMBAI","pin":"400001",
            "dic_name":"MUMBAI","nic_codes":[{"nic_2_digit":"62 - Computer programming","nic_4_digit":"6201 - Computer programming activities","nic_5_digit":"62011 - Writing, modifying, testing of computer program","activity":"Services"}]});
        let ours = source_output("UDYAM-MH-01-0000001");
        assert_eq!(serde_json::to_value(&ours).expect("serialises"), fixture);
        let text = serde_json::to_string(&ours).expect("serialises");
        assert!(
            text.starts_with(r#"{"udyam_aadhaar_number":"UDYAM-MH-01-0000001","enterprise_name""#)
        );

        let even = source_output("UDYAM-XY-07-0000002");
        assert_eq!(even.nic_codes.len(), 2);
        assert_eq!(even.enterprise_type, "Small");
        assert_eq!(even.state, "XY");
        assert_eq!(even.district, "XY DISTRICT 07");
        assert_eq!(
            source_output("UDYAM-DL-01-0000003").enterprise_type,
            "Medium"
        );
        assert_eq!(source_output("UDYAM-DL-01-0000003").state, "DELHI");
    }
}
