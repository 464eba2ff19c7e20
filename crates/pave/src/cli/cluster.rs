//! `pave get|apply|edit|delete` (any object of a Kubernetes environment) and
//! `pave helm …`. Every change is an action (`object.*`, `helm.*`): policy,
//! approvals and the audit log see it, and its before-state is its rollback.

use std::path::PathBuf;

use anyhow::{bail, Context};
use base64::Engine as _;
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use super::{finish_mutation, ClientArgs, Format, WaitArgs};
use crate::client::Client;
use crate::output::cell;
use crate::{exit, output};

#[derive(Debug, Args)]
pub struct GetArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// `KIND` or `KIND/NAME` (`deployments`, `deployment/payments`, `cm/settings`).
    pub object: String,
    /// Environment (its namespace).
    #[arg(long)]
    pub env: String,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// YAML or JSON file of objects (several documents); `-` reads standard input.
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,
    /// Environment (its namespace).
    #[arg(long)]
    pub env: String,
    /// A server-side dry run: print what would change, change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct EditArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// `KIND/NAME`.
    pub object: String,
    /// Environment (its namespace).
    #[arg(long)]
    pub env: String,
    /// A JSON merge patch to apply instead of opening `$EDITOR`.
    #[arg(long)]
    pub patch: Option<String>,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// `KIND/NAME`.
    pub object: String,
    /// Environment (its namespace).
    #[arg(long)]
    pub env: String,
}

#[derive(Debug, Args)]
pub struct AdoptArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// `deployment/NAME`: a Deployment of the environment's namespace that pave does not manage.
    pub object: String,
    /// Environment (its namespace).
    #[arg(long)]
    pub env: String,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Workload name.
    pub name: String,
    /// Environment.
    #[arg(long)]
    pub env: String,
}

#[derive(Debug, Subcommand)]
pub enum HelmCmd {
    /// Install a chart as a release (an action; its undo uninstalls).
    Install(HelmInstallArgs),
    /// Upgrade a release (an action; a failed upgrade goes back to the revision before).
    Upgrade(HelmInstallArgs),
    /// Roll a release back to a revision (default: the one before).
    Rollback(HelmRollbackArgs),
    /// Uninstall a release.
    Uninstall(HelmReleaseArgs),
    /// A release's status.
    Status(HelmReadArgs),
    /// A release's revisions.
    History(HelmReadArgs),
    /// Releases in the environment.
    List(HelmListArgs),
}

#[derive(Debug, Args)]
pub struct HelmInstallArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Release name.
    pub release: String,
    /// A chart directory or .tgz here (uploaded), or `oci://…` / `repo/name` (fetched by the agent).
    pub chart: String,
    /// Environment (its namespace).
    #[arg(long)]
    pub env: String,
    /// A values file (repeatable, in order).
    #[arg(short = 'f', long = "values")]
    pub values: Vec<PathBuf>,
    /// `KEY=VALUE` (repeatable).
    #[arg(long = "set")]
    pub set: Vec<String>,
    /// `PATH=SECRET`: the environment's secret SECRET as value PATH (`db.password=db-pass`);
    /// it reaches helm on its standard input only.
    #[arg(long = "set-secret", value_name = "PATH=SECRET")]
    pub set_secret: Vec<String>,
    /// How long helm may take.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct HelmRollbackArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Release name.
    pub release: String,
    /// The revision to go back to (default: the one before).
    pub revision: Option<u32>,
    /// Environment (its namespace).
    #[arg(long)]
    pub env: String,
    /// How long helm may take.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct HelmReleaseArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Release name.
    pub release: String,
    /// Environment (its namespace).
    #[arg(long)]
    pub env: String,
    /// How long helm may take.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct HelmReadArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Release name.
    pub release: String,
    /// Environment (its namespace).
    #[arg(long)]
    pub env: String,
}

#[derive(Debug, Args)]
pub struct HelmListArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Environment (its namespace).
    #[arg(long)]
    pub env: String,
}

/// `KIND/NAME` → (kind, name).
fn split_ref(object: &str) -> anyhow::Result<(String, Option<String>)> {
    match object.split_once('/') {
        Some((k, n)) if !k.is_empty() && !n.is_empty() && !n.contains('/') => {
            Ok((k.to_string(), Some(n.to_string())))
        }
        Some(_) => bail!("{object:?} is not KIND/NAME"),
        None if !object.is_empty() => Ok((object.to_string(), None)),
        None => bail!("name a kind: KIND or KIND/NAME"),
    }
}

