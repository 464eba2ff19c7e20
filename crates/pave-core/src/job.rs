//! The `job` action kind: one command on a target, with its own environment.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::CoreError;

/// Longest a job may be told to run.
pub const MAX_TIMEOUT_SECS: u64 = 7 * 24 * 3600;

/// A command to run once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Program and arguments; the program is looked up on `PATH`.
    pub command: Vec<String>,
    /// Extra environment variables, on top of a minimal base passed through from
    /// the agent (`PATH`, `HOME`, `LANG`, `LC_ALL`, `TZ`, `TMPDIR`, `USER`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory; the server's data directory's `work/` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Seconds before the command is killed and the step fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// A command that undoes this one, run by `rollback`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<Vec<String>>,
}

impl JobSpec {
    /// Checks what serde cannot: non-empty command, sane names, bounded timeout.
    pub fn validate(&self) -> Result<(), CoreError> {
        let bad = |m: String| Err(CoreError::InvalidInput(m));
        match self.command.first() {
            None => return bad("`command` must name a program".into()),
            Some(p) if p.is_empty() => return bad("`command[0]` is empty".into()),
            _ => {}
        }
        if let Some(undo) = &self.undo {
            if undo.first().is_none_or(|p| p.is_empty()) {
                return bad("`undo` must name a program".into());
            }
        }
        for key in self.env.keys() {
            let valid = !key.is_empty()
                && !key.starts_with(|c: char| c.is_ascii_digit())
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return bad(format!(
                    "environment variable name `{key}` must match [A-Za-z_][A-Za-z0-9_]*"
                ));
            }
        }
        if self
            .command
            .iter()
            .chain(self.env.values())
            .any(|s| s.contains('\0'))
        {
            return bad("command and environment values may not contain NUL bytes".into());
        }
        match self.timeout_secs {
            Some(0) => bad("`timeout_secs` must be at least 1".into()),
            Some(t) if t > MAX_TIMEOUT_SECS => {
                bad(format!("`timeout_secs` must be at most {MAX_TIMEOUT_SECS}"))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(cmd: &[&str]) -> JobSpec {
        JobSpec {
            command: cmd.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::new(),
            cwd: None,
            timeout_secs: None,
            undo: None,
        }
    }

    #[test]
    fn empty_command_is_refused() {
        assert!(spec(&[]).validate().is_err());
        assert!(spec(&[""]).validate().is_err());
        assert!(spec(&["true"]).validate().is_ok());
    }

    #[test]
    fn bad_env_names_and_timeouts_are_refused() {
        let mut s = spec(&["true"]);
        s.env.insert("1X".into(), "v".into());
        assert!(s.validate().unwrap_err().to_string().contains("1X"));
        let mut s = spec(&["true"]);
        s.timeout_secs = Some(0);
        assert!(s.validate().is_err());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let r: Result<JobSpec, _> = serde_json::from_str(r#"{"command":["true"],"bogus":1}"#);
        assert!(r.unwrap_err().to_string().contains("bogus"));
    }
}
