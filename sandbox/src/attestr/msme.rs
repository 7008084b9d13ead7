//! The MSME record Attestr answers for a Udyam number: every field of the OTP answer, or the
//! public ones of the plain lookup. The fields are synthetic, derived from the number's serial
//! so that rows differ, and stable across runs.

use serde::Serialize;

use super::super::udyam::{self, Place};

#[derive(Serialize)]
struct Owner {
    owner: &'static str,
    gender: &'static str,
    pan: String,
    mobile: String,
    email: String,
    #[serde(rename = "socialCategory")]
    social_category: &'static str,
    #[serde(rename = "speciallyAbled")]
    specially_abled: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Bank {
    bank: &'static str,
    ifsc: &'static str,
    account_number: String,
}

#[derive(Serialize)]
struct Employment {
    male: String,
    female: String,
    other: String,
    total: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Financial {
    fy: &'static str,
    classification: &'static str,
    wdv: String,
    exclusion: String,
    investment: String,
    gross_turnover: String,
    export_turnover: String,
    net_turnover: String,
    itr_filed: bool,
    itr_type: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Unit {
    unit_name: String,
    unit_number: String,
    building: &'static str,
    village_or_town: String,
    block: &'static str,
    road: &'static str,
    city: String,
    zip: String,
    state: String,
    district: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Address {
    unit_number: String,
    building: &'static str,
    village_or_town: String,
    block: &'static str,
    road: &'static str,
    city: String,
    state: String,
    district: String,
    zip: String,
    email: String,
    mobile: String,
}

#[derive(Serialize)]
struct Nic {
    digit2: &'static str,
    digit4: &'static str,
    digit5: &'static str,
    activity: &'static str,
    date: &'static str,
}

/// The MSME record, fields in the documented order; the OTP-only sections are absent from the
/// plain lookup.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Msme {
    valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    reg: String,
    entity: String,
    #[serde(rename = "type")]
    kind: &'static str,
    major_activity: &'static str,
    gstin: bool,
    category: &'static str,
    incorporated: &'static str,
    commenced: &'static str,
    registered: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner_details: Option<Owner>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bank_details: Option<Bank>,
    #[serde(skip_serializing_if = "Option::is_none")]
    employment_details: Option<Employment>,
    #[serde(skip_serializing_if = "Option::is_none")]
    financial_details: Option<Vec<Financial>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit_details: Option<Vec<Unit>>,
    official_address: Address,
    nic_codes: Vec<Nic>,
    dic: String,
    dfo: String,
}

const OWNERS: [(&str, &str); 4] = [
    ("RAVI KUMAR", "Male"),
    ("PRIYA SHARMA", "Female"),
    ("ANIL MEHTA", "Male"),
    ("SUNITA RAO", "Female"),
];

/// The registration of `reg`, derived from its serial so rows differ: type, category and
/// activity rotate with it, an even serial has GSTIN, two units and two NIC codes. `mobile` is
/// where the OTP went, for the OTP answer; `None` for the plain lookup.
pub(super) fn record(reg: &str, mobile: Option<&str>) -> Msme {
    let serial_text = udyam::serial(reg);
    let serial: u64 = serial_text.parse().unwrap_or_default();
    let even = serial.is_multiple_of(2);
    let place = udyam::place(reg);
    let category = ["Micro", "Small", "Medium"][(serial % 3) as usize];
    let email = format!("udyam{serial_text}@example.com");
    let (owner, gender) = OWNERS[(serial % 4) as usize];
    let with_otp = mobile.is_some();
    let unit_details = with_otp.then(|| units(serial_text, if even { 2 } else { 1 }, &place));
    let Place {
        state,
        district,
        pin,
    } = place;
    let male = 5 + serial % 10;
    let female = 2 + serial % 5;
    Msme {
        valid: true,
        status: with_otp.then_some("SUCCESS"),
        reg: reg.to_owned(),
        entity: format!("SANDBOX ENTERPRISES {serial_text}"),
        kind: ["Proprietary", "Partnership", "Private Limited Company"][(serial % 3) as usize],
        major_activity: if even { "Services" } else { "Manufacturing" },
        gstin: even,
        category,
        incorporated: "2019-04-01",
        commenced: "2019-04-15",
        registered: "2020-07-21",
        owner_details: mobile.map(|mobile| Owner {
            owner,
            gender,
            pan: format!("ABCPS{:04}K", 1000 + serial % 9000),
            mobile: mobile.to_owned(),
            email: email.clone(),
            social_category: "General",
            specially_abled: false,
        }),
        bank_details: with_otp.then(|| Bank {
            bank: "STATE BANK OF INDIA",
            ifsc: "SBIN0001234",
            account_number: format!("3{serial:010}"),
        }),
        employment_details: with_otp.then(|| Employment {
            male: male.to_string(),
            female: female.to_string(),
            other: "0".to_owned(),
            total: (male + female).to_string(),
        }),
        financial_details: with_otp.then(|| financials(serial, category)),
        unit_details,
        official_address: Address {
            unit_number: serial_text.to_owned(),
            building: "SANDBOX HOUSE",
            village_or_town: district.clone(),
            block: "CENTRAL",
            road: "MAIN ROAD",
            city: district.clone(),
            state,
            district: district.clone(),
            zip: pin,
            email,
            mobile: mobile.unwrap_or("9876543210").to_owned(),
        },
        nic_codes: nic_codes(even),
        dic: district.clone(),
        dfo: district,
    }
}

/// `count` units, numbered from 1, all at the registered place.
fn units(serial_text: &str, count: u32, place: &Place) -> Vec<Unit> {
    (1..=count)
        .map(|n| Unit {
            unit_name: format!("UNIT {n}"),
            unit_number: format!("{n}{serial_text}"),
            building: "SANDBOX HOUSE",
            village_or_town: place.district.clone(),
            block: "CENTRAL",
            road: "MAIN ROAD",
            city: place.district.clone(),
            zip: place.pin.clone(),
            state: place.state.clone(),
            district: place.district.clone(),
        })
        .collect()
}

/// Two financial years, the later one larger, each figure ending in the serial's last digits.
fn financials(serial: u64, category: &'static str) -> Vec<Financial> {
    [("2022-23", 10), ("2023-24", 12)]
        .into_iter()
        .map(|(fy, scale)| {
            let lakh = |n: u64| (n * scale * 10_000 + serial % 1000).to_string();
            Financial {
                fy,
                classification: category,
                wdv: lakh(20),
                exclusion: "0".to_owned(),
                investment: lakh(20),
                gross_turnover: lakh(150),
                export_turnover: lakh(10),
                net_turnover: lakh(140),
                itr_filed: true,
                itr_type: "ITR-4",
            }
        })
        .collect()
}

/// A software NIC code for every serial, and a retail one as well for an even serial.
fn nic_codes(even: bool) -> Vec<Nic> {
    let mut nic_codes = vec![Nic {
        digit2: "62 - Computer programming, consultancy and related activities",
        digit4: "6201 - Computer programming activities",
        digit5: "62011 - Writing, modifying, testing of computer program",
        activity: "Services",
        date: "2020-07-21",
    }];
    if even {
        nic_codes.push(Nic {
            digit2: "47 - Retail trade, except of motor vehicles and motorcycles",
            digit4: "4791 - Retail sale via mail order houses or via Internet",
            digit5: "47912 - Retail sale via e-commerce",
            activity: "Trading",
            date: "2021-04-01",
        });
    }
    nic_codes
}
