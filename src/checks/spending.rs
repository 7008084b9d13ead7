//! What a job may spend: the price of a paid call and the cap on one run's paid calls, read
//! from the check's config section and the command line.

use crate::config::{ConfigError, ConfigFile};

/// A check's price and a run's cap, checked against each other.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spending {
    /// `[checks.NAME] price_per_call`, in the account's currency.
    pub price: Option<f64>,
    /// The most paid calls one run makes: the lower of `max_paid_calls` (or
    /// `--max-paid-calls`) and what `max_spend` buys at `price_per_call`.
    pub max_paid_calls: Option<u64>,
}

impl Spending {
    /// The spending settings of check `name`; `cli_max` (`--max-paid-calls`) replaces the
    /// config's `max_paid_calls`.
    pub fn of(
        name: &str,
        config: &ConfigFile,
        cli_max: Option<u64>,
    ) -> Result<Spending, ConfigError> {
        let section = config.checks.get(name).cloned().unwrap_or_default();
        let key = |k: &str| format!("[checks.{name}] {k}");
        let price = match section.price_per_call {
            Some(p) if !(p.is_finite() && p > 0.0) => {
                return Err(config.invalid(
                    key("price_per_call"),
                    "give what one paid call costs, a number above 0 (for example 1.5)",
                ));
            }
            p => p,
        };
        let by_spend = match (section.max_spend, price) {
            (None, _) => None,
            (Some(m), _) if !(m.is_finite() && m >= 0.0) => {
                return Err(config.invalid(
                    key("max_spend"),
                    "give the most one run may spend, a number of 0 or more",
                ));
            }
            (Some(_), None) => {
                return Err(config.invalid(
                    key("max_spend"),
                    format!(
                        "a spend needs a price: set {} in the same section, or cap the calls \
                         with max_paid_calls",
                        key("price_per_call")
                    ),
                ));
            }
            // A hair of tolerance, so that 10.0 at 0.1 a call buys 100 calls, not 99.
            (Some(m), Some(p)) => Some((m / p * (1.0 + 1e-9)).floor() as u64),
        };
        let max_paid_calls = match (cli_max.or(section.max_paid_calls), by_spend) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(Spending {
            price,
            max_paid_calls,
        })
    }

    /// `n` paid calls at the price, when there is one.
    pub fn cost(&self, n: u64) -> Option<f64> {
        self.price.map(|p| p * n as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn spending(text: &str, cli: Option<u64>) -> Result<Spending, ConfigError> {
        let config = ConfigFile::parse(text, Path::new("bulkverify.toml")).unwrap();
        Spending::of("deepvue-udyam", &config, cli)
    }

    #[test]
    fn the_cap_is_the_lower_of_calls_and_what_the_spend_buys() {
        assert_eq!(spending("", None).unwrap(), Spending::default());
        let s = "[checks.deepvue-udyam]\nprice_per_call = 0.1\nmax_spend = 10\n";
        assert_eq!(spending(s, None).unwrap().max_paid_calls, Some(100));
        let both = format!("{s}max_paid_calls = 40\n");
        assert_eq!(spending(&both, None).unwrap().max_paid_calls, Some(40));
        assert_eq!(
            spending(&both, Some(500)).unwrap().max_paid_calls,
            Some(100)
        );
        assert_eq!(spending(&both, Some(7)).unwrap().max_paid_calls, Some(7));
        let priced = spending("[checks.deepvue-udyam]\nprice_per_call = 2.5\n", None).unwrap();
        assert_eq!((priced.cost(4), priced.max_paid_calls), (Some(10.0), None));
        let calls = "[checks.deepvue-udyam]\nmax_paid_calls = 0\n";
        assert_eq!(spending(calls, None).unwrap().max_paid_calls, Some(0));
    }

    #[test]
    fn a_spend_without_a_price_or_a_bad_number_is_refused_by_name() {
        let unpriced = spending("[checks.deepvue-udyam]\nmax_spend = 10\n", None).unwrap_err();
        let message = unpriced.to_string();
        assert!(
            message.contains("max_spend") && message.contains("price_per_call"),
            "{message}"
        );
        for bad in [
            "price_per_call = 0",
            "price_per_call = -1",
            "max_spend = -5\nprice_per_call = 1",
        ] {
            let text = format!("[checks.deepvue-udyam]\n{bad}\n");
            let message = spending(&text, None).unwrap_err().to_string();
            assert!(
                message.contains("[checks.deepvue-udyam]"),
                "{bad}: {message}"
            );
        }
    }
}
