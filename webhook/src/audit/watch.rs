//! The continuous audit (`stsguard audit --watch`): a watch on StatefulSets
//! keeps every namespace's PolicyReport within seconds of what is stored, where
//! a scheduled run leaves it up to one period old.
//!
//! ```text
//!  kube-runtime watcher (list in pages, then watch; re-lists after a lost watch,
//!  with backoff)
//!     │ Init, InitApply*, InitDone   a (re)list: evaluated into a fresh buffer, which
//!     │                              replaces the state whole at InitDone, so objects
//!     │                              deleted while the watch was down drop out
//!     │ Apply(object)                evaluated; its namespace is dirty if its results changed
//!     │ Delete(object)               dropped; its namespace is dirty
//!     ▼
//!  WatchState: results by namespace and object
//!     │ every --report-interval, once the first list is done
//!     ▼
//!  each dirty namespace's report, server-side applied (a failed write stays dirty)
//! ```
//!
//! Policies that read the cluster make a StatefulSet's verdict depend on other
//! objects too: when the cluster caches change (a Service created, a
//! PodDisruptionBudget deleted), the StatefulSets of that namespace (all of
//! them, for a cluster-scoped kind such as StorageClass) are listed again and
//! re-evaluated at the next report interval.
//!
//! Only a changed verdict dirties a namespace (and logs, once per object and
//! finding): a StatefulSet's status changes
//! with every pod it starts, and re-evaluating it costs a few hundred
//! microseconds, but rewriting its namespace's report each time would not be
//! free for the API server. Reports are never written before the first list is
//! complete, so a report is never a partial picture of its namespace.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::ControlFlow;
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::{WatchStreamExt, watcher};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::list::{Scope, with_opt_out};
use super::policy_report::{PolicyReport, ReportResult, Writer, results_of};
use super::{Auditor, Evaluation, Target, log_finding};
use crate::audit::policy_report::Timestamp;
use crate::chain::ModuleIdentity;
use crate::cluster::Change;
use crate::errors::describe_error;
use tokio::sync::broadcast;

/// The results of every watched StatefulSet, by namespace and name.
#[derive(Debug, Default)]
pub struct WatchState {
    modules: HashMap<String, ModuleIdentity>,
    objects: BTreeMap<String, BTreeMap<String, Entry>>,
    /// The objects of a (re)list in progress.
    relisting: Option<BTreeMap<String, BTreeMap<String, Entry>>>,
    /// Namespaces whose report no longer says what `objects` does.
    dirty: BTreeSet<String>,
    /// Whether a list has completed: before, no report is written.
    synced: bool,
}

#[derive(Debug, Clone)]
struct Entry {
    finding: &'static str,
    results: Vec<ReportResult>,
}

impl Entry {
    /// The same verdict, whenever it was reached (what a status update that
    /// changes nothing yields: compared without copying the results).
    fn same_verdict(&self, other: &Entry) -> bool {
        let same = |a: &ReportResult, b: &ReportResult| {
            // Every field but the time (a new field must be named here).
            let ReportResult {
                policy,
                source,
                result,
                message,
                resources,
                properties,
                timestamp: _,
            } = a;
            *policy == b.policy
                && *source == b.source
                && *result == b.result
                && *message == b.message
                && *resources == b.resources
                && *properties == b.properties
        };
        self.finding == other.finding
            && self.results.len() == other.results.len()
            && self
                .results
                .iter()
                .zip(&other.results)
                .all(|(a, b)| same(a, b))
    }
}

impl WatchState {
    /// `modules`: each policy's module by name.
    pub fn new(modules: HashMap<String, ModuleIdentity>) -> Self {
        Self {
            modules,
            ..Self::default()
        }
    }

    /// A (re)list starts: what it lists replaces everything at [`Self::end_relist`].
    pub fn begin_relist(&mut self) {
        self.relisting = Some(BTreeMap::new());
    }

    /// The list is complete: its objects are the state now.
    pub fn end_relist(&mut self) {
        let Some(listed) = self.relisting.take() else {
            return;
        };
        let previous = std::mem::replace(&mut self.objects, listed);
        let namespaces: BTreeSet<&String> = previous.keys().chain(self.objects.keys()).collect();
        for namespace in namespaces {
            let changed = match (previous.get(namespace), self.objects.get(namespace)) {
                (Some(before), Some(now)) => {
                    before.len() != now.len()
                        || before.iter().any(|(name, entry)| {
                            now.get(name).is_none_or(|other| !entry.same_verdict(other))
                        })
                }
                _ => true,
            };
            if changed || !self.synced {
                self.dirty.insert(namespace.clone());
            }
        }
        self.synced = true;
    }

