//! Generic operations on any kind the API server serves: get, server-side
//! apply of a (multi-document) manifest, JSON merge patch, delete, and the
//! restore that undoes each of them.
//!
//! # Why dynamic
//!
//! The typed `Api<Deployment>` of the rest of this crate knows a fixed list of
//! kinds at compile time. Here the kind comes from a user (`deploy/web`,
//! `cm`, `certificates.cert-manager.io/x`) or from a manifest, so every call
//! goes through kube-rs's dynamic API: [`Api<DynamicObject>`] over an
//! [`ApiResource`] that API discovery produced. Custom resources work the
//! same way as built-ins, and only what the server really serves resolves.
//!
//! Discovery costs two requests: `GET /api/v1` (the core group has only `v1`)
//! and `GET /apis` with the aggregated-discovery `Accept` header (beta and on
//! by default since 1.27, so on every supported cluster), which lists every
//! group, version and resource in one answer, with singular and short names.
//! kube's [`kube::discovery::Discovery`] drops the short names, so the
//! answers are read here. A server without aggregated discovery answers the
//! legacy group list and each group's preferred version is read, one request
//! a group. [`Objects`] caches the result; a kind it does not know makes it
//! discover once more (a CRD installed since) before giving up.
//!
//! # Why before-states
//!
//! Each call is one step of an action in pave's engine, and a step's rollback
//! is its before-state. So every write first reads the live object and
//! returns a [`Change`] with `before` (the live object, `None` when it did not
//! exist) and `after` (the API server's answer), plus a readable diff.
//! [`restore`] puts `before` back: it deletes an object the change created,
//! re-creates (POST) one it deleted, and replaces (PUT, with the live
//! `resourceVersion`) one it modified. A replace, unlike a server-side apply,
//! also removes what the change added (a label set by a merge patch). The
//! restore sends the before-state's `managedFields` too, so field ownership
//! goes back to what it was and a later apply by `pave` does not conflict with
//! a `pave` *Update* entry that the restore itself would otherwise create.
//!
//! # Scope
//!
//! Writes stay in one namespace, the environment's: [`apply`] refuses
//! cluster-scoped kinds and documents of another namespace, and checks every
//! document (structure, namespace, kind, scope, duplicates) before it sends
//! any write. If the API server refuses a later document, the objects already
//! applied in that call are restored and the error says so. Reads ([`get`])
//! may name cluster-scoped kinds.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, Preconditions,
    ValidationDirective,
};
use kube::core::discovery::v2::APIGroupDiscoveryList;
use kube::Client;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{self, is_not_found, KubeError, Result};
use crate::FIELD_MANAGER;

/// The annotation `kubectl apply` (client-side) keeps; noise in a diff.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// How many times [`restore`] re-reads and retries when the object changed
/// between its read and its write (409 Conflict).
const RESTORE_ATTEMPTS: usize = 3;

/// Short names of common kinds, used only when discovery lists none for a
/// resource (every real API server does list them): `(short, plural, group)`.
const SHORT_NAMES: &[(&str, &str, &str)] = &[
    ("deploy", "deployments", "apps"),
    ("sts", "statefulsets", "apps"),
    ("ds", "daemonsets", "apps"),
    ("rs", "replicasets", "apps"),
    ("cm", "configmaps", ""),
    ("svc", "services", ""),
    ("po", "pods", ""),
    ("ns", "namespaces", ""),
    ("pvc", "persistentvolumeclaims", ""),
    ("sa", "serviceaccounts", ""),
    ("secret", "secrets", ""),
    ("ing", "ingresses", "networking.k8s.io"),
    ("netpol", "networkpolicies", "networking.k8s.io"),
    ("cj", "cronjobs", "batch"),
    ("hpa", "horizontalpodautoscalers", "autoscaling"),
    ("pdb", "poddisruptionbudgets", "policy"),
];

// ---------------------------------------------------------------------------
// References and names

/// `KIND` or `KIND/NAME` as a user writes it: `deployment/payments`,
/// `deployments`, `deploy/x`, `Deployment/x`, `deployment.apps/x`, `cm/x`.
/// The kind is resolved later, against discovery ([`resolve`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    /// The kind as written: a kind, plural, singular or short name, optionally
    /// qualified by a group (`deployment.apps`) or version and group
    /// (`deployments.v1.apps`).
    pub kind: String,
    /// The object's name; `None` for "all of this kind".
    pub name: Option<String>,
}

