//! The probes policy through the SDK harness, on the fixture AdmissionRequests in
//! `policies/fixtures/golden/*/request.json` and variations of them.

use stsguard_policy::serde_json::{Value, json};
use stsguard_policy::testing::{self, Outcome};

use super::*;

use testing::{annotated, golden_request as fixture};

fn run_with(request: &Value, settings: Value) -> Outcome {
    testing::run::<ProbesPolicy>(request, &settings)
}

fn run(request: &Value) -> Outcome {
    run_with(request, json!({}))
}

fn tcp(port: Value, t: Timing) -> Value {
    json!({"tcpSocket": {"port": port}, "initialDelaySeconds": t.initial_delay_seconds,
           "periodSeconds": t.period_seconds, "timeoutSeconds": t.timeout_seconds,
           "successThreshold": 1, "failureThreshold": t.failure_threshold})
}

fn http(path: &str, port: Value, t: Timing) -> Value {
    json!({"httpGet": {"path": path, "port": port, "scheme": "HTTP"},
           "initialDelaySeconds": t.initial_delay_seconds, "periodSeconds": t.period_seconds,
           "timeoutSeconds": t.timeout_seconds, "successThreshold": 1,
           "failureThreshold": t.failure_threshold})
}

/// The request's object with these probes set on `containers[index]`.
fn with_probes(request: &Value, index: usize, readiness: Value, liveness: Value) -> Value {
    let mut object = request["object"].clone();
    let container = &mut object["spec"]["template"]["spec"]["containers"][index];
    container["readinessProbe"] = readiness;
    container["livenessProbe"] = liveness;
    object
}

fn container(object: &Value, index: usize) -> &Value {
    &object["spec"]["template"]["spec"]["containers"][index]
}

#[test]
fn the_lab_statefulset_gets_tcp_probes_on_its_named_port_and_nothing_else() {
    let request = fixture("lab-statefulset.create");
    let out = run(&request);
    assert!(out.allowed);
    let expected = with_probes(
        &request,
        0,
        tcp(json!("http"), READINESS_DEFAULTS),
        tcp(json!("http"), LIVENESS_DEFAULTS),
    );
    assert_eq!(out.mutated_object, Some(expected));
    assert_eq!(
        out.warnings,
        ["added readinessProbe and livenessProbe (tcpSocket on port http) to container `counter`"]
    );
}

#[test]
fn fields_unknown_to_k8s_openapi_and_nulls_survive() {
    let request = fixture("future-fields.create");
    let mutated = run(&request).mutated_object.expect("probes added");
    let expected = with_probes(
        &request,
        0,
        tcp(json!("http"), READINESS_DEFAULTS),
        tcp(json!("http"), LIVENESS_DEFAULTS),
    );
    assert_eq!(mutated, expected);
    let c = container(&mutated, 0);
    assert_eq!(c["restartPolicyRules"][0]["action"], "Restart");
    assert_eq!(
        c["ports"][0]["x-future-port-field"],
        json!({"enabled": true})
    );
    assert!(
        mutated["spec"]["template"]["metadata"]
            .as_object()
            .unwrap()
            .contains_key("creationTimestamp")
    );
}

#[test]
fn a_numbered_port_is_probed_by_number() {
    let request = fixture("numbered-port.create");
    let mutated = run(&request).mutated_object.unwrap();
    assert_eq!(
        container(&mutated, 0)["readinessProbe"],
        tcp(json!(8080), READINESS_DEFAULTS)
    );
    assert_eq!(
        container(&mutated, 0)["livenessProbe"],
        tcp(json!(8080), LIVENESS_DEFAULTS)
    );
}

#[test]
fn a_statefulset_with_probes_gets_no_patch() {
    assert_eq!(
        run(&fixture("compliant.create")),
        Outcome {
            allowed: true,
            message: None,
            warnings: vec![],
            mutated_object: None
        }
    );
}

#[test]
fn idempotent_on_its_own_output() {
    for scenario in [
        "lab-statefulset.create",
        "sidecar.create",
        "http-annotations.create",
    ] {
        let request = fixture(scenario);
        let first = run(&request).mutated_object.unwrap();
        let again = run(&testing::with_object(&request, first));
        assert_eq!(again.mutated_object, None, "{scenario}");
        assert!(
            again.warnings.iter().all(|w| !w.starts_with("added")),
            "{scenario}: {:?}",
            again.warnings
        );
    }
}

