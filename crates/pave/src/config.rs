//! The CLI's saved server and token (`pave login`), in a 0600 file.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// What `pave login` saves.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedLogin {
    /// Server URL.
    pub server: Option<String>,
    /// API token.
    pub token: Option<String>,
}

/// `$PAVE_CONFIG`, else `$XDG_CONFIG_HOME/pave/config.json`, else `~/.config/pave/config.json`.
pub fn path() -> PathBuf {
    if let Ok(p) = std::env::var("PAVE_CONFIG") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("pave").join("config.json")
}

/// The saved login, or an empty one when there is none.
pub fn load() -> anyhow::Result<SavedLogin> {
    let p = path();
    match std::fs::read_to_string(&p) {
        Ok(text) => serde_json::from_str(&text).with_context(|| format!("{} is not valid", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SavedLogin::default()),
        Err(e) => Err(e).with_context(|| format!("could not read {}", p.display())),
    }
}

/// Saves the login, readable by the owner only.
pub fn save(login: &SavedLogin) -> anyhow::Result<PathBuf> {
    let p = path();
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))?;
    }
    let tmp = p.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("could not write {}", tmp.display()))?;
    f.write_all(serde_json::to_string_pretty(login)?.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &p)?;
    Ok(p)
}