fn named_ref(object: &str) -> anyhow::Result<(String, String)> {
    match split_ref(object)? {
        (k, Some(n)) => Ok((k, n)),
        (_, None) => bail!("{object:?} names no object: KIND/NAME"),
    }
}

async fn submit(client: &Client, kind: &str, env: &str, input: Value) -> anyhow::Result<pave_core::Action> {
    super::workloads::submit(client, kind, env, input).await
}

pub async fn get(a: GetArgs) -> anyhow::Result<i32> {
    let client = Client::from_args(&a.client)?;
    let (kind, name) = split_ref(&a.object)?;
    let path = match &name {
        Some(n) => format!("/api/v1/environments/{}/objects/{kind}/{n}", a.env),
        None => format!("/api/v1/environments/{}/objects/{kind}", a.env),
    };
    let v: Value = client.get(&path).await?;
    let items = v["items"].as_array().cloned().unwrap_or_default();
    match (a.client.output, &name) {
        (Format::Table, _) => {
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|o| {
                    let created = o["metadata"]["creationTimestamp"].as_str().unwrap_or("-");
                    vec![
                        cell(&o["kind"]),
                        cell(&o["metadata"]["name"]),
                        created.to_string(),
                    ]
                })
                .collect();
            output::table(&["KIND", "NAME", "CREATED"], &rows);
        }
        (format, Some(_)) if items.len() == 1 => {
            output::structured(format, &items[0])?;
        }
        (format, _) => {
            output::structured(format, &items)?;
        }
    }
    Ok(exit::OK)
}

fn read_file(path: &std::path::Path) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .context("could not read standard input")?;
        return Ok(s);
    }
    std::fs::read_to_string(path).with_context(|| format!("could not read {}", path.display()))
}

fn print_changes(v: &Value) {
    for c in v["changes"].as_array().into_iter().flatten() {
        let what = if c["before"].is_null() {
            "created"
        } else if c["after"].is_null() {
            "deleted"
        } else {
            "changed"
        };
        println!("{} {what}", cell(&c["object"]));
        if let Some(d) = c["diff"].as_str().filter(|d| !d.is_empty()) {
            print!("{d}");
            if !d.ends_with('\n') {
                println!();
            }
        }
    }
}

pub async fn apply(a: ApplyArgs) -> anyhow::Result<i32> {
    let client = Client::from_args(&a.client)?;
    let yaml = read_file(&a.file)?;
    if a.dry_run {
        let v: Value = client
            .post(
                &format!("/api/v1/environments/{}/objects/dry-run", a.env),
                &json!({ "yaml": yaml }),
                &[],
            )
            .await?;
        if !output::structured(a.client.output, &v)? {
            print_changes(&v);
            println!("(server-side dry run: nothing changed)");
        }
        return Ok(exit::OK);
    }
    let action = submit(&client, "object.apply", &a.env, json!({ "yaml": yaml })).await?;
    finish_mutation(&client, action, a.wait.wait, a.client.output).await
}

/// The JSON merge patch (RFC 7386) that turns `from` into `to`.
fn merge_diff(from: &Value, to: &Value) -> Value {
    match (from, to) {
        (Value::Object(a), Value::Object(b)) => {
            let mut patch = Map::new();
            for (k, va) in a {
                match b.get(k) {
                    None => {
                        patch.insert(k.clone(), Value::Null);
                    }
                    Some(vb) if vb != va => {
                        patch.insert(k.clone(), merge_diff(va, vb));
                    }
                    Some(_) => {}
                }
            }
            for (k, vb) in b {
                if !a.contains_key(k) {
                    patch.insert(k.clone(), vb.clone());
                }
            }
            Value::Object(patch)
        }
        (_, to) => to.clone(),
    }
}

/// Opens the object in `$EDITOR` and returns the patch of what changed.
fn edit_in_editor(object: &Value) -> anyhow::Result<Option<Value>> {
    let mut shown = object.clone();
    if let Some(m) = shown.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    if let Some(m) = shown.as_object_mut() {
        m.remove("status");
    }
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".into());
    let dir = tempfile::Builder::new().prefix("pave-edit-").tempdir()?;
    let file = dir.path().join("object.yaml");
    std::fs::write(&file, yaml_serde::to_string(&shown)?)?;
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&file)
        .status()
        .with_context(|| format!("could not run the editor {editor:?}"))?;
    if !status.success() {
        bail!("the editor {editor:?} failed ({status}); nothing changed");
    }
    let edited: Value = yaml_serde::from_str(&std::fs::read_to_string(&file)?)
        .context("the edited object is not valid YAML; nothing changed")?;
    let patch = merge_diff(&shown, &edited);
    Ok((patch != json!({})).then_some(patch))
}