#[test]
fn an_existing_probe_is_never_changed_only_the_missing_one_added() {
    let mut request = fixture("lab-statefulset.create");
    let own = json!({"exec": {"command": ["/bin/check"]}, "periodSeconds": 7});
    container_mut(&mut request, 0)["readinessProbe"] = own.clone();
    let out = run(&request);
    let mutated = out.mutated_object.unwrap();
    assert_eq!(container(&mutated, 0)["readinessProbe"], own);
    assert_eq!(
        container(&mutated, 0)["livenessProbe"],
        tcp(json!("http"), LIVENESS_DEFAULTS)
    );
    assert_eq!(
        out.warnings,
        ["added livenessProbe (tcpSocket on port http) to container `counter`"]
    );
}

fn container_mut(request: &mut Value, index: usize) -> &mut Value {
    &mut request["object"]["spec"]["template"]["spec"]["containers"][index]
}

#[test]
fn http_probes_when_annotations_name_paths() {
    let request = fixture("http-annotations.create");
    let mutated = run(&request).mutated_object.unwrap();
    assert_eq!(
        container(&mutated, 0)["readinessProbe"],
        http("/readyz", json!("http"), READINESS_DEFAULTS)
    );
    assert_eq!(
        container(&mutated, 0)["livenessProbe"],
        http("/healthz", json!("http"), LIVENESS_DEFAULTS)
    );

    // One path for both; a per-probe path wins over it.
    let request = annotated(
        fixture("lab-statefulset.create"),
        &[
            (HTTP_PATH_ANNOTATION, "/health"),
            (LIVENESS_PATH_ANNOTATION, "/live"),
        ],
    );
    let out = run(&request);
    let mutated = out.mutated_object.unwrap();
    assert_eq!(
        container(&mutated, 0)["readinessProbe"]["httpGet"]["path"],
        "/health"
    );
    assert_eq!(
        container(&mutated, 0)["livenessProbe"]["httpGet"]["path"],
        "/live"
    );
    assert_eq!(
        out.warnings,
        [
            "added readinessProbe (httpGet /health on port http) and livenessProbe (httpGet /live on port http) to container `counter`"
        ]
    );
}

#[test]
fn settings_set_paths_port_and_timings_and_annotations_override_them() {
    let settings = json!({
        "httpPath": "/healthz",
        "readiness": {"path": "/readyz", "periodSeconds": 3, "timeoutSeconds": 1},
        "liveness": {"initialDelaySeconds": 60, "failureThreshold": 10}
    });
    let request = fixture("lab-statefulset.create");
    let mutated = run_with(&request, settings.clone()).mutated_object.unwrap();
    let readiness = Timing {
        period_seconds: 3,
        timeout_seconds: 1,
        ..READINESS_DEFAULTS
    };
    let liveness = Timing {
        initial_delay_seconds: 60,
        failure_threshold: 10,
        ..LIVENESS_DEFAULTS
    };
    assert_eq!(
        container(&mutated, 0)["readinessProbe"],
        http("/readyz", json!("http"), readiness)
    );
    assert_eq!(
        container(&mutated, 0)["livenessProbe"],
        http("/healthz", json!("http"), liveness)
    );

    let request = annotated(
        fixture("lab-statefulset.create"),
        &[(READINESS_PATH_ANNOTATION, "/ready")],
    );
    let mutated = run_with(&request, settings).mutated_object.unwrap();
    assert_eq!(
        container(&mutated, 0)["readinessProbe"]["httpGet"]["path"],
        "/ready"
    );
}

/// The lab StatefulSet with a second declared port `admin` (9000).
fn two_ports() -> Value {
    let mut request = fixture("lab-statefulset.create");
    container_mut(&mut request, 0)["ports"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "admin", "containerPort": 9000, "protocol": "TCP"}));
    request
}

#[test]
fn the_port_annotation_takes_a_declared_name_or_any_number() {
    for (value, port) in [
        ("admin", json!("admin")),
        ("9000", json!(9000)),
        ("9100", json!(9100)),
    ] {
        let request = annotated(two_ports(), &[(PORT_ANNOTATION, value)]);
        let mutated = run(&request).mutated_object.unwrap();
        assert_eq!(
            container(&mutated, 0)["readinessProbe"]["tcpSocket"]["port"],
            port,
            "{value}"
        );
        assert_eq!(
            container(&mutated, 0)["livenessProbe"]["tcpSocket"]["port"],
            port,
            "{value}"
        );
    }
}

