//! Resources in the cluster: PostgreSQL and Redis as one-replica StatefulSets
//! in the environment's namespace, behind the [`Provider`] trait.
//!
//! A resource `(env, name)` of kind `postgres` or `redis` is, in the namespace
//! of `env`:
//!
//! | object | what |
//! | --- | --- |
//! | Secret `<name>-credentials` | `password` (from the vault), and for postgres `user` and `database` |
//! | Service `<name>` | ClusterIP, port 5432 (postgres) or 6379 (redis) |
//! | StatefulSet `<name>` | 1 replica of the official image `postgres:<version>` (default 16) or `redis:<version>` (default 7); the password as a `secretKeyRef`; a readiness probe (`pg_isready`, `redis-cli ping`) |
//! | PersistentVolumeClaim `data-<name>-0` | from the StatefulSet's `volumeClaimTemplate` `data` (ReadWriteOnce, 1Gi), made by the StatefulSet controller |
//!
//! Every object carries `app.kubernetes.io/managed-by=pave`,
//! `app.kubernetes.io/name=<name>`, `pave.dev/environment=<env>` and
//! `pave.dev/resource-kind=<kind>`; every write is a server-side apply with
//! field manager `pave`. The resource is healthy when pod `<name>-0` is Ready:
//! the readiness probe is the real connection the local providers make
//! themselves. PVCs are not waited for (a cluster may bind them late, or only
//! once the pod is scheduled).
//!
//! The password lives only in the Secret: the containers read it through
//! `valueFrom.secretKeyRef`, and every error message is scrubbed of it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, ExecAction, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, Pod, PodSpec, PodTemplateSpec, Probe, Secret, SecretKeySelector, Service,
    ServicePort, ServiceSpec, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use pave_providers::{Provider, ProviderError, Provisioned, ResourceRequest};
use serde_json::{json, Value};

use crate::error::{self, is_not_found, KubeError};
use crate::{
    manifest, KubeTarget, ENVIRONMENT_LABEL, FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE, NAME_LABEL,
};

/// `pave.dev/resource-kind`: `postgres` or `redis`.
pub const KIND_LABEL: &str = "pave.dev/resource-kind";
/// How long `create` and `repair` wait for the pod to be Ready by default.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(300);
/// How often the pod is read while waiting, by default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// The volumeClaimTemplate (and the pod volume) holding the data.
pub const DATA_VOLUME: &str = "data";
/// The size of the data volume.
pub const STORAGE: &str = "1Gi";
/// The pod label the StatefulSet controller sets to the revision a pod runs.
const REVISION_HASH_LABEL: &str = "controller-revision-hash";
/// The StatefulSet controller labels each pod `controller-revision-hash=<name>-<hash>`
/// (10 characters of hash), and a label value has at most 63 characters: a
/// longer StatefulSet name is accepted by the API server, but its pods are never created.
const MAX_NAME: usize = 52;
/// The mount point of the postgres volume; the image's own data directory.
const PG_MOUNT: &str = "/var/lib/postgresql/data";
/// A subdirectory of the volume: `initdb` refuses a non-empty directory, and a
/// fresh file system may hold `lost+found`.
const PG_DATA: &str = "/var/lib/postgresql/data/pgdata";
/// The redis image's working directory, where the append-only file goes.
const REDIS_MOUNT: &str = "/data";

/// The Secret holding a resource's credentials; not `<name>-env`, which a
/// workload of the same name would own.
pub fn credentials_secret(name: &str) -> String {
    format!("{name}-credentials")
}

/// The one pod of a resource's StatefulSet: its name is stable, so health is
/// read from it directly rather than through a list.
pub fn pod_name(name: &str) -> String {
    format!("{name}-0")
}

/// The claim the StatefulSet controller makes for the pod's data volume: its
/// existence tells whether the data survived.
pub fn data_claim(name: &str) -> String {
    format!("{DATA_VOLUME}-{name}-0")
}

