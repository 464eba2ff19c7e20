//! The blueprints `pave serve` starts with: the built-in ones and those in
//! `--blueprints DIR` (reviewable files, e.g. from a Git checkout).

use std::path::Path;

use anyhow::{bail, Context};
use pave_core::blueprint::{Blueprint, BlueprintEntry};

const STAGING_ENVIRONMENT: &str = include_str!("../blueprints/staging-environment.yaml");

/// The built-in blueprints. Their default service is this binary's demo
/// service (`pave demo`), so they work on a machine with nothing else installed.
pub fn builtin() -> anyhow::Result<Vec<BlueprintEntry>> {
    let exe = std::env::current_exe().context("could not find the pave executable")?;
    let quoted = serde_json::to_string(&exe.display().to_string())?;
    let text = STAGING_ENVIRONMENT.replace("__PAVE_EXE__", &quoted);
    let blueprint = Blueprint::from_yaml(&text).context("the built-in blueprint staging-environment")?;
    Ok(vec![BlueprintEntry {
        blueprint,
        source: "built-in".into(),
    }])
}

/// The built-in blueprints and every `*.yaml`, `*.yml` and `*.json` file in
/// `dir`. A file that does not parse, or a name and version given twice with
/// different contents, stops the server with the file's name.
pub fn load(dir: Option<&Path>) -> anyhow::Result<Vec<BlueprintEntry>> {
    let mut all = builtin()?;
    let Some(dir) = dir else { return Ok(all) };
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("could not read the blueprint directory {}", dir.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("could not read the blueprint directory {}", dir.display()))?
        .into_iter()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        })
        .collect();
    files.sort();
    for path in files {
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("could not read {}", path.display()))?;
        let blueprint = Blueprint::from_yaml(&text).with_context(|| format!("in {}", path.display()))?;
        if let Some(other) = all
            .iter()
            .find(|e| e.blueprint.name == blueprint.name && e.blueprint.version == blueprint.version)
        {
            if other.blueprint != blueprint {
                bail!(
                    "{}: blueprint `{}` version {} is also defined by {} with other contents; \
                     give one of them a new version",
                    path.display(),
                    blueprint.name,
                    blueprint.version,
                    other.source
                );
            }
            continue;
        }
        all.push(BlueprintEntry {
            blueprint,
            source: format!("file {}", path.display()),
        });
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_blueprint_renders_the_payments_example() {
        let all = builtin().unwrap();
        let bp = &all[0].blueprint;
        let r = bp.render(&serde_json::json!({"service": "payments"})).unwrap();
        let w = &r.workloads[0];
        assert_eq!(w["replicas"], 2);
        assert_eq!(w["command"][1], "demo");
        assert_eq!(w["env"]["DATABASE_URL"], "${resource.payments-db.url}");
        assert_eq!(w["env"]["REDIS_URL"], "${resource.payments-cache.url}");
        assert_eq!(w["readiness"]["http"], "/healthz");
        assert!(w.get("memory_limit_mb").is_none());
    }

    #[test]
    fn a_directory_adds_blueprints_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("worker.yaml"),
            "name: worker\nversion: 1\nworkloads: [{name: w, command: [sleep, '60']}]\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("README.md"), "not a blueprint").unwrap();
        let all = load(Some(dir.path())).unwrap();
        assert!(all
            .iter()
            .any(|e| e.blueprint.name == "worker" && e.source.starts_with("file ")));
        std::fs::write(dir.path().join("bad.yml"), "name: bad\nversion: 1\nwat: 1\n").unwrap();
        let e = format!("{:#}", load(Some(dir.path())).unwrap_err());
        assert!(e.contains("bad.yml") && e.contains("wat"), "{e}");
    }
}
