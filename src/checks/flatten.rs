//! Provider answers nest objects and arrays; a CSV row is flat. One documented rule for all:
//! keys become `snake_case`, nested keys join with `_`, array elements are numbered from 1
//! (`nic_codes_1_activity`), `null` is an empty cell, booleans are `true`/`false`, numbers are
//! written in their shortest form (`12.50` becomes `12.5`).

use serde_json::Value;

/// Flattens a JSON value into `(column, value)` pairs, in the provider's key order.
pub fn flatten(value: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    walk(value, String::new(), &mut out);
    out
}

fn walk(value: &Value, prefix: String, out: &mut Vec<(String, String)>) {
    let join = |name: &str| {
        if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}_{name}")
        }
    };
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                walk(v, join(&snake_case(k)), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                walk(v, join(&(i + 1).to_string()), out);
            }
        }
        Value::Null => out.push((prefix, String::new())),
        Value::Bool(b) => out.push((prefix, b.to_string())),
        Value::Number(n) => out.push((prefix, n.to_string())),
        Value::String(s) => out.push((prefix, s.clone())),
    }
}

/// `grossTurnover` → `gross_turnover`, `NIC Code` → `nic_code`.
pub fn snake_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    let mut prev_lower = false;
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            if prev_lower {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
            prev_lower = false;
        } else if c.is_ascii_alphanumeric() {
            out.push(c);
            prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        } else {
            if !out.ends_with('_') && !out.is_empty() {
                out.push('_');
            }
            prev_lower = false;
        }
    }
    out.trim_end_matches('_').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_objects_and_arrays_get_documented_names() {
        let v = json!({
            "enterpriseName": "A & B",
            "owner": {"name": "X", "speciallyAbled": false},
            "nic_codes": [{"digit2": "62"}, {"digit2": "63"}],
            "tags": ["a", "b"],
            "turnover": 12.50,
            "gstin": null
        });
        assert_eq!(
            flatten(&v),
            vec![
                ("enterprise_name".to_string(), "A & B".to_string()),
                ("owner_name".into(), "X".into()),
                ("owner_specially_abled".into(), "false".into()),
                ("nic_codes_1_digit2".into(), "62".into()),
                ("nic_codes_2_digit2".into(), "63".into()),
                ("tags_1".into(), "a".into()),
                ("tags_2".into(), "b".into()),
                ("turnover".into(), "12.5".into()),
                ("gstin".into(), "".into()),
            ]
        );
    }

    #[test]
    fn snake_case_cases() {
        assert_eq!(snake_case("grossTurnover"), "gross_turnover");
        assert_eq!(snake_case("NIC Code"), "nic_code");
        assert_eq!(snake_case("nic_2_digit"), "nic_2_digit");
        assert_eq!(snake_case("_id"), "id");
    }
}