/// Which server, and what of the spec it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Postgres {
        version: String,
        user: String,
        database: String,
    },
    Redis {
        version: String,
    },
}

impl Kind {
    /// Reads the spec the engine validated (`pave_core::resource::validate`),
    /// checking again what ends up in an image tag or a probe, so a bad value
    /// fails here with a message instead of at the API server.
    fn parse(kind: &str, name: &str, spec: &Value) -> Result<Kind, ProviderError> {
        let field = |key: &str| match spec.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ProviderError::Invalid(format!("{kind} `{key}` must be a string"))),
        };
        let version = |default: &str| -> Result<String, ProviderError> {
            let v = field("version")?.unwrap_or_else(|| default.to_string());
            let ok = !v.is_empty()
                && v.len() <= 32
                && v.starts_with(|c: char| c.is_ascii_alphanumeric())
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
            if ok {
                Ok(v)
            } else {
                Err(ProviderError::Invalid(format!(
                    "{kind} `version` must be an image tag such as \"16\" or \"7.2\""
                )))
            }
        };
        match kind {
            "postgres" => {
                let identifier = |key: &str| -> Result<String, ProviderError> {
                    let v = field(key)?.unwrap_or_else(|| name.replace('-', "_"));
                    let ok = !v.is_empty()
                        && v.len() <= 63
                        && v.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                        && v.chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                    if ok {
                        Ok(v)
                    } else {
                        Err(ProviderError::Invalid(format!(
                            "postgres `{key}` must be a lower-case SQL identifier"
                        )))
                    }
                };
                Ok(Kind::Postgres {
                    version: version("16")?,
                    user: identifier("user")?,
                    database: identifier("database")?,
                })
            }
            "redis" => Ok(Kind::Redis {
                version: version("7")?,
            }),
            other => Err(ProviderError::Invalid(format!(
                "no Kubernetes provider for `{other}` (postgres, redis)"
            ))),
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Kind::Postgres { .. } => "postgres",
            Kind::Redis { .. } => "redis",
        }
    }

    fn port(&self) -> i32 {
        match self {
            Kind::Postgres { .. } => 5432,
            Kind::Redis { .. } => 6379,
        }
    }

    fn image(&self) -> String {
        match self {
            Kind::Postgres { version, .. } => format!("postgres:{version}"),
            Kind::Redis { version } => format!("redis:{version}"),
        }
    }
}

/// Checks that `name` makes valid object names: a Service name is an RFC 1035
/// label, and see [`MAX_NAME`].
fn validate_name(name: &str) -> Result<(), ProviderError> {
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_NAME
        && bytes[0].is_ascii_lowercase()
        && bytes
            .last()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ProviderError::Invalid(format!(
            "{name:?} is not a valid name for a Kubernetes resource (lower-case letters, digits and '-', \
             starting with a letter, at most {MAX_NAME})"
        )))
    }
}

/// Where a resource is. No `Debug`: it holds the password.
struct Subject<'a> {
    env: &'a str,
    ns: String,
    name: &'a str,
    /// Whatever the request carries, so it can be scrubbed from errors even
    /// where the operation does not need it.
    password: Option<&'a str>,
}

impl Subject<'_> {
    fn object(&self, kind: &str, name: &str) -> String {
        format!("{kind} {}/{name}", self.ns)
    }

    fn pod(&self) -> String {
        self.object("pod", &pod_name(self.name))
    }

    /// A kube error as a provider error, without the password.
    fn fail(&self, e: KubeError) -> ProviderError {
        self.scrub(provider_error(e))
    }

    /// Removes the password (and its base64 form, as a Secret's `data` shows
    /// it) from a message, should the API server ever echo it back.
    fn scrub(&self, e: ProviderError) -> ProviderError {
        let Some(password) = self.password.filter(|p| !p.is_empty()) else {
            return e;
        };
        let encoded = match serde_json::to_value(ByteString(password.as_bytes().to_vec())) {
            Ok(Value::String(s)) => Some(s),
            _ => None,
        };
        let clean = |s: String| {
            let s = s.replace(password, "********");
            match &encoded {
                Some(b64) if !b64.is_empty() => s.replace(b64.as_str(), "********"),
                _ => s,
            }
        };
        match e {
            ProviderError::Invalid(m) => ProviderError::Invalid(clean(m)),
            ProviderError::Command(m) => ProviderError::Command(clean(m)),
            ProviderError::Unhealthy(m) => ProviderError::Unhealthy(clean(m)),
            ProviderError::Gone(m) => ProviderError::Gone(clean(m)),
            ProviderError::Io(m) => ProviderError::Io(clean(m)),
            ProviderError::MissingProgram { program, hint } => ProviderError::MissingProgram {
                program,
                hint: clean(hint),
            },
        }
    }
}

