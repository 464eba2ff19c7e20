//! Resource providers: they create, check, repair and delete resources on the
//! host their agent runs on. Today: `postgres` (its own cluster per resource,
//! through initdb and pg_ctl) and `redis` (its own redis-server), each on a free
//! loopback port. Their processes run detached, so they outlive a restart of
//! pave and are found again from the state each keeps in its directory.

mod error;
mod postgres;
mod process;
mod redis;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use error::ProviderError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a provider is asked to act on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceRequest {
    /// Environment.
    pub env: String,
    /// Resource name.
    pub name: String,
    /// `postgres` or `redis`.
    pub kind: String,
    /// Validated spec.
    #[serde(default)]
    pub spec: Value,
    /// Credentials from the vault (`password`), resolved at execution. Never logged.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
}

/// What a resource looks like once it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provisioned {
    /// Non-secret outputs (host, port, database, user).
    pub outputs: BTreeMap<String, Value>,
    /// Its directory on the host.
    pub location: String,
}

/// Sets `dir` to mode 0711: others may pass through, not list.
fn traversable(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
}

/// The major version of `program --version` (`postgres (PostgreSQL) 15.18 …`,
/// `Redis server v=7.0.15 …`).
async fn installed_major(program: &Path) -> Result<u64, ProviderError> {
    let out = tokio::process::Command::new(program)
        .arg("--version")
        .output()
        .await
        .map_err(|e| ProviderError::Command(format!("{} --version: {e}", program.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split(|c: char| !c.is_ascii_digit() && c != '.')
        .find(|w| w.contains('.') && w.starts_with(|c: char| c.is_ascii_digit()))
        .and_then(|w| w.split('.').next())
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| ProviderError::Command(format!("{} --version said {text:?}", program.display())))
}

/// A `version` asked for (an image tag on Kubernetes) must be the major
/// version this host runs: the local providers do not install servers.
async fn check_version(req: &ResourceRequest) -> Result<(), ProviderError> {
    let Some(asked) = req.spec.get("version").and_then(Value::as_str) else {
        return Ok(());
    };
    let program = match req.kind.as_str() {
        "postgres" => postgres::program("postgres"),
        "redis" => redis::program(),
        _ => return Ok(()),
    };
    let have = installed_major(&program).await?;
    let want = asked.split(['.', '-']).next().and_then(|m| m.parse::<u64>().ok());
    if want == Some(have) {
        return Ok(());
    }
    Err(ProviderError::Invalid(format!(
        "{} version {asked:?} is asked for, and this host runs {} {have} ({}): the local target \
         runs the installed server; a version is for a Kubernetes target (an image tag)",
        req.kind,
        req.kind,
        program.display()
    )))
}

/// What an agent needs of whatever provides its target's resources (local
/// servers on its host; in-cluster StatefulSets on Kubernetes).
#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    /// Creates the resource and waits until it is healthy (idempotent).
    async fn create(&self, req: &ResourceRequest) -> Result<Provisioned, ProviderError>;
    /// Checks health with a real connection: `Ok(())` when healthy.
    async fn check(&self, req: &ResourceRequest) -> Result<(), ProviderError>;
    /// Brings back a resource whose server died, with its data.
    async fn repair(&self, req: &ResourceRequest) -> Result<Provisioned, ProviderError>;
    /// Stops the resource and removes its data (idempotent).
    async fn delete(&self, req: &ResourceRequest) -> Result<(), ProviderError>;
}

#[async_trait::async_trait]
impl Provider for LocalProviders {
    async fn create(&self, req: &ResourceRequest) -> Result<Provisioned, ProviderError> {
        LocalProviders::create(self, req).await
    }
    async fn check(&self, req: &ResourceRequest) -> Result<(), ProviderError> {
        LocalProviders::check(self, req).await
    }
    async fn repair(&self, req: &ResourceRequest) -> Result<Provisioned, ProviderError> {
        LocalProviders::repair(self, req).await
    }
    async fn delete(&self, req: &ResourceRequest) -> Result<(), ProviderError> {
        LocalProviders::delete(self, req).await
    }
}

/// The local providers, keeping each resource under `root/<env>/<name>`.
#[derive(Debug, Clone)]
pub struct LocalProviders {
    root: PathBuf,
}

impl LocalProviders {
    /// Providers rooted at `root` (created if missing).
    pub fn new(root: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        traversable(root)?;
        Ok(LocalProviders {
            root: root.to_path_buf(),
        })
    }

    fn dir(&self, req: &ResourceRequest) -> PathBuf {
        self.root.join(&req.env).join(&req.name)
    }

    /// Makes the environment's directory; servers that run as another user
    /// (PostgreSQL as `postgres`) must be able to pass through it.
    fn env_dir(&self, req: &ResourceRequest) -> Result<(), ProviderError> {
        let dir = self.root.join(&req.env);
        std::fs::create_dir_all(&dir)
            .and_then(|_| traversable(&dir))
            .map_err(|e| ProviderError::Io(format!("could not create {}: {e}", dir.display())))
    }

    fn password(req: &ResourceRequest) -> Result<&str, ProviderError> {
        req.secrets
            .get("password")
            .map(String::as_str)
            .ok_or_else(|| ProviderError::Invalid("no password was resolved for the resource".into()))
    }

    /// Creates the resource and waits until it is healthy. Idempotent: a
    /// resource that exists already is started if needed and returned.
    pub async fn create(&self, req: &ResourceRequest) -> Result<Provisioned, ProviderError> {
        let dir = self.dir(req);
        let password = Self::password(req)?;
        check_version(req).await?;
        self.env_dir(req)?;
        match req.kind.as_str() {
            "postgres" => postgres::create(&dir, &req.spec, password).await,
            "redis" => redis::create(&dir, password).await,
            other => Err(ProviderError::Invalid(format!("no local provider for `{other}`"))),
        }
    }

    /// Checks health with a real connection: `Ok(())` when healthy.
    pub async fn check(&self, req: &ResourceRequest) -> Result<(), ProviderError> {
        let dir = self.dir(req);
        let password = Self::password(req)?;
        match req.kind.as_str() {
            "postgres" => postgres::check(&dir, &req.spec, password).await,
            "redis" => redis::check(&dir, password).await,
            other => Err(ProviderError::Invalid(format!("no local provider for `{other}`"))),
        }
    }

    /// Starts a resource whose process died, with its data.
    pub async fn repair(&self, req: &ResourceRequest) -> Result<Provisioned, ProviderError> {
        let dir = self.dir(req);
        if !dir.exists() {
            return Err(ProviderError::Gone(format!(
                "{} (its data directory is missing)",
                dir.display()
            )));
        }
        self.create(req).await
    }

    /// Stops the resource and removes its data. Idempotent.
    pub async fn delete(&self, req: &ResourceRequest) -> Result<(), ProviderError> {
        let dir = self.dir(req);
        match req.kind.as_str() {
            "postgres" => postgres::stop(&dir).await,
            "redis" => redis::stop(&dir).await,
            _ => {}
        }
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ProviderError::Io(format!(
                    "could not remove {}: {e}",
                    dir.display()
                )))
            }
        }
        // The environment's directory goes with its last resource (it fails,
        // harmlessly, while others remain).
        if let Some(parent) = dir.parent() {
            let _ = tokio::fs::remove_dir(parent).await;
        }
        Ok(())
    }
}
