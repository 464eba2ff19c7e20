//! Reads a kubeconfig for `pave targets add --kind kubernetes`: only the
//! context asked for (with its cluster and user) is kept, and the files it
//! refers to (CA, client certificate and key, token file) are inlined, so
//! that the server's vault holds everything and no path on this machine
//! matters later.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use base64::Engine as _;
use yaml_serde::{Mapping, Value};

fn get<'a>(m: &'a Value, key: &str) -> Option<&'a Value> {
    m.as_mapping().and_then(|m| m.get(key))
}

fn named<'a>(list: Option<&'a Value>, what: &str, name: &str) -> anyhow::Result<&'a Value> {
    list.and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .find(|e| get(e, "name").and_then(Value::as_str) == Some(name))
        .ok_or_else(|| anyhow!("the kubeconfig has no {what} named {name:?}"))
}

fn read(base: &Path, file: &str) -> anyhow::Result<Vec<u8>> {
    let path = if Path::new(file).is_absolute() {
        PathBuf::from(file)
    } else {
        base.join(file)
    };
    std::fs::read(&path)
        .with_context(|| format!("could not read {} (named in the kubeconfig)", path.display()))
}

/// Replaces `field` (a file path) in `m` by `field-data` (its base64 contents).
fn inline(m: &mut Mapping, base: &Path, field: &str, data_field: &str) -> anyhow::Result<()> {
    if let Some(Value::String(file)) = m.remove(field) {
        let bytes = read(base, &file)?;
        m.insert(
            Value::String(data_field.into()),
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
        );
    }
    Ok(())
}

/// The kubeconfig at `path` reduced to `context` (default: its current
/// one), self-contained. Returns the text and the context's name.
pub fn load(path: &Path, context: Option<&str>) -> anyhow::Result<(String, String)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("could not read {}", path.display()))?;
    let doc: Value = yaml_serde::from_str(&text)
        .with_context(|| format!("{} is not a kubeconfig (YAML)", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let context_name = match context {
        Some(c) => c.to_string(),
        None => get(&doc, "current-context")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| anyhow!("the kubeconfig has no current-context: pass --context NAME"))?
            .to_string(),
    };
    let ctx = named(get(&doc, "contexts"), "context", &context_name)?;
    let ctx_body = get(ctx, "context").ok_or_else(|| anyhow!("context {context_name:?} is empty"))?;
    let cluster_name = get(ctx_body, "cluster")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("context {context_name:?} names no cluster"))?;
    let user_name = get(ctx_body, "user").and_then(Value::as_str).unwrap_or_default();
    let mut cluster = named(get(&doc, "clusters"), "cluster", cluster_name)?.clone();
    if let Some(Value::Mapping(c)) = cluster.as_mapping_mut().and_then(|m| m.get_mut("cluster")) {
        inline(c, base, "certificate-authority", "certificate-authority-data")?;
    }
    let mut users = vec![];
    if !user_name.is_empty() {
        let mut user = named(get(&doc, "users"), "user", user_name)?.clone();
        if let Some(Value::Mapping(u)) = user.as_mapping_mut().and_then(|m| m.get_mut("user")) {
            inline(u, base, "client-certificate", "client-certificate-data")?;
            inline(u, base, "client-key", "client-key-data")?;
            if let Some(Value::String(file)) = u.remove("tokenFile") {
                let token = String::from_utf8(read(base, &file)?)
                    .map_err(|_| anyhow!("the token file {file} is not text"))?;
                u.insert(
                    Value::String("token".into()),
                    Value::String(token.trim().to_string()),
                );
            }
        }
        users.push(user);
    }
    let mut out = Mapping::new();
    let mut put = |k: &str, v: Value| {
        out.insert(Value::String(k.into()), v);
    };
    put("apiVersion", Value::String("v1".into()));
    put("kind", Value::String("Config".into()));
    put("current-context", Value::String(context_name.clone()));
    put("contexts", Value::Sequence(vec![ctx.clone()]));
    put("clusters", Value::Sequence(vec![cluster]));
    put("users", Value::Sequence(users));
    let text = yaml_serde::to_string(&Value::Mapping(out)).context("could not write the kubeconfig")?;
    if text.len() > 256 * 1024 {
        bail!("the kubeconfig is larger than 256 KiB");
    }
    Ok((text, context_name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_one_context_and_inlines_its_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), "CA").unwrap();
        std::fs::write(dir.path().join("token"), "tok\n").unwrap();
        let config = r#"
apiVersion: v1
kind: Config
current-context: dev
contexts:
- name: dev
  context: {cluster: dev, user: admin}
- name: prod
  context: {cluster: prod, user: root}
clusters:
- name: dev
  cluster: {server: "https://127.0.0.1:6443", certificate-authority: ca.crt}
- name: prod
  cluster: {server: "https://prod:6443"}
users:
- name: admin
  user: {tokenFile: token}
- name: root
  user: {token: prod-secret}
"#;
        let path = dir.path().join("config");
        std::fs::write(&path, config).unwrap();
        let (text, ctx) = load(&path, None).unwrap();
        assert_eq!(ctx, "dev");
        assert!(!text.contains("prod"), "{text}");
        assert!(text.contains("certificate-authority-data: Q0E="), "{text}");
        assert!(text.contains("token: tok"), "{text}");
        let kc = kube::config::Kubeconfig::from_yaml(&text).unwrap();
        assert_eq!(kc.current_context.as_deref(), Some("dev"));
        assert!(load(&path, Some("staging"))
            .unwrap_err()
            .to_string()
            .contains("staging"));
    }
}