#[test]
fn the_port_setting_applies_where_declared_and_falls_back_elsewhere() {
    let mutated = run_with(&two_ports(), json!({"port": "admin"}))
        .mutated_object
        .unwrap();
    assert_eq!(
        container(&mutated, 0)["readinessProbe"]["tcpSocket"]["port"],
        "admin"
    );
    let mutated = run_with(&fixture("lab-statefulset.create"), json!({"port": 9000}))
        .mutated_object
        .unwrap();
    assert_eq!(
        container(&mutated, 0)["readinessProbe"]["tcpSocket"]["port"],
        "http"
    );
}

#[test]
fn a_bad_annotation_is_denied_on_create_naming_it() {
    let out = run(&fixture("bad-port-annotation.create"));
    assert!(!out.allowed);
    assert_eq!(
        out.message.as_deref(),
        Some(
            "annotation probes.stsguard.io/port names port htp, which container `counter` does not declare; declare it under ports or give the port number"
        )
    );
    for (key, value, wanted) in [
        (
            PORT_ANNOTATION,
            "8080/tcp",
            "annotation probes.stsguard.io/port: \"8080/tcp\" is neither a port number nor a port name",
        ),
        (
            PORT_ANNOTATION,
            "70000",
            "annotation probes.stsguard.io/port: port 70000 is out of range 1-65535",
        ),
        (
            HTTP_PATH_ANNOTATION,
            "healthz",
            "annotation probes.stsguard.io/http-path: path \"healthz\" must start with '/'",
        ),
        (
            SKIP_ANNOTATION,
            "yes",
            "annotation probes.stsguard.io/skip must be \"true\" or \"false\", not \"yes\"",
        ),
    ] {
        let out = run(&annotated(
            fixture("lab-statefulset.create"),
            &[(key, value)],
        ));
        assert!(!out.allowed, "{key}={value}");
        let message = out.message.unwrap();
        assert!(message.starts_with(wanted), "{message}");
        assert_eq!(out.mutated_object, None);
    }
    // Several bad annotations are all reported.
    let out = run(&annotated(
        fixture("lab-statefulset.create"),
        &[(PORT_ANNOTATION, "0"), (READINESS_PATH_ANNOTATION, "ready")],
    ));
    let message = out.message.unwrap();
    assert!(
        message.contains(PORT_ANNOTATION) && message.contains(READINESS_PATH_ANNOTATION),
        "{message}"
    );
}

#[test]
fn a_bad_annotation_on_update_is_a_warning_and_adds_nothing() {
    let request = annotated(
        fixture("lab-statefulset.update-image"),
        &[(PORT_ANNOTATION, "htp")],
    );
    let out = run(&request);
    assert!(out.allowed);
    assert_eq!(out.mutated_object, None);
    assert_eq!(out.warnings.len(), 1);
    assert!(
        out.warnings[0].starts_with("annotation probes.stsguard.io/port names port htp"),
        "{}",
        out.warnings[0]
    );
}

#[test]
fn the_skip_annotation_leaves_the_statefulset_alone() {
    let out = run(&fixture("probes-skipped.create"));
    assert_eq!(
        (out.allowed, out.mutated_object, out.warnings.len()),
        (true, None, 0)
    );
}

#[test]
fn sidecars_are_probed_init_containers_are_not_portless_containers_are_warned_about() {
    let request = annotated(
        fixture("sidecar.create"),
        &[(HTTP_PATH_ANNOTATION, "/healthz")],
    );
    let out = run(&request);
    let mutated = out.mutated_object.unwrap();
    let pod = &mutated["spec"]["template"]["spec"];
    // The main container takes the annotation's path...
    assert_eq!(
        pod["containers"][0]["readinessProbe"],
        http("/healthz", json!("http"), READINESS_DEFAULTS)
    );
    // ...the native sidecar the safe default on its own port...
    assert_eq!(
        pod["initContainers"][1]["readinessProbe"],
        tcp(json!("metrics"), READINESS_DEFAULTS)
    );
    assert_eq!(
        pod["initContainers"][1]["livenessProbe"],
        tcp(json!("metrics"), LIVENESS_DEFAULTS)
    );
    // ...the plain init container and the container without a port nothing.
    assert_eq!(
        pod["initContainers"][0],
        request["object"]["spec"]["template"]["spec"]["initContainers"][0]
    );
    assert_eq!(
        pod["containers"][1],
        request["object"]["spec"]["template"]["spec"]["containers"][1]
    );
    assert_eq!(
        out.warnings,
        [
            "container `backup` declares no TCP port, so no probe was added; declare its port under ports or give it readinessProbe and livenessProbe",
            "added readinessProbe and livenessProbe (httpGet /healthz on port http) to container `counter`",
            "added readinessProbe and livenessProbe (tcpSocket on port metrics) to sidecar `log-shipper`",
        ]
    );
}

