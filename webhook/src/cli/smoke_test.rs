//! `stsguard smoke-test`: proves, from inside the cluster, that the API server
//! calls the webhook and applies what it says — what `helm test` runs.
//!
//! Two server-side dry runs (nothing is stored), with the Pod's ServiceAccount:
//! the lab StatefulSet must come back with readiness and liveness probes on every
//! container and `podManagementPolicy: Parallel`, and a StatefulSet without
//! `volumeClaimTemplates` must be denied by stsguard. An API server that cannot
//! reach the webhook, RBAC that forbids the dry run, or a webhook that is not
//! registered each get a message saying so.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::Value;

const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const LAB: &str = include_str!("../../../deploy/examples/lab-statefulset.yaml");
const NO_CLAIMS: &str = include_str!("../../../deploy/examples/no-volume-claim-templates.yaml");

#[derive(Debug, clap::Args)]
pub struct SmokeTestArgs {
    /// Namespace to dry-run the StatefulSets in: one the webhook covers (its own
    /// namespace and kube-system never are).
    #[arg(long, env = "STSGUARD_SMOKE_NAMESPACE", default_value = "default")]
    namespace: String,
    /// The API server [default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT].
    #[arg(long, env = "STSGUARD_SMOKE_API_SERVER")]
    api_server: Option<String>,
    /// Bearer token file [default: the Pod's ServiceAccount token].
    #[arg(long, env = "STSGUARD_SMOKE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// CA bundle of the API server [default: the Pod's ServiceAccount ca.crt].
    #[arg(long, env = "STSGUARD_SMOKE_CA_FILE")]
    ca_file: Option<PathBuf>,
}

pub fn run(args: SmokeTestArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    runtime.block_on(smoke_test(args))
}

async fn smoke_test(args: SmokeTestArgs) -> anyhow::Result<()> {
    let SmokeTestArgs {
        namespace,
        api_server,
        token_file,
        ca_file,
    } = args;
    let api = ApiServer::new(api_server, token_file, ca_file)?;
    let path = format!(
        "/apis/apps/v1/namespaces/{namespace}/statefulsets?dryRun=All&fieldManager=stsguard-smoke-test"
    );

    let lab = statefulset(LAB)?;
    let (status, body) = api.post(&path, &lab).await?;
    let created = expect_created(status, &body, "the lab StatefulSet")?;
    check_mutated(&created)?;
    println!(
        "ok: a lab StatefulSet in {namespace} came back with probes on every container and podManagementPolicy Parallel"
    );

    let no_claims = statefulset(NO_CLAIMS)?;
    let (status, body) = api.post(&path, &no_claims).await?;
    check_denied(status, &body)?;
    println!("ok: a StatefulSet without volumeClaimTemplates was denied by stsguard");
    Ok(())
}

/// The StatefulSet of an example manifest, named by the API server so that dry
/// runs never collide with an object that exists.
fn statefulset(manifest: &str) -> anyhow::Result<Value> {
    for document in serde_yaml::Deserializer::from_str(manifest) {
        let mut object = <Value as serde::Deserialize>::deserialize(document)?;
        if object["kind"] == "StatefulSet" {
            let metadata = object["metadata"].as_object_mut().context("metadata")?;
            metadata.remove("name");
            metadata.remove("namespace");
            metadata.insert("generateName".into(), "stsguard-smoke-".into());
            return Ok(object);
        }
    }
    bail!("the built-in example holds no StatefulSet")
}

/// The object the API server returned for a dry-run create, or what went wrong.
fn expect_created(status: StatusCode, body: &Value, what: &str) -> anyhow::Result<Value> {
    if status == StatusCode::CREATED || status == StatusCode::OK {
        return Ok(body.clone());
    }
    bail!("{what} was not admitted: {}", explain(status, body))
}

/// Probes on every container and Parallel: what the built-ins add to the lab object.
pub(crate) fn check_mutated(object: &Value) -> anyhow::Result<()> {
    let spec = &object["spec"];
    if spec["podManagementPolicy"] != "Parallel" {
        bail!(
            "podManagementPolicy is {} after admission, not Parallel: the webhook did not mutate \
             the StatefulSet (is it registered, and the parallel policy enforced?)",
            spec["podManagementPolicy"]
        );
    }
    let containers = spec["template"]["spec"]["containers"]
        .as_array()
        .context("no containers came back")?;
    for container in containers {
        for probe in ["readinessProbe", "livenessProbe"] {
            if container.get(probe).is_none_or(Value::is_null) {
                bail!(
                    "container {} has no {probe} after admission: the probes policy did not run",
                    container["name"]
                );
            }
        }
    }
    Ok(())
}

/// The dry run of a StatefulSet without claim templates must fail with stsguard's denial.
pub(crate) fn check_denied(status: StatusCode, body: &Value) -> anyhow::Result<()> {
    let message = body["message"].as_str().unwrap_or_default();
    if status.is_success() {
        bail!(
            "a StatefulSet without volumeClaimTemplates was admitted: is the volume-claims policy \
             configured and in enforce mode?"
        );
    }
    if message.contains("denied the request") && message.contains("volume-claims") {
        return Ok(());
    }
    bail!(
        "the StatefulSet without volumeClaimTemplates was refused, but not by stsguard: {}",
        explain(status, body)
    )
}