    /// One object's evaluation, from the list or the watch.
    pub fn apply(&mut self, evaluation: &Evaluation) {
        let target = &evaluation.target;
        if target.namespace.is_empty() {
            return;
        }
        let entry = Entry {
            finding: evaluation.finding.label(),
            results: results_of(evaluation, &self.modules, Timestamp::now()),
        };
        if let Some(listed) = &mut self.relisting {
            listed
                .entry(target.namespace.clone())
                .or_default()
                .insert(target.name.clone(), entry);
            return;
        }
        let objects = self.objects.entry(target.namespace.clone()).or_default();
        let unchanged = objects
            .get(&target.name)
            .is_some_and(|before| before.same_verdict(&entry));
        objects.insert(target.name.clone(), entry);
        if !unchanged {
            self.dirty.insert(target.namespace.clone());
        }
    }

    /// A deleted object: its results leave its namespace's report.
    pub fn delete(&mut self, namespace: &str, name: &str) {
        if let Some(listed) = &mut self.relisting
            && let Some(objects) = listed.get_mut(namespace)
        {
            objects.remove(name);
        }
        if let Some(objects) = self.objects.get_mut(namespace)
            && objects.remove(name).is_some()
        {
            // A namespace whose last StatefulSet is gone keeps an empty report:
            // "audited, all well" stays visible.
            self.dirty.insert(namespace.to_string());
        }
    }

    /// The reports to write now: one per dirty namespace, once synced.
    pub fn take_dirty(&mut self) -> Vec<PolicyReport> {
        if !self.synced {
            return Vec::new();
        }
        std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|namespace| {
                let results = self
                    .objects
                    .get(&namespace)
                    .map(|objects| {
                        objects
                            .values()
                            .flat_map(|entry| entry.results.iter().cloned())
                            .collect()
                    })
                    .unwrap_or_default();
                PolicyReport::new(namespace, results)
            })
            .collect()
    }

    /// A report that could not be written is written again at the next tick.
    pub fn mark_dirty(&mut self, namespace: &str) {
        self.dirty.insert(namespace.to_string());
    }

    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// Objects by finding (`compliant`, `would-mutate`, `would-deny`, `error`).
    pub fn counts(&self) -> BTreeMap<&'static str, i64> {
        let mut counts: BTreeMap<&'static str, i64> =
            ["compliant", "would-mutate", "would-deny", "error"]
                .into_iter()
                .map(|finding| (finding, 0))
                .collect();
        for entry in self.objects.values().flat_map(BTreeMap::values) {
            *counts.entry(entry.finding).or_default() += 1;
        }
        counts
    }

    /// The finding of `namespace/name`, if it is watched.
    pub fn finding(&self, namespace: &str, name: &str) -> Option<&'static str> {
        self.objects
            .get(namespace)?
            .get(name)
            .map(|entry| entry.finding)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// What the continuous audit exposes on `/metrics`.
#[derive(Debug)]
pub struct AuditMetrics {
    registry: Registry,
    objects: Family<ResultLabels, Gauge>,
    evaluations: Family<ResultLabels, Counter>,
    report_writes: Family<ResultLabels, Counter>,
    watch_errors: Counter,
    sync_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    last_success: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl Default for AuditMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let ours = registry.sub_registry_with_prefix("stsguard_audit");
        let objects = Family::<ResultLabels, Gauge>::default();
        ours.register(
            "objects",
            "StatefulSets watched, by their finding: compliant, would-mutate, would-deny, error",
            objects.clone(),
        );
        let evaluations = Family::<ResultLabels, Counter>::default();
        ours.register(
            "evaluations",
            "Evaluations of StatefulSets (each list item and each change), by finding",
            evaluations.clone(),
        );
        let report_writes = Family::<ResultLabels, Counter>::default();
        ours.register(
            "report_writes",
            "PolicyReports applied, by result (success, failure)",
            report_writes.clone(),
        );
        let watch_errors = Counter::default();
        ours.register(
            "watch_errors",
            "Errors of the StatefulSet watch (it is retried with backoff)",
            watch_errors.clone(),
        );
        let sync_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        ours.register(
            "sync_duration_seconds",
            "How long the last full list took, every object evaluated",
            sync_seconds.clone(),
        );
        let last_success = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        ours.register(
            "last_success_timestamp_seconds",
            "When every report last said what is stored (Unix time): all written, none pending",
            last_success.clone(),
        );
        Self {
            registry,
            objects,
            evaluations,
            report_writes,
            watch_errors,
            sync_seconds,
            last_success,
        }
    }
}

