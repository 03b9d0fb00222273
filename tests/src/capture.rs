//! A webhook that only records: it allows every review unchanged and keeps the
//! AdmissionReview `request`s the API server sent, so the suite can see exactly what
//! a Kubernetes version sends (the golden fixtures are checked against it).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::webhook::{certificates, free_port};

/// A running recording webhook on a free port; stopped on drop.
pub struct CaptureWebhook {
    /// `https://HOST:PORT/capture`
    pub url: String,
    /// PEM of the CA that signed its serving certificate.
    pub ca_pem: String,
    requests: Arc<Mutex<Vec<Value>>>,
    server: JoinHandle<()>,
}

impl CaptureWebhook {
    /// Starts listening on `host` (an address the API server can reach).
    pub async fn start(host: IpAddr) -> anyhow::Result<Self> {
        let certs = certificates(host)?;
        let cert = CertificateDer::from_pem_slice(certs.cert_pem.as_bytes())
            .context("reading the capture webhook's certificate")?;
        let key = PrivateKeyDer::from_pem_slice(certs.key_pem.as_bytes())
            .context("reading the capture webhook's key")?;
        let mut tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)?;
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(tls));

        let address = SocketAddr::new(host, free_port(host)?);
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("listening on {address}"))?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let server = tokio::spawn(serve(listener, acceptor, requests.clone()));
        Ok(CaptureWebhook {
            url: format!("https://{address}/capture"),
            ca_pem: certs.ca_pem,
            requests,
            server,
        })
    }

    /// The `request`s received so far, in order, and forgets them.
    pub fn take(&self) -> Vec<Value> {
        std::mem::take(&mut *self.requests.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for CaptureWebhook {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve(listener: TcpListener, acceptor: TlsAcceptor, requests: Arc<Mutex<Vec<Value>>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, requests) = (acceptor.clone(), requests.clone());
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(stream).await else {
                return;
            };
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let requests = requests.clone();
                async move {
                    let body = request.into_body().collect().await?.to_bytes();
                    Ok::<_, hyper::Error>(Response::new(Full::new(answer(&body, &requests))))
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Records the review's `request` and allows it, unchanged.
fn answer(body: &[u8], requests: &Mutex<Vec<Value>>) -> Bytes {
    let review: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let request = review["request"].clone();
    let uid = request["uid"].clone();
    requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(request);
    let response = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": { "uid": uid, "allowed": true },
    });
    Bytes::from(response.to_string())
}

/// What is particular to one run in a captured request, replaced by fixed values so
/// that runs compare (and fixtures diff) cleanly: uids, the namespace, timestamps,
/// resource versions and the requesting user.
pub fn normalize(request: &mut Value, namespace: &str) {
    request["uid"] = json!("7f1d2c3b-4a5e-4f60-9b71-8c2d3e4f5a6b");
    request["namespace"] = json!(namespace);
    request["userInfo"] = json!({
        "username": "kubernetes-admin",
        "groups": ["system:masters", "system:authenticated"],
    });
    for member in ["object", "oldObject"] {
        let metadata = &mut request[member]["metadata"];
        if !metadata.is_object() {
            continue;
        }
        metadata["namespace"] = json!(namespace);
        for (field, value) in [
            ("uid", json!("0b6c6e0e-3f0a-4c5e-8a59-5d1c2b7e9f10")),
            ("resourceVersion", json!("1234")),
            ("creationTimestamp", json!("2026-12-01T10:00:00Z")),
        ] {
            // CREATE's object has `creationTimestamp: null`, and no uid: kept as sent.
            if metadata.get(field).is_some_and(|v| !v.is_null()) {
                metadata[field] = value;
            }
        }
        if let Some(entries) = metadata["managedFields"].as_array_mut() {
            for entry in entries {
                entry["time"] = json!("2026-12-01T10:00:00Z");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_allows_and_records() {
        let requests = Mutex::new(Vec::new());
        let review = json!({"request": {"uid": "u1", "operation": "CREATE"}});
        let body = answer(review.to_string().as_bytes(), &requests);
        let response: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(response["response"], json!({"uid": "u1", "allowed": true}));
        assert_eq!(requests.lock().unwrap()[0]["operation"], "CREATE");
    }

    #[test]
    fn normalize_replaces_what_differs_between_runs_only() {
        let mut request = json!({
            "uid": "abc", "namespace": "e2e-x", "userInfo": {"username": "me"},
            "object": {"metadata": {"name": "counter", "namespace": "e2e-x",
                "creationTimestamp": null,
                "managedFields": [{"manager": "kubectl", "time": "2030-01-01T00:00:00Z"}]}},
            "oldObject": {"metadata": {"name": "counter", "namespace": "e2e-x", "uid": "real",
                "resourceVersion": "99", "creationTimestamp": "2030-01-01T00:00:00Z"}},
        });
        normalize(&mut request, "lab");
        assert_eq!(request["namespace"], "lab");
        assert_eq!(request["object"]["metadata"]["namespace"], "lab");
        assert_eq!(
            request["object"]["metadata"]["creationTimestamp"],
            Value::Null
        );
        assert!(request["object"]["metadata"].get("uid").is_none());
        assert_eq!(
            request["object"]["metadata"]["managedFields"][0]["manager"],
            "kubectl"
        );
        assert_eq!(request["oldObject"]["metadata"]["resourceVersion"], "1234");
        assert_ne!(request["oldObject"]["metadata"]["uid"], "real");
        assert_eq!(request["userInfo"]["username"], "kubernetes-admin");
    }
}