pub async fn edit(a: EditArgs) -> anyhow::Result<i32> {
    let client = Client::from_args(&a.client)?;
    let (kind, name) = named_ref(&a.object)?;
    let patch: Value = match &a.patch {
        Some(p) => serde_json::from_str(p).context("--patch is not JSON")?,
        None => {
            let v: Value = client
                .get(&format!("/api/v1/environments/{}/objects/{kind}/{name}", a.env))
                .await?;
            let Some(object) = v["items"].as_array().and_then(|i| i.first()) else {
                bail!("{kind}/{name} not found in {}", a.env);
            };
            match edit_in_editor(object)? {
                Some(p) => p,
                None => {
                    println!("no change");
                    return Ok(exit::OK);
                }
            }
        }
    };
    if !patch.is_object() {
        bail!("--patch must be a JSON object (a merge patch)");
    }
    let action = submit(
        &client,
        "object.patch",
        &a.env,
        json!({ "kind": kind, "name": name, "patch": patch }),
    )
    .await?;
    finish_mutation(&client, action, a.wait.wait, a.client.output).await
}

pub async fn delete(a: DeleteArgs) -> anyhow::Result<i32> {
    let client = Client::from_args(&a.client)?;
    let (kind, name) = named_ref(&a.object)?;
    let action = submit(
        &client,
        "object.delete",
        &a.env,
        json!({ "kind": kind, "name": name }),
    )
    .await?;
    finish_mutation(&client, action, a.wait.wait, a.client.output).await
}

/// Takes a Deployment under management (an action): its template becomes
/// revision 1 and nothing restarts.
pub async fn adopt(a: AdoptArgs) -> anyhow::Result<i32> {
    let client = Client::from_args(&a.client)?;
    let (kind, name) = named_ref(&a.object)?;
    if !matches!(
        kind.to_ascii_lowercase().as_str(),
        "deployment" | "deployments" | "deploy" | "deployment.apps"
    ) {
        bail!("pave adopts Deployments (deployment/NAME); {kind} is not one");
    }
    let action = submit(&client, "workload.adopt", &a.env, json!({ "name": name })).await?;
    finish_mutation(&client, action, a.wait.wait, a.client.output).await
}

/// Prints how the live Deployment differs from what pave applied; exits 1
/// when it drifted (like `diff`).
pub async fn diff(a: DiffArgs) -> anyhow::Result<i32> {
    let client = Client::from_args(&a.client)?;
    let v: Value = client
        .get(&format!(
            "/api/v1/environments/{}/workloads/{}/drift",
            a.env, a.name
        ))
        .await?;
    if !output::structured(a.client.output, &v)? {
        if v["missing"] == true {
            println!(
                "{}: the Deployment is gone (a deploy or rollback brings it back)",
                cell(&v["object"])
            );
        } else if v["drifted"] == true {
            print!("{}", v["diff"].as_str().unwrap_or_default());
            println!(
                "(a deploy applies revision {} again; `pave restart` rolls it out anew)",
                cell(&v["revision"])
            );
        } else {
            println!("{} matches revision {}", cell(&v["object"]), cell(&v["revision"]));
        }
    }
    Ok(if v["drifted"] == true { 1 } else { exit::OK })
}

/// A chart directory or archive here is uploaded; anything else is a
/// reference the agent resolves.
fn chart_source(chart: &str) -> anyhow::Result<Value> {
    let path = std::path::Path::new(chart);
    if path.is_dir() {
        let bytes =
            pave_kube::helm::package_dir(path).with_context(|| format!("could not package {chart}"))?;
        return Ok(
            json!({ "type": "archive", "base64": base64::engine::general_purpose::STANDARD.encode(bytes) }),
        );
    }
    if path.is_file() {
        let bytes = std::fs::read(path).with_context(|| format!("could not read {chart}"))?;
        return Ok(
            json!({ "type": "archive", "base64": base64::engine::general_purpose::STANDARD.encode(bytes) }),
        );
    }
    if chart.starts_with("./") || chart.starts_with('/') || chart.starts_with("../") {
        bail!("{chart} does not exist");
    }
    Ok(json!({ "type": "reference", "name": chart }))
}

