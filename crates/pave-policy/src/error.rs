//! The crate's error, and regorus's multi-line error reports condensed into one line.

/// Why policies could not be loaded or evaluated.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A module does not parse or compile, or fails when evaluated against a
    /// sample input at load. `message` starts with the line and column
    /// regorus reports.
    #[error("policy {module}: {message}")]
    Compile {
        /// The module's name (its file).
        module: String,
        /// `line L, column C: what is wrong`.
        message: String,
    },
    /// Evaluating the policies failed, or they produced a value of the wrong shape.
    #[error("policy evaluation failed: {0}")]
    Eval(String),
    /// A policy file or directory could not be read.
    #[error("could not read {path}: {message}")]
    Io {
        /// The file or directory.
        path: String,
        /// The operating system's error.
        message: String,
    },
}

/// A regorus error report, taken apart.
///
/// regorus reports errors as
///
/// ```text
///
/// --> policies/x.rego:5:1
///   |
/// 5 | }
///   | ^
/// error: expecting expression
/// ```
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Report {
    pub file: Option<String>,
    pub line: Option<u32>,
    pub column: Option<u32>,
    pub message: String,
}

impl Report {
    pub(crate) fn parse(text: &str) -> Report {
        let mut file = None;
        let mut line = None;
        let mut column = None;
        let mut message = None;
        let mut lines = text.lines();
        while let Some(l) = lines.next() {
            let t = l.trim();
            if let Some(loc) = t.strip_prefix("-->") {
                if file.is_none() {
                    let mut parts = loc.trim().rsplitn(3, ':');
                    let c = parts.next().and_then(|c| c.parse().ok());
                    let l = parts.next().and_then(|l| l.parse().ok());
                    if let (Some(c), Some(l), Some(f)) = (c, l, parts.next()) {
                        file = Some(f.to_string());
                        line = Some(l);
                        column = Some(c);
                    }
                }
            } else if let Some(first) = t.strip_prefix("error:") {
                let rest: Vec<&str> = std::iter::once(first)
                    .chain(lines.by_ref())
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect();
                message = Some(rest.join(" "));
                break;
            }
        }
        let message = message.unwrap_or_else(|| one_line(text));
        Report {
            file,
            line,
            column,
            message,
        }
    }

    /// `line L, column C: message` (or just the message without a location).
    pub(crate) fn at_line(&self) -> String {
        match (self.line, self.column) {
            (Some(l), Some(c)) => format!("line {l}, column {c}: {}", self.message),
            _ => self.message.clone(),
        }
    }

    /// `file:L:C: message` (or just the message without a location).
    pub(crate) fn located(&self) -> String {
        match (&self.file, self.line, self.column) {
            (Some(f), Some(l), Some(c)) => format!("{f}:{l}:{c}: {}", self.message),
            _ => self.message.clone(),
        }
    }
}

/// The text's non-empty lines, trimmed and joined with spaces.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_regorus_report() {
        let r = Report::parse("\n--> dir/b.rego:5:1\n  |\n5 | }\n  | ^\nerror: expecting expression");
        assert_eq!(
            r,
            Report {
                file: Some("dir/b.rego".into()),
                line: Some(5),
                column: Some(1),
                message: "expecting expression".into(),
            }
        );
        assert_eq!(r.at_line(), "line 5, column 1: expecting expression");
        assert_eq!(r.located(), "dir/b.rego:5:1: expecting expression");
    }

    #[test]
    fn keeps_text_without_a_location() {
        let r = Report::parse("not a valid rule path\n");
        assert_eq!(r.file, None);
        assert_eq!(r.at_line(), "not a valid rule path");
    }
}