impl ObjectRef {
    /// Parses `KIND` or `KIND/NAME`; the name must be a DNS subdomain
    /// (lowercase letters, digits, `-` and `.`, at most 253 characters).
    pub fn parse(text: &str) -> Result<ObjectRef> {
        let t = text.trim();
        if t.is_empty() {
            return Err(invalid(
                "empty object reference: expected KIND or KIND/NAME, e.g. deployment/web",
            ));
        }
        let (kind, name) = match t.split_once('/') {
            Some((kind, name)) => (kind, Some(name)),
            None => (t, None),
        };
        check_kind(kind).map_err(|e| invalid(format!("object reference {t:?}: {e}")))?;
        if let Some(name) = name {
            check_name(name).map_err(|e| invalid(format!("object reference {t:?}: {e}")))?;
        }
        Ok(ObjectRef {
            kind: kind.to_string(),
            name: name.map(str::to_string),
        })
    }
}

impl FromStr for ObjectRef {
    type Err = KubeError;

    fn from_str(s: &str) -> Result<Self> {
        ObjectRef::parse(s)
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{}/{name}", self.kind),
            None => f.write_str(&self.kind),
        }
    }
}

fn invalid(msg: impl Into<String>) -> KubeError {
    KubeError::Invalid(msg.into())
}

/// A kind as typed: letters, digits, `-` and `.` between the parts.
fn check_kind(kind: &str) -> std::result::Result<(), String> {
    if kind.is_empty() {
        return Err("the kind is empty".into());
    }
    if kind.len() > 253 {
        return Err(format!("kind {kind:?} is too long"));
    }
    if !kind
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        || kind.split('.').any(str::is_empty)
    {
        return Err(format!(
            "kind {kind:?} is malformed (letters, digits, '-', and '.' between a name and its group)"
        ));
    }
    Ok(())
}

/// A DNS subdomain (RFC 1123): what nearly every kind accepts as a name.
fn check_name(name: &str) -> std::result::Result<(), String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.is_empty() {
        Err("the name is empty".into())
    } else if name.len() > 253 {
        Err(format!("name {name:?} is longer than 253 characters"))
    } else if !ok_chars || !ends_ok(name.chars().next()) || !ends_ok(name.chars().last()) {
        Err(format!(
            "name {name:?} is not a DNS subdomain (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)"
        ))
    } else {
        Ok(())
    }
}

/// A namespace name: a DNS label (RFC 1123).
fn check_namespace(namespace: &str) -> Result<()> {
    let ok = !namespace.is_empty()
        && namespace.len() <= 63
        && namespace
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !namespace.starts_with('-')
        && !namespace.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "namespace {namespace:?} is not a DNS label (lowercase letters, digits and '-', at most 63)"
        )))
    }
}

// ---------------------------------------------------------------------------
// Discovery

/// A kind the API server serves, as discovery described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Group, version, `apiVersion`, kind and plural: what [`Api::namespaced_with`] needs.
    pub resource: ApiResource,
    /// Whether objects of the kind live in a namespace (else cluster-scoped).
    pub namespaced: bool,
    /// The verbs the resource supports (`get`, `list`, `patch`, …).
    pub verbs: Vec<String>,
}

impl Resolved {
    /// Whether the resource supports `verb`.
    pub fn supports(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }

    /// `Deployment pave-demo/web`, or `Namespace pave-demo` for a cluster-scoped kind.
    pub fn describe(&self, namespace: &str, name: &str) -> String {
        if self.namespaced {
            format!("{} {namespace}/{name}", self.resource.kind)
        } else {
            format!("{} {name}", self.resource.kind)
        }
    }

    fn api(&self, client: &Client, namespace: &str) -> Api<DynamicObject> {
        if self.namespaced {
            Api::namespaced_with(client.clone(), namespace, &self.resource)
        } else {
            Api::all_with(client.clone(), &self.resource)
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    resolved: Resolved,
    singular: String,
    short_names: Vec<String>,
}

impl Entry {
    fn group(&self) -> &str {
        &self.resolved.resource.group
    }

    fn names(&self, q: &str) -> bool {
        let r = &self.resolved.resource;
        r.plural == q || self.singular == q || r.kind.eq_ignore_ascii_case(q)
    }

    fn short(&self, q: &str) -> bool {
        self.short_names.iter().any(|s| s == q)
    }
}

/// Everything discovery found, in priority order (core first, then the groups
/// in the server's order, each group's versions preferred first).
#[derive(Debug, Default)]
struct Catalog {
    entries: Vec<Entry>,
    /// Whether `/apis` answered with aggregated discovery (all versions known).
    aggregated: bool,
}

impl Catalog {
    /// The entry a typed kind names, the way kubectl picks: an exact
    /// resource, singular or kind name first, then a short name; the first
    /// match in priority order.
    fn find(&self, kind: &str) -> Option<&Entry> {
        let q = kind.to_ascii_lowercase();
        let candidates: Vec<(&str, Option<&str>, Option<&str>)> = match q.split_once('.') {
            None => vec![(q.as_str(), None, None)],
            Some((name, rest)) => {
                let mut c = vec![(name, Some(rest), None)];
                if let Some((version, group)) = rest.split_once('.') {
                    c.push((name, Some(group), Some(version)));
                }
                c
            }
        };
        for (name, group, version) in candidates {
            let scoped = |e: &&Entry| {
                group.is_none_or(|g| e.group() == g)
                    && version.is_none_or(|v| e.resolved.resource.version == v)
            };
            let found = self
                .entries
                .iter()
                .filter(scoped)
                .find(|e| e.names(name))
                .or_else(|| self.entries.iter().filter(scoped).find(|e| e.short(name)))
                .or_else(|| {
                    let (_, plural, g) = SHORT_NAMES.iter().find(|(s, _, _)| *s == name)?;
                    self.entries
                        .iter()
                        .filter(scoped)
                        .find(|e| e.group() == *g && e.resolved.resource.plural == *plural)
                });
            if found.is_some() {
                return found;
            }
        }
        None
    }

    fn find_gvk(&self, api_version: &str, kind: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.resolved.resource.api_version == api_version && e.resolved.resource.kind == kind)
    }
}

fn split_group_version(gv: &str) -> (String, String) {
    match gv.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), gv.to_string()),
    }
}

