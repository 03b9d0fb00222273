//! Criterion benchmarks of the decision path, with the real engine and the real
//! built-in policies as wasm components:
//!
//! - `review/full-chain`: parse an AdmissionReview, run the default chain
//!   (probes → parallel → volume-claims, a fresh instance each), diff, and
//!   serialize the response — everything but HTTP and TLS;
//! - `review/full-chain-update`: the same for an UPDATE that changes the image
//!   (twice the size: `oldObject` comes along);
//! - `review/full-chain-on-<n>-threads`: the same on every core at once, per
//!   review by the wall clock (what the machine sustains);
//! - `policy/<name>`: one built-in policy's evaluation in a fresh instance;
//! - `host/parse-review`: the host's JSON parse alone;
//! - `audit/object`: one stored StatefulSet audited (stripped to what a CREATE
//!   carries, decided by the default chain, classified);
//! - `audit/list-page-500`: decoding one page of a list of 500 such objects, the
//!   host's share of reading them from the API server;
//! - `review/full-chain-with-cluster-reads`: `review/full-chain` with the three
//!   built-ins that read the cluster after it (six policies), their reads answered
//!   from a cache holding the review's headless Service, a default StorageClass
//!   and a PodDisruptionBudget among 10,000 Services;
//! - `policy/<name>` for those three too: one evaluation each, its read included;
//! - `cluster/get-of-10000` and `cluster/list-namespace-of-10000`: the host's side
//!   of one read from a cache of 10,000 Services (lookup, and the JSON text handed
//!   to the policy), what a policy's `get-object` costs besides the guest;
//! - `cluster/cache-10000-services`: filling a cache with 10,000 Services as a
//!   list brings them (strip, serialize, index);
//! - `signature/verify-one` and `signature/verify-tenth-of-ten`: checking a
//!   pulled module's signatures (once per load, never per review).
//!
//! Run: `cargo bench -p stsguard-webhook --bench chain`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use std::sync::Arc;

use stsguard_contract::cluster::{Objects, ResourceKind, Selector};
use stsguard_webhook::chain::{PolicySet, Selection};
use stsguard_webhook::cluster::Offline;
use stsguard_webhook::config::Config;
use stsguard_webhook::engine::ClusterReader;
use stsguard_webhook::engine::{Engine, EngineOptions};
use stsguard_webhook::registry::Pulled;
use stsguard_webhook::review::parse as parse_review;
use stsguard_webhook::testing;
use stsguard_webhook::{admission, audit};

/// The allocator the `stsguard` binary uses (see `src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const REVIEW_FIXTURE: &str = include_str!("../tests/fixtures/reviews/lab-statefulset.create.json");
/// An UPDATE that changes the image: the pod template changes, so probes are
/// added; `oldObject` makes the review twice the size.
const UPDATE_REQUEST: &str =
    include_str!("../../policies/fixtures/golden/lab-statefulset.update-image/request.json");

