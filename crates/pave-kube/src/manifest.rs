//! The Kubernetes objects of a workload, built from its [`WorkloadSpec`]. No I/O.
//!
//! Only fields that Kubernetes 1.28 serves are set: the types come from
//! k8s-openapi's `v1_33` (its oldest), but a field a 1.28 server does not know
//! would make its server-side apply fail.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, Namespace, PodSpec, PodTemplateSpec,
    Probe, ResourceRequirements, Secret, SecretKeySelector, Service, ServicePort, ServiceSpec,
    TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use pave_targets::{Readiness, RestartPolicy, WorkloadKey, WorkloadSpec};

use crate::error::{KubeError, Result};
use crate::{
    CONTAINER, CONTAINER_PORT, ENVIRONMENT_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, NAME_LABEL,
    PROGRESS_DEADLINE_SECONDS, REVISION_KEY, SERVICE_PORT,
};

/// The Secret holding a workload's resolved environment values: `<name>-env`.
pub fn secret_name(name: &str) -> String {
    format!("{name}-env")
}

/// Labels of every object pave makes for workload `name`.
pub fn workload_labels(key: &WorkloadKey) -> BTreeMap<String, String> {
    let mut labels = selector_labels(&key.name);
    labels.insert(ENVIRONMENT_LABEL.to_string(), key.env.clone());
    labels
}

/// The Deployment's selector (immutable once created) and the Service's.
pub fn selector_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
        (NAME_LABEL.to_string(), name.to_string()),
    ])
}