fn api_version_of(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// The resources of a legacy `APIResourceList` (no subresources).
fn legacy_entries(list: &APIResourceList) -> Vec<Entry> {
    let (group, version) = split_group_version(&list.group_version);
    list.resources
        .iter()
        .filter(|r| !r.name.contains('/'))
        .map(|r| {
            let group = r
                .group
                .clone()
                .filter(|g| !g.is_empty())
                .unwrap_or_else(|| group.clone());
            let version = r
                .version
                .clone()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| version.clone());
            Entry {
                resolved: Resolved {
                    resource: ApiResource {
                        api_version: api_version_of(&group, &version),
                        group,
                        version,
                        kind: r.kind.clone(),
                        plural: r.name.clone(),
                    },
                    namespaced: r.namespaced,
                    verbs: r.verbs.clone(),
                },
                singular: if r.singular_name.is_empty() {
                    r.kind.to_ascii_lowercase()
                } else {
                    r.singular_name.clone()
                },
                short_names: r.short_names.clone().unwrap_or_default(),
            }
        })
        .collect()
}

/// The resources of an aggregated-discovery answer.
fn aggregated_entries(list: APIGroupDiscoveryList) -> Vec<Entry> {
    let mut out = Vec::new();
    for g in list.items {
        let group = g.metadata.and_then(|m| m.name).unwrap_or_default();
        for v in g.versions {
            let Some(version) = v.version else { continue };
            for r in v.resources {
                let Some(plural) = r.resource else { continue };
                let Some(kind) = r.response_kind.and_then(|k| k.kind).filter(|k| !k.is_empty()) else {
                    continue;
                };
                out.push(Entry {
                    resolved: Resolved {
                        resource: ApiResource {
                            group: group.clone(),
                            version: version.clone(),
                            api_version: api_version_of(&group, &version),
                            kind: kind.clone(),
                            plural,
                        },
                        namespaced: r.scope.as_deref() == Some("Namespaced"),
                        verbs: r.verbs,
                    },
                    singular: r
                        .singular_resource
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| kind.to_ascii_lowercase()),
                    short_names: r.short_names,
                });
            }
        }
    }
    out
}

async fn discover(client: &Client) -> Result<Catalog> {
    let core = client
        .list_core_api_resources("v1")
        .await
        .map_err(|e| error::api("discover", "the core API group (/api/v1)", e))?;
    let mut entries = legacy_entries(&core);
    let groups = client
        .list_api_groups_aggregated()
        .await
        .map_err(|e| error::api("discover", "the API groups (/apis)", e))?;
    if !groups.items.is_empty() {
        entries.extend(aggregated_entries(groups));
        return Ok(Catalog {
            entries,
            aggregated: true,
        });
    }
    // No aggregated discovery: the legacy list, then each group's preferred version.
    tracing::debug!("no aggregated discovery: reading each API group");
    let legacy = client
        .list_api_groups()
        .await
        .map_err(|e| error::api("discover", "the API groups (/apis)", e))?;
    let versions: Vec<String> = legacy
        .groups
        .iter()
        .filter_map(|g| {
            g.preferred_version
                .as_ref()
                .map(|p| p.group_version.clone())
                .or_else(|| g.versions.first().map(|v| v.group_version.clone()))
        })
        .collect();
    let lists =
        futures::future::join_all(versions.iter().map(|gv| client.list_api_group_resources(gv))).await;
    for (gv, list) in versions.iter().zip(lists) {
        match list {
            Ok(list) => entries.extend(legacy_entries(&list)),
            // An unavailable aggregated API (metrics-server down) must not hide the others.
            Err(e) => tracing::warn!(group_version = %gv, error = %e, "discovery of an API group failed"),
        }
    }
    Ok(Catalog {
        entries,
        aggregated: false,
    })
}

// ---------------------------------------------------------------------------
// Changes

