//! The dashboard (`deploy/grafana/stsguard-dashboard.json`) and the chart's alerts
//! (`templates/prometheusrule.yaml`) query only metrics the server (or the
//! watching audit) really exposes:
//! a renamed metric would otherwise leave an empty panel or an alert that never
//! fires, found only when it is needed.

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use support::{TestServer, fixture};

/// Every sample name the exposition can hold, from its `# TYPE` lines (so also
/// families that have no sample yet, such as errors that did not happen).
fn exposed_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').expect("# TYPE <name> <type>");
        let suffixes: &[&str] = match kind {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            "info" => &["_info"],
            _ => &[""],
        };
        names.extend(suffixes.iter().map(|suffix| format!("{name}{suffix}")));
    }
    names
}

/// The `stsguard_*` and `process_*` names a query text uses.
fn referenced_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    for prefix in ["stsguard_", "process_"] {
        let mut from = 0;
        while let Some(at) = text[from..].find(prefix) {
            let start = from + at;
            let starts_a_word = start == 0
                || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
            let end = text[start..]
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .map_or(text.len(), |length| start + length);
            if starts_a_word {
                names.insert(text[start..end].to_string());
            }
            from = end;
        }
    }
    names
}

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_and_the_alerts_query_only_metrics_the_server_exposes() {
    // A chain that makes every family have a sample: prometheus-client leaves a
    // family out of the exposition until it has one.
    let yaml = "policies:
  - {name: labeller, module: SCRIPTED, settings: {behaviour: label, key: a, value: b}}
  - {name: watcher, module: SCRIPTED, mode: monitor, settings: {behaviour: deny, message: no}}
  - {name: broken, module: SCRIPTED, failurePolicy: ignore, settings: {behaviour: error, message: oops}}
  - {name: slow, module: SCRIPTED, failurePolicy: ignore, timeout: 50ms, settings: {behaviour: loop}}";
    let server = TestServer::start(yaml).await;
    server
        .review("/mutate", &fixture("reviews/lab-statefulset.create.json"))
        .await;
    std::fs::write(
        &server.config_path,
        format!(
            "reloadInterval: 50ms\n{}\n# changed\n",
            support::config_text(yaml)
        ),
    )
    .unwrap();
    support::eventually("the changed config is reloaded", || async {
        server
            .get("/metrics")
            .await
            .1
            .contains("stsguard_reloads_total{")
    })
    .await;
    let (status, exposition) = server.get("/metrics").await;
    assert_eq!(status, 200);
    let mut exposed = exposed_names(&exposition);
    server.stop().await;
    // The watching audit's own /metrics (the audit alerts query them); its
    // unlabelled families are exposed before they have a sample.
    exposed.extend(exposed_names(
        &stsguard_webhook::audit::AuditMetrics::default().encode(),
    ));

    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/stsguard-dashboard.json"))
            .expect("the dashboard is JSON");
    let queries: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .map(|target| {
            target["expr"]
                .as_str()
                .expect("every target has an expr")
                .to_string()
        })
        .collect();
    assert!(queries.len() >= 10, "the dashboard lost its panels");
    for (source, text) in [
        ("deploy/grafana/stsguard-dashboard.json", queries.join("\n")),
        (
            "deploy/charts/stsguard/templates/prometheusrule.yaml",
            // The alerts' expressions, not the prose around them.
            read("deploy/charts/stsguard/templates/prometheusrule.yaml")
                .lines()
                .filter(|line| line.trim_start().starts_with("expr:"))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
    ] {
        let referenced = referenced_names(&text);
        assert!(referenced.len() >= 4, "{source}: found no metric names");
        let missing: Vec<_> = referenced.difference(&exposed).collect();
        assert!(
            missing.is_empty(),
            "{source} queries metrics the server does not expose: {missing:?}\nexposed: {exposed:?}"
        );
    }
}

#[test]
fn names_are_read_from_queries_and_type_lines() {
    let exposed = exposed_names(
        "# TYPE stsguard_reviews counter\n# TYPE stsguard_review_duration_seconds histogram\n# TYPE stsguard_build info\n",
    );
    assert!(
        exposed.contains("stsguard_reviews_total")
            && exposed.contains("stsguard_review_duration_seconds_bucket")
    );
    assert!(exposed.contains("stsguard_build_info"));
    assert_eq!(
        referenced_names(
            "rate(stsguard_reviews_total{a=\"b\"}[5m]) / x_stsguard_no + process_open_fds"
        ),
        ["process_open_fds", "stsguard_reviews_total"]
            .map(String::from)
            .into()
    );
}