/// A kube error as a provider error; a denial says whose.
fn provider_error(e: KubeError) -> ProviderError {
    match e.code() {
        Some(403) => ProviderError::Command(format!(
            "{e}; the credentials pave uses for this cluster may not do this (grant them the RBAC permission)"
        )),
        Some(401) => ProviderError::Command(format!("{e}; the cluster did not accept pave's credentials")),
        _ => match e {
            KubeError::Invalid(m) => ProviderError::Invalid(m),
            other => ProviderError::Command(other.to_string()),
        },
    }
}

/// What a resource is made of, built from its request. No I/O.
#[derive(Debug, Clone)]
struct Manifests {
    secret: Secret,
    service: Service,
    stateful_set: StatefulSet,
}

fn labels(env: &str, name: &str, kind: &Kind) -> BTreeMap<String, String> {
    let mut labels = selector(name, kind);
    labels.insert(ENVIRONMENT_LABEL.to_string(), env.to_string());
    labels
}

/// The StatefulSet's selector (immutable) and the Service's. The kind is in it
/// so neither selects the pods of a workload that happens to share the name.
fn selector(name: &str, kind: &Kind) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
        (NAME_LABEL.to_string(), name.to_string()),
        (KIND_LABEL.to_string(), kind.label().to_string()),
    ])
}

/// The label selector of the claims `delete` removes.
fn claim_selector(name: &str) -> String {
    format!("{NAME_LABEL}={name},{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}")
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_string(),
                key: key.to_string(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    }
}

fn plain_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.to_string()),
        value_from: None,
    }
}

fn exec_probe(command: Vec<String>) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(command),
        }),
        period_seconds: Some(5),
        // The default (1 s) fails a busy server that is merely slow to answer.
        timeout_seconds: Some(5),
        ..Probe::default()
    }
}