/// One object's change by a write, and what undoes it ([`restore`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// `Deployment pave-demo/web`.
    pub object: String,
    /// `apps/v1`.
    pub api_version: String,
    /// `Deployment`.
    pub kind: String,
    /// The namespace.
    pub namespace: String,
    /// The object's name.
    pub name: String,
    /// The live object before the write (`None`: it did not exist). Complete,
    /// `managedFields` included: it is what a restore puts back.
    pub before: Option<Value>,
    /// The API server's answer to the write (`None`: deleted).
    pub after: Option<Value>,
    /// Unified diff of the YAML of `before` and `after` without the noise
    /// (status, managedFields, resourceVersion, uid, generation,
    /// creationTimestamp, the last-applied annotation); empty when equal.
    pub diff: String,
}

impl Change {
    fn new(
        resolved: &Resolved,
        namespace: &str,
        name: &str,
        before: Option<Value>,
        after: Option<Value>,
    ) -> Self {
        let object = resolved.describe(namespace, name);
        let diff = diff(&object, before.as_ref(), after.as_ref());
        Change {
            object,
            api_version: resolved.resource.api_version.clone(),
            kind: resolved.resource.kind.clone(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            before,
            after,
            diff,
        }
    }

    /// Whether the write changed anything but noise.
    pub fn is_noop(&self) -> bool {
        self.diff.is_empty()
    }
}

fn metadata_mut(v: &mut Value) -> Option<&mut serde_json::Map<String, Value>> {
    v.get_mut("metadata").and_then(Value::as_object_mut)
}

/// The object without `metadata.managedFields` (for display).
fn without_managed_fields(mut v: Value) -> Value {
    if let Some(m) = metadata_mut(&mut v) {
        m.remove("managedFields");
    }
    v
}

/// What a diff shows: the object without the server's bookkeeping and status.
fn diffable(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    if let Some(m) = metadata_mut(&mut v) {
        for key in [
            "managedFields",
            "resourceVersion",
            "generation",
            "uid",
            "creationTimestamp",
            "selfLink",
        ] {
            m.remove(key);
        }
        let empty = match m.get_mut("annotations").and_then(Value::as_object_mut) {
            Some(a) => {
                a.remove(LAST_APPLIED);
                a.is_empty()
            }
            None => false,
        };
        if empty {
            m.remove("annotations");
        }
    }
    v
}

/// What a restore writes: the before-state without what the server sets.
/// `managedFields` stay (ownership goes back too).
fn restorable(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    if let Some(m) = metadata_mut(&mut v) {
        for key in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "selfLink",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            m.remove(key);
        }
    }
    v
}

fn to_yaml(v: &Value) -> String {
    yaml_serde::to_string(v)
        .or_else(|_| serde_json::to_string_pretty(v).map(|s| s + "\n"))
        .unwrap_or_default()
}

fn diff(object: &str, before: Option<&Value>, after: Option<&Value>) -> String {
    let a = before.map(|v| to_yaml(&diffable(v))).unwrap_or_default();
    let b = after.map(|v| to_yaml(&diffable(v))).unwrap_or_default();
    if a == b {
        return String::new();
    }
    let old = if before.is_some() {
        format!("{object} (before)")
    } else {
        format!("{object} (absent)")
    };
    let new = if after.is_some() {
        format!("{object} (after)")
    } else {
        format!("{object} (deleted)")
    };
    similar::TextDiff::from_lines(&a, &b)
        .unified_diff()
        .context_radius(3)
        .header(&old, &new)
        .to_string()
}

fn to_json(object: &str, o: &DynamicObject) -> Result<Value> {
    serde_json::to_value(o).map_err(|e| invalid(format!("{object}: cannot encode the object: {e}")))
}

fn to_dynamic(object: &str, v: Value) -> Result<DynamicObject> {
    serde_json::from_value(v).map_err(|e| invalid(format!("{object}: not a Kubernetes object: {e}")))
}

/// A get or delete of a missing object: [`KubeError::NotFound`] with the server's message.
fn not_found_or(action: &'static str, object: &str, err: kube::Error) -> KubeError {
    match err {
        kube::Error::Api(s) if s.code == 404 => KubeError::NotFound(format!("{object} ({})", s.message)),
        e => error::api(action, object, e),
    }
}

/// Adds `note` to an error's message (the API server's message stays, first).
fn with_note(err: KubeError, note: &str) -> KubeError {
    match err {
        KubeError::Api {
            action,
            object,
            mut status,
        } => {
            status.message = format!("{}; {note}", status.message);
            KubeError::Api {
                action,
                object,
                status,
            }
        }
        KubeError::Invalid(m) => KubeError::Invalid(format!("{m}; {note}")),
        KubeError::NotFound(m) => KubeError::NotFound(format!("{m}; {note}")),
        other => {
            tracing::warn!(error = %other, "{note}");
            other
        }
    }
}

// ---------------------------------------------------------------------------
// Manifests