async fn helm_install(a: HelmInstallArgs, upgrade: bool) -> anyhow::Result<i32> {
    let client = Client::from_args(&a.client)?;
    let mut values = Vec::new();
    for f in &a.values {
        values.push(read_file(f)?);
    }
    let mut secret_values = serde_json::Map::new();
    for s in &a.set_secret {
        let Some((path, secret)) = s.split_once('=') else {
            bail!("--set-secret {s}: expected PATH=SECRET");
        };
        secret_values.insert(path.to_string(), json!(secret));
    }
    let input = json!({
        "release": a.release,
        "chart": chart_source(&a.chart)?,
        "values": values,
        "set": a.set,
        "secret_values": secret_values,
        "wait": a.wait.wait,
        "timeout_secs": a.timeout.as_secs().max(1),
    });
    let kind = if upgrade { "helm.upgrade" } else { "helm.install" };
    let action = submit(&client, kind, &a.env, input).await?;
    finish_mutation(&client, action, a.wait.wait, a.client.output).await
}

fn print_release(r: &Value) {
    println!(
        "release {} · namespace {} · revision {} · {} · chart {} · app {} · updated {}",
        cell(&r["name"]),
        cell(&r["namespace"]),
        cell(&r["revision"]),
        cell(&r["status"]),
        cell(&r["chart"]),
        cell(&r["app_version"]),
        cell(&r["updated"])
    );
}

pub async fn helm(cmd: HelmCmd) -> anyhow::Result<i32> {
    match cmd {
        HelmCmd::Install(a) => helm_install(a, false).await,
        HelmCmd::Upgrade(a) => helm_install(a, true).await,
        HelmCmd::Rollback(a) => {
            let client = Client::from_args(&a.client)?;
            let input = json!({ "release": a.release, "revision": a.revision, "wait": a.wait.wait,
                "timeout_secs": a.timeout.as_secs().max(1) });
            let action = submit(&client, "helm.rollback", &a.env, input).await?;
            finish_mutation(&client, action, a.wait.wait, a.client.output).await
        }
        HelmCmd::Uninstall(a) => {
            let client = Client::from_args(&a.client)?;
            let input = json!({ "release": a.release, "wait": a.wait.wait,
                "timeout_secs": a.timeout.as_secs().max(1) });
            let action = submit(&client, "helm.uninstall", &a.env, input).await?;
            finish_mutation(&client, action, a.wait.wait, a.client.output).await
        }
        HelmCmd::Status(a) => {
            let client = Client::from_args(&a.client)?;
            let v: Value = client
                .get(&format!("/api/v1/environments/{}/helm/{}", a.env, a.release))
                .await?;
            if !output::structured(a.client.output, &v["release"])? {
                print_release(&v["release"]);
            }
            Ok(exit::OK)
        }
        HelmCmd::History(a) => {
            let client = Client::from_args(&a.client)?;
            let v: Value = client
                .get(&format!(
                    "/api/v1/environments/{}/helm/{}/history",
                    a.env, a.release
                ))
                .await?;
            let entries = v["history"].as_array().cloned().unwrap_or_default();
            if !output::structured(a.client.output, &entries)? {
                output::fields_table(
                    &entries,
                    &[
                        ("REVISION", "revision"),
                        ("UPDATED", "updated"),
                        ("STATUS", "status"),
                        ("CHART", "chart"),
                        ("APP VERSION", "app_version"),
                        ("DESCRIPTION", "description"),
                    ],
                );
            }
            Ok(exit::OK)
        }
        HelmCmd::List(a) => {
            let client = Client::from_args(&a.client)?;
            let v: Value = client
                .get(&format!("/api/v1/environments/{}/helm", a.env))
                .await?;
            let releases = v["releases"].as_array().cloned().unwrap_or_default();
            if !output::structured(a.client.output, &releases)? {
                output::fields_table(
                    &releases,
                    &[
                        ("NAME", "name"),
                        ("REVISION", "revision"),
                        ("STATUS", "status"),
                        ("CHART", "chart"),
                        ("APP VERSION", "app_version"),
                        ("UPDATED", "updated"),
                    ],
                );
            }
            Ok(exit::OK)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edit_becomes_the_merge_patch_of_what_changed() {
        let before =
            json!({"metadata": {"name": "x", "labels": {"a": "1", "b": "2"}}, "spec": {"replicas": 2}});
        let after =
            json!({"metadata": {"name": "x", "labels": {"a": "1", "c": "3"}}, "spec": {"replicas": 3}});
        assert_eq!(
            merge_diff(&before, &after),
            json!({"metadata": {"labels": {"b": null, "c": "3"}}, "spec": {"replicas": 3}})
        );
        assert_eq!(merge_diff(&before, &before), json!({}));
    }

    #[test]
    fn object_references() {
        assert_eq!(
            split_ref("deploy/web").unwrap(),
            ("deploy".into(), Some("web".into()))
        );
        assert_eq!(split_ref("configmaps").unwrap(), ("configmaps".into(), None));
        assert!(split_ref("a/b/c").is_err());
        assert!(named_ref("deployments").is_err());
    }
}