fn build(s: &Subject<'_>, kind: &Kind, password: &str) -> Manifests {
    let name = s.name;
    let ns = s.ns.as_str();
    let labels = labels(s.env, name, kind);
    let meta = |object_name: String| ObjectMeta {
        name: Some(object_name),
        namespace: Some(ns.to_string()),
        labels: Some(labels.clone()),
        ..ObjectMeta::default()
    };
    let secret_name = credentials_secret(name);
    let port = kind.port();

    // `data`, not `stringData`: server-side apply then owns exactly the keys
    // sent (see `manifest::build`).
    let mut data = BTreeMap::from([("password".to_string(), ByteString(password.as_bytes().to_vec()))]);
    if let Kind::Postgres { user, database, .. } = kind {
        data.insert("user".into(), ByteString(user.as_bytes().to_vec()));
        data.insert("database".into(), ByteString(database.as_bytes().to_vec()));
    }
    let secret = Secret {
        metadata: meta(secret_name.clone()),
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    };

    let service = Service {
        metadata: meta(name.to_string()),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector(name, kind)),
            ports: Some(vec![ServicePort {
                name: Some(kind.label().into()),
                port,
                target_port: Some(IntOrString::Int(port)),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };

    let (env, args, probe, mount) = match kind {
        Kind::Postgres { user, database, .. } => (
            vec![
                plain_env("POSTGRES_USER", user),
                plain_env("POSTGRES_DB", database),
                secret_env("POSTGRES_PASSWORD", &secret_name, "password"),
                plain_env("PGDATA", PG_DATA),
            ],
            None,
            // Over TCP: while the image initialises the database its temporary
            // server listens on the Unix socket only, so this stays false until
            // the real server is up.
            exec_probe(
                ["pg_isready", "-U", user, "-d", database, "-h", "127.0.0.1"]
                    .map(String::from)
                    .to_vec(),
            ),
            PG_MOUNT,
        ),
        Kind::Redis { .. } => (
            vec![secret_env("REDIS_PASSWORD", &secret_name, "password")],
            // Kubernetes expands `$(REDIS_PASSWORD)` in args, so the value
            // never appears in the StatefulSet.
            Some(
                [
                    "redis-server",
                    "--requirepass",
                    "$(REDIS_PASSWORD)",
                    "--appendonly",
                    "yes",
                ]
                .map(String::from)
                .to_vec(),
            ),
            exec_probe(
                [
                    "sh",
                    "-c",
                    "redis-cli -a \"$REDIS_PASSWORD\" --no-auth-warning ping | grep PONG",
                ]
                .map(String::from)
                .to_vec(),
            ),
            REDIS_MOUNT,
        ),
    };

    let container = Container {
        name: kind.label().into(),
        image: Some(kind.image()),
        args,
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some(kind.label().into()),
            container_port: port,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(probe),
        volume_mounts: Some(vec![VolumeMount {
            name: DATA_VOLUME.into(),
            mount_path: mount.into(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };

    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.into()),
            // The controller copies these onto the claim it makes, which is how
            // `delete` finds it.
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(STORAGE.into()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };

    let stateful_set = StatefulSet {
        metadata: meta(name.to_string()),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(name.to_string()),
            selector: LabelSelector {
                match_labels: Some(selector(name, kind)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    // A database needs no API access, and no `<SERVICE>_PORT`
                    // variables from the namespace's other Services.
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![claim]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    };

    Manifests {
        secret,
        service,
        stateful_set,
    }
}

fn condition<'a>(pod: &'a Pod, type_: &str) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// Why the pod does not serve, or `None` when it is Ready. Names what the
/// pod shows, in the order a person would look: a container's waiting or
/// terminated state, scheduling, then the Ready condition itself.
fn pod_problem(pod: Option<&Pod>) -> Option<String> {
    let Some(pod) = pod else {
        return Some("no pod yet".into());
    };
    if pod.metadata.deletion_timestamp.is_some() {
        return Some("the pod is being deleted".into());
    }
    let ready = condition(pod, "Ready");
    if ready.is_some_and(|c| c.status == "True") {
        return None;
    }
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Unknown");
    let statuses = status
        .into_iter()
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .collect::<Vec<_>>();
    for cs in &statuses {
        let Some(state) = cs.state.as_ref() else {
            continue;
        };
        if let Some(w) = state.waiting.as_ref() {
            let reason = w.reason.as_deref().unwrap_or("Waiting");
            // ContainerCreating / PodInitializing say little; keep looking.
            if matches!(reason, "ContainerCreating" | "PodInitializing") {
                continue;
            }
            let mut out = format!("container {} is waiting: {reason}", cs.name);
            if let Some(m) = w.message.as_deref().filter(|m| !m.is_empty()) {
                out.push_str(&format!(": {m}"));
            }
            if let Some(t) = cs.last_state.as_ref().and_then(|l| l.terminated.as_ref()) {
                out.push_str(&format!(
                    " (last exit code {}{}, {} restarts)",
                    t.exit_code,
                    t.reason.as_deref().map(|r| format!(" {r}")).unwrap_or_default(),
                    cs.restart_count
                ));
            }
            return Some(out);
        }
        if let Some(t) = state.terminated.as_ref() {
            return Some(format!(
                "container {} terminated: {} (exit code {})",
                cs.name,
                t.reason.as_deref().unwrap_or("Terminated"),
                t.exit_code
            ));
        }
    }
    if let Some(c) = condition(pod, "PodScheduled").filter(|c| c.status == "False") {
        return Some(format!(
            "{phase}, not scheduled: {}: {}",
            c.reason.as_deref().unwrap_or("Unschedulable"),
            c.message.as_deref().unwrap_or("(no message)")
        ));
    }
    if let Some(w) = statuses
        .iter()
        .find_map(|cs| cs.state.as_ref()?.waiting.as_ref()?.reason.as_deref())
    {
        return Some(format!("{phase}: {w}"));
    }
    match ready {
        Some(c) => Some(format!(
            "{phase}, not ready: {}{}",
            c.reason.as_deref().unwrap_or("NotReady"),
            c.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
        )),
        None if phase == "Running" => Some("Running, readiness not reported yet".into()),
        None => Some(phase.to_string()),
    }
}

/// Why a Ready pod is not yet the one the applied StatefulSet wants, if so:
/// after a change (a new version) the old pod stays Ready until the
/// controller replaces it.
fn revision_problem(set: &StatefulSet, pod: &Pod, generation: i64) -> Option<String> {
    let status = set.status.as_ref();
    let observed = status.and_then(|s| s.observed_generation).unwrap_or(0);
    if observed < generation {
        return Some(format!(
            "the StatefulSet controller has not acted on generation {generation} yet (observed {observed})"
        ));
    }
    let wanted = status.and_then(|s| s.update_revision.as_deref())?;
    let running = pod.metadata.labels.as_ref()?.get(REVISION_HASH_LABEL)?;
    (running != wanted).then(|| format!("the pod runs revision {running}, being replaced by {wanted}"))
}

/// Whether `err` is a 404 or a 409 (a delete's precondition: the pod was
/// already replaced).
fn gone_or_replaced(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 404 || s.code == 409)
}

/// PostgreSQL and Redis as StatefulSets in the cluster of a [`KubeTarget`].
#[derive(Debug, Clone)]
pub struct KubeProviders {
    target: KubeTarget,
    ready_timeout: Duration,
    poll_interval: Duration,
}

impl KubeProviders {
    /// Providers over `target`'s cluster, in its environments' namespaces.
    pub fn new(target: KubeTarget) -> Self {
        Self {
            target,
            ready_timeout: DEFAULT_READY_TIMEOUT,
            poll_interval: DEFAULT_POLL_INTERVAL,
        }
    }

    /// How long `create` and `repair` wait for the pod to be Ready (default
    /// [`DEFAULT_READY_TIMEOUT`]): a first image pull and `initdb` take a while.
    pub fn with_ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// How often the pod is read while waiting (default [`DEFAULT_POLL_INTERVAL`]).
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// The target whose cluster holds the resources.
    pub fn target(&self) -> &KubeTarget {
        &self.target
    }

    fn api<K>(&self, ns: &str) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.target.client().clone(), ns)
    }

    fn locate<'a>(&self, req: &'a ResourceRequest) -> Result<Subject<'a>, ProviderError> {
        let ns = self.target.namespace(&req.env);
        manifest::validate_namespace(&req.env, &ns).map_err(provider_error)?;
        validate_name(&req.name)?;
        Ok(Subject {
            env: &req.env,
            ns,
            name: &req.name,
            password: req.secrets.get("password").map(String::as_str),
        })
    }

    fn password(req: &ResourceRequest) -> Result<&str, ProviderError> {
        req.secrets
            .get("password")
            .map(String::as_str)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| ProviderError::Invalid("no password was resolved for the resource".into()))
    }

    fn provisioned(s: &Subject<'_>, kind: &Kind) -> Provisioned {
        let mut outputs = BTreeMap::from([
            (
                "host".to_string(),
                json!(format!("{}.{}.svc.cluster.local", s.name, s.ns)),
            ),
            ("port".to_string(), json!(kind.port())),
        ]);
        if let Kind::Postgres { user, database, .. } = kind {
            outputs.insert("database".into(), json!(database));
            outputs.insert("user".into(), json!(user));
        }
        Provisioned {
            outputs,
            location: format!("statefulset/{}/{}", s.ns, s.name),
        }
    }

    /// Applies the Namespace; a credential limited to the namespace may not,
    /// and then the namespace must exist already (the next apply says so if not).
    async fn ensure_namespace(&self, s: &Subject<'_>) -> Result<(), ProviderError> {
        let labels = BTreeMap::from([(ENVIRONMENT_LABEL.to_string(), s.env.to_string())]);
        match self.target.ensure_namespace(s.env, &labels).await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(403) => {
                tracing::warn!(namespace = %s.ns, error = %e, "may not apply the namespace: assuming it exists");
                Ok(())
            }
            Err(e) => Err(s.fail(e)),
        }
    }

    /// Applies the Secret, the Service and the StatefulSet; gives the
    /// StatefulSet's generation, which the wait compares with what the
    /// controller has seen.
    async fn apply_all(&self, s: &Subject<'_>, m: &Manifests) -> Result<Option<i64>, ProviderError> {
        let params = PatchParams::apply(FIELD_MANAGER);
        let secret_name = credentials_secret(s.name);
        self.api::<Secret>(&s.ns)
            .patch(&secret_name, &params, &Patch::Apply(&m.secret))
            .await
            .map_err(|e| s.fail(error::api("apply", s.object("Secret", &secret_name), e)))?;
        self.api::<Service>(&s.ns)
            .patch(s.name, &params, &Patch::Apply(&m.service))
            .await
            .map_err(|e| s.fail(error::api("apply", s.object("Service", s.name), e)))?;
        let set = self
            .api::<StatefulSet>(&s.ns)
            .patch(s.name, &params, &Patch::Apply(&m.stateful_set))
            .await
            // Never forced: a conflict means another tool manages the
            // StatefulSet, and the API server's message names it.
            .map_err(|e| s.fail(error::api("apply", s.object("StatefulSet", s.name), e)))?;
        tracing::info!(namespace = %s.ns, name = %s.name, "applied the resource's Secret, Service and StatefulSet");
        Ok(set.metadata.generation)
    }

    /// One look: why the resource is not ready yet, or `None` when it is.
    async fn not_ready(&self, s: &Subject<'_>, generation: Option<i64>) -> Result<Option<String>, KubeError> {
        let pod = self
            .api::<Pod>(&s.ns)
            .get_opt(&pod_name(s.name))
            .await
            .map_err(|e| error::api("get", s.pod(), e))?;
        if let Some(why) = pod_problem(pod.as_ref()) {
            return Ok(Some(why));
        }
        let (Some(generation), Some(pod)) = (generation, pod) else {
            return Ok(None);
        };
        let set = self
            .api::<StatefulSet>(&s.ns)
            .get_opt(s.name)
            .await
            .map_err(|e| error::api("get", s.object("StatefulSet", s.name), e))?;
        Ok(match set {
            None => Some("the StatefulSet was deleted".into()),
            Some(set) => revision_problem(&set, &pod, generation),
        })
    }

    /// Polls until the pod is Ready (and of the applied revision), or the ready
    /// timeout passes; then says what the pod showed last.
    async fn wait_ready(&self, s: &Subject<'_>, generation: Option<i64>) -> Result<(), ProviderError> {
        let start = Instant::now();
        loop {
            let left = self.ready_timeout.saturating_sub(start.elapsed());
            let why = match tokio::time::timeout(left.max(self.poll_interval), self.not_ready(s, generation))
                .await
            {
                Ok(Ok(None)) => {
                    tracing::info!(pod = %s.pod(), "resource ready");
                    return Ok(());
                }
                Ok(Ok(Some(why))) => why,
                // Transport trouble and 5xx may pass; a denial will not.
                Ok(Err(e)) if e.is_retryable() => e.to_string(),
                Ok(Err(e)) => return Err(s.fail(e)),
                Err(_) => "the API server did not answer".into(),
            };
            let elapsed = start.elapsed();
            if elapsed >= self.ready_timeout {
                return Err(s.scrub(ProviderError::Unhealthy(format!(
                    "{} not ready after {}: {why}",
                    s.pod(),
                    human(self.ready_timeout)
                ))));
            }
            tracing::debug!(pod = %s.pod(), reason = %why, "waiting for the resource's pod");
            tokio::time::sleep(self.poll_interval.min(self.ready_timeout - elapsed)).await;
        }
    }

    /// Applies the objects and waits until the pod is Ready. Idempotent: on a
    /// healthy resource the applies change nothing and the wait returns at once.
    pub async fn create(&self, req: &ResourceRequest) -> Result<Provisioned, ProviderError> {
        let s = self.locate(req)?;
        let kind = Kind::parse(&req.kind, &req.name, &req.spec)?;
        let m = build(&s, &kind, Self::password(req)?);
        self.ensure_namespace(&s).await?;
        let generation = self.apply_all(&s, &m).await?;
        self.wait_ready(&s, generation).await?;
        Ok(Self::provisioned(&s, &kind))
    }

    /// `Ok(())` when the StatefulSet exists, its pod is Ready, and the Service
    /// and Secret the clients and the pod need are there.
    pub async fn check(&self, req: &ResourceRequest) -> Result<(), ProviderError> {
        let s = self.locate(req)?;
        Kind::parse(&req.kind, &req.name, &req.spec)?;
        let set = self
            .api::<StatefulSet>(&s.ns)
            .get_opt(s.name)
            .await
            .map_err(|e| s.fail(error::api("get", s.object("StatefulSet", s.name), e)))?;
        if set.is_none() {
            return Err(ProviderError::Gone(format!(
                "{} does not exist",
                s.object("StatefulSet", s.name)
            )));
        }
        let pod = self
            .api::<Pod>(&s.ns)
            .get_opt(&pod_name(s.name))
            .await
            .map_err(|e| s.fail(error::api("get", s.pod(), e)))?;
        if let Some(why) = pod_problem(pod.as_ref()) {
            return Err(s.scrub(ProviderError::Unhealthy(format!("{}: {why}", s.pod()))));
        }
        let service = self
            .api::<Service>(&s.ns)
            .get_metadata_opt(s.name)
            .await
            .map_err(|e| s.fail(error::api("get", s.object("Service", s.name), e)))?;
        if service.is_none() {
            return Err(ProviderError::Unhealthy(format!(
                "{} is missing: clients cannot reach the server",
                s.object("Service", s.name)
            )));
        }
        // Metadata only: the check has no use for the password.
        let secret_name = credentials_secret(s.name);
        let secret = self
            .api::<Secret>(&s.ns)
            .get_metadata_opt(&secret_name)
            .await
            .map_err(|e| s.fail(error::api("get", s.object("Secret", &secret_name), e)))?;
        if secret.is_none() {
            return Err(ProviderError::Unhealthy(format!(
                "{} is missing: the pod cannot start again",
                s.object("Secret", &secret_name)
            )));
        }
        Ok(())
    }

    /// Applies the objects again (a deleted Secret or Service comes back),
    /// replaces a pod that is not Ready (the StatefulSet makes it again on the
    /// same claim, so the data stays), and waits as `create` does. Gone when
    /// both the StatefulSet and its data claim are missing: there is no data
    /// left to bring back.
    pub async fn repair(&self, req: &ResourceRequest) -> Result<Provisioned, ProviderError> {
        let s = self.locate(req)?;
        let kind = Kind::parse(&req.kind, &req.name, &req.spec)?;
        let m = build(&s, &kind, Self::password(req)?);
        let set = self
            .api::<StatefulSet>(&s.ns)
            .get_opt(s.name)
            .await
            .map_err(|e| s.fail(error::api("get", s.object("StatefulSet", s.name), e)))?;
        if set.is_none() {
            let claim = data_claim(s.name);
            let found = self
                .api::<PersistentVolumeClaim>(&s.ns)
                .get_metadata_opt(&claim)
                .await
                .map_err(|e| s.fail(error::api("get", s.object("PersistentVolumeClaim", &claim), e)))?;
            if found.is_none() {
                return Err(ProviderError::Gone(format!(
                    "{} and its data claim {claim} do not exist",
                    s.object("StatefulSet", s.name)
                )));
            }
        }
        let generation = self.apply_all(&s, &m).await?;

        let pods = self.api::<Pod>(&s.ns);
        let pod = pods
            .get_opt(&pod_name(s.name))
            .await
            .map_err(|e| s.fail(error::api("get", s.pod(), e)))?;
        if let Some(pod) = pod.filter(|p| p.metadata.deletion_timestamp.is_none()) {
            if let Some(why) = pod_problem(Some(&pod)) {
                tracing::info!(pod = %s.pod(), reason = %why, "deleting the unready pod");
                // Only this pod: if the controller replaced it meanwhile, the
                // new one gets its chance.
                let params = DeleteParams {
                    preconditions: pod.metadata.uid.clone().map(|uid| Preconditions {
                        uid: Some(uid),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                match pods.delete(&pod_name(s.name), &params).await {
                    Ok(_) => {}
                    Err(e) if gone_or_replaced(&e) => {}
                    Err(e) => return Err(s.fail(error::api("delete", s.pod(), e))),
                }
            }
        }
        self.wait_ready(&s, generation).await?;
        Ok(Self::provisioned(&s, &kind))
    }

    /// Deletes the StatefulSet (its pod goes with it), the Service, the Secret
    /// and the data claims. Idempotent: what is not there counts as deleted.
    pub async fn delete(&self, req: &ResourceRequest) -> Result<(), ProviderError> {
        let s = self.locate(req)?;
        let dp = DeleteParams::default();
        let secret_name = credentials_secret(s.name);
        let outcome = async {
            match self.api::<StatefulSet>(&s.ns).delete(s.name, &dp).await {
                Err(e) if !is_not_found(&e) => {
                    return Err(error::api("delete", s.object("StatefulSet", s.name), e))
                }
                _ => {}
            }
            match self.api::<Service>(&s.ns).delete(s.name, &dp).await {
                Err(e) if !is_not_found(&e) => {
                    return Err(error::api("delete", s.object("Service", s.name), e))
                }
                _ => {}
            }
            match self.api::<Secret>(&s.ns).delete(&secret_name, &dp).await {
                Err(e) if !is_not_found(&e) => {
                    return Err(error::api("delete", s.object("Secret", &secret_name), e))
                }
                _ => {}
            }
            // The StatefulSet controller never deletes the claims it made.
            let selector = claim_selector(s.name);
            match self
                .api::<PersistentVolumeClaim>(&s.ns)
                .delete_collection(&dp, &ListParams::default().labels(&selector))
                .await
            {
                Err(e) if !is_not_found(&e) => {
                    return Err(error::api(
                        "delete",
                        format!("PersistentVolumeClaims in {} with {selector}", s.ns),
                        e,
                    ))
                }
                _ => {}
            }
            Ok(())
        }
        .await;
        outcome.map_err(|e| s.fail(e))?;
        tracing::info!(namespace = %s.ns, name = %s.name, "deleted the resource");
        Ok(())
    }
}

fn human(d: Duration) -> String {
    if d.as_secs() >= 1 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

#[async_trait]
impl Provider for KubeProviders {
    async fn create(&self, req: &ResourceRequest) -> Result<Provisioned, ProviderError> {
        KubeProviders::create(self, req).await
    }
    async fn check(&self, req: &ResourceRequest) -> Result<(), ProviderError> {
        KubeProviders::check(self, req).await
    }
    async fn repair(&self, req: &ResourceRequest) -> Result<Provisioned, ProviderError> {
        KubeProviders::repair(self, req).await
    }
    async fn delete(&self, req: &ResourceRequest) -> Result<(), ProviderError> {
        KubeProviders::delete(self, req).await
    }
}