/// One object of a manifest, checked, before discovery.
struct Document {
    /// `document 2` (or `document 2, item 1` in a `List`).
    label: String,
    value: Value,
    api_version: String,
    kind: String,
    name: String,
}

/// The objects of a (multi-document) YAML or JSON text; empty documents are
/// skipped, a `List` or a top-level array gives its items.
fn parse_documents(text: &str) -> Result<Vec<(String, Value)>> {
    let mut out = Vec::new();
    for (i, doc) in yaml_serde::Deserializer::from_str(text).enumerate() {
        let label = format!("document {}", i + 1);
        let value =
            Value::deserialize(doc).map_err(|e| invalid(format!("{label}: not YAML or JSON: {e}")))?;
        let items = match &value {
            Value::Null => continue,
            Value::Array(items) => Some(items.clone()),
            Value::Object(o) if o.get("kind").and_then(Value::as_str) == Some("List") => {
                match o.get("items") {
                    Some(Value::Array(items)) => Some(items.clone()),
                    Some(Value::Null) | None => Some(Vec::new()),
                    Some(_) => return Err(invalid(format!("{label}: a List's items must be a list"))),
                }
            }
            _ => None,
        };
        match items {
            Some(items) => {
                for (j, item) in items.into_iter().enumerate() {
                    out.push((format!("{label}, item {}", j + 1), item));
                }
            }
            None => out.push((label, value)),
        }
    }
    Ok(out)
}

/// The checks that need no request: shape, name, namespace (set when absent).
fn check_document(label: String, mut value: Value, namespace: &str) -> Result<Document> {
    let Some(o) = value.as_object_mut() else {
        return Err(invalid(format!(
            "{label}: not an object (a mapping with apiVersion, kind, metadata)"
        )));
    };
    let text = |o: &serde_json::Map<String, Value>, key: &str| {
        o.get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string)
    };
    let api_version =
        text(o, "apiVersion").ok_or_else(|| invalid(format!("{label}: apiVersion is missing")))?;
    let kind = text(o, "kind").ok_or_else(|| invalid(format!("{label}: kind is missing")))?;
    let meta = o
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()))
        .as_object_mut()
        .ok_or_else(|| invalid(format!("{label} ({kind}): metadata is not a mapping")))?;
    let name =
        text(meta, "name").ok_or_else(|| invalid(format!("{label} ({kind}): metadata.name is missing")))?;
    check_name(&name).map_err(|e| invalid(format!("{label} ({kind}): {e}")))?;
    match meta.get("namespace") {
        None | Some(Value::Null) => {
            meta.insert("namespace".into(), Value::String(namespace.to_string()));
        }
        Some(Value::String(ns)) if ns == namespace => {}
        Some(other) => {
            let ns = other
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| other.to_string());
            return Err(invalid(format!(
                "{label} ({kind} {name}): its namespace {ns:?} is not the environment's namespace {namespace:?}"
            )));
        }
    }
    Ok(Document {
        label,
        value,
        api_version,
        kind,
        name,
    })
}

// ---------------------------------------------------------------------------
// Operations

/// Generic object operations over one client, with a discovery cache. Cheap
/// to clone (the cache is shared).
#[derive(Clone)]
pub struct Objects {
    client: Client,
    cache: Arc<Mutex<Option<Arc<Catalog>>>>,
}

impl fmt::Debug for Objects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Objects").finish_non_exhaustive()
    }
}

