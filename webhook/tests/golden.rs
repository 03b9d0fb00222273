//! The built-in policies as the server runs them — embedded wasm components in
//! the real engine — on every scenario in `policies/fixtures/golden/`:
//!
//! - the object after the default chain equals `expected.json`, or the denial
//!   contains `denied.txt`;
//! - the JSON Patch in the response, applied to the original, gives exactly that
//!   object (nothing the policies did not mean to change is removed);
//! - the chain is idempotent: run on its own output, it returns no patch.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stsguard_webhook::admission::{self, Decision};
use stsguard_webhook::chain::{PolicySet, Selection};
use stsguard_webhook::config::Config;
use stsguard_webhook::review::{self, ReviewRequest};

fn scenarios() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/fixtures/golden");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("request.json").is_file())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 10,
        "expected the golden scenarios in {}",
        root.display()
    );
    dirs
}

fn review(request: &Value) -> ReviewRequest {
    let body =
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request});
    review::parse(&serde_json::to_vec(&body).unwrap()).unwrap()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

#[test]
fn built_in_chain_matches_every_golden_scenario_as_wasm() {
    let policies = PolicySet::load(&support::engine(), &Config::default()).unwrap();
    let deadline = || Instant::now() + Duration::from_secs(30);
    let mut failures = Vec::new();
    for dir in scenarios() {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let request = read_json(&dir.join("request.json"));
        let mut reviewed = review(&request);
        let Decision { response, .. } =
            admission::decide(&mut reviewed, &policies, Selection::All, deadline());
        if dir.join("denied.txt").is_file() {
            let expected = std::fs::read_to_string(dir.join("denied.txt")).unwrap();
            let message = response
                .status
                .as_ref()
                .map(|status| status.message.clone())
                .unwrap_or_default();
            if response.allowed || !message.contains(expected.trim()) {
                failures.push(format!(
                    "{name}: expected a denial containing {expected:?}, got {response:?}"
                ));
            }
            // What earlier policies changed is put back: the object stays as sent.
            if reviewed.object != request["object"] {
                failures.push(format!("{name}: denied, but the object was left changed"));
            }
            continue;
        }
        let expected = read_json(&dir.join("expected.json"));
        if !response.allowed {
            failures.push(format!("{name}: denied: {:?}", response.status));
            continue;
        }
        let patched = support::apply_patch(
            &request["object"],
            &serde_json::to_value(&response).unwrap()["response"],
        );
        if patched != expected {
            failures.push(format!(
                "{name}: the patched object differs from expected.json\n got: {patched}\nwant: {expected}"
            ));
        }
        if reviewed.object != expected {
            failures.push(format!(
                "{name}: the chain's object differs from the patched one"
            ));
        }
        // Idempotent: the chain's own output, submitted again, changes nothing.
        let mut again = request.clone();
        again["object"] = expected.clone();
        let second =
            admission::decide(&mut review(&again), &policies, Selection::All, deadline()).response;
        if !second.allowed || second.patch.is_some() {
            failures.push(format!("{name}: not idempotent: {second:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
