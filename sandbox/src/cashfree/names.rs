//! The name match of a bank or PAN entry: how well the name a client sent matches the one the
//! source holds, scripted by the name's first word.
//!
//! # Names (bank `name`, PAN `name`): first word (any case)
//!
//! | first word | `name_match_result` | `name_match_score` | name at bank / registered name |
//! |---|---|---|---|
//! | `good` | `GOOD_PARTIAL_MATCH` | `90.00` | the other words |
//! | `moderate` | `MODERATE_PARTIAL_MATCH` | `75.00` | the second word |
//! | `poor` | `POOR_PARTIAL_MATCH` | `45.00` | the other words' initials |
//! | `nomatch` | `NO_MATCH` | `15.00` | `SANDBOX ACCOUNT HOLDER` |
//! | anything else | `DIRECT_MATCH` | `100.00` | the name, upper case |

/// How well a name matched, scripted by its first word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NameMatch {
    Direct,
    Good,
    Moderate,
    Poor,
    No,
}

impl NameMatch {
    pub(super) fn of(name: &str) -> NameMatch {
        let first = name.split_whitespace().next().unwrap_or_default();
        match first.to_ascii_lowercase().as_str() {
            "good" => NameMatch::Good,
            "moderate" => NameMatch::Moderate,
            "poor" => NameMatch::Poor,
            "nomatch" => NameMatch::No,
            _ => NameMatch::Direct,
        }
    }

    pub(super) fn result(self) -> &'static str {
        match self {
            NameMatch::Direct => "DIRECT_MATCH",
            NameMatch::Good => "GOOD_PARTIAL_MATCH",
            NameMatch::Moderate => "MODERATE_PARTIAL_MATCH",
            NameMatch::Poor => "POOR_PARTIAL_MATCH",
            NameMatch::No => "NO_MATCH",
        }
    }

    pub(super) fn score(self) -> &'static str {
        match self {
            NameMatch::Direct => "100.00",
            NameMatch::Good => "90.00",
            NameMatch::Moderate => "75.00",
            NameMatch::Poor => "45.00",
            NameMatch::No => "15.00",
        }
    }

    /// The name the source holds for someone who gave `name`.
    pub(super) fn source_name(self, name: &str) -> String {
        let words: Vec<String> = name.split_whitespace().map(str::to_uppercase).collect();
        let rest = words.get(1..).unwrap_or_default();
        let name = match self {
            NameMatch::Direct => words.join(" "),
            NameMatch::Good => rest.join(" "),
            NameMatch::Moderate => rest.first().cloned().unwrap_or_default(),
            NameMatch::Poor => rest
                .iter()
                .filter_map(|word| word.chars().next())
                .map(String::from)
                .collect::<Vec<_>>()
                .join(" "),
            NameMatch::No => String::new(),
        };
        if name.is_empty() {
            NO_NAME.to_owned()
        } else {
            name
        }
    }
}

pub(super) const NO_NAME: &str = "SANDBOX ACCOUNT HOLDER";