impl Objects {
    /// Operations over `client`; discovery runs on first use.
    pub fn new(client: Client) -> Self {
        Objects {
            client,
            cache: Arc::new(Mutex::new(None)),
        }
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Forgets what discovery found (the next resolution discovers again).
    pub fn invalidate(&self) {
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The catalog, and whether it was discovered just now.
    async fn catalog(&self, refresh: bool) -> Result<(Arc<Catalog>, bool)> {
        if !refresh {
            if let Some(c) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).clone() {
                return Ok((c, false));
            }
        }
        let catalog = Arc::new(discover(&self.client).await?);
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = Some(catalog.clone());
        Ok((catalog, true))
    }

    /// The resource a typed kind names (see [`resolve`]).
    pub async fn resolve(&self, kind: &str) -> Result<Resolved> {
        check_kind(kind).map_err(invalid)?;
        let (catalog, fresh) = self.catalog(false).await?;
        if let Some(e) = catalog.find(kind) {
            return Ok(e.resolved.clone());
        }
        if !fresh {
            let (catalog, _) = self.catalog(true).await?;
            if let Some(e) = catalog.find(kind) {
                return Ok(e.resolved.clone());
            }
        }
        Err(invalid(format!(
            "kind {kind:?} is not served by the API server (no resource, kind, singular or short name of that name in discovery)"
        )))
    }

    /// The resource of `apiVersion` + `kind` as a manifest writes them.
    pub async fn resolve_gvk(&self, api_version: &str, kind: &str) -> Result<Resolved> {
        let (catalog, fresh) = self.catalog(false).await?;
        if let Some(e) = catalog.find_gvk(api_version, kind) {
            return Ok(e.resolved.clone());
        }
        let catalog = if fresh {
            catalog
        } else {
            self.catalog(true).await?.0
        };
        if let Some(e) = catalog.find_gvk(api_version, kind) {
            return Ok(e.resolved.clone());
        }
        if !catalog.aggregated {
            // Legacy discovery read preferred versions only: ask for this one.
            let (group, _) = split_group_version(api_version);
            let list = if group.is_empty() {
                self.client.list_core_api_resources(api_version).await
            } else {
                self.client.list_api_group_resources(api_version).await
            };
            match list {
                Ok(list) => {
                    if let Some(e) = legacy_entries(&list)
                        .into_iter()
                        .find(|e| e.resolved.resource.kind == kind)
                    {
                        return Ok(e.resolved);
                    }
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(error::api("discover", format!("API version {api_version}"), e)),
            }
        }
        Err(invalid(format!(
            "kind {kind} of apiVersion {api_version} is not served by the API server"
        )))
    }

    /// A resolved kind that writes may touch: namespaced.
    async fn resolve_namespaced(&self, kind: &str, namespace: &str, name: &str) -> Result<Resolved> {
        let r = self.resolve(kind).await?;
        refuse_cluster_scoped(&r, namespace, name, "")?;
        Ok(r)
    }

    /// See [`get`].
    pub async fn get(&self, namespace: &str, kind: &str, name: Option<&str>) -> Result<Vec<Value>> {
        let r = self.resolve(kind).await?;
        if r.namespaced {
            check_namespace(namespace)?;
        }
        let api = r.api(&self.client, namespace);
        match name {
            Some(name) => {
                check_name(name).map_err(invalid)?;
                let object = r.describe(namespace, name);
                let o = api.get(name).await.map_err(|e| not_found_or("get", &object, e))?;
                Ok(vec![without_managed_fields(to_json(&object, &o)?)])
            }
            None => {
                let what = if r.namespaced {
                    format!("{} in namespace {namespace}", r.resource.plural)
                } else {
                    r.resource.plural.clone()
                };
                let list = api
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| error::api("list", &what, e))?;
                list.items
                    .iter()
                    .map(|o| {
                        let mut v = to_json(&what, o)?;
                        // List items carry no apiVersion/kind; put them back for display.
                        if let Some(m) = v.as_object_mut() {
                            m.entry("apiVersion")
                                .or_insert_with(|| Value::String(r.resource.api_version.clone()));
                            m.entry("kind")
                                .or_insert_with(|| Value::String(r.resource.kind.clone()));
                        }
                        Ok(without_managed_fields(v))
                    })
                    .collect()
            }
        }
    }

    /// See [`apply`].
    pub async fn apply(&self, namespace: &str, yaml_text: &str, dry_run: bool) -> Result<Vec<Change>> {
        check_namespace(namespace)?;
        let mut docs = Vec::new();
        for (label, value) in parse_documents(yaml_text)? {
            docs.push(check_document(label, value, namespace)?);
        }
        if docs.is_empty() {
            return Err(invalid("the manifest holds no object"));
        }
        let mut resolved = Vec::with_capacity(docs.len());
        let mut seen = BTreeSet::new();
        for d in &docs {
            let r = self
                .resolve_gvk(&d.api_version, &d.kind)
                .await
                .map_err(|e| match e {
                    KubeError::Invalid(m) => invalid(format!("{}: {m}", d.label)),
                    e => with_note(e, &format!("while checking {}", d.label)),
                })?;
            refuse_cluster_scoped(&r, namespace, &d.name, &format!("{}: ", d.label))?;
            if !seen.insert((r.resource.group.clone(), r.resource.kind.clone(), d.name.clone())) {
                return Err(invalid(format!(
                    "{}: {} appears twice in the manifest",
                    d.label,
                    r.describe(namespace, &d.name)
                )));
            }
            resolved.push(r);
        }

        let mut changes: Vec<Change> = Vec::with_capacity(docs.len());
        for (d, r) in docs.iter().zip(&resolved) {
            match self.apply_one(namespace, d, r, dry_run).await {
                Ok(c) => changes.push(c),
                Err(e) if dry_run || changes.is_empty() => return Err(e),
                Err(e) => return Err(self.undo(e, &changes).await),
            }
        }
        Ok(changes)
    }

    /// Restores `applied` (newest first) after `err`, and says so in the error.
    async fn undo(&self, err: KubeError, applied: &[Change]) -> KubeError {
        let mut failed = Vec::new();
        for c in applied.iter().rev() {
            if let Err(e) = self.restore(c).await {
                failed.push(format!("{}: {e}", c.object));
            }
        }
        let objects: Vec<&str> = applied.iter().map(|c| c.object.as_str()).collect();
        let note = if failed.is_empty() {
            format!(
                "nothing of this manifest stays applied: pave restored {}",
                objects.join(", ")
            )
        } else {
            format!(
                "pave applied {} before this and could not restore all of it: {}",
                objects.join(", "),
                failed.join("; ")
            )
        };
        with_note(err, &note)
    }

    async fn apply_one(&self, namespace: &str, d: &Document, r: &Resolved, dry_run: bool) -> Result<Change> {
        let object = r.describe(namespace, &d.name);
        let api = r.api(&self.client, namespace);
        let before = api
            .get_opt(&d.name)
            .await
            .map_err(|e| error::api("get", &object, e))?
            .map(|o| to_json(&object, &o))
            .transpose()?;
        let mut params = PatchParams::apply(FIELD_MANAGER);
        params.dry_run = dry_run;
        params.field_validation = Some(ValidationDirective::Strict);
        tracing::info!(object = %object, dry_run, "server-side apply");
        let after = api
            .patch(&d.name, &params, &Patch::Apply(&d.value))
            .await
            .map_err(|e| error::api("apply", &object, e))?;
        let after = to_json(&object, &after)?;
        Ok(Change::new(r, namespace, &d.name, before, Some(after)))
    }

    /// See [`merge_patch`].
    pub async fn merge_patch(
        &self,
        namespace: &str,
        kind: &str,
        name: &str,
        patch: &Value,
        dry_run: bool,
    ) -> Result<Change> {
        check_namespace(namespace)?;
        check_name(name).map_err(invalid)?;
        if !patch.is_object() {
            return Err(invalid("a merge patch must be an object (a JSON/YAML mapping)"));
        }
        let r = self.resolve_namespaced(kind, namespace, name).await?;
        let object = r.describe(namespace, name);
        let api = r.api(&self.client, namespace);
        let before = api.get(name).await.map_err(|e| not_found_or("get", &object, e))?;
        let before = to_json(&object, &before)?;
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            dry_run,
            ..PatchParams::default()
        };
        tracing::info!(object = %object, dry_run, "merge patch");
        let after = api
            .patch(name, &params, &Patch::Merge(patch))
            .await
            .map_err(|e| not_found_or("patch", &object, e))?;
        let after = to_json(&object, &after)?;
        Ok(Change::new(&r, namespace, name, Some(before), Some(after)))
    }

