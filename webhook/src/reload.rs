//! Hot reload: notices when the config file, a policy module it names (or its
//! signature, or a trusted key), or the certificate files change, and swaps in the new version without a restart.
//!
//! Files are polled (every `reloadInterval`) rather than watched with inotify:
//! Kubernetes updates mounted ConfigMaps and Secrets by swapping a symlink, which
//! file-watch APIs report inconsistently, while a changed (size, mtime, inode) of
//! the resolved file is reliable everywhere and costs one `stat` per file.
//!
//! A new policy set is compiled and validated in the background; only a set that
//! loads completely replaces the one being served. A broken change is logged and
//! counted, the old set keeps serving, and the next change is tried again.
//!
//! Modules from registries (`oci://`) are pulled as part of each load. A tag is
//! pinned to the digest it resolved to until the next load; besides config
//! changes, the tags are asked where they point every `--tag-recheck-interval`,
//! and a moved tag is a reload like a changed file. A reload that failed is
//! tried again at that interval too: what failed it may be outside the files
//! (a registry that was down, a module signed only after its tag moved).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::chain::{LoadError, PolicySet};
use crate::cluster::Cluster;
use crate::config::{Config, ModuleSource};
use crate::engine::{ClusterReader, Engine};
use crate::registry::{OciReference, Registry, RegistryError};
use crate::server::{AppState, Served};
use crate::tls::ReloadingCertificate;

/// What identifies a version of a file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint(Option<(u64, SystemTime, u64)>);

impl Fingerprint {
    fn of(path: &Path) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self(std::fs::metadata(path).ok().map(|m| {
            (
                m.len(),
                m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                m.ino(),
            )
        }))
    }
}

/// The version of each watched file as last seen.
///
/// Record it *before* the files are read: a change that lands while they are
/// being read (a Secret or ConfigMap updated during a slow start) is then seen at
/// the first poll, instead of becoming the baseline and being missed.
#[derive(Debug, Default)]
pub(crate) struct FileVersions(Vec<(PathBuf, Fingerprint)>);

impl FileVersions {
    /// The files' versions now.
    pub(crate) fn now(paths: impl IntoIterator<Item = PathBuf>) -> Self {
        let mut versions = Self::default();
        versions.watch(paths);
        versions
    }

    /// Watches exactly `paths` from now on: a file already watched keeps the
    /// version last seen (so a change not yet acted on is not lost), a new one is
    /// recorded now, one no longer named is dropped.
    pub(crate) fn watch(&mut self, paths: impl IntoIterator<Item = PathBuf>) {
        let mut old = std::mem::take(&mut self.0);
        for path in paths {
            if self.0.iter().any(|(seen, _)| *seen == path) {
                continue;
            }
            let fingerprint = match old.iter().position(|(seen, _)| *seen == path) {
                Some(index) => old.swap_remove(index).1,
                None => Fingerprint::of(&path),
            };
            self.0.push((path, fingerprint));
        }
    }

    /// Whether any file changed since the last call (or since it was recorded).
    fn changed(&mut self) -> bool {
        let mut changed = false;
        for (path, seen) in &mut self.0 {
            let now = Fingerprint::of(path);
            if now != *seen {
                *seen = now;
                changed = true;
            }
        }
        changed
    }
}

/// The files a policy configuration depends on: the config, module files, and
/// with a verification section its key files (a rotated or revoked key
/// re-verifies every module) and the module files' signatures.
pub(crate) fn policy_inputs(config_path: &Path, config: &Config) -> Vec<PathBuf> {
    let mut paths = vec![config_path.to_path_buf()];
    let verification = config.verification.as_ref();
    for policy in &config.policies {
        if let ModuleSource::File(path) = &policy.module {
            paths.push(path.clone());
            if verification.is_some_and(|v| v.files) {
                paths.push(crate::signature::file_signature_path(path));
            }
        }
    }
    let key_paths = verification
        .into_iter()
        .flat_map(|v| &v.keys)
        .filter(|key| !key.contains("-----BEGIN"))
        .map(PathBuf::from);
    paths.extend(key_paths);
    paths
}

