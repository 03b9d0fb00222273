//! The admission server over real HTTPS: the wire format, bad input, misbehaving
//! policies, hot reload of policies and certificates.

mod support;

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use stsguard_webhook::server::ConnectionTimeouts;
use support::{TestServer, apply_patch, client_trusting, config_text, eventually, fixture};

fn lab_review() -> Value {
    fixture("reviews/lab-statefulset.create.json")
}

const LABELLER: &str = "policies:
  - {name: labeller, module: SCRIPTED, settings: {behaviour: label, key: team, value: storage}}";

#[tokio::test(flavor = "multi_thread")]
async fn health_readiness_and_metrics_over_http2_and_http1() {
    let server = TestServer::start(LABELLER).await;
    assert_eq!(server.get("/healthz").await.0, 200);
    let (status, body) = server.get("/readyz").await;
    assert_eq!(status.as_u16(), 200);
    let mut lines = body.lines();
    assert_eq!(lines.next(), Some("ready: 1 policies"));
    let module = lines.next().unwrap();
    assert!(
        module.starts_with("policy labeller ") && module.contains(" sha256:"),
        "{body}"
    );

    let http1 = client_trusting(&server.certificate.ca, true);
    let response = http1
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    let response = server
        .client
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);

    server.review("/mutate", &lab_review()).await;
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains(
            r#"stsguard_reviews_total{outcome="patched",operation="CREATE",kind="StatefulSet",dry_run="false"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"stsguard_policy_evaluations_total{policy="labeller",mode="enforce",result="mutated"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"stsguard_build_info{version="#),
        "{metrics}"
    );
    assert!(
        metrics.contains("process_resident_memory_bytes "),
        "{metrics}"
    );
    // A kind no policy names is `other`, so clients cannot grow the label set.
    let mut pod = lab_review();
    pod["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "Pod"});
    pod["request"]["dryRun"] = json!(true);
    server.review("/mutate", &pod).await;
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains(
            r#"stsguard_reviews_total{outcome="allowed",operation="CREATE",kind="other",dry_run="true"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"stsguard_policy_evaluation_duration_seconds_count{policy="labeller"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("stsguard_policies_loaded 1"), "{metrics}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mutation_comes_back_as_a_base64_json_patch_that_round_trips() {
    let server = TestServer::start(LABELLER).await;
    let review = lab_review();
    let response = server.review("/mutate", &review).await;
    assert_eq!(response["uid"], review["request"]["uid"]);
    assert_eq!(response["allowed"], true);
    assert_eq!(
        response["warnings"],
        json!(["stsguard/labeller: set label team=storage"])
    );
    assert_eq!(response["auditAnnotations"], json!({"labeller": "mutated"}));
    let original = &review["request"]["object"];
    let patched = apply_patch(original, &response);
    let mut expected = original.clone();
    expected["metadata"]["labels"]["team"] = "storage".into();
    assert_eq!(
        patched, expected,
        "only the label changed; nothing else was removed"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unchanged_objects_get_no_patch_fields() {
    let server = TestServer::start(
        "policies: [{name: quiet, module: SCRIPTED, settings: {behaviour: allow}}]",
    )
    .await;
    let response = server.review("/mutate", &lab_review()).await;
    assert_eq!(response["allowed"], true);
    assert!(
        response.get("patch").is_none() && response.get("patchType").is_none(),
        "{response}"
    );
    assert!(response.get("auditAnnotations").is_none(), "{response}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_denial_names_the_policy_the_object_and_the_reason() {
    let server = TestServer::start(
        "policies: [{name: gate, module: SCRIPTED, settings: {behaviour: deny, message: add a storage request}}]",
    )
    .await;
    let response = server.review("/mutate", &lab_review()).await;
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 403);
    assert_eq!(
        response["status"]["message"],
        "policy gate denied StatefulSet default/counter: add a storage request"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_bodies_get_clear_answers_not_errors() {
    let server = TestServer::start(LABELLER).await;
    let mut wrong_version = lab_review();
    wrong_version["apiVersion"] = "admission.k8s.io/v1beta1".into();
    let mut no_uid = lab_review();
    no_uid["request"].as_object_mut().unwrap().remove("uid");
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let nested_old_object = format!(
        r#"{{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {{"uid": "u", "oldObject": {nested}}}}}"#
    );
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{\"apiVersion\": ".to_vec(), "not valid JSON"),
        (
            br#"{"hello": "world"}"#.to_vec(),
            "expected kind AdmissionReview",
        ),
        (
            serde_json::to_vec(&wrong_version).unwrap(),
            "unsupported apiVersion",
        ),
        (serde_json::to_vec(&no_uid).unwrap(), "no `uid`"),
        (nested.into_bytes(), "not a JSON object"),
        (nested_old_object.into_bytes(), "recursion limit"),
    ];
    for (body, expected) in cases {
        let (status, answer) = server.post("/mutate", body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["response"]["allowed"], false);
        assert_eq!(answer["response"]["status"]["code"], 400);
        let message = answer["response"]["status"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{message}");
    }
    // The uid is echoed whenever it could be read.
    let (_, answer) = server
        .post("/mutate", serde_json::to_vec(&wrong_version).unwrap())
        .await;
    assert_eq!(answer["response"]["uid"], wrong_version["request"]["uid"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_over_the_limit_get_413() {
    let server = TestServer::start(&format!("maxRequestBytes: 64Ki\n{LABELLER}")).await;
    let mut review = lab_review();
    review["request"]["object"]["metadata"]["annotations"]["big"] = "x".repeat(100_000).into();
    let (status, answer) = server
        .post("/mutate", serde_json::to_vec(&review).unwrap())
        .await;
    assert_eq!(status, 413);
    assert!(
        answer.as_str().unwrap().contains("maxRequestBytes"),
        "{answer}"
    );
    // Far beyond HTTP/2's flow-control windows too: read to its end (not held),
    // then answered. (reqwest copes with an answer sent mid-upload either way;
    // curl over HTTP/2 did not, which is why the server now drains the body.)
    let (status, answer) = server.post("/mutate", vec![b' '; 4 << 20]).await;
    assert_eq!(status, 413, "{answer}");
    // The server is fine afterwards.
    server.review("/mutate", &lab_review()).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_policy_by_name_and_unknown_names_are_404() {
    let server = TestServer::start(
        "policies:
  - {name: gate, module: SCRIPTED, settings: {behaviour: deny, message: no}}
  - {name: labeller, module: SCRIPTED, settings: {behaviour: label, key: a, value: b}}",
    )
    .await;
    assert_eq!(
        server.review("/mutate", &lab_review()).await["allowed"],
        false
    );
    let response = server.review("/mutate/labeller", &lab_review()).await;
    assert_eq!(response["allowed"], true);
    assert!(response["patch"].is_string());
    let (status, _) = server
        .post("/mutate/nope", serde_json::to_vec(&lab_review()).unwrap())
        .await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deletes_pass_untouched() {
    let server = TestServer::start(
        "policies: [{name: gate, module: SCRIPTED, settings: {behaviour: deny, message: no}}]",
    )
    .await;
    let mut review = lab_review();
    review["request"]["operation"] = "DELETE".into();
    review["request"]["oldObject"] = review["request"]["object"].take();
    let response = server.review("/mutate", &review).await;
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none());
    server.stop().await;
}

/// Sends `review` to `path` without waiting; the task yields the AdmissionReview
/// that comes back.
fn review_in_background(
    server: &TestServer,
    path: &str,
    review: &Value,
) -> tokio::task::JoinHandle<Value> {
    let request = server
        .client
        .post(format!("{}{path}", server.url))
        .body(serde_json::to_vec(review).unwrap());
    tokio::spawn(async move {
        let response = request.send().await.unwrap();
        response.json::<Value>().await.unwrap()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_looping_policy_does_not_hold_up_other_reviews() {
    let server = TestServer::start(
        "policies:
  - {name: looper, module: SCRIPTED, timeout: 3s, failurePolicy: ignore, settings: {behaviour: loop}}
  - {name: hog, module: SCRIPTED, memoryLimit: 8Mi, failurePolicy: ignore, settings: {behaviour: memory-bomb}}
  - {name: trapper, module: SCRIPTED, failurePolicy: fail, settings: {behaviour: trap}}
  - {name: labeller, module: SCRIPTED, settings: {behaviour: label, key: a, value: b}}",
    )
    .await;
    let review = lab_review();
    let looping = review_in_background(&server, "/mutate/looper", &review);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..50 {
        let response = server.review("/mutate/labeller", &review).await;
        assert_eq!(response["allowed"], true);
    }
    let hog = server.review("/mutate/hog", &review).await;
    assert_eq!(hog["allowed"], true);
    assert_eq!(
        hog["warnings"][0],
        "stsguard/hog: the policy could not evaluate this object (memory limit) and was skipped"
    );
    assert_eq!(
        hog["auditAnnotations"],
        json!({"hog": "failed (memory_limit): skipped"})
    );
    let trapped = server.review("/mutate/trapper", &review).await;
    assert_eq!(trapped["allowed"], false);
    assert_eq!(
        trapped["auditAnnotations"],
        json!({"trapper": "failed (trap): denied (failurePolicy fail)"})
    );
    assert!(
        !looping.is_finished(),
        "the labeller reviews all finished while the looper still ran"
    );
    let looped = looping.await.unwrap();
    assert_eq!(looped["response"]["allowed"], true);
    assert!(
        looped["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("(timeout)")
    );
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains(r#"stsguard_policy_timeouts_total{policy="looper"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"stsguard_policy_errors_total{policy="hog",reason="memory_limit"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"stsguard_policy_errors_total{policy="trapper",reason="trap"} 1"#),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reviews_of_trusted_policies_never_queue_behind_a_suspect_one() {
    // One evaluation thread, held by a looping policy (never trusted: it never
    // finished cleanly) with a second looping review queued behind it. A
    // policy that has run cleanly is decided on the worker that read its review.
    let server = TestServer::start_with(
        "policies:
  - {name: looper, module: SCRIPTED, timeout: 3s, failurePolicy: ignore, settings: {behaviour: loop}}
  - {name: labeller, module: SCRIPTED, settings: {behaviour: label, key: a, value: b}}",
        1,
        ConnectionTimeouts::default(),
    )
    .await;
    let review = lab_review();
    // Its first review goes to the thread (nothing is known of it yet).
    assert_eq!(
        server.review("/mutate/labeller", &review).await["allowed"],
        true
    );
    let looping: Vec<_> = (0..2)
        .map(|_| review_in_background(&server, "/mutate/looper", &review))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..50 {
        let response = server.review("/mutate/labeller", &review).await;
        assert_eq!(response["allowed"], true);
        assert!(response["patch"].is_string(), "{response}");
    }
    assert!(
        looping.iter().all(|task| !task.is_finished()),
        "the labeller's reviews were answered while the looper held the evaluation thread"
    );
    for task in looping {
        let looped = task.await.unwrap();
        assert_eq!(looped["response"]["allowed"], true, "{looped}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_config_is_applied_and_a_broken_one_is_not() {
    let server = TestServer::start(LABELLER).await;
    let review = lab_review();
    assert_eq!(server.review("/mutate", &review).await["allowed"], true);

    // A valid change: the new set is compiled in the background and swapped in.
    std::fs::write(
        &server.config_path,
        config_text("policies: [{name: gate, module: SCRIPTED, settings: {behaviour: deny, message: closed}}]"),
    )
    .unwrap();
    eventually("the new policy denies", || async {
        server.review("/mutate", &review).await["allowed"] == false
    })
    .await;

    // A broken change (invalid settings) is refused; the previous set keeps serving.
    std::fs::write(
        &server.config_path,
        config_text(
            "policies: [{name: gate, module: SCRIPTED, settings: {behaviour: not-a-behaviour}}]",
        ),
    )
    .unwrap();
    eventually("the failed reload is counted", || async {
        server
            .get("/metrics")
            .await
            .1
            .contains(r#"stsguard_reloads_total{what="policies",result="failure"} 1"#)
    })
    .await;
    let response = server.review("/mutate", &review).await;
    assert_eq!(response["allowed"], false, "the old set still serves");
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap()
            .contains("closed")
    );

    // YAML that does not parse is refused the same way.
    std::fs::write(&server.config_path, "policies: [").unwrap();
    eventually("the second failed reload is counted", || async {
        server
            .get("/metrics")
            .await
            .1
            .contains(r#"stsguard_reloads_total{what="policies",result="failure"} 2"#)
    })
    .await;
    assert_eq!(server.review("/mutate", &review).await["allowed"], false);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stalls_mid_headers_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let timeouts = ConnectionTimeouts {
        header_read: Duration::from_millis(300),
        ..ConnectionTimeouts::default()
    };
    let server = TestServer::start_with(LABELLER, 16, timeouts).await;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&server.certificate.ca).unwrap())
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ));
    let tcp = tokio::net::TcpStream::connect(server.url.trim_start_matches("https://"))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut stream = connector.connect(name, tcp).await.unwrap();
    stream
        .write_all(b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer));
    assert!(
        closed.await.is_ok(),
        "the server still held a connection whose headers never ended"
    );
    let response = server.review("/mutate", &lab_review()).await;
    assert_eq!(response["allowed"], true, "others are served as before");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_rotate_while_serving_and_garbage_is_ignored() {
    let server = TestServer::start(LABELLER).await;
    let files = server.certificate.files.clone();

    // Files land whole, the way a Secret volume's update lands: a plain write could
    // be polled half-done, and count as two failed reloads instead of one.
    let staging = server.dir.path().join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    let replace = |path: &std::path::Path, contents: &[u8]| {
        let tmp = staging.join(path.file_name().unwrap());
        std::fs::write(&tmp, contents).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    };

    // Garbage first: the old certificate keeps being served.
    replace(&files.cert, b"not a certificate");
    eventually("the failed certificate reload is counted", || async {
        server
            .get("/metrics")
            .await
            .1
            .contains(r#"stsguard_reloads_total{what="certificate",result="failure"} 1"#)
    })
    .await;
    let fresh_client = client_trusting(&server.certificate.ca, false);
    assert_eq!(
        fresh_client
            .get(format!("{}/healthz", server.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // A new CA and certificate, written the way cert-manager's Secret update lands.
    let other = tempfile::tempdir().unwrap();
    let rotated = stsguard_webhook::tls::self_signed(other.path(), &["127.0.0.1".into()]).unwrap();
    for (from, to) in [
        (&rotated.files.key, &files.key),
        (&rotated.files.cert, &files.cert),
    ] {
        replace(to, &std::fs::read(from).unwrap());
    }
    let new_client = client_trusting(&rotated.ca, false);
    eventually("new connections get the rotated certificate", || async {
        new_client
            .get(format!("{}/healthz", server.url))
            .send()
            .await
            .is_ok()
    })
    .await;
    let old_ca_client = client_trusting(&server.certificate.ca, false);
    assert!(
        old_ca_client
            .get(format!("{}/healthz", server.url))
            .send()
            .await
            .is_err()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_module_file_is_reloaded_and_a_broken_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("rule.wasm");
    std::fs::copy(stsguard_webhook::testing::scripted_policy(), &module).unwrap();
    let server = TestServer::start(&format!(
        "policies: [{{name: rule, module: {}, settings: {{behaviour: label, key: a, value: b}}}}]",
        module.display()
    ))
    .await;
    let review = lab_review();
    assert!(server.review("/mutate", &review).await["patch"].is_string());

    // The module is replaced by something that is not a component: refused, and
    // the compiled old one keeps serving.
    std::fs::write(&module, b"garbage").unwrap();
    eventually("the failed module reload is counted", || async {
        server
            .get("/metrics")
            .await
            .1
            .contains(r#"stsguard_reloads_total{what="policies",result="failure"} 1"#)
    })
    .await;
    assert!(server.review("/mutate", &review).await["patch"].is_string());

    // A valid component again: reloaded.
    std::fs::copy(stsguard_webhook::testing::scripted_policy(), &module).unwrap();
    eventually("the module reload succeeds", || async {
        server
            .get("/metrics")
            .await
            .1
            .contains(r#"stsguard_reloads_total{what="policies",result="success"} 1"#)
    })
    .await;
    assert!(server.review("/mutate", &review).await["patch"].is_string());
    server.stop().await;
}
