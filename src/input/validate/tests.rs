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
        assert_eq!(udyam(bad).unwrap_err().reason.code, "udyam_format", "{bad}");
    }
    assert_eq!(udyam("  ").unwrap_err().reason.code, "missing_value");
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
        assert_eq!(vpa(bad).unwrap_err().reason.code, "vpa_format", "{bad}");
    }
    assert_eq!(vpa("").unwrap_err().reason.code, "missing_value");
}

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CASES: usize = 3000;
const BASE36: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

fn random_digits(rng: &mut StdRng, first: std::ops::RangeInclusive<u8>, len: usize) -> String {
    let mut s = String::with_capacity(len);
    s.push(char::from(b'0' + rng.random_range(first)));
    for _ in 1..len {
        s.push(char::from(b'0' + rng.random_range(0..10u8)));
    }
    s
}

fn random_aadhaar(rng: &mut StdRng) -> String {
    let prefix = random_digits(rng, 2..=9, 11);
    let check = verhoeff_check_digit(&prefix);
    format!("{prefix}{check}")
}

fn random_letter(rng: &mut StdRng) -> char {
    char::from(b'A' + rng.random_range(0..26u8))
}

fn random_gstin14(rng: &mut StdRng) -> String {
    let state = match rng.random_range(0..40u8) {
        38 => 97,
        39 => 99,
        n => n + 1,
    };
    let holder = PAN_HOLDER_TYPES[rng.random_range(0..PAN_HOLDER_TYPES.len())].0;
    let serial = rng.random_range(1..10_000u32);
    let entity = BASE36[rng.random_range(1..BASE36.len())];
    format!(
        "{state:02}{}{}{}{}{}{serial:04}{}{}Z",
        random_letter(rng),
        random_letter(rng),
        random_letter(rng),
        char::from(holder),
        random_letter(rng),
        random_letter(rng),
        char::from(entity),
    )
}

/// True when `s` holds `n` or more ASCII digits in a row.
fn has_digit_run(s: &str, n: usize) -> bool {
    s.split(|c: char| !c.is_ascii_digit())
        .any(|run| run.len() >= n)
}

#[test]
fn verhoeff_tables_are_the_reference_ones() {
    let d = "0123456789 1234067895 2340178956 3401289567 4012395678 \
             5987604321 6598710432 7659821043 8765932104 9876543210";
    let p = "0123456789 1576283094 5803796142 8916043527 9453126870 \
             4286573901 2793806415 7046913258";
    let rows = |t: &str| -> Vec<Vec<u8>> {
        t.split_whitespace()
            .map(|r| r.bytes().map(|b| b - b'0').collect())
            .collect()
    };
    assert_eq!(rows(d), VERHOEFF_D.map(|r| r.to_vec()).to_vec());
    assert_eq!(rows(p), VERHOEFF_P.map(|r| r.to_vec()).to_vec());
    for (i, inv) in VERHOEFF_INV.iter().enumerate() {
        assert_eq!(VERHOEFF_D[i][usize::from(*inv)], 0, "inverse of {i}");
    }
}

#[test]
fn verhoeff_reference_examples() {
    assert!(verhoeff_valid("234123412346"));
    assert!(!verhoeff_valid("234123412347"));
    assert_eq!(verhoeff_check_digit("23412341234"), '6');
    // The textbook example: 236 takes check digit 3.
    assert_eq!(verhoeff_check_digit("236"), '3');
    assert!(verhoeff_valid("2363"));
    for bad in ["", "23412341234a", "2341 2341 2346", "-234123412346"] {
        assert!(!verhoeff_valid(bad), "{bad:?}");
    }
}

#[test]
fn aadhaar_table() {
    for (input, want) in [
        ("234123412346", "234123412346"),
        (" 2341 2341 2346 ", "234123412346"),
        ("2341-2341-2346", "234123412346"),
        ("2341\t2341  2346", "234123412346"),
    ] {
        assert_eq!(aadhaar(input).unwrap(), want, "{input:?}");
    }
    for (input, reason) in [
        ("234123412347", "aadhaar_checksum"),
        ("2341 2341 2347", "aadhaar_checksum"),
        ("23412341234", "aadhaar_format"),
        ("2341234123466", "aadhaar_format"),
        ("034123412346", "aadhaar_format"),
        ("134123412346", "aadhaar_format"),
        ("2341.2341.2346", "aadhaar_format"),
        ("2341234123A6", "aadhaar_format"),
        ("XXXX XXXX 2346", "aadhaar_format"),
        ("२३४१२३४१२३४६", "aadhaar_format"),
        ("  ", "missing_value"),
    ] {
        assert_eq!(aadhaar(input).unwrap_err().reason.code, reason, "{input:?}");
    }
}