/// What an error answer of the API server means, for the person running the test.
pub(crate) fn explain(status: StatusCode, body: &Value) -> String {
    let message = body["message"].as_str().unwrap_or("(no message)");
    let hint = if message.contains("failed calling webhook") {
        "the API server could not call the webhook: check that its pods are Ready, that the \
         Service has endpoints, and that the caBundle matches the serving certificate"
    } else if status == StatusCode::FORBIDDEN && body["reason"] == "Forbidden" {
        "the test's ServiceAccount may not create StatefulSets there (the chart's test Role)"
    } else if status == StatusCode::UNAUTHORIZED {
        "the API server did not accept the ServiceAccount token"
    } else {
        "unexpected answer"
    };
    format!("HTTP {status}: {message} — {hint}")
}

/// The API server, as the Pod's ServiceAccount.
struct ApiServer {
    host: String,
    port: u16,
    token: String,
    tls: Arc<rustls::ClientConfig>,
}

impl ApiServer {
    fn new(
        url: Option<String>,
        token: Option<PathBuf>,
        ca: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let url = match url {
            Some(url) => url,
            None => {
                let host = std::env::var("KUBERNETES_SERVICE_HOST").context(
                    "KUBERNETES_SERVICE_HOST is not set: run inside a Pod, or give --api-server",
                )?;
                let port =
                    std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
                format!("https://{host}:{port}")
            }
        };
        let uri: hyper::Uri = url
            .parse()
            .with_context(|| format!("`{url}` is not a URL"))?;
        let host = uri
            .host()
            .context("the API server URL has no host")?
            .trim_matches(['[', ']'])
            .to_string();
        let port = uri.port_u16().unwrap_or(443);
        let token_file = token.unwrap_or_else(|| PathBuf::from(SERVICE_ACCOUNT).join("token"));
        let token = std::fs::read_to_string(&token_file)
            .with_context(|| format!("could not read the token {}", token_file.display()))?
            .trim()
            .to_string();
        let ca_file = ca.unwrap_or_else(|| PathBuf::from(SERVICE_ACCOUNT).join("ca.crt"));
        let roots = crate::tls::trust_roots(&ca_file)?;
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            host,
            port,
            token,
            tls: Arc::new(tls),
        })
    }

    /// POSTs `body` as JSON; the status and the answer as JSON.
    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<(StatusCode, Value)> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .with_context(|| {
                format!(
                    "could not connect to the API server at {}:{}",
                    self.host, self.port
                )
            })?;
        // The API server's certificate names the Service, not its cluster IP.
        let name = if self.host.parse::<std::net::IpAddr>().is_ok() {
            ServerName::try_from("kubernetes.default.svc".to_string())?
        } else {
            ServerName::try_from(self.host.clone())?
        };
        let stream = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .context("TLS handshake with the API server failed")?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = Request::post(path)
            .header(hyper::header::HOST, &self.host)
            .header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(body)?)))?;
        let response = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            sender.send_request(request),
        )
        .await
        .context("the API server did not answer within 30 s")??;
        let status = response.status();
        for warning in response.headers().get_all(hyper::header::WARNING) {
            if let Ok(warning) = warning.to_str() {
                println!("warning from the API server: {warning}");
            }
        }
        let bytes = response.into_body().collect().await?.to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok((status, body))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_examples_become_generated_statefulsets() {
        let lab = statefulset(LAB).unwrap();
        assert_eq!(lab["metadata"]["generateName"], "stsguard-smoke-");
        assert!(lab["metadata"].get("name").is_none());
        assert!(
            statefulset(NO_CLAIMS).unwrap()["spec"]
                .get("volumeClaimTemplates")
                .is_none()
        );
    }

    #[test]
    fn a_mutated_statefulset_has_probes_and_parallel() {
        let mut object = statefulset(LAB).unwrap();
        let error = check_mutated(&object).unwrap_err().to_string();
        assert!(error.contains("not Parallel"), "{error}");
        object["spec"]["podManagementPolicy"] = json!("Parallel");
        let error = check_mutated(&object).unwrap_err().to_string();
        assert!(error.contains("readinessProbe"), "{error}");
        for container in object["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
        {
            container["readinessProbe"] = json!({"tcpSocket": {"port": "http"}});
            container["livenessProbe"] = json!({"tcpSocket": {"port": "http"}});
        }
        check_mutated(&object).unwrap();
    }

    #[test]
    fn denials_are_told_apart_from_other_refusals() {
        let denied = json!({"kind": "Status", "message": "admission webhook \"statefulsets.stsguard.io\" denied the request: policy volume-claims denied StatefulSet default/stsguard-smoke-*: ..."});
        check_denied(StatusCode::FORBIDDEN, &denied).unwrap();
        let error = check_denied(StatusCode::CREATED, &json!({}))
            .unwrap_err()
            .to_string();
        assert!(error.contains("was admitted"), "{error}");
        let unreachable = json!({"message": "Internal error occurred: failed calling webhook \"statefulsets.stsguard.io\": dial tcp 10.0.0.1:443: connect: connection refused"});
        let error = check_denied(StatusCode::INTERNAL_SERVER_ERROR, &unreachable)
            .unwrap_err()
            .to_string();
        assert!(error.contains("could not call the webhook"), "{error}");
        let forbidden = json!({"reason": "Forbidden", "message": "statefulsets.apps is forbidden"});
        assert!(explain(StatusCode::FORBIDDEN, &forbidden).contains("test Role"));
    }
}