#[test]
fn a_udp_only_container_has_no_port_to_probe() {
    let mut request = fixture("lab-statefulset.create");
    container_mut(&mut request, 0)["ports"] =
        json!([{"name": "dns", "containerPort": 53, "protocol": "UDP"}]);
    let out = run(&request);
    assert_eq!(out.mutated_object, None);
    assert_eq!(out.warnings.len(), 1);
    assert!(
        out.warnings[0].starts_with("container `counter` declares no TCP port"),
        "{}",
        out.warnings[0]
    );
}

#[test]
fn the_default_container_annotation_picks_the_main_container() {
    let mut request = annotated(
        fixture("sidecar.create"),
        &[(HTTP_PATH_ANNOTATION, "/healthz")],
    );
    let pod = &mut request["object"]["spec"]["template"]["spec"];
    pod["containers"][1]["ports"] =
        json!([{"name": "backup", "containerPort": 7000, "protocol": "TCP"}]);
    request["object"]["spec"]["template"]["metadata"]["annotations"] =
        json!({"kubectl.kubernetes.io/default-container": "backup"});
    let mutated = run(&request).mutated_object.unwrap();
    let pod = &mutated["spec"]["template"]["spec"];
    assert_eq!(
        pod["containers"][0]["readinessProbe"]["tcpSocket"]["port"],
        "http"
    );
    assert_eq!(
        pod["containers"][1]["readinessProbe"]["httpGet"]["path"],
        "/healthz"
    );
}

#[test]
fn update_adds_probes_only_when_the_template_changes_anyway() {
    let out = run(&fixture("lab-statefulset.update-scale"));
    assert_eq!((out.allowed, &out.mutated_object), (true, &None));
    assert_eq!(
        out.warnings,
        [
            "would add readinessProbe and livenessProbe (tcpSocket on port http) to container `counter`, but only with the next pod template change: adding probes now would restart every pod"
        ]
    );

    let request = fixture("lab-statefulset.update-image");
    let out = run(&request);
    let expected = with_probes(
        &request,
        0,
        tcp(json!("http"), READINESS_DEFAULTS),
        tcp(json!("http"), LIVENESS_DEFAULTS),
    );
    assert_eq!(out.mutated_object, Some(expected));
    assert_eq!(out.warnings.len(), 1);
    assert!(out.warnings[0].starts_with("added "), "{}", out.warnings[0]);
}

#[test]
fn a_template_change_only_in_fields_unknown_to_k8s_openapi_still_counts() {
    let mut request = fixture("lab-statefulset.update-scale");
    request["object"]["spec"]["template"]["spec"]["hostnameOverride"] = json!("counter");
    assert!(run(&request).mutated_object.is_some());
}

#[test]
fn a_broken_user_probe_is_warned_about_and_left_alone() {
    let mut request = fixture("compliant.create");
    let probe =
        &mut request["object"]["spec"]["template"]["spec"]["containers"][0]["livenessProbe"];
    probe["tcpSocket"] = json!({"port": "http"});
    probe["successThreshold"] = json!(3);
    let out = run(&request);
    assert_eq!(out.mutated_object, None);
    assert_eq!(
        out.warnings,
        [
            "container `ledger`: livenessProbe has 2 handlers but needs exactly one of exec, grpc, httpGet, tcpSocket; pods will fail to start",
            "container `ledger`: livenessProbe has successThreshold 3 but it must be 1; pods will fail to start",
        ]
    );
}

#[test]
fn other_kinds_pass_untouched() {
    let out = run(&fixture("deployment.create"));
    assert_eq!(
        (out.allowed, out.mutated_object, out.warnings.len()),
        (true, None, 0)
    );
}

#[test]
fn metadata_describes_the_policy() {
    let m = testing::metadata::<ProbesPolicy>();
    assert_eq!((m.name.as_str(), m.mutating), ("probes", true));
    assert_eq!(m.targets[0].kind, "StatefulSet");
    assert_eq!(m.settings_schema, include_str!("../settings.schema.json"));
}