#[test]
fn aadhaar_messages_never_hold_the_number() {
    let mut rng = StdRng::seed_from_u64(7);
    let mut inputs: Vec<String> = [
        "234123412347",
        "2341 2341 2347",
        "034123412346",
        "23412341234",
        "2341234123466",
        "2341234123A6",
    ]
    .map(String::from)
    .to_vec();
    for _ in 0..CASES {
        let mut v = random_aadhaar(&mut rng).into_bytes();
        let i = rng.random_range(0..v.len());
        v[i] = b'0' + (v[i] - b'0' + rng.random_range(1..10u8)) % 10;
        inputs.push(String::from_utf8(v).unwrap());
    }
    for input in &inputs {
        let err = aadhaar(input).unwrap_err();
        let digits: String = input.chars().filter(char::is_ascii_digit).collect();
        assert!(!err.message.contains(input.as_str()), "{}", err.message);
        assert!(!err.message.contains(&digits), "{}", err.message);
        assert!(!has_digit_run(&err.message, 3), "{}", err.message);
    }
}

#[test]
fn verhoeff_check_digit_makes_valid_aadhaar_numbers() {
    let mut rng = StdRng::seed_from_u64(1);
    for _ in 0..CASES {
        let prefix = random_digits(&mut rng, 2..=9, 11);
        let number = format!("{prefix}{}", verhoeff_check_digit(&prefix));
        assert!(verhoeff_valid(&number), "{number}");
        assert_eq!(aadhaar(&number).unwrap(), number);
    }
}

#[test]
fn verhoeff_catches_every_single_digit_substitution() {
    let mut rng = StdRng::seed_from_u64(2);
    for _ in 0..CASES {
        let number = random_aadhaar(&mut rng);
        for i in 0..number.len() {
            for d in b'0'..=b'9' {
                let mut v = number.clone().into_bytes();
                if v[i] == d {
                    continue;
                }
                v[i] = d;
                let typo = String::from_utf8(v).unwrap();
                assert!(!verhoeff_valid(&typo), "{number} -> {typo}");
                assert!(aadhaar(&typo).is_err(), "{number} -> {typo}");
            }
        }
    }
}

#[test]
fn verhoeff_catches_every_adjacent_transposition() {
    let mut rng = StdRng::seed_from_u64(3);
    for _ in 0..CASES {
        let number = random_aadhaar(&mut rng);
        for i in 0..number.len() - 1 {
            let mut v = number.clone().into_bytes();
            if v[i] == v[i + 1] {
                continue;
            }
            v.swap(i, i + 1);
            let swapped = String::from_utf8(v).unwrap();
            assert!(!verhoeff_valid(&swapped), "{number} -> {swapped}");
            assert!(aadhaar(&swapped).is_err(), "{number} -> {swapped}");
        }
    }
}

#[test]
fn mask_aadhaar_table() {
    for (input, want) in [
        ("234123412346", "XXXX XXXX 2346"),
        ("2341 2341 2346", "XXXX XXXX 2346"),
        ("2341-2341-2347", "XXXX XXXX 2347"),
        ("12345", "XXXX XXXX 2345"),
        ("1234", "XXXX XXXX 1234"),
        ("123", "XXXX XXXX XXXX"),
        ("", "XXXX XXXX XXXX"),
        ("not a number", "XXXX XXXX XXXX"),
    ] {
        assert_eq!(mask_aadhaar(input), want, "{input:?}");
    }
}

#[test]
fn mask_aadhaar_reveals_only_the_last_four_digits() {
    let mut rng = StdRng::seed_from_u64(4);
    for _ in 0..CASES {
        let number = random_aadhaar(&mut rng);
        let grouped = format!("{} {} {}", &number[..4], &number[4..8], &number[8..]);
        for shown in [&number, &grouped] {
            let mask = mask_aadhaar(shown);
            let digits: String = mask.chars().filter(char::is_ascii_digit).collect();
            assert_eq!(digits, number[8..], "{mask}");
            assert!(!has_digit_run(&mask, 5), "{mask}");
            assert!(!mask.contains(&number[..8]), "{mask}");
        }
    }
}

#[test]
fn uam_table() {
    assert_eq!(uam("MH26A0012345").unwrap(), "MH26A0012345");
    assert_eq!(uam(" dl01b1234567 ").unwrap(), "DL01B1234567");
    for bad in [
        "MH26A001234",
        "MH26A00123456",
        "M226A0012345",
        "MH2AA0012345",
        "MH2610012345",
        "MH26A001234X",
        "MH-26-A-0012345",
        "UDYAM-MH-01-0000001",
    ] {
        assert_eq!(uam(bad).unwrap_err().reason.code, "uam_format", "{bad}");
    }
    assert_eq!(uam("").unwrap_err().reason.code, "missing_value");
}