/// Pulls a config's `oci://` modules (in parallel), then loads its policy set
/// (slow on a compilation-cache miss) on a blocking thread, then (with a
/// cluster) starts watching the kinds its policies read and waits for their
/// first lists, at most `--cluster-sync-timeout`: a set is served with its
/// caches filled, not before.
async fn load_served(
    engine: &Engine,
    registry: &Registry,
    config: &Config,
    cluster: Option<&Arc<Cluster>>,
) -> Result<Served, FirstLoadError> {
    let config = match cluster {
        Some(_) => config.clone().with_cluster_builtins(),
        None => config.clone(),
    };
    let verification = config
        .verification()
        .map_err(FirstLoadError::Verification)?;
    let pulled = registry
        .pull_all(config.oci_references(), verification.as_ref())
        .await
        .map_err(FirstLoadError::Pull)?;
    let engine = engine.clone();
    let reader = cluster.map(|cluster| cluster.clone() as Arc<dyn ClusterReader>);
    let loaded = tokio::task::spawn_blocking(move || {
        Ok::<_, LoadError>(Served {
            policies: PolicySet::load_pulled(&engine, &config, &pulled, reader.as_ref())?,
            request_timeout: config.request_timeout,
            max_request_bytes: config.max_request_bytes.0 as usize,
        })
    })
    .await;
    let served = match loaded {
        Ok(Ok(served)) => served,
        Ok(Err(error)) => return Err(FirstLoadError::Load(error)),
        Err(error) => return Err(FirstLoadError::Panicked(error.to_string())),
    };
    if let Some(cluster) = cluster {
        let kinds = served.policies.kinds_read();
        cluster.watch(&kinds);
        if !cluster.wait_settled(&kinds, cluster.sync_timeout()).await {
            tracing::warn!(
                "serving policies whose cluster objects are not all synced after \
                 --cluster-sync-timeout; their reads fail until they are (/readyz says which)"
            );
        }
    }
    Ok(served)
}

/// Why the first policy set could not be served: the server stops with it.
#[derive(Debug, thiserror::Error)]
pub enum FirstLoadError {
    #[error("could not pull a policy module: {0}")]
    Pull(RegistryError),
    #[error("the verification section cannot be used: {0}")]
    Verification(String),
    #[error("could not load the policies: {0}")]
    Load(LoadError),
    #[error("loading the policies failed: {0}")]
    Panicked(String),
}

/// How the first policy load went, for whoever waits for it.
#[derive(Debug, Clone)]
pub(crate) enum FirstLoad {
    Pending,
    /// Served, with this many policies.
    Ready(usize),
    Failed(Arc<FirstLoadError>),
}

/// Where the policy set comes from.
#[derive(Debug)]
pub(crate) struct PolicySource {
    /// The config file, polled with the modules it names; `None` serves the
    /// built-ins and never reloads.
    pub(crate) path: Option<PathBuf>,
    /// The config as read at start-up.
    pub(crate) config: Config,
    /// The versions of [`policy_inputs`] from before `config` and its modules
    /// were read.
    pub(crate) versions: FileVersions,
    /// Pulls the `oci://` modules.
    pub(crate) registry: Registry,
    /// How often tags are asked where they point; `None`: never.
    pub(crate) tag_recheck_interval: Option<Duration>,
    /// What policies read the cluster through; `None`: there is none.
    pub(crate) cluster: Option<Arc<Cluster>>,
}