impl AuditMetrics {
    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    fn record_counts(&self, state: &WatchState) {
        for (result, count) in state.counts() {
            self.objects
                .get_or_create(&ResultLabels { result })
                .set(count);
        }
    }
}

/// How the continuous audit runs.
#[derive(Debug)]
pub struct WatchOptions {
    /// Which namespaces are watched.
    pub scope: Scope,
    /// How often dirty namespaces' reports are written.
    pub report_interval: Duration,
    /// Only the StatefulSets this matches (never those that opted out).
    pub selector: Option<String>,
    /// Changes of the cluster objects the policies read, when they read any.
    pub context: Option<broadcast::Receiver<Change>>,
}

/// Namespaces whose StatefulSets must be evaluated again: the objects their
/// policies read changed.
#[derive(Debug, Default)]
struct ContextDirty {
    everything: bool,
    namespaces: BTreeSet<String>,
}

impl ContextDirty {
    fn add(&mut self, change: Result<Change, broadcast::error::RecvError>) {
        match change {
            Ok(Change::Namespace(namespace)) => {
                self.namespaces.insert(namespace);
            }
            // Missed changes (a slow reader) may be anywhere.
            Ok(Change::Everything) | Err(broadcast::error::RecvError::Lagged(_)) => {
                self.everything = true
            }
            Err(broadcast::error::RecvError::Closed) => {}
        }
    }

    fn is_empty(&self) -> bool {
        !self.everything && self.namespaces.is_empty()
    }
}

/// Watches the StatefulSets of `scope` and keeps `state` (and, with a `writer`,
/// the reports) current, until `keep_going` says stop after an event or a tick.
pub async fn watch(
    client: kube::Client,
    auditor: Auditor<'_>,
    writer: Option<&Writer>,
    metrics: &AuditMetrics,
    options: WatchOptions,
    state: &mut WatchState,
    mut keep_going: impl FnMut(&WatchState) -> ControlFlow<()>,
) {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", "StatefulSet"));
    let api: Api<DynamicObject> = match &options.scope {
        Scope::All => Api::all_with(client.clone(), &resource),
        Scope::Namespace(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
    };
    let labels = with_opt_out(options.selector);
    let config = watcher::Config::default().labels(&labels);
    let mut events = watcher(api.clone(), config).default_backoff().boxed();
    let mut context = options.context;
    let mut context_dirty = ContextDirty::default();
    let mut ticker = tokio::time::interval(options.report_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sync_started = Instant::now();
    let mut evaluated = 0usize;
    loop {
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else {
                    tracing::error!("the StatefulSet watch ended");
                    return;
                };
                match event {
                    Ok(watcher::Event::Init) => {
                        sync_started = Instant::now();
                        state.begin_relist();
                    }
                    Ok(watcher::Event::InitApply(object) | watcher::Event::Apply(object)) => {
                        evaluated += 1;
                        let item = serde_json::to_value(&object).expect("an object serializes");
                        let evaluation = auditor.evaluate(Target::from_item(item), evaluated);
                        // Once per object and finding: a status update that
                        // changes nothing is not another line.
                        let target = &evaluation.target;
                        if state.finding(&target.namespace, &target.name)
                            != Some(evaluation.finding.label())
                        {
                            log_finding(&evaluation);
                        }
                        metrics
                            .evaluations
                            .get_or_create(&ResultLabels { result: evaluation.finding.label() })
                            .inc();
                        state.apply(&evaluation);
                    }
                    Ok(watcher::Event::Delete(object)) => {
                        let namespace = object.metadata.namespace.unwrap_or_default();
                        let name = object.metadata.name.unwrap_or_default();
                        state.delete(&namespace, &name);
                    }
                    Ok(watcher::Event::InitDone) => {
                        state.end_relist();
                        metrics.sync_seconds.set(sync_started.elapsed().as_secs_f64());
                        tracing::info!(
                            elapsed_ms = sync_started.elapsed().as_millis() as u64,
                            counts = ?state.counts(),
                            "audit: every StatefulSet listed and evaluated; watching"
                        );
                    }
                    Err(error) => {
                        metrics.watch_errors.inc();
                        tracing::warn!(error = %describe_error(&error), "the StatefulSet watch failed; retrying with backoff");
                    }
                }
                metrics.record_counts(state);
            }
            change = async { context.as_mut()?.recv().await.into() }, if context.is_some() => {
                match change {
                    None | Some(Err(broadcast::error::RecvError::Closed)) => context = None,
                    Some(change) => context_dirty.add(change),
                }
            }
            _ = ticker.tick() => {
                if state.is_synced() && !context_dirty.is_empty() {
                    let dirty = std::mem::take(&mut context_dirty);
                    if let Err(pending) = reevaluate(&client, &api, &resource, &labels, dirty, &auditor, metrics, state, &mut evaluated).await {
                        context_dirty = pending;
                    }
                }
                write_dirty(writer, metrics, state).await;
            }
        }
        if keep_going(state).is_break() {
            write_dirty(writer, metrics, state).await;
            return;
        }
    }
}

