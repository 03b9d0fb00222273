//! Running pods: waiting for them, and talking to the counter app through the API
//! server's pod proxy (no port-forward, no access to the pod network needed).

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

/// Port of the counter app in the fixtures.
pub const COUNTER_PORT: u16 = 8080;

/// Polls `check` every second until it returns `Some`, or fails after `timeout` with
/// `what` and the last state `check` reported.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Result<T, String>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await? {
            Ok(value) => return Ok(value),
            Err(state) => state,
        };
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}; last state: {last}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// One line per pod: name, phase, readiness, and why a container is waiting.
pub fn describe(pods: &[Pod]) -> String {
    pods.iter()
        .map(|p| {
            let status = p.status.as_ref();
            let waiting: Vec<String> = status
                .and_then(|s| s.container_statuses.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
                .map(|w| {
                    format!(
                        "{} {}",
                        w.reason.as_deref().unwrap_or(""),
                        w.message.as_deref().unwrap_or("")
                    )
                })
                .collect();
            format!(
                "{} phase={} ready={} {}",
                p.name_any(),
                status.and_then(|s| s.phase.as_deref()).unwrap_or("?"),
                is_ready(p),
                waiting.join("; ")
            )
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The pods matching `selector` in `namespace`, sorted by name.
pub async fn list(client: &Client, namespace: &str, selector: &str) -> anyhow::Result<Vec<Pod>> {
    let mut pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(selector))
        .await
        .context("listing pods")?
        .items;
    pods.sort_by_key(|p| p.name_any());
    Ok(pods)
}

/// Waits until `count` pods match `selector` and `each` holds for all of them.
pub async fn wait_for_pods(
    client: &Client,
    namespace: &str,
    selector: &str,
    count: usize,
    what: &str,
    each: fn(&Pod) -> bool,
    timeout: Duration,
) -> anyhow::Result<Vec<Pod>> {
    wait_for(what, timeout, || async {
        let pods = list(client, namespace, selector).await?;
        if pods.len() == count && pods.iter().all(each) {
            Ok(Ok(pods))
        } else {
            Ok(Err(format!("{} pod(s): {}", pods.len(), describe(&pods))))
        }
    })
    .await
}

/// `GET path` on `pod`'s counter port through the API server's pod proxy.
pub async fn get(
    client: &Client,
    namespace: &str,
    pod: &str,
    path: &str,
) -> anyhow::Result<String> {
    let url = format!("/api/v1/namespaces/{namespace}/pods/{pod}:{COUNTER_PORT}/proxy{path}");
    let request = http::Request::get(&url).body(Vec::new())?;
    client
        .request_text(request)
        .await
        .with_context(|| format!("GET {path} on pod {namespace}/{pod}"))
}

/// One visit to `pod` (`GET /`, which counts).
pub async fn visit(client: &Client, namespace: &str, pod: &str) -> anyhow::Result<()> {
    get(client, namespace, pod, "/").await.map(drop)
}

/// The pod's count (`GET /visits`, plain text, which does not count).
pub async fn visits(client: &Client, namespace: &str, pod: &str) -> anyhow::Result<u64> {
    let text = get(client, namespace, pod, "/visits").await?;
    text.trim()
        .parse()
        .with_context(|| format!("GET /visits on {pod} answered {text:?}, not a number"))
}

/// Deletes `pod` and waits until a new pod of that name (another uid) is Ready.
pub async fn delete_and_wait_back(
    client: &Client,
    namespace: &str,
    pod: &str,
    timeout: Duration,
) -> anyhow::Result<Pod> {
    let api = Api::<Pod>::namespaced(client.clone(), namespace);
    let old_uid = api.get(pod).await?.uid();
    api.delete(pod, &DeleteParams::default()).await?;
    wait_for(
        &format!("pod {pod} to come back Ready"),
        timeout,
        || async {
            match api.get_opt(pod).await? {
                Some(p) if p.uid() != old_uid && is_ready(&p) => Ok(Ok(p)),
                Some(p) => Ok(Err(describe(std::slice::from_ref(&p)))),
                None => Ok(Err("not there".into())),
            }
        },
    )
    .await
}

/// The uid of the claim `name` (to tell a surviving claim from a new one).
pub async fn claim_uid(
    client: &Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Option<String>> {
    Ok(
        Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await?
            .and_then(|c| c.metadata.uid),
    )
}

pub async fn create_service(
    client: &Client,
    namespace: &str,
    service: Value,
) -> anyhow::Result<()> {
    let service: Service = serde_json::from_value(service)?;
    Api::<Service>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &service)
        .await
        .context("creating the headless Service")?;
    Ok(())
}

/// Runs `script` with `sh` in a one-off pod of `image` and returns its output once it
/// succeeded; fails with the output when it did not.
pub async fn run_script(
    client: &Client,
    namespace: &str,
    name: &str,
    image: &str,
    script: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": 65534,
                "seccompProfile": { "type": "RuntimeDefault" },
            },
            "containers": [{
                "name": "toolbox",
                "image": image,
                "command": ["sh", "-c", script],
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "capabilities": { "drop": ["ALL"] },
                },
            }],
        },
    }))?;
    let api = Api::<Pod>::namespaced(client.clone(), namespace);
    api.create(&PostParams::default(), &pod)
        .await
        .with_context(|| format!("creating pod {name}"))?;
    let phase = wait_for(
        &format!("pod {name} ({image}) to finish"),
        timeout,
        || async {
            let pod = api.get(name).await?;
            match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
                Some(phase @ ("Succeeded" | "Failed")) => Ok(Ok(phase.to_string())),
                _ => Ok(Err(describe(std::slice::from_ref(&pod)))),
            }
        },
    )
    .await?;
    let output = api
        .logs(name, &LogParams::default())
        .await
        .unwrap_or_default();
    if phase != "Succeeded" {
        bail!("pod {name} failed; its output:\n{output}");
    }
    Ok(output)
}