#[test]
fn pan_table() {
    assert_eq!(pan("ABCPE1234F").unwrap(), "ABCPE1234F");
    assert_eq!(pan(" aapfu0939f ").unwrap(), "AAPFU0939F");
    for (input, reason) in [
        ("ABCPE1234", "pan_format"),
        ("ABCPE12345F", "pan_format"),
        ("ABCP1234FF", "pan_format"),
        ("ABCPE123F4", "pan_format"),
        ("1BCPE1234F", "pan_format"),
        ("ABCPE 1234F", "pan_format"),
        ("ABCPE0000F", "pan_serial"),
        ("ABCDE1234F", "pan_holder_type"),
        ("ABCZE1234F", "pan_holder_type"),
        ("", "missing_value"),
    ] {
        assert_eq!(pan(input).unwrap_err().reason.code, reason, "{input:?}");
    }
}

#[test]
fn pan_holder_types_in_words() {
    for (input, want) in [
        ("ABCPE1234F", "individual"),
        ("AAACR5055K", "company"),
        ("AAPFU0939F", "firm"),
        ("AAAHA1234B", "hindu_undivided_family"),
        ("AAAAA1234B", "association_of_persons"),
        ("AAABA1234B", "body_of_individuals"),
        ("AAAGA1234B", "government"),
        ("AAAJA1234B", "artificial_juridical_person"),
        ("AAALA1234B", "local_authority"),
        ("AAATA1234B", "trust"),
        ("AAAKA1234B", "krish"),
        ("abcpe1234f", "individual"),
        ("ABCDE1234F", "unknown"),
        ("ABC", "unknown"),
        ("", "unknown"),
    ] {
        assert_eq!(pan_holder_type(input), want, "{input:?}");
    }
    for (code, _) in PAN_HOLDER_TYPES {
        let p = format!("ABC{}E1234F", char::from(code));
        assert!(pan(&p).is_ok(), "{p}");
    }
}

#[test]
fn gstin_table() {
    assert_eq!(gstin_check_char("27AAPFU0939F1Z"), 'V');
    assert_eq!(gstin("27AAPFU0939F1ZV").unwrap(), "27AAPFU0939F1ZV");
    assert_eq!(gstin(" 27aapfu0939f1zv ").unwrap(), "27AAPFU0939F1ZV");
    for (input, reason) in [
        ("27AAPFU0939F1ZW", "gstin_checksum"),
        ("27AAPFU0939F1Z", "gstin_format"),
        ("27AAPFU0939F1ZVV", "gstin_format"),
        ("27AAPFU0939F1Z-", "gstin_format"),
        ("00AAPFU0939F1ZV", "gstin_format"),
        ("39AAPFU0939F1ZV", "gstin_format"),
        ("2AAAPFU0939F1ZV", "gstin_format"),
        ("27AAPFU0000F1ZV", "gstin_format"),
        ("27AAPXU0939F1ZV", "gstin_format"),
        ("27AAPFU093XF1ZV", "gstin_format"),
        ("27AAPFU0939F0ZV", "gstin_format"),
        ("27AAPFU0939F1YV", "gstin_format"),
        ("", "missing_value"),
    ] {
        assert_eq!(gstin(input).unwrap_err().reason.code, reason, "{input:?}");
    }
    for state in ["01", "38", "97", "99"] {
        let first14 = format!("{state}AAPFU0939F1Z");
        let g = format!("{first14}{}", gstin_check_char(&first14));
        assert!(gstin(&g).is_ok(), "{g}");
    }
}

#[test]
fn gstin_check_char_makes_valid_gstins_and_only_one_char_fits() {
    let mut rng = StdRng::seed_from_u64(5);
    for _ in 0..CASES {
        let first14 = random_gstin14(&mut rng);
        let check = gstin_check_char(&first14);
        assert_eq!(
            gstin(&format!("{first14}{check}")).unwrap(),
            format!("{first14}{check}")
        );
        for &other in BASE36 {
            let other = char::from(other);
            if other != check {
                let g = format!("{first14}{other}");
                assert_eq!(gstin(&g).unwrap_err().reason.code, "gstin_checksum", "{g}");
            }
        }
    }
}

#[test]
fn gstin_catches_every_single_character_substitution() {
    let mut rng = StdRng::seed_from_u64(6);
    for _ in 0..CASES {
        let first14 = random_gstin14(&mut rng);
        let check = gstin_check_char(&first14);
        for i in 0..14 {
            let mut v = first14.clone().into_bytes();
            let replacement = BASE36[rng.random_range(0..BASE36.len())];
            if v[i] == replacement {
                continue;
            }
            v[i] = replacement;
            let typo = String::from_utf8(v).unwrap();
            assert_ne!(gstin_check_char(&typo), check, "{first14} -> {typo}");
            assert!(gstin(&format!("{typo}{check}")).is_err(), "{typo}{check}");
        }
    }
}

