//! A memory cgroup per replica: v2 (`memory.max`, `memory.events`) when the
//! unified hierarchy is mounted, v1 (`memory.limit_in_bytes`,
//! `memory.oom_control`) otherwise. Each replica's cgroup is a child of `pave`.

use std::path::{Path, PathBuf};
use std::time::Duration;

const ROOT: &str = "/sys/fs/cgroup";
const PARENT: &str = "pave";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

#[derive(Debug, Clone)]
pub struct Cgroup {
    path: PathBuf,
    version: Version,
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("cannot write {value:?} to {}: {e}", path.display()))
}

fn mkdir(path: &Path) -> Result<(), String> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("cannot create cgroup {}: {e}", path.display())),
    }
}

impl Cgroup {
    /// Makes (or reuses) cgroup `name` limited to `limit_mb` MiB of memory, swap excluded.
    pub fn create(name: &str, limit_mb: u64) -> Result<Cgroup, String> {
        let bytes = (limit_mb.max(1) << 20).to_string();
        let root = Path::new(ROOT);
        if root.join("cgroup.controllers").exists() {
            let controllers = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            if !controllers.split_whitespace().any(|c| c == "memory") {
                return Err("the cgroup v2 memory controller is not available".into());
            }
            let parent = root.join(PARENT);
            // Enabling a controller that is already enabled is harmless; failure
            // shows below as a missing memory.max.
            let _ = std::fs::write(root.join("cgroup.subtree_control"), "+memory");
            mkdir(&parent)?;
            let _ = std::fs::write(parent.join("cgroup.subtree_control"), "+memory");
            let path = parent.join(name);
            mkdir(&path)?;
            write(&path.join("memory.max"), &bytes)?;
            let _ = std::fs::write(path.join("memory.swap.max"), "0");
            Ok(Cgroup {
                path,
                version: Version::V2,
            })
        } else if root.join("memory/memory.limit_in_bytes").exists() {
            let parent = root.join("memory").join(PARENT);
            mkdir(&parent)?;
            let path = parent.join(name);
            mkdir(&path)?;
            write(&path.join("memory.limit_in_bytes"), &bytes)?;
            // Absent without swap accounting; then there is nothing to limit.
            let _ = std::fs::write(path.join("memory.memsw.limit_in_bytes"), &bytes);
            Ok(Cgroup {
                path,
                version: Version::V1,
            })
        } else {
            Err(format!("no memory cgroup controller is mounted under {ROOT}"))
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn procs_file(&self) -> PathBuf {
        self.path.join("cgroup.procs")
    }

    pub fn add(&self, pid: i32) -> Result<(), String> {
        write(&self.procs_file(), &pid.to_string())
    }

    /// How many processes of the cgroup the kernel OOM-killed so far.
    pub fn oom_kills(&self) -> Option<u64> {
        let file = match self.version {
            Version::V1 => "memory.oom_control",
            Version::V2 => "memory.events",
        };
        let text = std::fs::read_to_string(self.path.join(file)).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
    }

    /// Removes the cgroup; its processes must be gone (retried briefly while the
    /// kernel finishes with them).
    pub fn remove(&self) {
        remove_path(&self.path);
    }
}

/// Removes a cgroup directory if it exists, retrying for up to a second.
pub fn remove_path(path: &Path) {
    for _ in 0..20 {
        match std::fs::remove_dir(path) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    tracing::warn!(cgroup = %path.display(), "could not remove cgroup");
}