/// Lists the StatefulSets of the namespaces whose cluster objects changed
/// (every one in scope for a change anywhere) and evaluates them again; what
/// could not be listed is handed back, to be tried at the next interval.
#[allow(clippy::too_many_arguments)]
async fn reevaluate(
    client: &kube::Client,
    in_scope: &Api<DynamicObject>,
    resource: &ApiResource,
    labels: &str,
    dirty: ContextDirty,
    auditor: &Auditor<'_>,
    metrics: &AuditMetrics,
    state: &mut WatchState,
    evaluated: &mut usize,
) -> Result<(), ContextDirty> {
    let params = kube::api::ListParams::default().labels(labels);
    let apis: Vec<(Option<String>, Api<DynamicObject>)> = if dirty.everything {
        vec![(None, in_scope.clone())]
    } else {
        dirty
            .namespaces
            .iter()
            .map(|namespace| {
                let api = Api::namespaced_with(client.clone(), namespace, resource);
                (Some(namespace.clone()), api)
            })
            .collect()
    };
    let mut failed = ContextDirty::default();
    for (namespace, api) in apis {
        match api.list(&params).await {
            Ok(list) => {
                for object in list.items {
                    let namespace = object.metadata.namespace.clone().unwrap_or_default();
                    // Outside the watched scope: not ours.
                    if state
                        .finding(
                            &namespace,
                            &object.metadata.name.clone().unwrap_or_default(),
                        )
                        .is_none()
                    {
                        continue;
                    }
                    *evaluated += 1;
                    let item = serde_json::to_value(&object).expect("an object serializes");
                    let evaluation = auditor.evaluate(Target::from_item(item), *evaluated);
                    let target = &evaluation.target;
                    if state.finding(&target.namespace, &target.name)
                        != Some(evaluation.finding.label())
                    {
                        log_finding(&evaluation);
                    }
                    metrics
                        .evaluations
                        .get_or_create(&ResultLabels {
                            result: evaluation.finding.label(),
                        })
                        .inc();
                    state.apply(&evaluation);
                }
            }
            Err(error) => {
                metrics.watch_errors.inc();
                tracing::warn!(error = %describe_error(&error), "could not list StatefulSets to evaluate them again after the cluster objects their policies read changed; trying again at the next interval");
                match namespace {
                    Some(namespace) => {
                        failed.namespaces.insert(namespace);
                    }
                    None => failed.everything = true,
                }
            }
        }
    }
    metrics.record_counts(state);
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed)
    }
}

