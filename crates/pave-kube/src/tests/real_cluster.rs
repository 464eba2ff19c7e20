//! Against a real cluster, only when `PAVE_TEST_KUBECONFIG` names a kubeconfig
//! (its current context is used). Nothing here needs a pod to really run: the
//! cluster may have no nodes at all.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use pave_targets::{Target, WorkloadSpec};

use super::*;

async fn run(path: std::ffi::OsString) -> Result<(), Box<dyn std::error::Error>> {
    let kubeconfig = Kubeconfig::read_from(&path)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    let client = Client::try_from(config)?;
    let env = format!("pave-test-{}", std::process::id());
    let target = KubeTarget::with_env_namespaces(client.clone());
    target.ensure_namespace(&env, &BTreeMap::new()).await?;

    let key = WorkloadKey::new(&env, "web");
    let spec = WorkloadSpec {
        revision: 1,
        command: vec![],
        env: BTreeMap::from([("GREETING".to_string(), "hello-from-the-secret".to_string())]),
        replicas: 2,
        port: true,
        readiness: Some(pave_targets::Readiness::Http { path: "/".into() }),
        restart: pave_targets::RestartPolicy::Always,
        memory_limit_mb: Some(64),
        cwd: None,
        image: Some("nginx:1.25".into()),
    };
    let outcome = async {
        let applied = target.apply(&key, &spec).await?;
        assert_eq!(applied.revision, Some(1));
        assert_eq!(applied.desired, 2);
        // Idempotent: the same spec again.
        target.apply(&key, &spec).await?;
        let st = target.status(&key).await?;
        assert_eq!(st.revision, Some(1));
        assert_eq!(st.desired, 2);
        assert!(st.replicas.iter().all(|r| r.revision == 1));
        let d = Api::<Deployment>::namespaced(client.clone(), &env)
            .get("web")
            .await?;
        let text = serde_json::to_string(&d)?;
        assert!(
            !text.contains("hello-from-the-secret"),
            "a secret value in the Deployment"
        );
        Ok::<(), Box<dyn std::error::Error>>(())
    }
    .await;
    let cleanup = target.prune(&key, None).await;
    let _ = Api::<Namespace>::all(client)
        .delete(&env, &DeleteParams::default())
        .await;
    outcome?;
    cleanup?;
    Ok(())
}

#[test]
fn applies_and_reads_a_deployment_on_a_real_cluster() {
    let Some(path) = std::env::var_os("PAVE_TEST_KUBECONFIG") else {
        println!("skipped: PAVE_TEST_KUBECONFIG is not set");
        return;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Err(e) = rt.block_on(run(path)) {
        panic!("real cluster test failed: {e}");
    }
}
