//! Clean-up that runs when a scenario is dropped, also while a failed test unwinds.
//!
//! `Drop` cannot `.await`, and the test's runtime may be the one unwinding, so the
//! deletions run on a thread of their own with their own runtime and their own client
//! (built from the same configuration), and the drop waits for them.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::DeleteParams;
use kube::{Api, Client, Config};

/// Something a scenario created and must remove.
#[derive(Debug, Clone)]
pub enum Created {
    Namespace(String),
    StatefulSet { namespace: String, name: String },
    WebhookConfiguration(String),
}

/// Deletes `created` in reverse order, waiting at most a minute. Failures are printed,
/// never raised: this runs inside `Drop`.
pub fn delete_all(config: &Config, created: Vec<Created>) {
    if created.is_empty() {
        return;
    }
    if std::env::var_os("STSGUARD_E2E_KEEP").is_some() {
        eprintln!("STSGUARD_E2E_KEEP is set: leaving {created:?}");
        return;
    }
    let config = config.clone();
    let worker = std::thread::spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => return eprintln!("clean-up: no runtime: {error}"),
        };
        runtime.block_on(async move {
            let client = match Client::try_from(config) {
                Ok(client) => client,
                Err(error) => return eprintln!("clean-up: no client: {error}"),
            };
            let work = async {
                for item in created.iter().rev() {
                    if let Err(error) = delete(&client, item).await {
                        eprintln!("clean-up: could not delete {item:?}: {error}");
                    }
                }
            };
            if tokio::time::timeout(Duration::from_secs(60), work)
                .await
                .is_err()
            {
                eprintln!("clean-up: gave up after 60 s; left: {created:?}");
            }
        });
    });
    let _ = worker.join();
}

async fn delete(client: &Client, item: &Created) -> Result<(), kube::Error> {
    // Background propagation: pods, claims and the like go with their owners.
    let params = DeleteParams::background();
    let result = match item {
        Created::Namespace(name) => Api::<Namespace>::all(client.clone())
            .delete(name, &params)
            .await
            .map(drop),
        Created::StatefulSet { namespace, name } => {
            Api::<StatefulSet>::namespaced(client.clone(), namespace)
                .delete(name, &params)
                .await
                .map(drop)
        }
        Created::WebhookConfiguration(name) => {
            Api::<MutatingWebhookConfiguration>::all(client.clone())
                .delete(name, &params)
                .await
                .map(drop)
        }
    };
    match result {
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        other => other,
    }
}