fn benchmarks(c: &mut Criterion) {
    let engine = Engine::new(&EngineOptions {
        cache_dir: Some(testing::cache_dir()),
        ..EngineOptions::default()
    })
    .expect("engine");
    let policies = PolicySet::load(&engine, &Config::default()).expect("built-in policies load");
    // Compact, as the API server writes them (the fixtures are indented for people).
    let compact = |text: &str| {
        serde_json::from_str::<serde_json::Value>(text)
            .unwrap()
            .to_string()
    };
    let review = compact(REVIEW_FIXTURE);
    let review = review.as_bytes();
    let request = parse_review(review).expect("the fixture is a valid review");
    let deadline = || Instant::now() + Duration::from_secs(10);

    // Sanity: the chain really mutates this object, so the benchmark measures work.
    let response =
        admission::decide(&mut request.clone(), &policies, Selection::All, deadline()).response;
    assert!(response.allowed && response.patch.is_some(), "{response:?}");

    // What the server does with a review's body besides HTTP: parse, decide,
    // serialize the answer.
    let review_once = |body: &[u8], selection: Selection| {
        let mut request = parse_review(black_box(body)).unwrap();
        let response = admission::decide(&mut request, &policies, selection, deadline()).response;
        black_box(serde_json::to_vec(&response).unwrap())
    };
    c.bench_function("review/full-chain", |b| {
        b.iter(|| review_once(review, Selection::All))
    });
    // The same on every core at once, timed by the wall clock: per review, this
    // is what the machine sustains (ideally the single-thread time / cores).
    // A gap to that is contention inside the engine or the allocator.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    c.bench_function(&format!("review/full-chain-on-{cores}-threads"), |b| {
        b.iter_custom(|iters| {
            let per_thread = iters.div_ceil(cores as u64);
            let started = Instant::now();
            std::thread::scope(|scope| {
                for _ in 0..cores {
                    scope.spawn(|| {
                        for _ in 0..per_thread {
                            review_once(review, Selection::All);
                        }
                    });
                }
            });
            started.elapsed()
        })
    });
    let update = compact(&format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{UPDATE_REQUEST}}}"#
    ));
    let response = admission::decide(
        &mut parse_review(update.as_bytes()).expect("the fixture is a valid request"),
        &policies,
        Selection::All,
        deadline(),
    )
    .response;
    assert!(response.allowed && response.patch.is_some(), "{response:?}");
    c.bench_function("review/full-chain-update", |b| {
        b.iter(|| review_once(update.as_bytes(), Selection::All))
    });
    // What `POST /mutate/parallel` does besides HTTP: the server's CPU per review
    // on that route is compared with this, not with the evaluation alone.
    c.bench_function("review/one-policy", |b| {
        b.iter(|| review_once(review, Selection::Only("parallel")))
    });
    for policy in policies.policies() {
        let name = policy.name().to_string();
        c.bench_function(&format!("policy/{name}"), |b| {
            // Each on the object as sent: the chain changes its request's object.
            b.iter_batched(
                || request.clone(),
                |mut request| {
                    let outcome =
                        policies.evaluate(&mut request, Selection::Only(&name), deadline());
                    (request, outcome)
                },
                BatchSize::SmallInput,
            )
        });
    }
    // The fixed cost of an evaluation: a fresh store and instance, and one
    // trivial call (the settings check of the first built-in).
    let first = &policies.policies()[0];
    let module_limits = stsguard_webhook::engine::Limits {
        timeout: Duration::from_secs(1),
        memory_bytes: 64 << 20,
    };
    let context = stsguard_webhook::engine::CallContext::default();
    c.bench_function("engine/fresh-instance", |b| {
        b.iter(|| {
            first
                .module()
                .validate_settings("{}", &module_limits, &context)
                .unwrap()
        })
    });
    // A StatefulSet as the API server stores it (status, managedFields, uid, ...).
    let stored =
        serde_json::from_str::<serde_json::Value>(UPDATE_REQUEST).unwrap()["oldObject"].clone();
    assert!(stored["status"].is_object() && stored["metadata"]["managedFields"].is_array());
    let auditor = audit::Auditor {
        policies: &policies,
        timeout: Duration::from_secs(10),
    };
    c.bench_function("audit/object", |b| {
        b.iter(|| {
            let evaluation = auditor.evaluate(audit::Target::from_item(stored.clone()), 0);
            black_box(evaluation.finding)
        })
    });
    let page = serde_json::json!({
        "kind": "StatefulSetList",
        "apiVersion": "apps/v1",
        "metadata": {"continue": "next"},
        "items": vec![stored.clone(); 500],
    })
    .to_string();
    c.bench_function("audit/list-page-500", |b| {
        b.iter(|| black_box(serde_json::from_str::<serde_json::Value>(&page).unwrap()))
    });

    c.bench_function("host/parse-review", |b| {
        b.iter(|| parse_review(black_box(review)).unwrap())
    });

    cluster_reads(c, &engine, review);
}

/// A Service as the API server stores it, `n` of 10,000, in one of 100 namespaces.
fn service(n: usize) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {
            "name": format!("service-{n}"), "namespace": format!("team-{}", n % 100),
            "uid": "0b6c6e0e-3f0a-4c5e-8a59-5d1c2b7e9f10", "resourceVersion": "123456",
            "creationTimestamp": "2026-12-01T10:00:00Z",
            "labels": {"app.kubernetes.io/name": format!("app-{n}"), "tier": "backend"},
            "managedFields": [{"manager": "kubectl", "operation": "Apply", "fieldsV1": {"f:spec": {}}}],
        },
        "spec": {
            "clusterIP": "10.96.12.34", "clusterIPs": ["10.96.12.34"], "type": "ClusterIP",
            "selector": {"app.kubernetes.io/name": format!("app-{n}")},
            "ports": [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}],
            "sessionAffinity": "None", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
            "internalTrafficPolicy": "Cluster",
        },
        "status": {"loadBalancer": {}},
    })
}