/// Serves the policy set of `source` and keeps it current: the first load is
/// the first reload, its result goes to `first`; after that the config file and
/// the modules it names are polled every `reloadInterval` and a changed set is
/// swapped in once it loads completely. Runs until the task is dropped, or
/// returns when the first load fails or there is nothing to watch.
pub(crate) async fn serve_policies(
    engine: Engine,
    state: AppState,
    source: PolicySource,
    first: watch::Sender<FirstLoad>,
) {
    let PolicySource {
        path,
        mut config,
        mut versions,
        registry,
        tag_recheck_interval,
        cluster,
    } = source;
    let started = std::time::Instant::now();
    match load_served(&engine, &registry, &config, cluster.as_ref()).await {
        Ok(served) => {
            let count = served.policies.policies().len();
            state.serve(served);
            tracing::info!(
                policies = count,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "ready"
            );
            first.send_replace(FirstLoad::Ready(count));
        }
        Err(error) => {
            first.send_replace(FirstLoad::Failed(Arc::new(error)));
            return;
        }
    }
    let has_tags = pinned_tags(&state).next().is_some();
    let tag_recheck = tag_recheck_interval.filter(|_| has_tags || path.is_some());
    if path.is_none() && tag_recheck.is_none() {
        return;
    }
    let mut ticker = tokio::time::interval(config.reload_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tag_ticker = tokio::time::interval(tag_recheck.unwrap_or(Duration::MAX / 4));
    tag_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tag_ticker.tick().await; // the first tick is now: the tags were just resolved
    // A load that failed for what may change outside the files (a registry down,
    // a module not signed yet) is tried again at each tag recheck.
    let mut last_failed = false;
    loop {
        let reason = tokio::select! {
            _ = ticker.tick() => {
                if !versions.changed() {
                    continue;
                }
                "the config or a module file changed"
            }
            _ = tag_ticker.tick(), if tag_recheck.is_some() => {
                if last_failed {
                    "the last reload failed; trying again"
                } else if tags_moved(&state, &registry).await {
                    "a tag moved"
                } else {
                    continue;
                }
            }
        };
        let new_config = match &path {
            None => config.clone(),
            Some(path) => match Config::load(path) {
                Ok(new_config) => new_config,
                Err(error) => {
                    tracing::error!(%error, "the changed config was not applied; still serving the previous policies");
                    state.metrics.record_reload("policies", false);
                    continue;
                }
            },
        };
        if let Some(path) = &path {
            // The new config may name other module files: watch those from now
            // on, recorded before the load below reads them.
            versions.watch(policy_inputs(path, &new_config));
        }
        if new_config.listen != config.listen || new_config.tls != config.tls {
            tracing::warn!("`listen` and `tls` changes take effect after a restart");
        }
        if new_config.reload_interval != config.reload_interval {
            ticker = tokio::time::interval(new_config.reload_interval);
        }
        match load_served(&engine, &registry, &new_config, cluster.as_ref()).await {
            Ok(served) => {
                let count = served.policies.policies().len();
                if let Some(previous) = state.current() {
                    log_moved_tags(&previous.policies, &served.policies);
                }
                state.serve(served);
                state.metrics.record_reload("policies", true);
                tracing::info!(policies = count, reason, "reloaded policies");
                config = new_config;
                last_failed = false;
            }
            Err(error) => {
                tracing::error!(%error, reason, "the changed policies were not applied; still serving the previous ones");
                state.metrics.record_reload("policies", false);
                last_failed = true;
            }
        }
    }
}

/// The served policies' `oci://` references that have a tag, as pinned.
fn pinned_tags(state: &AppState) -> impl Iterator<Item = OciReference> + use<> {
    let pinned: Vec<OciReference> = state
        .current()
        .map(|served| {
            served
                .policies
                .policies()
                .iter()
                .filter_map(|policy| policy.pulled().filter(|r| r.tag.is_some()).cloned())
                .collect()
        })
        .unwrap_or_default();
    pinned.into_iter()
}

/// Whether any served tag points elsewhere now. A registry that cannot be asked
/// moves nothing: the pinned digest keeps serving. The tags are asked in
/// parallel, so an unreachable registry holds up the reload loop (and a config
/// change waiting behind it) for one `--registry-timeout`, not one per tag.
async fn tags_moved(state: &AppState, registry: &Registry) -> bool {
    let pinned: Vec<OciReference> = pinned_tags(state).collect();
    let answers = futures_util::future::join_all(
        pinned
            .iter()
            .map(|reference| registry.resolve_tag(reference)),
    )
    .await;
    let mut moved = false;
    for (pinned, answer) in pinned.iter().zip(answers) {
        match answer {
            Ok(digest) if Some(&digest) != pinned.digest.as_ref() => {
                tracing::info!(reference = %pinned, now = %digest, "a policy's tag moved; reloading");
                moved = true;
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "could not check where a policy's tag points; still serving the pinned digest")
            }
        }
    }
    moved
}

