//! Rules for names people give things (environments, later workloads and
//! resources) and for labels: the DNS-label rules Kubernetes uses, so that a
//! name valid here is valid as a namespace or object name there.

use std::collections::BTreeMap;

use crate::error::CoreError;

/// Longest name (a DNS label).
pub const MAX_NAME: usize = 63;

/// Checks a name: lower-case letters, digits and `-`, starting with a letter,
/// not ending with `-`, at most 63 characters.
pub fn validate_name(what: &str, name: &str) -> Result<(), CoreError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(CoreError::InvalidInput(format!(
            "{what} name `{name}` must be 1-{MAX_NAME} lower-case letters, digits or '-', \
             start with a letter and not end with '-'"
        )))
    }
}

/// Checks labels: keys like names (with `.`, `_` and one `/` prefix allowed),
/// values up to 63 characters of letters, digits, `-`, `_`, `.`.
pub fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), CoreError> {
    for (k, v) in labels {
        let key_ok = !k.is_empty()
            && k.len() <= 253
            && k.matches('/').count() <= 1
            && k.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            && k.starts_with(|c: char| c.is_ascii_alphanumeric());
        if !key_ok {
            return Err(CoreError::InvalidInput(format!(
                "label key `{k}` is not a valid label key"
            )));
        }
        let value_ok = v.len() <= 63 && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !value_ok {
            return Err(CoreError::InvalidInput(format!(
                "label `{k}`: value `{v}` must be at most 63 letters, digits, '-', '_' or '.'"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dns_label_rules() {
        for good in ["payments-staging", "a", "e2e-1"] {
            assert!(validate_name("environment", good).is_ok(), "{good}");
        }
        for bad in ["", "Payments", "-x", "x-", "1abc", "a_b", &"a".repeat(64)] {
            assert!(validate_name("environment", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels_are_checked() {
        let mut l = BTreeMap::new();
        l.insert("tier".to_string(), "production".to_string());
        l.insert("pave.dev/regulated".to_string(), "true".to_string());
        assert!(validate_labels(&l).is_ok());
        l.insert("bad key".to_string(), "x".to_string());
        assert!(validate_labels(&l).is_err());
    }
}
