//! The app over real HTTP, served in-process on a free port, counting into a temp dir.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::{Http, InProcess, stored, visit_number};
use counter_app::counter::Storage;
use http::{Method, StatusCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_get_root_counts_a_visit() {
    let dir = tempfile::tempdir().unwrap();
    let visits = dir.path().join("visits");
    let app = InProcess::start(&visits, Storage::GroupCommit, "web-0").await;
    let http = &app.http;

    for expected in 1..=3 {
        let page = http.get("/").await;
        assert_eq!(page.status, StatusCode::OK, "{page:?}");
        assert_eq!(visit_number(&page.body), expected);
        assert!(page.body.contains("Europe/Moscow"), "{}", page.body);
        assert!(page.body.contains(r#"<code id="pod">web-0</code>"#));
        assert_eq!(page.headers["cache-control"], "no-store");
        assert!(
            page.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
    }

    // Probes, scrapes, HEAD, JSON, unknown paths and wrong methods: none of them counts.
    for _ in 0..5 {
        assert_eq!(http.get("/healthz").await.status, StatusCode::OK);
        let ready = http.get("/readyz").await;
        assert_eq!(ready.status, StatusCode::OK, "{ready:?}");
        assert_eq!(http.get("/metrics").await.status, StatusCode::OK);
        assert_eq!(http.get("/visits").await.body, "3\n");
        let head = http.send(Method::HEAD, "/", &[]).await.unwrap();
        assert_eq!(head.status, StatusCode::OK);
        assert!(head.body.is_empty());
        assert_eq!(http.get("/favicon.ico").await.status, StatusCode::NOT_FOUND);
        let post = http.send(Method::POST, "/", &[]).await.unwrap();
        assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    }
    assert_eq!(http.count().await, 3);
    assert_eq!(stored(&visits), 3);

    let metrics = http.get("/metrics").await;
    assert!(
        metrics.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    for line in [
        "counter_app_visits_total 3",
        "counter_app_stored_visits 3",
        "counter_app_http_requests_total{route=\"/\",status=\"200\"} 8",
        "counter_app_http_requests_total{route=\"/healthz\",status=\"200\"} 5",
        "counter_app_http_requests_total{route=\"other\",status=\"404\"} 5",
    ] {
        assert!(
            metrics.body.lines().any(|l| l == line),
            "no {line:?} in\n{}",
            metrics.body
        );
    }
    app.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visits_is_a_number_or_json_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let app = InProcess::start(&dir.path().join("visits"), Storage::GroupCommit, "web-1").await;
    app.http.get("/").await;
    app.http.get("/").await;

    let text = app.http.get("/visits").await;
    assert_eq!(text.body, "2\n");
    assert!(
        text.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );

    let json = app
        .http
        .send(Method::GET, "/visits", &[("accept", "application/json")])
        .await
        .unwrap();
    assert_eq!(json.headers["content-type"], "application/json");
    let value: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(value, serde_json::json!({"visits": 2, "pod": "web-1"}));
    assert_eq!(json.headers["vary"], "accept");
    app.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_names_the_pod() {
    let dir = tempfile::tempdir().unwrap();
    let app = InProcess::start(&dir.path().join("visits"), Storage::GroupCommit, "web-7").await;
    for (method, path) in [
        (Method::GET, "/"),
        (Method::HEAD, "/"),
        (Method::GET, "/visits"),
        (Method::GET, "/healthz"),
        (Method::GET, "/readyz"),
        (Method::GET, "/metrics"),
        (Method::GET, "/no/such/page"),
        (Method::DELETE, "/visits"),
    ] {
        let reply = app.http.send(method.clone(), path, &[]).await.unwrap();
        assert_eq!(
            reply.headers["x-pod-name"], "web-7",
            "{method} {path}: {reply:?}"
        );
    }
    app.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let visits = dir.path().join("visits");
    let app = InProcess::start(&visits, Storage::GroupCommit, "web-0").await;
    for _ in 0..5 {
        app.http.get("/").await;
    }
    app.shut_down().await;
    assert_eq!(stored(&visits), 5);

    let app = InProcess::start(&visits, Storage::GroupCommit, "web-0").await;
    assert_eq!(app.http.count().await, 5);
    assert_eq!(visit_number(&app.http.get("/").await.body), 6);
    app.shut_down().await;
    assert_eq!(stored(&visits), 6);
}

/// N clients × M visits each, all at once: exactly N×M counted, every number handed out once.
async fn all_concurrent_visits_are_counted(storage: Storage, clients: u64, each: u64) {
    let dir = tempfile::tempdir().unwrap();
    let visits = dir.path().join("visits");
    let app = InProcess::start(&visits, storage, "web-0").await;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        // A client of its own per task: separate connections, like separate browsers.
        let http = Http::new(app.http.addr);
        tasks.push(tokio::spawn(async move {
            let mut numbers = Vec::new();
            for _ in 0..each {
                let page = http.get("/").await;
                assert_eq!(page.status, StatusCode::OK, "{page:?}");
                numbers.push(visit_number(&page.body));
            }
            numbers
        }));
    }
    let mut seen = HashSet::new();
    for task in tasks {
        for number in task.await.unwrap() {
            assert!(
                seen.insert(number),
                "visit number {number} handed out twice"
            );
        }
    }
    let total = clients * each;
    assert_eq!(seen, (1..=total).collect::<HashSet<_>>());
    assert_eq!(app.http.count().await, total);
    app.shut_down().await;
    assert_eq!(stored(&visits), total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_visits_group_commit() {
    all_concurrent_visits_are_counted(Storage::GroupCommit, 32, 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_visits_naive_baseline() {
    // The benchmark baseline must count correctly too, or the comparison means nothing.
    all_concurrent_visits_are_counted(Storage::Naive, 8, 25).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_answers_every_visit_it_counted() {
    let dir = tempfile::tempdir().unwrap();
    let visits = dir.path().join("visits");
    let app = InProcess::start(&visits, Storage::GroupCommit, "web-0").await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let http = Http::new(app.http.addr);
        let (stop, ok) = (Arc::clone(&stop), Arc::clone(&ok));
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match http.send(Method::GET, "/", &[]).await {
                    Ok(reply) if reply.status == StatusCode::OK => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    // Refused or cut off once the server stops.
                    _ => break,
                }
            }
        }));
    }
    while ok.load(Ordering::Relaxed) < 200 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    app.shut_down().await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    // Everything acknowledged is stored, and nothing was stored without an answer.
    assert_eq!(stored(&visits), ok.load(Ordering::Relaxed));
}