    /// See [`delete`].
    pub async fn delete(&self, namespace: &str, kind: &str, name: &str) -> Result<Change> {
        check_namespace(namespace)?;
        check_name(name).map_err(invalid)?;
        let r = self.resolve_namespaced(kind, namespace, name).await?;
        let object = r.describe(namespace, name);
        let api = r.api(&self.client, namespace);
        let before = api.get(name).await.map_err(|e| not_found_or("get", &object, e))?;
        // Delete exactly the object read (its before-state is the rollback).
        let params = DeleteParams {
            preconditions: before.metadata.uid.clone().map(|uid| Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let before = to_json(&object, &before)?;
        tracing::info!(object = %object, "delete");
        api.delete(name, &params)
            .await
            .map_err(|e| not_found_or("delete", &object, e))?;
        Ok(Change::new(&r, namespace, name, Some(before), None))
    }

    /// See [`restore`].
    pub async fn restore(&self, change: &Change) -> Result<()> {
        check_namespace(&change.namespace)?;
        check_name(&change.name).map_err(invalid)?;
        let r = self.resolve_gvk(&change.api_version, &change.kind).await?;
        refuse_cluster_scoped(&r, &change.namespace, &change.name, "restore: ")?;
        let object = r.describe(&change.namespace, &change.name);
        let api = r.api(&self.client, &change.namespace);

        let Some(before) = &change.before else {
            // The change created the object: delete it (the one it created, when known).
            let uid = change
                .after
                .as_ref()
                .and_then(|a| a.pointer("/metadata/uid"))
                .and_then(Value::as_str)
                .map(str::to_string);
            let params = DeleteParams {
                preconditions: uid.map(|uid| Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            tracing::info!(object = %object, "restore: delete what the change created");
            return match api.delete(&change.name, &params).await {
                Ok(_) => Ok(()),
                Err(e) if is_not_found(&e) => Ok(()),
                Err(e) => Err(error::api("restore (delete)", &object, e)),
            };
        };

        let named = before.pointer("/metadata/name").and_then(Value::as_str);
        let in_ns = before.pointer("/metadata/namespace").and_then(Value::as_str);
        if named != Some(change.name.as_str()) || in_ns.is_some_and(|ns| ns != change.namespace) {
            return Err(invalid(format!(
                "restore {object}: the recorded before-state is of another object"
            )));
        }
        let mut desired = restorable(before);
        if let Some(o) = desired.as_object_mut() {
            o.insert("apiVersion".into(), Value::String(r.resource.api_version.clone()));
            o.insert("kind".into(), Value::String(r.resource.kind.clone()));
        }
        let params = PostParams {
            dry_run: false,
            field_manager: Some(FIELD_MANAGER.to_string()),
        };
        let mut last = None;
        for _ in 0..RESTORE_ATTEMPTS {
            let live = api
                .get_opt(&change.name)
                .await
                .map_err(|e| error::api("restore (get)", &object, e))?;
            let result = match live {
                None => {
                    tracing::info!(object = %object, "restore: re-create");
                    api.create(&params, &to_dynamic(&object, desired.clone())?)
                        .await
                        .map_err(|e| ("restore (create)", e))
                }
                Some(live) if live.metadata.deletion_timestamp.is_some() => {
                    return Err(invalid(format!(
                        "restore {object}: the object is still being deleted (finalizers {:?}); restore again once it is gone",
                        live.metadata.finalizers.unwrap_or_default()
                    )));
                }
                Some(live) => {
                    let mut body = to_dynamic(&object, desired.clone())?;
                    body.metadata.resource_version = live.metadata.resource_version;
                    tracing::info!(object = %object, "restore: replace");
                    api.replace(&change.name, &params, &body)
                        .await
                        .map_err(|e| ("restore (replace)", e))
                }
            };
            match result {
                Ok(_) => return Ok(()),
                // Changed (or re-created) meanwhile: read again and retry.
                Err((action, kube::Error::Api(s))) if s.code == 409 => {
                    last = Some(error::api(action, &object, kube::Error::Api(s)));
                }
                Err((action, e)) => return Err(error::api(action, &object, e)),
            }
        }
        Err(last.unwrap_or_else(|| invalid(format!("restore {object}: gave up"))))
    }
}

fn refuse_cluster_scoped(r: &Resolved, namespace: &str, name: &str, prefix: &str) -> Result<()> {
    if r.namespaced {
        return Ok(());
    }
    Err(invalid(format!(
        "{prefix}{} {name} is cluster-scoped: an environment's operations only change objects in its namespace {namespace:?}",
        r.resource.kind
    )))
}

// ---------------------------------------------------------------------------
// The free functions (one discovery each; hold an `Objects` to reuse it)

/// The resource a typed kind names: a kind (`Deployment`, any case), plural
/// (`deployments`), singular (`deployment`) or short name (`deploy`),
/// optionally qualified: `deployment.apps`, `deployments.v1.apps`. Ambiguous
/// names resolve as kubectl does (core group first, then the server's group
/// order, preferred version first).
pub async fn resolve(client: &Client, kind: &str) -> Result<Resolved> {
    Objects::new(client.clone()).resolve(kind).await
}

/// One object (`name`) or every object of `kind` in `namespace` (the
/// namespace is ignored for a cluster-scoped kind), without
/// `metadata.managedFields`. A missing object is [`KubeError::NotFound`].
pub async fn get(client: &Client, namespace: &str, kind: &str, name: Option<&str>) -> Result<Vec<Value>> {
    Objects::new(client.clone()).get(namespace, kind, name).await
}

/// Server-side applies (field manager [`FIELD_MANAGER`], not forced; with
/// `dryRun=All` when `dry_run`) every object of a multi-document YAML or JSON
/// text into `namespace`. Every document is checked first (apiVersion, kind,
/// `metadata.name`, its namespace set or equal to `namespace`, a namespaced
/// kind the server serves, no duplicates), so bad input sends no write. A
/// conflict with other field managers is the API server's 409, which names
/// them. When a later object fails, the ones applied before it are restored.
pub async fn apply(client: &Client, namespace: &str, yaml_text: &str, dry_run: bool) -> Result<Vec<Change>> {
    Objects::new(client.clone())
        .apply(namespace, yaml_text, dry_run)
        .await
}

/// A JSON merge patch (field manager [`FIELD_MANAGER`]) of an existing object.
pub async fn merge_patch(
    client: &Client,
    namespace: &str,
    kind: &str,
    name: &str,
    patch: &Value,
    dry_run: bool,
) -> Result<Change> {
    Objects::new(client.clone())
        .merge_patch(namespace, kind, name, patch, dry_run)
        .await
}

/// Deletes an object (the one read: a UID precondition); `after` is `None`.
/// A missing object is [`KubeError::NotFound`].
pub async fn delete(client: &Client, namespace: &str, kind: &str, name: &str) -> Result<Change> {
    Objects::new(client.clone()).delete(namespace, kind, name).await
}

/// Undoes `change`: deletes the object when it did not exist before (already
/// gone is fine), else puts the before-state back — re-created with a POST
/// when missing, replaced with a PUT at the live `resourceVersion` otherwise
/// (which also removes fields the change added). Retries a 409 twice.
pub async fn restore(client: &Client, change: &Change) -> Result<()> {
    Objects::new(client.clone()).restore(change).await
}
