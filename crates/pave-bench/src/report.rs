//! The plain-text report (one line per figure) and the JSON object of all figures.

use std::io::Write;

use serde_json::{Map, Value};

/// Collects figures; prints each line as soon as it is known.
pub struct Report {
    /// With `--json` the text goes to stderr and stdout holds only the JSON object.
    to_stderr: bool,
    json: Map<String, Value>,
}

impl Report {
    pub fn new(json: bool) -> Self {
        Report {
            to_stderr: json,
            json: Map::new(),
        }
    }

    /// Prints one line of the text report.
    pub fn line(&self, text: impl AsRef<str>) {
        let text = text.as_ref();
        if self.to_stderr {
            let mut e = std::io::stderr().lock();
            let _ = writeln!(e, "{text}");
        } else {
            let mut o = std::io::stdout().lock();
            let _ = writeln!(o, "{text}");
            let _ = o.flush();
        }
    }

    /// Records a section of the JSON object.
    pub fn set(&mut self, section: &str, value: Value) {
        self.json.insert(section.to_string(), value);
    }

    /// The JSON object of every figure.
    pub fn json(&self) -> Value {
        Value::Object(self.json.clone())
    }
}

/// `target met` or `target MISSED`.
pub fn verdict(met: bool) -> &'static str {
    if met {
        "target met"
    } else {
        "target MISSED"
    }
}

/// A number with thousands separators, no decimals: `12,345`.
pub fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.abs());
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if x.round() < 0.0 {
        format!("-{out}")
    } else {
        out
    }
}

/// Rounds for the JSON object (keeps it readable).
pub fn round(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1234567.0), "1,234,567");
        assert_eq!(thousands(-25000.0), "-25,000");
    }
}