/// Writes the dirty namespaces' reports; one that fails stays dirty.
async fn write_dirty(writer: Option<&Writer>, metrics: &AuditMetrics, state: &mut WatchState) {
    let reports = state.take_dirty();
    let mut all_written = true;
    if let Some(writer) = writer {
        for report in reports {
            match writer.apply(&report).await {
                Ok(()) => {
                    metrics
                        .report_writes
                        .get_or_create(&ResultLabels { result: "success" })
                        .inc();
                }
                Err(error) => {
                    all_written = false;
                    metrics
                        .report_writes
                        .get_or_create(&ResultLabels { result: "failure" })
                        .inc();
                    tracing::warn!(%error, "could not write a PolicyReport; trying again at the next interval");
                    state.mark_dirty(report.namespace());
                }
            }
        }
    }
    if all_written && state.is_synced() {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        metrics.last_success.set(now.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use std::ops::ControlFlow;

    use serde_json::json;

    use super::*;
    use crate::audit::tests::{Reply, api_server, auditor, builtins, compliant, lab, no_claims};

    fn evaluation(item: serde_json::Value) -> Evaluation {
        auditor(builtins()).evaluate(Target::from_item(item), 0)
    }

    fn namespaces(reports: &[PolicyReport]) -> Vec<&str> {
        reports.iter().map(PolicyReport::namespace).collect()
    }

    #[test]
    fn reports_wait_for_the_first_list_and_follow_changed_verdicts_only() {
        let mut state = WatchState::new(builtins().modules());
        state.begin_relist();
        state.apply(&evaluation(lab("team-a", "web")));
        state.apply(&evaluation(no_claims("team-b", "db")));
        assert!(
            state.take_dirty().is_empty(),
            "no report before the list is complete"
        );
        state.end_relist();
        let reports = state.take_dirty();
        assert_eq!(namespaces(&reports), ["team-a", "team-b"]);
        assert_eq!(reports[1].summary.fail, 1, "{:?}", reports[1].summary);

        // The same verdict again (a status update): nothing to write.
        state.apply(&evaluation(lab("team-a", "web")));
        assert!(state.take_dirty().is_empty());
        // Fixed: team-a's report now passes.
        state.apply(&evaluation(compliant("team-a", "web")));
        let reports = state.take_dirty();
        assert_eq!(namespaces(&reports), ["team-a"]);
        assert_eq!(reports[0].summary.warn, 0);
        assert_eq!(state.finding("team-a", "web"), Some("compliant"));
        // Deleted: team-b keeps a report, without results.
        state.delete("team-b", "db");
        let reports = state.take_dirty();
        assert_eq!(namespaces(&reports), ["team-b"]);
        assert!(reports[0].results.is_empty());
        assert_eq!(state.counts()["compliant"], 1);
        assert_eq!(state.counts()["would-deny"], 0);
    }

    #[test]
    fn a_relist_drops_what_was_deleted_while_the_watch_was_down() {
        let mut state = WatchState::new(builtins().modules());
        state.begin_relist();
        state.apply(&evaluation(lab("team-a", "web")));
        state.apply(&evaluation(lab("team-a", "api")));
        state.end_relist();
        state.take_dirty();
        state.begin_relist();
        state.apply(&evaluation(lab("team-a", "web")));
        state.end_relist();
        let reports = state.take_dirty();
        assert_eq!(namespaces(&reports), ["team-a"]);
        assert_eq!(state.finding("team-a", "api"), None);
        // A relist that finds the same: nothing to write.
        state.begin_relist();
        state.apply(&evaluation(lab("team-a", "web")));
        state.end_relist();
        assert!(state.take_dirty().is_empty());
    }

    fn event(kind: &str, mut object: serde_json::Value) -> serde_json::Value {
        object["apiVersion"] = json!("apps/v1");
        object["kind"] = json!("StatefulSet");
        object["metadata"]["resourceVersion"] = json!("4713");
        json!({"type": kind, "object": object})
    }

    #[tokio::test]
    async fn the_watch_evaluates_the_list_then_each_change() {
        let (client, seen) = api_server(vec![
            Reply::Page(vec![lab("team-a", "web"), no_claims("team-a", "db")], ""),
            Reply::Watch(vec![
                event("MODIFIED", compliant("team-a", "web")),
                event("DELETED", no_claims("team-a", "db")),
            ]),
        ]);
        let metrics = AuditMetrics::default();
        let mut state = WatchState::new(builtins().modules());
        let mut listed = None;
        let options = WatchOptions {
            scope: Scope::All,
            report_interval: Duration::from_millis(20),
            selector: None,
            context: None,
        };
        let watching = watch(
            client,
            auditor(builtins()),
            None,
            &metrics,
            options,
            &mut state,
            |state| {
                if state.is_synced() && listed.is_none() {
                    listed = Some((
                        state.finding("team-a", "web"),
                        state.finding("team-a", "db"),
                    ));
                }
                match (
                    state.finding("team-a", "web"),
                    state.finding("team-a", "db"),
                ) {
                    (Some("compliant"), None) => ControlFlow::Break(()),
                    _ => ControlFlow::Continue(()),
                }
            },
        );
        tokio::time::timeout(Duration::from_secs(20), watching)
            .await
            .expect("the watch saw the list and both changes");
        assert_eq!(listed, Some((Some("would-mutate"), Some("would-deny"))));
        let seen = seen.lock().unwrap().clone();
        assert!(
            seen[0].contains("labelSelector=stsguard.io%2Fignore%21%3Dtrue"),
            "{seen:?}"
        );
        assert!(seen[1].contains("watch=true"), "{seen:?}");
        let text = metrics.encode();
        assert!(
            text.contains(r#"stsguard_audit_objects{result="compliant"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"stsguard_audit_evaluations_total{result="would-deny"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("stsguard_audit_last_success_timestamp_seconds"),
            "{text}"
        );
    }
}