fn cluster_reads(c: &mut Criterion, engine: &Engine, review: &[u8]) {
    let mut objects: Vec<serde_json::Value> = (0..10_000).map(service).collect();
    // What the review's StatefulSet (default/counter) needs, among them.
    objects.extend([
        serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "counter-headless", "namespace": "default"},
            "spec": {"clusterIP": "None", "selector": {
                "app.kubernetes.io/name": "counter-app", "app.kubernetes.io/instance": "lab"}},
        }),
        serde_json::json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "standard",
                         "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "example.com/disk",
        }),
        serde_json::json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "counter", "namespace": "default"},
            "spec": {"maxUnavailable": 1,
                     "selector": {"matchLabels": {"app.kubernetes.io/name": "counter-app"}}},
        }),
    ]);
    let reader: Arc<dyn ClusterReader> = Offline::from_objects(objects.clone())
        .expect("objects place")
        .reader();

    let config = Config::default().with_cluster_builtins();
    let policies = PolicySet::load_pulled(engine, &config, &Pulled::default(), Some(&reader))
        .expect("the built-ins load");
    let deadline = || Instant::now() + Duration::from_secs(10);
    let mut request = parse_review(review).unwrap();
    let outcome = policies.evaluate(&mut request, Selection::All, deadline());
    let cluster_warnings: Vec<&String> = outcome
        .warnings
        .iter()
        .filter(|w| {
            ["headless-service", "storage-class", "disruption-budget"]
                .iter()
                .any(|p| w.starts_with(&format!("stsguard/{p}:")))
        })
        .collect();
    // Sanity: with their objects there, the three find nothing and fail nothing.
    assert!(cluster_warnings.is_empty(), "{cluster_warnings:?}");
    assert_eq!(outcome.runs.len(), 6);
    c.bench_function("review/full-chain-with-cluster-reads", |b| {
        b.iter(|| {
            let mut request = parse_review(black_box(review)).unwrap();
            let response =
                admission::decide(&mut request, &policies, Selection::All, deadline()).response;
            black_box(serde_json::to_vec(&response).unwrap())
        })
    });

    let request = parse_review(review).unwrap();
    for policy in &policies.policies()[3..] {
        let name = policy.name().to_string();
        c.bench_function(&format!("policy/{name}"), |b| {
            b.iter_batched(
                || request.clone(),
                |mut request| {
                    let outcome =
                        policies.evaluate(&mut request, Selection::Only(&name), deadline());
                    (request, outcome)
                },
                BatchSize::SmallInput,
            )
        });
    }

    let kind = ResourceKind::new("v1", "Service");
    c.bench_function("cluster/get-of-10000", |b| {
        b.iter(|| {
            let found = reader
                .get(&kind, Some(black_box("team-42")), black_box("service-4242"))
                .unwrap()
                .expect("there");
            // What the host hands the guest: its own copy of the text.
            black_box(found.to_string())
        })
    });
    let all = Selector::default();
    c.bench_function("cluster/list-namespace-of-10000", |b| {
        b.iter(|| {
            black_box(
                reader
                    .list(&kind, Some("team-42"), &all, usize::MAX)
                    .unwrap(),
            )
        })
    });
    let services: Vec<serde_json::Value> = (0..10_000).map(service).collect();
    c.bench_function("cluster/cache-10000-services", |b| {
        b.iter_batched(
            || services.clone(),
            |services| {
                let mut cache = Objects::new(kind.clone(), true);
                for service in services {
                    cache.insert(service);
                }
                black_box(cache.bytes())
            },
            BatchSize::LargeInput,
        )
    });
}

/// What verifying a pulled module's signatures costs a load: one signature by
/// a trusted key, and the same found after nine by other keys.
fn signatures(c: &mut Criterion) {
    use base64::Engine as _;
    use stsguard_webhook::signature::{Signature, SigningKey, Verifier, build_payload};
    let digest = format!("sha256:{}", "ab".repeat(32));
    let sign = |key: &SigningKey| {
        let payload = build_payload(
            "registry.example.com/team/rule",
            &digest,
            &Default::default(),
        );
        let signature =
            base64::engine::general_purpose::STANDARD.encode(key.sign(&payload).unwrap());
        Signature::new(&payload, &signature)
    };
    let trusted = SigningKey::generate(b"").unwrap().0;
    let verifier = Verifier::new(vec![trusted.public().clone()], Default::default());
    let one = vec![sign(&trusted)];
    c.bench_function("signature/verify-one", |b| {
        b.iter(|| black_box(verifier.verify(&digest, &one).unwrap()))
    });
    let mut ten: Vec<Signature> = (0..9)
        .map(|_| sign(&SigningKey::generate(b"").unwrap().0))
        .collect();
    ten.push(sign(&trusted));
    c.bench_function("signature/verify-tenth-of-ten", |b| {
        b.iter(|| black_box(verifier.verify(&digest, &ten).unwrap()))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    targets = benchmarks, signatures
}
criterion_main!(benches);