/// The Namespace of environment `env`, with pave's labels over `extra`.
pub fn namespace(namespace: &str, env: &str, extra: &BTreeMap<String, String>) -> Namespace {
    let mut labels = extra.clone();
    labels.insert(MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string());
    labels.insert(ENVIRONMENT_LABEL.to_string(), env.to_string());
    Namespace {
        metadata: ObjectMeta {
            name: Some(namespace.to_string()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// Everything `apply` sends for one workload.
#[derive(Debug, Clone)]
pub struct Manifests {
    pub secret: Secret,
    pub deployment: Deployment,
    /// Only when the workload has a port.
    pub service: Option<Service>,
}

/// Builds the Secret, Deployment and Service of `spec`, or says why it cannot.
pub fn build(key: &WorkloadKey, namespace: &str, spec: &WorkloadSpec) -> Result<Manifests> {
    validate_key(key, namespace)?;
    let Some(image) = spec.image.as_deref().filter(|i| !i.trim().is_empty()) else {
        return Err(KubeError::Invalid("a Kubernetes workload needs an image".into()));
    };
    if spec.restart != RestartPolicy::Always {
        return Err(KubeError::Invalid(format!(
            "a Kubernetes Deployment restarts its containers always; restart policy {:?} is not supported",
            spec.restart
        )));
    }
    let replicas = i32::try_from(spec.replicas)
        .map_err(|_| KubeError::Invalid(format!("{} replicas is too many", spec.replicas)))?;
    if spec.memory_limit_mb == Some(0) {
        return Err(KubeError::Invalid("memory_limit_mb must be positive".into()));
    }
    if spec.command.iter().any(|a| a.contains('\0')) {
        return Err(KubeError::Invalid("the command contains a NUL byte".into()));
    }
    for (k, v) in &spec.env {
        if !valid_secret_key(k) {
            return Err(KubeError::Invalid(format!(
                "{k:?} is not a valid environment variable name for a Kubernetes Secret \
                 (letters, digits, '-', '_' and '.')"
            )));
        }
        if v.contains('\0') {
            return Err(KubeError::Invalid(format!(
                "the value of {k} contains a NUL byte"
            )));
        }
    }

    let name = key.name.as_str();
    let labels = workload_labels(key);
    let meta = |object_name: String| ObjectMeta {
        name: Some(object_name),
        namespace: Some(namespace.to_string()),
        labels: Some(labels.clone()),
        ..ObjectMeta::default()
    };

    // `data`, not `stringData`: server-side apply tracks ownership of the keys
    // pave sends, so with `stringData` a key dropped from the spec would stay in
    // `data` forever (the fixtures show managedFields owning `f:stringData`).
    let secret = Secret {
        metadata: meta(secret_name(name)),
        type_: Some("Opaque".into()),
        data: Some(
            spec.env
                .iter()
                .map(|(k, v)| (k.clone(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    };

    let revision = spec.revision.to_string();
    let mut template_labels = labels.clone();
    template_labels.insert(REVISION_KEY.to_string(), revision.clone());
    let deployment = Deployment {
        metadata: meta(name.to_string()),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(name)),
                ..LabelSelector::default()
            },
            // Kubernetes' default. pave's own deadline for a deploy is the timeout
            // the caller gives `watch_ready`; this one only flags a rollout that
            // made no progress at all for 10 minutes (`ProgressDeadlineExceeded`).
            progress_deadline_seconds: Some(PROGRESS_DEADLINE_SECONDS),
            // As on the local target: every replica of the new revision starts
            // at once beside the old ones, which keep serving until the new
            // ones are ready. A rollout is one step, not one per pod, so a
            // revision that turns bad after its start is caught as the
            // current one (by remediation) rather than halfway through.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::String("100%".into())),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(template_labels),
                    annotations: Some(BTreeMap::from([(REVISION_KEY.to_string(), revision.clone())])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container(name, image, spec)],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };

    let service = spec.port.then(|| Service {
        metadata: meta(name.to_string()),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(name)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: SERVICE_PORT,
                target_port: Some(IntOrString::Int(CONTAINER_PORT)),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    });

    Ok(Manifests {
        secret,
        deployment,
        service,
    })
}

fn container(name: &str, image: &str, spec: &WorkloadSpec) -> Container {
    let secret = secret_name(name);
    // Names pave sets itself win over the spec's, as on the local target (and a
    // name twice in the list would fail the apply: `env` is keyed by name).
    let mut own: Vec<EnvVar> = vec![EnvVar {
        name: "PAVE_REVISION".into(),
        value: Some(spec.revision.to_string()),
        value_from: None,
    }];
    if spec.port {
        own.push(EnvVar {
            name: "PORT".into(),
            value: Some(CONTAINER_PORT.to_string()),
            value_from: None,
        });
    }
    let mut env: Vec<EnvVar> = spec
        .env
        .keys()
        .filter(|k| !own.iter().any(|o| &o.name == *k))
        .map(|k| EnvVar {
            name: k.clone(),
            value: None,
            // The value stays in the Secret: the Deployment (readable by anyone
            // who may read Deployments) only says where it is.
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.clone(),
                    key: k.clone(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
        })
        .collect();
    env.extend(own);

    let readiness_probe = spec.readiness.as_ref().map(|r| match r {
        Readiness::Http { path } => Probe {
            http_get: Some(HTTPGetAction {
                path: Some(if path.starts_with('/') {
                    path.clone()
                } else {
                    format!("/{path}")
                }),
                port: IntOrString::Int(CONTAINER_PORT),
                ..HTTPGetAction::default()
            }),
            ..Probe::default()
        },
        Readiness::Tcp => Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(CONTAINER_PORT),
                host: None,
            }),
            ..Probe::default()
        },
    });

    Container {
        name: CONTAINER.into(),
        image: Some(image.to_string()),
        command: (!spec.command.is_empty()).then(|| spec.command.clone()),
        env: Some(env),
        ports: spec.port.then(|| {
            vec![ContainerPort {
                name: Some("http".into()),
                container_port: CONTAINER_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            }]
        }),
        readiness_probe,
        resources: spec.memory_limit_mb.map(|mb| ResourceRequirements {
            limits: Some(BTreeMap::from([(
                "memory".to_string(),
                Quantity(format!("{mb}Mi")),
            )])),
            ..ResourceRequirements::default()
        }),
        working_dir: spec.cwd.clone(),
        ..Container::default()
    }
}

/// Checks that `namespace` (of environment `env`) is a valid namespace name.
pub fn validate_namespace(env: &str, namespace: &str) -> Result<()> {
    if dns_label(namespace, false) {
        return Ok(());
    }
    Err(KubeError::Invalid(format!(
        "namespace {namespace:?} (of environment {env:?}) is not a valid Kubernetes namespace name \
         (lower-case letters, digits and '-', at most 63)"
    )))
}

/// Checks that the key makes valid object names in a valid namespace.
pub fn validate_key(key: &WorkloadKey, namespace: &str) -> Result<()> {
    validate_namespace(&key.env, namespace)?;
    // A Service name is an RFC 1035 label: it starts with a letter.
    if !dns_label(&key.name, true) {
        return Err(KubeError::Invalid(format!(
            "{:?} is not a valid Kubernetes workload name (lower-case letters, digits and '-', \
             starting with a letter, at most 63)",
            key.name
        )));
    }
    Ok(())
}

fn dns_label(s: &str, letter_first: bool) -> bool {
    let bytes = s.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && (first.is_ascii_lowercase() || (!letter_first && first.is_ascii_digit()))
        && (last.is_ascii_lowercase() || last.is_ascii_digit())
}

fn valid_secret_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 253
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}