/// One line per `oci://` policy whose module digest changed with a reload.
fn log_moved_tags(previous: &PolicySet, next: &PolicySet) {
    for policy in next.policies() {
        let (Some(now), Some(before)) = (
            policy.pulled(),
            previous.get(policy.name()).and_then(|p| p.pulled()),
        ) else {
            continue;
        };
        if now.digest != before.digest {
            tracing::info!(
                policy = policy.name(),
                from = %before,
                to = %now,
                "serving a new digest of the policy's module"
            );
        }
    }
}

/// Polls the certificate and key files; swaps in the new certificate when they
/// change and load, and keeps the old one (with an error in the log) otherwise.
/// `versions` are the files' from before `certificate` read them.
pub(crate) async fn watch_certificate(
    certificate: Arc<ReloadingCertificate>,
    state: AppState,
    interval: Duration,
    mut versions: FileVersions,
) {
    let files = certificate.files().clone();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if !versions.changed() {
            continue;
        }
        match certificate.reload() {
            Ok(()) => {
                tracing::info!(cert = %files.cert.display(), "reloaded the TLS certificate");
                state.metrics.record_reload("certificate", true);
            }
            Err(error) => {
                tracing::error!(%error, "the changed certificate was not applied; still serving the previous one");
                state.metrics.record_reload("certificate", false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_keys_and_file_signatures_are_inputs() {
        let config = Config::parse(
            "verification: {keys: [/keys/team.pub, '-----BEGIN PUBLIC KEY-----'], files: true}\n\
             policies: [{name: a, module: /rules/a.wasm}]",
        )
        .unwrap();
        assert_eq!(
            policy_inputs(Path::new("/config.yaml"), &config),
            [
                "/config.yaml",
                "/rules/a.wasm",
                "/rules/a.wasm.sig",
                "/keys/team.pub"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn a_replaced_file_is_noticed_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "a").unwrap();
        let mut watched = FileVersions::now([path.clone()]);
        assert!(!watched.changed());
        // Replace the way Kubernetes does: write elsewhere, then rename over.
        let next = dir.path().join("next");
        std::fs::write(&next, "bb").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert!(watched.changed());
        assert!(!watched.changed());
        std::fs::remove_file(&path).unwrap();
        assert!(watched.changed(), "a deleted file is a change too");
    }

    #[test]
    fn watching_new_paths_keeps_changes_not_yet_acted_on() {
        let dir = tempfile::tempdir().unwrap();
        let [config, module, other] = ["config.yaml", "a.wasm", "b.wasm"].map(|name| {
            let path = dir.path().join(name);
            std::fs::write(&path, "1").unwrap();
            path
        });
        let mut versions = FileVersions::now([config.clone(), module.clone()]);
        std::fs::write(&module, "22").unwrap();
        // The config now names `other` instead of `module`, and names `config` twice.
        versions.watch([config.clone(), other.clone(), config.clone()]);
        assert!(!versions.changed(), "`module` is no longer watched");
        std::fs::write(&config, "22").unwrap();
        versions.watch([config.clone(), module.clone()]);
        assert!(
            versions.changed(),
            "the change to `config` made before watch() is still seen"
        );
        assert!(!versions.changed());
        std::fs::write(&other, "22").unwrap();
        assert!(!versions.changed(), "`other` is no longer watched");
    }
}