#[test]
fn ifsc_table() {
    assert_eq!(ifsc("SBIN0001234").unwrap(), "SBIN0001234");
    assert_eq!(ifsc(" hdfc0abc12x ").unwrap(), "HDFC0ABC12X");
    for bad in [
        "SBIN1001234",
        "SBIN000123",
        "SBIN00012345",
        "SB1N0001234",
        "SBIN0-01234",
        "SBIN 001234",
    ] {
        assert_eq!(ifsc(bad).unwrap_err().reason.code, "ifsc_format", "{bad}");
    }
    assert_eq!(ifsc("").unwrap_err().reason.code, "missing_value");
}

#[test]
fn mobile_table() {
    for (input, want) in [
        ("9876543210", "9876543210"),
        ("+91 98765 43210", "9876543210"),
        ("+919876543210", "9876543210"),
        ("919876543210", "9876543210"),
        ("09876543210", "9876543210"),
        ("98765-43210", "9876543210"),
        ("+91-98765-43210", "9876543210"),
        ("6000000000", "6000000000"),
        ("9123456789", "9123456789"),
    ] {
        assert_eq!(mobile(input).unwrap(), want, "{input:?}");
    }
    for bad in [
        "5876543210",
        "0987654321",
        "987654321",
        "98765432100",
        "919876543",
        "+19876543210",
        "+9109876543210",
        "001234567890",
        "(98765) 43210",
        "98765O3210",
        "+91",
    ] {
        assert_eq!(
            mobile(bad).unwrap_err().reason.code,
            "mobile_format",
            "{bad}"
        );
    }
    assert_eq!(mobile(" ").unwrap_err().reason.code, "missing_value");
}

#[test]
fn bank_account_table() {
    for (input, want) in [
        ("123456789", "123456789"),
        ("000123456789012345", "000123456789012345"),
        ("1234 5678 9012", "123456789012"),
    ] {
        assert_eq!(bank_account(input).unwrap(), want, "{input:?}");
    }
    for bad in [
        "12345678",
        "1234567890123456789",
        "12345-67890",
        "12345678A",
        "SBIN0001234",
    ] {
        assert_eq!(
            bank_account(bad).unwrap_err().reason.code,
            "bank_account_format",
            "{bad}"
        );
    }
    assert_eq!(bank_account("").unwrap_err().reason.code, "missing_value");
}

#[test]
fn digilocker_id_table() {
    for (input, want) in [
        ("a", "a"),
        (" Ver_01.abc-XYZ ", "Ver_01.abc-XYZ"),
        (&"x".repeat(50), &"x".repeat(50)),
    ] {
        assert_eq!(digilocker_id(input).unwrap(), want, "{input:?}");
    }
    for bad in ["a b", "id#1", "id/1", "idé", &"x".repeat(51)] {
        assert_eq!(
            digilocker_id(bad).unwrap_err().reason.code,
            "verification_id_format",
            "{bad}"
        );
    }
    assert_eq!(
        digilocker_id("  ").unwrap_err().reason.code,
        "missing_value"
    );
}

#[test]
fn otp_table() {
    assert_eq!(otp("123456").unwrap(), "123456");
    assert_eq!(otp(" 000000 ").unwrap(), "000000");
    for bad in ["12345", "1234567", "12 3456", "12345a", "１２３４５６"] {
        assert_eq!(otp(bad).unwrap_err().reason.code, "otp_format", "{bad}");
    }
    assert_eq!(otp("").unwrap_err().reason.code, "missing_value");
}

#[test]
fn person_name_table() {
    for (input, want) in [
        ("Ravi Kumar", "Ravi Kumar"),
        ("  Ravi \t  Kumar  ", "Ravi Kumar"),
        ("R. K. Sharma", "R. K. Sharma"),
        ("रवि कुमार", "रवि कुमार"),
        ("M/s Acme & Sons 2", "M/s Acme & Sons 2"),
        (&"a".repeat(100), &"a".repeat(100)),
    ] {
        assert_eq!(person_name(input).unwrap(), want, "{input:?}");
    }
    for bad in ["12345", "-- . --", "1/2", &"a".repeat(101)] {
        assert_eq!(
            person_name(bad).unwrap_err().reason.code,
            "name_format",
            "{bad}"
        );
    }
    assert_eq!(
        person_name(" \t ").unwrap_err().reason.code,
        "missing_value"
    );
}
